//! A real OpenID Provider for interop tests: `oidc-provider` (panva's
//! certified implementation, npm) run by node from tests/oidc/server.mjs on
//! 127.0.0.1:0. Install it with scripts/install-test-deps.sh; see
//! tests/oidc/README.md for the config shape and what the provider accepts.
//!
//! The server exits when its stdin closes, and the child is killed on drop,
//! so a failing or aborted test never leaves it running. Its stderr (one line
//! per request, and the reason behind every token endpoint error) is kept and
//! printed if the test panics while the `Oidc` is alive.

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

const NOT_INSTALLED: &str =
    "oidc-provider is not installed: run scripts/install-test-deps.sh (the README's test command does)";

const START_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Oidc {
    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub issuer: String,
    /// `{issuer}/token`. Also the `aud` to put in a `private_key_jwt`
    /// client assertion (the issuer is accepted as well).
    pub token_endpoint: String,
    /// `{issuer}/token/introspection` (RFC 7662).
    pub introspection_endpoint: String,
    /// `client_id` → a refresh token minted at startup for each
    /// `refresh_tokens` entry of the config (account "test-user").
    pub refresh_tokens: HashMap<String, String>,
    child: Child,
    log: Arc<Mutex<String>>,
    _config: tempfile::NamedTempFile,
}

impl Oidc {
    /// Starts the provider with `config`:
    /// `{"clients": [<client metadata>], "refresh_tokens": [{"client_id", "scope"}]}`
    /// and waits (up to 30 s) until it is listening.
    pub async fn start(config: serde_json::Value) -> Oidc {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        if !root
            .join("tests/oidc/node_modules/oidc-provider/package.json")
            .is_file()
        {
            panic!("{NOT_INSTALLED}");
        }

        let config_file = tempfile::Builder::new()
            .prefix("oidc-config-")
            .suffix(".json")
            .tempfile()
            .expect("create oidc config file");
        std::fs::write(config_file.path(), serde_json::to_vec(&config).unwrap())
            .expect("write oidc config file");

        let mut child = Command::new("node")
            .arg("tests/oidc/server.mjs")
            .arg(config_file.path())
            .current_dir(root)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run node (the OIDC interop tests need Node.js >= 18.12 on PATH): {e}"
                )
            });

        let log = Arc::new(Mutex::new(String::new()));
        let stderr_task = collect(child.stderr.take().unwrap(), log.clone());
        let mut stdout = BufReader::new(child.stdout.take().unwrap());

        let mut line = String::new();
        let read = tokio::time::timeout(START_TIMEOUT, stdout.read_line(&mut line)).await;
        let failure = match read {
            Err(_) => Some(format!(
                "oidc-provider did not start within {START_TIMEOUT:?}"
            )),
            Ok(Err(e)) => Some(format!("reading oidc-provider's stdout: {e}")),
            Ok(Ok(0)) => {
                let status = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
                Some(format!(
                    "oidc-provider exited before listening ({status:?})"
                ))
            }
            Ok(Ok(_)) => None,
        };
        if let Some(why) = failure {
            let _ = child.start_kill();
            let _ = tokio::time::timeout(Duration::from_secs(2), stderr_task).await;
            panic!(
                "{why}\n--- oidc-provider stderr ---\n{}",
                log.lock().unwrap()
            );
        }
        // Nothing else is written to stdout; keep draining it anyway so the
        // server can never block on a full pipe.
        collect(stdout.into_inner(), log.clone());

        let ready: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("oidc-provider's ready line is not JSON ({e}): {line}"));
        let field = |name: &str| -> String {
            ready[name]
                .as_str()
                .unwrap_or_else(|| panic!("oidc-provider's ready line lacks {name}: {line}"))
                .to_string()
        };
        let refresh_tokens = ready["refresh_tokens"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default();

        Oidc {
            issuer: field("issuer"),
            token_endpoint: field("token_endpoint"),
            introspection_endpoint: field("introspection_endpoint"),
            refresh_tokens,
            child,
            log,
            _config: config_file,
        }
    }

    /// The refresh token minted at startup for `client_id`.
    pub fn refresh_token(&self, client_id: &str) -> String {
        self.refresh_tokens
            .get(client_id)
            .unwrap_or_else(|| panic!("no refresh token minted for {client_id}"))
            .clone()
    }

    /// What the provider wrote to stderr so far: `[oidc] POST /token
    /// grant_type=… -> 200` per request, and `[oidc] token endpoint error:
    /// <error> - <description> - <detail>` for each rejected token request.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// RFC 7662 introspection of `token`, authenticating as a
    /// `client_secret_basic`/`_post` client (oidc-provider takes either).
    pub async fn introspect(
        &self,
        client_id: &str,
        client_secret: &str,
        token: &str,
    ) -> serde_json::Value {
        let resp = reqwest::Client::new()
            .post(&self.introspection_endpoint)
            .form(&[
                ("token", token),
                ("client_id", client_id),
                ("client_secret", client_secret),
            ])
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .expect("introspection request");
        let status = resp.status();
        let body: serde_json::Value = resp.json().await.expect("introspection response JSON");
        assert!(status.is_success(), "introspection failed: {status} {body}");
        body
    }

    /// Stops the provider and waits for it to exit.
    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
    }
}

impl Drop for Oidc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Ok(log) = self.log.lock() {
                eprintln!("--- oidc-provider stderr ({}) ---\n{log}", self.issuer);
            }
        }
    }
}

/// Appends every line of `from` to `log`.
fn collect(
    from: impl AsyncRead + Unpin + Send + 'static,
    log: Arc<Mutex<String>>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut lines = BufReader::new(from).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let mut log = log.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    })
}

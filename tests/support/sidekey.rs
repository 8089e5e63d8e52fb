//! Starts sidekey for a test: in-process (`sidekey::start`) on ephemeral
//! ports, or as the real binary when a test needs signals, logs or RSS.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncBufReadExt;

/// The `[proxy]` section every test config starts with: ephemeral ports.
pub fn proxy_section(extra: &str) -> String {
    format!("[proxy]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n{extra}\n")
}

pub struct Proxy {
    pub server: Option<sidekey::Server>,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
}

impl Proxy {
    /// `proxy_extra` goes into `[proxy]`; `rest` is the remaining config.
    pub async fn start(proxy_extra: &str, rest: &str) -> Proxy {
        Self::try_start(proxy_extra, rest)
            .await
            .unwrap_or_else(|e| panic!("sidekey did not start: {e}"))
    }

    /// As `start`, for a config that loads but may be refused at start-up:
    /// sidekey's start-up error, with its causes.
    pub async fn try_start(proxy_extra: &str, rest: &str) -> Result<Proxy, String> {
        super::init_crypto();
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("proxy.toml");
        std::fs::write(
            &config_path,
            format!("{}{rest}", proxy_section(proxy_extra)),
        )
        .unwrap();
        let cfg = sidekey::config::load(&config_path)
            .unwrap_or_else(|e| panic!("test config invalid:\n{e}"));
        let server = sidekey::start(cfg).await.map_err(|e| format!("{e:#}"))?;
        Ok(Proxy {
            addr: server.proxy_addr,
            admin: server.admin_addr.unwrap(),
            server: Some(server),
            dir,
            config_path,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A client that sends everything through the proxy.
    pub fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .proxy(reqwest::Proxy::all(self.url()).unwrap())
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap()
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.admin))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The admin's `/tokens` (JSON).
    pub async fn tokens(&self) -> String {
        reqwest::get(format!("http://{}/tokens", self.admin))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Rewrites the config file (the watcher picks it up).
    pub fn write_config(&self, proxy_extra: &str, rest: &str) {
        rewrite_config(&self.config_path, self.addr, self.admin, proxy_extra, rest);
    }

    pub async fn shutdown(mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
    }
}

/// The real binary, with its stderr captured line by line.
pub struct Binary {
    pub child: tokio::process::Child,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub logs: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    pub dir: tempfile::TempDir,
}

impl Binary {
    /// Runs `sidekey run` on a config with fixed free ports (picked here),
    /// waiting until `/readyz` answers. A port picked here can be taken by
    /// another test before the child binds it; then the child exits with
    /// "cannot listen" and is started again on new ports.
    pub async fn start(proxy_extra: &str, rest: &str, env: &[(&str, &str)]) -> Binary {
        Self::start_logging("json", proxy_extra, rest, env).await
    }

    /// As `start`, with `--log-format FORMAT` (`json` or `text`).
    pub async fn start_logging(
        format: &str,
        proxy_extra: &str,
        rest: &str,
        env: &[(&str, &str)],
    ) -> Binary {
        let mut tries = 0;
        loop {
            match Self::try_start(format, proxy_extra, rest, env).await {
                Ok(bin) => return bin,
                Err(logs) if tries < 3 && logs.contains("cannot listen") => tries += 1,
                Err(logs) => panic!("sidekey did not become ready; logs:\n{logs}"),
            }
        }
    }

    async fn try_start(
        format: &str,
        proxy_extra: &str,
        rest: &str,
        env: &[(&str, &str)],
    ) -> Result<Binary, String> {
        let dir = tempfile::tempdir().unwrap();
        let addr = free_port();
        let admin = free_port();
        let path = dir.path().join("proxy.toml");
        std::fs::write(
            &path,
            format!("[proxy]\nlisten = \"{addr}\"\nadmin = \"{admin}\"\n{proxy_extra}\n{rest}"),
        )
        .unwrap();
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_sidekey"));
        cmd.args(["run", "--log-format", format, "--config"])
            .arg(&path)
            .env("RUST_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // The test's own environment says nothing about proxies.
        for k in ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"] {
            cmd.env_remove(k).env_remove(k.to_ascii_lowercase());
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let logs = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = std::sync::Arc::clone(&logs);
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                sink.lock().unwrap().push(l);
            }
        });
        for _ in 0..200 {
            if let Ok(r) = reqwest::get(format!("http://{admin}/readyz")).await {
                if r.status() == 200 {
                    return Ok(Binary {
                        child,
                        addr,
                        admin,
                        logs,
                        dir,
                    });
                }
            }
            if child.try_wait().unwrap().is_some() {
                // Let the stderr reader take the last lines.
                tokio::time::sleep(Duration::from_millis(100)).await;
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let logs = logs.lock().unwrap().join("\n");
        Err(logs)
    }

    pub fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .proxy(reqwest::Proxy::all(format!("http://{}", self.addr)).unwrap())
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap()
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// Rewrites the config file (the watcher picks it up).
    pub fn write_config(&self, proxy_extra: &str, rest: &str) {
        let path = self.dir.path().join("proxy.toml");
        rewrite_config(&path, self.addr, self.admin, proxy_extra, rest);
    }

    pub fn pid(&self) -> u32 {
        self.child.id().unwrap()
    }

    /// Peak resident memory (VmHWM) in KiB, from /proc.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap()
    }

    pub fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} failed");
    }
}

/// Every proxy variable, in both cases, set to `url`: a child's
/// environment as a shared pod spec or shell would set it for the app.
pub fn proxy_env(url: &str) -> Vec<(&'static str, &str)> {
    [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ]
    .into_iter()
    .map(|k| (k, url))
    .collect()
}

/// Replaces a running proxy's config at once (write, then rename), keeping
/// its bound ports: a reload cannot move listeners.
fn rewrite_config(
    path: &std::path::Path,
    addr: SocketAddr,
    admin: SocketAddr,
    proxy_extra: &str,
    rest: &str,
) {
    let text = format!("[proxy]\nlisten = \"{addr}\"\nadmin = \"{admin}\"\n{proxy_extra}\n{rest}");
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A port that was free a moment ago (for the subprocess, which must know
/// its address up front).
pub fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// `sidekey check --config PATH`: its exit code, and stdout then stderr.
pub fn check(path: &std::path::Path) -> (Option<i32>, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sidekey"))
        .args(["check", "--config"])
        .arg(path)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

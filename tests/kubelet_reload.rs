//! Reload the way Kubernetes updates mounted ConfigMaps and Secrets:
//! kubelet's atomic writer puts the files in a timestamped folder, points
//! `..data_tmp` at it, renames that over `..data`, and deletes the old
//! folder; the visible names are symlinks through `..data`. Actors:
//! // Kubelet: `AtomicWriter` below, exactly that sequence.
//! // Proxy: sidekey in-process, config and client secret in such mounts.
//! // Upstream: records headers. Token server: checks the client secret.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed setup step should fail the test loudly"
)]

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::token_server::TokenServer;
use support::upstream::Upstream;

/// kubelet's `AtomicWriter` (pkg/volume/util/atomic_writer.go), in order.
struct AtomicWriter {
    mount: PathBuf,
    n: u32,
}

impl AtomicWriter {
    fn new(mount: &Path) -> Self {
        std::fs::create_dir_all(mount).unwrap();
        Self {
            mount: mount.to_path_buf(),
            n: 0,
        }
    }

    fn write(&mut self, files: &[(&str, &str)]) {
        use std::os::unix::fs::symlink;
        self.n += 1;
        let old = std::fs::read_link(self.mount.join("..data")).ok();
        // 1. A new timestamped folder with the payload.
        let ts = format!(
            "..2026_12_06_10_00_{:02}.{:09}",
            self.n,
            123_456_789 + self.n
        );
        let dir = self.mount.join(&ts);
        std::fs::create_dir(&dir).unwrap();
        for (name, content) in files {
            std::fs::write(dir.join(name), content).unwrap();
        }
        // 2. `..data_tmp` -> the new folder, renamed over `..data` (atomic).
        symlink(&ts, self.mount.join("..data_tmp")).unwrap();
        std::fs::rename(self.mount.join("..data_tmp"), self.mount.join("..data")).unwrap();
        // 3. The user-visible names, symlinks through `..data` (first time).
        for (name, _) in files {
            let link = self.mount.join(name);
            if std::fs::symlink_metadata(&link).is_err() {
                symlink(Path::new("..data").join(name), &link).unwrap();
            }
        }
        // 4. The old folder goes.
        if let Some(old) = old {
            std::fs::remove_dir_all(self.mount.join(old)).unwrap();
        }
    }
}

/// Polls `probe` until it holds, for at most `within`.
async fn within<F, Fut>(within: Duration, mut probe: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < within {
        if probe().await {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

#[tokio::test]
async fn configmap_and_secret_updates_apply_within_two_seconds_every_time() {
    support::init_crypto();
    let up = Upstream::start().await;
    let ts = TokenServer::start().await;
    ts.expect_client("orders", "secret-1");
    let root = tempfile::tempdir().unwrap();
    let mut config_volume = AtomicWriter::new(&root.path().join("etc-sidekey"));
    let mut secret_volume = AtomicWriter::new(&root.path().join("secrets"));
    secret_volume.write(&[("client-secret", "secret-1\n")]);
    let secret_path = root.path().join("secrets/client-secret");
    let config = |version: u32, listen: &str, admin: &str| {
        format!(
            "[proxy]\nlisten = \"{listen}\"\nadmin = \"{admin}\"\n\
             [clients.orders]\ngrant = \"client_credentials\"\ntoken_url = \"{}\"\nclient_id = \"orders\"\n\
             client_secret = \"<<file:{}>>\"\n\
             [[routes]]\nname = \"r\"\nhosts = [\"127.0.0.1\"]\nclient = \"orders\"\n\
             set_headers = {{ Authorization = \"Bearer <<oauth.token>>\", \"X-Version\" = \"v{version}\" }}\n",
            ts.url("/token"),
            secret_path.display()
        )
    };
    config_volume.write(&[("proxy.toml", &config(1, "127.0.0.1:0", "127.0.0.1:0"))]);
    let path = root.path().join("etc-sidekey/proxy.toml");
    let server = sidekey::start(sidekey::config::load(&path).unwrap())
        .await
        .unwrap();
    let (listen, admin) = (
        server.proxy_addr.to_string(),
        server.admin_addr.unwrap().to_string(),
    );
    let app = reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(format!("http://{listen}")).unwrap())
        .build()
        .unwrap();
    let url = format!("http://{}/x", up.addr);
    let last = |h: &str| {
        up.last()
            .and_then(|r| r.headers.get(h).map(|v| v.to_str().unwrap().to_string()))
            .unwrap_or_default()
    };
    assert_eq!(app.get(&url).send().await.unwrap().status(), 200);
    assert_eq!(last("x-version"), "v1");

    // ConfigMap updates, several in a row: each one applies within 2 s.
    for version in 2..=4 {
        config_volume.write(&[("proxy.toml", &config(version, &listen, &admin))]);
        let want = format!("v{version}");
        let took = within(Duration::from_secs(2), || async {
            app.get(&url).send().await.unwrap();
            last("x-version") == want
        })
        .await;
        assert!(
            took.is_some(),
            "ConfigMap update {version} not applied within 2 s"
        );
    }
    assert_eq!(
        ts.calls(),
        1,
        "an unchanged client keeps its token across reloads"
    );

    // Secret rotations, several in a row: the next token is fetched with
    // the new secret (the IdP now accepts only that one) within 2 s.
    for n in 2..=3 {
        let secret = format!("secret-{n}");
        ts.expect_client("orders", &secret);
        secret_volume.write(&[("client-secret", &format!("{secret}\n"))]);
        let before = ts.calls();
        let took = within(Duration::from_secs(2), || async {
            let ok = app.get(&url).send().await.unwrap().status() == 200;
            ok && ts.calls() > before && last("authorization") == format!("Bearer tok-{n}")
        })
        .await;
        assert!(
            took.is_some(),
            "Secret rotation {n} not picked up within 2 s"
        );
        let got = ts.requests().last().unwrap().auth.clone().unwrap();
        assert_eq!(got, ("orders".into(), secret));
    }
    server.shutdown().await;
}

//! Serving, trust round two: what a peer can do to sidekey's ports and
//! what leaves through a response. Each test reproduces a defect found by
//! probing. Actors:
//! // App: raw TCP, hyper or reqwest, through the proxy.
//! // Proxy: sidekey, in-process (`sidekey::start`) on ephemeral ports.
//! // Upstream: answers as each test needs. Token server: counts calls.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed setup step should fail the test loudly"
)]

mod support;

/// Starts sidekey in-process with the whole config as given (the
/// `[proxy]` section included), for tests that choose its listeners.
async fn start_raw(config: &str) -> (sidekey::Server, tempfile::TempDir) {
    support::init_crypto();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.toml");
    std::fs::write(&path, config).unwrap();
    let cfg = sidekey::config::load(&path).unwrap_or_else(|e| panic!("test config invalid:\n{e}"));
    (sidekey::start(cfg).await.unwrap(), dir)
}

#[tokio::test]
async fn tokens_answers_an_ipv4_mapped_loopback_peer() {
    // Proxy: the admin port on an IPv6 socket bound to the IPv4-mapped
    // loopback address (loopback only, like `[::]` but not exposed): an
    // IPv4 client's peer address is `::ffff:127.0.0.1`.
    let (server, _dir) =
        start_raw("[proxy]\nlisten = \"127.0.0.1:0\"\nadmin = \"[::ffff:127.0.0.1]:0\"\n").await;
    let port = server.admin_addr.unwrap().port();
    // App: plain IPv4 to 127.0.0.1.
    let resp = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("http://127.0.0.1:{port}/tokens"))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let body = resp.text().await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"clients\""), "{body}");
    server.shutdown().await;
}

//! Test actors, each started on 127.0.0.1:0 by the test that needs it:
//! an upstream that records what arrived, a token server that counts calls
//! and can fail, a throwaway PKI, and sidekey itself.
#![allow(
    dead_code,
    reason = "each test binary uses a different part of the support code"
)]

pub mod config;
pub mod held;
pub mod intercept;
pub mod login;
pub mod oidc;
pub mod parent_proxy;
pub mod pki;
pub mod raw_http;
pub mod redis;
pub mod sidekey;
pub mod token_server;
pub mod upstream;

/// Polls `check` every 20 ms until it holds; panics with `what` after
/// `within`. For "this has happened by now" points, which a fixed sleep
/// only guesses at on a loaded machine.
pub async fn eventually<F, Fut>(within: std::time::Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {within:?}: {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Asserts that a failing token endpoint saw no more `calls` since
/// `since` than sidekey's backoff allows (0.5 s doubling, -20 % jitter at
/// most: the first request, then one per retry whose time has come), and
/// at least `floor`. Bounded by the time the test really took, so a slow
/// machine does not fail it and a missing backoff still does.
pub fn assert_backoff_held(calls: usize, since: std::time::Instant, floor: usize) {
    let elapsed = since.elapsed();
    let (mut at, mut gap, mut allowed) = (0.0, 0.4, 1);
    while at + gap <= elapsed.as_secs_f64() {
        at += gap;
        gap *= 2.0;
        allowed += 1;
    }
    let allowed = allowed.max(floor);
    assert!(
        calls <= allowed,
        "{calls} token requests in {elapsed:?}: backoff allows {allowed}"
    );
}

/// App: a GET to `url` with `app`, a client whose proxy is sidekey.
pub async fn get_via_proxy(app: &reqwest::Client, url: impl reqwest::IntoUrl) -> reqwest::Response {
    app.get(url).send().await.unwrap()
}

/// Asserts a sidekey error (SPEC "Errors from sidekey itself"): `status`,
/// `X-Sidekey-Error: code` and a JSON body whose `error` is `code`; the
/// body, for the test's own checks.
pub async fn expect_error(resp: reqwest::Response, status: u16, code: &str) -> serde_json::Value {
    let got = resp.status().as_u16();
    let header = resp
        .headers()
        .get("x-sidekey-error")
        .map(|v| v.to_str().unwrap().to_string());
    let text = resp.text().await.unwrap();
    assert_eq!(
        (got, header.as_deref()),
        (status, Some(code)),
        "body: {text}"
    );
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["error"], code, "{text}");
    v
}

pub fn init_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

use std::convert::Infallible;
use std::future::Future;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

/// Binds 127.0.0.1:0 and serves `handler` (plain, or TLS with `tls`),
/// HTTP/1.1 with upgrades and h2. Abort the task to stop it.
pub async fn serve<F, Fut, B>(
    tls: Option<tokio_rustls::TlsAcceptor>,
    handler: F,
) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>)
where
    F: Fn(http::Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<http::Response<B>, Infallible>> + Send + 'static,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let tls = tls.clone();
            let handler = handler.clone();
            tokio::spawn(async move {
                let svc = service_fn(handler);
                let builder = auto::Builder::new(TokioExecutor::new());
                match tls {
                    Some(acceptor) => {
                        if let Ok(s) = acceptor.accept(stream).await {
                            let _ = builder
                                .serve_connection_with_upgrades(TokioIo::new(s), svc)
                                .await;
                        }
                    }
                    None => {
                        let _ = builder
                            .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                            .await;
                    }
                }
            });
        }
    });
    (addr, task)
}

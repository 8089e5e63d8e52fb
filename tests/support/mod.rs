//! Test actors, each started on 127.0.0.1:0 by the test that needs it:
//! an upstream that records what arrived, a token server that counts calls
//! and can fail, a throwaway PKI, and sidekey itself.
#![allow(
    dead_code,
    reason = "each test binary uses a different part of the support code"
)]

pub mod intercept;
pub mod login;
pub mod oidc;
pub mod pki;
pub mod redis;
pub mod sidekey;
pub mod token_server;
pub mod upstream;

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

//! Benchmark upstream: answers `200 ok` on HTTP/1.1 keep-alive, plain on
//! `--port` and TLS on `--tls-port` (leaf for localhost/127.0.0.1 from a
//! fresh CA written to `--ca-out/upstream-ca.pem`). Prints `ready`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "benchmark tool"
)]

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

async fn ok(
    _req: http::Request<hyper::body::Incoming>,
) -> Result<http::Response<Full<Bytes>>, Infallible> {
    Ok(http::Response::new(Full::new(Bytes::from_static(b"ok"))))
}

fn tls_config(ca_out: &str) -> Arc<rustls::ServerConfig> {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::default();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    std::fs::create_dir_all(ca_out).unwrap();
    std::fs::write(format!("{ca_out}/upstream-ca.pem"), ca_cert.pem()).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    leaf.subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    let cert = leaf.signed_by(&key, &ca_cert, &ca_key).unwrap();
    let der = rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let mut c = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.der().clone()], der)
    .unwrap();
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(c)
}

async fn serve(listener: tokio::net::TcpListener, tls: Option<tokio_rustls::TlsAcceptor>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let tls = tls.clone();
        tokio::spawn(async move {
            let b = auto::Builder::new(TokioExecutor::new());
            match tls {
                Some(a) => {
                    if let Ok(s) = a.accept(stream).await {
                        let _ = b.serve_connection(TokioIo::new(s), service_fn(ok)).await;
                    }
                }
                None => {
                    let _ = b
                        .serve_connection(TokioIo::new(stream), service_fn(ok))
                        .await;
                }
            }
        });
    }
}

#[tokio::main]
async fn main() {
    sidekey::init_crypto();
    let port = arg("--port").unwrap_or_else(|| "0".into());
    let plain = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}"))
        .await
        .unwrap();
    tokio::spawn(serve(plain, None));
    if let Some(tls_port) = arg("--tls-port") {
        let ca_out = arg("--ca-out").unwrap_or_else(|| ".".into());
        let l = tokio::net::TcpListener::bind(format!("127.0.0.1:{tls_port}"))
            .await
            .unwrap();
        tokio::spawn(serve(
            l,
            Some(tokio_rustls::TlsAcceptor::from(tls_config(&ca_out))),
        ));
    }
    println!("ready");
    std::future::pending::<()>().await;
}

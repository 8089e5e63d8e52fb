//! HTTPS load generator (wrk cannot CONNECT): C keep-alive HTTP/1.1
//! connections issue `GET /` back to back for a bounded duration, over
//! direct TLS, over a CONNECT that sidekey intercepts, or over a blind
//! tunnel. Prints `mode=… requests=… rps=… p50_us=… p99_us=… errors=…`.
//!
//! bench_client --mode direct|intercept|tunnel --target HOST:PORT
//!              [--proxy ADDR] --ca PEM [--connections 50] [--seconds 10]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "benchmark tool"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_string())
}

async fn open(
    mode: &str,
    target: &str,
    proxy: &str,
    tls: &tokio_rustls::TlsConnector,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = if mode == "direct" {
        TcpStream::connect(target).await.unwrap()
    } else {
        let mut s = TcpStream::connect(proxy).await.unwrap();
        s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut r = BufReader::new(s);
        let mut line = String::new();
        r.read_line(&mut line).await.unwrap();
        assert!(line.starts_with("HTTP/1.1 200"), "CONNECT refused: {line}");
        loop {
            line.clear();
            r.read_line(&mut line).await.unwrap();
            if line == "\r\n" {
                break;
            }
        }
        r.into_inner()
    };
    tcp.set_nodelay(true).unwrap();
    let host = target.rsplit_once(':').map(|(h, _)| h).unwrap().to_string();
    let name = rustls_pki_types::ServerName::try_from(host).unwrap();
    tls.connect(name, tcp).await.unwrap()
}

#[tokio::main]
async fn main() {
    sidekey::init_crypto();
    let mode = arg("--mode", "direct");
    let target = arg("--target", "localhost:8443");
    let proxy = arg("--proxy", "127.0.0.1:3128");
    let conns: usize = arg("--connections", "50").parse().unwrap();
    let secs: u64 = arg("--seconds", "10").parse().unwrap();
    let pem = std::fs::read(arg("--ca", "ca.pem")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::pem::PemObject::pem_slice_iter(&pem) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let workers = (0..conns).map(|_| {
        let (mode, target, proxy, tls) = (mode.clone(), target.clone(), proxy.clone(), tls.clone());
        tokio::spawn(async move {
            let stream = open(&mode, &target, &proxy, &tls).await;
            let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .unwrap();
            tokio::spawn(conn);
            let (mut lat, mut errors) = (Vec::with_capacity(100_000), 0u64);
            while Instant::now() < deadline && lat.len() < 2_000_000 {
                let req = http::Request::get(format!("https://{target}/"))
                    .header("host", &target)
                    .body(Empty::<Bytes>::new())
                    .unwrap();
                let t = Instant::now();
                match send.send_request(req).await {
                    Ok(r) if r.status() == 200 => {
                        let _ = r.into_body().collect().await;
                        lat.push(t.elapsed().as_micros() as u64);
                    }
                    _ => {
                        errors += 1;
                        break;
                    }
                }
            }
            (lat, errors)
        })
    });
    let (mut all, mut errors) = (Vec::new(), 0);
    for w in futures_util::future::join_all(workers).await {
        let (l, e) = w.unwrap();
        all.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    println!(
        "mode={mode} requests={} rps={:.0} p50_us={} p99_us={} errors={errors}",
        all.len(),
        all.len() as f64 / elapsed,
        pct(0.50),
        pct(0.99)
    );
}

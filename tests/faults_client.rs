//! Fault matrix, clients: leaving mid-request or mid-response, and
//! slowloris on the proxy and admin ports.
//! Each checks the status and error code the app sees, recovery, and that
//! sidekey's fds and connections come back (actors: see support::held).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed setup step should fail the test loudly"
)]

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::held::*;
use support::sidekey::Binary;
use support::token_server::TokenServer;
use support::upstream::Upstream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn clients_leaving_mid_request_or_mid_response_leak_nothing() {
    // Token server: issues tokens. Upstream: /upload reads whole bodies,
    // /download?bytes=N streams N bytes.
    let ts = TokenServer::start().await;
    let up = Upstream::start().await;
    // Requests with `X-Routed: 1` take route "r" (client "c", bodies teed
    // for a 401 retry); the others are unmatched (passed through).
    let cfg = format!(
        "{}match_headers = {{ X-Routed = \"1\" }}\n",
        token_config(&ts.url("/token"), "")
    );
    let bin = Binary::start("", &cfg, &[]).await;
    let app = bin.client();
    // Warm up: token cached, upstream connection pooled.
    let r = app
        .get(format!("http://{}/warm", up.addr))
        .header("x-routed", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    drop(app);
    let base = at_rest(&bin).await;
    // App: announces 10 MB, sends 100 KiB, closes.
    for i in 0..10 {
        let routed = if i % 2 == 0 { "X-Routed: 1\r\n" } else { "" };
        let mut s = TcpStream::connect(bin.addr).await.unwrap();
        s.write_all(
            format!(
                "POST http://{}/upload HTTP/1.1\r\nHost: {}\r\n{routed}Content-Length: 10000000\r\n\r\n",
                up.addr, up.addr
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        s.write_all(&vec![b'u'; 100 * 1024]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(s);
    }
    // App: asks for 50 MiB, reads 1 MiB, closes.
    for i in 0..6 {
        let routed = if i % 2 == 0 { "X-Routed: 1\r\n" } else { "" };
        let mut s = TcpStream::connect(bin.addr).await.unwrap();
        s.write_all(
            format!(
                "GET http://{}/download?bytes=52428800 HTTP/1.1\r\nHost: {}\r\n{routed}\r\n",
                up.addr, up.addr
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let mut got = 0usize;
        let mut buf = vec![0u8; 65536];
        while got < 1024 * 1024 {
            let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "download {i} ({routed:?}) stalled after {got} bytes: {:?}",
                        String::from_utf8_lossy(&buf[..buf.len().min(200)])
                    )
                })
                .unwrap();
            assert!(n > 0, "sidekey closed download {i} before 1 MiB");
            got += n;
        }
        drop(s);
    }
    // sidekey keeps serving both paths.
    let app = bin.client();
    for routed in ["1", "0"] {
        let r = app
            .get(format!("http://{}/after", up.addr))
            .header("x-routed", routed)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "x-routed: {routed}");
    }
    let auth: Vec<bool> = up
        .requests()
        .iter()
        .filter(|r| r.uri.path() == "/after")
        .map(|r| r.headers.contains_key("authorization"))
        .collect();
    assert_eq!(auth, [true, false], "the routed request carries the token");
    assert_eq!(ts.calls(), 1, "one token for all of it");
    drop(app);
    settles(
        &bin,
        base,
        3,
        "clients leaving mid-request and mid-response",
    )
    .await;
}

/// Trickles a request head one byte per 100 ms; how long until the peer
/// closed, or `None` if it stayed open for `within`.
async fn slowloris(addr: SocketAddr, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut s = TcpStream::connect(addr).await.unwrap();
    let head = b"GET http://127.0.0.1:9/ HTTP/1.1\r\nHost: 127.0.0.1:9\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
    let mut buf = [0u8; 1024];
    for b in head.iter().cycle() {
        if start.elapsed() > within {
            return None;
        }
        if s.write_all(&[*b]).await.is_err() {
            return Some(start.elapsed());
        }
        // Anything sidekey says first (a 408) is fine; the close counts.
        let read = tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await;
        if let Ok(Ok(0) | Err(_)) = read {
            return Some(start.elapsed());
        }
    }
    None
}

#[tokio::test]
async fn slowloris_clients_are_cut_on_the_proxy_and_admin_ports() {
    // App: 10 connections per port trickling a request head, one byte per
    // 100 ms, and meanwhile a normal request.
    // Upstream: answers 200.
    let up = Upstream::start().await;
    let (bin, base, app) = resting("header_read_timeout = \"500ms\"", "").await;
    let slow = (0..20).map(|i| {
        let addr = if i % 2 == 0 { bin.addr } else { bin.admin };
        async move { (i % 2 == 0, slowloris(addr, Duration::from_secs(5)).await) }
    });
    let normal = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        app.get(format!("http://{}/x", up.addr))
            .send()
            .await
            .unwrap()
            .status()
    };
    let (cut, status) = tokio::join!(futures_util::future::join_all(slow), normal);
    assert_eq!(status, 200, "a normal request during the slowloris");
    for (proxy_port, took) in cut {
        let port = if proxy_port { "proxy" } else { "admin" };
        let took =
            took.unwrap_or_else(|| panic!("a slowloris client on the {port} port stayed open 5 s"));
        assert!(
            took < Duration::from_millis(2500),
            "a slowloris client on the {port} port was cut only after {took:?}"
        );
    }
    drop(app);
    settles(&bin, base, 3, "slowloris").await;
}

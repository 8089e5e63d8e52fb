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

use support::intercept::Interception;
use support::sidekey::Proxy;
use support::token_server::TokenServer;
use support::upstream::Upstream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use std::time::Duration;

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

#[tokio::test]
async fn set_query_parameters_are_removed_from_redirects() {
    // Token server: issues tok-1.
    let ts = TokenServer::start().await;
    // Upstream: redirects to another host, echoing the query it got (as
    // many login and paging endpoints do).
    let up = Upstream::start().await;
    up.set_responder(|r| {
        let q = r.uri.query().unwrap_or("");
        Some((
            302,
            vec![
                (
                    "location".into(),
                    format!("http://elsewhere.example/cb?{q}#top"),
                ),
                ("content-location".into(), format!("/items?{q}")),
            ],
            String::new(),
        ))
    });
    let proxy = Proxy::start(
        "",
        &format!(
            "[clients.c]\ngrant = \"client_credentials\"\ntoken_url = \"{}\"\nclient_id = \"i\"\nclient_secret = \"s\"\n\
             [[routes]]\nname = \"q\"\nhosts = [\"127.0.0.1\"]\nclient = \"c\"\n\
             set_query = {{ access_token = \"<<oauth.token>>\" }}\n",
            ts.url("/token")
        ),
    )
    .await;
    // App: does not follow redirects, to see what it would follow.
    let app = reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(proxy.url()).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = app
        .get(format!("http://{}/items?page=2", up.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    // Upstream: the token did arrive in the query.
    let sent = up.last().unwrap().uri.to_string();
    assert!(sent.contains("access_token=tok-1"), "{sent}");
    // App: neither header carries it any more; the rest is intact.
    assert_eq!(
        r.headers()["location"],
        "http://elsewhere.example/cb?page=2#top"
    );
    assert_eq!(r.headers()["content-location"], "/items?page=2");
    proxy.shutdown().await;
}

#[tokio::test]
async fn login_ignores_callbacks_with_a_wrong_state_and_keeps_waiting() {
    // Token server: the authorize endpoint redirects back with code-123
    // and the login's state; the token endpoint issues a refresh token.
    let ts = TokenServer::start().await;
    ts.set_issue_refresh(true);
    let dir = tempfile::tempdir().unwrap();
    let state_file = dir.path().join("rt.json");
    let port = support::sidekey::free_port().port();
    let cfg_path = dir.path().join("p.toml");
    std::fs::write(
        &cfg_path,
        format!(
            "[clients.u]\ngrant = \"refresh_token\"\ntoken_url = \"{}\"\nauthorize_url = \"{}\"\nredirect_uri = \"http://127.0.0.1:{port}/callback\"\n\
             client_id = \"cli\"\nclient_secret = \"cli-secret\"\nstate_file = \"{}\"\n",
            ts.url("/token"),
            ts.url("/authorize"),
            state_file.display()
        ),
    )
    .unwrap();
    // sidekey login: waits on the loopback callback.
    let login = support::login::Login::start(&cfg_path, "u").await;
    // Another local process: hits the callback with a forged code, then a
    // forged error, neither with the login's state.
    let other = reqwest::Client::builder().no_proxy().build().unwrap();
    for query in [
        "code=evil&state=forged",
        "error=access_denied&state=forged",
        "code=evil",
    ] {
        let r = other
            .get(format!("http://127.0.0.1:{port}/callback?{query}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{query}");
    }
    // Browser: the real redirect still completes the login.
    login.follow().await;
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state_file).unwrap()).unwrap();
    assert_eq!(saved["refresh_token"], "rt-1");
    assert_eq!(
        ts.requests()
            .iter()
            .filter(|r| r.field("code") == Some("evil"))
            .count(),
        0,
        "a forged code was exchanged"
    );
}

/// Reads `s` up to the end of a response head.
async fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(s.read_u8().await.unwrap());
    }
    String::from_utf8_lossy(&head).into_owned()
}

#[tokio::test]
async fn idle_tunnels_and_websockets_close_a_second_into_a_drain() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    // Upstream: plain HTTP, and a WebSocket echo on /ws.
    let up = Upstream::start().await;
    let port = up.addr.port();
    // Proxy: a long drain timeout that an idle pooled connection must not
    // hold the shutdown for.
    let proxy = Proxy::start(
        &format!("drain_timeout = \"30s\"\nconnect_ports = [{port}]"),
        "",
    )
    .await;
    // App 1: a blind tunnel that carried one request and is now pooled.
    let mut tunnel = TcpStream::connect(proxy.addr).await.unwrap();
    tunnel
        .write_all(format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    assert!(read_head(&mut tunnel).await.starts_with("HTTP/1.1 200"));
    tunnel
        .write_all(b"GET /pooled HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    assert!(read_head(&mut tunnel).await.starts_with("HTTP/1.1 200"));
    // App 2: a WebSocket that exchanged one message and went quiet.
    let mut ws_tcp = TcpStream::connect(proxy.addr).await.unwrap();
    ws_tcp
        .write_all(
            format!(
                "GET http://127.0.0.1:{port}/ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
                 Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    assert!(read_head(&mut ws_tcp).await.starts_with("HTTP/1.1 101"));
    let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
        ws_tcp,
        tokio_tungstenite::tungstenite::protocol::Role::Client,
        None,
    )
    .await;
    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(
        ws.next()
            .await
            .unwrap()
            .unwrap()
            .into_text()
            .unwrap()
            .as_str(),
        "hello"
    );
    // Shutdown: both are closed about a second in, not after 30 s.
    let started = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(15), proxy.shutdown())
        .await
        .expect("an idle tunnel or WebSocket held the drain");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "drain took {took:?}");
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), tunnel.read_to_end(&mut rest))
        .await
        .expect("the tunnel is still open");
    assert!(n.is_ok() || rest.is_empty());
    let end = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("the WebSocket is still open");
    assert!(!matches!(end, Some(Ok(Message::Text(_)))), "{end:?}");
}

/// One probe as the kubelet sends it: a new connection, one GET, 1 s to
/// answer. Returns how long the answer took.
async fn probe(admin: std::net::SocketAddr, path: &str) -> Duration {
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let r = client
        .get(format!("http://{admin}{path}"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{path} did not answer within 1 s: {e}"));
    assert_eq!(r.status(), 200, "{path}");
    started.elapsed()
}

#[tokio::test]
async fn health_and_readiness_answer_while_hundreds_of_connections_crowd_the_admin_port() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    // Proxy: the real binary (its file descriptors are its own).
    let bin = support::sidekey::Binary::start("", "", &[]).await;
    let admin = bin.admin;
    let open = Arc::new(AtomicUsize::new(0));
    let mut held = tokio::task::JoinSet::new();
    // Each crowding client connects in its own task: once the port stops
    // accepting, a connect can wait for a free slot.
    for i in 0..400 {
        let open = Arc::clone(&open);
        held.spawn(async move {
            let Ok(Ok(mut tcp)) =
                tokio::time::timeout(Duration::from_secs(30), TcpStream::connect(admin)).await
            else {
                return;
            };
            open.fetch_add(1, Ordering::Relaxed);
            match i % 4 {
                // 100 HTTP/2 connections that never send a request (the
                // client answers PINGs).
                0 => {
                    let io = hyper_util::rt::TokioIo::new(tcp);
                    let handshake = hyper::client::conn::http2::handshake::<
                        _,
                        _,
                        http_body_util::Empty<bytes::Bytes>,
                    >(hyper_util::rt::TokioExecutor::new(), io);
                    if let Ok((_sender, conn)) = handshake.await {
                        let _ = tokio::time::timeout(Duration::from_secs(30), conn).await;
                    }
                }
                // 100 slowloris: a request head, a byte every 200 ms.
                1 => {
                    if tcp
                        .write_all(b"GET /healthz HTTP/1.1\r\nX-Slow: ")
                        .await
                        .is_err()
                    {
                        return;
                    }
                    for _ in 0..100 {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        if tcp.write_all(b"a").await.is_err() {
                            return;
                        }
                    }
                }
                // 200 that send nothing.
                _ => {
                    let mut buf = [0u8; 64];
                    let _ = tokio::time::timeout(Duration::from_secs(30), tcp.read(&mut buf)).await;
                }
            }
        });
    }
    // All connected (or 5 s passed, should connects be held back).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while open.load(Ordering::Relaxed) < 400 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Kubelet: probes every 500 ms for 4 s, while they are all open and
    // as the admin port's timeouts close them.
    let mut slowest = Duration::ZERO;
    for _ in 0..8 {
        for path in ["/healthz", "/readyz"] {
            slowest = slowest.max(probe(admin, path).await);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!(
        "slowest probe among {} crowding connections: {slowest:?}",
        open.load(Ordering::Relaxed)
    );
    held.abort_all();
}

/// App: an HTTP/2 connection over `io` that sends no request; its
/// connection task (which answers the server's PINGs) ends when sidekey
/// closes the connection.
async fn idle_h2<IO>(io: IO) -> tokio::task::JoinHandle<()>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) =
        hyper::client::conn::http2::handshake::<_, _, http_body_util::Empty<bytes::Bytes>>(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(io),
        )
        .await
        .unwrap();
    tokio::spawn(async move {
        let _sender = sender;
        let _ = conn.await;
    })
}

#[tokio::test]
async fn idle_h2_connections_do_not_fill_max_connections_despite_sidekeys_pings() {
    // Proxy: 8 connections at most, 3 s idle (PINGs every 1.5 s); it
    // intercepts `localhost`.
    let s = Interception::start(
        "max_connections = 8\nidle_timeout = \"3s\"",
        "[[routes]]\nname = \"api\"\nhosts = [\"localhost\"]\nset_headers = { \"X-Injected\" = \"yes\" }\n",
    )
    .await;
    let plain = Upstream::start().await;
    // Apps: 4 HTTP/2 connections to the proxy itself (prior knowledge) and
    // 4 inside intercepted TLS, none sending a request.
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(idle_h2(TcpStream::connect(s.proxy.addr).await.unwrap()).await);
        idle.push(idle_h2(s.tls(&[b"h2"]).await).await);
    }
    // A ninth app: gets in once the idle ones are closed.
    let started = std::time::Instant::now();
    let r = reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(s.proxy.url()).unwrap())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
        .get(format!("http://{}/ninth", plain.addr))
        .send()
        .await
        .expect("the ninth client was kept out by idle HTTP/2 connections");
    assert_eq!(r.status(), 200);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(15), "{took:?}");
    for conn in idle {
        tokio::time::timeout(Duration::from_secs(10), conn)
            .await
            .expect("an idle HTTP/2 connection is still open")
            .unwrap();
    }
}

//! One serving path: every connection (proxy port, admin port, the stream
//! inside an intercepted CONNECT) is held to the same timeouts and cap,
//! and drained alike on SIGTERM. Actors:
//! // App: raw TCP (slow clients), reqwest, hyper over TLS, a WebSocket.
//! // Proxy: sidekey in-process, or the real binary for signals.
//! // Upstream: records requests; `/slow?ms=N` answers late; `/ws` echoes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed setup step should fail the test loudly"
)]

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use support::intercept::{tls_section, Interception};
use support::pki::{new_ca, TestCa};
use support::sidekey::{Binary, Proxy};
use support::token_server::TokenServer;
use support::upstream::Upstream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the peer closes; the time it took, or `None` if it stayed
/// open for `within`.
async fn closed_within<S: tokio::io::AsyncRead + Unpin>(
    s: &mut S,
    within: Duration,
) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    let r = tokio::time::timeout(within, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    r.ok().map(|()| start.elapsed())
}

const SHORT: &str = "header_read_timeout = \"300ms\"\nidle_timeout = \"700ms\"\n";

#[tokio::test]
async fn silent_and_slow_clients_are_cut_on_the_proxy_and_admin_ports() {
    let proxy = Proxy::start(SHORT, "").await;
    let patient = Duration::from_secs(5);
    // Sends nothing at all.
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    assert!(
        closed_within(&mut s, patient).await.is_some(),
        "silent client kept open"
    );
    // Half an HTTP/2 preface.
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    assert!(
        closed_within(&mut s, patient).await.is_some(),
        "half preface kept open"
    );
    // Half a request head (slowloris).
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"GET http://127.0.0.1:1/ HTTP/1.1\r\nHost: a\r\n")
        .await
        .unwrap();
    assert!(
        closed_within(&mut s, patient).await.is_some(),
        "half head kept open"
    );
    // The admin port, likewise.
    let mut s = TcpStream::connect(proxy.admin).await.unwrap();
    assert!(
        closed_within(&mut s, patient).await.is_some(),
        "silent admin client kept open"
    );
    let mut s = TcpStream::connect(proxy.admin).await.unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM").await.unwrap();
    assert!(
        closed_within(&mut s, patient).await.is_some(),
        "admin h2 half preface kept open"
    );
}

#[tokio::test]
async fn idle_keep_alive_connections_close_but_slow_requests_do_not() {
    let up = Upstream::start().await;
    let proxy = Proxy::start(SHORT, "").await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    // A request that takes longer than the idle timeout is not idle.
    // Timed from before it is sent: a loaded machine can only make the
    // whole (1.5 s answer + 0.7 s idle) longer, never shorter.
    let sent = Instant::now();
    s.write_all(
        format!(
            "GET http://{}/slow?ms=1500 HTTP/1.1\r\nHost: a\r\n\r\n",
            up.addr
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // Then idle: closed after about the idle timeout.
    closed_within(&mut s, Duration::from_secs(5))
        .await
        .expect("idle connection kept open");
    let took = sent.elapsed();
    assert!(
        took >= Duration::from_millis(2100),
        "closed too early: {took:?} after the request was sent"
    );
}

const INJECT: &str = "[[routes]]\nname = \"api\"\nhosts = [\"localhost\"]\nset_headers = { \"X-Injected\" = \"yes\" }\n";

#[tokio::test]
async fn inside_an_intercepted_connection_the_same_timeouts_hold() {
    let s = Interception::start(SHORT, INJECT).await;
    let up = &s.up;
    // TLS done, then nothing: the first-byte timeout closes it.
    let mut tls = s.tls(&[b"http/1.1"]).await;
    assert!(
        closed_within(&mut tls, Duration::from_secs(5))
            .await
            .is_some(),
        "silent intercepted connection kept open"
    );
    // Half a request head.
    let mut tls = s.tls(&[b"http/1.1"]).await;
    tls.write_all(b"GET /x HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    assert!(
        closed_within(&mut tls, Duration::from_secs(5))
            .await
            .is_some(),
        "half head kept open"
    );
    // HTTP/2: one request, then idle: the connection goes away.
    let tls = s.tls(&[b"h2"]).await;
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    let conn = tokio::spawn(conn);
    let req = http::Request::get(format!("https://localhost:{}/h2", up.addr.port()))
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    assert_eq!(send.send_request(req).await.unwrap().status(), 200);
    assert_eq!(up.last().unwrap().headers["x-injected"], "yes");
    tokio::time::timeout(Duration::from_secs(5), conn)
        .await
        .expect("idle HTTP/2 connection kept open")
        .unwrap()
        .ok();
}

#[tokio::test]
async fn max_connections_caps_concurrent_clients() {
    let up = Upstream::start().await;
    let proxy = Proxy::start("max_connections = 2\n", "").await;
    let get = format!("GET http://{}/x HTTP/1.1\r\nHost: a\r\n\r\n", up.addr);
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(proxy.addr).await.unwrap();
        s.write_all(get.as_bytes()).await.unwrap();
        let mut buf = [0u8; 1024];
        let n = s.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        open.push(s);
    }
    // A third client waits: connected (backlog) but not served.
    let mut third = TcpStream::connect(proxy.addr).await.unwrap();
    third.write_all(get.as_bytes()).await.unwrap();
    let mut buf = [0u8; 1024];
    assert!(
        tokio::time::timeout(Duration::from_millis(500), third.read(&mut buf))
            .await
            .is_err(),
        "a third connection was served past max_connections = 2"
    );
    // One closes: the third is served.
    drop(open.pop());
    let n = tokio::time::timeout(Duration::from_secs(5), third.read(&mut buf))
        .await
        .expect("the waiting client was never served")
        .unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
}

/// Threads of process `pid` named like tokio's multi-thread workers.
fn worker_threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter(|t| {
            let comm = t.as_ref().unwrap().path().join("comm");
            std::fs::read_to_string(comm).is_ok_and(|c| c.trim() == "tokio-rt-worker")
        })
        .count()
}

#[tokio::test]
async fn workers_sets_the_serving_threads_and_both_kinds_serve() {
    let up = Upstream::start().await;
    for (extra, threads) in [("", 0), ("workers = 3\n", 3)] {
        let bin = Binary::start(extra, "", &[]).await;
        let app = bin.client();
        let sends = (0..20).map(|i| app.get(format!("http://{}/w{i}", up.addr)).send());
        for resp in futures_util::future::join_all(sends).await {
            assert_eq!(resp.unwrap().status(), 200, "{extra:?}");
        }
        // One worker is a current-thread runtime: no worker threads at all.
        assert_eq!(worker_threads(bin.pid()), threads, "{extra:?}");
    }
}

// === Drain ===

/// The binary with an interception CA, a route for `localhost` and the
/// upstream's port allowed for CONNECT (tunnels go to 127.0.0.1, unrouted).
async fn binary_with_ca(up: &Upstream, upstream_ca: &TestCa, extra: &str) -> (Binary, TestCa) {
    let sidekey_ca = new_ca("sidekey CA");
    let dir = tempfile::tempdir().unwrap();
    let tls = tls_section(&dir, &sidekey_ca, upstream_ca);
    let bin = Binary::start(
        &format!("connect_ports = [{}]\n{extra}", up.addr.port()),
        &format!("{tls}{INJECT}"),
        &[],
    )
    .await;
    std::mem::forget(dir);
    (bin, sidekey_ca)
}

async fn readyz(admin: std::net::SocketAddr) -> u16 {
    reqwest::get(format!("http://{admin}/readyz"))
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

#[tokio::test]
async fn sigterm_drains_intercepted_requests_tunnels_and_websockets() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    support::init_crypto();
    let upstream_ca = new_ca("upstream CA");
    let up =
        Upstream::start_tls(upstream_ca.server_config(&["localhost", "127.0.0.1"], &[b"http/1.1"]))
            .await;
    let plain = Upstream::start().await;
    let (mut bin, sidekey_ca) = binary_with_ca(&up, &upstream_ca, "drain_timeout = \"20s\"").await;
    let port = up.addr.port();

    // 1. A slow request inside an intercepted HTTPS connection.
    let app = reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(format!("http://{}", bin.addr)).unwrap())
        .add_root_certificate(
            reqwest::Certificate::from_pem(sidekey_ca.cert_pem.as_bytes()).unwrap(),
        )
        .build()
        .unwrap();
    let intercepted = tokio::spawn(async move {
        app.get(format!("https://localhost:{port}/slow?ms=2000"))
            .send()
            .await
            .map(|r| (r.status().as_u16(), r.headers().get("x-upstream").is_some()))
    });

    // 2. A blind tunnel (unrouted 127.0.0.1) carrying a slow TLS answer
    // whose bytes keep moving (a silent tunnel is closed a second into
    // the drain, see `idle_tunnels_and_websockets_close_a_second_into_a_drain`).
    let tunnel_ca = upstream_ca.client_config(&[b"http/1.1"]);
    let proxy_addr = bin.addr;
    let tunnelled = tokio::spawn(async move {
        let mut tcp = TcpStream::connect(proxy_addr).await.unwrap();
        tcp.write_all(format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            head.push(tcp.read_u8().await.unwrap());
        }
        let mut tls = tokio_rustls::TlsConnector::from(tunnel_ca)
            .connect("127.0.0.1".try_into().unwrap(), tcp)
            .await
            .unwrap();
        tls.write_all(
            b"GET /drip?ms=2000 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
        let mut out = Vec::new();
        let _ = tls.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    });

    // 3. A WebSocket session through the plain proxy.
    let mut ws = {
        let mut tcp = TcpStream::connect(bin.addr).await.unwrap();
        let ws_port = plain.addr.port();
        tcp.write_all(
            format!(
                "GET http://127.0.0.1:{ws_port}/ws HTTP/1.1\r\nHost: 127.0.0.1:{ws_port}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
                 Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            head.push(tcp.read_u8().await.unwrap());
        }
        assert!(
            head.starts_with(b"HTTP/1.1 101"),
            "{}",
            String::from_utf8_lossy(&head)
        );
        tokio_tungstenite::WebSocketStream::from_raw_socket(
            tcp,
            tokio_tungstenite::tungstenite::protocol::Role::Client,
            None,
        )
        .await
    };
    // TERM once both slow requests have reached the upstream (each
    // needed a CONNECT and a TLS handshake first).
    support::eventually(
        Duration::from_secs(10),
        "both slow requests in flight",
        || async {
            up.requests()
                .iter()
                .filter(|r| matches!(r.uri.path(), "/slow" | "/drip"))
                .count()
                == 2
        },
    )
    .await;
    // Just before TERM: a WebSocket with no bytes moving for a second of
    // the drain is closed, and this one is to be in use.
    ws.send(Message::text("before")).await.unwrap();
    assert_eq!(
        ws.next()
            .await
            .unwrap()
            .unwrap()
            .into_text()
            .unwrap()
            .as_str(),
        "before"
    );

    bin.signal("TERM");
    support::eventually(Duration::from_secs(5), "/readyz says draining", || async {
        readyz(bin.admin).await == 503
    })
    .await;
    // The WebSocket keeps working while the others drain.
    ws.send(Message::text("during")).await.unwrap();
    assert_eq!(
        ws.next()
            .await
            .unwrap()
            .unwrap()
            .into_text()
            .unwrap()
            .as_str(),
        "during"
    );
    assert_eq!(readyz(bin.admin).await, 503);

    let (status, from_upstream) = intercepted.await.unwrap().expect("intercepted request cut");
    assert_eq!((status, from_upstream), (200, true));
    let tunnel_answer = tunnelled.await.unwrap();
    assert!(
        tunnel_answer.starts_with("HTTP/1.1 200"),
        "tunnel cut: {tunnel_answer:?}"
    );
    // sidekey may have closed it already: idle for a second of the drain.
    let _ = ws.close(None).await;
    drop(ws);

    let exit = tokio::time::timeout(Duration::from_secs(15), bin.child.wait())
        .await
        .expect("sidekey did not exit after the drain")
        .unwrap();
    assert!(exit.success(), "exit status {exit:?}");
    // The last lines may still be on their way from the pipe (seen in a
    // fresh-clone CI run: the exit was observed before the reader got them).
    support::eventually(Duration::from_secs(5), "the drain is logged", || async {
        bin.logs().contains("every connection finished")
    })
    .await;
}

#[tokio::test]
async fn at_the_drain_deadline_what_is_left_is_cut_counted_and_logged() {
    support::init_crypto();
    let upstream_ca = new_ca("upstream CA");
    let up = Upstream::start_tls(upstream_ca.server_config(&["127.0.0.1"], &[b"http/1.1"])).await;
    let (mut bin, _) = binary_with_ca(&up, &upstream_ca, "drain_timeout = \"1s\"").await;
    // A blind tunnel that stays open and busy: a TLS answer dripping a
    // byte every 100 ms for a minute (a silent one would be closed a
    // second into the drain, not cut at the deadline).
    let mut tcp = TcpStream::connect(bin.addr).await.unwrap();
    tcp.write_all(
        format!(
            "CONNECT 127.0.0.1:{} HTTP/1.1\r\nHost: x\r\n\r\n",
            up.addr.port()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut head = [0u8; 12];
    tcp.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    while !head.ends_with(b"\r\n\r\n") {
        head.rotate_left(1);
        head[11] = tcp.read_u8().await.unwrap();
    }
    let mut tls = tokio_rustls::TlsConnector::from(upstream_ca.client_config(&[b"http/1.1"]))
        .connect("127.0.0.1".try_into().unwrap(), tcp)
        .await
        .unwrap();
    tls.write_all(b"GET /drip?ms=60000 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 12];
    tls.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    // Keep reading what drips, so the tunnel's bytes keep moving.
    let reader = tokio::spawn(async move {
        let mut buf = [0u8; 256];
        let started = Instant::now();
        loop {
            match tokio::time::timeout(Duration::from_secs(20), tls.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return started.elapsed(),
            }
        }
    });
    let started = Instant::now();
    bin.signal("TERM");
    let exit = tokio::time::timeout(Duration::from_secs(10), bin.child.wait())
        .await
        .expect("sidekey did not exit at the drain deadline")
        .unwrap();
    assert!(exit.success());
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "exited before the deadline: {took:?}"
    );
    let read_for = tokio::time::timeout(Duration::from_secs(5), reader)
        .await
        .expect("the tunnel was not cut")
        .unwrap();
    assert!(read_for < Duration::from_secs(15), "{read_for:?}");
    // The last lines may still be on their way from the pipe.
    support::eventually(Duration::from_secs(5), "the cut is logged", || async {
        let logs = bin.logs();
        logs.contains("connections still open were cut") && logs.contains("\"cut\":1")
    })
    .await;
}

#[tokio::test]
async fn idle_keep_alive_connections_close_at_once_on_sigterm() {
    let up = Upstream::start().await;
    let mut bin = Binary::start("drain_timeout = \"20s\"", "", &[]).await;
    let mut s = TcpStream::connect(bin.addr).await.unwrap();
    s.write_all(format!("GET http://{}/x HTTP/1.1\r\nHost: a\r\n\r\n", up.addr).as_bytes())
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    bin.signal("TERM");
    let took = closed_within(&mut s, Duration::from_secs(5))
        .await
        .expect("idle connection held the drain");
    assert!(took < Duration::from_secs(3), "{took:?}");
    let exit = tokio::time::timeout(Duration::from_secs(5), bin.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success());
}

#[tokio::test]
async fn shutdown_delay_keeps_accepting_while_readyz_says_draining() {
    let up = Upstream::start().await;
    let mut bin = Binary::start("shutdown_delay = \"5s\"", "", &[]).await;
    bin.signal("TERM");
    support::eventually(Duration::from_secs(4), "/readyz says draining", || async {
        readyz(bin.admin).await == 503
    })
    .await;
    // The app's last calls during the delay still go through.
    let r = bin
        .client()
        .get(format!("http://{}/late", up.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let exit = tokio::time::timeout(Duration::from_secs(15), bin.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success());
    assert!(
        TcpStream::connect(bin.addr).await.is_err(),
        "still accepting after the delay"
    );
}

// === Admin ===

#[tokio::test]
async fn tokens_shows_state_and_counts_never_the_token() {
    let up = Upstream::start().await;
    let ts = TokenServer::start().await;
    let cfg = format!(
        "[clients.orders]\ngrant = \"client_credentials\"\ntoken_url = \"{}\"\nclient_id = \"i\"\nclient_secret = \"s3cr3t\"\n\
         [clients.idle]\ngrant = \"client_credentials\"\ntoken_url = \"{}\"\nclient_id = \"i2\"\nclient_secret = \"s\"\n\
         [[routes]]\nname = \"r\"\nhosts = [\"127.0.0.1\"]\nclient = \"orders\"\nset_headers = {{ Authorization = \"Bearer <<oauth.token>>\" }}\n",
        ts.url("/token"),
        ts.url("/token2"),
    );
    let proxy = Proxy::start("", &cfg).await;
    proxy
        .client()
        .get(format!("http://{}/x", up.addr))
        .send()
        .await
        .unwrap();
    let body = reqwest::get(format!("http://{}/tokens", proxy.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !body.contains("tok-1") && !body.contains("s3cr3t"),
        "{body}"
    );
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let orders = &v["clients"]["orders"];
    assert_eq!(orders["state"], "valid", "{body}");
    assert_eq!(orders["source"], "fetch");
    assert_eq!(orders["fetches"]["ok"], 1);
    assert!(orders["expires_in_seconds"].as_u64().unwrap() > 3500);
    assert_eq!(v["clients"]["idle"]["state"], "unused");
}

#[test]
fn ca_bundle_writes_the_system_roots_then_the_sidekey_ca() {
    let dir = tempfile::tempdir().unwrap();
    let roots = [new_ca("root one"), new_ca("root two")];
    let system = dir.path().join("system.pem");
    std::fs::write(
        &system,
        format!("{}{}", roots[0].cert_pem, roots[1].cert_pem),
    )
    .unwrap();
    let sidekey_ca = new_ca("sidekey CA");
    let (cert, key) = sidekey_ca.write_to(dir.path());
    let cfg = dir.path().join("p.toml");
    std::fs::write(
        &cfg,
        format!(
            "[tls]\nca_cert = \"{}\"\nca_key = \"{}\"\n",
            cert.display(),
            key.display()
        ),
    )
    .unwrap();
    let out = dir.path().join("trust/bundle.pem");
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_sidekey"))
        .args(["ca", "bundle", "--out"])
        .arg(&out)
        .arg("--config")
        .arg(&cfg)
        .env("SSL_CERT_FILE", &system)
        .env_remove("SSL_CERT_DIR")
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let bundle = std::fs::read_to_string(&out).unwrap();
    assert_eq!(
        bundle.matches("-----BEGIN CERTIFICATE-----").count(),
        3,
        "{bundle}"
    );
    assert!(bundle.trim_end().ends_with(sidekey_ca.cert_pem.trim_end()));
    // Without [tls] there is no CA to add: a clear error.
    std::fs::write(&cfg, "").unwrap();
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_sidekey"))
        .args(["ca", "bundle", "--out"])
        .arg(&out)
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("ca_cert is not set"));
}

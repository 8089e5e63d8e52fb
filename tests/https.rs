//! HTTPS through CONNECT. Actors:
//! // App: curl or a Rust client, trusting sidekey's CA (or not).
//! // Proxy: sidekey with an interception CA; upstream TLS trusted via extra_roots.
//! // Upstream: TLS (h2 + http/1.1) with a certificate from a separate test CA.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed setup step should fail the test loudly"
)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use support::pki::{new_ca, TestCa};
use support::sidekey::Proxy;
use support::token_server::TokenServer;
use support::upstream::Upstream;
use support::{expect_error, get_via_proxy};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

struct Setup {
    proxy: Proxy,
    up: Upstream,
    ts: TokenServer,
    upstream_ca: TestCa,
    sidekey_ca: TestCa,
    sidekey_ca_path: std::path::PathBuf,
    upstream_ca_path: std::path::PathBuf,
}

/// Upstream on localhost with its own CA; sidekey intercepts "localhost"
/// (route with a client) and tunnels everything else.
async fn setup(extra_proxy: &str) -> Setup {
    support::init_crypto();
    let upstream_ca = new_ca("upstream test CA");
    let sidekey_ca = new_ca("sidekey test CA");
    let up = Upstream::start_tls(
        upstream_ca.server_config(&["localhost", "127.0.0.1"], &[b"h2", b"http/1.1"]),
    )
    .await;
    let ts = TokenServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (ca_cert, ca_key) = sidekey_ca.write_to(dir.path());
    let upstream_ca_path = dir.path().join("upstream-ca.pem");
    std::fs::write(&upstream_ca_path, &upstream_ca.cert_pem).unwrap();
    let cfg = format!(
        "[tls]\nca_cert = \"{}\"\nca_key = \"{}\"\nextra_roots = [\"{}\"]\n\n\
         [clients.c]\ngrant = \"client_credentials\"\ntoken_url = \"{}\"\nclient_id = \"i\"\nclient_secret = \"s\"\n\n\
         [[routes]]\nname = \"api\"\nhosts = [\"localhost\"]\nclient = \"c\"\nremove_headers = [\"X-Org\"]\n\
         set_headers = {{ Authorization = \"Bearer <<oauth.token>>\", \"X-Injected\" = \"yes\" }}\n",
        ca_cert.display(),
        ca_key.display(),
        upstream_ca_path.display(),
        ts.url("/token"),
    );
    let proxy = Proxy::start(
        &format!("connect_ports = [443, {}]\n{extra_proxy}", up.addr.port()),
        &cfg,
    )
    .await;
    // Keep the CA files alive for curl.
    let sidekey_ca_path = proxy.dir.path().join("sidekey-ca.crt");
    std::fs::write(&sidekey_ca_path, &sidekey_ca.cert_pem).unwrap();
    let upstream_ca_copy = proxy.dir.path().join("upstream-ca.pem");
    std::fs::write(&upstream_ca_copy, &upstream_ca.cert_pem).unwrap();
    std::mem::forget(dir);
    Setup {
        proxy,
        up,
        ts,
        upstream_ca,
        sidekey_ca,
        sidekey_ca_path,
        upstream_ca_path: upstream_ca_copy,
    }
}

/// App: `curl --proxy sidekey --cacert CA -H HEADER URL`; panics unless it succeeds.
async fn curl(proxy: String, ca: &std::path::Path, header: &str, url: String) {
    let args: Vec<String> = vec![
        "-sS".into(),
        "--noproxy".into(),
        "".into(),
        "--max-time".into(),
        "20".into(),
        "--proxy".into(),
        proxy,
        "--cacert".into(),
        ca.display().to_string(),
        "-H".into(),
        header.into(),
        url,
    ];
    let out =
        tokio::task::spawn_blocking(move || std::process::Command::new("curl").args(args).output())
            .await
            .unwrap()
            .expect("curl is installed");
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn curl_through_connect_gets_headers_injected_for_routed_hosts() {
    let s = setup("").await;
    let port = s.up.addr.port();
    curl(
        s.proxy.url(),
        &s.sidekey_ca_path,
        "X-Org: secret-selector",
        format!("https://localhost:{port}/hello"),
    )
    .await;
    let got = s.up.last().unwrap();
    assert_eq!(got.headers["authorization"], "Bearer tok-1");
    assert_eq!(got.headers["x-injected"], "yes");
    assert!(
        got.headers.get("x-org").is_none(),
        "remove_headers inside the tunnel"
    );
    assert_eq!(got.uri.path(), "/hello");
    assert_eq!(s.ts.calls(), 1);
}

#[tokio::test]
async fn unrouted_https_is_tunnelled_with_the_upstreams_own_certificate() {
    let s = setup("").await;
    let port = s.up.addr.port();
    // The app trusts only the upstream's CA: success proves it saw the
    // upstream's certificate, not one minted by sidekey.
    curl(
        s.proxy.url(),
        &s.upstream_ca_path,
        "Authorization: app-own",
        format!("https://127.0.0.1:{port}/plain"),
    )
    .await;
    let got = s.up.last().unwrap();
    assert_eq!(
        got.headers["authorization"], "app-own",
        "tunnel must not touch the request"
    );
    assert!(got.headers.get("x-injected").is_none());
    assert_eq!(s.ts.calls(), 0, "no token fetched for a tunnelled host");
}

async fn connect(proxy: std::net::SocketAddr, authority: &str) -> (TcpStream, String) {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut reader = BufReader::new(s);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await.unwrap() == 0 {
            break;
        }
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    if !head.starts_with("HTTP/1.1 200") {
        let mut rest = String::new();
        let _ = tokio::time::timeout(Duration::from_millis(500), reader.read_to_string(&mut rest))
            .await;
        head.push_str(&rest);
    }
    (reader.into_inner(), head)
}

#[tokio::test]
async fn connect_policy_ports_and_deny() {
    let s = setup("connect = \"deny\"").await;
    // Port not in connect_ports: 403 denied.
    let (_, head) = connect(s.proxy.addr, "localhost:25").await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    assert!(head
        .to_ascii_lowercase()
        .contains("x-sidekey-error: denied"));
    // Unrouted host with connect = "deny": 403.
    let (_, head) = connect(s.proxy.addr, &format!("127.0.0.1:{}", s.up.addr.port())).await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    // Routed host is still intercepted.
    let (_, head) = connect(s.proxy.addr, &format!("localhost:{}", s.up.addr.port())).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}

#[tokio::test]
async fn an_app_that_does_not_trust_the_ca_fails_cleanly_and_no_token_moves() {
    let s = setup("").await;
    let (tcp, head) = connect(s.proxy.addr, &format!("localhost:{}", s.up.addr.port())).await;
    assert!(head.starts_with("HTTP/1.1 200"));
    // App trusts only the upstream CA, so sidekey's leaf is rejected.
    let tls = tokio_rustls::TlsConnector::from(s.upstream_ca.client_config(&[b"http/1.1"]));
    let err = tls
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .expect_err("handshake must fail against an untrusted CA");
    assert!(
        err.to_string().contains("certificate") || err.to_string().contains("UnknownIssuer"),
        "{err}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(s.ts.calls(), 0, "no token fetched");
    assert_eq!(s.up.count(), 0, "nothing forwarded");
}

#[tokio::test]
async fn an_upstream_that_fails_verification_is_a_502_never_a_downgrade() {
    // sidekey is not told about the upstream's CA (no extra_roots).
    support::init_crypto();
    let upstream_ca = new_ca("unknown upstream CA");
    let sidekey_ca = new_ca("sidekey CA");
    let up = Upstream::start_tls(upstream_ca.server_config(&["localhost"], &[b"http/1.1"])).await;
    let dir = tempfile::tempdir().unwrap();
    let (c, k) = sidekey_ca.write_to(dir.path());
    let cfg = format!(
        "[tls]\nca_cert = \"{}\"\nca_key = \"{}\"\n\n[[routes]]\nname = \"api\"\nhosts = [\"localhost\"]\nset_headers = {{ \"X-A\" = \"1\" }}\n",
        c.display(),
        k.display()
    );
    let proxy = Proxy::start(&format!("connect_ports = [{}]", up.addr.port()), &cfg).await;
    let app = reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(proxy.url()).unwrap())
        .add_root_certificate(
            reqwest::Certificate::from_pem(sidekey_ca.cert_pem.as_bytes()).unwrap(),
        )
        .build()
        .unwrap();
    let r = get_via_proxy(&app, format!("https://localhost:{}/", up.addr.port())).await;
    expect_error(r, 502, "upstream_unreachable").await;
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn rust_client_speaks_h2_through_the_interception() {
    let s = setup("").await;
    let app = reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(s.proxy.url()).unwrap())
        .add_root_certificate(
            reqwest::Certificate::from_pem(s.sidekey_ca.cert_pem.as_bytes()).unwrap(),
        )
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = app
        .get(format!("https://localhost:{}/h2", s.up.addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), http::Version::HTTP_2, "app <-> sidekey is h2");
    let got = s.up.last().unwrap();
    assert_eq!(
        got.version,
        http::Version::HTTP_2,
        "sidekey <-> upstream is h2 when offered"
    );
    assert_eq!(got.headers["authorization"], "Bearer tok-1");
}

/// A TLS session to sidekey through CONNECT, trusting sidekey's CA.
async fn tls_through(s: &Setup, alpn: &[&[u8]]) -> tokio_rustls::client::TlsStream<TcpStream> {
    let (tcp, head) = connect(s.proxy.addr, &format!("localhost:{}", s.up.addr.port())).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    tokio_rustls::TlsConnector::from(s.sidekey_ca.client_config(alpn))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap()
}

#[tokio::test]
async fn grpc_style_streaming_keeps_trailers() {
    use http_body_util::BodyExt;
    let s = setup("").await;
    let tls = tls_through(&s, &[b"h2"]).await;
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    // App: streams three messages as the request body.
    let frames = futures_util::stream::iter(["one", "two", "three"].map(|m| {
        Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(bytes::Bytes::from(m)))
    }));
    let req = http::Request::post(format!("https://localhost:{}/grpc", s.up.addr.port()))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(http_body_util::StreamBody::new(frames))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().expect("trailers preserved");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(&collected.to_bytes()[..], b"onetwothree");
    let got = s.up.last().unwrap();
    assert_eq!(got.headers["authorization"], "Bearer tok-1");
}

#[tokio::test]
async fn websockets_work_on_plain_http_and_inside_interception() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::{protocol::Role, Message};
    // Plain HTTP: an absolute-form upgrade request through the proxy.
    let plain_up = Upstream::start().await;
    let ts = TokenServer::start().await;
    let cfg = format!(
        "[clients.c]\ngrant = \"client_credentials\"\ntoken_url = \"{}\"\nclient_id = \"i\"\nclient_secret = \"s\"\n\n\
         [[routes]]\nname = \"ws\"\nhosts = [\"localhost\"]\nclient = \"c\"\nset_headers = {{ Authorization = \"Bearer <<oauth.token>>\" }}\n",
        ts.url("/token")
    );
    let proxy = Proxy::start("", &cfg).await;
    let mut tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let port = plain_up.addr.port();
    tcp.write_all(
        format!(
            "GET http://localhost:{port}/ws HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut reader = BufReader::new(tcp);
    let mut status = String::new();
    reader.read_line(&mut status).await.unwrap();
    assert!(status.starts_with("HTTP/1.1 101"), "{status}");
    loop {
        let mut l = String::new();
        reader.read_line(&mut l).await.unwrap();
        if l == "\r\n" {
            break;
        }
    }
    let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
        reader.into_inner(),
        Role::Client,
        None,
    )
    .await;
    ws.send(Message::text("hello plain")).await.unwrap();
    assert_eq!(
        ws.next()
            .await
            .unwrap()
            .unwrap()
            .into_text()
            .unwrap()
            .as_str(),
        "hello plain"
    );
    assert_eq!(
        plain_up.last().unwrap().headers["authorization"],
        "Bearer tok-1"
    );

    // Inside an intercepted tunnel (wss://).
    let s = setup("").await;
    let tls = tls_through(&s, &[b"http/1.1"]).await;
    let (mut ws, resp) =
        tokio_tungstenite::client_async(format!("wss://localhost:{}/ws", s.up.addr.port()), tls)
            .await
            .unwrap();
    assert_eq!(resp.status(), 101);
    ws.send(Message::text("hello tls")).await.unwrap();
    assert_eq!(
        ws.next()
            .await
            .unwrap()
            .unwrap()
            .into_text()
            .unwrap()
            .as_str(),
        "hello tls"
    );
    assert_eq!(
        s.up.last().unwrap().headers["authorization"],
        "Bearer tok-1"
    );
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

#[tokio::test]
async fn five_hundred_concurrent_tunnels_leak_nothing() {
    // Upstream: a TCP echo server, reached through blind tunnels.
    let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo_port = echo.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = echo.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    let proxy = Proxy::start(&format!("connect_ports = [{echo_port}]"), "").await;
    let before = open_fds();
    let tunnels = (0..500).map(|i| {
        let addr = proxy.addr;
        tokio::spawn(async move {
            let (mut s, head) = connect(addr, &format!("127.0.0.1:{echo_port}")).await;
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            let msg = format!("tunnel {i}");
            s.write_all(msg.as_bytes()).await.unwrap();
            let mut buf = vec![0u8; msg.len()];
            s.read_exact(&mut buf).await.unwrap();
            assert_eq!(buf, msg.as_bytes());
            s.shutdown().await.unwrap();
            // Half-close: the echo server closes after our FIN; we see EOF.
            let mut rest = Vec::new();
            tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest))
                .await
                .unwrap()
                .unwrap();
        })
    });
    for t in futures_util::future::join_all(tunnels).await {
        t.unwrap();
    }
    // Everything closes: descriptors and the open-connections gauge return.
    let mut after = open_fds();
    for _ in 0..50 {
        if after <= before + 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = open_fds();
    }
    assert!(after <= before + 5, "fds before {before}, after {after}");
    let m = proxy.metrics().await;
    assert!(m.contains("sidekey_connections_open 0"), "{m}");
    let _ = Arc::new(());
}

#[test]
fn ca_generate_writes_a_usable_ca_with_a_private_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("does/not/exist/yet");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_sidekey"))
        .args(["ca", "generate", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(out.join("ca.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    assert!(std::fs::read_to_string(out.join("ca.crt"))
        .unwrap()
        .starts_with("-----BEGIN CERTIFICATE-----"));
    // It loads as an interception CA.
    let cfg = format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\nadmin = \"\"\n[tls]\nca_cert = \"{}\"\nca_key = \"{}\"\n",
        out.join("ca.crt").display(),
        out.join("ca.key").display()
    );
    let path = dir.path().join("p.toml");
    std::fs::write(&path, cfg).unwrap();
    let loaded = sidekey::config::load(&path).unwrap();
    support::init_crypto();
    sidekey::Shared::new(loaded).unwrap();
}

#[tokio::test]
async fn a_missing_ca_is_a_clear_start_up_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.toml");
    std::fs::write(
        &path,
        "[proxy]\nlisten = \"127.0.0.1:0\"\nadmin = \"\"\n[tls]\nca_cert = \"missing/ca.crt\"\nca_key = \"missing/ca.key\"\n",
    )
    .unwrap();
    let cfg = sidekey::config::load(&path).unwrap();
    let err = sidekey::start(cfg).await.err().expect("start must fail");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("tls.ca_cert") && msg.contains("missing/ca.crt"),
        "{msg}"
    );
}

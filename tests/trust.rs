//! Trust: the token goes only where the app named, input from an IdP or a
//! client cannot break a route, and no secret reaches any output. Each test
//! reproduces a defect found by probing sidekey as an attacker or a flaky
//! identity provider would. Actors:
//! // App: raw TCP or reqwest, through the proxy.
//! // Proxy: sidekey, in-process or as the real binary (logs, environment).
//! // Upstream: records what arrived. Token server: counts calls, can misbehave.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed setup step should fail the test loudly"
)]

mod support;

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use support::config::{client, route};
use support::intercept::{connect_tls, Interception};
use support::pki::new_ca;
use support::sidekey::{proxy_env, Binary, Proxy};
use support::token_server::TokenServer;
use support::upstream::Upstream;
use support::{expect_error, get_via_proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Client `c` (token endpoint `token_url`) behind a Bearer route "api"
/// for `host`.
fn bearer_route(token_url: &str, host: &str) -> String {
    format!(
        "{}{}",
        client("c", token_url),
        route("api").host(host).client("c").bearer()
    )
}

/// A route with a client for the upstream's address (`127.0.0.1`).
fn bearer_config(ts: &TokenServer) -> String {
    bearer_route(&ts.url("/token"), "127.0.0.1")
}

/// App: writes `raw` to the proxy and reads the whole answer (the request
/// asks for `Connection: close` or the proxy closes).
async fn raw(proxy: std::net::SocketAddr, raw: &str) -> String {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(raw.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// App: `request_line` with `Host: x`, `headers` and `Connection: close`
/// (see `raw`).
async fn raw_request(proxy: std::net::SocketAddr, request_line: &str, headers: &str) -> String {
    raw(
        proxy,
        &format!("{request_line}\r\nHost: x\r\n{headers}Connection: close\r\n\r\n"),
    )
    .await
}

// === Tokens going where the app did not name ===

#[tokio::test]
async fn the_apps_host_header_never_reaches_the_upstream() {
    let up = Upstream::start().await;
    let ts = TokenServer::start().await;
    let proxy = Proxy::start("", &bearer_config(&ts)).await;
    let target = up.addr;
    // App: an absolute-form target with a Host naming another tenant, twice.
    let resp = raw(
        proxy.addr,
        &format!(
            "GET http://{target}/x HTTP/1.1\r\nHost: other.example\r\nHost: evil.example\r\nConnection: close\r\n\r\n"
        ),
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    // Upstream: exactly one Host, the target's, next to the token.
    let got = up.last().unwrap();
    let hosts: Vec<_> = got.headers.get_all("host").iter().collect();
    assert_eq!(
        hosts,
        [target.to_string().as_str()],
        "one Host, the target's"
    );
    assert_eq!(got.headers["authorization"], "Bearer tok-1");
}

/// The route of `bearer_config` for `localhost`, the name a CONNECT uses.
fn intercepted_bearer(ts: &TokenServer) -> String {
    bearer_route(&ts.url("/token"), "localhost")
}

#[tokio::test]
async fn inside_an_intercepted_connection_host_and_authority_follow_the_connect_target() {
    let ts = TokenServer::start().await;
    let s = Interception::start("", &intercepted_bearer(&ts)).await;
    let port = s.up.addr.port();
    let want = format!("localhost:{port}");

    // HTTP/1.1: a Host header naming another tenant.
    let tls = connect_tls(
        s.proxy.addr,
        port,
        &s.sidekey_ca,
        "localhost",
        &[b"http/1.1"],
    )
    .await
    .unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("/h1")
        .header("host", "other.example")
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let got = s.up.last().unwrap();
    let authority = got
        .headers
        .get("host")
        .map(|h| h.to_str().unwrap().to_string())
        .or_else(|| got.uri.authority().map(|a| a.to_string()));
    assert_eq!(authority.as_deref(), Some(want.as_str()));
    // HTTP/1.1 upstream: one Host; HTTP/2 upstream: `:authority` only.
    assert!(
        got.headers.get_all("host").iter().count() <= 1,
        "{:?}",
        got.headers
    );

    // HTTP/1.1: an absolute-form target naming another host is refused.
    let req = http::Request::get("http://other.example/abs")
        .header("host", "other.example")
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.headers()["x-sidekey-error"], "bad_request");
    assert_eq!(
        s.up.count(),
        1,
        "nothing forwarded for the conflicting target"
    );

    // HTTP/2: an :authority naming another host.
    let tls = connect_tls(s.proxy.addr, port, &s.sidekey_ca, "localhost", &[b"h2"])
        .await
        .unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("https://other.example/h2")
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let got = s.up.last().unwrap();
    assert_eq!(got.uri.path(), "/h2");
    let authority = got.uri.authority().map(|a| a.to_string()).or_else(|| {
        got.headers
            .get("host")
            .map(|h| h.to_str().unwrap().to_string())
    });
    assert_eq!(authority.as_deref(), Some(want.as_str()));
    assert!(
        got.headers
            .get_all("host")
            .iter()
            .all(|h| h == want.as_str()),
        "{:?}",
        got.headers
    );
}

#[tokio::test]
async fn a_client_hello_naming_another_host_gets_no_certificate() {
    let ts = TokenServer::start().await;
    let s = Interception::start("", &intercepted_bearer(&ts)).await;
    let port = s.up.addr.port();
    // The CONNECT names localhost; the ClientHello names another host.
    let err = connect_tls(
        s.proxy.addr,
        port,
        &s.sidekey_ca,
        "other.example",
        &[b"http/1.1"],
    )
    .await;
    assert!(err.is_err(), "a mismatching SNI must not get a certificate");
    // The matching name still works.
    connect_tls(
        s.proxy.addr,
        port,
        &s.sidekey_ca,
        "localhost",
        &[b"http/1.1"],
    )
    .await
    .expect("the CONNECT host gets its certificate");
    assert_eq!(s.up.count(), 0);
}

#[tokio::test]
async fn token_requests_ignore_proxy_variables_in_sidekeys_environment() {
    let up = Upstream::start().await;
    let ts = TokenServer::start().await;
    // A proxy named by sidekey's own environment, as a shared pod spec or
    // shell sets it for the app: it must never see a token request.
    let trap = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let trap_url = format!("http://{}", trap.local_addr().unwrap());
    let trapped = Arc::new(AtomicUsize::new(0));
    let t = Arc::clone(&trapped);
    tokio::spawn(async move {
        while let Ok((_s, _)) = trap.accept().await {
            t.fetch_add(1, Ordering::SeqCst);
        }
    });
    let bin = Binary::start("", &bearer_config(&ts), &proxy_env(&trap_url)).await;
    let r = get_via_proxy(&bin.client(), format!("http://{}/through", up.addr)).await;
    assert_eq!(r.status(), 200, "{}", bin.logs());
    assert_eq!(ts.calls(), 1);
    assert_eq!(up.last().unwrap().headers["authorization"], "Bearer tok-1");
    assert_eq!(
        trapped.load(Ordering::SeqCst),
        0,
        "the token request went to the env proxy"
    );
}

// === Input that breaks a route or the process ===

#[tokio::test]
async fn a_huge_expires_in_or_exp_does_not_break_the_client() {
    let up = Upstream::start().await;
    let ts = TokenServer::start().await;
    ts.set_extra(serde_json::json!({ "expires_in": u64::MAX }));
    let proxy = Proxy::start("", &bearer_config(&ts)).await;
    let app = proxy.client();
    for _ in 0..3 {
        let r = get_via_proxy(&app, format!("http://{}/x", up.addr)).await;
        assert_eq!(r.status(), 200);
    }
    assert_eq!(ts.calls(), 1, "the clamped token is cached");
    // A JWT whose exp is near the integer limit, on a fresh client.
    let ts2 = TokenServer::start().await;
    let b64 = |s: &str| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
    };
    let jwt = format!(
        "{}.{}.sig",
        b64("{}"),
        b64(&format!("{{\"exp\":{}}}", i64::MAX))
    );
    ts2.set_extra(serde_json::json!({ "access_token": jwt, "expires_in": null }));
    let proxy2 = Proxy::start("", &bearer_config(&ts2)).await;
    let r = get_via_proxy(&proxy2.client(), format!("http://{}/y", up.addr)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        up.last().unwrap().headers["authorization"],
        format!("Bearer {jwt}")
    );
}

#[tokio::test]
async fn a_token_expired_on_arrival_is_never_injected() {
    let up = Upstream::start().await;
    let ts = TokenServer::start().await;
    ts.set_extra(serde_json::json!({ "expires_in": 0 }));
    // Counted from the start: the first fetch may be made at start-up.
    let started = std::time::Instant::now();
    let proxy = Proxy::start("", &bearer_config(&ts)).await;
    let app = proxy.client();
    for _ in 0..10 {
        let r = get_via_proxy(&app, format!("http://{}/x", up.addr)).await;
        let body = expect_error(r, 503, "token_unavailable").await.to_string();
        assert!(body.contains("expired on arrival"), "{body}");
    }
    assert_eq!(up.count(), 0, "the expired token reached the upstream");
    support::assert_backoff_held(ts.calls(), started, 2);
}

#[tokio::test]
async fn a_token_response_over_one_mebibyte_is_refused() {
    let up = Upstream::start().await;
    // Token server: a valid token followed by 50 MB of padding, chunked.
    let (addr, _task) = support::serve(None, |_req| async {
        let head = Bytes::from_static(b"{\"access_token\":\"big\",\"expires_in\":3600,\"pad\":\"");
        let pad = Bytes::from(vec![b'x'; 64 * 1024]);
        let frames = std::iter::once(head)
            .chain(std::iter::repeat_n(pad, 800))
            .chain(std::iter::once(Bytes::from_static(b"\"}")))
            .map(|b| Ok::<_, Infallible>(http_body::Frame::data(b)));
        let body = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
        Ok::<_, Infallible>(http::Response::new(body))
    })
    .await;
    let cfg = bearer_route(&format!("http://{addr}/token"), "127.0.0.1");
    let proxy = Proxy::start("", &cfg).await;
    let r = get_via_proxy(&proxy.client(), format!("http://{}/x", up.addr)).await;
    let body = expect_error(r, 503, "token_unavailable").await.to_string();
    assert!(body.contains("larger than 1024 KiB"), "{body}");
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn a_streaming_body_on_a_route_with_a_client_reaches_the_upstream_at_once() {
    // Upstream: answers as soon as the head arrives, before the body ends
    // (as a client-streaming gRPC server acknowledges a stream).
    let heads = Arc::new(AtomicUsize::new(0));
    let h = Arc::clone(&heads);
    let (up_addr, _task) =
        support::serve(None, move |req: http::Request<hyper::body::Incoming>| {
            let h = Arc::clone(&h);
            async move {
                assert_eq!(req.headers()["authorization"], "Bearer tok-1");
                h.fetch_add(1, Ordering::SeqCst);
                Ok::<_, Infallible>(http::Response::new(http_body_util::Full::new(
                    Bytes::from_static(b"head seen"),
                )))
            }
        })
        .await;
    let ts = TokenServer::start().await;
    let proxy = Proxy::start("", &bearer_config(&ts)).await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(
        format!(
            "POST http://{up_addr}/stream HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    // The body has not ended; the response must come anyway.
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("the request was held back until its body ended")
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(heads.load(Ordering::SeqCst), 1);
    s.write_all(b"0\r\n\r\n").await.unwrap();
}

#[tokio::test]
async fn a_small_body_is_still_replayed_after_a_401() {
    let up = Upstream::start().await;
    let ts = TokenServer::start().await;
    // Upstream: rejects the first token, accepts the second.
    up.set_responder(|r| {
        (r.headers["authorization"] == "Bearer tok-1").then(|| (401, vec![], "stale".into()))
    });
    let proxy = Proxy::start("", &bearer_config(&ts)).await;
    let r = proxy
        .client()
        .post(format!("http://{}/replay", up.addr))
        .body("payload")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let got = up.requests();
    assert_eq!(got.len(), 2);
    assert_eq!(&got[1].body[..], b"payload");
    assert_eq!(got[1].headers["authorization"], "Bearer tok-2");
}

#[tokio::test]
async fn te_trailers_is_forwarded_and_nothing_else_of_te() {
    let up = Upstream::start().await;
    let proxy = Proxy::start("", "").await;
    // The app's TE and Connection; the TE the upstream gets.
    for (te, connection, forwarded) in [
        ("trailers", "TE, close", Some("trailers")),
        ("gzip", "close", None),
    ] {
        let resp = raw(
            proxy.addr,
            &format!(
                "GET http://{}/te HTTP/1.1\r\nHost: x\r\nTE: {te}\r\nConnection: {connection}\r\n\r\n",
                up.addr
            ),
        )
        .await;
        assert!(resp.starts_with("HTTP/1.1 200"), "{te}: {resp}");
        let got = up.last().unwrap().headers;
        assert_eq!(
            got.get("te").map(|v| v.to_str().unwrap()),
            forwarded,
            "TE: {te}"
        );
    }
}

#[tokio::test]
async fn malformed_targets_are_bad_requests() {
    let up = Upstream::start().await;
    let proxy = Proxy::start("connect_ports = [443]", "").await;
    let port = up.addr.port();
    for target in [
        "GET http://127.0.0.1:131101/ HTTP/1.1".to_string(),
        format!("GET http://user:pw@127.0.0.1:{port}/ HTTP/1.1"),
        "CONNECT user:pw@localhost:443 HTTP/1.1".to_string(),
        "CONNECT localhost:70000 HTTP/1.1".to_string(),
    ] {
        let resp = raw_request(proxy.addr, &target, "").await;
        assert!(resp.starts_with("HTTP/1.1 400"), "{target}: {resp}");
        assert!(
            resp.to_ascii_lowercase()
                .contains("x-sidekey-error: bad_request"),
            "{resp}"
        );
        assert!(!resp.contains("pw@"), "{resp}");
    }
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn the_proxy_auth_scheme_is_case_insensitive() {
    let up = Upstream::start().await;
    let proxy = Proxy::start("proxy_auth = { username = \"app\", password = \"pw\" }", "").await;
    // base64("app:pw") = YXBwOnB3
    for (scheme, want) in [
        ("basic", "200"),
        ("BASIC", "200"),
        ("Basic", "200"),
        ("Bearer", "407"),
    ] {
        let resp = raw_request(
            proxy.addr,
            &format!("GET http://{}/a HTTP/1.1", up.addr),
            &format!("Proxy-Authorization: {scheme} YXBwOnB3\r\n"),
        )
        .await;
        assert!(
            resp.starts_with(&format!("HTTP/1.1 {want}")),
            "{scheme}: {resp}"
        );
    }
}

#[test]
fn check_refuses_a_ca_key_of_another_ca() {
    let dir = tempfile::tempdir().unwrap();
    let a = new_ca("CA a");
    let b = new_ca("CA b");
    std::fs::create_dir_all(dir.path().join("a")).unwrap();
    std::fs::create_dir_all(dir.path().join("b")).unwrap();
    let (cert, _) = a.write_to(&dir.path().join("a"));
    let (_, key) = b.write_to(&dir.path().join("b"));
    let path = dir.path().join("p.toml");
    std::fs::write(
        &path,
        format!(
            "[tls]\nca_cert = \"{}\"\nca_key = \"{}\"\n",
            cert.display(),
            key.display()
        ),
    )
    .unwrap();
    let (code, text) = support::sidekey::check(&path);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("is not the private key of tls.ca_cert"),
        "{text}"
    );
}

#[tokio::test]
async fn unspecified_addresses_are_always_refused() {
    let up = Upstream::start().await;
    // Loopback denied, as a locked-down config would: 0.0.0.0, 0 and ::
    // reach loopback services all the same, so they are refused always.
    let proxy = Proxy::start("deny_destinations = [\"127.0.0.0/8\", \"::1/128\"]", "").await;
    let port = up.addr.port();
    for host in ["0.0.0.0", "0", "[::]", "[::ffff:0.0.0.0]"] {
        let resp = raw_request(
            proxy.addr,
            &format!("GET http://{host}:{port}/ HTTP/1.1"),
            "",
        )
        .await;
        assert!(resp.starts_with("HTTP/1.1 403"), "{host}: {resp}");
    }
    assert_eq!(up.count(), 0, "a request reached the loopback upstream");
}

// === Secrets in output ===

#[tokio::test]
async fn no_configured_secret_or_userinfo_appears_in_any_output() {
    let up = Upstream::start().await;
    let ts = TokenServer::start().await;
    // A private key pasted as bare base64 (no PEM armour): a secret that
    // once was echoed in the 503 and in a WARN line on every retry.
    let key_secret = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQSECRETKEYMATERIAL";
    let cfg = format!(
        "{}{}",
        client("jwt", &ts.url("/token"))
            .credentials("i", None)
            .extra(&format!(
                "client_auth = \"private_key_jwt\"\nprivate_key = \"{key_secret}\""
            )),
        route("api").host("127.0.0.1").client("jwt").bearer()
    );
    let bin = Binary::start("", &cfg, &[]).await;
    let r = get_via_proxy(&bin.client(), format!("http://{}/x", up.addr)).await;
    assert_eq!(r.status(), 503);
    let body = r.text().await.unwrap();
    assert!(!body.contains(key_secret), "503 body: {body}");
    assert!(
        body.contains("private_key"),
        "the error names the field: {body}"
    );
    // Userinfo in a request target: refused, and not in the access log.
    let userinfo = "alice:s3cret-userinfo-pw";
    let resp = raw_request(
        bin.addr,
        &format!("GET http://{userinfo}@{}/u HTTP/1.1", up.addr),
        "",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    let metrics = reqwest::get(format!("http://{}/metrics", bin.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let logs = bin.logs();
    for secret in [key_secret, "s3cret-userinfo-pw"] {
        assert!(!logs.contains(secret), "logs hold {secret}:\n{logs}");
        assert!(!metrics.contains(secret), "metrics hold {secret}");
        assert!(!resp.contains(secret), "response holds {secret}");
    }
    // `check` with a secret written as an unquoted number.
    let path = bin.dir.path().join("number.toml");
    std::fs::write(
        &path,
        "[clients.c]\ngrant = \"client_credentials\"\ntoken_url = \"http://i/t\"\nclient_id = \"a\"\nclient_secret = 31415926535897\n",
    )
    .unwrap();
    let (code, all) = support::sidekey::check(&path);
    assert_eq!(code, Some(1));
    assert!(all.contains("invalid type"), "{all}");
    assert!(!all.contains("31415926535897"), "{all}");
}

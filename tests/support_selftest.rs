//! Proves the test actors in `tests/support` behave as the other tests
//! assume: the upstream records and answers by path, the token server
//! issues, counts and fails on demand, and the PKI yields working TLS.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed setup step should fail the test loudly"
)]

mod support;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::pki::new_ca;
use support::token_server::{Mode, TokenServer};
use support::upstream::Upstream;

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

#[tokio::test]
async fn upstream_records_headers_and_echoes_json() {
    let up = Upstream::start().await;
    let resp = client()
        .post(format!("http://{}/some/path?a=1", up.addr))
        .header("X-Test", "hello")
        .body("abc")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-upstream"], "yes");
    let json: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(json["method"], "POST");
    assert_eq!(json["path"], "/some/path?a=1");
    assert_eq!(json["headers"]["x-test"], "hello");
    assert_eq!(json["body_len"], 3);

    assert_eq!(up.count(), 1);
    let rec = up.last().unwrap();
    assert_eq!(rec.method, http::Method::POST);
    assert_eq!(rec.uri.path(), "/some/path");
    assert_eq!(rec.headers["x-test"], "hello");
    assert_eq!(rec.body, Bytes::from_static(b"abc"));
    assert_eq!(rec.body_len, 3);
    assert_eq!(rec.version, http::Version::HTTP_11);
}

#[tokio::test]
async fn upstream_download_upload_and_responder() {
    let up = Upstream::start().await;
    let n = 200_000u64;
    let resp = client()
        .get(format!("http://{}/download?bytes={n}", up.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.content_length(), Some(n));
    let body = resp.bytes().await.unwrap();
    assert_eq!(body.len() as u64, n);
    assert!(body.iter().all(|b| *b == b'x'));

    let big = vec![b'y'; 300_000];
    let json: serde_json::Value = client()
        .post(format!("http://{}/upload", up.addr))
        .body(big)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(json["body_len"], 300_000);
    let rec = up.last().unwrap();
    assert_eq!(rec.body_len, 300_000);
    assert_eq!(rec.body.len(), 65536);

    let resp = client()
        .get(format!("http://{}/sidekey-error", up.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-sidekey-error"], "forged");

    up.set_responder(|r| {
        (r.uri.path() == "/teapot")
            .then(|| (418, vec![("x-custom".into(), "1".into())], "short".into()))
    });
    let resp = client()
        .get(format!("http://{}/teapot", up.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 418);
    assert_eq!(resp.headers()["x-custom"], "1");
    assert_eq!(resp.text().await.unwrap(), "short");
    assert_eq!(up.count(), 4);
}

#[tokio::test]
async fn upstream_grpc_echoes_with_trailers_over_h2c() {
    let up = Upstream::start().await;
    let tcp = tokio::net::TcpStream::connect(up.addr).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::post(format!("http://{}/grpc", up.addr))
        .header("content-type", "application/grpc")
        .body(Full::new(Bytes::from_static(b"\0\0\0\0\x03abc")))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.headers()["content-type"], "application/grpc");
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().unwrap();
    assert_eq!(collected.to_bytes(), Bytes::from_static(b"\0\0\0\0\x03abc"));
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["grpc-message"], "ok");
    assert_eq!(up.last().unwrap().version, http::Version::HTTP_2);
}

#[tokio::test]
async fn upstream_websocket_echo() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let up = Upstream::start().await;
    let (mut ws, resp) = tokio_tungstenite::connect_async(format!("ws://{}/ws", up.addr))
        .await
        .unwrap();
    assert_eq!(resp.status(), 101);
    ws.send(Message::text("ping")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("ping"));
    ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::binary(vec![1u8, 2, 3])
    );
    assert!(up.last().unwrap().headers.contains_key("sec-websocket-key"));
}

async fn post_form(ts: &TokenServer, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
    client().post(ts.url(path)).form(form).send().await.unwrap()
}

#[tokio::test]
async fn token_server_issues_counts_and_fails() {
    let ts = TokenServer::start().await;
    let form = [("grant_type", "client_credentials"), ("scope", "a b")];
    let j: serde_json::Value = post_form(&ts, "/token", &form).await.json().await.unwrap();
    assert_eq!(j["access_token"], "tok-1");
    assert_eq!(j["token_type"], "Bearer");
    assert_eq!(j["expires_in"], 3600);
    assert_eq!(j["scope"], "a b");
    assert!(j.get("refresh_token").is_none());

    ts.set_ttl(60);
    ts.set_issue_refresh(true);
    ts.set_extra(serde_json::json!({"id_token": "idt"}));
    let j: serde_json::Value = post_form(&ts, "/token", &form).await.json().await.unwrap();
    assert_eq!(j["access_token"], "tok-2");
    assert_eq!(j["expires_in"], 60);
    assert_eq!(j["refresh_token"], "rt-2");
    assert_eq!(j["id_token"], "idt");
    assert_eq!(ts.calls(), 2);
    assert_eq!(
        ts.requests()[0].field("grant_type"),
        Some("client_credentials")
    );

    ts.set_mode(Mode::Fail(503));
    let r = post_form(&ts, "/token", &form).await;
    assert_eq!(r.status(), 503);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["error"],
        "server_error"
    );
    ts.set_mode(Mode::OAuthError("invalid_scope".into()));
    let r = post_form(&ts, "/token", &form).await;
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["error"],
        "invalid_scope"
    );
    ts.set_mode(Mode::Garbage);
    let r = post_form(&ts, "/token", &form).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "not json");
    assert_eq!(ts.calls(), 5);

    ts.set_mode(Mode::Ok);
    let j: serde_json::Value = post_form(&ts, "/token", &form).await.json().await.unwrap();
    assert_eq!(
        j["access_token"], "tok-3",
        "failures do not consume token numbers"
    );
}

#[tokio::test]
async fn token_server_client_authentication() {
    let ts = TokenServer::start().await;
    ts.expect_client("my id", "s:e&c");
    let form = [("grant_type", "client_credentials")];
    // RFC 6749 §2.3.1: each part form-urlencoded, then base64.
    let basic = |id: &str, secret: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
        )
    };
    let send = |auth: String| {
        client()
            .post(ts.url("/token"))
            .header("authorization", auth)
            .form(&form)
            .send()
    };
    let r = send(basic("my+id", "wrong")).await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["error"],
        "invalid_client"
    );
    let r = send(basic("my+id", "s%3Ae%26c")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        ts.requests()[1].auth,
        Some(("my id".into(), "s:e&c".into()))
    );

    let r = post_form(
        &ts,
        "/token",
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "my id"),
            ("client_secret", "s:e&c"),
        ],
    )
    .await;
    let j: serde_json::Value = r.json().await.unwrap();
    assert_eq!(j["access_token"], "tok-2");
    assert_eq!(ts.calls(), 3);
}

#[tokio::test]
async fn token_server_capillary_shapes() {
    let ts = TokenServer::start().await;
    ts.expect_client("key1", "secret1");
    let path = "/v3/oauth/token/generate";
    let post = |body: serde_json::Value| client().post(ts.url(path)).json(&body).send();
    let r = post(serde_json::json!({"key": "key1", "secret": "nope"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let j: serde_json::Value = r.json().await.unwrap();
    assert!(j["data"].is_null());
    assert_eq!(j["errors"][0]["code"], 1001);

    let r = post(serde_json::json!({"key": "key1", "secret": "secret1"}))
        .await
        .unwrap();
    let j: serde_json::Value = r.json().await.unwrap();
    assert_eq!(j["data"]["accessToken"], "tok-1");
    assert_eq!(j["data"]["ttlSeconds"], 3600);
    assert!(j["errors"].is_null());
    assert_eq!(ts.calls(), 2);
    let last = ts.requests().pop().unwrap();
    assert_eq!(last.path, path);
    assert_eq!(last.json.unwrap()["key"], "key1");
}

#[tokio::test]
async fn tls_upstream_trusts_test_ca() {
    support::init_crypto();
    let ca = new_ca("selftest CA");
    let up =
        Upstream::start_tls(ca.server_config(&["localhost", "127.0.0.1"], &[b"h2", b"http/1.1"]))
            .await;

    // tokio-rustls + hyper h2, SNI "localhost" while dialing 127.0.0.1.
    let connector = tokio_rustls::TlsConnector::from(ca.client_config(&[b"h2"]));
    let tcp = tokio::net::TcpStream::connect(up.addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get(format!("https://localhost:{}/tls", up.addr.port()))
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(up.last().unwrap().version, http::Version::HTTP_2);

    // reqwest trusting the CA by PEM, HTTP/1.1 via the IP SAN.
    let rc = reqwest::Client::builder()
        .no_proxy()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.cert_pem.as_bytes()).unwrap())
        .http1_only()
        .build()
        .unwrap();
    let r = rc
        .get(format!("https://127.0.0.1:{}/ip", up.addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.last().unwrap().uri.path(), "/ip");
    assert_eq!(up.count(), 2);

    // A client trusting a different CA is refused.
    let other = new_ca("other CA");
    let connector = tokio_rustls::TlsConnector::from(other.client_config(&[]));
    let tcp = tokio::net::TcpStream::connect(up.addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    assert!(connector.connect(name, tcp).await.is_err());

    let dir = tempfile::tempdir().unwrap();
    let (crt, key) = ca.write_to(dir.path());
    assert!(std::fs::read_to_string(crt)
        .unwrap()
        .contains("BEGIN CERTIFICATE"));
    assert!(std::fs::read_to_string(key)
        .unwrap()
        .contains("PRIVATE KEY"));
    let (cert_pem, key_pem) = ca.client_cert("client-1");
    assert!(cert_pem.contains("BEGIN CERTIFICATE") && key_pem.contains("PRIVATE KEY"));
}

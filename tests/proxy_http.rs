//! Plain-HTTP forward proxying end to end. Actors in every test:
//! // App: reqwest with HTTP_PROXY-style proxy settings.
//! // Proxy: sidekey, in-process on 127.0.0.1:0.
//! // Upstream: records what arrived. Token server: counts calls, can fail.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed setup step should fail the test loudly"
)]

mod support;

use std::time::Duration;

use support::config::{client, route, Client};
use support::held::until_ok;
use support::sidekey::Proxy;
use support::token_server::{Mode, TokenServer};
use support::upstream::Upstream;
use support::{expect_error, get_via_proxy};

/// Client "orders": `orders-sync` with secret `s3cr3t-value`, plus `extra`.
fn cc_client(ts: &TokenServer, extra: &str) -> Client {
    client("orders", &ts.url("/oauth2/token"))
        .credentials("orders-sync", Some("s3cr3t-value"))
        .extra(extra)
}

/// Token server, upstream, and sidekey with client "orders" and a Bearer
/// route "r" for localhost; `url` is the upstream through that route.
struct Bearer {
    ts: TokenServer,
    up: Upstream,
    proxy: Proxy,
    app: reqwest::Client,
    url: String,
}

async fn bearer(proxy_extra: &str) -> Bearer {
    let ts = TokenServer::start().await;
    let up = Upstream::start().await;
    let proxy = bearer_proxy(&ts, proxy_extra).await;
    let app = proxy.client();
    let url = format!("http://localhost:{}/", up.addr.port());
    Bearer {
        ts,
        up,
        proxy,
        app,
        url,
    }
}

/// sidekey with client "orders" and a Bearer route "r" for localhost.
async fn bearer_proxy(ts: &TokenServer, proxy_extra: &str) -> Proxy {
    let cfg = format!(
        "{}{}",
        cc_client(ts, ""),
        route("r").host("localhost").client("orders").bearer()
    );
    Proxy::start(proxy_extra, &cfg).await
}

#[tokio::test]
async fn injects_bearer_token_and_static_headers_only_on_the_route() {
    // Token server: issues tok-1 to orders-sync with the right secret.
    let ts = TokenServer::start().await;
    ts.expect_client("orders-sync", "s3cr3t-value");
    // Upstream: two names for it, one routed, one not.
    let up = Upstream::start().await;
    let port = up.addr.port();
    let cfg = format!(
        "{}{}",
        cc_client(&ts, "scopes = [\"orders.read\", \"orders.write\"]\naudience = \"https://api.example.com\"\nparams = { resource = \"urn:orders\" }"),
        route("orders")
            .host("localhost")
            .client("orders")
            .bearer()
            .header("X-Static", "yes")
    );
    let proxy = Proxy::start("", &cfg).await;
    let app = proxy.client();

    // App -> routed host: token and static header injected, Host kept.
    let r = get_via_proxy(&app, format!("http://localhost:{port}/orders?x=1")).await;
    assert_eq!(r.status(), 200);
    let got = up.last().unwrap();
    assert_eq!(got.headers["authorization"], "Bearer tok-1");
    assert_eq!(got.headers["x-static"], "yes");
    assert_eq!(got.headers["host"], format!("localhost:{port}"));
    assert_eq!(got.uri.path_and_query().unwrap().as_str(), "/orders?x=1");

    // Token server: one call, basic auth, scopes/audience/params as form fields.
    let reqs = ts.requests();
    assert_eq!(reqs.len(), 1);
    let form = &reqs[0].form;
    let field = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(field("grant_type"), Some("client_credentials"));
    assert_eq!(field("scope"), Some("orders.read orders.write"));
    assert_eq!(field("audience"), Some("https://api.example.com"));
    assert_eq!(field("resource"), Some("urn:orders"));
    assert_eq!(
        reqs[0].auth.as_ref().map(|(u, _)| u.as_str()),
        Some("orders-sync")
    );
    assert_eq!(
        field("client_secret"),
        None,
        "basic auth keeps the secret out of the form"
    );

    // App -> same upstream by IP (no route): nothing injected, untouched.
    let r = get_via_proxy(&app, format!("http://127.0.0.1:{port}/other")).await;
    assert_eq!(r.status(), 200);
    let got = up.last().unwrap();
    assert!(
        got.headers.get("authorization").is_none(),
        "unmatched host got a token"
    );
    assert!(got.headers.get("x-static").is_none());
    assert_eq!(
        ts.calls(),
        1,
        "cached token reused, none fetched for unmatched"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn client_secret_post_sends_credentials_in_the_form() {
    let ts = TokenServer::start().await;
    ts.expect_client("orders-sync", "s3cr3t-value");
    let up = Upstream::start().await;
    let cfg = format!(
        "{}{}",
        cc_client(&ts, "client_auth = \"post\""),
        route("r")
            .host("localhost")
            .client("orders")
            .header("Authorization", "<<oauth.tokenType>> <<oauth.token>>")
    );
    let proxy = Proxy::start("", &cfg).await;
    let r = get_via_proxy(
        &proxy.client(),
        format!("http://localhost:{}/", up.addr.port()),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(up.last().unwrap().headers["authorization"], "Bearer tok-1");
    let req = &ts.requests()[0];
    assert!(req.auth.is_none());
    assert!(req
        .form
        .contains(&("client_id".into(), "orders-sync".into())));
    assert!(req
        .form
        .contains(&("client_secret".into(), "s3cr3t-value".into())));
}

#[tokio::test]
async fn capillary_route_gets_its_token_and_attribution_headers() {
    // Token server: Capillary's JSON endpoint.
    let ts = TokenServer::start().await;
    ts.expect_client("cap-key", "cap-secret");
    let up = Upstream::start().await;
    let capillary = |name: &str, secret: &str| {
        client(name, &ts.url("/v3/oauth/token/generate"))
            .grant("capillary")
            .credentials("cap-key", Some(secret))
    };
    let cfg = format!(
        "{}{}{}{}",
        capillary("cap", "cap-secret"),
        capillary("cap_bad", "wrong-secret"),
        route("cap")
            .path_prefix("/v2/")
            .client("cap")
            .header("X-CAP-API-OAUTH-TOKEN", "<<oauth.token>>")
            .header("X-CAP-API-ATTRIBUTION-ENTITY-TYPE", "STORE_CODE")
            .header("X-CAP-API-ATTRIBUTION-ENTITY-CODE", "store-042"),
        route("cap-bad")
            .path_prefix("/bad/")
            .client("cap_bad")
            .header("X-CAP-API-OAUTH-TOKEN", "<<oauth.token>>"),
    );
    let proxy = Proxy::start("", &cfg).await;
    let app = proxy.client();
    let r = app
        .post(format!("http://localhost:{}/v2/customers", up.addr.port()))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let got = up.last().unwrap();
    assert_eq!(got.headers["x-cap-api-oauth-token"], "tok-1");
    assert_eq!(
        got.headers["x-cap-api-attribution-entity-type"],
        "STORE_CODE"
    );
    assert_eq!(
        got.headers["x-cap-api-attribution-entity-code"],
        "store-042"
    );
    let sent = ts.requests()[0].json.clone().unwrap();
    assert_eq!(
        sent,
        serde_json::json!({"key": "cap-key", "secret": "cap-secret"})
    );

    // A Capillary error response: 503 naming the client, never the secret.
    let r = get_via_proxy(&app, format!("http://localhost:{}/bad/x", up.addr.port())).await;
    let body = expect_error(r, 503, "token_unavailable").await;
    assert_eq!(body["client"], "cap_bad");
    assert_eq!(body["route"], "cap-bad");
    let msg = body["message"].as_str().unwrap();
    assert!(
        msg.contains("Invalid key/secret") && !msg.contains("wrong-secret"),
        "{msg}"
    );
}

#[tokio::test]
async fn two_hundred_concurrent_cold_requests_make_one_token_request() {
    let Bearer {
        ts,
        up,
        proxy: _proxy,
        app,
        url,
    } = bearer("").await;
    ts.set_delay(Duration::from_millis(200));
    let reqs = (0..200).map(|_| {
        let app = app.clone();
        let url = url.clone();
        tokio::spawn(async move { get_via_proxy(&app, url).await.status() })
    });
    for r in futures_util::future::join_all(reqs).await {
        assert_eq!(r.unwrap(), 200);
    }
    assert_eq!(ts.calls(), 1);
    assert_eq!(up.count(), 200);
    assert!(up
        .requests()
        .iter()
        .all(|r| r.headers["authorization"] == "Bearer tok-1"));
}

#[tokio::test]
async fn refreshes_before_expiry_without_requests_waiting() {
    let Bearer {
        ts,
        up,
        proxy: _proxy,
        app,
        url,
    } = bearer("").await;
    ts.set_ttl(4);
    // refresh_before 60s is clamped to half the 4 s lifetime: refresh at ~2 s.
    assert_eq!(get_via_proxy(&app, &url).await.status(), 200);
    assert_eq!(ts.calls(), 1);
    support::eventually(
        Duration::from_millis(3500),
        "a background refresh with no request",
        || async { ts.calls() >= 2 },
    )
    .await;
    assert_eq!(ts.calls(), 2, "one refresh per half-lifetime");
    // Requests now use the refreshed token without triggering a fetch.
    ts.set_delay(Duration::from_secs(5));
    let started = std::time::Instant::now();
    assert_eq!(get_via_proxy(&app, &url).await.status(), 200);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a request waited for a token fetch"
    );
    assert_eq!(up.last().unwrap().headers["authorization"], "Bearer tok-2");
}

#[tokio::test]
async fn token_endpoint_down_gives_503_at_once_then_recovers() {
    let Bearer {
        ts,
        up,
        proxy,
        app,
        url,
    } = bearer("").await;
    ts.set_mode(Mode::Fail(500));
    // Hammer it for ~2 s: every answer is a 503 JSON, token calls stay few.
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    let mut n = 0;
    while std::time::Instant::now() < deadline && n < 2000 {
        let body = expect_error(get_via_proxy(&app, &url).await, 503, "token_unavailable").await;
        assert_eq!(body["client"], "orders");
        assert!(body["message"].as_str().unwrap().contains("500"));
        n += 1;
    }
    assert!(
        n > 20,
        "503s must come at once, not after a wait ({n} in 2 s)"
    );
    let calls = ts.calls();
    assert!(
        calls <= 4,
        "{calls} token requests in 2 s while down: backoff is not working"
    );
    assert_eq!(
        up.count(),
        0,
        "nothing reached the upstream without a token"
    );
    // Recovery.
    ts.set_mode(Mode::Ok);
    until_ok(&app, &url, Duration::from_secs(10)).await;
    assert!(proxy
        .metrics()
        .await
        .contains("sidekey_token_fetches_total{client=\"orders\",outcome=\"error\"}"));
}

#[tokio::test]
async fn upstream_401_drops_the_token_refetches_and_retries_once() {
    let ts = TokenServer::start().await;
    let up = Upstream::start().await;
    // Upstream: rejects tok-1 (revoked early), accepts anything newer.
    up.set_responder(|r| {
        (r.headers.get("authorization").map(|v| v == "Bearer tok-1") == Some(true))
            .then(|| (401, vec![], "revoked".to_string()))
    });
    let proxy = bearer_proxy(&ts, "retry_body_limit = \"1KiB\"").await;
    let app = proxy.client();
    let url = format!("http://localhost:{}/upload", up.addr.port());
    let r = app.post(&url).body("small body").send().await.unwrap();
    assert_eq!(r.status(), 200, "retried with a fresh token");
    let seen = up.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].headers["authorization"], "Bearer tok-2");
    assert_eq!(
        &seen[1].body[..],
        b"small body",
        "the kept body was replayed"
    );
    assert_eq!(ts.calls(), 2);

    // A 401 for a body over retry_body_limit goes back to the app; the
    // token is still dropped, so the next request gets a fresh one.
    up.set_responder(|r| {
        (r.headers.get("authorization").map(|v| v == "Bearer tok-2") == Some(true))
            .then(|| (401, vec![], "revoked".to_string()))
    });
    let big = vec![b'x'; 4096];
    let r = app.post(&url).body(big).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(up.count(), 3, "no retry for a body that was not kept");
    let r = app.post(&url).body("again").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.last().unwrap().headers["authorization"], "Bearer tok-3");
}

#[tokio::test]
async fn strips_hop_by_hop_and_forged_error_headers() {
    let up = Upstream::start().await;
    let proxy = Proxy::start(
        "",
        &route("r").host("localhost").header("X-A", "1").to_string(),
    )
    .await;
    let r = proxy
        .client()
        .get(format!("http://localhost:{}/sidekey-error", up.addr.port()))
        .header("Connection", "keep-alive, X-Drop-Me")
        .header("X-Drop-Me", "1")
        .header("Keep-Alive", "timeout=5")
        .header("Proxy-Connection", "keep-alive")
        .header("TE", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers().get("x-sidekey-error").is_none(),
        "upstream must not be able to forge X-Sidekey-Error"
    );
    let got = up.last().unwrap();
    for h in [
        "x-drop-me",
        "keep-alive",
        "proxy-connection",
        "te",
        "proxy-authorization",
    ] {
        assert!(got.headers.get(h).is_none(), "{h} reached the upstream");
    }
    assert_eq!(got.headers["x-a"], "1");
}

#[tokio::test]
async fn proxy_errors_are_json_with_codes() {
    let up = Upstream::start().await;
    let closed = support::sidekey::free_port();
    let cfg = route("denied").path_prefix("/nope").to_string();
    let proxy = Proxy::start(
        "upstream_timeout = \"500ms\"\ndeny_destinations = [\"169.254.0.0/16\", \"127.0.0.2/32\"]",
        &cfg,
    )
    .await;
    let app = proxy.client();
    let direct = reqwest::Client::new();
    let (closed, up) = (closed.port(), up.addr.port());
    for (what, client, url, status, code) in [
        (
            "origin-form request straight to the proxy port",
            &direct,
            format!("{}/healthz", proxy.url()),
            400,
            "bad_request",
        ),
        (
            "nobody listening",
            &app,
            format!("http://127.0.0.1:{closed}/"),
            502,
            "upstream_unreachable",
        ),
        (
            "upstream never answers: after upstream_timeout",
            &app,
            format!("http://127.0.0.1:{up}/hang"),
            504,
            "upstream_timeout",
        ),
        (
            "denied destination by IP literal",
            &app,
            format!("http://127.0.0.2:{up}/"),
            403,
            "denied",
        ),
        (
            "denied link-local metadata address",
            &app,
            "http://169.254.169.254/latest/meta-data/".to_string(),
            403,
            "denied",
        ),
    ] {
        let r = get_via_proxy(client, url).await;
        assert_eq!(r.headers()["content-type"], "application/json", "{what}");
        let body = expect_error(r, status, code).await;
        assert!(body["route"].is_null(), "{what}: {body}");
    }
    // Malformed target.
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(b"GET http:/// HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 512];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 400"));
}

#[tokio::test]
async fn deny_destinations_apply_to_resolved_addresses() {
    // "localhost" resolves to 127.0.0.1, which this config denies.
    let up = Upstream::start().await;
    let proxy = Proxy::start("deny_destinations = [\"127.0.0.0/8\", \"::1/128\"]", "").await;
    let r = get_via_proxy(
        &proxy.client(),
        format!("http://localhost:{}/", up.addr.port()),
    )
    .await;
    expect_error(r, 403, "denied").await;
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn unmatched_deny_and_proxy_auth() {
    let up = Upstream::start().await;
    let cfg = route("ok").host("localhost").header("X-A", "1").to_string();
    let proxy = Proxy::start(
        "unmatched = \"deny\"\nproxy_auth = { username = \"app\", password = \"pw\" }",
        &cfg,
    )
    .await;
    // No credentials: 407 with a challenge.
    let r = get_via_proxy(
        &proxy.client(),
        format!("http://localhost:{}/", up.addr.port()),
    )
    .await;
    assert!(r.headers().contains_key("proxy-authenticate"));
    expect_error(r, 407, "proxy_auth_required").await;
    let app = reqwest::Client::builder()
        .proxy(
            reqwest::Proxy::all(proxy.url())
                .unwrap()
                .basic_auth("app", "pw"),
        )
        .build()
        .unwrap();
    assert_eq!(
        get_via_proxy(&app, format!("http://localhost:{}/", up.addr.port()))
            .await
            .status(),
        200
    );
    assert!(
        up.last()
            .unwrap()
            .headers
            .get("proxy-authorization")
            .is_none(),
        "proxy credentials leaked upstream"
    );
    // Unmatched host with unmatched = "deny": 403.
    let r = get_via_proxy(&app, format!("http://127.0.0.1:{}/", up.addr.port())).await;
    expect_error(r, 403, "denied").await;
}

#[tokio::test]
async fn metrics_expose_the_spec_families() {
    let ts = TokenServer::start().await;
    let up = Upstream::start().await;
    let proxy = bearer_proxy(&ts, "").await;
    get_via_proxy(
        &proxy.client(),
        format!("http://localhost:{}/", up.addr.port()),
    )
    .await;
    get_via_proxy(
        &proxy.client(),
        format!("http://127.0.0.1:{}/", up.addr.port()),
    )
    .await;
    let m = proxy.metrics().await;
    for want in [
        "sidekey_requests_total{route=\"r\",status=\"200\"} 1",
        "sidekey_requests_total{route=\"unmatched\",status=\"200\"} 1",
        "sidekey_request_duration_seconds_bucket",
        "sidekey_token_fetches_total{client=\"orders\",outcome=\"ok\"} 1",
        "sidekey_token_expires_in_seconds{client=\"orders\"} 3",
        "sidekey_connections_open",
    ] {
        assert!(m.contains(want), "missing {want} in\n{m}");
    }
    assert!(
        !m.contains("tok-1") && !m.contains("s3cr3t"),
        "metrics leak a secret"
    );
    let health = reqwest::get(format!("http://{}/healthz", proxy.admin))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let ready = reqwest::get(format!("http://{}/readyz", proxy.admin))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
}

#[tokio::test]
async fn an_upstream_that_rejects_every_token_does_not_hammer_the_token_endpoint() {
    let ts = TokenServer::start().await;
    let up = Upstream::start().await;
    // Upstream: 401 whatever the token (e.g. the client lacks a scope).
    up.set_responder(|_| Some((401, vec![], "no".to_string())));
    let proxy = bearer_proxy(&ts, "").await;
    let app = proxy.client();
    for _ in 0..20 {
        let r = get_via_proxy(&app, format!("http://localhost:{}/", up.addr.port())).await;
        assert_eq!(r.status(), 401, "the 401 goes back to the app");
    }
    // First request: tok-1 rejected, tok-2 fetched and rejected too; after
    // that sidekey stops refetching for a while.
    assert_eq!(ts.calls(), 2, "one refetch, not one per request");
    assert_eq!(up.count(), 21);
}

#[tokio::test]
async fn an_upstream_cannot_forge_a_login_link() {
    // The app sends its user's browser to X-Sidekey-Login: an upstream that
    // sets it would get that browser onto a page of its choosing.
    let up = Upstream::start().await;
    up.set_responder(|_| {
        Some((
            401,
            vec![
                (
                    "x-sidekey-login".into(),
                    "https://evil.example/start".into(),
                ),
                ("x-sidekey-error".into(), "login_required".into()),
            ],
            "{}".into(),
        ))
    });
    let proxy = Proxy::start("", &route("r").host("localhost").to_string()).await;
    let r = get_via_proxy(
        &proxy.client(),
        format!("http://localhost:{}/me", up.addr.port()),
    )
    .await;
    assert_eq!(r.status(), 401);
    assert!(
        r.headers().get("x-sidekey-login").is_none(),
        "upstream must not be able to forge X-Sidekey-Login"
    );
    assert!(r.headers().get("x-sidekey-error").is_none());
}

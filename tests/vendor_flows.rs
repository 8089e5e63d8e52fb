//! The vendors' flows as their docs describe them (../shared/vendor-docs):
//! on-behalf-of exchange per user (Superblocks), tokens in query
//! parameters, Capacity's refresh URL and body and JSON code exchange,
//! body escaping, cmem's password grant, shared identical clients. Actors:
//! // App: reqwest through the proxy (plain, or HTTPS intercepted).
//! // Proxy: sidekey in-process (or the binary, to read its logs).
//! // Token server: records each request; a validator plays the IdP's rules.
//! // Upstream: records what arrived.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed setup step should fail the test loudly"
)]

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::config::{client, route, Client};
use support::intercept::Interception;
use support::sidekey::{Binary, Proxy};
use support::token_server::{TokenRequest, TokenServer};
use support::upstream::Upstream;
use support::{expect_error, get_via_proxy};

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

/// A JWT (unsigned: sidekey reads, never verifies) for `sub`, `exp_in` s out.
fn jwt(sub: &str, exp_in: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    format!(
        "{}.{}.sig",
        b64(r#"{"alg":"RS256"}"#),
        b64(&format!(r#"{{"sub":"{sub}","exp":{}}}"#, now + exp_in))
    )
}

/// `client` behind the Bearer route `r` for 127.0.0.1.
fn on_route(client: &Client) -> String {
    format!(
        "{client}{}",
        route("r").host("127.0.0.1").client(client.name()).bearer()
    )
}

/// The on-behalf-of client `obo` (`extra_client` settings) behind the
/// Bearer route "orders".
fn obo_config(ts: &TokenServer, extra_client: &str) -> String {
    format!(
        "{}{}",
        client("obo", &ts.url("/token"))
            .grant("token_exchange")
            .credentials("api-gw", Some("gw-secret"))
            .extra("subject_token = \"<<request.header.Authorization>>\"")
            .extra("audience = \"https://orders.example\"")
            .extra(extra_client),
        route("orders").host("127.0.0.1").client("obo").bearer()
    )
}

/// App: a GET to `/orders` on `up`, with `authorization` if given.
async fn get_with(
    app: &reqwest::Client,
    up: &Upstream,
    authorization: Option<&str>,
) -> reqwest::Response {
    let mut req = app.get(format!("http://{}/orders", up.addr));
    if let Some(a) = authorization {
        req = req.header("authorization", a);
    }
    req.send().await.unwrap()
}

/// App: a GET to `/orders` on `up` as `user` (a Bearer credential).
async fn get_as(proxy: &Proxy, up: &Upstream, user: Option<&str>) -> reqwest::Response {
    let bearer = user.map(|u| format!("Bearer {u}"));
    get_with(&proxy.client(), up, bearer.as_deref()).await
}

// === On-behalf-of ===

#[tokio::test]
async fn each_user_gets_their_own_exchanged_token_and_a_cache_hit_after() {
    let ts = TokenServer::start().await;
    let up = Upstream::start().await;
    let proxy = Proxy::start("", &obo_config(&ts, "")).await;
    let (alice, bob) = (jwt("alice", 3600), jwt("bob", 3600));
    for _ in 0..2 {
        for (user, want) in [(&alice, "Bearer tok-1"), (&bob, "Bearer tok-2")] {
            let r = get_as(&proxy, &up, Some(user)).await;
            assert_eq!(r.status(), 200);
            let got = up.last().unwrap();
            assert_eq!(got.headers["authorization"], want, "the user's own token");
            assert!(
                got.headers.get_all("authorization").iter().count() == 1,
                "the app's header never goes on unexchanged"
            );
        }
    }
    // Two users, four requests: two exchanges (RFC 8693, with the defaults).
    let calls = ts.requests();
    assert_eq!(calls.len(), 2, "a cache hit on each user's second request");
    for (call, user) in calls.iter().zip([&alice, &bob]) {
        assert_eq!(
            call.field("grant_type"),
            Some("urn:ietf:params:oauth:grant-type:token-exchange")
        );
        assert_eq!(
            call.field("subject_token"),
            Some(user.as_str()),
            "scheme stripped"
        );
        assert_eq!(
            call.field("subject_token_type"),
            Some("urn:ietf:params:oauth:token-type:access_token"),
            "the documented default"
        );
        assert_eq!(call.field("audience"), Some("https://orders.example"));
        assert_eq!(call.auth, Some(("api-gw".into(), "gw-secret".into())));
    }
    // /tokens: counts, never a user or a token.
    let tokens = proxy.tokens().await;
    assert!(
        !tokens.contains("tok-") && !tokens.contains(&alice[..20]),
        "{tokens}"
    );
    let v: serde_json::Value = serde_json::from_str(&tokens).unwrap();
    assert_eq!(v["clients"]["obo"]["state"], "per_user");
    assert_eq!(v["clients"]["obo"]["subjects"], 2);
}

#[tokio::test]
async fn no_subject_is_401_subject_missing_and_no_exchange() {
    let ts = TokenServer::start().await;
    let up = Upstream::start().await;
    let proxy = Proxy::start("", &obo_config(&ts, "")).await;
    expect_error(get_as(&proxy, &up, None).await, 401, "subject_missing").await;
    assert_eq!(ts.calls(), 0);
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn only_a_bearer_credential_is_exchanged_as_the_subject() {
    // App: sends its user's password (Basic) or a bare value in
    // Authorization. Token server: must never see either as subject_token.
    let ts = TokenServer::start().await;
    let up = Upstream::start().await;
    let proxy = Proxy::start("", &obo_config(&ts, "")).await;
    for value in [
        format!("Basic {}", b64("alice:hunter2")),
        "Digest username=\"alice\"".to_string(),
        jwt("alice", 3600),
    ] {
        let r = get_with(&proxy.client(), &up, Some(&value)).await;
        expect_error(r, 401, "subject_missing").await;
    }
    assert_eq!(ts.calls(), 0, "nothing but a Bearer token is a subject");
    assert_eq!(up.count(), 0);
    // A Bearer credential still is.
    assert_eq!(
        get_as(&proxy, &up, Some(&jwt("alice", 3600)))
            .await
            .status(),
        200
    );
    assert_eq!(ts.calls(), 1);
}

#[tokio::test]
async fn a_rejected_user_gets_401_and_other_users_keep_working() {
    let ts = TokenServer::start().await;
    let up = Upstream::start().await;
    let mallory = jwt("mallory", 3600);
    let m = mallory.clone();
    ts.set_validator(move |r| {
        if r.field("subject_token") == Some(m.as_str()) {
            return Err("subject token revoked".into());
        }
        Ok(())
    });
    let proxy = Proxy::start("", &obo_config(&ts, "")).await;
    // A 401, not a 503: the IdP refused this user.
    let r = get_as(&proxy, &up, Some(&mallory)).await;
    let body = expect_error(r, 401, "subject_rejected").await.to_string();
    assert!(
        body.contains("invalid_grant") && !body.contains(&mallory),
        "{body}"
    );
    // Another user right after: no backoff for them.
    let r = get_as(&proxy, &up, Some(&jwt("carol", 3600))).await;
    assert_eq!(r.status(), 200);
    assert_eq!(up.count(), 1);
}

#[tokio::test]
async fn idp_text_never_echoes_the_subject_nor_forges_a_text_log_line() {
    // Token server: refuses mallory, echoing her token and a CR/LF with a
    // forged log line; refuses trent with a 5000-character description.
    // Proxy: the real binary with text logs, as an operator runs it.
    let ts = TokenServer::start().await;
    let up = Upstream::start().await;
    let mallory = jwt("mallory", 3600);
    let trent = jwt("trent", 3600);
    let (m, t) = (mallory.clone(), trent.clone());
    ts.set_validator(move |r| match r.field("subject_token") {
        Some(s) if s == m => Err(format!(
            "subject {s} revoked\r\n2026-01-01T00:00:00Z  INFO sidekey: FORGED admin login ok"
        )),
        Some(s) if s == t => Err("y".repeat(5000)),
        _ => Ok(()),
    });
    let bin = Binary::start_logging("text", "", &obo_config(&ts, ""), &[]).await;
    for user in [&mallory, &trent] {
        let r = get_with(&bin.client(), &up, Some(&format!("Bearer {user}"))).await;
        assert_eq!(r.status(), 401);
        let body = r.text().await.unwrap();
        assert!(
            !body.contains(&user[..24]),
            "the subject in the body: {body}"
        );
        assert!(!body.contains(&"y".repeat(257)), "uncut: {body}");
    }
    // Both refusals are logged (the access lines come last).
    let logs = || bin.logs();
    support::eventually(Duration::from_secs(10), "the refusals are logged", || {
        let n = logs().matches("FORGED").count() + logs().matches("yyyy").count();
        async move { n >= 2 }
    })
    .await;
    let logs = logs();
    for (i, line) in logs.lines().enumerate() {
        assert!(
            !line.contains(&mallory[..24]),
            "subject logged at line {i}: {line}"
        );
        assert!(
            !line.contains(&trent[..24]),
            "subject logged at line {i}: {line}"
        );
        assert!(
            !line.contains(&"y".repeat(257)),
            "uncut at line {i}: {line}"
        );
        if line.contains("FORGED") {
            assert!(
                line.contains("revoked\\r\\n2026-01-01T00:00:00Z"),
                "the CR/LF must stay escaped on the same line: {line}"
            );
        }
    }
}

#[tokio::test]
async fn an_exchanged_token_never_outlives_the_users_own_token() {
    let ts = TokenServer::start().await;
    let up = Upstream::start().await;
    let proxy = Proxy::start("", &obo_config(&ts, "")).await;
    // The IdP's token lives an hour; the user's own token 3 s (`exp` is
    // in whole seconds, so at least 2 s are left for the first request).
    let short = jwt("dave", 3);
    assert_eq!(get_as(&proxy, &up, Some(&short)).await.status(), 200);
    tokio::time::sleep(Duration::from_millis(3600)).await;
    // The cached token died with the subject.
    let r = get_as(&proxy, &up, Some(&short)).await;
    expect_error(r, 401, "subject_rejected").await;
    assert_eq!(ts.calls(), 1);
    assert_eq!(up.count(), 1);
}

#[tokio::test]
async fn the_per_user_cache_is_bounded() {
    let ts = TokenServer::start().await;
    let up = Upstream::start().await;
    let proxy = Proxy::start("", &obo_config(&ts, "max_subjects = 2")).await;
    for u in ["u1", "u2", "u3", "u1"] {
        assert_eq!(get_as(&proxy, &up, Some(&jwt(u, 3600))).await.status(), 200);
    }
    // u1 was evicted by u3, so it is exchanged again: 4 exchanges.
    assert_eq!(ts.calls(), 4);
    let v: serde_json::Value = serde_json::from_str(&proxy.tokens().await).unwrap();
    assert_eq!(v["clients"]["obo"]["subjects"], 2);
    assert_eq!(v["clients"]["obo"]["max_subjects"], 2);
}

#[tokio::test]
async fn a_subject_from_another_header_is_removed_before_forwarding() {
    let ts = TokenServer::start().await;
    let up = Upstream::start().await;
    let cfg = format!(
        "{}{}",
        client("obo", &ts.url("/token"))
            .grant("token_exchange")
            .credentials("gw", Some("s"))
            .extra("subject_token = \"<<request.header.X-User-Token>>\"")
            .extra("subject_token_type = \"urn:ietf:params:oauth:token-type:jwt\""),
        route("r")
            .host("127.0.0.1")
            .client("obo")
            .header("X-Api-Token", "<<oauth.token>>")
    );
    let proxy = Proxy::start("", &cfg).await;
    let r = proxy
        .client()
        .get(format!("http://{}/x", up.addr))
        .header("x-user-token", jwt("erin", 3600))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let got = up.last().unwrap();
    assert!(
        got.headers.get("x-user-token").is_none(),
        "the user's token went upstream"
    );
    assert_eq!(got.headers["x-api-token"], "tok-1");
    assert_eq!(
        ts.requests()[0].field("subject_token_type"),
        Some("urn:ietf:params:oauth:token-type:jwt")
    );
}

#[tokio::test]
async fn a_rotated_subject_file_means_a_new_exchange_within_two_seconds() {
    let ts = TokenServer::start().await;
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let sa = dir.path().join("sa-token");
    std::fs::write(&sa, "projected-1\n").unwrap();
    let cfg = on_route(
        &client("sa", &ts.url("/token"))
            .grant("token_exchange")
            .credentials("wl", Some("s"))
            .extra(&format!("subject_token = \"<<file:{}>>\"", sa.display())),
    );
    let proxy = Proxy::start("", &cfg).await;
    assert_eq!(get_as(&proxy, &up, None).await.status(), 200);
    assert_eq!(ts.requests()[0].field("subject_token"), Some("projected-1"));
    // kubelet rotates the projected token (write + rename).
    let tmp = dir.path().join(".sa-token.tmp");
    std::fs::write(&tmp, "projected-2\n").unwrap();
    std::fs::rename(&tmp, &sa).unwrap();
    let start = std::time::Instant::now();
    loop {
        assert_eq!(get_as(&proxy, &up, None).await.status(), 200);
        if ts.calls() == 2 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "old subject's token kept"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(ts.requests()[1].field("subject_token"), Some("projected-2"));
    assert_eq!(up.last().unwrap().headers["authorization"], "Bearer tok-2");
}

// === Tokens in query parameters ===

fn query_config(ts: &TokenServer, host: &str, tls: &str) -> String {
    format!(
        "{tls}{}{}",
        client("c", &ts.url("/token")),
        route("q")
            .host(host)
            .client("c")
            .extra("set_query = { access_token = \"<<oauth.token>>\", api-version = \"2024-01\" }")
    )
}

fn query_of(up: &Upstream) -> Vec<(String, String)> {
    let uri = up.last().unwrap().uri;
    url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

#[tokio::test]
async fn set_query_sets_or_replaces_a_parameter_percent_encoded() {
    let ts = TokenServer::start().await;
    // A token with the characters that break naive query building.
    ts.set_extra(serde_json::json!({ "access_token": "a+b/c=d&e f" }));
    let up = Upstream::start().await;
    let proxy = Binary::start("", &query_config(&ts, "127.0.0.1", ""), &[]).await;
    let r = get_via_proxy(
        &proxy.client(),
        format!(
            "http://{}/items?x=1&access_token=the-apps-own&y=%2F",
            up.addr
        ),
    )
    .await;
    assert_eq!(r.status(), 200);
    let q = query_of(&up);
    assert_eq!(
        q,
        [
            ("x".into(), "1".into()),
            ("y".into(), "/".into()),
            ("access_token".into(), "a+b/c=d&e f".into()),
            ("api-version".into(), "2024-01".into()),
        ],
        "raw: {:?}",
        up.last().unwrap().uri
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let logs = proxy.logs();
    assert!(
        !logs.contains("a+b/c") && !logs.contains("a%2Bb"),
        "a query with the token was logged"
    );
}

#[tokio::test]
async fn set_query_works_inside_an_intercepted_https_request() {
    let ts = TokenServer::start().await;
    let s = Interception::start("", &query_config(&ts, "localhost", "")).await;
    let (app, up) = (s.client(), &s.up);
    let r = get_via_proxy(
        &app,
        format!("https://localhost:{}/items?page=2", up.addr.port()),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        query_of(up),
        [
            ("page".into(), "2".into()),
            ("access_token".into(), "tok-1".into()),
            ("api-version".into(), "2024-01".into()),
        ]
    );
}

// === Custom (vendor JSON) clients, Capacity style ===

#[tokio::test]
async fn custom_clients_use_the_refresh_url_and_body_once_a_refresh_token_is_held() {
    let ts = TokenServer::start().await;
    ts.set_issue_refresh(true);
    ts.set_ttl(1);
    let up = Upstream::start().await;
    // A secret with the characters that break naive JSON templating.
    let secret = "pa\"ss\\wo&rd\nx";
    let cfg = on_route(
        &client("capacity", &ts.url("/oauth/token"))
            .grant("custom")
            .credentials("cap-id", Some(secret))
            .extra(&format!("refresh_url = \"{}\"", ts.url("/oauth/refresh")))
            .extra("body = '{\"grant_type\": \"client_credentials\", \"client_id\": <<client.client_id>>, \"client_secret\": \"<<client.client_secret>>\"}'")
            .extra("refresh_body = '{\"refresh_token\": <<client.refresh_token>>, \"grant_type\": \"refresh_token\"}'")
            .extra("token_path = \"access_token\"\nexpires_in_path = \"expires_in\"\nrefresh_token_path = \"refresh_token\""),
    );
    let proxy = Proxy::start("", &cfg).await;
    assert_eq!(get_as(&proxy, &up, None).await.status(), 200);
    // Refresh ahead of the 1 s expiry: through the refresh URL and body.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(get_as(&proxy, &up, None).await.status(), 200);
    let calls = ts.requests();
    assert!(calls.len() >= 2, "{}", calls.len());
    let first = calls[0].json.clone().expect("the first body is valid JSON");
    assert_eq!(calls[0].path, "/oauth/token");
    assert_eq!(
        first["client_id"], "cap-id",
        "a bare placeholder is a JSON string"
    );
    assert_eq!(
        first["client_secret"], secret,
        "escaped inside a JSON string"
    );
    assert_eq!(calls[1].path, "/oauth/refresh");
    let second = calls[1]
        .json
        .clone()
        .expect("the refresh body is valid JSON");
    assert_eq!(second["refresh_token"], "rt-1");
    assert_eq!(second["grant_type"], "refresh_token");
}

#[tokio::test]
async fn form_bodies_percent_encode_their_values() {
    let ts = TokenServer::start().await;
    let up = Upstream::start().await;
    let secret = "a&b=c+d \"e\"";
    let cfg = on_route(
        &client("f", &ts.url("/token"))
            .grant("custom")
            .credentials("fid", Some(secret))
            .extra("content_type = \"application/x-www-form-urlencoded\"")
            .extra("body = \"grant_type=client_credentials&client_id=<<client.client_id>>&client_secret=<<client.client_secret>>\"")
            .extra("token_path = \"access_token\""),
    );
    let proxy = Proxy::start("", &cfg).await;
    assert_eq!(get_as(&proxy, &up, None).await.status(), 200);
    let call = &ts.requests()[0];
    assert_eq!(call.field("client_secret"), Some(secret));
    assert_eq!(call.field("client_id"), Some("fid"));
    assert_eq!(call.field("grant_type"), Some("client_credentials"));
}

#[tokio::test]
async fn login_works_for_custom_clients_with_a_json_code_body_and_extra_authorize_params() {
    let ts = TokenServer::start().await;
    ts.set_issue_refresh(true);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("rt.json");
    let port = support::sidekey::free_port().port();
    let cfg_path = dir.path().join("p.toml");
    std::fs::write(
        &cfg_path,
        format!(
            "[clients.capacity]\ngrant = \"custom\"\ntoken_url = \"{}\"\nauthorize_url = \"{}\"\n\
             redirect_uri = \"http://127.0.0.1:{port}/callback\"\nclient_id = \"cap-id\"\nclient_secret = \"cap-secret\"\n\
             state_file = \"{}\"\nauthorize_params = {{ audience = \"https://api.capacity.com\", prompt = \"consent\" }}\n\
             body = '{{\"refresh_token\": <<client.refresh_token>>, \"grant_type\": \"refresh_token\"}}'\n\
             code_body = '{{\"grant_type\": \"authorization_code\", \"redirect_uri\": <<client.redirect_uri>>, \"code\": \"<<client.auth_code>>\", \"client_id\": <<client.client_id>>, \"client_secret\": <<client.client_secret>>, \"code_verifier\": <<client.code_verifier>>}}'\n\
             token_path = \"access_token\"\nrefresh_token_path = \"refresh_token\"\n\
             token_headers = {{ \"Ocp-Apim-Subscription-Key\" = \"sub-key-7\" }}\n",
            ts.url("/token"),
            ts.url("/authorize"),
            state.display()
        ),
    )
    .unwrap();
    let login = support::login::Login::start(&cfg_path, "capacity").await;
    let q = login.query();
    assert_eq!(q["audience"], "https://api.capacity.com");
    assert_eq!(q["prompt"], "consent");
    login.follow().await;
    let exchange: &TokenRequest = &ts.requests()[1];
    let json = exchange.json.clone().expect("the code body is JSON");
    assert_eq!(json["code"], "code-123");
    assert_eq!(
        json["redirect_uri"],
        format!("http://127.0.0.1:{port}/callback")
    );
    assert_eq!(json["client_secret"], "cap-secret");
    assert!(json["code_verifier"].as_str().unwrap().len() >= 43);
    // token_headers go on every token request, the code exchange included.
    assert_eq!(exchange.headers["ocp-apim-subscription-key"], "sub-key-7");
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    assert_eq!(saved["refresh_token"], "rt-1");
}

#[test]
fn check_rejects_a_placeholder_the_client_cannot_render() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.toml");
    std::fs::write(
        &path,
        "[clients.c]\ngrant = \"custom\"\ntoken_url = \"http://i/t\"\nclient_id = \"a\"\n\
         body = '{\"user\": <<client.username>>}'\ntoken_path = \"t\"\n",
    )
    .unwrap();
    let (code, text) = support::sidekey::check(&path);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("<<client.username>> cannot be rendered"),
        "{text}"
    );
}

// === Password grant as documented (cmem) ===

#[tokio::test]
async fn password_grant_without_a_secret_refreshes_and_falls_back_to_the_password() {
    let ts = TokenServer::start().await;
    ts.set_issue_refresh(true);
    ts.set_ttl(1);
    // IdP: the first refresh is accepted, the second refused.
    let refreshes = Arc::new(Mutex::new(0));
    let r = Arc::clone(&refreshes);
    ts.set_validator(move |req| {
        if req.field("grant_type") == Some("refresh_token") {
            let mut n = r.lock().unwrap();
            *n += 1;
            if *n > 1 {
                return Err("refresh token expired".into());
            }
        }
        Ok(())
    });
    let up = Upstream::start().await;
    let cfg = on_route(
        &client("cmem", &ts.url("/token"))
            .grant("password")
            .credentials("cmem-public", None)
            .extra("username = \"svc\"\npassword = \"pw\""),
    );
    let proxy = Proxy::start("", &cfg).await;
    for _ in 0..3 {
        assert_eq!(get_as(&proxy, &up, None).await.status(), 200);
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    let grants: Vec<String> = ts
        .requests()
        .iter()
        .map(|r| r.field("grant_type").unwrap_or_default().to_string())
        .collect();
    assert_eq!(grants[0], "password");
    assert_eq!(grants[1], "refresh_token", "{grants:?}");
    assert_eq!(grants[2], "refresh_token", "{grants:?}");
    assert_eq!(
        grants[3], "password",
        "refused refresh falls back: {grants:?}"
    );
    let first = &ts.requests()[0];
    assert!(
        first.auth.is_none(),
        "a public client sends no Basic credentials"
    );
    assert_eq!(first.field("client_id"), Some("cmem-public"));
    assert_eq!(ts.requests()[1].field("refresh_token"), Some("rt-1"));
}

// === Identical clients share ===

#[tokio::test]
async fn identical_clients_share_one_token_and_keep_it_across_reloads() {
    let ts = TokenServer::start().await;
    let up = Upstream::start().await;
    let same =
        |name: &str| client(name, &ts.url("/token")).credentials("same", Some("same-secret"));
    let on = |name: &str, client: &str| {
        route(name)
            .host("127.0.0.1")
            .path_prefix(&format!("/{name}"))
            .client(client)
            .bearer()
    };
    let cfg = |v: &str| {
        format!(
            "{}{}{}{}",
            same("one"),
            same("two"),
            on("a", "one").header("X-V", v),
            on("b", "two")
        )
    };
    let proxy = Proxy::start("", &cfg("1")).await;
    let app = proxy.client();
    let (a, b) = tokio::join!(
        app.get(format!("http://{}/a", up.addr)).send(),
        app.get(format!("http://{}/b", up.addr)).send()
    );
    assert_eq!(a.unwrap().status(), 200);
    assert_eq!(b.unwrap().status(), 200);
    assert_eq!(ts.calls(), 1, "one fetch for two identical clients");
    proxy.write_config("", &cfg("2"));
    tokio::time::sleep(Duration::from_millis(800)).await;
    for p in ["a", "b"] {
        let r = get_via_proxy(&app, format!("http://{}/{p}", up.addr)).await;
        assert_eq!(r.status(), 200);
        assert_eq!(up.last().unwrap().headers["authorization"], "Bearer tok-1");
    }
    assert_eq!(up.last().unwrap().uri.path(), "/b");
    assert_eq!(ts.calls(), 1, "neither lost the token on reload");
}

// === Claims ===

#[tokio::test]
async fn token_decoded_alone_renders_the_whole_claims_object() {
    let ts = TokenServer::start().await;
    let id = format!(
        "{}.{}.sig",
        b64(r#"{"alg":"none"}"#),
        b64(r#"{"sub":"svc","org":{"id":"7"}}"#)
    );
    ts.set_extra(serde_json::json!({ "id_token": id }));
    let up = Upstream::start().await;
    let cfg = format!(
        "{}{}",
        client("c", &ts.url("/token")),
        route("r")
            .host("127.0.0.1")
            .client("c")
            .header("X-Claims", "<<oauth.tokenDecoded>>")
            .header("X-Org", "<<oauth.tokenDecoded.org.id>>")
    );
    let proxy = Proxy::start("", &cfg).await;
    assert_eq!(get_as(&proxy, &up, None).await.status(), 200);
    let got = up.last().unwrap();
    assert_eq!(got.headers["x-claims"], r#"{"org":{"id":"7"},"sub":"svc"}"#);
    assert_eq!(got.headers["x-org"], "7");
}

//! Client and route keys that serve each vendor as its docs describe:
//! `grant` defaulting to client_credentials, a custom endpoint's standard
//! top-level `expires_in`, `default_headers`, `token_headers`,
//! client_secret_jwt, jwt_bearer, the audience on `sidekey login`'s
//! authorize URL, and `idle_after`.
//! // App: reqwest through the proxy.
//! // Proxy: sidekey in-process.
//! // Token server: records each request (headers and form).
//! // Upstream: records what arrived.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed setup step should fail the test loudly"
)]

mod support;

use std::time::Duration;

use support::sidekey::Proxy;
use support::token_server::TokenServer;
use support::upstream::Upstream;

/// A route to the upstream using client `c`, with extra route keys.
fn route(up: &Upstream, extra: &str) -> String {
    let _ = up;
    format!(
        "[[routes]]\nname = \"api\"\nhosts = [\"127.0.0.1\"]\nclient = \"c\"\n\
         set_headers = {{ Authorization = \"Bearer <<oauth.token>>\" }}\n{extra}\n"
    )
}

async fn get(proxy: &Proxy, up: &Upstream, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = proxy.client().get(format!("http://{}/x", up.addr));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn grant_defaults_to_client_credentials_and_token_headers_go_on_token_requests() {
    let ts = TokenServer::start().await;
    let up = Upstream::start().await;
    let cfg = format!(
        "[clients.c]\ntoken_url = \"{}\"\nclient_id = \"id\"\nclient_secret = \"s\"\n\
         token_headers = {{ \"Ocp-Apim-Subscription-Key\" = \"sub-key-1\" }}\n{}",
        ts.url("/token"),
        route(&up, "")
    );
    let proxy = Proxy::start("", &cfg).await;
    assert_eq!(get(&proxy, &up, &[]).await.status(), 200);
    let r = &ts.requests()[0];
    assert_eq!(r.field("grant_type"), Some("client_credentials"));
    assert_eq!(r.headers["ocp-apim-subscription-key"], "sub-key-1");
    proxy.shutdown().await;
}

#[tokio::test]
async fn default_headers_fill_in_only_what_the_app_did_not_send() {
    let ts = TokenServer::start().await;
    let up = Upstream::start().await;
    let cfg = format!(
        "[clients.c]\ntoken_url = \"{}\"\nclient_id = \"id\"\nclient_secret = \"s\"\n{}",
        ts.url("/token"),
        route(&up, "default_headers = { \"X-Store\" = \"store-042\" }")
    );
    let proxy = Proxy::start("", &cfg).await;
    get(&proxy, &up, &[]).await;
    assert_eq!(up.last().unwrap().headers["x-store"], "store-042");
    get(&proxy, &up, &[("x-store", "till-7")]).await;
    let seen = up.last().unwrap();
    assert_eq!(seen.headers["x-store"], "till-7", "the app's value is kept");
    assert_eq!(seen.headers.get_all("x-store").iter().count(), 1);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_custom_client_takes_the_standard_expires_in() {
    // Token server: a standard JSON answer with expires_in 2.
    let ts = TokenServer::start().await;
    ts.set_ttl(2);
    let up = Upstream::start().await;
    let cfg = format!(
        "[clients.c]\ngrant = \"custom\"\ntoken_url = \"{}\"\ncontent_type = \"application/x-www-form-urlencoded\"\n\
         body = \"grant_type=client_credentials\"\ntoken_path = \"access_token\"\n{}",
        ts.url("/token"),
        route(&up, "")
    );
    let proxy = Proxy::start("", &cfg).await;
    assert_eq!(get(&proxy, &up, &[]).await.status(), 200);
    let tokens: serde_json::Value = reqwest::get(format!("http://{}/tokens", proxy.admin))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let left = tokens["clients"]["c"]["expires_in_seconds"]
        .as_u64()
        .unwrap();
    assert!(
        left <= 2,
        "a 2 s token is kept {left} s (default_ttl instead of expires_in)"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn client_secret_jwt_sends_an_hs256_assertion_keyed_with_the_secret() {
    let ts = TokenServer::start().await;
    let up = Upstream::start().await;
    let cfg = format!(
        "[clients.c]\ntoken_url = \"{}\"\nclient_id = \"id-1\"\nclient_secret = \"a-long-shared-secret-of-32-bytes!\"\n\
         client_auth = \"client_secret_jwt\"\n{}",
        ts.url("/token"),
        route(&up, "")
    );
    let proxy = Proxy::start("", &cfg).await;
    assert_eq!(get(&proxy, &up, &[]).await.status(), 200);
    let r = &ts.requests()[0];
    assert_eq!(
        r.field("client_assertion_type"),
        Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
    );
    assert!(r.field("client_secret").is_none() && r.auth.is_none());
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    v.set_audience(&[ts.url("/token")]);
    let claims = jsonwebtoken::decode::<serde_json::Value>(
        r.field("client_assertion").unwrap(),
        &jsonwebtoken::DecodingKey::from_secret(b"a-long-shared-secret-of-32-bytes!"),
        &v,
    )
    .unwrap()
    .claims;
    assert_eq!(claims["iss"], "id-1");
    assert_eq!(claims["sub"], "id-1");
    proxy.shutdown().await;
}

#[tokio::test]
async fn jwt_bearer_signs_an_assertion_for_the_subject() {
    let ts = TokenServer::start().await;
    let up = Upstream::start().await;
    let key = rcgen::KeyPair::generate().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("sa.pem");
    std::fs::write(&pem, key.serialize_pem()).unwrap();
    let cfg = format!(
        "[clients.c]\ngrant = \"jwt_bearer\"\ntoken_url = \"{}\"\nclient_id = \"sa@project.iam\"\n\
         private_key = \"{}\"\nsigning_alg = \"ES256\"\nsubject = \"admin@example.com\"\n\
         assertion_audience = \"https://oauth2.example/token\"\nscopes = [\"a\"]\n{}",
        ts.url("/token"),
        pem.display(),
        route(&up, "")
    );
    let proxy = Proxy::start("", &cfg).await;
    assert_eq!(get(&proxy, &up, &[]).await.status(), 200);
    let r = &ts.requests()[0];
    assert_eq!(
        r.field("grant_type"),
        Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
    );
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    v.set_audience(&["https://oauth2.example/token"]);
    let claims = jsonwebtoken::decode::<serde_json::Value>(
        r.field("assertion").unwrap(),
        &jsonwebtoken::DecodingKey::from_ec_pem(key.public_key_pem().as_bytes()).unwrap(),
        &v,
    )
    .unwrap()
    .claims;
    assert_eq!(claims["iss"], "sa@project.iam");
    assert_eq!(claims["sub"], "admin@example.com");
    assert!(r.auth.is_none() && r.field("client_secret").is_none());
    proxy.shutdown().await;
}

#[tokio::test]
async fn an_idle_client_stops_refreshing_and_fetches_on_the_next_request() {
    // Token server: 2 s tokens, refreshed ahead at 90 % (1.8 s) while in use.
    let ts = TokenServer::start().await;
    ts.set_ttl(2);
    let up = Upstream::start().await;
    let cfg = format!(
        "[clients.c]\ntoken_url = \"{}\"\nclient_id = \"id\"\nclient_secret = \"s\"\nidle_after = \"1s\"\n{}",
        ts.url("/token"),
        route(&up, "")
    );
    let proxy = Proxy::start("", &cfg).await;
    assert_eq!(get(&proxy, &up, &[]).await.status(), 200);
    assert_eq!(ts.calls(), 1);
    // Without idle_after the slot would refresh at 1.8 s, 3.4 s, ... .
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(ts.calls(), 1, "an idle client made token requests");
    assert_eq!(get(&proxy, &up, &[]).await.status(), 200);
    assert_eq!(ts.calls(), 2, "the next request fetched on demand");
    proxy.shutdown().await;
}

#[test]
fn per_user_clients_need_login_and_user_only_where_it_means_something() {
    let load = |text: &str| {
        sidekey::config::load_str(std::path::Path::new("proxy.toml"), text, &|_| None)
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    let per_user = "[clients.crm]\ngrant = \"authorization_code\"\ntoken_url = \"https://idp.example/token\"\n\
        authorize_url = \"https://idp.example/authorize\"\nclient_id = \"app\"\nuser = \"<<request.header.X-User>>\"\n";
    let e = load(per_user).unwrap_err();
    assert!(e.contains("client \"crm\"") && e.contains("[login]"), "{e}");
    let login = "[login]\nlisten = \"127.0.0.1:0\"\npublic_url = \"https://app.example/sidekey\"\n";
    load(&format!("{per_user}{login}")).unwrap();
    let e = load(&format!(
        "[clients.cc]\ntoken_url = \"https://idp.example/token\"\nclient_id = \"a\"\nclient_secret = \"b\"\n\
         user = \"<<request.header.X-User>>\"\n{login}"
    ))
    .unwrap_err();
    assert!(
        e.contains("user is not used by grant \"client_credentials\""),
        "{e}"
    );
    let e = load(&format!(
        "[clients.crm]\ngrant = \"authorization_code\"\ntoken_url = \"https://idp.example/token\"\n\
         authorize_url = \"https://idp.example/authorize\"\nclient_id = \"app\"\nuser = \"alice\"\n{login}"
    ))
    .unwrap_err();
    assert!(e.contains("<<request.header.NAME>>"), "{e}");
}

#[test]
fn new_client_keys_are_checked_with_errors_naming_the_client() {
    let load = |text: &str| {
        sidekey::config::load_str(std::path::Path::new("proxy.toml"), text, &|_| None)
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    let base = "[clients.c]\ntoken_url = \"https://idp.example/token\"\nclient_id = \"a\"\n";
    let e = load(&format!("{base}client_auth = \"client_secret_jwt\"\n")).unwrap_err();
    assert!(
        e.contains("client \"c\"") && e.contains("client_secret_jwt"),
        "{e}"
    );
    let e = load(&format!("{base}grant = \"jwt_bearer\"\n")).unwrap_err();
    assert!(e.contains("private_key is required"), "{e}");
    let e = load(&format!(
        "{base}client_secret = \"s\"\ntoken_headers = {{ \"bad header\" = \"v\" }}\n"
    ))
    .unwrap_err();
    assert!(e.contains("token_headers"), "{e}");
    let e = load(&format!("{base}client_secret = \"s\"\nsubject = \"x\"\n")).unwrap_err();
    assert!(
        e.contains("subject is not used by grant \"client_credentials\""),
        "{e}"
    );
    let e = load("[login]\nlisten = \"127.0.0.1:0\"\npublic_url = \"not a url\"\n").unwrap_err();
    assert!(e.contains("login.public_url"), "{e}");
    let e = load(
        "[clients.p]\ngrant = \"custom\"\ntoken_url = \"https://idp.example/token\"\nbody = \"{}\"\ntoken_path = \"t\"\n\
         user = \"<<request.header.X-User>>\"\n[login]\nlisten = \"127.0.0.1:0\"\npublic_url = \"https://a.example\"\n"
    )
    .unwrap_err();
    assert!(e.contains("needs code_body"), "{e}");
}

#[tokio::test]
async fn sidekey_login_puts_the_clients_audience_on_the_authorize_url() {
    // `sidekey login` (the binary) prints the authorize URL; nothing is followed.
    let ts = TokenServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let port = support::sidekey::free_port().port();
    let cfg_path = dir.path().join("p.toml");
    std::fs::write(
        &cfg_path,
        format!(
            "[clients.u]\ngrant = \"refresh_token\"\ntoken_url = \"{}\"\nauthorize_url = \"{}\"\nredirect_uri = \"http://127.0.0.1:{port}/callback\"\n\
             client_id = \"cli\"\nclient_secret = \"s\"\nstate_file = \"{}\"\naudience = \"https://api.example\"\n",
            ts.url("/token"),
            ts.url("/authorize"),
            dir.path().join("rt.json").display()
        ),
    )
    .unwrap();
    let login = support::login::Login::start(&cfg_path, "u").await;
    assert_eq!(login.query()["audience"], "https://api.example");
}

//! Every grant and client-authentication method, against a token server
//! that checks each request the way an IdP would and rejects it otherwise.
//! // App: reqwest through the proxy. Proxy: sidekey in-process.
//! // Token server: validates grant fields, client auth, PKCE, assertions.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed setup step should fail the test loudly"
)]

mod support;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use base64::Engine;
use support::config::{self, client, route};
use support::sidekey::Proxy;
use support::token_server::{Mode, TokenRequest, TokenServer};
use support::upstream::Upstream;
use support::{expect_error, get_via_proxy};

async fn call(proxy: &Proxy, up: &Upstream) -> reqwest::Response {
    proxy
        .client()
        .get(format!("http://localhost:{}/api", up.addr.port()))
        .send()
        .await
        .unwrap()
}

fn need(r: &TokenRequest, k: &str, want: &str) -> Result<(), String> {
    match r.field(k) {
        Some(v) if v == want => Ok(()),
        other => Err(format!("{k} = {other:?}, want {want:?}")),
    }
}

#[tokio::test]
async fn password_grant() {
    let ts = TokenServer::start().await;
    ts.expect_client("web", "web-secret");
    ts.set_validator(|r| {
        need(r, "grant_type", "password")?;
        need(r, "username", "alice")?;
        need(r, "password", "correct horse")?;
        need(r, "scope", "profile api")?;
        need(r, "audience", "https://api")
    });
    let up = Upstream::start().await;
    let cfg = format!(
        "{}{}",
        client("p", &ts.url("/token"))
            .grant("password")
            .credentials("web", Some("web-secret"))
            .extra("username = \"alice\"\npassword = \"<<env.SIDEKEY_TEST_PW:-correct horse>>\"")
            .extra("scopes = [\"profile\", \"api\"]\naudience = \"https://api\""),
        route("r").client("p").bearer()
    );
    let proxy = Proxy::start("", &cfg).await;
    assert_eq!(call(&proxy, &up).await.status(), 200);
    assert_eq!(up.last().unwrap().headers["authorization"], "Bearer tok-1");
}

#[tokio::test]
async fn refresh_token_rotation_is_saved_and_survives_a_restart() {
    let ts = TokenServer::start().await;
    ts.set_issue_refresh(true);
    // IdP: only the newest refresh token is valid (rotation); it issues
    // rt-N together with tok-N.
    let v2 = Arc::new(Mutex::new("rt-initial".to_string()));
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let rt_file = dir.path().join("rt");
    std::fs::write(&rt_file, "rt-initial\n").unwrap();
    let state = dir.path().join("state/rt.json");
    let cfg = format!(
        "{}{}",
        client("u", &ts.url("/token"))
            .grant("refresh_token")
            .credentials("cli", Some("x"))
            .extra(&format!(
                "refresh_token = \"<<file:{}>>\"\nstate_file = \"{}\"",
                rt_file.display(),
                state.display()
            )),
        route("r").client("u").bearer()
    );
    ts.set_validator({
        let v = Arc::clone(&v2);
        move |r| {
            need(r, "grant_type", "refresh_token")?;
            let mut cur = v.lock().unwrap();
            need(r, "refresh_token", &cur)?;
            let next = cur.clone();
            *cur = match next.as_str() {
                "rt-initial" => "rt-1".into(),
                "rt-1" => "rt-2".into(),
                other => format!("{other}-next"),
            };
            Ok(())
        }
    });
    let proxy = Proxy::start("", &cfg).await;
    assert_eq!(call(&proxy, &up).await.status(), 200);
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    assert_eq!(
        saved["refresh_token"], "rt-1",
        "rotated refresh token saved"
    );
    assert!(saved["updated_at"].as_str().unwrap().contains('T'));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&state).unwrap().permissions().mode() & 0o777,
        0o600
    );
    proxy.shutdown().await;

    // Restart: the state file (newer than the config's file) wins.
    let proxy = Proxy::start("", &cfg).await;
    assert_eq!(
        call(&proxy, &up).await.status(),
        200,
        "restart used the rotated token"
    );
    assert_eq!(
        ts.requests().last().unwrap().field("refresh_token"),
        Some("rt-1")
    );
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    assert_eq!(saved["refresh_token"], "rt-2");
}

#[tokio::test]
async fn a_rejected_refresh_token_is_reported_and_does_not_crash_loop() {
    let ts = TokenServer::start().await;
    ts.set_mode(Mode::OAuthError("invalid_grant".into()));
    let up = Upstream::start().await;
    let cfg = format!(
        "{}{}",
        client("u", &ts.url("/token"))
            .grant("refresh_token")
            .credentials("cli", None)
            .extra("client_auth = \"none\"\nrefresh_token = \"revoked\""),
        route("r").client("u").bearer()
    );
    // Counted from the start: the first fetch may be made at start-up.
    let started = std::time::Instant::now();
    let proxy = Proxy::start("", &cfg).await;
    for _ in 0..20 {
        let body = expect_error(call(&proxy, &up).await, 503, "token_unavailable").await;
        let msg = body["message"].as_str().unwrap();
        assert!(
            msg.contains("invalid_grant") && msg.contains("the server said no"),
            "{msg}"
        );
        assert!(!msg.contains("revoked"), "refresh token in an error body");
    }
    support::assert_backoff_held(ts.calls(), started, 2);
    // Still serving other traffic.
    let r = get_via_proxy(
        &proxy.client(),
        format!("http://127.0.0.1:{}/", up.addr.port()),
    )
    .await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn login_runs_authorization_code_with_pkce_and_stores_the_refresh_token() {
    use sha2::Digest;
    let ts = TokenServer::start().await;
    ts.expect_client("cli", "cli-secret");
    ts.set_issue_refresh(true);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("rt.json");
    let port = support::sidekey::free_port().port();
    let cfg_path = dir.path().join("p.toml");
    std::fs::write(
        &cfg_path,
        client("u", &ts.url("/token"))
            .grant("refresh_token")
            .credentials("cli", Some("cli-secret"))
            .extra(&format!(
                "authorize_url = \"{}\"\nredirect_uri = \"http://127.0.0.1:{port}/callback\"",
                ts.url("/authorize")
            ))
            .extra(&format!(
                "state_file = \"{}\"\nscopes = [\"offline_access\", \"api\"]",
                state.display()
            ))
            .to_string(),
    )
    .unwrap();
    // IdP: the code must come with the verifier whose S256 is the challenge.
    let challenge: Arc<Mutex<Option<String>>> = Arc::default();
    let c = Arc::clone(&challenge);
    ts.set_validator(move |r| {
        need(r, "grant_type", "authorization_code")?;
        need(r, "code", "code-123")?;
        need(
            r,
            "redirect_uri",
            &format!("http://127.0.0.1:{port}/callback"),
        )?;
        let verifier = r.field("code_verifier").ok_or("no code_verifier")?;
        let s256 = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(sha2::Sha256::digest(verifier.as_bytes()));
        if Some(s256) != *c.lock().unwrap() {
            return Err("PKCE verification failed".into());
        }
        Ok(())
    });
    let login = support::login::Login::start(&cfg_path, "u").await;
    let q = login.query();
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["client_id"], "cli");
    assert_eq!(q["scope"], "offline_access api");
    assert!(q["state"].len() >= 16);
    *challenge.lock().unwrap() = Some(q["code_challenge"].clone());
    // Browser: follows the IdP's redirect back to sidekey's loopback listener.
    login.follow().await;
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    assert_eq!(saved["refresh_token"], "rt-1");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&state).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

#[tokio::test]
async fn token_exchange_rereads_a_rotated_subject_token_file() {
    let ts = TokenServer::start().await;
    let expected = Arc::new(Mutex::new("sa-token-1".to_string()));
    let e = Arc::clone(&expected);
    ts.set_validator(move |r| {
        need(
            r,
            "grant_type",
            "urn:ietf:params:oauth:grant-type:token-exchange",
        )?;
        need(r, "subject_token", &e.lock().unwrap())?;
        need(
            r,
            "subject_token_type",
            "urn:ietf:params:oauth:token-type:jwt",
        )?;
        need(
            r,
            "requested_token_type",
            "urn:ietf:params:oauth:token-type:access_token",
        )?;
        need(r, "actor_token", "actor-1")?;
        need(
            r,
            "actor_token_type",
            "urn:ietf:params:oauth:token-type:jwt",
        )?;
        need(r, "audience", "orders-api")?;
        need(r, "scope", "orders.read")
    });
    ts.set_ttl(2);
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let sa = dir.path().join("sa");
    std::fs::write(&sa, "sa-token-1\n").unwrap();
    let cfg = format!(
        "{}{}",
        client("x", &ts.url("/token"))
            .grant("token_exchange")
            .credentials("x", Some("y"))
            .extra(&format!("subject_token = \"<<file:{}>>\"", sa.display()))
            .extra("subject_token_type = \"urn:ietf:params:oauth:token-type:jwt\"")
            .extra("requested_token_type = \"urn:ietf:params:oauth:token-type:access_token\"")
            .extra("actor_token = \"actor-1\"\nactor_token_type = \"urn:ietf:params:oauth:token-type:jwt\"")
            .extra("audience = \"orders-api\"\nscopes = [\"orders.read\"]"),
        route("r").client("x").bearer()
    );
    let proxy = Proxy::start("", &cfg).await;
    assert_eq!(call(&proxy, &up).await.status(), 200);
    // Kubernetes rotates the projected token; the next exchange sends the new one.
    std::fs::write(&sa, "sa-token-2\n").unwrap();
    *expected.lock().unwrap() = "sa-token-2".into();
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert_eq!(call(&proxy, &up).await.status(), 200);
    assert_eq!(
        ts.requests().last().unwrap().field("subject_token"),
        Some("sa-token-2")
    );
}

#[tokio::test]
async fn client_auth_none_sends_only_the_client_id() {
    let ts = TokenServer::start().await;
    ts.set_validator(|r| {
        need(r, "client_id", "public-app")?;
        if r.headers.contains_key("authorization") || r.field("client_secret").is_some() {
            return Err("a public client must not send a secret".into());
        }
        Ok(())
    });
    let up = Upstream::start().await;
    let cfg = format!(
        "{}{}",
        client("n", &ts.url("/token"))
            .credentials("public-app", None)
            .extra("client_auth = \"none\""),
        route("r").client("n").bearer()
    );
    let proxy = Proxy::start("", &cfg).await;
    assert_eq!(call(&proxy, &up).await.status(), 200);
}

/// IdP-side check of an RFC 7523 client assertion.
fn verify_assertion(
    r: &TokenRequest,
    alg: jsonwebtoken::Algorithm,
    key: &jsonwebtoken::DecodingKey,
    aud: &str,
    seen: &Mutex<HashSet<String>>,
) -> Result<(), String> {
    need(
        r,
        "client_assertion_type",
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
    )?;
    if r.headers.contains_key("authorization") {
        return Err("private_key_jwt must not also send Basic".into());
    }
    let jwt = r.field("client_assertion").ok_or("no client_assertion")?;
    let header = jsonwebtoken::decode_header(jwt).map_err(|e| e.to_string())?;
    if header.kid.as_deref() != Some("key-1") {
        return Err(format!("kid {:?}", header.kid));
    }
    let mut v = jsonwebtoken::Validation::new(alg);
    v.set_audience(&[aud]);
    v.set_issuer(&["pk-client"]);
    v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    let data = jsonwebtoken::decode::<serde_json::Value>(jwt, key, &v)
        .map_err(|e| format!("assertion rejected: {e}"))?;
    let c = data.claims;
    if c["sub"] != "pk-client" {
        return Err("sub".into());
    }
    let lifetime = c["exp"]
        .as_u64()
        .unwrap_or(0)
        .saturating_sub(c["iat"].as_u64().unwrap_or(0));
    if lifetime == 0 || lifetime > 300 {
        return Err(format!("assertion lives {lifetime}s"));
    }
    let jti = c["jti"].as_str().ok_or("no jti")?.to_string();
    if !seen.lock().unwrap().insert(jti) {
        return Err("jti replayed".into());
    }
    Ok(())
}

async fn private_key_jwt(alg: &str, key_file: &str, pub_file: &str) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/keys");
    let public = std::fs::read(root.join(pub_file)).unwrap();
    let (jalg, dkey) = match alg {
        "RS256" => (
            jsonwebtoken::Algorithm::RS256,
            jsonwebtoken::DecodingKey::from_rsa_pem(&public).unwrap(),
        ),
        _ => (
            jsonwebtoken::Algorithm::ES256,
            jsonwebtoken::DecodingKey::from_ec_pem(&public).unwrap(),
        ),
    };
    let ts = TokenServer::start().await;
    ts.set_ttl(1);
    let aud = ts.url("/token");
    let seen = Mutex::new(HashSet::new());
    let a = aud.clone();
    ts.set_validator(move |r| verify_assertion(r, jalg, &dkey, &a, &seen));
    let up = Upstream::start().await;
    let cfg = format!(
        "{}{}",
        client("k", &aud)
            .credentials("pk-client", None)
            .extra("client_auth = \"private_key_jwt\"")
            .extra(&format!(
                "private_key = \"<<file:{}>>\"\nkey_id = \"key-1\"\nsigning_alg = \"{alg}\"",
                root.join(key_file).display()
            )),
        route("r").client("k").bearer()
    );
    let proxy = Proxy::start("", &cfg).await;
    assert_eq!(call(&proxy, &up).await.status(), 200);
    // A second fetch must carry a fresh jti (the validator rejects replays).
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(call(&proxy, &up).await.status(), 200);
    assert!(ts.calls() >= 2, "a second assertion was sent");
    let m = proxy.metrics().await;
    assert!(
        !m.contains("outcome=\"error\""),
        "the IdP rejected an assertion:\n{m}"
    );
}

#[tokio::test]
async fn private_key_jwt_rs256() {
    private_key_jwt("RS256", "rsa_pkcs8.pem", "rsa_pub.pem").await;
}

#[tokio::test]
async fn private_key_jwt_es256() {
    private_key_jwt("ES256", "ec_pkcs8.pem", "ec_pub.pem").await;
}

#[tokio::test]
async fn mutual_tls_to_the_token_endpoint() {
    support::init_crypto();
    let ca = support::pki::new_ca("idp CA");
    let ts = TokenServer::start_tls(ca.server_config_mtls(&["localhost"])).await;
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = ca.client_cert("sidekey-client");
    std::fs::write(dir.path().join("c.pem"), cert).unwrap();
    std::fs::write(dir.path().join("k.pem"), key).unwrap();
    std::fs::write(dir.path().join("ca.pem"), &ca.cert_pem).unwrap();
    let base = format!(
        "[tls]\nextra_roots = [\"{}\"]\n\n{}",
        dir.path().join("ca.pem").display(),
        client("m", &ts.https_url("/token"))
            .credentials("m", None)
            .extra("client_auth = \"none\""),
    );
    let with_cert = format!(
        "{base}tls_client_cert = \"<<file:{}>>\"\ntls_client_key = \"<<file:{}>>\"\n{}",
        dir.path().join("c.pem").display(),
        dir.path().join("k.pem").display(),
        route("r").client("m").bearer()
    );
    let proxy = Proxy::start("", &with_cert).await;
    assert_eq!(call(&proxy, &up).await.status(), 200);
    assert_eq!(ts.calls(), 1);
    // Without the client certificate the TLS handshake is refused.
    let without = format!("{base}{}", route("r").client("m").bearer());
    let proxy2 = Proxy::start("", &without).await;
    expect_error(call(&proxy2, &up).await, 503, "token_unavailable").await;
    assert_eq!(
        ts.calls(),
        1,
        "the server saw no request without a certificate"
    );
}

#[tokio::test]
async fn custom_grant_expresses_capillary_without_the_preset() {
    let ts = TokenServer::start().await;
    ts.expect_client("cap-key", "cap-secret");
    ts.set_ttl(900);
    let up = Upstream::start().await;
    let cfg = format!(
        "{}{}",
        client("cap", &ts.url("/v3/oauth/token/generate"))
            .grant("custom")
            .credentials("cap-key", Some("cap-secret"))
            .extra("content_type = \"application/json\"")
            .extra("body = '{\"key\": \"<<client.client_id>>\", \"secret\": \"<<client.client_secret>>\"}'")
            .extra("token_path = \"data.accessToken\"\nexpires_in_path = \"data.ttlSeconds\""),
        route("r").client("cap").header("X-CAP-API-OAUTH-TOKEN", "<<oauth.token>>")
    );
    let proxy = Proxy::start("", &cfg).await;
    assert_eq!(call(&proxy, &up).await.status(), 200);
    assert_eq!(up.last().unwrap().headers["x-cap-api-oauth-token"], "tok-1");
    assert_eq!(
        ts.requests()[0].json.clone().unwrap(),
        serde_json::json!({"key": "cap-key", "secret": "cap-secret"})
    );
    let m = proxy.metrics().await;
    assert!(
        m.contains("sidekey_token_expires_in_seconds{client=\"cap\"} 89"),
        "ttl from expires_in_path:\n{m}"
    );
}

#[tokio::test]
async fn custom_form_grant_with_paths_and_rotating_refresh_token() {
    let ts = TokenServer::start().await;
    ts.set_issue_refresh(true);
    ts.set_validator(|r| {
        if r.field("rt").is_some_and(|v| v.starts_with("rt-")) || r.field("rt") == Some("seed") {
            need(r, "id", "cid")
        } else {
            Err(format!("rt = {:?}", r.field("rt")))
        }
    });
    let up = Upstream::start().await;
    let cfg = format!(
        "{}{}",
        client("c", &ts.url("/token"))
            .grant("custom")
            .credentials("cid", None)
            .extra("content_type = \"application/x-www-form-urlencoded\"")
            .extra("refresh_token = \"seed\"\nbody = \"id=<<client.client_id>>&rt=<<client.refresh_token>>\"")
            .extra("token_path = \"access_token\"\nexpires_in_path = \"expires_in\"")
            .extra("refresh_token_path = \"refresh_token\""),
        route("r").client("c").bearer()
    );
    let proxy = Proxy::start("", &cfg).await;
    assert_eq!(call(&proxy, &up).await.status(), 200);
    assert_eq!(ts.requests()[0].field("rt"), Some("seed"));
}

fn jwt(claims: serde_json::Value) -> String {
    let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!(
        "{}.{}.sig",
        e.encode(br#"{"alg":"RS256","typ":"JWT"}"#),
        e.encode(claims.to_string())
    )
}

#[tokio::test]
async fn id_token_and_decoded_claims_fill_headers() {
    let ts = TokenServer::start().await;
    let id = jwt(serde_json::json!({"sub": "user-7", "org": {"id": "eu-42", "tier": 3}}));
    ts.set_extra(serde_json::json!({"id_token": id}));
    let up = Upstream::start().await;
    let cfg = format!(
        "{}{}",
        client("o", &ts.url("/token")),
        route("r")
            .client("o")
            .header("X-Id-Token", "<<oauth.idToken>>")
            .header("X-Org", "<<oauth.tokenDecoded.org.id>>")
            .header("X-Tier", "tier-<<oauth.tokenDecoded.org.tier>>")
            .header("X-Sub", "<<oauth.tokenDecoded.sub>>")
    );
    let proxy = Proxy::start("", &cfg).await;
    assert_eq!(call(&proxy, &up).await.status(), 200);
    let h = up.last().unwrap().headers;
    assert_eq!(h["x-id-token"], id.as_str());
    assert_eq!(h["x-org"], "eu-42");
    assert_eq!(h["x-tier"], "tier-3");
    assert_eq!(h["x-sub"], "user-7");
}

#[tokio::test]
async fn a_custom_client_reads_its_id_token_at_id_token_path() {
    // Token server: a vendor JSON answer with the id_token nested under
    // `auth`; its access token is opaque.
    let ts = TokenServer::start().await;
    let id = jwt(serde_json::json!({"sub": "user-9", "org": {"id": "in-7"}}));
    ts.set_extra(serde_json::json!({"auth": {"idToken": id}}));
    let up = Upstream::start().await;
    let cfg = format!(
        "{}{}",
        client("v", &ts.url("/token"))
            .grant("custom")
            .credentials("v", None)
            .extra("body = '{\"key\": \"k\"}'")
            .extra("token_path = \"access_token\"\nid_token_path = \"auth.idToken\""),
        route("r")
            .client("v")
            .header("X-Id-Token", "<<oauth.idToken>>")
            .header("X-Org", "<<oauth.tokenDecoded.org.id>>")
    );
    let proxy = Proxy::start("", &cfg).await;
    assert_eq!(call(&proxy, &up).await.status(), 200);
    let h = up.last().unwrap().headers;
    assert_eq!(h["x-id-token"], id.as_str());
    assert_eq!(h["x-org"], "in-7", "claims come from the id_token");
}

#[test]
fn check_rejects_an_id_token_no_response_of_the_client_can_carry() {
    // Capillary and a custom client without id_token_path never get an
    // id_token: every request would be a 503, so `check` says so instead.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.toml");
    let client = |name: &str, grant: &str| {
        let c = config::client(name, "https://i.example/t").grant(grant);
        if grant == "custom" {
            c.credentials("i", None)
                .extra("body = '{}'\ntoken_path = \"t\"")
                .to_string()
        } else {
            c.credentials("i", Some("s")).to_string()
        }
    };
    let route = |name: &str, client: &str, header: &str| {
        config::route(name)
            .host(&format!("{name}.example"))
            .client(client)
            .header("X-Id", header)
            .to_string()
    };
    std::fs::write(
        &path,
        [
            client("cap", "capillary"),
            client("vendor", "custom"),
            client("std", "client_credentials"),
            route("a", "cap", "<<oauth.idToken>>"),
            route("b", "vendor", "Id <<oauth.idToken>>"),
            // Claims fall back to the access token, a JWT at Capillary.
            route("c", "cap", "<<oauth.tokenDecoded.sub>>"),
            // A standard answer may carry an id_token.
            route("d", "std", "<<oauth.idToken>>"),
        ]
        .concat(),
    )
    .unwrap();
    let (code, text) = support::sidekey::check(&path);
    assert_eq!(code, Some(1), "{text}");
    let errors: Vec<&str> = text.lines().filter(|l| l.contains("p.toml:")).collect();
    assert_eq!(errors.len(), 2, "{text}");
    assert!(
        errors[0].contains("route \"a\": header \"X-Id\": <<oauth.idToken>> cannot be rendered: client \"cap\" (grant \"capillary\")"),
        "{text}"
    );
    assert!(
        errors[1].contains("route \"b\"") && errors[1].contains("has no id_token_path"),
        "{text}"
    );
}

#[tokio::test]
async fn several_child_orgs_pick_their_own_client_and_the_selector_is_removed() {
    // One parent with two child orgs on Capillary, each with its own key.
    let ts = TokenServer::start().await;
    let up = Upstream::start().await;
    let url = ts.url("/v3/oauth/token/generate");
    let org = |name: &str, key: &str, secret: &str| {
        client(name, &url)
            .grant("capillary")
            .credentials(key, Some(secret))
    };
    // A route per org, chosen by `X-Org`, which it removes.
    let by_header = |org: &str, store: &str| {
        route(&format!("org-{org}"))
            .client(&format!("org_{org}"))
            .header("X-CAP-API-OAUTH-TOKEN", "<<oauth.token>>")
            .header("X-CAP-API-ATTRIBUTION-ENTITY-CODE", store)
            .extra(&format!("match_headers = {{ \"X-Org\" = \"{org}\" }}"))
            .extra("remove_headers = [\"X-Org\"]")
    };
    let cfg = format!(
        "{}{}{}{}{}",
        org("org_eu", "eu-key", "eu-secret"),
        org("org_in", "in-key", "in-secret"),
        by_header("eu", "eu-store"),
        by_header("in", "in-store"),
        route("org-in-by-path")
            .path_prefix("/in/")
            .client("org_in")
            .header("X-CAP-API-OAUTH-TOKEN", "<<oauth.token>>"),
    );
    let proxy = Proxy::start("", &cfg).await;
    let app = proxy.client();
    let base = format!("http://localhost:{}", up.addr.port());
    app.get(format!("{base}/v2/x"))
        .header("X-Org", "eu")
        .send()
        .await
        .unwrap();
    let eu = up.last().unwrap();
    app.get(format!("{base}/v2/x"))
        .header("X-Org", "in")
        .send()
        .await
        .unwrap();
    let india = up.last().unwrap();
    app.get(format!("{base}/in/x")).send().await.unwrap();
    let by_path = up.last().unwrap();
    let keys: Vec<String> = ts
        .requests()
        .iter()
        .map(|r| {
            r.json.as_ref().unwrap()["key"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        keys,
        vec!["eu-key", "in-key"],
        "one token per child org, shared by routes of the same client"
    );
    assert_eq!(eu.headers["x-cap-api-oauth-token"], "tok-1");
    assert_eq!(eu.headers["x-cap-api-attribution-entity-code"], "eu-store");
    assert_eq!(india.headers["x-cap-api-oauth-token"], "tok-2");
    assert_eq!(
        india.headers["x-cap-api-attribution-entity-code"],
        "in-store"
    );
    assert_eq!(by_path.headers["x-cap-api-oauth-token"], "tok-2");
    assert!(
        eu.headers.get("x-org").is_none() && india.headers.get("x-org").is_none(),
        "selector header forwarded"
    );
}

//! Interop with a real, certified authorization server: oidc-provider
//! (npm) on loopback, installed by scripts/install-test-deps.sh.
//! // App: reqwest through the proxy. Proxy: sidekey in-process.
//! // IdP: oidc-provider, which checks grant, client auth, assertion
//! //      signature and claims, and refresh-token rotation itself.
//! // Upstream: records the token; the IdP's introspection proves it is real.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed setup step should fail the test loudly"
)]

mod support;

use std::path::Path;

use serde_json::json;
use support::config::route;
use support::oidc::Oidc;
use support::sidekey::Proxy;
use support::upstream::Upstream;

fn jwk(name: &str) -> serde_json::Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/keys")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn key(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/keys")
        .join(name)
        .display()
        .to_string()
}

async fn provider() -> Oidc {
    Oidc::start(json!({
        "clients": [
            {"client_id": "cc-basic", "client_secret": "basic-secret+/:%", "token_endpoint_auth_method": "client_secret_basic", "scope": "api:read api:write"},
            {"client_id": "cc-post", "client_secret": "post-secret", "token_endpoint_auth_method": "client_secret_post", "scope": "api:read"},
            {"client_id": "pk-rsa", "token_endpoint_auth_method": "private_key_jwt", "jwks": {"keys": [jwk("rsa_pub.jwk.json")]}, "scope": "api:read"},
            {"client_id": "pk-ec", "token_endpoint_auth_method": "private_key_jwt", "jwks": {"keys": [jwk("ec_pub.jwk.json")]}, "scope": "api:read"},
            {"client_id": "rt-client", "client_secret": "rt-secret", "grant_types": ["authorization_code", "refresh_token"],
             "redirect_uris": ["http://127.0.0.1:8976/callback"], "scope": "openid offline_access api:read"}
        ],
        "refresh_tokens": [{"client_id": "rt-client", "scope": "openid offline_access api:read"}]
    }))
    .await
}

async fn token_through(proxy: &Proxy, up: &Upstream, client: &str) -> String {
    let r = proxy
        .client()
        .get(format!("http://localhost:{}/{client}/x", up.addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{client}: {}", r.text().await.unwrap());
    let h = up.last().unwrap().headers["authorization"]
        .to_str()
        .unwrap()
        .to_string();
    h.strip_prefix("Bearer ").unwrap().to_string()
}

#[tokio::test]
async fn client_credentials_basic_post_and_private_key_jwt_against_oidc_provider() {
    let idp = provider().await;
    let up = Upstream::start().await;
    let t = &idp.token_endpoint;
    let cfg = format!(
        "[clients.cc-basic]\ngrant = \"client_credentials\"\ntoken_url = \"{t}\"\nclient_id = \"cc-basic\"\nclient_secret = \"basic-secret+/:%\"\nscopes = [\"api:read\"]\n\n\
         [clients.cc-post]\ngrant = \"client_credentials\"\ntoken_url = \"{t}\"\nclient_id = \"cc-post\"\nclient_secret = \"post-secret\"\nclient_auth = \"post\"\nscopes = [\"api:read\"]\n\n\
         [clients.pk-rsa]\ngrant = \"client_credentials\"\ntoken_url = \"{t}\"\nclient_id = \"pk-rsa\"\nclient_auth = \"private_key_jwt\"\nprivate_key = \"<<file:{}>>\"\nkey_id = \"key-1\"\nscopes = [\"api:read\"]\n\n\
         [clients.pk-ec]\ngrant = \"client_credentials\"\ntoken_url = \"{t}\"\nclient_id = \"pk-ec\"\nclient_auth = \"private_key_jwt\"\nprivate_key = \"<<file:{}>>\"\nsigning_alg = \"ES256\"\nscopes = [\"api:read\"]\n\n\
         {}{}{}{}",
        key("rsa_pkcs8.pem"),
        key("ec_pkcs8.pem"),
        route("cc-basic").path_prefix("/cc-basic/").client("cc-basic").bearer(),
        route("cc-post").path_prefix("/cc-post/").client("cc-post").bearer(),
        route("pk-rsa").path_prefix("/pk-rsa/").client("pk-rsa").bearer(),
        route("pk-ec").path_prefix("/pk-ec/").client("pk-ec").bearer(),
    );
    let proxy = Proxy::start("", &cfg).await;
    for client in ["cc-basic", "cc-post", "pk-rsa", "pk-ec"] {
        let token = token_through(&proxy, &up, client).await;
        // The IdP itself says the token it issued is live, for this client and scope.
        let info = idp.introspect("cc-post", "post-secret", &token).await;
        assert_eq!(info["active"], true, "{client}: {info}");
        assert_eq!(info["client_id"], client, "{info}");
        assert_eq!(info["scope"], "api:read", "{info}");
    }
    let log = idp.log();
    assert!(
        !log.contains("token endpoint error"),
        "the IdP rejected a request:\n{log}"
    );
}

#[tokio::test]
async fn refresh_token_rotation_against_oidc_provider() {
    let idp = provider().await;
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("rt.json");
    let initial = idp.refresh_token("rt-client");
    let cfg = format!(
        "[clients.rt-client]\ngrant = \"refresh_token\"\ntoken_url = \"{}\"\nclient_id = \"rt-client\"\nclient_secret = \"rt-secret\"\n\
         refresh_token = \"{initial}\"\nstate_file = \"{}\"\n{}",
        idp.token_endpoint,
        state.display(),
        route("rt-client")
            .path_prefix("/rt-client/")
            .client("rt-client")
            .bearer()
            .header("X-Sub", "<<oauth.tokenDecoded.sub>>")
    );
    let proxy = Proxy::start("", &cfg).await;
    let token = token_through(&proxy, &up, "rt-client").await;
    // The id_token's sub is the account the refresh token belongs to.
    assert_eq!(up.last().unwrap().headers["x-sub"], "test-user");
    let info = idp.introspect("rt-client", "rt-secret", &token).await;
    assert_eq!(info["active"], true, "{info}");
    // oidc-provider rotated the refresh token; sidekey saved the new one.
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    let rotated = saved["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(rotated, initial);
    proxy.shutdown().await;

    // After a restart the saved token is used (the consumed initial one
    // would be rejected, and would revoke the whole grant).
    let proxy = Proxy::start("", &cfg).await;
    let token = token_through(&proxy, &up, "rt-client").await;
    assert_eq!(
        idp.introspect("rt-client", "rt-secret", &token).await["active"],
        true
    );
    let log = idp.log();
    assert!(!log.contains("token endpoint error"), "{log}");
}

//! Per-user accounts end to end: an app calls for user alice, gets
//! `login_required`, alice's browser follows `login_url` through the
//! authorization server back to sidekey's callback, and from then on
//! alice's calls carry alice's token, across a restart, until the IdP
//! revokes it. Forged callbacks, reused links and foreign `return_to`
//! are refused before any code is exchanged.
//! // App: reqwest through the proxy, naming the user in X-User.
//! // Browser: reqwest without redirects, cookies kept by hand.
//! // Proxy: sidekey in-process, [login] on a loopback port, file [store].
//! // Token server: /authorize signs the browser in as `x-test-user`;
//! //   /token issues tokens naming the user of the code (tok-N-for-alice).
//! // Upstream: records what arrived.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed setup step should fail the test loudly"
)]

mod support;

use std::time::Duration;

use support::config::{file_store, redis_store, route, Route};
use support::expect_error;
use support::sidekey::{free_port, Proxy};
use support::token_server::TokenServer;
use support::upstream::Upstream;

/// A per-user authorization-code client, a route using it, `[login]` on
/// `login` and a sealed file store at `store`.
fn config(ts: &TokenServer, login: std::net::SocketAddr, store: &std::path::Path) -> String {
    let sealed = format!(
        "{}encryption_key = \"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\"\n",
        file_store(store)
    );
    config_with_store(ts, login, &sealed)
}

/// `config` with another `[store]` section.
fn config_with_store(ts: &TokenServer, login: std::net::SocketAddr, store: &str) -> String {
    format!(
        "[clients.crm]\ngrant = \"authorization_code\"\ntoken_url = \"{token}\"\nauthorize_url = \"{authorize}\"\n\
         client_id = \"app\"\nclient_secret = \"app-secret\"\nscopes = [\"crm.read\"]\naudience = \"https://crm.example\"\n\
         user = \"<<request.header.X-User>>\"\n\n{route}\n\
         [login]\nlisten = \"{login}\"\npublic_url = \"http://{login}\"\nreturn_to = [\"https://app.example/settings/\"]\nlink_ttl = \"1m\"\n\n\
         {store}",
        token = ts.url("/token"),
        authorize = ts.url("/authorize"),
        route = crm_route(),
    )
}

/// The route `crm` for 127.0.0.1, through client `crm`.
fn crm_route() -> Route {
    route("crm").host("127.0.0.1").client("crm").bearer()
}

async fn call_as(proxy: &Proxy, up: &Upstream, user: Option<&str>) -> reqwest::Response {
    let mut req = proxy.client().get(format!("http://{}/contacts", up.addr));
    if let Some(u) = user {
        req = req.header("x-user", u);
    }
    req.send().await.unwrap()
}

/// Whether `resp` is a `login_required` answer, for polling.
fn is_login_required(resp: &reqwest::Response) -> bool {
    resp.status() == 401
        && resp
            .headers()
            .get("x-sidekey-error")
            .is_some_and(|e| e == "login_required")
}

/// The login link of a `login_required` answer (header and body agree).
async fn login_url(resp: reqwest::Response) -> String {
    let header = resp
        .headers()
        .get("x-sidekey-login")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = expect_error(resp, 401, "login_required").await;
    assert_eq!(body["client"], "crm");
    assert_eq!(body["login_url"], header.as_str());
    header
}

fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

fn location(resp: &reqwest::Response) -> String {
    resp.headers()["location"].to_str().unwrap().to_string()
}

/// `name=value` of the login cookie the browser was given.
fn cookie(resp: &reqwest::Response) -> String {
    let set = resp.headers()["set-cookie"].to_str().unwrap();
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(set.contains(attr), "cookie lacks {attr}: {set}");
    }
    assert!(!set.contains("Secure"), "public_url is http: no Secure");
    set.split(';').next().unwrap().to_string()
}

fn code_exchanges(ts: &TokenServer) -> usize {
    ts.requests()
        .iter()
        .filter(|r| r.field("grant_type") == Some("authorization_code"))
        .count()
}

/// Browser: login link -> authorization server (signed in as `user`) ->
/// back to the callback with the cookie. Returns the callback's answer.
async fn connect(link: &str, user: &str, return_to: Option<&str>) -> reqwest::Response {
    let b = browser();
    let link = match return_to {
        Some(r) => format!("{link}&return_to={}", urlencode(r)),
        None => link.to_string(),
    };
    let start = b.get(&link).send().await.unwrap();
    assert_eq!(start.status(), 302, "{}", start.text().await.unwrap());
    assert_eq!(start.headers()["x-frame-options"], "DENY");
    let jar = cookie(&start);
    let authorize = location(&start);
    let idp = b
        .get(&authorize)
        .header("x-test-user", user)
        .send()
        .await
        .unwrap();
    assert_eq!(idp.status(), 302);
    b.get(location(&idp))
        .header("cookie", jar)
        .send()
        .await
        .unwrap()
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
async fn a_user_connects_once_and_calls_carry_their_own_token() {
    let ts = TokenServer::start().await;
    ts.set_ttl(3);
    let up = Upstream::start().await;
    let store_dir = tempfile::tempdir().unwrap();
    let store = store_dir.path().join("tokens.json");
    let login = free_port();
    let proxy = Proxy::start("", &config(&ts, login, &store)).await;

    // App: no user header at all.
    expect_error(call_as(&proxy, &up, None).await, 401, "user_missing").await;

    // App: alice has not connected.
    let link = login_url(call_as(&proxy, &up, Some("alice")).await).await;
    assert!(
        link.starts_with(&format!("http://{login}/start?t=")),
        "{link}"
    );
    assert_eq!(up.count(), 0, "nothing went upstream without a token");

    // Browser: a return_to outside the allowed prefixes is refused, and
    // the link still works afterwards.
    let b = browser();
    let foreign = b
        .get(format!(
            "{link}&return_to={}",
            urlencode("https://evil.example/")
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 400);
    assert!(foreign.headers().get("location").is_none());

    // Browser: the real login, with the authorization request checked.
    let start = b.get(&link).send().await.unwrap();
    assert_eq!(start.status(), 302);
    let jar = cookie(&start);
    let authorize = url::Url::parse(&location(&start)).unwrap();
    let q: std::collections::HashMap<_, _> = authorize.query_pairs().into_owned().collect();
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["client_id"], "app");
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["scope"], "crm.read");
    assert_eq!(q["audience"], "https://crm.example");
    assert_eq!(q["redirect_uri"], format!("http://{login}/callback"));
    let idp = b
        .get(authorize.as_str())
        .header("x-test-user", "alice")
        .send()
        .await
        .unwrap();
    let callback = location(&idp);

    // Attacker: the same callback without the browser's cookie, and with a
    // wrong state, are refused and exchange nothing.
    let forged = b.get(&callback).send().await.unwrap();
    assert_eq!(forged.status(), 400);
    let wrong_state = callback.replace("state=", "state=x");
    let forged = b
        .get(&wrong_state)
        .header("cookie", jar.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 400);
    assert_eq!(
        code_exchanges(&ts),
        0,
        "no code exchanged for a forged callback"
    );

    // Browser: the real callback.
    let done = b.get(&callback).header("cookie", jar).send().await.unwrap();
    assert_eq!(done.status(), 200);
    assert_eq!(done.headers()["cache-control"], "no-store");
    assert_eq!(code_exchanges(&ts), 1);
    let exchange = ts
        .requests()
        .into_iter()
        .find(|r| r.field("grant_type") == Some("authorization_code"))
        .unwrap();
    assert!(exchange
        .field("code_verifier")
        .is_some_and(|v| v.len() >= 43));

    // Browser: the link was used; it does not work twice.
    let reused = b.get(&link).send().await.unwrap();
    assert_eq!(reused.status(), 400);

    // App: alice's call carries alice's token; the user header is gone.
    let resp = call_as(&proxy, &up, Some("alice")).await;
    assert_eq!(resp.status(), 200);
    let seen = up.last().unwrap();
    let auth = seen.headers["authorization"].to_str().unwrap().to_string();
    assert!(auth.ends_with("-for-alice"), "{auth}");
    assert!(seen.headers.get("x-user").is_none());

    // App: bob is not alice.
    let bob = call_as(&proxy, &up, Some("bob")).await;
    let bob_link = login_url(bob).await;
    assert_ne!(bob_link, link);

    // /tokens and /metrics: counts, never who.
    let tokens = proxy.tokens().await;
    assert!(tokens.contains("\"users\":1"), "{tokens}");
    assert!(!tokens.contains("alice") && !tokens.contains("tok-"));
    assert!(proxy
        .metrics()
        .await
        .contains("sidekey_login_users{client=\"crm\"} 1"));

    // Restart: alice's tokens come back from the store, no login needed.
    proxy.shutdown().await;
    let proxy = Proxy::start("", &config(&ts, free_port(), &store)).await;
    let resp = call_as(&proxy, &up, Some("alice")).await;
    assert_eq!(resp.status(), 200, "alice needs no login after a restart");
    let auth = up.last().unwrap().headers["authorization"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(auth.ends_with("-for-alice"), "{auth}");
    let raw = std::fs::read_to_string(&store).unwrap();
    assert!(
        !raw.contains("for-alice"),
        "the store holds sealed values only"
    );

    // The IdP revokes alice's refresh token: once her access token has
    // expired (3 s), the refresh is refused and she must log in again.
    ts.set_validator(|r| match r.field("refresh_token") {
        Some(rt) if rt.ends_with("-for-alice") => Err("revoked".into()),
        _ => Ok(()),
    });
    support::eventually(
        Duration::from_secs(15),
        "alice's revoked login is noticed",
        || async { is_login_required(&call_as(&proxy, &up, Some("alice")).await) },
    )
    .await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_login_returns_to_an_allowed_page_and_the_admin_can_disconnect() {
    let ts = TokenServer::start().await;
    let up = Upstream::start().await;
    let store_dir = tempfile::tempdir().unwrap();
    let login = free_port();
    let proxy = Proxy::start("", &config(&ts, login, &store_dir.path().join("t.json"))).await;

    // The IdP refuses (the user clicked "deny"): a 400 page naming the
    // IdP's error, escaped; nothing exchanged.
    let link = login_url(call_as(&proxy, &up, Some("carol")).await).await;
    let b = browser();
    let start = b.get(&link).send().await.unwrap();
    let jar = cookie(&start);
    let authorize = url::Url::parse(&location(&start)).unwrap();
    let state = authorize
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();
    let denied = b
        .get(format!(
            "http://{login}/callback?error=%3Cb%3Eaccess_denied&state={state}"
        ))
        .header("cookie", jar)
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 400);
    let page = denied.text().await.unwrap();
    assert!(
        page.contains("&lt;b&gt;access_denied") && !page.contains("<b>"),
        "{page}"
    );
    assert_eq!(code_exchanges(&ts), 0);

    let link = login_url(call_as(&proxy, &up, Some("carol")).await).await;
    let done = connect(&link, "carol", Some("https://app.example/settings/crm?x=1")).await;
    assert_eq!(done.status(), 302);
    assert_eq!(location(&done), "https://app.example/settings/crm?x=1");
    let resp = call_as(&proxy, &up, Some("carol")).await;
    assert_eq!(resp.status(), 200);

    // Admin: only loopback may disconnect; it deletes the user's tokens.
    let admin = reqwest::Client::new();
    let del = admin
        .delete(format!("http://{}/users/crm/carol", proxy.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 204);
    let again = call_as(&proxy, &up, Some("carol")).await;
    login_url(again).await;
    let unknown = admin
        .delete(format!("http://{}/users/nope/carol", proxy.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    proxy.shutdown().await;
}

/// `[login]` on `login` and a plaintext file store (so the test can read
/// what is kept), after a client section.
fn login_and_store(login: std::net::SocketAddr, store: &std::path::Path) -> String {
    format!(
        "{}\n[login]\nlisten = \"{login}\"\npublic_url = \"http://{login}\"\n\n{}",
        crm_route(),
        file_store(store)
    )
}

#[tokio::test]
async fn a_custom_client_with_code_body_holds_a_token_per_user() {
    // Capacity's user-level tokens: a custom code exchange and refresh body.
    let ts = TokenServer::start().await;
    ts.set_ttl(2);
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let login = free_port();
    let cfg = format!(
        "[clients.crm]\ngrant = \"custom\"\ntoken_url = \"{token}\"\nauthorize_url = \"{authorize}\"\nclient_id = \"app\"\n\
         content_type = \"application/x-www-form-urlencoded\"\n\
         code_body = \"grant_type=authorization_code&code=<<client.auth_code>>&redirect_uri=<<client.redirect_uri>>&code_verifier=<<client.code_verifier>>&client_id=<<client.client_id>>\"\n\
         body = \"grant_type=refresh_token&refresh_token=<<client.refresh_token>>\"\n\
         token_path = \"access_token\"\nrefresh_token_path = \"refresh_token\"\n\
         user = \"<<request.header.X-User>>\"\n{}",
        login_and_store(login, &dir.path().join("t.json")),
        token = ts.url("/token"),
        authorize = ts.url("/authorize"),
    );
    let proxy = Proxy::start("", &cfg).await;
    let link = login_url(call_as(&proxy, &up, Some("erin")).await).await;
    assert_eq!(connect(&link, "erin", None).await.status(), 200);
    let exchange = ts
        .requests()
        .into_iter()
        .find(|r| r.field("grant_type") == Some("authorization_code"))
        .unwrap();
    assert_eq!(
        exchange.field("redirect_uri"),
        Some(format!("http://{login}/callback").as_str())
    );
    assert_eq!(call_as(&proxy, &up, Some("erin")).await.status(), 200);
    let first = up.last().unwrap().headers["authorization"].clone();
    assert!(first.to_str().unwrap().ends_with("-for-erin"));
    // The 2 s token expires; the user's refresh token (from refresh_token_path) renews it.
    support::eventually(
        Duration::from_secs(10),
        "erin's token is refreshed",
        || async {
            call_as(&proxy, &up, Some("erin")).await.status() == 200
                && up.last().unwrap().headers["authorization"] != first
        },
    )
    .await;
    let refresh = ts
        .requests()
        .into_iter()
        .find(|r| r.field("grant_type") == Some("refresh_token"))
        .unwrap();
    assert!(refresh
        .field("refresh_token")
        .unwrap()
        .ends_with("-for-erin"));
    assert!(up.last().unwrap().headers["authorization"]
        .to_str()
        .unwrap()
        .ends_with("-for-erin"));
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_password_client_without_credentials_asks_each_user_once_and_keeps_only_tokens() {
    let ts = TokenServer::start().await;
    ts.set_issue_refresh(true);
    ts.set_validator(|r| match r.field("grant_type") {
        Some("password") if r.field("username") != Some("dave") => Err("who?".into()),
        Some("password") if r.field("password") != Some("pw-secret-123") => Err("wrong".into()),
        _ => Ok(()),
    });
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("t.json");
    let login = free_port();
    let cfg = format!(
        "[clients.crm]\ngrant = \"password\"\ntoken_url = \"{}\"\nclient_id = \"app\"\n\
         user = \"<<request.header.X-User>>\"\n{}",
        ts.url("/token"),
        login_and_store(login, &store),
    );
    let proxy = Proxy::start("", &cfg).await;
    let link = login_url(call_as(&proxy, &up, Some("dave")).await).await;

    // Browser: the link shows a form and sets the login's cookie.
    let b = browser();
    let page = b.get(&link).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let jar = cookie(&page);
    assert!(page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("default-src 'none'"));
    let html = page.text().await.unwrap();
    assert!(!html.contains("<script"));
    let state = html
        .split("name=\"state\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    let form = |s: &str| {
        format!(
            "state={}&username=dave&password=pw-secret-123",
            urlencode(s)
        )
    };
    let post = |body: String, cookie: Option<String>| {
        let mut r = b
            .post(format!("http://{login}/password"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        if let Some(c) = cookie {
            r = r.header("cookie", c);
        }
        r.send()
    };
    // Attacker: a cross-site post without the browser's cookie is refused.
    assert_eq!(post(form(&state), None).await.unwrap().status(), 400);
    assert_eq!(ts.calls(), 0, "no sign-in for a forged form");
    let done = post(form(&state), Some(jar)).await.unwrap();
    assert_eq!(done.status(), 200);
    assert_eq!(ts.calls(), 1);

    assert_eq!(call_as(&proxy, &up, Some("dave")).await.status(), 200);
    assert_eq!(up.last().unwrap().headers["authorization"], "Bearer tok-1");
    let kept = std::fs::read_to_string(&store).unwrap();
    assert!(
        !kept.contains("pw-secret-123"),
        "the password is never kept"
    );
    assert!(
        kept.contains("user:"),
        "the user's tokens are kept in the store"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn replicas_share_users_through_redis() {
    // Redis: a real redis-server; two replicas with one config but their
    // own login ports.
    let redis = support::redis::Redis::start().await;
    let ts = TokenServer::start().await;
    let up = Upstream::start().await;
    let cfg = |login: std::net::SocketAddr| {
        config_with_store(&ts, login, &redis_store(&redis.url(), "2s", ""))
    };
    let a = Proxy::start("", &cfg(free_port())).await;
    let b = Proxy::start("", &cfg(free_port())).await;

    // Alice connects through replica a.
    let link = login_url(call_as(&a, &up, Some("alice")).await).await;
    assert_eq!(connect(&link, "alice", None).await.status(), 200);

    // Replica b serves alice's token from the store, with no login and no
    // token request of its own.
    let calls = ts.calls();
    assert_eq!(call_as(&b, &up, Some("alice")).await.status(), 200);
    let auth = up.last().unwrap().headers["authorization"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(auth.ends_with("-for-alice"), "{auth}");
    assert_eq!(ts.calls(), calls);

    // Redis holds one sealed record, named by digests only.
    let keys = redis.keys("sidekey:user:*").await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(!keys[0].contains("alice"));
    let value: String = redis.query(redis::cmd("GET").arg(&keys[0])).await.unwrap();
    assert!(!value.contains("for-alice"), "sealed");

    // Disconnected on b: gone from the store, so a new replica asks for a login.
    let del = reqwest::Client::new()
        .delete(format!("http://{}/users/crm/alice", b.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 204);
    let c = Proxy::start("", &cfg(free_port())).await;
    login_url(call_as(&c, &up, Some("alice")).await).await;
    for p in [a, b, c] {
        p.shutdown().await;
    }
}

/// Browser at the real authorization server: follows its redirects through
/// the login interaction (signed in as `user`), keeping its cookies, until
/// it is sent back to sidekey's callback (returned).
async fn through_idp(
    b: &reqwest::Client,
    authorize: &str,
    user: &str,
    callback_prefix: &str,
) -> String {
    let mut url = url::Url::parse(authorize).unwrap();
    let mut jar: std::collections::BTreeMap<String, String> = Default::default();
    for _ in 0..10 {
        let cookies: Vec<String> = jar.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let resp = b
            .get(url.as_str())
            .header("x-test-user", user)
            .header("cookie", cookies.join("; "))
            .send()
            .await
            .unwrap();
        for set in resp.headers().get_all("set-cookie") {
            let pair = set.to_str().unwrap().split(';').next().unwrap();
            let (k, v) = pair.split_once('=').unwrap();
            jar.insert(k.to_string(), v.to_string());
        }
        assert!(
            resp.status().is_redirection(),
            "IdP answered {}: {}",
            resp.status(),
            resp.text().await.unwrap()
        );
        let next = url
            .join(resp.headers()["location"].to_str().unwrap())
            .unwrap();
        if next.as_str().starts_with(callback_prefix) {
            return next.to_string();
        }
        url = next;
    }
    panic!("the authorization server did not send the browser back within 10 redirects");
}

#[tokio::test]
async fn with_a_real_authorization_server_calls_carry_the_users_own_subject() {
    // IdP: oidc-provider with an automated login interaction, 3 s tokens,
    // and a test-only action that revokes a user's whole grant.
    let login = free_port();
    let idp = support::oidc::Oidc::start(serde_json::json!({
        "ttl": 3,
        "clients": [{
            "client_id": "crm-app", "client_secret": "crm-secret",
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "redirect_uris": [format!("http://{login}/callback")],
        }],
    }))
    .await;
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "[clients.crm]\ngrant = \"authorization_code\"\ntoken_url = \"{}\"\nauthorize_url = \"{}/auth\"\n\
         client_id = \"crm-app\"\nclient_secret = \"crm-secret\"\nscopes = [\"openid\", \"offline_access\"]\n\
         authorize_params = {{ prompt = \"consent\" }}\nuser = \"<<request.header.X-User>>\"\n{}",
        idp.token_endpoint,
        idp.issuer,
        login_and_store(login, &dir.path().join("t.json")),
    );
    let proxy = Proxy::start("", &cfg).await;

    // App -> login_required; browser -> /start -> IdP (as alice) -> callback.
    let link = login_url(call_as(&proxy, &up, Some("alice")).await).await;
    let b = browser();
    let start = b.get(&link).send().await.unwrap();
    assert_eq!(start.status(), 302);
    let jar = cookie(&start);
    let callback = through_idp(
        &b,
        &location(&start),
        "alice",
        &format!("http://{login}/callback"),
    )
    .await;
    let done = b.get(&callback).header("cookie", jar).send().await.unwrap();
    assert_eq!(done.status(), 200, "{}", done.text().await.unwrap());

    // Alice's call carries a token the IdP says is alice's.
    assert_eq!(call_as(&proxy, &up, Some("alice")).await.status(), 200);
    let auth = up.last().unwrap().headers["authorization"]
        .to_str()
        .unwrap()
        .to_string();
    let token = auth.strip_prefix("Bearer ").unwrap().to_string();
    let info = idp.introspect("crm-app", "crm-secret", &token).await;
    assert_eq!(info["active"], true, "{info}");
    assert_eq!(info["sub"], "alice", "{info}");
    // Bob does not get alice's token.
    login_url(call_as(&proxy, &up, Some("bob")).await).await;

    // Alice's 3 s token is refreshed with her refresh token, still hers.
    support::eventually(
        Duration::from_secs(15),
        "alice's token is refreshed",
        || async {
            call_as(&proxy, &up, Some("alice")).await.status() == 200
                && up.last().unwrap().headers["authorization"] != auth.as_str()
        },
    )
    .await;
    let fresh = up.last().unwrap().headers["authorization"]
        .to_str()
        .unwrap()
        .to_string();
    let fresh = fresh.strip_prefix("Bearer ").unwrap();
    assert_eq!(
        idp.introspect("crm-app", "crm-secret", fresh).await["sub"],
        "alice"
    );

    // The IdP revokes alice's grant: her next refresh is refused and she
    // must log in again.
    let revoked = reqwest::Client::new()
        .post(format!("{}/test/revoke-grant?token={fresh}", idp.issuer))
        .send()
        .await
        .unwrap();
    assert!(revoked.status().is_success(), "{}", revoked.status());
    support::eventually(
        Duration::from_secs(15),
        "alice's revoked grant is noticed",
        || async { is_login_required(&call_as(&proxy, &up, Some("alice")).await) },
    )
    .await;
    proxy.shutdown().await;
    idp.stop().await;
}

#[tokio::test]
async fn an_upstream_401_refreshes_the_users_token_and_retries_once() {
    let ts = TokenServer::start().await;
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let login = free_port();
    let proxy = Proxy::start("", &config(&ts, login, &dir.path().join("t.json"))).await;
    let link = login_url(call_as(&proxy, &up, Some("alice")).await).await;
    assert_eq!(connect(&link, "alice", None).await.status(), 200);
    assert_eq!(call_as(&proxy, &up, Some("alice")).await.status(), 200);
    let first = up.last().unwrap().headers["authorization"].clone();

    // Upstream: rejects alice's first token (revoked at the API, say).
    let rejected = first.clone();
    up.set_responder(move |r| {
        (r.headers.get("authorization") == Some(&rejected)).then(|| (401, vec![], String::new()))
    });
    let resp = call_as(&proxy, &up, Some("alice")).await;
    assert_eq!(resp.status(), 200, "retried with a refreshed token");
    let second = up.last().unwrap().headers["authorization"].clone();
    assert_ne!(second, first);
    assert!(second.to_str().unwrap().ends_with("-for-alice"));
    assert!(ts
        .requests()
        .iter()
        .any(|r| r.field("grant_type") == Some("refresh_token")));
    // Neither the rejected send nor the retry names the user to the API.
    let sent = up.requests();
    assert_eq!(sent.len(), 3, "one retry, no more");
    for r in &sent {
        assert!(
            r.headers.get("x-user").is_none(),
            "the user header went upstream"
        );
    }
    // bob, who never connected, gets his own login link, never alice's token.
    login_url(call_as(&proxy, &up, Some("bob")).await).await;
    assert_eq!(up.requests().len(), 3, "nothing went upstream for bob");
    proxy.shutdown().await;
}

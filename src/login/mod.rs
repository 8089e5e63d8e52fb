//! The `[login]` listener, where end users' browsers connect their
//! accounts for per-user clients: `GET /start?t=TICKET[&return_to=URL]`
//! binds the browser with a cookie and redirects to the authorization
//! server; `GET /callback` checks state and cookie, exchanges the code
//! and keeps the user's tokens. Anything forged, reused or pointing
//! elsewhere is refused (400) before any code is exchanged.

mod browser;
mod pages;
mod password;

use std::sync::Arc;

use base64::Engine;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use sha2::Digest;

use browser::{allowed, clear_cookie, cookie, set_cookie};

use crate::body::ProxyBody;
use crate::config::{GrantSettings, LoginSettings};
use crate::runtime::Shared;
use crate::token::accounts::Accounts;
use crate::token::TokenSource;

pub(crate) async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<ProxyBody> {
    let Some(settings) = shared.tokens.logins.settings() else {
        return pages::page(StatusCode::NOT_FOUND, "not found", "no [login] configured");
    };
    let query: Vec<(String, String)> =
        url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let get = |k: &str| param(&query, k);
    match (req.method().as_str(), req.uri().path()) {
        ("GET", "/start") => start(&shared, &settings, get("t"), get("return_to")),
        ("GET", "/callback") => {
            let cookie = cookie(&req);
            callback(&shared, &settings, &query, cookie.as_deref()).await
        }
        ("POST", "/password") => password::submit(&shared, &settings, req).await,
        _ => pages::page(StatusCode::NOT_FOUND, "not found", "nothing here"),
    }
}

/// `/start`: the ticket is checked and taken, the browser gets the login's
/// cookie and goes to the authorization server.
fn start(
    shared: &Shared,
    settings: &LoginSettings,
    ticket: Option<&str>,
    return_to: Option<&str>,
) -> Response<ProxyBody> {
    // Checked before the ticket is taken: a bad return_to costs no link.
    if let Some(r) = return_to {
        if !allowed(settings, r) {
            return pages::refused("return_to is not one of the allowed addresses");
        }
    }
    let Some(ticket) = ticket.and_then(|t| shared.tokens.logins.redeem(t)) else {
        return pages::refused(
            "this login link is unknown, used already or expired: ask the app for a new one",
        );
    };
    let Some(accounts) = accounts(shared, &ticket.client) else {
        return pages::refused("this login link is for a client that no longer exists");
    };
    let s = &accounts.settings;
    if s.grant == GrantSettings::PasswordForm {
        let started = shared
            .tokens
            .logins
            .begin(ticket, return_to.map(str::to_string));
        return pages::password_form(
            &started.state,
            &s.name,
            set_cookie(settings, &started.cookie),
        );
    }
    let authorize_url = match &s.grant {
        GrantSettings::AuthorizationCode { authorize_url }
        | GrantSettings::Custom {
            authorize_url: Some(authorize_url),
            ..
        } => authorize_url,
        _ => return pages::refused("this client has no authorize_url"),
    };
    let client_id = match crate::token::grants::field(s.client_id.as_ref(), "client_id") {
        Ok(Some(id)) => id,
        _ => return pages::refused("the client has no client_id"),
    };
    let started = shared
        .tokens
        .logins
        .begin(ticket, return_to.map(str::to_string));
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let challenge = b64.encode(sha2::Sha256::digest(started.verifier.as_bytes()));
    let mut url = authorize_url.clone();
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("response_type", "code")
            .append_pair("client_id", client_id.expose())
            .append_pair("redirect_uri", &settings.url("/callback"))
            .append_pair("state", &started.state)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
        if !s.scopes.is_empty() {
            q.append_pair("scope", &s.scopes.join(" "));
        }
        if let Ok(Some(aud)) = crate::token::grants::field(s.audience.as_ref(), "audience") {
            if !s.authorize_params.iter().any(|(k, _)| k == "audience") {
                q.append_pair("audience", aud.expose());
            }
        }
        for (k, v) in &s.authorize_params {
            q.append_pair(k, v);
        }
    }
    pages::redirect(url.as_str(), Some(set_cookie(settings, &started.cookie)))
}

/// `/callback`: state and cookie must name one login in progress; only
/// then is the code exchanged.
async fn callback(
    shared: &Shared,
    settings: &LoginSettings,
    query: &[(String, String)],
    cookie: Option<&str>,
) -> Response<ProxyBody> {
    let get = |k: &str| param(query, k);
    let Some(login) = get("state").and_then(|s| shared.tokens.logins.finish(s, cookie)) else {
        return pages::refused("this callback does not belong to a login started in this browser");
    };
    if let Some(e) = get("error") {
        let e: String = e.chars().take(64).collect();
        return pages::refused(&format!("the authorization server said: {e}"));
    }
    let Some(code) = get("code").filter(|c| !c.is_empty()) else {
        return pages::refused("the callback has no code");
    };
    let Some(accounts) = accounts(shared, &login.ticket.client) else {
        return pages::refused("this login is for a client that no longer exists");
    };
    let redirect_uri = settings.url("/callback");
    let resp = match accounts
        .exchange(code, &login.verifier, &redirect_uri)
        .await
    {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(client = %login.ticket.client, error = %e, "a user's code exchange failed");
            return pages::refused("the authorization server did not accept the login; try again");
        }
    };
    if let Err(e) = accounts.connect(&login.ticket.user, resp).await {
        tracing::warn!(client = %login.ticket.client, error = %e, "a user's tokens are not usable");
        return pages::refused("the authorization server's answer is not usable");
    }
    tracing::info!(client = %login.ticket.client, "a user connected");
    connected(settings, login.return_to)
}

/// After a login: back to the app's page, or a short "connected" page.
fn connected(settings: &LoginSettings, return_to: Option<String>) -> Response<ProxyBody> {
    match return_to {
        Some(to) => pages::redirect(&to, Some(clear_cookie(settings))),
        None => pages::page(
            StatusCode::OK,
            "Connected",
            "Your account is connected. You can close this window.",
        ),
    }
}

fn param<'a>(query: &'a [(String, String)], k: &str) -> Option<&'a str> {
    query.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

/// The per-user client named `client` in the config now serving.
fn accounts(shared: &Shared, client: &str) -> Option<Arc<Accounts>> {
    let rt = shared.runtime();
    match shared.tokens.get(rt.config.clients.get(client)?)? {
        TokenSource::Account(a) => Some(a),
        _ => None,
    }
}

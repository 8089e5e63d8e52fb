//! The per-user password form's submission: the browser that opened the
//! login link (its cookie and the form's state) posts the user's own
//! credentials once; sidekey runs the password grant with them and keeps
//! only the tokens it gets, never the password.

use http::{Request, Response};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use super::{accounts, browser::cookie, connected, pages};
use crate::body::ProxyBody;
use crate::config::LoginSettings;
use crate::runtime::Shared;
use crate::secret::Secret;

/// A username, a password and a state fit in far less.
const MAX_FORM: usize = 8 * 1024;

pub(super) async fn submit(
    shared: &Shared,
    settings: &LoginSettings,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let jar = cookie(&req);
    let Ok(body) = Limited::new(req.into_body(), MAX_FORM).collect().await else {
        return pages::refused("the form is too large");
    };
    let body = body.to_bytes();
    let mut state = None;
    let (mut username, mut password) = (Secret::new(""), Secret::new(""));
    for (k, v) in url::form_urlencoded::parse(&body) {
        match &*k {
            "state" => state = Some(v.into_owned()),
            "username" => username = Secret::new(v.into_owned()),
            "password" => password = Secret::new(v.into_owned()),
            _ => {}
        }
    }
    let Some(login) = state.and_then(|s| shared.tokens.logins.finish(&s, jar.as_deref())) else {
        return pages::refused("this form does not belong to a login started in this browser");
    };
    if username.is_empty() || password.is_empty() {
        return pages::refused("enter a username and a password; open the app's link again");
    }
    let Some(accounts) = accounts(shared, &login.ticket.client) else {
        return pages::refused("this login is for a client that no longer exists");
    };
    let resp = match accounts
        .password_login(username.expose(), password.expose())
        .await
    {
        Ok(r) => r,
        Err(e) => {
            tracing::info!(client = %login.ticket.client, error = %e, "a user's password sign-in was refused");
            return pages::refused("the sign-in was refused; open the app's link again");
        }
    };
    if let Err(e) = accounts.connect(&login.ticket.user, resp).await {
        tracing::warn!(client = %login.ticket.client, error = %e, "a user's tokens are not usable");
        return pages::refused("the authorization server's answer is not usable");
    }
    tracing::info!(client = %login.ticket.client, "a user connected (password form)");
    connected(settings, login.return_to)
}

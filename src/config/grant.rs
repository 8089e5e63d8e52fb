//! Config stage 2 for a client's `grant`: the keys each grant needs, and
//! keys set for a grant that does not use them.

use std::ops::Range;
use std::path::Path;

use toml::Spanned;

use super::diag::{resolve_path, Errors};
use super::model::*;
use super::raw::RawClient;
use crate::template::Template;

const GRANTS: &str =
    "client_credentials | password | refresh_token | token_exchange | capillary | custom";

/// The grant-specific template fields, already parsed by `client`.
pub(super) struct GrantFields {
    pub username: Option<Template>,
    pub password: Option<Template>,
    pub refresh_token: Option<Template>,
    pub subject_token: Option<Template>,
    pub actor_token: Option<Template>,
    pub body: Option<Template>,
}

pub(super) fn grant(
    name: &str,
    raw: &RawClient,
    f: GrantFields,
    base: &Path,
    errs: &mut Errors,
) -> Option<GrantSettings> {
    let ctx = |what: &str| format!("client {name:?}: {what}");
    let GrantFields {
        username,
        password,
        refresh_token,
        subject_token,
        actor_token,
        body,
    } = f;
    let plain = |f: &Option<Spanned<String>>| f.as_ref().map(|s| s.get_ref().clone());
    let mut require = |present: bool, key: &str, span: Range<usize>| {
        if !present {
            errs.at(
                span,
                ctx(&format!(
                    "{key} is required for grant {:?}",
                    raw.grant.get_ref()
                )),
            );
        }
    };
    let gspan = raw.grant.span();
    let grant = match raw.grant.get_ref().as_str() {
        "client_credentials" => Some(GrantSettings::ClientCredentials),
        "capillary" => {
            require(
                raw.client_id.is_some(),
                "client_id (the key)",
                gspan.clone(),
            );
            require(raw.client_secret.is_some(), "client_secret", gspan.clone());
            Some(GrantSettings::Capillary)
        }
        "password" => {
            require(raw.username.is_some(), "username", gspan.clone());
            require(raw.password.is_some(), "password", gspan.clone());
            username
                .zip(password)
                .map(|(username, password)| GrantSettings::Password { username, password })
        }
        "refresh_token" => {
            require(
                raw.refresh_token.is_some() || raw.state_file.is_some(),
                "refresh_token or state_file",
                gspan.clone(),
            );
            let authorize_url =
                raw.authorize_url
                    .as_ref()
                    .and_then(|u| match url::Url::parse(u.get_ref()) {
                        Ok(u) => Some(u),
                        Err(e) => {
                            errs.at(u.span(), ctx(&format!("authorize_url: {e}")));
                            None
                        }
                    });
            let redirect = raw
                .redirect_uri
                .as_ref()
                .map(|s| (s.get_ref().as_str(), s.span()))
                .unwrap_or(("http://127.0.0.1:8976/callback", gspan.clone()));
            let redirect_uri = match url::Url::parse(redirect.0) {
                Ok(u) => Some(u),
                Err(e) => {
                    errs.at(redirect.1, ctx(&format!("redirect_uri: {e}")));
                    None
                }
            };
            redirect_uri.map(|redirect_uri| GrantSettings::RefreshToken {
                refresh_token: refresh_token.clone(),
                state_file: raw
                    .state_file
                    .as_ref()
                    .map(|p| resolve_path(base, p.get_ref())),
                authorize_url,
                redirect_uri,
            })
        }
        "token_exchange" => {
            require(raw.subject_token.is_some(), "subject_token", gspan.clone());
            require(
                raw.subject_token_type.is_some(),
                "subject_token_type",
                gspan.clone(),
            );
            match (subject_token, plain(&raw.subject_token_type)) {
                (Some(subject_token), Some(subject_token_type)) => {
                    Some(GrantSettings::TokenExchange {
                        subject_token,
                        subject_token_type,
                        requested_token_type: plain(&raw.requested_token_type),
                        actor_token,
                        actor_token_type: plain(&raw.actor_token_type),
                    })
                }
                _ => None,
            }
        }
        "custom" => {
            require(raw.body.is_some(), "body", gspan.clone());
            require(raw.token_path.is_some(), "token_path", gspan.clone());
            let content_type = match raw
                .content_type
                .as_ref()
                .map(|c| (c.get_ref().as_str(), c.span()))
            {
                None | Some(("application/json", _)) => Some(ContentType::Json),
                Some(("application/x-www-form-urlencoded", _)) => Some(ContentType::Form),
                Some((other, span)) => {
                    errs.at(span, ctx(&format!("content_type {other:?} must be \"application/json\" or \"application/x-www-form-urlencoded\"")));
                    None
                }
            };
            let path = |p: &Option<Spanned<String>>| {
                plain(p).map(|s| s.split('.').map(str::to_string).collect::<Vec<_>>())
            };
            match (body, content_type, path(&raw.token_path)) {
                (Some(body), Some(content_type), Some(token_path)) => Some(GrantSettings::Custom {
                    body,
                    content_type,
                    token_path,
                    expires_in_path: path(&raw.expires_in_path),
                    refresh_token_path: path(&raw.refresh_token_path),
                    refresh_token: refresh_token.clone(),
                    state_file: raw
                        .state_file
                        .as_ref()
                        .map(|p| resolve_path(base, p.get_ref())),
                }),
                _ => None,
            }
        }
        other => {
            errs.at(
                gspan.clone(),
                ctx(&format!("unknown grant {other:?} (one of {GRANTS})")),
            );
            None
        }
    };
    let grant_name = raw.grant.get_ref().as_str();
    // Keys of one grant set on another are mistakes worth a clear error.
    for (key, set, allowed) in [
        ("username", raw.username.is_some(), grant_name == "password"),
        ("password", raw.password.is_some(), grant_name == "password"),
        (
            "refresh_token",
            raw.refresh_token.is_some(),
            matches!(grant_name, "refresh_token" | "custom"),
        ),
        (
            "state_file",
            raw.state_file.is_some(),
            matches!(grant_name, "refresh_token" | "custom"),
        ),
        (
            "authorize_url",
            raw.authorize_url.is_some(),
            grant_name == "refresh_token",
        ),
        (
            "subject_token",
            raw.subject_token.is_some(),
            grant_name == "token_exchange",
        ),
        (
            "actor_token",
            raw.actor_token.is_some(),
            grant_name == "token_exchange",
        ),
        ("body", raw.body.is_some(), grant_name == "custom"),
        (
            "token_path",
            raw.token_path.is_some(),
            grant_name == "custom",
        ),
    ] {
        if set && !allowed {
            errs.at(
                gspan.clone(),
                ctx(&format!("{key} is not used by grant {grant_name:?}")),
            );
        }
    }

    grant
}

//! Config stage 2 for a client's `grant`: the keys each grant needs, and
//! keys set for a grant that does not use them.

use std::ops::Range;
use std::path::Path;

use toml::Spanned;

use super::diag::{resolve_path, Errors};
use super::model::*;
use super::raw::RawClient;
use crate::template::Template;

const GRANTS: &str = "client_credentials | password | refresh_token | token_exchange | capillary | custom | authorization_code | jwt_bearer";

/// The grant-specific template fields, already parsed by `client`.
pub(super) struct GrantFields {
    pub username: Option<Template>,
    pub password: Option<Template>,
    pub refresh_token: Option<Template>,
    pub subject_token: Option<Template>,
    pub actor_token: Option<Template>,
    pub body: Option<Template>,
    pub refresh_body: Option<Template>,
    pub code_body: Option<Template>,
    pub private_key: Option<Template>,
    pub subject: Option<Template>,
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
        refresh_body,
        code_body,
        private_key,
        subject,
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
    let mut url_errs = Vec::new();
    let mut url_of = |u: &Option<Spanned<String>>, key: &str| {
        u.as_ref().and_then(|u| match url::Url::parse(u.get_ref()) {
            Ok(v) if matches!(v.scheme(), "http" | "https") => Some(v),
            _ => {
                url_errs.push((u.span(), format!("{key} must be an http(s) URL")));
                None
            }
        })
    };
    let grant = match raw.grant.get_ref().as_str() {
        "client_credentials" => Some(GrantSettings::ClientCredentials),
        "authorization_code" => {
            require(raw.authorize_url.is_some(), "authorize_url", gspan.clone());
            require(
                raw.user.is_some(),
                "user (e.g. \"<<request.header.X-User>>\")",
                gspan.clone(),
            );
            url_of(&raw.authorize_url, "authorize_url")
                .map(|authorize_url| GrantSettings::AuthorizationCode { authorize_url })
        }
        "jwt_bearer" => {
            require(raw.private_key.is_some(), "private_key", gspan.clone());
            let alg = match raw.signing_alg.as_ref().map(|a| a.get_ref().as_str()) {
                None | Some("RS256") => Some(JwtAlg::Rs256),
                Some("ES256") => Some(JwtAlg::Es256),
                Some(other) => {
                    errs.at(
                        gspan.clone(),
                        ctx(&format!(
                            "signing_alg {other:?} must be \"RS256\" or \"ES256\""
                        )),
                    );
                    None
                }
            };
            private_key
                .zip(alg)
                .map(|(key, alg)| GrantSettings::JwtBearer {
                    key,
                    key_id: plain(&raw.key_id),
                    alg,
                    subject,
                    audience: plain(&raw.assertion_audience),
                })
        }
        "capillary" => {
            require(
                raw.client_id.is_some(),
                "client_id (the key)",
                gspan.clone(),
            );
            require(raw.client_secret.is_some(), "client_secret", gspan.clone());
            Some(GrantSettings::Capillary)
        }
        // Per-user: each end user types their own credentials in a form.
        "password" if raw.user.is_some() && raw.username.is_none() && raw.password.is_none() => {
            Some(GrantSettings::PasswordForm)
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
            let authorize_url = url_of(&raw.authorize_url, "authorize_url");
            let redirect_uri = redirect_uri(raw, gspan.clone(), errs, &ctx);
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
            let subject_header = match subject_token.as_ref().map(Template::request_header) {
                Some(Ok(Some(h))) => http::HeaderName::from_bytes(h.as_bytes()).ok(),
                Some(Err(e)) => {
                    if let Some(st) = &raw.subject_token {
                        errs.at(st.span(), ctx(&format!("subject_token: {e}")));
                    }
                    None
                }
                _ => None,
            };
            let max_subjects = raw.max_subjects.as_ref().map_or(10_000, |m| *m.get_ref());
            if max_subjects == 0 {
                errs.at(gspan.clone(), ctx("max_subjects must be at least 1"));
            }
            subject_token.map(|subject_token| GrantSettings::TokenExchange {
                subject_token,
                subject_header,
                max_subjects,
                // RFC 8693 §3; the on-behalf-of docs' default.
                subject_token_type: plain(&raw.subject_token_type)
                    .unwrap_or_else(|| "urn:ietf:params:oauth:token-type:access_token".into()),
                requested_token_type: plain(&raw.requested_token_type),
                actor_token,
                actor_token_type: plain(&raw.actor_token_type),
            })
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
            let refresh_url = url_of(&raw.refresh_url, "refresh_url");
            let authorize_url = url_of(&raw.authorize_url, "authorize_url");
            let redirect_uri = redirect_uri(raw, gspan.clone(), errs, &ctx);
            match (body, content_type, path(&raw.token_path), redirect_uri) {
                (Some(body), Some(content_type), Some(token_path), Some(redirect_uri)) => {
                    Some(GrantSettings::Custom {
                        body,
                        content_type,
                        token_path,
                        expires_in_path: path(&raw.expires_in_path),
                        refresh_token_path: path(&raw.refresh_token_path),
                        id_token_path: path(&raw.id_token_path),
                        refresh_token: refresh_token.clone(),
                        state_file: raw
                            .state_file
                            .as_ref()
                            .map(|p| resolve_path(base, p.get_ref())),
                        refresh_url,
                        refresh_body,
                        code_body,
                        authorize_url,
                        redirect_uri,
                    })
                }
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
    for (span, msg) in url_errs {
        errs.at(span, ctx(&msg));
    }
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
            matches!(
                grant_name,
                "refresh_token" | "custom" | "authorization_code"
            ),
        ),
        (
            "authorize_params",
            !raw.authorize_params.is_empty(),
            matches!(
                grant_name,
                "refresh_token" | "custom" | "authorization_code"
            ),
        ),
        (
            "user",
            raw.user.is_some(),
            matches!(grant_name, "authorization_code" | "custom" | "password"),
        ),
        ("subject", raw.subject.is_some(), grant_name == "jwt_bearer"),
        (
            "assertion_audience",
            raw.assertion_audience.is_some(),
            grant_name == "jwt_bearer",
        ),
        (
            "refresh_url",
            raw.refresh_url.is_some(),
            grant_name == "custom",
        ),
        (
            "refresh_body",
            raw.refresh_body.is_some(),
            grant_name == "custom",
        ),
        ("code_body", raw.code_body.is_some(), grant_name == "custom"),
        (
            "max_subjects",
            raw.max_subjects.is_some(),
            grant_name == "token_exchange",
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
        (
            "id_token_path",
            raw.id_token_path.is_some(),
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

/// `redirect_uri` of a login, default `http://127.0.0.1:8976/callback`.
fn redirect_uri(
    raw: &RawClient,
    gspan: Range<usize>,
    errs: &mut Errors,
    ctx: &dyn Fn(&str) -> String,
) -> Option<url::Url> {
    let (text, span) = raw
        .redirect_uri
        .as_ref()
        .map_or(("http://127.0.0.1:8976/callback", gspan), |s| {
            (s.get_ref().as_str(), s.span())
        });
    match url::Url::parse(text) {
        Ok(u) => Some(u),
        Err(e) => {
            errs.at(span, ctx(&format!("redirect_uri: {e}")));
            None
        }
    }
}

//! Config stage 2 for `[clients.*]`: grant-specific keys checked together,
//! with messages that say how to fix them.

use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use toml::Spanned;

use super::model::*;
use super::raw::RawClient;
use super::validate::{resolve_path, Errors};
use crate::template::{Context, Template};

const GRANTS: &str =
    "client_credentials | password | refresh_token | token_exchange | capillary | custom";

pub(super) fn client(
    name: &str,
    raw: Spanned<RawClient>,
    base: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    errs: &mut Errors,
) -> Option<ClientSettings> {
    let before = errs.0.len();
    let span = raw.span();
    let raw = raw.into_inner();
    let ctx = |what: &str| format!("client {name:?}: {what}");
    let mut field = |f: &Option<Spanned<String>>, key: &str, tctx: Context| -> Option<Template> {
        let f = f.as_ref()?;
        match Template::parse(f.get_ref(), tctx, env) {
            Ok(t) => {
                for p in t.files() {
                    if let Err(e) = std::fs::metadata(p) {
                        errs.at(
                            f.span(),
                            ctx(&format!("{key}: cannot read {}: {e}", p.display())),
                        );
                    }
                }
                Some(t)
            }
            Err(e) => {
                errs.at(f.span(), ctx(&format!("{key}: {e}")));
                None
            }
        }
    };
    let client_id = field(&raw.client_id, "client_id", Context::ClientField);
    let client_secret = field(&raw.client_secret, "client_secret", Context::ClientField);
    let audience = field(&raw.audience, "audience", Context::ClientField);
    let username = field(&raw.username, "username", Context::ClientField);
    let password = field(&raw.password, "password", Context::ClientField);
    let refresh_token = field(&raw.refresh_token, "refresh_token", Context::ClientField);
    let subject_token = field(&raw.subject_token, "subject_token", Context::ClientField);
    let actor_token = field(&raw.actor_token, "actor_token", Context::ClientField);
    let private_key = field(&raw.private_key, "private_key", Context::ClientField);
    let tls_cert = field(
        &raw.tls_client_cert,
        "tls_client_cert",
        Context::ClientField,
    );
    let tls_key = field(&raw.tls_client_key, "tls_client_key", Context::ClientField);
    let body = field(&raw.body, "body", Context::Body);
    let mut params = Vec::new();
    for (k, v) in &raw.params {
        if let Some(t) = field(
            &Some(v.clone()),
            &format!("params.{k}"),
            Context::ClientField,
        ) {
            params.push((k.clone(), t));
        }
    }

    let token_url_text = match Template::parse(raw.token_url.get_ref(), Context::Header, env) {
        Ok(t) => t.as_literal().map(str::to_string),
        Err(e) => {
            errs.at(raw.token_url.span(), ctx(&format!("token_url: {e}")));
            Some(String::new())
        }
    };
    let token_url = match token_url_text.as_deref().map(url::Url::parse) {
        Some(Ok(u)) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Some(u),
        _ if errs.0.len() > before => None,
        _ => {
            errs.at(raw.token_url.span(), ctx("token_url must be an http(s) URL such as \"https://idp.example.com/oauth2/token\""));
            None
        }
    };
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

    let client_auth = match raw
        .client_auth
        .as_ref()
        .map(|a| (a.get_ref().as_str(), a.span()))
    {
        None | Some(("basic", _)) => Some(ClientAuth::Basic),
        Some(("post", _)) => Some(ClientAuth::Post),
        Some(("none", _)) => Some(ClientAuth::None),
        Some(("private_key_jwt", span)) => {
            let alg = match raw.signing_alg.as_ref().map(|a| a.get_ref().as_str()) {
                None | Some("RS256") => Some(JwtAlg::Rs256),
                Some("ES256") => Some(JwtAlg::Es256),
                Some(other) => {
                    errs.at(
                        span.clone(),
                        ctx(&format!(
                            "signing_alg {other:?} must be \"RS256\" or \"ES256\""
                        )),
                    );
                    None
                }
            };
            if private_key.is_none() {
                errs.at(
                    span,
                    ctx("private_key is required when client_auth = \"private_key_jwt\""),
                );
            }
            private_key
                .zip(alg)
                .map(|(key, alg)| ClientAuth::PrivateKeyJwt {
                    key,
                    key_id: plain(&raw.key_id),
                    alg,
                })
        }
        Some((other, span)) => {
            errs.at(
                span,
                ctx(&format!(
                    "client_auth {other:?} must be basic, post, private_key_jwt or none"
                )),
            );
            None
        }
    };
    let needs_secret = matches!(client_auth, Some(ClientAuth::Basic | ClientAuth::Post))
        && !matches!(
            grant,
            Some(GrantSettings::Custom { .. } | GrantSettings::Capillary)
        );
    if needs_secret && raw.client_secret.is_none() && raw.client_id.is_some() {
        errs.at(span.clone(), ctx("client_secret is required for client_auth basic/post (or set client_auth = \"none\")"));
    }
    if needs_secret && raw.client_id.is_none() {
        errs.at(span.clone(), ctx("client_id is required"));
    }
    let tls_identity = match (tls_cert, tls_key) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        _ => {
            errs.at(
                span.clone(),
                ctx("tls_client_cert and tls_client_key go together: set both or neither"),
            );
            None
        }
    };
    let refresh_before = raw.refresh_before.unwrap_or(Duration::from_secs(60));
    let default_ttl = raw.default_ttl.unwrap_or(Duration::from_secs(300));
    if default_ttl.is_zero() {
        errs.at(span.clone(), ctx("default_ttl must be more than 0s"));
    }
    if errs.0.len() > before {
        return None;
    }
    Some(ClientSettings {
        name: name.to_string(),
        grant: grant?,
        token_url: token_url?,
        client_id,
        client_secret,
        client_auth: client_auth?,
        scopes: raw.scopes,
        audience,
        params,
        refresh_before,
        default_ttl,
        timeout: raw.timeout.unwrap_or(Duration::from_secs(10)),
        tls_identity,
    })
}

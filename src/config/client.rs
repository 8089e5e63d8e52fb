//! Config stage 2 for `[clients.*]`: grant-specific keys checked together,
//! with messages that say how to fix them.

use std::path::Path;
use std::time::Duration;

use toml::Spanned;

use super::diag::Errors;
use super::grant::GrantFields;
use super::model::*;
use super::raw::RawClient;
use crate::template::{Context, Template};

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
                // Opened, not just looked up: a secret mounted with modes
                // the sidekey user cannot read must fail here, not at the
                // first token request.
                for p in t.files() {
                    if let Err(e) = std::fs::File::open(p) {
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
    let grant_key = if raw.grant.get_ref() == "jwt_bearer" {
        private_key.clone()
    } else {
        None
    };
    let jwt_subject = field(&raw.subject, "subject", Context::ClientField);
    // Reported after `field`'s last use (it holds `errs`).
    let mut late_errs = Vec::new();
    let mut token_headers = Vec::new();
    for (k, v) in &raw.token_headers {
        let t = field(
            &Some(v.clone()),
            &format!("token_headers.{k}"),
            Context::ClientField,
        );
        match (http::HeaderName::from_bytes(k.as_bytes()), t) {
            (Ok(h), Some(t)) => token_headers.push((h, t)),
            (Err(_), _) => late_errs.push((
                v.span(),
                ctx(&format!("token_headers: {k:?} is not a valid header name")),
            )),
            _ => {}
        }
    }
    // Per-user accounts: the header naming the end user, as the subject
    // of an on-behalf-of client is named.
    let user = match raw.user.as_ref() {
        None => None,
        Some(u) => match Template::parse(u.get_ref(), Context::ClientField, env)
            .map_err(|e| e.to_string())
            .and_then(|t| {
                t.request_header()
                    .map(|h| h.map(str::to_string))
                    .map_err(|e| e.to_string())
            }) {
            Ok(Some(h)) => http::HeaderName::from_bytes(h.as_bytes()).ok(),
            Ok(None) => {
                late_errs.push((
                    u.span(),
                    ctx("user must be \"<<request.header.NAME>>\": the app's header naming the end user"),
                ));
                None
            }
            Err(e) => {
                late_errs.push((u.span(), ctx(&format!("user: {e}"))));
                None
            }
        },
    };
    let tls_cert = field(
        &raw.tls_client_cert,
        "tls_client_cert",
        Context::ClientField,
    );
    let tls_key = field(&raw.tls_client_key, "tls_client_key", Context::ClientField);
    let body = field(&raw.body, "body", Context::Body);
    let refresh_body = field(&raw.refresh_body, "refresh_body", Context::Body);
    let code_body = field(&raw.code_body, "code_body", Context::Body);
    // What a custom client can put in a body: its own fields, and in the
    // login's code exchange the code, redirect URI and PKCE verifier.
    let mut bad_fields = Vec::new();
    for (key, t, extra) in [
        ("body", &body, false),
        ("refresh_body", &refresh_body, false),
        ("code_body", &code_body, true),
    ] {
        let Some(t) = t else { continue };
        for f in t.client_fields() {
            let ok = matches!(
                f,
                "client_id" | "client_secret" | "refresh_token" | "scope" | "audience"
            ) || (extra && matches!(f, "auth_code" | "redirect_uri" | "code_verifier"));
            if !ok {
                bad_fields.push((key, f.to_string()));
            }
        }
    }
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
    for (key, f) in bad_fields {
        let span = match key {
            "body" => raw.body.as_ref(),
            "refresh_body" => raw.refresh_body.as_ref(),
            _ => raw.code_body.as_ref(),
        }
        .map_or(span.clone(), Spanned::span);
        errs.at(
            span,
            ctx(&format!(
                "{key}: <<client.{f}>> cannot be rendered for a custom client (it has client_id, client_secret, refresh_token, scope, audience{})",
                if key == "code_body" { ", and here auth_code, redirect_uri, code_verifier" } else { "" }
            )),
        );
    }
    // The app's request headers are the subject of an on-behalf-of
    // exchange, and nothing else.
    for (key, t) in [
        ("client_id", &client_id),
        ("client_secret", &client_secret),
        ("audience", &audience),
        ("username", &username),
        ("password", &password),
        ("refresh_token", &refresh_token),
        ("actor_token", &actor_token),
    ] {
        if t.as_ref().is_some_and(|t| t.request_header() != Ok(None)) {
            errs.at(
                span.clone(),
                ctx(&format!(
                    "{key}: <<request.header.*>> is only for subject_token"
                )),
            );
        }
    }
    let fields = GrantFields {
        username,
        password,
        refresh_token,
        subject_token,
        actor_token,
        body,
        refresh_body,
        code_body,
        private_key: grant_key,
        subject: jwt_subject,
    };
    for (span, msg) in late_errs {
        errs.at(span, msg);
    }
    let grant = super::grant::grant(name, &raw, fields, base, errs);

    let client_auth = match raw
        .client_auth
        .as_ref()
        .map(|a| (a.get_ref().as_str(), a.span()))
    {
        // A password-grant client without a secret is a public client
        // (cmem, Superblocks: the secret is optional there).
        None if matches!(
            raw.grant.get_ref().as_str(),
            "password" | "authorization_code" | "jwt_bearer"
        ) && raw.client_secret.is_none() =>
        {
            Some(ClientAuth::None)
        }
        None | Some(("basic", _)) => Some(ClientAuth::Basic),
        Some(("post", _)) => Some(ClientAuth::Post),
        Some(("client_secret_jwt", span)) => {
            if raw.client_secret.is_none() || raw.client_id.is_none() {
                errs.at(
                    span,
                    ctx("client_id and client_secret are required when client_auth = \"client_secret_jwt\""),
                );
            }
            Some(ClientAuth::ClientSecretJwt)
        }
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
                    "client_auth {other:?} must be basic, post, private_key_jwt, client_secret_jwt or none"
                )),
            );
            None
        }
    };
    let needs_secret = matches!(client_auth, Some(ClientAuth::Basic | ClientAuth::Post))
        && !matches!(
            grant,
            Some(
                GrantSettings::Custom { .. }
                    | GrantSettings::Capillary
                    | GrantSettings::JwtBearer { .. }
            )
        )
        // A per-user authorization-code client may be public (PKCE only).
        && !(matches!(grant, Some(GrantSettings::AuthorizationCode { .. }))
            && raw.client_secret.is_none());
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
    if let (
        Some(GrantSettings::Custom {
            code_body: None, ..
        }),
        Some(_),
    ) = (&grant, &user)
    {
        errs.at(
            span.clone(),
            ctx("a custom client with user needs code_body (the exchange of each user's authorization code)"),
        );
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
        authorize_params: raw.authorize_params.into_iter().collect(),
        user,
        token_headers,
        idle_after: raw.idle_after.unwrap_or(Duration::from_secs(3600)),
    })
}

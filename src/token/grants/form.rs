//! The standard form-encoded grants: client_credentials, password,
//! refresh_token (RFC 6749 §4.4, §4.3, §6) and token exchange (RFC 8693).

use crate::config::{ClientSettings, GrantSettings};
use crate::secret::Secret;
use crate::token::model::{FetchError, TokenResponse};

use super::client_auth;
use super::endpoint::{field, parse_oauth, send};
use super::idp_text::without_sent;
use super::refresh_state::RefreshState;

pub(crate) const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub(crate) const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

pub(crate) async fn fetch(
    http: &reqwest::Client,
    s: &ClientSettings,
    refresh: Option<&RefreshState>,
    subject: Option<&Secret>,
) -> Result<TokenResponse, FetchError> {
    let mut form: Vec<(String, Secret)> = Vec::new();
    let mut put = |k: &str, v: Secret| form.push((k.to_string(), v));
    match &s.grant {
        GrantSettings::ClientCredentials => put("grant_type", Secret::new("client_credentials")),
        GrantSettings::Password { username, password } => {
            put("grant_type", Secret::new("password"));
            put(
                "username",
                field(Some(username), "username")?.unwrap_or_default(),
            );
            put(
                "password",
                field(Some(password), "password")?.unwrap_or_default(),
            );
        }
        GrantSettings::RefreshToken { .. } => {
            let rt = refresh.and_then(RefreshState::current).ok_or_else(|| {
                FetchError::Setup(format!(
                    "client {:?} has no refresh token yet: run `sidekey login {}`",
                    s.name, s.name
                ))
            })?;
            put("grant_type", Secret::new("refresh_token"));
            put("refresh_token", rt);
        }
        GrantSettings::TokenExchange {
            subject_token,
            subject_token_type,
            requested_token_type,
            actor_token,
            actor_token_type,
            ..
        } => {
            put("grant_type", Secret::new(TOKEN_EXCHANGE));
            let subject = match subject {
                Some(s) => s.clone(),
                None => field(Some(subject_token), "subject_token")?.unwrap_or_default(),
            };
            put("subject_token", subject);
            put(
                "subject_token_type",
                Secret::new(subject_token_type.as_str()),
            );
            if let Some(t) = requested_token_type {
                put("requested_token_type", Secret::new(t.as_str()));
            }
            if let Some(a) = field(actor_token.as_ref(), "actor_token")? {
                put("actor_token", a);
                let ty = actor_token_type
                    .as_deref()
                    .unwrap_or("urn:ietf:params:oauth:token-type:jwt");
                put("actor_token_type", Secret::new(ty));
            }
        }
        GrantSettings::JwtBearer {
            key,
            key_id,
            alg,
            subject,
            audience,
        } => {
            // RFC 7523 §2.1 (Google and Salesforce service accounts): the
            // assertion is the grant; issuer client_id, subject `subject`.
            let id = field(s.client_id.as_ref(), "client_id")?
                .ok_or_else(|| FetchError::Setup("client_id is required".into()))?;
            let sub = field(subject.as_ref(), "subject")?.unwrap_or_else(|| id.clone());
            let key = field(Some(key), "private_key")?.unwrap_or_default();
            let aud = audience.as_deref().unwrap_or(s.token_url.as_str());
            let assertion = client_auth::signed(
                &client_auth::Claims::new(id.expose(), sub.expose(), aud),
                key.expose(),
                key_id.as_deref(),
                alg,
            )
            .map_err(|e| FetchError::Setup(format!("private_key: {e}")))?;
            put("grant_type", Secret::new(JWT_BEARER));
            put("assertion", Secret::new(assertion));
        }
        GrantSettings::Capillary
        | GrantSettings::Custom { .. }
        | GrantSettings::AuthorizationCode { .. }
        | GrantSettings::PasswordForm => return Err(FetchError::Setup("not a form grant".into())),
    }
    common(s, &mut form)?;
    post(http, s, form).await
}

/// The password grant with an end user's own credentials, typed once in
/// the login form of a per-user password client; neither is kept.
pub(crate) async fn password_login(
    http: &reqwest::Client,
    s: &ClientSettings,
    username: Secret,
    password: Secret,
) -> Result<TokenResponse, FetchError> {
    let mut form = vec![
        ("grant_type".to_string(), Secret::new("password")),
        ("username".to_string(), username),
        ("password".to_string(), password),
    ];
    common(s, &mut form)?;
    post(http, s, form).await
}

/// A refresh (RFC 6749 §6) for a grant that is not `refresh_token` itself
/// (the password grant's refresh token).
pub(crate) async fn refresh(
    http: &reqwest::Client,
    s: &ClientSettings,
    refresh_token: Secret,
) -> Result<TokenResponse, FetchError> {
    let mut form = vec![
        ("grant_type".to_string(), Secret::new("refresh_token")),
        ("refresh_token".to_string(), refresh_token),
    ];
    common(s, &mut form)?;
    post(http, s, form).await
}

/// Scopes, audience and extra params, as every form grant sends them.
fn common(s: &ClientSettings, form: &mut Vec<(String, Secret)>) -> Result<(), FetchError> {
    if !s.scopes.is_empty() {
        form.push(("scope".into(), Secret::new(s.scopes.join(" "))));
    }
    if let Some(aud) = field(s.audience.as_ref(), "audience")? {
        form.push(("audience".into(), aud));
    }
    for (k, t) in &s.params {
        let v = field(Some(t), &format!("params.{k}"))?.unwrap_or_default();
        form.push((k.clone(), v));
    }
    Ok(())
}

/// Exchanges an authorization code (with its PKCE verifier) for tokens:
/// the last step of `sidekey login` (RFC 6749 §4.1.3, RFC 7636 §4.5).
pub(crate) async fn exchange_code(
    http: &reqwest::Client,
    s: &ClientSettings,
    code: &str,
    verifier: &str,
    redirect_uri: &str,
) -> Result<TokenResponse, FetchError> {
    let form: Vec<(String, Secret)> = vec![
        ("grant_type".into(), Secret::new("authorization_code")),
        ("code".into(), Secret::new(code)),
        ("redirect_uri".into(), Secret::new(redirect_uri)),
        ("code_verifier".into(), Secret::new(verifier)),
    ];
    post(http, s, form).await
}

/// Authenticates the client, POSTs the form and reads the OAuth answer.
async fn post(
    http: &reqwest::Client,
    s: &ClientSettings,
    mut form: Vec<(String, Secret)>,
) -> Result<TokenResponse, FetchError> {
    let req = http
        .post(s.token_url.clone())
        .header("accept", "application/json");
    let req = client_auth::apply(s, req, &mut form)?;
    let req = super::endpoint::token_headers(s, req)?;
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form.iter().map(|(k, v)| (k.as_str(), v.expose())))
        .finish();
    let req = req
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body);
    let (status, body) = send(req).await?;
    parse_oauth(status, &body).map_err(|e| {
        let sent: Vec<&str> = form
            .iter()
            .filter(|(k, _)| SENT_SECRETS.contains(&k.as_str()))
            .map(|(_, v)| v.expose())
            .collect();
        // With client_secret_basic the secret went in a header, not the form.
        let secret = field(s.client_secret.as_ref(), "client_secret")
            .ok()
            .flatten();
        let secret = secret.as_ref().map(Secret::expose);
        without_sent(e, &[sent.as_slice(), secret.as_slice()].concat())
    })
}

/// Form fields whose values an endpoint's error text must never echo.
const SENT_SECRETS: &[&str] = &[
    "subject_token",
    "actor_token",
    "password",
    "refresh_token",
    "client_secret",
    "client_assertion",
    "code",
    "code_verifier",
];

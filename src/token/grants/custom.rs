//! `custom` token endpoints: a body template (JSON or form) and dotted
//! paths to the token, its lifetime and a rotated refresh token.

use crate::config::{ClientSettings, ContentType, GrantSettings};
use crate::secret::Secret;
use crate::template::BodyFormat;
use crate::token::model::{FetchError, TokenResponse};

use super::endpoint::{at_path, field, number, send};

pub(crate) async fn fetch(
    http: &reqwest::Client,
    s: &ClientSettings,
    refresh_token: Option<Secret>,
) -> Result<TokenResponse, FetchError> {
    let GrantSettings::Custom {
        body,
        content_type,
        token_path,
        expires_in_path,
        refresh_token_path,
        id_token_path,
        refresh_url,
        refresh_body,
        ..
    } = &s.grant
    else {
        return Err(FetchError::Setup("not a custom grant".into()));
    };
    // Once a refresh token is held, the refresh URL and body (Capacity's
    // "Refresh token url" / "Refresh token body"); the first body otherwise.
    let held = refresh_token.is_some();
    let (url, template, what) = match (held, refresh_url, refresh_body) {
        (true, url, Some(b)) => (url.as_ref().unwrap_or(&s.token_url), b, "refresh_body"),
        (true, Some(url), None) => (url, body, "body"),
        _ => (&s.token_url, body, "body"),
    };
    let rendered = render(s, template, what, *content_type, &|name| match name {
        "refresh_token" => refresh_token.clone(),
        _ => None,
    })?;
    let (status, body) = post_for(http, s, url.clone(), *content_type, rendered).await?;
    let resp = parse(
        status,
        &body,
        token_path,
        expires_in_path.as_ref(),
        refresh_token_path.as_ref(),
    )
    .map_err(|e| {
        let secret = field(s.client_secret.as_ref(), "client_secret")
            .ok()
            .flatten();
        let sent = [secret.as_ref(), refresh_token.as_ref()];
        let sent: Vec<&str> = sent.into_iter().flatten().map(Secret::expose).collect();
        super::idp_text::without_sent(e, &sent)
    })?;
    Ok(with_id_token(resp, &body, id_token_path.as_ref()))
}

/// The id_token at `id_token_path` of a successful answer, for
/// `<<oauth.idToken>>` and claims (which then come from it).
fn with_id_token(
    mut resp: TokenResponse,
    body: &[u8],
    path: Option<&Vec<String>>,
) -> TokenResponse {
    if let Some(path) = path {
        let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
        resp.id_token = json
            .as_ref()
            .and_then(|j| at_path(j, path))
            .and_then(|v| v.as_str())
            .filter(|v| !v.is_empty())
            .map(Secret::new);
    }
    resp
}

/// Renders a custom body, each value escaped for its content type. `extra`
/// supplies what only some bodies have (the refresh token, the login's
/// code); the client's own fields are looked up here.
pub(crate) fn render(
    s: &ClientSettings,
    template: &crate::template::Template,
    what: &str,
    content_type: ContentType,
    extra: &dyn Fn(&str) -> Option<Secret>,
) -> Result<Secret, FetchError> {
    let id = field(s.client_id.as_ref(), "client_id")?;
    let secret = field(s.client_secret.as_ref(), "client_secret")?;
    let lookup = |name: &str| -> Option<Secret> {
        match name {
            "client_id" => id.clone(),
            "client_secret" => secret.clone(),
            "scope" => Some(Secret::new(s.scopes.join(" "))),
            "audience" => s
                .audience
                .as_ref()
                .and_then(|a| a.render_value(&|_| None).ok()),
            other => extra(other),
        }
    };
    let format = match content_type {
        ContentType::Json => BodyFormat::Json,
        ContentType::Form => BodyFormat::Form,
    };
    template
        .render_body(&lookup, format)
        .map_err(|e| FetchError::Setup(format!("{what}: {e}")))
}

/// POSTs a rendered body with its content type and the client's
/// `token_headers`.
pub(crate) async fn post_for(
    http: &reqwest::Client,
    s: &ClientSettings,
    url: url::Url,
    content_type: ContentType,
    body: Secret,
) -> Result<(u16, bytes::Bytes), FetchError> {
    send(super::endpoint::token_headers(
        s,
        request(http, url, content_type, body),
    )?)
    .await
}

/// The last step of an authorization-code login (`sidekey login`, or a
/// per-user account's callback): a custom client's `code_body`, else the
/// standard form with the PKCE verifier.
pub(crate) async fn exchange_code(
    http: &reqwest::Client,
    s: &ClientSettings,
    code: &str,
    verifier: &str,
    redirect_uri: &str,
) -> Result<TokenResponse, FetchError> {
    let GrantSettings::Custom {
        code_body: Some(code_body),
        content_type,
        token_path,
        expires_in_path,
        refresh_token_path,
        ..
    } = &s.grant
    else {
        return super::form::exchange_code(http, s, code, verifier, redirect_uri).await;
    };
    let extra = |name: &str| match name {
        "auth_code" => Some(Secret::new(code)),
        "redirect_uri" => Some(Secret::new(redirect_uri)),
        "code_verifier" => Some(Secret::new(verifier)),
        _ => None,
    };
    let body = render(s, code_body, "code_body", *content_type, &extra)?;
    let (status, bytes) = post_for(http, s, s.token_url.clone(), *content_type, body).await?;
    parse(
        status,
        &bytes,
        token_path,
        expires_in_path.as_ref(),
        refresh_token_path.as_ref(),
    )
}

fn request(
    http: &reqwest::Client,
    url: url::Url,
    content_type: ContentType,
    body: Secret,
) -> reqwest::RequestBuilder {
    let mime = match content_type {
        ContentType::Json => "application/json",
        ContentType::Form => "application/x-www-form-urlencoded",
    };
    http.post(url)
        .header("accept", "application/json")
        .header("content-type", mime)
        .body(body.expose().to_string())
}

/// Reads a custom endpoint's JSON answer through the configured paths.
pub(crate) fn parse(
    status: u16,
    body: &[u8],
    token_path: &[String],
    expires_in_path: Option<&Vec<String>>,
    refresh_token_path: Option<&Vec<String>>,
) -> Result<TokenResponse, FetchError> {
    let json: serde_json::Value = match serde_json::from_slice(body) {
        Ok(j) => j,
        Err(_) if !(200..300).contains(&status) => return Err(FetchError::Status(status)),
        Err(_) => return Err(FetchError::BadResponse("body is not JSON".into())),
    };
    if let Some(e) = json.get("error").and_then(|e| e.as_str()) {
        return Err(FetchError::OAuth {
            status,
            error: e.chars().take(64).collect(),
            description: json
                .get("error_description")
                .and_then(|d| d.as_str())
                .map(super::idp_text::idp_text),
        });
    }
    if !(200..300).contains(&status) {
        return Err(FetchError::Status(status));
    }
    let token = at_path(&json, token_path)
        .and_then(|t| t.as_str())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            FetchError::BadResponse(format!("nothing at token_path {:?}", token_path.join(".")))
        })?;
    let str_at = |p: Option<&Vec<String>>| {
        p.and_then(|p| at_path(&json, p))
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    // Without expires_in_path, the standard top-level `expires_in` (RFC
    // 6749 §5.1) when the endpoint sends one, as most "custom" ones do.
    let expires_in = match expires_in_path {
        Some(p) => at_path(&json, p).and_then(number),
        None => json.get("expires_in").and_then(number),
    };
    Ok(TokenResponse {
        access_token: Secret::new(token),
        token_type: json
            .get("token_type")
            .and_then(|t| t.as_str())
            .map(str::to_string),
        expires_in,
        refresh_token: str_at(refresh_token_path).map(Secret::new),
        id_token: None,
        scope: None,
        not_after: None,
    })
}

//! `custom` token endpoints: a body template (JSON or form) and dotted
//! paths to the token, its lifetime and a rotated refresh token.

use crate::config::{ClientSettings, ContentType, GrantSettings};
use crate::secret::Secret;
use crate::token::model::{FetchError, TokenResponse};

use super::endpoint::{at_path, field, number, send};

pub async fn fetch(
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
        ..
    } = &s.grant
    else {
        return Err(FetchError::Setup("not a custom grant".into()));
    };
    let id = field(s.client_id.as_ref(), "client_id")?;
    let secret = field(s.client_secret.as_ref(), "client_secret")?;
    let lookup = |name: &str| -> Option<Secret> {
        match name {
            "client_id" => id.clone(),
            "client_secret" => secret.clone(),
            "refresh_token" => refresh_token.clone(),
            "scope" => Some(Secret::new(s.scopes.join(" "))),
            "audience" => s
                .audience
                .as_ref()
                .and_then(|a| a.render_value(&|_| None).ok()),
            _ => None,
        }
    };
    let rendered = body
        .render_value(&lookup)
        .map_err(|e| FetchError::Setup(format!("body: {e}")))?;
    let mime = match content_type {
        ContentType::Json => "application/json",
        ContentType::Form => "application/x-www-form-urlencoded",
    };
    let req = http
        .post(s.token_url.clone())
        .header("accept", "application/json")
        .header("content-type", mime)
        .body(rendered.expose().to_string());
    let (status, body) = send(req).await?;
    let json: serde_json::Value = match serde_json::from_slice(&body) {
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
                .map(|d| d.chars().take(200).collect()),
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
    let str_at = |p: &Option<Vec<String>>| {
        p.as_ref()
            .and_then(|p| at_path(&json, p))
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    Ok(TokenResponse {
        access_token: Secret::new(token),
        token_type: json
            .get("token_type")
            .and_then(|t| t.as_str())
            .map(str::to_string),
        expires_in: expires_in_path
            .as_ref()
            .and_then(|p| at_path(&json, p))
            .and_then(number),
        refresh_token: str_at(refresh_token_path).map(Secret::new),
        id_token: None,
        scope: None,
    })
}

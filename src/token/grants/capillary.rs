//! Capillary's token endpoint (`/v3/oauth/token/generate`): JSON
//! `{"key","secret"}` in, `data.accessToken` / `data.ttlSeconds` out, and
//! failures reported in `errors` (often with HTTP 200).

use crate::config::ClientSettings;
use crate::secret::Secret;
use crate::token::model::{FetchError, TokenResponse};

use super::endpoint::{field, number, send};

pub(super) async fn fetch(
    http: &reqwest::Client,
    s: &ClientSettings,
) -> Result<TokenResponse, FetchError> {
    let key = field(s.client_id.as_ref(), "client_id")?.unwrap_or_default();
    let secret = field(s.client_secret.as_ref(), "client_secret")?.unwrap_or_default();
    let body = serde_json::json!({ "key": key.expose(), "secret": secret.expose() });
    let req = http
        .post(s.token_url.clone())
        .header("accept", "application/json")
        .json(&body);
    let (status, body) = send(super::endpoint::token_headers(s, req)?).await?;
    parse(status, &body).map_err(|e| super::idp_text::without_sent(e, &[secret.expose()]))
}

fn parse(status: u16, body: &[u8]) -> Result<TokenResponse, FetchError> {
    let json: serde_json::Value = match serde_json::from_slice(body) {
        Ok(j) => j,
        Err(_) if !(200..300).contains(&status) => return Err(FetchError::Status(status)),
        Err(_) => return Err(FetchError::BadResponse("body is not JSON".into())),
    };
    if let Some(errors) = json.get("errors").filter(|e| !e.is_null()) {
        // Capillary reports `[{"code":…, "message":…}]`; keep code and message only.
        let first = errors.as_array().and_then(|a| a.first()).unwrap_or(errors);
        let code = first
            .get("code")
            .map(|c| c.to_string())
            .unwrap_or_else(|| "error".into());
        let message = first
            .get("message")
            .and_then(|m| m.as_str())
            .map(super::idp_text::idp_text);
        return Err(FetchError::OAuth {
            status,
            error: code.chars().take(64).collect(),
            description: message,
        });
    }
    if !(200..300).contains(&status) {
        return Err(FetchError::Status(status));
    }
    let data = json.get("data");
    let token = data
        .and_then(|d| d.get("accessToken"))
        .and_then(|t| t.as_str())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| FetchError::BadResponse("no data.accessToken".into()))?;
    Ok(TokenResponse {
        access_token: Secret::new(token),
        token_type: Some("Bearer".into()),
        expires_in: data.and_then(|d| d.get("ttlSeconds")).and_then(number),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_capillary_shapes() {
        let ok = parse(
            200,
            br#"{"data":{"accessToken":"t","ttlSeconds":900},"errors":null}"#,
        )
        .unwrap();
        assert_eq!((ok.access_token.expose(), ok.expires_in), ("t", Some(900)));
        let err = parse(
            200,
            br#"{"data":null,"errors":[{"code":1001,"message":"Invalid key"}]}"#,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "token endpoint answered HTTP 200: 1001 (\"Invalid key\")"
        );
        assert!(matches!(
            parse(200, br#"{"data":{}}"#),
            Err(FetchError::BadResponse(_))
        ));
        assert!(matches!(parse(500, b"oops"), Err(FetchError::Status(500))));
    }
}

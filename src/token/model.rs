//! What a token endpoint gives and what the cache keeps: the raw answer,
//! the cached `Token` with its expiry worked out, and why a fetch failed.

use std::time::Duration;

use tokio::time::Instant;

use super::jwt;
use super::store::{unix_ms, Provenance, Stored};
use crate::secret::Secret;
use crate::template::TokenView;

/// What a token endpoint returned, before expiry is worked out.
#[derive(Debug, Clone, Default)]
pub struct TokenResponse {
    pub access_token: Secret,
    pub token_type: Option<String>,
    pub expires_in: Option<u64>,
    pub refresh_token: Option<Secret>,
    pub id_token: Option<Secret>,
    pub scope: Option<String>,
    /// The token must not outlive this (an on-behalf-of subject's `exp`).
    pub not_after: Option<Duration>,
}

/// Longest lifetime believed from a token response: a larger `expires_in`
/// (or a JWT `exp` decades out) is taken as this, so the token is still
/// refreshed now and then and no expiry arithmetic can overflow.
pub(crate) const MAX_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

/// A cached access token.
#[derive(Debug)]
pub struct Token {
    access: Secret,
    token_type: String,
    id_token: Option<Secret>,
    /// Claims of the id_token, else of the access token if it is a JWT.
    claims: Option<serde_json::Value>,
    pub scopes: Vec<String>,
    pub issued_at: Instant,
    pub expires_at: Instant,
    /// Where it came from, for `/tokens`.
    pub provenance: Provenance,
}

impl Token {
    /// Works out expiry: `expires_in`, else the JWT `exp`, else `default_ttl`,
    /// clamped to `MAX_LIFETIME`. A token that is already expired on arrival
    /// (`expires_in: 0`, a past `exp`) is a failed fetch, never injected.
    pub fn from_response(resp: TokenResponse, default_ttl: Duration) -> Result<Self, FetchError> {
        let now = Instant::now();
        let access_claims = jwt::claims(resp.access_token.expose());
        let lifetime = match resp.expires_in {
            Some(secs) => Duration::from_secs(secs),
            None => access_claims
                .as_ref()
                .and_then(jwt::remaining)
                .unwrap_or(default_ttl),
        }
        .min(MAX_LIFETIME)
        .min(resp.not_after.unwrap_or(MAX_LIFETIME));
        if lifetime.is_zero() {
            return Err(FetchError::BadResponse(
                "the token is already expired on arrival (expires_in 0 or a past JWT exp)".into(),
            ));
        }
        // `checked_add` as well as the clamp: Instant's range is the
        // platform's, and an IdP's number must never be able to panic us.
        let expires_at = now.checked_add(lifetime).ok_or_else(|| {
            FetchError::BadResponse("the token's lifetime is out of range".into())
        })?;
        let claims = resp
            .id_token
            .as_ref()
            .and_then(|t| jwt::claims(t.expose()))
            .or(access_claims);
        Ok(Self {
            access: resp.access_token,
            token_type: resp
                .token_type
                .filter(|t| !t.is_empty())
                .map(|t| {
                    if t.eq_ignore_ascii_case("bearer") {
                        "Bearer".into()
                    } else {
                        t
                    }
                })
                .unwrap_or_else(|| "Bearer".into()),
            id_token: resp.id_token,
            claims,
            scopes: resp
                .scope
                .map(|s| s.split_whitespace().map(str::to_string).collect())
                .unwrap_or_default(),
            issued_at: now,
            expires_at,
            provenance: Provenance::Fetched,
        })
    }

    /// A token another replica (or an earlier run) stored; `None` once it
    /// has expired. Issue and expiry times carry over, so every replica
    /// refreshes at the same point of its life.
    pub fn from_stored(s: Stored, provenance: Provenance) -> Option<Self> {
        let now_ms = unix_ms();
        let left = Duration::from_millis(s.expires_unix_ms.checked_sub(now_ms).filter(|l| *l > 0)?);
        let age = Duration::from_millis(now_ms.saturating_sub(s.issued_unix_ms));
        let now = Instant::now();
        let claims = s
            .id_token
            .as_deref()
            .and_then(jwt::claims)
            .or_else(|| jwt::claims(&s.access_token));
        Some(Self {
            access: Secret::new(s.access_token),
            token_type: s.token_type,
            id_token: s.id_token.map(Secret::new),
            claims,
            scopes: s.scopes,
            issued_at: now.checked_sub(age).unwrap_or(now),
            expires_at: now.checked_add(left.min(MAX_LIFETIME))?,
            provenance,
        })
    }

    /// What the store keeps of this token.
    pub fn to_stored(&self) -> Stored {
        let now_ms = unix_ms();
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Stored {
            access_token: self.access.expose().to_string(),
            token_type: self.token_type.clone(),
            id_token: self.id_token.as_ref().map(|t| t.expose().to_string()),
            scopes: self.scopes.clone(),
            issued_unix_ms: now_ms.saturating_sub(ms(self.issued_at.elapsed())),
            expires_unix_ms: now_ms.saturating_add(ms(self.expires_in())),
        }
    }

    pub fn lifetime(&self) -> Duration {
        self.expires_at - self.issued_at
    }

    pub fn expires_in(&self) -> Duration {
        self.expires_at.saturating_duration_since(Instant::now())
    }

    pub fn is_valid(&self) -> bool {
        Instant::now() < self.expires_at
    }

    pub fn secret(&self) -> &Secret {
        &self.access
    }
}

impl TokenView for Token {
    fn access_token(&self) -> &str {
        self.access.expose()
    }
    fn token_type(&self) -> &str {
        &self.token_type
    }
    fn id_token(&self) -> Option<&str> {
        self.id_token.as_ref().map(Secret::expose)
    }
    fn claim(&self, path: &[String]) -> Option<String> {
        crate::template::claim_at(self.claims.as_ref()?, path)
    }
}

/// Why a token could not be had. Messages name the client and what the
/// endpoint said, never a secret or a response body.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchError {
    #[error("token endpoint unreachable: {0}")]
    Transport(String),
    #[error("token endpoint did not answer within {0:?}")]
    Timeout(Duration),
    // The endpoint's own words are JSON-escaped, also in text logs, so a
    // CR/LF in them cannot forge a log line (SPEC "Egress safety").
    #[error("token endpoint answered HTTP {status}: {}{}", escaped_code(error), description.as_deref().map(|d| format!(" ({})", json_quoted(d))).unwrap_or_default())]
    OAuth {
        status: u16,
        error: String,
        description: Option<String>,
    },
    #[error("token endpoint answered HTTP {0}")]
    Status(u16),
    #[error("token response is not usable: {0}")]
    BadResponse(String),
    #[error("{0}")]
    Setup(String),
}

/// `s` as a JSON string literal: quotes, backslashes and control
/// characters escaped.
fn json_quoted(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// An RFC 6749 error code is printable ASCII without `"` and `\\`: shown
/// bare; anything else is shown JSON-quoted.
fn escaped_code(code: &str) -> String {
    if code
        .chars()
        .all(|c| matches!(c, ' '..='~') && c != '"' && c != '\\')
    {
        code.to_string()
    } else {
        json_quoted(code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn jwt_with_exp(secs_from_now: u64) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let payload = format!(r#"{{"exp":{}}}"#, now + secs_from_now);
        format!(
            "{}.{}.sig",
            e.encode(r#"{"alg":"RS256"}"#),
            e.encode(payload)
        )
    }

    #[tokio::test]
    async fn expiry_from_expires_in_then_jwt_exp_then_default_ttl() {
        let ttl = Duration::from_secs(300);
        let resp = |access: String, expires_in| TokenResponse {
            access_token: Secret::new(access),
            expires_in,
            ..Default::default()
        };
        let t = Token::from_response(resp(jwt_with_exp(120), Some(60)), ttl).unwrap();
        assert_eq!(t.lifetime().as_secs(), 60, "expires_in wins");
        let t = Token::from_response(resp(jwt_with_exp(120), None), ttl).unwrap();
        assert!(
            (118..=120).contains(&t.lifetime().as_secs()),
            "JWT exp next"
        );
        let t = Token::from_response(resp("opaque".into(), None), ttl).unwrap();
        assert_eq!(t.lifetime(), ttl, "default_ttl last");
        assert_eq!(t.token_type(), "Bearer");
    }

    #[tokio::test]
    async fn huge_lifetimes_are_clamped_and_expired_tokens_refused() {
        let ttl = Duration::from_secs(300);
        let resp = |access: String, expires_in| TokenResponse {
            access_token: Secret::new(access),
            expires_in,
            ..Default::default()
        };
        // Used to panic computing `now + lifetime`.
        let t = Token::from_response(resp("opaque".into(), Some(u64::MAX)), ttl).unwrap();
        assert_eq!(t.lifetime(), MAX_LIFETIME);
        let t = Token::from_response(resp(jwt_with_exp(u64::MAX / 2), None), ttl).unwrap();
        assert_eq!(t.lifetime(), MAX_LIFETIME);
        let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let near_max = format!(
            "{}.{}.sig",
            e.encode("{}"),
            e.encode(format!(r#"{{"exp":{}}}"#, i64::MAX))
        );
        assert!(Token::from_response(resp(near_max, None), ttl).is_ok());
        // Expired on arrival: a failed fetch, never a token.
        assert!(matches!(
            Token::from_response(resp("opaque".into(), Some(0)), ttl),
            Err(FetchError::BadResponse(_))
        ));
        let past = format!("{}.{}.sig", e.encode("{}"), e.encode(r#"{"exp":1000}"#));
        assert!(Token::from_response(resp(past, None), ttl).is_err());
    }
}

//! The reference oracle for `token_response`: what SPEC "Tokens" says an
//! answer must give, worked out without the parsers; and the raw
//! `Token::from_response` check.

use std::time::Duration;

use super::token_response::Grant;
use super::{finding, Finding};
use crate::secret::Secret;
use crate::template::TokenView;
use crate::token::model::MAX_LIFETIME;
use crate::token::{Token, TokenResponse};

/// What SPEC says an answer must give, worked out independently of the
/// parsers.
pub(super) enum Expect {
    Token {
        access: String,
        lifetime: Option<Duration>,
    },
    /// The answer states a lifetime that is already over.
    Expired(String),
    Failure(String),
    TooLarge,
    /// Not worth an opinion (e.g. a JWT whose `exp` is about now).
    Unknown,
}

fn at_path<'a>(v: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    path.split('.').try_fold(v, |v, p| match v {
        serde_json::Value::Array(a) => a.get(p.parse::<usize>().ok()?),
        _ => v.get(p),
    })
}

pub(super) fn expectation(
    grant: Grant,
    token_path: &str,
    expires_in_path: &str,
    status: u16,
    body: &[u8],
) -> Expect {
    if body.len() > crate::token::grants::endpoint::MAX_TOKEN_RESPONSE {
        return Expect::TooLarge;
    }
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Expect::Failure("the body is not JSON".into());
    };
    if !(200..300).contains(&status) {
        return Expect::Failure(format!("HTTP {status}"));
    }
    let (token, expires) = match grant {
        Grant::OAuth => {
            if json.get("error").is_some_and(serde_json::Value::is_string) {
                return Expect::Failure("an OAuth error".into());
            }
            (json.get("access_token"), json.get("expires_in"))
        }
        Grant::Capillary => {
            if json.get("errors").is_some_and(|e| !e.is_null()) {
                return Expect::Failure("Capillary errors".into());
            }
            let data = json.get("data");
            (
                data.and_then(|d| d.get("accessToken")),
                data.and_then(|d| d.get("ttlSeconds")),
            )
        }
        Grant::Custom => {
            if json.get("error").is_some_and(serde_json::Value::is_string) {
                return Expect::Failure("an OAuth-style error".into());
            }
            (
                at_path(&json, token_path),
                (!expires_in_path.is_empty())
                    .then(|| at_path(&json, expires_in_path))
                    .flatten(),
            )
        }
    };
    let Some(access) = token
        .and_then(serde_json::Value::as_str)
        .filter(|t| !t.is_empty())
    else {
        return Expect::Failure("no token in the answer".into());
    };
    // A lifetime the answer states: a number, or a number in a string.
    let stated: Option<f64> = expires.and_then(|v| match v {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(s) => s.trim().parse::<f64>().ok().filter(|f| f.is_finite()),
        _ => None,
    });
    match stated {
        Some(secs) if secs < 1.0 => Expect::Expired(format!("expires_in {secs}")),
        Some(secs) => Expect::Token {
            access: access.to_string(),
            lifetime: Some(Duration::from_secs_f64(
                secs.min(MAX_LIFETIME.as_secs_f64()),
            )),
        },
        None => match jwt_exp(access) {
            Some(exp) => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64());
                if exp < now - 5.0 {
                    Expect::Expired(format!("a JWT exp {exp} in the past"))
                } else if exp > now + 5.0 {
                    Expect::Token {
                        access: access.to_string(),
                        lifetime: Some(Duration::from_secs_f64(
                            (exp - now).min(MAX_LIFETIME.as_secs_f64()),
                        )),
                    }
                } else {
                    Expect::Unknown
                }
            }
            None => Expect::Token {
                access: access.to_string(),
                lifetime: None,
            },
        },
    }
}

/// The `exp` of a JWT-shaped token (three dot-separated parts, the middle
/// one base64url JSON), as RFC 7519 defines it: any JSON number.
fn jwt_exp(token: &str) -> Option<f64> {
    use base64::Engine;
    let parts: Vec<&str> = token.split('.').collect();
    let [_, payload, _] = parts.as_slice() else {
        return None;
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v.as_object()?.get("exp")?.as_f64()
}

/// A raw `TokenResponse` (as a grant would hand it over) into a `Token`:
/// `expires_in`, else the JWT `exp`, else `default_ttl`; never a panic,
/// never a token that is already expired.
pub fn token_from_response(
    access: &str,
    expires_in: Option<u64>,
    id_token: Option<&str>,
) -> Result<(), Finding> {
    let resp = TokenResponse {
        access_token: Secret::new(access),
        expires_in,
        id_token: id_token.map(Secret::new),
        ..TokenResponse::default()
    };
    if let Ok(t) = Token::from_response(resp, Duration::from_secs(300)) {
        if t.lifetime().is_zero() || t.lifetime() > MAX_LIFETIME {
            return finding("token_lifetime_out_of_range", format!("{:?}", t.lifetime()));
        }
        let _ = t.claim(&["a".into(), "b".into()]);
    }
    Ok(())
}

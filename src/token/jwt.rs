//! Reading (not verifying) JWT payloads: the `exp` of a JWT access token
//! and the claims behind `<<oauth.tokenDecoded.*>>`. sidekey is the token's
//! holder, not its audience, so it has no key to verify with and needs none.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;

/// The payload of a compact JWS, if `token` is one.
pub(super) fn claims(token: &str) -> Option<serde_json::Value> {
    let mut parts = token.split('.');
    let (_header, payload, _sig) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v.is_object().then_some(v)
}

/// Time left until the `exp` claim.
/// Time left until the `exp` claim. A NumericDate may have a fraction
/// (RFC 7519 §2) or be in the past (even negative): then nothing is left.
pub(super) fn remaining(claims: &serde_json::Value) -> Option<Duration> {
    let exp = claims.get("exp")?.as_f64().filter(|e| e.is_finite())?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()?
        .as_secs_f64();
    Some(Duration::try_from_secs_f64((exp - now).max(0.0)).unwrap_or(Duration::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(payload: &str) -> String {
        let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "{}.{}.sig",
            e.encode(r#"{"alg":"none"}"#),
            e.encode(payload)
        )
    }

    #[test]
    fn reads_claims_and_exp() {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let c = claims(&jwt(&format!(
            r#"{{"exp":{},"org":{{"id":"7"}}}}"#,
            now + 100
        )))
        .unwrap();
        assert_eq!(c["org"]["id"], "7");
        let left = remaining(&c).unwrap().as_secs();
        assert!((98..=100).contains(&left), "{left}");
        assert!(claims("opaque-token").is_none());
        assert!(claims("a.b.c").is_none());
    }
}

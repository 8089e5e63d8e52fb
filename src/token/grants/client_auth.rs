//! Client authentication at the token endpoint: client_secret_basic,
//! client_secret_post, none, and private_key_jwt (RFC 7523 §2.2).

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;

use crate::config::{ClientAuth, ClientSettings, JwtAlg};
use crate::secret::Secret;
use crate::token::model::FetchError;

use super::endpoint::{field, pem_or_path};

pub(crate) const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Adds the client's credentials to the request or to its form.
pub(crate) fn apply(
    s: &ClientSettings,
    req: reqwest::RequestBuilder,
    form: &mut Vec<(String, Secret)>,
) -> Result<reqwest::RequestBuilder, FetchError> {
    let id = field(s.client_id.as_ref(), "client_id")?;
    match &s.client_auth {
        ClientAuth::Basic => {
            let (Some(id), Some(secret)) = (id, field(s.client_secret.as_ref(), "client_secret")?)
            else {
                return Err(FetchError::Setup(
                    "client_id and client_secret are required".into(),
                ));
            };
            // RFC 6749 §2.3.1: both parts are form-urlencoded before base64.
            let enc =
                |v: &str| url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>();
            let raw = format!("{}:{}", enc(id.expose()), enc(secret.expose()));
            let b64 = base64::engine::general_purpose::STANDARD.encode(raw);
            Ok(req.header("authorization", format!("Basic {b64}")))
        }
        ClientAuth::Post => {
            if let Some(id) = id {
                form.push(("client_id".into(), id));
            }
            if let Some(secret) = field(s.client_secret.as_ref(), "client_secret")? {
                form.push(("client_secret".into(), secret));
            }
            Ok(req)
        }
        ClientAuth::None => {
            if let Some(id) = id {
                form.push(("client_id".into(), id));
            }
            Ok(req)
        }
        ClientAuth::ClientSecretJwt => {
            // RFC 7523 §2.2 with an HMAC key (OIDC Core §9 client_secret_jwt).
            let id = id.ok_or_else(|| FetchError::Setup("client_id is required".into()))?;
            let secret = field(s.client_secret.as_ref(), "client_secret")?
                .ok_or_else(|| FetchError::Setup("client_secret is required".into()))?;
            let claims = Claims::new(id.expose(), id.expose(), s.token_url.as_str());
            let key = jsonwebtoken::EncodingKey::from_secret(secret.expose().as_bytes());
            let assertion = jsonwebtoken::encode(
                &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
                &claims,
                &key,
            )
            .map_err(|e| FetchError::Setup(format!("client_secret_jwt: {e}")))?;
            form.push(("client_id".into(), id));
            form.push(("client_assertion_type".into(), Secret::new(ASSERTION_TYPE)));
            form.push(("client_assertion".into(), Secret::new(assertion)));
            Ok(req)
        }
        ClientAuth::PrivateKeyJwt { key, key_id, alg } => {
            let id = id.ok_or_else(|| FetchError::Setup("client_id is required".into()))?;
            let key = field(Some(key), "private_key")?.unwrap_or_default();
            let assertion = assertion(
                id.expose(),
                s.token_url.as_str(),
                key.expose(),
                key_id.as_deref(),
                alg,
            )
            .map_err(|e| FetchError::Setup(format!("private_key: {e}")))?;
            form.push(("client_id".into(), id));
            form.push(("client_assertion_type".into(), Secret::new(ASSERTION_TYPE)));
            form.push(("client_assertion".into(), Secret::new(assertion)));
            Ok(req)
        }
    }
}

#[derive(serde::Serialize)]
pub(crate) struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    jti: String,
    iat: u64,
    exp: u64,
}

impl<'a> Claims<'a> {
    /// Fresh claims: `jti` unique per request, `exp` one minute out, so a
    /// captured assertion is useless soon.
    pub(crate) fn new(iss: &'a str, sub: &'a str, aud: &'a str) -> Self {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Self {
            iss,
            sub,
            aud,
            jti: uuid::Uuid::new_v4().to_string(),
            iat: now,
            exp: now + 60,
        }
    }
}

/// The JWT header (`alg`, `kid`) and the key for a PEM key (text or path).
fn signing_key(
    key: &str,
    key_id: Option<&str>,
    alg: &JwtAlg,
) -> Result<(jsonwebtoken::Header, jsonwebtoken::EncodingKey), String> {
    let pem = pem_or_path(key, "the key").map_err(|e| e.to_string())?;
    let (alg, key) = match alg {
        JwtAlg::Rs256 => (
            jsonwebtoken::Algorithm::RS256,
            jsonwebtoken::EncodingKey::from_rsa_pem(pem.as_bytes()).map_err(|e| e.to_string())?,
        ),
        JwtAlg::Es256 => (
            jsonwebtoken::Algorithm::ES256,
            jsonwebtoken::EncodingKey::from_ec_pem(pem.as_bytes()).map_err(|e| e.to_string())?,
        ),
    };
    let mut header = jsonwebtoken::Header::new(alg);
    header.kid = key_id.map(str::to_string);
    Ok((header, key))
}

/// Signs `claims` with a PEM key (text or path).
pub(crate) fn signed(
    claims: &Claims<'_>,
    key: &str,
    key_id: Option<&str>,
    alg: &JwtAlg,
) -> Result<String, String> {
    let (header, key) = signing_key(key, key_id, alg)?;
    jsonwebtoken::encode(&header, claims, &key).map_err(|e| e.to_string())
}

/// A fresh, short-lived client assertion: `jti` is unique per request and
/// `exp` is one minute out, so a captured assertion is useless soon.
pub(crate) fn assertion(
    client_id: &str,
    audience: &str,
    key: &str,
    key_id: Option<&str>,
    alg: &JwtAlg,
) -> Result<String, String> {
    let (header, key) = signing_key(key, key_id, alg)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs();
    let claims = Claims {
        iss: client_id,
        sub: client_id,
        aud: audience,
        jti: uuid::Uuid::new_v4().to_string(),
        iat: now,
        exp: now + 60,
    };
    jsonwebtoken::encode(&header, &claims, &key).map_err(|e| e.to_string())
}

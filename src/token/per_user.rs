//! On-behalf-of: a token-exchange client whose subject is the user's own
//! token, taken from the app's request (`<<request.header.NAME>>`). Each
//! user gets their own cache slot, keyed by a digest of their token (never
//! the token), so singleflight, refresh-ahead and backoff hold per user:
//! one user's rejected token slows nobody else. The slots are bounded
//! (least recently used out), and a token never outlives the subject's
//! own `exp` when the subject is a JWT.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use http::HeaderName;
use lru::LruCache;
use sha2::Digest;

use super::cache::{FetchToken, Slot};
use super::grants::Fetcher;
use super::jwt;
use super::model::{FetchError, TokenResponse};
use crate::config::ClientSettings;
use crate::metrics::Metrics;
use crate::secret::Secret;

type SubjectKey = [u8; 32];

pub struct PerUser {
    pub settings: Arc<ClientSettings>,
    header: HeaderName,
    fetcher: Arc<Fetcher>,
    metrics: Arc<Metrics>,
    slots: Mutex<LruCache<SubjectKey, Arc<Slot>>>,
}

/// Why a request has no subject to exchange.
#[derive(Debug, thiserror::Error)]
pub enum SubjectError {
    #[error("the request has no {0} header with the user's token")]
    Missing(HeaderName),
    #[error("the user's token in {0} has expired")]
    Expired(HeaderName),
}

impl PerUser {
    pub fn new(
        settings: Arc<ClientSettings>,
        header: HeaderName,
        max_subjects: usize,
        fetcher: Fetcher,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        let cap = NonZeroUsize::new(max_subjects).unwrap_or(NonZeroUsize::MIN);
        Arc::new(Self {
            settings,
            header,
            fetcher: Arc::new(fetcher),
            metrics,
            slots: Mutex::new(LruCache::new(cap)),
        })
    }

    /// The header the user's token comes in; it never goes upstream as is.
    pub fn header(&self) -> &HeaderName {
        &self.header
    }

    /// The cache slot of the user whose header value is `value`, made on
    /// first sight. Only a `Bearer` credential is a subject (scheme
    /// stripped); see [`bearer`].
    pub fn slot(&self, value: Option<&http::HeaderValue>) -> Result<Arc<Slot>, SubjectError> {
        let subject = value
            .and_then(|v| v.to_str().ok())
            .and_then(|v| bearer(&self.header, v))
            .filter(|s| !s.is_empty())
            .ok_or_else(|| SubjectError::Missing(self.header.clone()))?;
        let not_after = match jwt::claims(subject).as_ref().and_then(jwt::remaining) {
            Some(left) if left.is_zero() => return Err(SubjectError::Expired(self.header.clone())),
            left => left,
        };
        let key: SubjectKey = sha2::Sha256::digest(subject.as_bytes()).into();
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = slots.get(&key) {
            return Ok(Arc::clone(slot));
        }
        let fetch = Subject {
            fetcher: Arc::clone(&self.fetcher),
            subject: Secret::new(subject),
            not_after,
        };
        let slot = Slot::on_demand(
            Arc::clone(&self.settings),
            Box::new(fetch),
            Arc::clone(&self.metrics),
        );
        slots.put(key, Arc::clone(&slot));
        Ok(slot)
    }

    /// Users with a cached slot (for `/tokens`: counts only).
    pub fn subjects(&self) -> usize {
        self.slots.lock().map_or(0, |s| s.len())
    }

    pub fn max_subjects(&self) -> usize {
        self.slots.lock().map_or(0, |s| s.cap().get())
    }
}

/// The subject in a header value: `Bearer abc` -> `abc`. Any other scheme
/// (`Basic user:password`, `Digest ...`) is no subject at all: sending it
/// to the IdP would hand a user's password to a third party. A value
/// without a scheme is a bare token in a custom header (`X-User-Token`),
/// but never in `Authorization`, whose credentials always carry a scheme
/// (RFC 9110 §11.4).
fn bearer<'a>(header: &HeaderName, v: &'a str) -> Option<&'a str> {
    let v = v.trim();
    match v.split_once([' ', '\t']) {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => Some(rest.trim()),
        Some(_) => None,
        None if header == http::header::AUTHORIZATION
            || header == http::header::PROXY_AUTHORIZATION =>
        {
            None
        }
        None => Some(v),
    }
}

/// Fetches for one user: their token is the exchange's subject.
struct Subject {
    fetcher: Arc<Fetcher>,
    subject: Secret,
    /// Time left on the subject's own `exp`, when it is a JWT.
    not_after: Option<Duration>,
}

impl FetchToken for Subject {
    fn fetch<'a>(
        &'a self,
        s: &'a ClientSettings,
    ) -> BoxFuture<'a, Result<TokenResponse, FetchError>> {
        Box::pin(async move {
            let started = tokio::time::Instant::now();
            let mut resp = self.fetcher.request_for(s, Some(&self.subject)).await?;
            resp.not_after = self.not_after.map(|d| d.saturating_sub(started.elapsed()));
            Ok(resp)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_bearer_credential_is_a_subject() {
        let auth = http::header::AUTHORIZATION;
        let custom = HeaderName::from_static("x-user-token");
        assert_eq!(bearer(&auth, "Bearer abc"), Some("abc"));
        assert_eq!(bearer(&auth, "bearer  abc "), Some("abc"));
        assert_eq!(bearer(&custom, "Bearer abc"), Some("abc"));
        assert_eq!(bearer(&custom, "abc"), Some("abc"));
        for other in [
            "Basic dXNlcjpwYXNz",
            "Digest username=\"u\"",
            "Negotiate abc",
        ] {
            assert_eq!(bearer(&auth, other), None, "{other}");
            assert_eq!(bearer(&custom, other), None, "{other}");
        }
        // Authorization credentials always name their scheme.
        assert_eq!(bearer(&auth, "dXNlcjpwYXNz"), None);
    }
}

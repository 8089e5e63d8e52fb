//! What a slot tells and notices about itself: its state for `/tokens`
//! (never a token), and secret files that changed under its token.

use tokio::time::Instant;

use super::Slot;
use crate::config::ClientSettings;

impl Slot {
    /// A secret file of this client changed (a rotated Kubernetes Secret,
    /// a new projected token): the cached token was made from the old one,
    /// so it is dropped and the next request fetches with the new.
    /// Returns whether anything changed.
    pub fn check_files(&self) -> bool {
        if self.settings.files().is_empty() {
            return false;
        }
        let now = files_digest(&self.settings);
        let mut seen = self.files.lock().unwrap_or_else(|p| p.into_inner());
        if *seen == now {
            return false;
        }
        *seen = now;
        drop(seen);
        let mut st = self.lock();
        st.current = None;
        st.retry_at = None;
        st.failures = 0;
        drop(st);
        tracing::info!(client = %self.settings.name, "a secret file of this client changed: the next request fetches a new token");
        true
    }

    /// What `/tokens` shows of this client: never the token itself.
    pub fn status(&self) -> serde_json::Value {
        let st = self.lock();
        let valid = st.current.as_ref().filter(|t| t.is_valid());
        let now = Instant::now();
        let state = match (valid, &st.inflight, st.retry_at) {
            (Some(_), _, _) => "valid",
            (None, Some(_), _) => "fetching",
            (None, None, Some(at)) if at > now => "failing",
            (None, None, _) if st.current.is_some() => "expired",
            _ => "empty",
        };
        serde_json::json!({
            "grant": self.settings.grant.name(),
            "state": state,
            "expires_in_seconds": valid.map(|t| t.expires_in().as_secs()),
            "scopes": valid.map(|t| t.scopes.clone()),
            "source": valid.map(|t| t.provenance.as_str()),
            "last_error": st.last_error.as_ref().map(ToString::to_string),
            "retry_in_seconds": st.retry_at.filter(|at| *at > now).map(|at| (at - now).as_secs_f64()),
            "fetches": { "ok": st.fetched_ok, "error": st.fetched_err },
        })
    }
}

/// Digest of the contents of a client's files (an unreadable file hashes
/// as such, so its coming back counts as a change).
pub(super) fn files_digest(settings: &ClientSettings) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for path in settings.files() {
        match std::fs::read(&path) {
            Ok(bytes) => bytes.hash(&mut h),
            Err(e) => e.kind().hash(&mut h),
        }
    }
    h.finish()
}

//! A slot's fetch with `[store]`: read the store first; else one replica
//! at a time fetches (a lock in the store) while the others wait a bounded
//! time for its token; the refresh token in the store is the current one
//! and is replaced by compare-and-set. Whatever the store does, the slot
//! ends up with a token or an endpoint error, never a store error.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{refresh_at, Slot};
use crate::config::ClientSettings;
use crate::token::model::{FetchError, Token};
use crate::token::store::{Lock, Provenance, SharedStore};

/// How often a waiting replica looks for the fetching replica's token.
const POLL: Duration = Duration::from_millis(100);

impl Slot {
    pub(super) async fn fetch_with_store(
        &self,
        store: &SharedStore,
    ) -> Result<Arc<Token>, FetchError> {
        let s = &self.settings;
        let rejected = {
            let mut st = self.lock();
            std::mem::take(&mut st.discard)
                .then(|| st.rejected.clone())
                .flatten()
        };
        if let Some(r) = rejected {
            // Before reading the store: the retry of the 401 must not be
            // served the token it was rejected with, nor any replica later.
            store.discard(s, r.to_stored().access_token.as_str()).await;
        }
        if let Some(t) = self.stored_token(store).await {
            return Ok(t);
        }
        // A lock lives at most as long as a fetch may take (SPEC); while
        // another replica holds one, look for its token and try the lock
        // again, so an expired or abandoned lock is taken over at once.
        let deadline = Instant::now() + s.timeout;
        loop {
            match store.lock(s, s.timeout).await {
                Lock::Held => {
                    // Stored meanwhile by the replica that held the lock before us?
                    let result = match self.stored_token(store).await {
                        Some(t) => Ok(t),
                        None => self.fetch_rotating(store).await,
                    };
                    save(store, s, &result).await;
                    store.unlock(s).await;
                    return result;
                }
                Lock::Busy if Instant::now() >= deadline => {
                    tracing::info!(client = %s.name, "no token from the replica holding the fetch lock in time: fetching here");
                    let result = self.fetch_rotating(store).await;
                    // Still shared: the other replica may never store one.
                    save(store, s, &result).await;
                    return result;
                }
                Lock::Busy => {
                    tokio::time::sleep(POLL).await;
                    if let Some(t) = self.stored_token(store).await {
                        return Ok(t);
                    }
                }
                Lock::Down => return self.fetch_rotating(store).await,
            }
        }
    }

    /// The stored token, if it is valid, not yet due for refresh by the
    /// same rule this slot refreshes by, not the one a 401 rejected, and
    /// not older than the newest this slot held.
    async fn stored_token(&self, store: &SharedStore) -> Option<Arc<Token>> {
        let stored = store.load(&self.settings).await?;
        {
            let st = self.lock();
            let rejected = st
                .rejected
                .as_ref()
                .is_some_and(|r| r.to_stored().access_token == stored.access_token);
            // 2 ms: issue times go through Instant and back, rounded twice.
            let older = stored.issued_unix_ms.saturating_add(2) < st.newest_issued_ms;
            if rejected || older {
                tracing::debug!(client = %self.settings.name, rejected, older, "a stored token was not taken");
                return None;
            }
        }
        let t = Token::from_stored(stored, store.provenance())?;
        (refresh_at(&t, self.settings.refresh_before) > Instant::now()).then(|| Arc::new(t))
    }

    /// A fetch that presents the store's refresh token (another replica
    /// may have rotated it) and records the rotation with compare-and-set.
    async fn fetch_rotating(&self, store: &SharedStore) -> Result<Arc<Token>, FetchError> {
        let s = &self.settings;
        let seen = store.load_refresh(s).await;
        if let Some((rt, _)) = &seen {
            if self.fetcher.refresh_token().as_ref() != Some(rt) {
                self.fetcher.adopt_refresh_token(rt.clone());
            }
        }
        let before = self.fetcher.refresh_token();
        let result = self.fetch_here().await;
        let after = self.fetcher.refresh_token();
        if let Some(new) = &after {
            if after != before || seen.is_none() {
                let old = seen.as_ref().map(|(_, raw)| raw.as_str());
                if !store.swap_refresh(s, old, new).await {
                    tracing::warn!(client = %s.name, "the stored refresh token changed meanwhile: kept the newer one");
                }
            }
        }
        result
    }
}

/// Writes a token this replica fetched to the store (one taken from the
/// store is there already).
async fn save(store: &SharedStore, s: &ClientSettings, result: &Result<Arc<Token>, FetchError>) {
    if let Ok(t) = result {
        if t.provenance == Provenance::Fetched {
            store.save(s, &t.to_stored()).await;
        }
    }
}

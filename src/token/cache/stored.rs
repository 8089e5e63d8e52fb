//! A slot's fetch with `[store]`: read the store first; else one replica
//! at a time fetches (a lock in the store) while the others wait a bounded
//! time for its token; the refresh token in the store is the current one
//! and is replaced by compare-and-set. Whatever the store does, the slot
//! ends up with a token or an endpoint error, never a store error.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{refresh_at, Slot};
use crate::token::model::{FetchError, Token};
use crate::token::shared::{Lock, Store};

/// How often a waiting replica looks for the fetching replica's token.
const POLL: Duration = Duration::from_millis(100);

impl Slot {
    pub(super) async fn fetch_shared(&self, store: &Store) -> Result<Arc<Token>, FetchError> {
        let s = &self.settings;
        if let Some(t) = self.stored_token(store).await {
            return Ok(t);
        }
        // The lock outlives a fetch that hangs to its timeout, not more.
        match store.lock(s, s.timeout + Duration::from_secs(1)).await {
            Lock::Held => {
                // Stored meanwhile by the replica that held the lock before us?
                let result = match self.stored_token(store).await {
                    Some(t) => Ok(t),
                    None => self.fetch_rotating(store).await,
                };
                if let Ok(t) = &result {
                    if t.origin == "fetch" {
                        store.save(s, &t.to_stored()).await;
                    }
                }
                store.unlock(s).await;
                result
            }
            Lock::Busy => {
                let deadline = Instant::now() + s.timeout;
                while Instant::now() < deadline {
                    tokio::time::sleep(POLL).await;
                    if let Some(t) = self.stored_token(store).await {
                        return Ok(t);
                    }
                }
                tracing::info!(client = %s.name, "no token from the replica holding the fetch lock in time: fetching here");
                self.fetch_rotating(store).await
            }
            Lock::Down => self.fetch_rotating(store).await,
        }
    }

    /// The stored token, if it is valid and not yet due for refresh by the
    /// same rule this slot refreshes by.
    async fn stored_token(&self, store: &Store) -> Option<Arc<Token>> {
        let stored = store.load(&self.settings).await?;
        let t = Token::from_stored(stored, store.origin())?;
        (refresh_at(&t, self.settings.refresh_before) > Instant::now()).then(|| Arc::new(t))
    }

    /// A fetch that presents the store's refresh token (another replica
    /// may have rotated it) and records the rotation with compare-and-set.
    async fn fetch_rotating(&self, store: &Store) -> Result<Arc<Token>, FetchError> {
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

//! `[store]`: tokens kept besides memory, in a file (they survive a
//! restart) or in Redis/Valkey (every replica shares them). The cache
//! slot consults the store only when its own token is missing or due
//! for refresh, never per request. A store that is down, slow or returns
//! values that do not open never fails a request: every operation has a
//! timeout, its outcome is counted, state changes are logged once, and the
//! slot then fetches on its own.

mod backend;
mod file;
mod users;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::seal::Seal;

use crate::config::{ClientSettings, StoreBackend, StoreSettings};
use crate::metrics::{Metrics, StoreLabels};
use crate::secret::Secret;
pub(crate) use backend::unix_ms;
use backend::Backend;

/// A token as stored: enough to serve it, and when it was issued, so every
/// replica computes the same refresh time.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Stored {
    pub access_token: String,
    pub token_type: String,
    pub id_token: Option<String>,
    pub scopes: Vec<String>,
    pub issued_unix_ms: u64,
    pub expires_unix_ms: u64,
}

/// Where a cached token came from: fetched by this process, or read from
/// one of the store's backends. `/tokens` shows it as `source` and the
/// store's log lines name the backend with it: `as_str` is that text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provenance {
    /// This process asked the token endpoint.
    Fetched,
    /// Read from the `[store]` file.
    File,
    /// Read from the `[store]` Redis/Valkey.
    Redis,
}

impl Provenance {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fetched => "fetch",
            Self::File => "file",
            // What `/tokens` and the store's log lines say for Redis.
            Self::Redis => "store",
        }
    }
}

/// The outcome of taking a client's fetch lock.
pub enum Lock {
    /// This replica fetches; release with `unlock`.
    Held,
    /// Another replica is fetching: wait for its token.
    Busy,
    /// The store did not answer: fetch on our own.
    Down,
}

pub struct SharedStore {
    backend: Backend,
    seal: Seal,
    prefix: String,
    timeout: Duration,
    metrics: Arc<Metrics>,
    healthy: AtomicBool,
    /// This process, as the holder of the locks it takes.
    holder: String,
}

impl SharedStore {
    /// `None` for the memory backend.
    pub fn build(
        settings: &StoreSettings,
        tls: &crate::config::TlsSettings,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Option<Arc<Self>>> {
        let backend = match &settings.backend {
            StoreBackend::Memory => return Ok(None),
            StoreBackend::File(path) => Backend::file(path)?,
            StoreBackend::Redis {
                url,
                username,
                password,
            } => {
                let render = |t: &Option<crate::template::Template>, what: &str| {
                    t.as_ref()
                        .map(|t| {
                            t.render_value(&|_| None)
                                .map(|s| s.expose().to_string())
                                .map_err(|e| anyhow::anyhow!("store.{what}: {e}"))
                        })
                        .transpose()
                };
                Backend::redis(
                    url,
                    render(username, "username")?,
                    render(password, "password")?,
                    tls,
                )?
            }
        };
        let seal = match &settings.encryption_key {
            Some(t) => {
                let key = t
                    .render_value(&|_| None)
                    .map_err(|e| anyhow::anyhow!("store.encryption_key: {e}"))?;
                Seal::new(key.expose()).map_err(|e| anyhow::anyhow!(e))?
            }
            None => Seal::plaintext(),
        };
        Ok(Some(Arc::new(Self {
            backend,
            seal,
            prefix: settings.key_prefix.clone(),
            timeout: settings.timeout,
            metrics,
            healthy: AtomicBool::new(true),
            holder: uuid::Uuid::new_v4().to_string(),
        })))
    }

    /// Where a token from this store is said to come from (`/tokens`).
    pub fn provenance(&self) -> Provenance {
        self.backend.provenance()
    }

    /// `{prefix}{kind}:{digest}`: the client's cache key (a digest of
    /// every rendered setting, secrets and file contents included), so
    /// replicas with the same client meet at the same key and clients that
    /// differ in anything the endpoint sees never do. Computed per
    /// operation: a rotated secret file moves the client to a new key.
    fn key(&self, kind: &str, client: &ClientSettings) -> String {
        format!("{}{kind}:{}", self.prefix, client.cache_key().hex())
    }

    /// The client's stored token, if there is one that opens.
    pub async fn load(&self, client: &ClientSettings) -> Option<Stored> {
        let key = self.key("token", client);
        let raw = self.read("get", &key, client).await?;
        let opened = self
            .seal
            .open(&key, &raw)
            .and_then(|b| serde_json::from_slice(&b).ok());
        if opened.is_none() {
            self.count("get", "rejected");
            tracing::warn!(client = %client.name, "a stored token does not open with this store's key (tampered, moved or another key): ignored");
        }
        opened
    }

    pub async fn save(&self, client: &ClientSettings, token: &Stored) {
        let key = self.key("token", client);
        let Ok(json) = serde_json::to_vec(token) else {
            return;
        };
        let Some(value) = self.seal.seal(&key, &json) else {
            return;
        };
        let ttl = Duration::from_millis(token.expires_unix_ms.saturating_sub(unix_ms()));
        self.op("put", self.backend.set(&key, &value, Some(ttl)))
            .await;
    }

    /// One replica at a time fetches for a client; the lock expires by
    /// itself after `ttl` if its holder dies.
    pub async fn lock(&self, client: &ClientSettings, ttl: Duration) -> Lock {
        let key = self.key("lock", client);
        match self
            .op("lock", self.backend.set_nx(&key, &self.holder, ttl))
            .await
        {
            Some(true) => Lock::Held,
            Some(false) => Lock::Busy,
            None => Lock::Down,
        }
    }

    /// Releases the lock if this process still holds it.
    pub async fn unlock(&self, client: &ClientSettings) {
        let key = self.key("lock", client);
        self.op("unlock", self.backend.del_if(&key, &self.holder))
            .await;
    }

    /// The current refresh token of the client, and its stored form (the
    /// `old` of the next `swap_refresh`).
    pub async fn load_refresh(&self, client: &ClientSettings) -> Option<(Secret, String)> {
        let key = self.key("refresh", client);
        let raw = self.read("refresh_get", &key, client).await?;
        match self
            .seal
            .open(&key, &raw)
            .and_then(|b| String::from_utf8(b).ok())
        {
            Some(rt) => Some((Secret::new(rt), raw)),
            None => {
                self.count("refresh_get", "rejected");
                None
            }
        }
    }

    /// Replaces the refresh token only if it is still `old` (what this
    /// replica read before using it): compare-and-set, so no replica ever
    /// overwrites a newer rotation with an older one.
    pub async fn swap_refresh(
        &self,
        client: &ClientSettings,
        old: Option<&str>,
        new: &Secret,
    ) -> bool {
        let key = self.key("refresh", client);
        let Some(value) = self.seal.seal(&key, new.expose().as_bytes()) else {
            return false;
        };
        // Nothing readable was there: a value that does not open (sealed
        // before `encryption_key` was rotated, or corrupt) is no newer
        // rotation to keep, and left in place it would never be replaced.
        let unreadable = match old {
            Some(_) => None,
            None => self
                .read("refresh_get", &key, client)
                .await
                .filter(|raw| self.seal.open(&key, raw).is_none()),
        };
        let old = old.or(unreadable.as_deref());
        self.op(
            "refresh_swap",
            self.backend.compare_and_set(&key, old, &value),
        )
        .await
        .unwrap_or(false)
    }

    /// A rejected token leaves the store too, but only if it is still the
    /// stored one (compare-and-delete on the exact stored value), so a
    /// newer token another replica stored meanwhile stays.
    pub async fn discard(&self, client: &ClientSettings, access_token: &str) {
        let key = self.key("token", client);
        let Some(raw) = self.read("get", &key, client).await else {
            return;
        };
        let still = self
            .seal
            .open(&key, &raw)
            .and_then(|b| serde_json::from_slice::<Stored>(&b).ok())
            .is_some_and(|t| t.access_token == access_token);
        if still {
            self.op("delete", self.backend.del_if(&key, &raw)).await;
        }
    }

    /// A value no larger than `MAX_VALUE`; a larger one is corrupt: it is
    /// counted and logged, never read.
    async fn read(&self, op: &'static str, key: &str, client: &ClientSettings) -> Option<String> {
        match self.op(op, self.backend.get(key)).await? {
            backend::Got::Missing => None,
            backend::Got::Value(v) => Some(v),
            backend::Got::TooLarge(n) => {
                self.count(op, "rejected");
                tracing::warn!(client = %client.name, bytes = n, limit = backend::MAX_VALUE, "a stored value is larger than any token: ignored as corrupt");
                None
            }
        }
    }

    /// Runs one store operation within the timeout; counts it; logs a
    /// change between working and failing once.
    async fn op<T>(
        &self,
        op: &'static str,
        fut: impl std::future::Future<Output = Result<T, String>>,
    ) -> Option<T> {
        let (outcome, value, error) = match tokio::time::timeout(self.timeout, fut).await {
            Ok(Ok(v)) => ("ok", Some(v), None),
            Ok(Err(e)) => ("error", None, Some(e)),
            Err(_) => {
                // The reply may still be on its way: a fresh connection
                // for the next operation, not one that reads it first.
                self.backend.reset().await;
                (
                    "timeout",
                    None,
                    Some(format!("no answer within {:?}", self.timeout)),
                )
            }
        };
        self.count(op, outcome);
        let was = self.healthy.swap(error.is_none(), Ordering::Relaxed);
        match (&error, was) {
            (Some(e), true) => {
                tracing::warn!(store = self.provenance().as_str(), op, error = %e, "token store failing: fetching tokens on our own until it is back")
            }
            (None, false) => tracing::info!(
                store = self.provenance().as_str(),
                "token store is back: sharing tokens again"
            ),
            _ => {}
        }
        value
    }

    fn count(&self, op: &'static str, outcome: &'static str) {
        self.metrics
            .store_operations
            .get_or_create(&StoreLabels { op, outcome })
            .inc();
    }
}

#[cfg(test)]
mod tests;

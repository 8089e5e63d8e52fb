//! The two stores behind `SharedStore`: a JSON file for one process, and Redis
//! (or Valkey) for many. The same five operations; Redis does the
//! conditional ones atomically in Lua.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

pub(super) use super::file::FileStore;
use super::Provenance;

/// Store values larger than this are corrupt (no token is near it): they
/// are dropped without being read whole, so a planted value cannot take
/// the memory of every replica that reads it.
pub(super) const MAX_VALUE: usize = 64 * 1024;

/// What a read found.
pub(super) enum Got {
    Missing,
    Value(String),
    /// A value over `MAX_VALUE`, of this many bytes: never transferred.
    TooLarge(u64),
}

#[allow(
    clippy::large_enum_variant,
    reason = "one per process: boxing the Redis side saves nothing"
)]
pub(super) enum Backend {
    /// Shared with the blocking pool, where its writes (a whole-file
    /// rewrite and fsync) run: on the one serving thread of `workers = 1`
    /// they would stall every connection.
    File(Arc<FileStore>),
    Redis(RedisStore),
}

impl Backend {
    pub(super) fn file(path: &Path) -> anyhow::Result<Self> {
        Ok(Self::File(Arc::new(FileStore::open(path)?)))
    }

    pub(super) fn redis(
        url: &str,
        username: Option<String>,
        password: Option<String>,
        tls: &crate::config::TlsSettings,
    ) -> anyhow::Result<Self> {
        use redis::IntoConnectionInfo;
        let mut info = url
            .into_connection_info()
            .map_err(|e| anyhow::anyhow!("store.url: {e}"))?;
        if username.is_some() {
            info.redis.username = username;
        }
        if password.is_some() {
            info.redis.password = password;
        }
        let client = if matches!(info.addr, redis::ConnectionAddr::TcpTls { .. }) {
            // The same roots as upstreams and token endpoints: a Redis
            // behind a private CA is trusted through `extra_roots`, not
            // reached in plaintext instead.
            let root_cert = crate::roots::pem_bundle(tls.upstream_roots, &tls.extra_roots)?;
            let certs = redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(root_cert),
            };
            redis::Client::build_with_tls(info, certs)
        } else {
            redis::Client::open(info)
        }
        .map_err(|e| anyhow::anyhow!("store.url: {e}"))?;
        Ok(Self::Redis(RedisStore {
            client,
            conn: tokio::sync::Mutex::new(None),
        }))
    }

    pub(super) fn provenance(&self) -> Provenance {
        match self {
            Self::File(_) => Provenance::File,
            Self::Redis(_) => Provenance::Redis,
        }
    }

    /// The value at `key`, read only if it is at most `MAX_VALUE` bytes:
    /// Redis checks the length and answers with it instead of the value in
    /// one script, so an oversized value never crosses the wire.
    pub(super) async fn get(&self, key: &str) -> Result<Got, String> {
        match self {
            Self::File(f) => Ok(match f.get(key) {
                None => Got::Missing,
                Some(v) if v.len() > MAX_VALUE => Got::TooLarge(v.len() as u64),
                Some(v) => Got::Value(v),
            }),
            Self::Redis(r) => {
                let script = redis::Script::new(
                    "local n = redis.call('STRLEN', KEYS[1]) \
                     if n > tonumber(ARGV[1]) then return n end \
                     return redis.call('GET', KEYS[1])",
                );
                let v: redis::Value = r.script(script.key(key).arg(MAX_VALUE)).await?;
                match v {
                    redis::Value::Nil => Ok(Got::Missing),
                    redis::Value::Int(n) => Ok(Got::TooLarge(u64::try_from(n).unwrap_or(0))),
                    redis::Value::BulkString(b) if b.len() <= MAX_VALUE => String::from_utf8(b)
                        .map(Got::Value)
                        .map_err(|_| "a stored value is not UTF-8".to_string()),
                    redis::Value::BulkString(b) => Ok(Got::TooLarge(b.len() as u64)),
                    _ => Err("unexpected reply to a bounded GET".to_string()),
                }
            }
        }
    }

    /// Drops the connection after an operation timed out: its reply may
    /// still be arriving, and a new connection does not read it.
    pub(super) async fn reset(&self) {
        if let Self::Redis(r) = self {
            *r.conn.lock().await = None;
        }
    }

    pub(super) async fn set(
        &self,
        key: &str,
        value: &str,
        ttl: Option<Duration>,
    ) -> Result<(), String> {
        match self {
            Self::File(f) => {
                let (f, key, value) = (Arc::clone(f), key.to_owned(), value.to_owned());
                blocking(move || f.set(&key, &value, ttl)).await
            }
            Self::Redis(r) => {
                let mut cmd = redis::cmd("SET");
                cmd.arg(key).arg(value);
                if let Some(ttl) = ttl.filter(|t| !t.is_zero()) {
                    cmd.arg("PX")
                        .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
                }
                r.query::<Option<String>>(&cmd).await.map(drop)
            }
        }
    }

    /// Set-if-absent with expiry: a lock. A lock found without an expiry
    /// (no sidekey writes one) is taken over, and one that would outlive
    /// `ttl` is cut to it, so no lock stalls fetches past a fetch's time.
    pub(super) async fn set_nx(
        &self,
        key: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<bool, String> {
        match self {
            // One process uses the file: its slot's singleflight is the lock.
            Self::File(_) => Ok(true),
            Self::Redis(r) => {
                let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
                let script = redis::Script::new(
                    "if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end \
                     local left = redis.call('PTTL', KEYS[1]) \
                     if left == -1 then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end \
                     if left > tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end \
                     return 0",
                );
                let n: i64 = r.script(script.key(key).arg(value).arg(ms)).await?;
                Ok(n == 1)
            }
        }
    }

    /// Deletes `key` only if it still holds `value` (a lock's own holder, or
    /// a token still the one a 401 rejected).
    pub(super) async fn del_if(&self, key: &str, value: &str) -> Result<(), String> {
        match self {
            Self::File(f) => {
                let (f, key, value) = (Arc::clone(f), key.to_owned(), value.to_owned());
                blocking(move || f.del_if(&key, &value)).await
            }
            Self::Redis(r) => {
                let script = redis::Script::new(
                    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0",
                );
                r.script::<i64>(script.key(key).arg(value)).await.map(drop)
            }
        }
    }

    /// Sets `key` to `new` only if it holds `old` (`None`: only if absent).
    pub(super) async fn compare_and_set(
        &self,
        key: &str,
        old: Option<&str>,
        new: &str,
    ) -> Result<bool, String> {
        match self {
            Self::File(f) => {
                let (f, key) = (Arc::clone(f), key.to_owned());
                let (old, new) = (old.map(str::to_owned), new.to_owned());
                blocking(move || f.compare_and_set(&key, old.as_deref(), &new)).await
            }
            Self::Redis(r) => {
                let script = redis::Script::new(
                    "local cur = redis.call('GET', KEYS[1]) \
                     if (cur == false and ARGV[1] == '') or cur == ARGV[1] then \
                       redis.call('SET', KEYS[1], ARGV[2]) return 1 end return 0",
                );
                let n: i64 = r
                    .script(script.key(key).arg(old.unwrap_or("")).arg(new))
                    .await?;
                Ok(n == 1)
            }
        }
    }
}

// === impl RedisStore ===

pub(super) struct RedisStore {
    client: redis::Client,
    /// Made on first use (sidekey starts whether or not Redis is up); the
    /// manager reconnects by itself from then on.
    conn: tokio::sync::Mutex<Option<ConnectionManager>>,
}

impl RedisStore {
    async fn connection(&self) -> Result<ConnectionManager, String> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(1)
            .set_connection_timeout(Duration::from_secs(1))
            .set_response_timeout(Duration::from_secs(1));
        let conn = self
            .client
            .get_connection_manager_with_config(config)
            .await
            .map_err(|e| e.to_string())?;
        *slot = Some(conn.clone());
        Ok(conn)
    }

    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, String> {
        let mut conn = self.connection().await?;
        cmd.query_async(&mut conn).await.map_err(|e| e.to_string())
    }

    async fn script<T: redis::FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, String> {
        let mut conn = self.connection().await?;
        invocation
            .invoke_async(&mut conn)
            .await
            .map_err(|e| e.to_string())
    }
}

/// Now, in milliseconds since the Unix epoch (stored expiry times).
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Runs a file store write on tokio's blocking pool (each write takes the
/// store's lock, so they stay atomic whichever thread runs them).
async fn blocking<T: Send + 'static>(
    write: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(write)
        .await
        .map_err(|e| format!("file store write did not finish: {e}"))?
}

//! The two stores behind `Store`: a JSON file for one process, and Redis
//! (or Valkey) for many. The same five operations; Redis does the
//! conditional ones atomically in Lua.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

pub enum Backend {
    File(FileStore),
    Redis(RedisStore),
}

impl Backend {
    pub fn file(path: &Path) -> anyhow::Result<Self> {
        Ok(Self::File(FileStore::open(path)?))
    }

    pub fn redis(
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

    pub fn origin(&self) -> &'static str {
        match self {
            Self::File(_) => "file",
            Self::Redis(_) => "store",
        }
    }

    pub async fn get(&self, key: &str) -> Result<Option<String>, String> {
        match self {
            Self::File(f) => Ok(f.get(key)),
            Self::Redis(r) => r.query(redis::cmd("GET").arg(key)).await,
        }
    }

    pub async fn set(&self, key: &str, value: &str, ttl: Option<Duration>) -> Result<(), String> {
        match self {
            Self::File(f) => f.set(key, value, ttl),
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

    /// Set-if-absent with expiry: a lock.
    pub async fn set_nx(&self, key: &str, value: &str, ttl: Duration) -> Result<bool, String> {
        match self {
            // One process uses the file: its slot's singleflight is the lock.
            Self::File(_) => Ok(true),
            Self::Redis(r) => {
                let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
                let set: Option<String> = r
                    .query(
                        redis::cmd("SET")
                            .arg(key)
                            .arg(value)
                            .arg("NX")
                            .arg("PX")
                            .arg(ms),
                    )
                    .await?;
                Ok(set.is_some())
            }
        }
    }

    /// Deletes `key` only if it still holds `value` (a lock's own holder).
    pub async fn del_if(&self, key: &str, value: &str) -> Result<(), String> {
        match self {
            Self::File(_) => Ok(()),
            Self::Redis(r) => {
                let script = redis::Script::new(
                    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0",
                );
                r.script::<i64>(script.key(key).arg(value)).await.map(drop)
            }
        }
    }

    /// Sets `key` to `new` only if it holds `old` (`None`: only if absent).
    pub async fn compare_and_set(
        &self,
        key: &str,
        old: Option<&str>,
        new: &str,
    ) -> Result<bool, String> {
        match self {
            Self::File(f) => f.compare_and_set(key, old, new),
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

pub struct RedisStore {
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

// === impl FileStore ===

/// `{key: [value, expiry-unix-ms]}` in one JSON file, mode 0600, replaced
/// atomically on every change.
pub struct FileStore {
    path: PathBuf,
    entries: Mutex<HashMap<String, (String, Option<u64>)>>,
}

impl FileStore {
    fn open(path: &Path) -> anyhow::Result<Self> {
        let entries = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                anyhow::anyhow!(
                    "store.path: {} is not a sidekey token file: {e}",
                    path.display()
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => HashMap::new(),
            Err(e) => anyhow::bail!("store.path: cannot read {}: {e}", path.display()),
        };
        Ok(Self {
            path: path.to_path_buf(),
            entries: Mutex::new(entries),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, Option<u64>)>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, key: &str) -> Option<String> {
        let now = unix_ms();
        self.lock()
            .get(key)
            .filter(|(_, exp)| exp.is_none_or(|e| e > now))
            .map(|(v, _)| v.clone())
    }

    fn set(&self, key: &str, value: &str, ttl: Option<Duration>) -> Result<(), String> {
        let exp =
            ttl.map(|t| unix_ms().saturating_add(u64::try_from(t.as_millis()).unwrap_or(u64::MAX)));
        let mut entries = self.lock();
        entries.insert(key.to_string(), (value.to_string(), exp));
        self.persist(&entries)
    }

    fn compare_and_set(&self, key: &str, old: Option<&str>, new: &str) -> Result<bool, String> {
        let mut entries = self.lock();
        if entries.get(key).map(|(v, _)| v.as_str()) != old {
            return Ok(false);
        }
        entries.insert(key.to_string(), (new.to_string(), None));
        self.persist(&entries).map(|()| true)
    }

    fn persist(&self, entries: &HashMap<String, (String, Option<u64>)>) -> Result<(), String> {
        let now = unix_ms();
        let live: HashMap<&String, &(String, Option<u64>)> = entries
            .iter()
            .filter(|(_, (_, exp))| exp.is_none_or(|e| e > now))
            .collect();
        let json = serde_json::to_vec(&live).map_err(|e| e.to_string())?;
        write_private(&self.path, &json)
            .map_err(|e| format!("cannot write {}: {e}", self.path.display()))
    }
}

/// Temp file beside `path`, mode 0600, fsync, rename over `path`.
fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Now, in milliseconds since the Unix epoch (stored expiry times).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

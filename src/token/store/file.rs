//! The file store: `{key: [value, expiry-unix-ms]}` in one JSON file for
//! one process, mode 0600, replaced atomically through a fresh temp file.
//! The path is the operator's; what else is in its directory is not, so
//! nothing there is followed or trusted.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use super::backend::unix_ms;

type Entries = HashMap<String, (String, Option<u64>)>;

pub(super) struct FileStore {
    path: PathBuf,
    entries: Mutex<Entries>,
}

impl FileStore {
    /// Refuses a store path that is a symlink (dangling or not), not a
    /// regular file, or owned by another user: tokens written there would
    /// go where someone else points them. An empty or corrupt file is a
    /// cache miss: the tokens are fetched again and the file rewritten.
    pub(super) fn open(path: &Path) -> anyhow::Result<Self> {
        let shown = path.display();
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_symlink() => anyhow::bail!(
                "store.path: {shown} is a symlink: refusing to keep tokens through it (point store.path at a regular file or a new path)"
            ),
            Ok(m) if !m.is_file() => {
                anyhow::bail!("store.path: {shown} is not a regular file")
            }
            Ok(m) => refuse_foreign(path, &m)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => anyhow::bail!("store.path: cannot read {shown}: {e}"),
        }
        let entries = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(path = %shown, error = %e, "the token store file is empty or not a sidekey token file: starting with no stored tokens");
                HashMap::new()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => HashMap::new(),
            Err(e) => anyhow::bail!("store.path: cannot read {shown}: {e}"),
        };
        Ok(Self {
            path: path.to_path_buf(),
            entries: Mutex::new(entries),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn get(&self, key: &str) -> Option<String> {
        let now = unix_ms();
        self.lock()
            .get(key)
            .filter(|(_, exp)| exp.is_none_or(|e| e > now))
            .map(|(v, _)| v.clone())
    }

    pub(super) fn set(&self, key: &str, value: &str, ttl: Option<Duration>) -> Result<(), String> {
        let exp =
            ttl.map(|t| unix_ms().saturating_add(u64::try_from(t.as_millis()).unwrap_or(u64::MAX)));
        let mut entries = self.lock();
        entries.insert(key.to_string(), (value.to_string(), exp));
        self.persist(&entries)
    }

    pub(super) fn compare_and_set(
        &self,
        key: &str,
        old: Option<&str>,
        new: &str,
    ) -> Result<bool, String> {
        let mut entries = self.lock();
        if entries.get(key).map(|(v, _)| v.as_str()) != old {
            return Ok(false);
        }
        entries.insert(key.to_string(), (new.to_string(), None));
        self.persist(&entries).map(|()| true)
    }

    /// Removes `key` only if it still holds `value`.
    pub(super) fn del_if(&self, key: &str, value: &str) -> Result<(), String> {
        let mut entries = self.lock();
        if entries.get(key).is_some_and(|(v, _)| v == value) {
            entries.remove(key);
            return self.persist(&entries);
        }
        Ok(())
    }

    fn persist(&self, entries: &Entries) -> Result<(), String> {
        let now = unix_ms();
        let live: HashMap<&String, &(String, Option<u64>)> = entries
            .iter()
            .filter(|(_, (_, exp))| exp.is_none_or(|e| e > now))
            .collect();
        let json = serde_json::to_vec(&live).map_err(|e| e.to_string())?;
        crate::private_file::replace(&self.path, &json)
            .map_err(|e| format!("cannot write {}: {e}", self.path.display()))
    }
}

/// Refuses a store file owned by another user: whoever owns it can point
/// sidekey's tokens elsewhere or read them.
#[cfg(unix)]
fn refuse_foreign(path: &Path, m: &std::fs::Metadata) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    match own_uid() {
        Some(me) if m.uid() != me => anyhow::bail!(
            "store.path: {} is owned by uid {}, not by sidekey's user (uid {me}): refusing it",
            path.display(),
            m.uid()
        ),
        _ => Ok(()),
    }
}

#[cfg(not(unix))]
fn refuse_foreign(_path: &Path, _m: &std::fs::Metadata) -> anyhow::Result<()> {
    Ok(())
}

/// The user sidekey runs as. std has no `getuid`, and `unsafe` is
/// forbidden here; on Linux `/proc/self` is owned by the process's
/// effective uid. Elsewhere the ownership check is skipped.
#[cfg(unix)]
fn own_uid() -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").ok().map(|m| m.uid())
}

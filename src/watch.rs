//! Reload on file change. Watched are the folders of the config file and of
//! every `<<file:…>>` secret, both as named and as their symlinks resolve:
//! Kubernetes updates a mounted ConfigMap or Secret by writing a new
//! timestamped folder and renaming a `..data` symlink over the old one in
//! the mount folder, then deleting the old folder; editors replace files
//! rather than write them. Events are debounced, then `Shared` compares
//! contents: a changed config reloads, a changed secret refetches.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher as _};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use crate::runtime::Shared;

/// Keeps the watch alive; dropping it stops watching.
pub(crate) struct Watcher(AbortHandle);

impl Drop for Watcher {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub(crate) fn spawn(config: &Path, shared: Arc<Shared>) -> anyhow::Result<Watcher> {
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let inner = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if ev.is_ok_and(|ev| !matches!(ev.kind, notify::EventKind::Access(_))) {
            let _ = tx.send(());
        }
    })?;
    let mut watched = Watched {
        inner,
        dirs: HashSet::new(),
    };
    let config = absolute(config);
    watched.update(&config, &shared);
    let task = tokio::spawn(async move {
        while rx.recv().await.is_some() {
            // Debounce: a save or a `..data` swap is several events.
            tokio::time::sleep(Duration::from_millis(150)).await;
            while rx.try_recv().is_ok() {}
            shared.files_changed();
            // The config may name new secret files; new folders may exist.
            watched.update(&config, &shared);
        }
    });
    Ok(Watcher(task.abort_handle()))
}

struct Watched {
    inner: notify::RecommendedWatcher,
    dirs: HashSet<PathBuf>,
}

impl Watched {
    /// Watches every folder that matters now; a folder that went away
    /// (kubelet's old timestamped one) is forgotten.
    fn update(&mut self, config: &Path, shared: &Shared) {
        let rt = shared.runtime();
        let files = std::iter::once(config.to_path_buf())
            .chain(rt.config.clients.values().flat_map(|c| c.files()));
        let mut want = HashSet::new();
        for f in files {
            let f = absolute(&f);
            want.extend(f.parent().map(Path::to_path_buf));
            if let Ok(real) = std::fs::canonicalize(&f) {
                want.extend(real.parent().map(Path::to_path_buf));
            }
        }
        self.dirs.retain(|d| d.is_dir() && want.contains(d));
        for dir in want {
            if self.dirs.contains(&dir) || !dir.is_dir() {
                continue;
            }
            match self.inner.watch(&dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    self.dirs.insert(dir);
                }
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot watch for changes")
                }
            }
        }
    }
}

fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        return p.to_path_buf();
    }
    std::env::current_dir().map_or_else(|_| p.to_path_buf(), |d| d.join(p))
}

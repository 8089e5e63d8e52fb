//! Reload on config file change: the file's folder is watched (editors and
//! Kubernetes ConfigMaps replace files rather than write them in place),
//! events are debounced, and `Shared::reload` does the rest.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::runtime::Shared;

/// Starts watching; the returned watcher must be kept alive.
pub fn spawn(path: &Path, shared: Arc<Shared>) -> anyhow::Result<notify::RecommendedWatcher> {
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| Path::new(".").to_path_buf());
    let name = path.file_name().map(|n| n.to_os_string());
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        let Ok(ev) = ev else { return };
        if matches!(ev.kind, notify::EventKind::Access(_)) {
            return;
        }
        // ConfigMap updates swap a `..data` symlink: any change in the folder may be ours.
        let ours = ev.paths.iter().any(|p| p.file_name() == name.as_deref())
            || ev
                .paths
                .iter()
                .any(|p| p.to_string_lossy().contains("..data"));
        if ours {
            let _ = tx.send(());
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            // Debounce: an editor's save is several events.
            tokio::time::sleep(Duration::from_millis(200)).await;
            while rx.try_recv().is_ok() {}
            shared.reload();
        }
    });
    Ok(watcher)
}

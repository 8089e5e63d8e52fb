//! The newest refresh token of a client, kept in memory and in
//! `state_file` (JSON, mode 0600, replaced atomically) so a rotation
//! survives a restart.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use crate::secret::Secret;
use crate::template::Template;

#[derive(serde::Serialize, serde::Deserialize)]
struct StateFile {
    refresh_token: String,
    updated_at: String,
}

pub(crate) struct RefreshState {
    current: Mutex<Option<Secret>>,
    state_file: Option<PathBuf>,
}

impl RefreshState {
    /// The config's refresh token, unless `state_file` is newer than the
    /// value's source (the config file, or the `<<file:…>>` it reads).
    pub(crate) fn load(
        configured: Option<&Template>,
        state_file: Option<&Path>,
    ) -> Result<Self, String> {
        let from_config = match configured {
            Some(t) => Some(
                t.render_value(&|_| None)
                    .map_err(|e| format!("refresh_token: {e}"))?,
            ),
            None => None,
        }
        .filter(|s| !s.is_empty());
        let config_mtime = configured.and_then(|t| {
            t.files()
                .filter_map(|p| std::fs::metadata(p).ok()?.modified().ok())
                .max()
        });
        let saved = match state_file {
            Some(p) if p.exists() => Some(read_state(p)?),
            _ => None,
        };
        let current = match (from_config, saved) {
            (None, saved) => saved.map(|(s, _)| s),
            (Some(c), None) => Some(c),
            (Some(c), Some((s, saved_at))) => {
                // A literal/env value has no age: the saved rotation always wins.
                let config_newer = matches!((config_mtime, saved_at), (Some(c), Some(s)) if c > s);
                Some(if config_newer { c } else { s })
            }
        };
        Ok(Self {
            current: Mutex::new(current),
            state_file: state_file.map(Path::to_path_buf),
        })
    }

    pub(crate) fn current(&self) -> Option<Secret> {
        self.current.lock().ok().and_then(|g| g.clone())
    }

    /// Forgets a refresh token the server refused.
    pub(crate) fn clear(&self) {
        if let Ok(mut g) = self.current.lock() {
            *g = None;
        }
    }

    /// Records a refresh token the server issued; saved before it is used.
    pub(crate) fn rotate(&self, new: Secret) -> Result<(), String> {
        if self.current().as_ref() == Some(&new) {
            return Ok(());
        }
        if let Some(path) = &self.state_file {
            save(path, &new)
                .map_err(|e| format!("cannot save state_file {}: {e}", path.display()))?;
        }
        if let Ok(mut g) = self.current.lock() {
            *g = Some(new);
        }
        Ok(())
    }
}

fn read_state(path: &Path) -> Result<(Secret, Option<SystemTime>), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read state_file {}: {e}", path.display()))?;
    let s: StateFile = serde_json::from_str(&text).map_err(|e| {
        format!(
            "state_file {} is not sidekey state JSON: {e}",
            path.display()
        )
    })?;
    // The file's own mtime is precise; `updated_at` has whole seconds only.
    let at = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .or_else(|| humantime::parse_rfc3339_weak(&s.updated_at).ok());
    Ok((Secret::new(s.refresh_token), at))
}

/// Writes `{"refresh_token","updated_at"}` through a fresh private temp
/// file beside `path` (`O_EXCL`, mode 0600), renamed over `path`: a file
/// or link planted in the directory under a guessable name is never
/// written through.
pub(crate) fn save(path: &Path, token: &Secret) -> std::io::Result<()> {
    let state = StateFile {
        refresh_token: token.expose().to_string(),
        updated_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
    };
    let json = serde_json::to_vec_pretty(&state).map_err(std::io::Error::other)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    crate::private_file::replace(path, &json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_is_saved_0600_and_wins_on_restart() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("rt.json");
        let configured = Template::literal("rt-initial");
        let s = RefreshState::load(Some(&configured), Some(&state)).unwrap();
        assert_eq!(s.current().unwrap().expose(), "rt-initial");
        s.rotate(Secret::new("rt-2")).unwrap();
        let saved: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
        assert_eq!(saved["refresh_token"], "rt-2");
        assert!(saved["updated_at"].as_str().unwrap().ends_with('Z'));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&state).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let again = RefreshState::load(Some(&configured), Some(&state)).unwrap();
        assert_eq!(again.current().unwrap().expose(), "rt-2");
    }

    /// The temp file used to be `.NAME.PID.tmp`, opened with create +
    /// truncate: a link planted there made sidekey write the refresh token
    /// into whatever file the link named.
    #[cfg(unix)]
    #[test]
    fn a_link_planted_at_the_old_temp_name_is_not_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("rt.json");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "untouched").unwrap();
        let planted = dir
            .path()
            .join(format!(".rt.json.{}.tmp", std::process::id()));
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        save(&state, &Secret::new("rt-secret")).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
        assert!(std::fs::read_to_string(&state)
            .unwrap()
            .contains("rt-secret"));
    }
}

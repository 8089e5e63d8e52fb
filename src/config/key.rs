//! The identity of a client's token: a digest of every rendered setting
//! that can change which token the endpoint returns, used as the cache key
//! in memory and in `[store]` (and by whatever else keys tokens by client).

use std::hash::{Hash, Hasher};

use sha2::{Digest, Sha256};

use super::model::ClientSettings;

// Defined here rather than in `model`, so the model need not import the
// key back.
impl ClientSettings {
    /// The key of this client's token in memory and in `[store]` (SPEC,
    /// Tokens): a digest of every rendered setting, file contents included.
    pub fn cache_key(&self) -> ClientKey {
        client_key(self)
    }
}

/// SHA-256 over a client's settings (its name aside) and the contents of
/// every file its templates read. It may be derived from secrets, so it is
/// only ever shown as the hex digest, never as what went into it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientKey([u8; 32]);

impl ClientKey {
    /// Lower-case hex of the whole digest: a store key's last part.
    pub fn hex(&self) -> String {
        hex(&self.0)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClientKey({})", self.hex())
    }
}

/// Lower-case hex of a digest, as store keys spell them.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Feeds `Hash` output into SHA-256: the derived `Hash` of the settings
/// already covers every field and template segment (literals, file paths,
/// env values), and SHA-256, unlike `DefaultHasher`, is the same in every
/// replica and every build, so replicas meet at the same store key.
struct Sha(Sha256);

impl Hasher for Sha {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        // Never used: the digest is taken with `finalize`.
        0
    }
}

pub(super) fn client_key(settings: &ClientSettings) -> ClientKey {
    let mut h = Sha(Sha256::new());
    let mut me = settings.clone();
    // Two names for the same client share one token.
    me.name.clear();
    me.hash(&mut h);
    // Rendered, not only parsed: a `<<file:…>>` client_id or subject that
    // rotates is another client, so its old token is never served again.
    for path in settings.files() {
        match std::fs::read(&path) {
            Ok(bytes) => {
                h.write(b"file");
                bytes.hash(&mut h);
            }
            // An unreadable file is keyed as such: its coming back (with
            // whatever content) is a change.
            Err(e) => {
                h.write(b"unreadable");
                e.kind().hash(&mut h);
            }
        }
    }
    ClientKey(h.0.finalize().into())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::ClientKey;

    /// The keys of clients `a` and `b`, written with `a` and `b` as given.
    fn keys(dir: &Path, a: &str, b: &str) -> (ClientKey, ClientKey) {
        let client = |name: &str, extra: &str| {
            format!("[clients.{name}]\ngrant = \"client_credentials\"\ntoken_url = \"https://idp.example/token\"\nclient_id = \"i\"\nclient_secret = \"s\"\n{extra}\n")
        };
        let source = format!("{}{}", client("a", a), client("b", b));
        let cfg = super::super::load_str(&dir.join("proxy.toml"), &source, &|_| None)
            .unwrap_or_else(|e| panic!("{e}"));
        (cfg.clients["a"].cache_key(), cfg.clients["b"].cache_key())
    }

    #[test]
    fn the_key_is_every_rendered_setting_and_not_the_name() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = keys(dir.path(), "", "");
        assert_eq!(a, b, "two names for one client share a token");
        assert_eq!(a.hex().len(), 64);
        for (x, y) in [
            (
                "params = { resource = \"r1\" }",
                "params = { resource = \"r2\" }",
            ),
            ("scopes = [\"a\"]", "scopes = [\"b\"]"),
            ("audience = \"x\"", "audience = \"y\""),
        ] {
            let (a, b) = keys(dir.path(), x, y);
            assert_ne!(a, b, "{x} / {y}");
        }
        // A file read by a template: its content is part of the key.
        let f = dir.path().join("resource");
        std::fs::write(&f, "one").unwrap();
        let p = format!("params = {{ resource = \"<<file:{}>>\" }}", f.display());
        let (before, _) = keys(dir.path(), &p, "");
        std::fs::write(&f, "two").unwrap();
        let (after, _) = keys(dir.path(), &p, "");
        assert_ne!(before, after, "a rotated file is another client");
    }
}

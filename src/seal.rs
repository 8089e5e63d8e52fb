//! Sealing stored tokens: ChaCha20-Poly1305 (ring) with a random nonce,
//! the value bound to its key name (as associated data), so a value copied
//! under another key, tampered with, or sealed with another key opens to
//! nothing and is ignored.

use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

const SEALED: &str = "v1:";
const PLAIN: &str = "plain:";

pub(crate) struct Seal {
    key: Option<LessSafeKey>,
    rng: SystemRandom,
}

impl Seal {
    /// A key given as 32 bytes of base64.
    pub(crate) fn new(b64: &str) -> Result<Self, String> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|_| "store.encryption_key is not base64".to_string())?;
        if bytes.len() != 32 {
            return Err(format!(
                "store.encryption_key is {} bytes; it must be 32",
                bytes.len()
            ));
        }
        let key = UnboundKey::new(&CHACHA20_POLY1305, &bytes)
            .map_err(|_| "store.encryption_key is not a valid key".to_string())?;
        Ok(Self {
            key: Some(LessSafeKey::new(key)),
            rng: SystemRandom::new(),
        })
    }

    /// No key: values are stored as they are (`allow_plaintext`).
    pub(crate) fn plaintext() -> Self {
        Self {
            key: None,
            rng: SystemRandom::new(),
        }
    }

    pub(crate) fn seal(&self, name: &str, plain: &[u8]) -> Option<String> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let Some(key) = &self.key else {
            return Some(format!("{PLAIN}{}", b64.encode(plain)));
        };
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).ok()?;
        let mut data = plain.to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(name.as_bytes()),
            &mut data,
        )
        .ok()?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        Some(format!("{SEALED}{}", b64.encode(out)))
    }

    /// The plaintext, or `None` for a value that does not open with this
    /// key under this name (tampered, moved, another key, or plaintext
    /// where a key is configured: a downgrade is refused too).
    pub(crate) fn open(&self, name: &str, stored: &str) -> Option<Vec<u8>> {
        let b64 = base64::engine::general_purpose::STANDARD;
        match (
            &self.key,
            stored.strip_prefix(SEALED),
            stored.strip_prefix(PLAIN),
        ) {
            (Some(key), Some(sealed), _) => {
                let raw = b64.decode(sealed).ok()?;
                if raw.len() < NONCE_LEN {
                    return None;
                }
                let (nonce, data) = raw.split_at(NONCE_LEN);
                let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
                let mut data = data.to_vec();
                let plain = key
                    .open_in_place(nonce, Aad::from(name.as_bytes()), &mut data)
                    .ok()?;
                Some(plain.to_vec())
            }
            (None, _, Some(plain)) => b64.decode(plain).ok(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    #[test]
    fn seals_and_refuses_tampering_moves_and_other_keys() {
        let s = Seal::new(KEY).unwrap();
        let v = s.seal("k1", b"secret").unwrap();
        assert!(!v.contains("secret"));
        assert_eq!(s.open("k1", &v).unwrap(), b"secret");
        assert!(s.open("k2", &v).is_none(), "bound to its key name");
        let mut bytes = v.clone().into_bytes();
        let last = bytes.len() - 2;
        bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
        assert!(s.open("k1", &String::from_utf8(bytes).unwrap()).is_none());
        let other = Seal::new("HwAeHRwbGhkYFxYVFBMSERAPDg0MCwoJCAcGBQQDAgE=").unwrap();
        assert!(other.open("k1", &v).is_none());
        let plain = Seal::plaintext().seal("k1", b"secret").unwrap();
        assert!(s.open("k1", &plain).is_none(), "no downgrade to plaintext");
        assert_eq!(Seal::plaintext().open("k1", &plain).unwrap(), b"secret");
        assert!(Seal::new("c2hvcnQ=").is_err());
    }
}

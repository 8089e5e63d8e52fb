//! Per-user account records in the store: one sealed value per end user
//! of a per-user client, keyed by the client's key and a digest of the
//! user id (never the id itself), so users survive restarts and every
//! replica sees the same connection.

use super::SharedStore;

impl SharedStore {
    /// `{prefix}user:{client}:{user}`: the client's key (a digest of its
    /// settings) and a digest of the user id.
    fn user_key(&self, client: &str, user: &[u8; 32]) -> String {
        format!("{}user:{client}:{}", self.prefix, crate::config::hex(user))
    }

    /// The user's record, if there is one that opens.
    pub async fn load_user(&self, client: &str, user: &[u8; 32]) -> Option<Vec<u8>> {
        let key = self.user_key(client, user);
        let raw = match self.op("user_get", self.backend.get(&key)).await? {
            super::backend::Got::Value(v) if !v.is_empty() => v,
            super::backend::Got::Value(_) | super::backend::Got::Missing => return None,
            super::backend::Got::TooLarge(n) => {
                self.count("user_get", "rejected");
                tracing::warn!(
                    bytes = n,
                    "a stored user record is larger than any token: ignored as corrupt"
                );
                return None;
            }
        };
        let opened = self.seal.open(&key, &raw);
        if opened.is_none() {
            self.count("user_get", "rejected");
        }
        opened
    }

    /// Whether the record was written.
    pub async fn save_user(&self, client: &str, user: &[u8; 32], record: &[u8]) -> bool {
        let key = self.user_key(client, user);
        let Some(value) = self.seal.seal(&key, record) else {
            return false;
        };
        self.op("user_put", self.backend.set(&key, &value, None))
            .await
            .is_some()
    }

    /// Disconnects the user. The backends have no plain delete: an empty
    /// value that expires at once reads as absent on both.
    pub async fn delete_user(&self, client: &str, user: &[u8; 32]) {
        let key = self.user_key(client, user);
        self.op(
            "user_delete",
            self.backend
                .set(&key, "", Some(std::time::Duration::from_millis(1))),
        )
        .await;
    }
}

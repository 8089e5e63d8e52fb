//! Per-user account records: what is kept per user (only tokens), where
//! (the store, or memory without one), and how a user's slot gets a token
//! from them: the stored access token while valid, else a refresh with
//! the user's refresh token, which the IdP may refuse (then the record goes).

use std::sync::Arc;

use dashmap::DashMap;
use futures_util::future::BoxFuture;

use super::UserKey;
use crate::config::{ClientSettings, GrantSettings};
use crate::secret::Secret;
use crate::token::cache::FetchToken;
use crate::token::grants::{custom, form, Fetcher};
use crate::token::model::{FetchError, Token, TokenResponse};
use crate::token::store::{unix_ms, SharedStore, Stored};

/// What is kept per user.
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct Record {
    refresh_token: Option<String>,
    access: Option<Stored>,
}

/// A record from a token response; `old_refresh` is kept when the IdP
/// does not rotate.
pub(super) fn record_of(
    s: &ClientSettings,
    resp: TokenResponse,
    old_refresh: Option<String>,
) -> Result<Record, FetchError> {
    let refresh_token = resp
        .refresh_token
        .as_ref()
        .map(|r| r.expose().to_string())
        .or(old_refresh);
    let token = Token::from_response(resp, s.default_ttl)?;
    Ok(Record {
        refresh_token,
        access: Some(token.to_stored()),
    })
}

/// The users' records: in `[store]`, or in memory without one.
pub(super) struct Records {
    pub(super) client: String,
    pub(super) store: Option<Arc<SharedStore>>,
    pub(super) memory: DashMap<UserKey, Vec<u8>>,
}

impl Records {
    pub(super) async fn load(&self, key: &UserKey) -> Option<Record> {
        let bytes = match &self.store {
            Some(store) => store.load_user(&self.client, key).await?,
            None => self.memory.get(key).map(|r| r.value().clone())?,
        };
        serde_json::from_slice(&bytes).ok()
    }

    pub(super) async fn save(&self, key: &UserKey, record: &Record) {
        let Ok(bytes) = serde_json::to_vec(record) else {
            return;
        };
        match &self.store {
            Some(store) => {
                store.save_user(&self.client, key, &bytes).await;
            }
            None => {
                self.memory.insert(*key, bytes);
            }
        }
    }

    pub(super) async fn delete(&self, key: &UserKey) {
        match &self.store {
            Some(store) => store.delete_user(&self.client, key).await,
            None => {
                self.memory.remove(key);
            }
        }
    }
}

/// Fetches for one user: the stored access token while it is valid, else
/// a refresh with the user's refresh token (rotation kept).
pub(super) struct UserFetch {
    pub(super) key: UserKey,
    pub(super) records: Arc<Records>,
    pub(super) fetcher: Arc<Fetcher>,
    /// The access token this slot was last given. The slot asks again only
    /// when it no longer wants that one (expired, or an upstream rejected
    /// it), so the same stored token is never handed back: refresh instead.
    pub(super) served: std::sync::Mutex<Option<Secret>>,
}

impl UserFetch {
    fn serve(&self, resp: TokenResponse) -> TokenResponse {
        *self.served.lock().unwrap_or_else(|p| p.into_inner()) = Some(resp.access_token.clone());
        resp
    }

    fn served(&self, token: &str) -> bool {
        self.served
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(|s| s.expose() == token)
    }
}

impl FetchToken for UserFetch {
    fn fetch<'a>(
        &'a self,
        s: &'a ClientSettings,
    ) -> BoxFuture<'a, Result<TokenResponse, FetchError>> {
        Box::pin(async move {
            let not_connected = || FetchError::Setup("the user has not connected".into());
            let record = self
                .records
                .load(&self.key)
                .await
                .ok_or_else(not_connected)?;
            let now = unix_ms();
            let fresh = record
                .access
                .filter(|a| a.expires_unix_ms > now + 1000 && !self.served(&a.access_token));
            if let Some(a) = fresh {
                return Ok(self.serve(TokenResponse {
                    access_token: Secret::new(a.access_token),
                    token_type: Some(a.token_type),
                    expires_in: Some((a.expires_unix_ms - now) / 1000),
                    id_token: a.id_token.map(Secret::new),
                    ..Default::default()
                }));
            }
            let Some(rt) = record.refresh_token else {
                self.records.delete(&self.key).await;
                return Err(not_connected());
            };
            let result = match &s.grant {
                GrantSettings::Custom { .. } => {
                    custom::fetch(self.fetcher.http(), s, Some(Secret::new(rt.clone()))).await
                }
                _ => form::refresh(self.fetcher.http(), s, Secret::new(rt.clone())).await,
            };
            match result {
                Ok(resp) => {
                    let record = record_of(s, resp.clone(), Some(rt))?;
                    self.records.save(&self.key, &record).await;
                    Ok(self.serve(resp))
                }
                // The IdP refused the user's refresh token (revoked,
                // expired): the user must connect again.
                Err(e @ (FetchError::OAuth { .. } | FetchError::Status(400 | 401))) => {
                    tracing::info!(client = %s.name, error = %e, "a user's refresh token was refused: the user must log in again");
                    self.records.delete(&self.key).await;
                    Err(e)
                }
                Err(e) => Err(e),
            }
        })
    }
}

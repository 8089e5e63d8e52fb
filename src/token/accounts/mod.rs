//! Per-user accounts: a client (authorization_code, or custom with
//! code_body) that holds one token per end user of the app, each user
//! having connected once in a browser (`login/`). The user's access and
//! refresh token live in `[store]` (sealed; keyed by the client and a
//! digest of the user id), so they survive restarts and replicas share
//! them; in memory each user has an on-demand cache slot. A refresh the
//! IdP refuses disconnects the user: the next request asks for a login.

use std::collections::HashSet;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use dashmap::DashMap;
use http::{HeaderName, HeaderValue};
use lru::LruCache;
use sha2::Digest;

use super::cache::Slot;
use super::grants::{custom, form, Fetcher};
use super::model::{FetchError, Token, TokenResponse};
use super::store::SharedStore;
use super::tickets::Logins;
use crate::config::ClientSettings;
use crate::metrics::{ClientLabel, Metrics};
use crate::secret::Secret;

type UserKey = [u8; 32];

/// Users with a cache slot in memory; their records stay in the store.
const MAX_USERS_IN_MEMORY: usize = 10_000;

/// Why a per-user request has no token.
#[derive(Debug)]
pub enum AccountError {
    UserMissing(HeaderName),
    LoginRequired { login_url: String },
    Fetch(FetchError),
}

pub struct Accounts {
    pub settings: Arc<ClientSettings>,
    header: HeaderName,
    fetcher: Arc<Fetcher>,
    metrics: Arc<Metrics>,
    records: Arc<Records>,
    slots: Mutex<LruCache<UserKey, Arc<Slot>>>,
    logins: Arc<Logins>,
    /// Users known to be connected here (the `sidekey_login_users` gauge).
    connected: Mutex<HashSet<UserKey>>,
}

impl Accounts {
    pub fn new(
        settings: Arc<ClientSettings>,
        header: HeaderName,
        fetcher: Fetcher,
        metrics: Arc<Metrics>,
        store: Option<Arc<SharedStore>>,
        logins: Arc<Logins>,
    ) -> Arc<Self> {
        let records = Arc::new(Records {
            client: settings.cache_key().hex(),
            store,
            memory: DashMap::new(),
        });
        Arc::new(Self {
            settings,
            header,
            fetcher: Arc::new(fetcher),
            metrics,
            records,
            slots: Mutex::new(LruCache::new(
                NonZeroUsize::new(MAX_USERS_IN_MEMORY).unwrap_or(NonZeroUsize::MIN),
            )),
            logins,
            connected: Mutex::new(HashSet::new()),
        })
    }

    /// The app's header naming the user; it never goes upstream.
    pub fn header(&self) -> &HeaderName {
        &self.header
    }

    /// The user's token, or a login link when the user has none.
    pub async fn token(
        &self,
        value: Option<&HeaderValue>,
    ) -> Result<(Arc<Slot>, Arc<Token>), AccountError> {
        let user = value
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .ok_or_else(|| AccountError::UserMissing(self.header.clone()))?;
        let key = digest(user);
        let slot = self.slot(key);
        // A user who never connected is no token fetch (nor a failed one).
        if slot.peek().is_none() && self.records.load(&key).await.is_none() {
            return Err(self.login_required(&key, user));
        }
        match slot.get().await {
            Ok(token) => {
                self.mark(key, true);
                Ok((slot, token))
            }
            // The IdP refused the refresh and the user's tokens are gone.
            Err(_) if self.records.load(&key).await.is_none() => {
                Err(self.login_required(&key, user))
            }
            Err(e) => Err(AccountError::Fetch(e)),
        }
    }

    /// A login link for the user; the slot goes, so a login just made is
    /// seen at once (no backoff left from the failed attempt).
    fn login_required(&self, key: &UserKey, user: &str) -> AccountError {
        self.forget(key);
        match self.logins.issue(&self.settings.name, user) {
            Some(login_url) => AccountError::LoginRequired { login_url },
            None => AccountError::Fetch(FetchError::Setup("no [login] configured".into())),
        }
    }

    fn slot(&self, key: UserKey) -> Arc<Slot> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = slots.get(&key) {
            return Arc::clone(s);
        }
        let fetch = UserFetch {
            key,
            records: Arc::clone(&self.records),
            fetcher: Arc::clone(&self.fetcher),
            served: Mutex::new(None),
        };
        let slot = Slot::on_demand(
            Arc::clone(&self.settings),
            Box::new(fetch),
            Arc::clone(&self.metrics),
        );
        slots.put(key, Arc::clone(&slot));
        slot
    }

    fn forget(&self, key: &UserKey) {
        self.slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop(key);
        self.mark(*key, false);
    }

    fn mark(&self, key: UserKey, on: bool) {
        let n = {
            let mut c = self.connected.lock().unwrap_or_else(|p| p.into_inner());
            if on {
                c.insert(key);
            } else {
                c.remove(&key);
            }
            c.len()
        };
        self.metrics
            .login_users
            .get_or_create(&ClientLabel {
                client: self.settings.name.clone(),
            })
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// The last step of a login: exchanges the code (the standard form with
    /// the PKCE verifier, or a custom client's `code_body`).
    pub async fn exchange(
        &self,
        code: &str,
        verifier: &str,
        redirect_uri: &str,
    ) -> Result<TokenResponse, FetchError> {
        custom::exchange_code(
            self.fetcher.http(),
            &self.settings,
            code,
            verifier,
            redirect_uri,
        )
        .await
    }

    /// A per-user password client's sign-in with what the user typed.
    pub async fn password_login(
        &self,
        username: &str,
        password: &str,
    ) -> Result<TokenResponse, FetchError> {
        form::password_login(
            self.fetcher.http(),
            &self.settings,
            Secret::new(username),
            Secret::new(password),
        )
        .await
    }

    /// Keeps what a login (or the password form) got for `user`: only the
    /// tokens.
    pub async fn connect(&self, user: &str, resp: TokenResponse) -> Result<(), FetchError> {
        let key = digest(user);
        let record = record_of(&self.settings, resp, None)?;
        self.records.save(&key, &record).await;
        self.forget(&key);
        self.mark(key, true);
        Ok(())
    }

    /// `DELETE /users/CLIENT/USER`: the user's tokens go, here and in the store.
    pub async fn disconnect(&self, user: &str) {
        let key = digest(user);
        self.records.delete(&key).await;
        self.forget(&key);
    }

    /// Connected users seen by this process (never who they are).
    pub fn users(&self) -> usize {
        self.connected.lock().map_or(0, |c| c.len())
    }
}

fn digest(user: &str) -> UserKey {
    sha2::Sha256::digest(user.as_bytes()).into()
}

mod records;

use records::{record_of, Records, UserFetch};

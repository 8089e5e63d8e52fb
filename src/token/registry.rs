//! All clients' cache slots, keyed by client identity. It outlives config
//! reloads, so a client whose settings did not change keeps its token.

use std::sync::Arc;

use dashmap::DashMap;

use super::accounts::Accounts;
use super::cache::Slot;
use super::grants::Fetcher;
use super::model::FetchError;
use super::per_user::PerUser;
use super::store::SharedStore;
use super::tickets::Logins;
use crate::config::{ClientKey, ClientSettings, GrantSettings};
use crate::metrics::Metrics;

/// Where a route's tokens come from: one cache slot for the client, or one
/// per user for an on-behalf-of client.
#[derive(Clone)]
pub enum TokenSource {
    Client(Arc<Slot>),
    PerUser(Arc<PerUser>),
    /// Per-user accounts: one token per end user who connected.
    Account(Arc<Accounts>),
}

impl TokenSource {
    pub(crate) fn settings(&self) -> &Arc<ClientSettings> {
        match self {
            Self::Client(s) => &s.settings,
            Self::PerUser(p) => &p.settings,
            Self::Account(a) => &a.settings,
        }
    }
}

pub(crate) struct Registry {
    slots: DashMap<ClientKey, TokenSource>,
    /// Per slot, the `Egress::digest` its fetcher was built with: a
    /// reload that changes `token_proxy` or the roots gets a new fetcher.
    egress: DashMap<ClientKey, u64>,
    metrics: Arc<Metrics>,
    /// `[store]`, used by every client's slot (not per-user ones).
    store: Option<Arc<SharedStore>>,
    /// Login links and logins in progress of per-user accounts.
    pub logins: Arc<Logins>,
}

impl Registry {
    pub(crate) fn new(metrics: Arc<Metrics>) -> Self {
        Self::with_store(metrics, None)
    }

    pub(crate) fn with_store(metrics: Arc<Metrics>, store: Option<Arc<SharedStore>>) -> Self {
        Self {
            slots: DashMap::new(),
            egress: DashMap::new(),
            metrics,
            store,
            logins: Arc::new(Logins::new()),
        }
    }

    /// The token source for `settings`: the existing one if a client with
    /// the same settings (under any name) had one, so identical clients
    /// share one token and one fetch, and a reload keeps it; else a new,
    /// empty one.
    pub(crate) fn source(
        &self,
        settings: &Arc<ClientSettings>,
        egress: &crate::config::Egress,
    ) -> Result<TokenSource, FetchError> {
        let key = settings.cache_key();
        // Clone out: no dashmap guard lives past this statement.
        let existing = self.slots.get(&key).map(|r| r.value().clone());
        let egress_digest = egress.digest();
        let same_egress = self.egress.get(&key).map(|r| *r.value()) == Some(egress_digest);
        if let Some(source) = existing.filter(|s| same_egress && s.settings().same_client(settings))
        {
            return Ok(source);
        }
        let fetcher = Fetcher::new(settings, egress)?;
        let metrics = Arc::clone(&self.metrics);
        if let Some(header) = &settings.user {
            let source = TokenSource::Account(Accounts::new(
                Arc::clone(settings),
                header.clone(),
                fetcher,
                metrics,
                self.store.clone(),
                Arc::clone(&self.logins),
            ));
            self.slots.insert(key, source.clone());
            return Ok(source);
        }
        let source = match &settings.grant {
            GrantSettings::TokenExchange {
                subject_header: Some(header),
                max_subjects,
                ..
            } => TokenSource::PerUser(PerUser::new(
                Arc::clone(settings),
                header.clone(),
                *max_subjects,
                fetcher,
                metrics,
            )),
            _ => TokenSource::Client(Slot::with_store(
                Arc::clone(settings),
                Box::new(fetcher),
                metrics,
                self.store.clone(),
            )),
        };
        self.slots.insert(key, source.clone());
        self.egress.insert(key, egress_digest);
        Ok(source)
    }

    /// The source of a client, if it has one (never creates it).
    pub(crate) fn get(&self, settings: &ClientSettings) -> Option<TokenSource> {
        let by_key = self
            .slots
            .get(&settings.cache_key())
            .map(|r| r.value().clone());
        // A secret file that rotated since the slot was made changes the
        // key, not the slot that serves the client until the next reload.
        by_key.or_else(|| {
            self.slots
                .iter()
                .find(|r| r.value().settings().same_client(settings))
                .map(|r| r.value().clone())
        })
    }

    fn client_slots(&self) -> Vec<Arc<Slot>> {
        self.slots
            .iter()
            .filter_map(|r| match r.value() {
                TokenSource::Client(s) => Some(Arc::clone(s)),
                TokenSource::PerUser(_) | TokenSource::Account(_) => None,
            })
            .collect()
    }

    /// Drops slots no client of the current config uses.
    pub(crate) fn retain(&self, keys: &[ClientKey]) {
        self.slots.retain(|k, _| keys.contains(k));
        self.egress.retain(|k, _| keys.contains(k));
    }

    /// Lets every client notice changed secret files.
    pub(crate) fn check_files(&self) {
        for s in self.client_slots() {
            s.check_files();
        }
    }

    pub(crate) fn update_gauges(&self) {
        for s in self.client_slots() {
            s.update_gauge();
        }
    }
}

//! All clients' cache slots, keyed by client identity. It outlives config
//! reloads, so a client whose settings did not change keeps its token.

use std::path::PathBuf;
use std::sync::Arc;

use dashmap::DashMap;

use super::cache::Slot;
use super::grants::Fetcher;
use super::model::FetchError;
use crate::config::ClientSettings;
use crate::metrics::Metrics;

pub struct TokenStore {
    slots: DashMap<u64, Arc<Slot>>,
    metrics: Arc<Metrics>,
}

impl TokenStore {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            slots: DashMap::new(),
            metrics,
        }
    }

    /// The slot for `settings`: the existing one if an identical client had
    /// one (same key and same settings), else a new, empty one.
    pub fn slot(
        &self,
        settings: &Arc<ClientSettings>,
        extra_roots: &[PathBuf],
    ) -> Result<Arc<Slot>, FetchError> {
        let key = settings.cache_key();
        // Clone the Arc out: no dashmap guard lives past this statement.
        let existing = self.slots.get(&key).map(|r| Arc::clone(r.value()));
        if let Some(slot) = existing.filter(|s| *s.settings == **settings) {
            return Ok(slot);
        }
        let fetcher = Fetcher::new(settings, extra_roots)?;
        let slot = Slot::new(
            Arc::clone(settings),
            Box::new(fetcher),
            Arc::clone(&self.metrics),
        );
        self.slots.insert(key, Arc::clone(&slot));
        Ok(slot)
    }

    /// The slot of a client, if it has one (never creates it).
    pub fn get(&self, settings: &ClientSettings) -> Option<Arc<Slot>> {
        self.slots
            .get(&settings.cache_key())
            .map(|r| Arc::clone(r.value()))
    }

    /// Drops slots no client of the current config uses.
    pub fn retain(&self, keys: &[u64]) {
        self.slots.retain(|k, _| keys.contains(k));
    }

    /// Lets every client notice changed secret files.
    pub fn check_files(&self) {
        let slots: Vec<Arc<Slot>> = self.slots.iter().map(|r| Arc::clone(r.value())).collect();
        for s in slots {
            s.check_files();
        }
    }

    pub fn update_gauges(&self) {
        let slots: Vec<Arc<Slot>> = self.slots.iter().map(|r| Arc::clone(r.value())).collect();
        for s in slots {
            s.update_gauge();
        }
    }
}

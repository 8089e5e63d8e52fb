//! The serving state: `Runtime` is everything compiled from one config
//! (route table, token slots, upstream client), swapped whole on reload;
//! `Shared` is what outlives reloads (metrics, token store, readiness).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::config::{self, ValidConfig};
use crate::drain::Drain;
use crate::metrics::{Metrics, OutcomeLabel};
use crate::route::{Route, RouteTable};
use crate::tls::Interceptor;
use crate::token::Registry;
use crate::upstream::Upstream;

pub(crate) struct Runtime {
    pub config: ValidConfig,
    pub routes: RouteTable,
    pub upstream: Upstream,
    /// Present when `[tls]` has a CA: CONNECTs to routed hosts are intercepted.
    pub intercept: Option<Arc<Interceptor>>,
}

impl Runtime {
    /// `previous`: the runtime being replaced on reload, whose upstream
    /// client (and its pooled connections) is kept if its settings did not
    /// change.
    pub(crate) fn build(
        config: ValidConfig,
        tokens: &Registry,
        previous: Option<&Runtime>,
    ) -> anyhow::Result<Self> {
        let token_egress = config.token_egress();
        let mut routes = Vec::with_capacity(config.routes.len());
        for settings in &config.routes {
            let credential = match &settings.client {
                Some(name) => {
                    let client = config.clients.get(name).ok_or_else(|| {
                        anyhow::anyhow!("route {:?}: client {name:?} is not defined", settings.name)
                    })?;
                    Some(crate::credential::Credential::new(
                        tokens
                            .source(client, &token_egress)
                            .map_err(|e| anyhow::anyhow!("client {name:?}: {e}"))?,
                        name.clone(),
                    ))
                }
                None => None,
            };
            routes.push(Route::new(settings.clone(), credential));
        }
        let (deny, timeout) = (
            &config.proxy.deny_destinations,
            config.proxy.upstream_timeout,
        );
        let max_idle = crate::upstream::idle_per_host(config.proxy.limits.max_connections);
        let egress = config.upstream_egress();
        let key = Upstream::key(deny, &egress, timeout, max_idle);
        let upstream = match previous.and_then(|p| p.upstream.reusable_for(key)) {
            Some(same) => same,
            None => Upstream::new(deny.clone(), &egress, timeout, max_idle)?,
        };
        let intercept = match &config.tls.ca {
            Some((cert, key)) => Some(Arc::new(Interceptor::load(cert, key)?)),
            None => None,
        };
        tokens.logins.configure(config.login.clone());
        // Only now that the config is accepted: forget clients it dropped.
        let keys: Vec<_> = config.clients.values().map(|c| c.cache_key()).collect();
        tokens.retain(&keys);
        Ok(Self {
            routes: RouteTable::new(routes),
            upstream,
            intercept,
            config,
        })
    }
}

pub struct Shared {
    /// Read by every request: a lock-free load, not a lock and unlock.
    runtime: ArcSwap<Runtime>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) tokens: Registry,
    /// Set at SIGTERM: `/readyz` answers 503 from then on.
    pub(crate) draining: AtomicBool,
    /// Every task carrying a client's bytes on the proxy port.
    pub(crate) drain: Arc<Drain>,
    /// Of the config file as last loaded: a watch event reloads only
    /// when the content changed.
    config_digest: Mutex<u64>,
}

fn content_digest(path: &std::path::Path) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::fs::read(path).ok().hash(&mut h);
    h.finish()
}

impl Shared {
    pub fn new(config: ValidConfig) -> anyhow::Result<Arc<Self>> {
        let config_digest = Mutex::new(content_digest(&config.path));
        let metrics = Arc::new(Metrics::new());
        // The store lives as long as the process: changing it needs a restart.
        let store = crate::token::store::SharedStore::build(
            &config.store,
            &config.tls,
            Arc::clone(&metrics),
        )?;
        let tokens = Registry::with_store(Arc::clone(&metrics), store);
        let runtime = Runtime::build(config, &tokens, None)?;
        let ca = runtime.intercept.as_ref().and_then(|i| i.ca_not_after());
        metrics.op.set_ca_expiry(ca);
        Ok(Arc::new(Self {
            runtime: ArcSwap::from_pointee(runtime),
            metrics,
            tokens,
            draining: AtomicBool::new(false),
            drain: Arc::new(Drain::new()),
            config_digest,
        }))
    }

    /// The current runtime; a request keeps the one it started with.
    pub(crate) fn runtime(&self) -> Arc<Runtime> {
        self.runtime.load_full()
    }

    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// A watched file changed: reload if the config's content did, and let
    /// clients whose secret files changed fetch anew.
    pub(crate) fn files_changed(&self) {
        let path = self.runtime().config.path.clone();
        let digest = content_digest(&path);
        let changed = {
            let mut seen = self.config_digest.lock().unwrap_or_else(|p| p.into_inner());
            std::mem::replace(&mut *seen, digest) != digest
        };
        if changed {
            self.reload();
        }
        self.tokens.check_files();
    }

    /// Re-reads the config file. A config that fails validation is
    /// rejected and logged; the old one keeps serving.
    pub fn reload(&self) -> bool {
        let current = self.runtime();
        let path = current.config.path.clone();
        *self.config_digest.lock().unwrap_or_else(|p| p.into_inner()) = content_digest(&path);
        let result = config::load(&path)
            .map_err(|e| e.to_string())
            .and_then(|cfg| {
                if cfg.proxy.listen != current.config.proxy.listen
                    || cfg.proxy.admin != current.config.proxy.admin
                {
                    tracing::warn!(
                        "proxy.listen / proxy.admin changes take effect only after a restart"
                    );
                }
                if cfg.proxy.workers != current.config.proxy.workers {
                    tracing::warn!("proxy.workers changes take effect only after a restart");
                }
                if cfg.store != current.config.store {
                    tracing::warn!("[store] changes take effect only after a restart");
                }
                if cfg.login.as_ref().map(|l| l.listen)
                    != current.config.login.as_ref().map(|l| l.listen)
                {
                    tracing::warn!("login.listen changes take effect only after a restart");
                }
                Runtime::build(cfg, &self.tokens, Some(&current)).map_err(|e| format!("{e:#}"))
            });
        let ok = match result {
            Ok(rt) => {
                let routes = rt.routes.routes().len();
                self.runtime.store(Arc::new(rt));
                tracing::info!(config = %path.display(), routes, "config reloaded");
                true
            }
            Err(e) => {
                tracing::error!(config = %path.display(), error = %e, "config reload rejected; the previous config keeps serving");
                false
            }
        };
        let outcome = if ok { "ok" } else { "error" };
        self.metrics
            .reloads
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
        self.metrics.op.reloaded(ok);
        let ca = self
            .runtime()
            .intercept
            .as_ref()
            .and_then(|i| i.ca_not_after());
        self.metrics.op.set_ca_expiry(ca);
        ok
    }
}

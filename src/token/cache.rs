//! One client's token: fetched once however many requests wait for it,
//! refreshed in the background ahead of expiry, never served after expiry,
//! and retried with backoff and jitter while the endpoint fails.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures_util::future::{BoxFuture, FutureExt};
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tracing::Instrument;

use super::model::{FetchError, Token, TokenResponse};
use super::store::SharedStore;
use crate::config::ClientSettings;
use crate::metrics::{ClientLabel, FetchLabels, Metrics};
use crate::secret::Secret;

/// Every request waiting for the one fetch polls a clone of it.
type Inflight = futures_util::future::Shared<BoxFuture<'static, Result<Arc<Token>, FetchError>>>;

/// Asks a token endpoint once; `grants::Fetcher` in production, fakes in tests.
pub trait FetchToken: Send + Sync + 'static {
    fn fetch<'a>(
        &'a self,
        s: &'a ClientSettings,
    ) -> BoxFuture<'a, Result<TokenResponse, FetchError>>;

    /// The refresh token the next fetch would present, if the grant has one.
    fn refresh_token(&self) -> Option<Secret> {
        None
    }

    /// Takes a newer refresh token (rotated by another replica).
    fn adopt_refresh_token(&self, _token: Secret) {}
}

const BACKOFF_START: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// The cache entry of one client (shared by every route that uses it).
pub struct Slot {
    pub settings: Arc<ClientSettings>,
    fetcher: Box<dyn FetchToken>,
    metrics: Arc<Metrics>,
    state: Mutex<State>,
    /// Digest of the `<<file:…>>` contents the cached token was made from.
    files: Mutex<u64>,
    /// Refresh in the background ahead of expiry. Off for per-user slots:
    /// thousands of idle users must not keep the IdP busy.
    refresh_ahead: bool,
    /// `[store]`: consulted when this slot has to fetch.
    store: Option<Arc<SharedStore>>,
}

#[derive(Default)]
struct State {
    current: Option<Arc<Token>>,
    inflight: Option<Inflight>,
    failures: u32,
    /// While set and in the future, no fetch starts (backoff).
    retry_at: Option<Instant>,
    last_error: Option<FetchError>,
    fetched_ok: u64,
    fetched_err: u64,
    /// A request wanted a token since the last attempt; an idle client
    /// stops retrying instead of polling a dead endpoint forever.
    demand: bool,
    timer: Option<AbortHandle>,
    /// Set when a freshly fetched token was rejected too: the upstream's
    /// 401s are not about token age, so refetching would only hammer the
    /// token endpoint. Until then, 401s go back to the app as they are.
    distrust_401_until: Option<Instant>,
    /// The last token a 401 rejected: never taken back from `[store]`.
    rejected: Option<Arc<Token>>,
    /// `rejected` is still to be removed from `[store]` (at the next fetch,
    /// before the store is read).
    discard: bool,
    /// Issue time (Unix ms) of the newest token this slot held: a stored
    /// token older than it (an old sealed value written back) is not taken.
    newest_issued_ms: u64,
    /// When a request last asked for a token: a client idle for
    /// `idle_after` stops refreshing in the background.
    last_used: Option<Instant>,
}

/// The running fetch of one slot. Dropped without `land` (the task
/// panicked or was aborted), it records a failure, so the slot backs off
/// and retries instead of waiting forever on a fetch that will not finish.
struct Flight(Option<Arc<Slot>>);

impl Flight {
    fn land(mut self, result: Result<Arc<Token>, FetchError>) -> Result<Arc<Token>, FetchError> {
        if let Some(slot) = self.0.take() {
            slot.record(&result);
        }
        result
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        if let Some(slot) = self.0.take() {
            slot.record(&Err(FetchError::Setup(
                "the token fetch did not finish".into(),
            )));
        }
    }
}

/// How long 401s are passed through after a fresh token was also rejected.
const DISTRUST_401_FOR: Duration = Duration::from_secs(30);

impl Drop for State {
    fn drop(&mut self) {
        if let Some(t) = self.timer.take() {
            t.abort();
        }
    }
}

impl Slot {
    pub fn new(
        settings: Arc<ClientSettings>,
        fetcher: Box<dyn FetchToken>,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Self::build(settings, fetcher, metrics, true, None)
    }

    /// A client's slot that also keeps its token in `store` (`[store]`),
    /// so a restart or another replica finds it there.
    pub fn with_store(
        settings: Arc<ClientSettings>,
        fetcher: Box<dyn FetchToken>,
        metrics: Arc<Metrics>,
        store: Option<Arc<SharedStore>>,
    ) -> Arc<Self> {
        Self::build(settings, fetcher, metrics, true, store)
    }

    /// A slot that fetches only when a request needs a token (no refresh
    /// ahead of expiry): one user's slot of an on-behalf-of client.
    pub fn on_demand(
        settings: Arc<ClientSettings>,
        fetcher: Box<dyn FetchToken>,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Self::build(settings, fetcher, metrics, false, None)
    }

    fn build(
        settings: Arc<ClientSettings>,
        fetcher: Box<dyn FetchToken>,
        metrics: Arc<Metrics>,
        refresh_ahead: bool,
        store: Option<Arc<SharedStore>>,
    ) -> Arc<Self> {
        let files = Mutex::new(inspect::files_digest(&settings));
        Arc::new(Self {
            settings,
            fetcher,
            metrics,
            state: Mutex::new(State::default()),
            files,
            refresh_ahead,
            store,
        })
    }

    pub fn name(&self) -> &str {
        &self.settings.name
    }

    /// A valid token, from the cache or from one shared fetch. While the
    /// endpoint is in backoff and no token is valid, fails at once.
    pub async fn get(self: &Arc<Self>) -> Result<Arc<Token>, FetchError> {
        let fut = {
            let mut st = self.lock();
            st.last_used = Some(Instant::now());
            if let Some(t) = st.current.as_ref().filter(|t| t.is_valid()) {
                return Ok(t.clone());
            }
            st.current = None;
            st.demand = true;
            match (&st.inflight, st.retry_at) {
                (Some(f), _) => f.clone(),
                (None, Some(at)) if Instant::now() < at => {
                    return Err(st
                        .last_error
                        .clone()
                        .unwrap_or_else(|| FetchError::Setup("token endpoint failing".into())))
                }
                (None, _) => self.start_fetch(&mut st),
            }
        };
        fut.await
    }

    /// The cached token if still valid, without fetching.
    pub fn peek(&self) -> Option<Arc<Token>> {
        self.lock().current.clone().filter(|t| t.is_valid())
    }

    /// The upstream rejected `token` (401): forget it, unless a newer one
    /// has replaced it meanwhile, so the next `get` fetches afresh.
    pub fn invalidate(&self, token: &Arc<Token>) {
        let mut st = self.lock();
        if st.current.as_ref().is_some_and(|c| Arc::ptr_eq(c, token)) {
            st.current = None;
            // A rejected token is no reason to wait out an old backoff.
            st.retry_at = None;
            st.rejected = Some(Arc::clone(token));
            st.discard = self.store.is_some();
        }
    }

    /// Whether a 401 should drop the token and retry (see `distrust_401`).
    pub fn trusts_401(&self) -> bool {
        self.lock()
            .distrust_401_until
            .is_none_or(|t| Instant::now() >= t)
    }

    /// A retry with a fresh token got 401 as well.
    pub fn distrust_401(&self) {
        tracing::warn!(client = %self.settings.name, "a fresh token was rejected too (401): passing 401s through for {DISTRUST_401_FOR:?} instead of refetching");
        self.lock().distrust_401_until = Some(Instant::now() + DISTRUST_401_FOR);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave State inconsistent
        // (every write is a single field), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts the one fetch. It runs as its own task, so it completes (and
    /// fills the cache) even if every waiting request goes away; waiters
    /// share the task's result. However the task ends (a result, a panic,
    /// an abort at shutdown), `Flight` clears the in-flight state, so one
    /// bad response can never leave this client stuck.
    fn start_fetch(self: &Arc<Self>, st: &mut State) -> Inflight {
        let me = Arc::clone(self);
        let flight = Flight(Some(Arc::clone(self)));
        // A child of the request that started it (if any: a background
        // refresh is a trace of its own); a no-op without `[telemetry]`.
        let span = crate::telemetry::fetch_span(&self.settings.name, self.settings.grant.name());
        let task = tokio::spawn(
            async move {
                let result = me.fetch().await;
                crate::telemetry::fetch_done(&tracing::Span::current(), result.is_ok());
                flight.land(result)
            }
            .instrument(span),
        );
        let fut = async move {
            task.await.unwrap_or_else(|e| {
                let why = if e.is_panic() {
                    "panicked"
                } else {
                    "was cancelled"
                };
                Err(FetchError::Setup(format!("the token fetch {why}")))
            })
        }
        .boxed()
        .shared();
        st.inflight = Some(fut.clone());
        fut
    }

    /// A new token: from the store when one is configured (see `stored`),
    /// else one request to the endpoint.
    async fn fetch(&self) -> Result<Arc<Token>, FetchError> {
        match &self.store {
            Some(store) => self.fetch_with_store(store).await,
            None => self.fetch_here().await,
        }
    }

    /// One request to the endpoint, bounded by the client's timeout.
    async fn fetch_here(&self) -> Result<Arc<Token>, FetchError> {
        let started = Instant::now();
        let result = self.ask_endpoint().await;
        // One sample per request to the endpoint, failed ones included.
        let outcome = if result.is_ok() { "ok" } else { "error" };
        self.metrics
            .op
            .fetch_duration
            .get_or_create(&FetchLabels {
                client: self.settings.name.clone(),
                outcome,
            })
            .observe(started.elapsed().as_secs_f64());
        result
    }

    async fn ask_endpoint(&self) -> Result<Arc<Token>, FetchError> {
        let timeout = self.settings.timeout;
        let resp = match tokio::time::timeout(timeout, self.fetcher.fetch(&self.settings)).await {
            Ok(r) => r?,
            Err(_) => return Err(FetchError::Timeout(timeout)),
        };
        Token::from_response(resp, self.settings.default_ttl).map(Arc::new)
    }

    /// Records the outcome of a fetch: the new token and its refresh time,
    /// or the error and the next retry.
    fn record(self: &Arc<Self>, result: &Result<Arc<Token>, FetchError>) {
        let outcome = if result.is_ok() { "ok" } else { "error" };
        self.metrics
            .token_fetches
            .get_or_create(&FetchLabels {
                client: self.settings.name.clone(),
                outcome,
            })
            .inc();
        let mut st = self.lock();
        st.inflight = None;
        st.demand = false;
        match result {
            Ok(_) => st.fetched_ok += 1,
            Err(_) => st.fetched_err += 1,
        }
        match result {
            Ok(token) => {
                st.current = Some(token.clone());
                let issued = token.to_stored().issued_unix_ms;
                st.newest_issued_ms = st.newest_issued_ms.max(issued);
                st.failures = 0;
                st.retry_at = None;
                st.last_error = None;
                let at = refresh_at(token, self.settings.refresh_before);
                tracing::info!(client = %self.settings.name, expires_in_s = token.lifetime().as_secs(), refresh_in_s = at.saturating_duration_since(Instant::now()).as_secs(), "token fetched");
                if self.refresh_ahead {
                    self.schedule(&mut st, at);
                }
            }
            Err(e) => {
                st.failures = st.failures.saturating_add(1);
                let delay = backoff(st.failures);
                st.retry_at = Some(Instant::now() + delay);
                st.last_error = Some(e.clone());
                tracing::warn!(client = %self.settings.name, error = %e, failures = st.failures, retry_in_ms = delay.as_millis() as u64, "token fetch failed");
                self.schedule(&mut st, Instant::now() + delay);
            }
        }
    }

    /// Arms the one timer of this slot: a refresh ahead of expiry, or a retry.
    fn schedule(self: &Arc<Self>, st: &mut State, at: Instant) {
        if let Some(t) = st.timer.take() {
            t.abort();
        }
        let weak: Weak<Self> = Arc::downgrade(self);
        let task = tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            if let Some(me) = weak.upgrade() {
                me.background_fetch();
            }
        });
        st.timer = Some(task.abort_handle());
    }

    fn background_fetch(self: &Arc<Self>) {
        let mut st = self.lock();
        st.timer = None;
        // Unused for idle_after: no more refreshes (some IdPs bill per
        // token); the next request fetches on demand.
        let in_use = st
            .last_used
            .is_some_and(|at| at.elapsed() < self.settings.idle_after);
        let wanted = st.demand
            || (self.refresh_ahead && in_use && st.current.as_ref().is_some_and(|t| t.is_valid()));
        if self.refresh_ahead && !in_use && !st.demand {
            tracing::debug!(client = %self.settings.name, idle_after = ?self.settings.idle_after, "no request for idle_after: not refreshing in the background");
        }
        if st.inflight.is_none() && wanted {
            drop(self.start_fetch(&mut st));
        }
    }

    /// Publishes seconds-to-expiry for `/metrics`.
    pub fn update_gauge(&self) {
        let token = self.peek();
        let left = token.as_ref().map_or(0.0, |t| t.expires_in().as_secs_f64());
        let label = ClientLabel {
            client: self.settings.name.clone(),
        };
        self.metrics
            .token_expires_in
            .get_or_create(&label)
            .set(left);
        // A wall-clock expiry, and no sample at all without a valid token
        // (a 0 would read as "expired in 1970" to an alert).
        let expiry = &self.metrics.op.token_expiry;
        match token {
            Some(t) => {
                let at = crate::metrics::unix_now() + t.expires_in();
                expiry.get_or_create(&label).set(at.as_secs_f64());
            }
            None => {
                expiry.remove(&label);
            }
        }
    }
}

/// `expiry - refresh_before`, but never before half of the token's
/// lifetime nor after 90% of it.
pub(crate) fn refresh_at(token: &Token, refresh_before: Duration) -> Instant {
    let life = token.lifetime();
    let earliest = token.issued_at + life / 2;
    let latest = token.issued_at + life.mul_f64(0.9);
    let wanted = token
        .expires_at
        .checked_sub(refresh_before)
        .unwrap_or(token.issued_at);
    wanted.clamp(earliest, latest)
}

/// 0.5 s doubling to 30 s, with ±20% jitter so a fleet of sidecars does
/// not retry in lockstep.
pub(crate) fn backoff(failures: u32) -> Duration {
    let exp = BACKOFF_START.saturating_mul(1u32 << failures.saturating_sub(1).min(10));
    let base = exp.min(BACKOFF_MAX);
    let jitter = rand::random::<f64>() * 0.4 + 0.8;
    base.mul_f64(jitter).min(BACKOFF_MAX)
}

mod inspect;
mod stored;
#[cfg(test)]
mod tests;

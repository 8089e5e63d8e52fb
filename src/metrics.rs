//! Prometheus metrics (SPEC "Admin endpoints"), registered once and shared
//! by the listener, the proxy pipeline and the token cache.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

mod operator;
mod process;

pub(crate) use operator::{unix_now, ErrorLabels, HandshakeFailure, Operator};

/// A route's name as a label value: the route's own `Arc<str>`, so
/// counting a request clones a reference, not a string.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct RouteName(pub Arc<str>);

impl EncodeLabelValue for RouteName {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&&*self.0, encoder)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: RouteName,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    pub route: RouteName,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FetchLabels {
    pub client: String,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClientLabel {
    pub client: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreLabels {
    pub op: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub duration: Family<RouteLabel, Histogram>,
    pub token_fetches: Family<FetchLabels, Counter>,
    pub token_expires_in: Family<ClientLabel, Gauge<f64, AtomicU64>>,
    pub reloads: Family<OutcomeLabel, Counter>,
    pub connections_open: Gauge,
    pub connections_cut: Counter,
    pub store_operations: Family<StoreLabels, Counter>,
    /// What on-call reads first: errors by code, fetch latency, expiry, reloads, TLS.
    pub op: Operator,
    /// Connected users of per-user clients.
    pub login_users: Family<ClientLabel, Gauge>,
    /// Route labels of requests no route handled, made once.
    unmatched: Arc<str>,
    connect: Arc<str>,
}

/// The route label of a request no route handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unrouted {
    /// A request no route matches, passed through.
    Unmatched,
    /// A CONNECT (tunnelled, intercepted or refused).
    Connect,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// The shared label for a request no route handled (`unmatched`,
    /// `connect`): a reference count, no allocation.
    pub(crate) fn fixed_label(&self, which: Unrouted) -> RouteName {
        RouteName(match which {
            Unrouted::Unmatched => Arc::clone(&self.unmatched),
            Unrouted::Connect => Arc::clone(&self.connect),
        })
    }

    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        // Buckets from 100µs: sidekey's own overhead lives at the bottom.
        let duration = Family::<RouteLabel, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0,
            ])
        });
        let token_fetches = Family::<FetchLabels, Counter>::default();
        let token_expires_in = Family::<ClientLabel, Gauge<f64, AtomicU64>>::default();
        let reloads = Family::<OutcomeLabel, Counter>::default();
        let connections_open = Gauge::default();
        let connections_cut = Counter::default();
        let store_operations = Family::<StoreLabels, Counter>::default();
        let login_users = Family::<ClientLabel, Gauge>::default();
        registry.register(
            "sidekey_login_users",
            "Connected users of per-user clients, by client",
            login_users.clone(),
        );
        registry.register(
            "sidekey_requests",
            "Requests handled, by route and status",
            requests.clone(),
        );
        registry.register(
            "sidekey_request_duration_seconds",
            "Time from request head to response head, by route",
            duration.clone(),
        );
        registry.register(
            "sidekey_token_fetches",
            "Token endpoint requests, by client and outcome",
            token_fetches.clone(),
        );
        registry.register(
            "sidekey_token_expires_in_seconds",
            "Seconds until the cached token of each client expires",
            token_expires_in.clone(),
        );
        registry.register(
            "sidekey_config_reloads",
            "Config reloads, by outcome",
            reloads.clone(),
        );
        registry.register(
            "sidekey_connections_open",
            "Open client connections",
            connections_open.clone(),
        );
        registry.register(
            "sidekey_connections_cut",
            "Connections still open at the end of the drain timeout, closed at shutdown",
            connections_cut.clone(),
        );
        registry.register(
            "sidekey_store_operations",
            "Token store operations ([store]), by operation and outcome",
            store_operations.clone(),
        );
        let op = Operator::register(&mut registry);
        registry.register_collector(Box::new(process::ProcessCollector));
        Self {
            registry,
            op,
            requests,
            duration,
            token_fetches,
            token_expires_in,
            reloads,
            connections_open,
            unmatched: Arc::from("unmatched"),
            connect: Arc::from("connect"),
            connections_cut,
            store_operations,
            login_users,
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

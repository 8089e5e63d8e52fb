//! The metrics an on-call engineer reads first (SPEC "Admin endpoints"):
//! sidekey's own errors apart from the upstream's, token fetch latency and
//! expiry, the last reload, TLS handshake failures, the CA's expiry and the
//! build. Labels come from the config or fixed sets, never from a request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::{ClientLabel, FetchLabels, RouteName};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub route: RouteName,
    /// An `X-Sidekey-Error` code (SPEC "Errors from sidekey itself").
    pub code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct VersionLabel {
    pub version: &'static str,
}

/// Why an intercepted TLS handshake with the application failed: a fixed set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// The app rejected our certificate (alert bad_certificate, unknown_ca,
    /// certificate_unknown...): it does not trust the sidekey CA.
    UnknownCa,
    /// The ClientHello named another host than the CONNECT target.
    SniMismatch,
    /// No TLS version, cipher suite or ALPN protocol in common.
    NoSharedProtocol,
    /// No ClientHello or handshake within the time allowed.
    Timeout,
    Other,
}

impl HandshakeFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnknownCa => "unknown_ca",
            Self::SniMismatch => "sni_mismatch",
            Self::NoSharedProtocol => "no_shared_protocol",
            Self::Timeout => "timeout",
            Self::Other => "other",
        }
    }
}

pub struct Operator {
    pub errors: Family<ErrorLabels, Counter>,
    pub fetch_duration: Family<FetchLabels, Histogram>,
    pub token_expiry: Family<ClientLabel, Gauge<f64, AtomicU64>>,
    pub reload_success: Gauge,
    pub reload_timestamp: Gauge<f64, AtomicU64>,
    pub tls_failures: Family<ReasonLabel, Counter>,
    /// Unix seconds of the interception CA's `notAfter`; no sample without one.
    ca_expiry: Arc<AtomicU64>,
}

impl Operator {
    pub fn register(registry: &mut Registry) -> Self {
        let errors = Family::<ErrorLabels, Counter>::default();
        // Token endpoints answer in milliseconds to seconds; the client
        // timeout caps it (default 10 s).
        let fetch_duration = Family::<FetchLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ])
        });
        let token_expiry = Family::<ClientLabel, Gauge<f64, AtomicU64>>::default();
        let reload_success = Gauge::default();
        let reload_timestamp = Gauge::<f64, AtomicU64>::default();
        let tls_failures = Family::<ReasonLabel, Counter>::default();
        let build_info = Family::<VersionLabel, Gauge>::default();
        build_info
            .get_or_create(&VersionLabel {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        let ca_expiry = Arc::new(AtomicU64::new(0));
        registry.register(
            "sidekey_errors",
            "Responses sidekey produced itself, by route and X-Sidekey-Error code",
            errors.clone(),
        );
        registry.register(
            "sidekey_token_fetch_duration_seconds",
            "Token endpoint request duration, by client and outcome",
            fetch_duration.clone(),
        );
        registry.register(
            "sidekey_token_expiry_timestamp_seconds",
            "Unix time the cached token of each client expires (no sample without a token)",
            token_expiry.clone(),
        );
        registry.register(
            "sidekey_config_last_reload_success",
            "Whether the last config load or reload was accepted (1) or rejected (0)",
            reload_success.clone(),
        );
        registry.register(
            "sidekey_config_last_reload_timestamp_seconds",
            "Unix time of the last config load or reload attempt",
            reload_timestamp.clone(),
        );
        registry.register(
            "sidekey_tls_handshake_failures",
            "Intercepted TLS handshakes with the application that failed, by reason",
            tls_failures.clone(),
        );
        registry.register(
            "sidekey_build_info",
            "The running sidekey's version (always 1)",
            build_info,
        );
        registry.register_collector(Box::new(OptionalGauge {
            name: "sidekey_tls_ca_expiry_timestamp_seconds",
            help: "Unix time the interception CA certificate expires",
            value: Arc::clone(&ca_expiry),
        }));
        let me = Self {
            errors,
            fetch_duration,
            token_expiry,
            reload_success,
            reload_timestamp,
            tls_failures,
            ca_expiry,
        };
        // The config sidekey started with is the first accepted load.
        me.reloaded(true);
        me
    }

    /// A config load or reload was accepted or rejected.
    pub fn reloaded(&self, ok: bool) {
        self.reload_success.set(i64::from(ok));
        self.reload_timestamp.set(unix_now().as_secs_f64());
    }

    pub fn handshake_failed(&self, why: HandshakeFailure) {
        self.tls_failures
            .get_or_create(&ReasonLabel {
                reason: why.as_str(),
            })
            .inc();
    }

    /// The interception CA's `notAfter` (Unix seconds), or none.
    pub fn set_ca_expiry(&self, not_after: Option<i64>) {
        let secs = not_after.and_then(|s| u64::try_from(s).ok()).unwrap_or(0);
        self.ca_expiry.store(secs, Ordering::Relaxed);
    }
}

/// Time since the Unix epoch (zero for a clock before 1970).
pub(crate) fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// A gauge with no sample while its value is 0 (not set), so an alert on
/// it cannot fire for a feature that is not configured.
#[derive(Debug)]
struct OptionalGauge {
    name: &'static str,
    help: &'static str,
    value: Arc<AtomicU64>,
}

impl Collector for OptionalGauge {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let v = self.value.load(Ordering::Relaxed);
        if v == 0 {
            return Ok(());
        }
        let gauge = ConstGauge::new(v as f64);
        let metric = encoder.encode_descriptor(self.name, self.help, None, gauge.metric_type())?;
        gauge.encode(metric)
    }
}

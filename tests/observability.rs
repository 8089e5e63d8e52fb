//! What an operator runs sidekey by: metrics that tell sidekey's errors
//! from the upstream's, token fetch latency and expiry, the reload gauges,
//! TLS handshake failures by reason, and log fields as numbers and plain
//! strings. Actors in every test:
//! // App: reqwest (or a raw TLS client) through the proxy.
//! // Proxy: sidekey, in-process on 127.0.0.1:0 (or the binary for logs).
//! // Upstream: records what arrived. Token server: counts calls, can fail.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed setup step should fail the test loudly"
)]

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use support::config;
use support::intercept::{connect_tls, Interception};
use support::pki::new_ca;
use support::sidekey::{Binary, Proxy};
use support::token_server::{Mode, TokenServer};
use support::upstream::Upstream;
use support::{expect_error, get_via_proxy};

fn client(name: &str, ts: &TokenServer) -> String {
    config::client(name, &ts.url("/oauth2/token")).to_string()
}

/// Route `name` for `host`, a Bearer route when it has a client.
fn route(name: &str, host: &str, client: Option<&str>) -> String {
    let r = config::route(name).host(host);
    match client {
        Some(c) => r.client(c).bearer(),
        None => r,
    }
    .to_string()
}

/// The value of the sample that starts with `series` (name and labels).
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[tokio::test]
async fn sidekeys_503_is_counted_apart_from_the_upstreams_503() {
    // Token server: down, so route "api" has no token.
    let ts = TokenServer::start().await;
    ts.set_mode(Mode::Fail(500));
    // Upstream: answers 503 itself on route "plain".
    let up = Upstream::start().await;
    up.set_responder(|_| Some((503, vec![], "busy".into())));
    let cfg = format!(
        "{}{}{}",
        client("orders", &ts),
        route("api", "localhost", Some("orders")),
        route("plain", "127.0.0.1", None)
    );
    let proxy = Proxy::start("", &cfg).await;
    let app = proxy.client();
    let port = up.addr.port();
    let ours = get_via_proxy(&app, format!("http://localhost:{port}/")).await;
    expect_error(ours, 503, "token_unavailable").await;
    let theirs = app
        .get(format!("http://127.0.0.1:{port}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(theirs.status(), 503);
    assert!(theirs.headers().get("x-sidekey-error").is_none());
    let m = proxy.metrics().await;
    let ours = "sidekey_errors_total{route=\"api\",code=\"token_unavailable\"}";
    assert_eq!(sample(&m, ours), Some(1.0), "{m}");
    assert!(
        !m.contains("sidekey_errors_total{route=\"plain\""),
        "the upstream's 503 is not sidekey's error:\n{m}"
    );
    // Both are 503s to the request counter.
    let by_status = |r: &str| format!("sidekey_requests_total{{route=\"{r}\",status=\"503\"}}");
    assert_eq!(sample(&m, &by_status("api")), Some(1.0), "{m}");
    assert_eq!(sample(&m, &by_status("plain")), Some(1.0), "{m}");
    assert_eq!(up.count(), 1, "only the plain request reached the upstream");
    proxy.shutdown().await;
}

#[tokio::test]
async fn every_token_fetch_is_one_histogram_sample_and_expiry_is_a_timestamp() {
    // Token server: tokens for "orders" live 300 s; "broken" always fails.
    let ts = TokenServer::start().await;
    ts.set_ttl(300);
    let down = TokenServer::start().await;
    down.set_mode(Mode::Fail(500));
    // Upstream: rejects the first token (401), so sidekey fetches again.
    let up = Upstream::start().await;
    let rejected = Arc::new(AtomicBool::new(false));
    let once = Arc::clone(&rejected);
    up.set_responder(move |_| {
        (!once.swap(true, Ordering::SeqCst)).then(|| (401, vec![], "".into()))
    });
    let cfg = format!(
        "{}{}{}{}{}",
        client("orders", &ts),
        client("broken", &down),
        client("idle", &ts),
        route("api", "localhost", Some("orders")),
        route("down", "127.0.0.1", Some("broken")),
    );
    let proxy = Proxy::start("", &cfg).await;
    let app = proxy.client();
    let port = up.addr.port();
    let before = now();
    let ok = app
        .get(format!("http://localhost:{port}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        ok.status(),
        200,
        "the retry with a fresh token went through"
    );
    let failed = app
        .get(format!("http://127.0.0.1:{port}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(failed.status(), 503);
    assert_eq!((ts.calls(), down.calls()), (2, 1));
    let m = proxy.metrics().await;
    let count = |c: &str, o: &str| {
        format!("sidekey_token_fetch_duration_seconds_count{{client=\"{c}\",outcome=\"{o}\"}}")
    };
    let fetches =
        |c: &str, o: &str| format!("sidekey_token_fetches_total{{client=\"{c}\",outcome=\"{o}\"}}");
    assert_eq!(sample(&m, &count("orders", "ok")), Some(2.0), "{m}");
    assert_eq!(sample(&m, &fetches("orders", "ok")), Some(2.0), "{m}");
    assert_eq!(sample(&m, &count("broken", "error")), Some(1.0), "{m}");
    let sum = "sidekey_token_fetch_duration_seconds_sum{client=\"orders\",outcome=\"ok\"}";
    assert!(sample(&m, sum).is_some_and(|s| s > 0.0), "{m}");
    // Expiry: a wall-clock time about 300 s ahead; no sample for clients
    // without a token (never fetched, or failing).
    let expiry = sample(
        &m,
        "sidekey_token_expiry_timestamp_seconds{client=\"orders\"}",
    )
    .unwrap_or_else(|| panic!("no expiry for orders:\n{m}"));
    assert!(
        expiry > before + 250.0 && expiry <= now() + 301.0,
        "expiry {expiry} vs now {}",
        now()
    );
    for c in ["idle", "broken"] {
        let series = format!("sidekey_token_expiry_timestamp_seconds{{client=\"{c}\"}}");
        assert!(!m.contains(&series), "{series} has a sample:\n{m}");
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn reload_gauge_goes_to_0_on_a_rejected_config_and_back_to_1() {
    let proxy = Proxy::start("", &route("plain", "localhost", None)).await;
    let server = proxy.server.as_ref().unwrap();
    let m = proxy.metrics().await;
    assert_eq!(
        sample(&m, "sidekey_config_last_reload_success"),
        Some(1.0),
        "{m}"
    );
    let loaded = sample(&m, "sidekey_config_last_reload_timestamp_seconds").unwrap();
    assert!(loaded > now() - 60.0, "{m}");

    // A config that fails validation: rejected, the old one keeps serving.
    proxy.write_config(
        "",
        "[[routes]]\nname = \"bad\"\nhosts = []\nbogus_key = 1\n",
    );
    assert!(!server.reload());
    let m = proxy.metrics().await;
    assert_eq!(
        sample(&m, "sidekey_config_last_reload_success"),
        Some(0.0),
        "{m}"
    );
    let rejected = sample(&m, "sidekey_config_last_reload_timestamp_seconds").unwrap();
    assert!(rejected >= loaded, "{m}");

    proxy.write_config("", &route("plain2", "localhost", None));
    assert!(server.reload());
    let m = proxy.metrics().await;
    assert_eq!(
        sample(&m, "sidekey_config_last_reload_success"),
        Some(1.0),
        "{m}"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn handshake_failures_are_counted_by_reason() {
    // Upstream: TLS on localhost. Proxy: intercepts route "tls".
    let f = Interception::start("", &route("tls", "localhost", None)).await;
    let port = f.up.addr.port();
    // App 1: does not trust sidekey's CA (it trusts some other CA).
    let stranger = new_ca("the app's own CA");
    let err = connect_tls(f.proxy.addr, port, &stranger, "localhost", &[])
        .await
        .err();
    assert!(err.is_some(), "a client without sidekey's CA must fail");
    // App 2: names another host in its ClientHello than its CONNECT.
    let err = connect_tls(f.proxy.addr, port, &f.sidekey_ca, "other.example", &[])
        .await
        .err();
    assert!(err.is_some(), "an SNI mismatch must be refused");
    let want =
        |reason: &str| format!("sidekey_tls_handshake_failures_total{{reason=\"{reason}\"}}");
    support::eventually(Duration::from_secs(10), "both failures counted", || async {
        let m = f.proxy.metrics().await;
        sample(&m, &want("unknown_ca")) == Some(1.0)
            && sample(&m, &want("sni_mismatch")) == Some(1.0)
    })
    .await;
    // The CA's expiry is published for the "CA expiring" alert.
    let m = f.proxy.metrics().await;
    let ca = sample(&m, "sidekey_tls_ca_expiry_timestamp_seconds").unwrap();
    assert!(ca > now(), "{m}");
}

#[tokio::test]
async fn build_info_and_process_metrics_are_exposed() {
    let proxy = Proxy::start("", &route("plain", "localhost", None)).await;
    let m = proxy.metrics().await;
    let build = format!(
        "sidekey_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(sample(&m, &build), Some(1.0), "{m}");
    for name in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
    ] {
        assert!(sample(&m, name).is_some(), "missing {name}:\n{m}");
    }
    assert!(sample(&m, "process_resident_memory_bytes").unwrap() > 1e6);
    // Without [tls] there is no CA, so no expiry sample to alert on.
    assert!(
        !m.contains("sidekey_tls_ca_expiry_timestamp_seconds "),
        "{m}"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn log_fields_are_numbers_and_plain_strings_with_the_error_code() {
    // Token server: down. Proxy: the binary, logging JSON to a pipe.
    let ts = TokenServer::start().await;
    ts.set_mode(Mode::Fail(500));
    let cfg = format!(
        "{}{}",
        client("orders", &ts),
        route("api", "localhost", Some("orders"))
    );
    let bin = Binary::start("", &cfg, &[]).await;
    let resp = bin
        .client()
        .get("http://localhost:9/")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    let lines = || -> Vec<serde_json::Value> {
        bin.logs()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    support::eventually(Duration::from_secs(10), "the access line", || async {
        lines().iter().any(|l| l["target"] == "sidekey::access")
    })
    .await;
    let lines = lines();
    let find = |msg: &str| {
        lines
            .iter()
            .find(|l| l["message"] == msg)
            .unwrap_or_else(|| panic!("no {msg:?} line in {lines:#?}"))
    };
    let start = find("sidekey listening");
    assert_eq!(start["admin"], bin.admin.to_string(), "{start}");
    assert_eq!(start["proxy_addr"], bin.addr.to_string(), "{start}");
    let failed = find("token fetch failed");
    assert!(failed["retry_in_ms"].is_u64(), "{failed}");
    assert!(failed["failures"].is_u64(), "{failed}");
    let access = lines
        .iter()
        .find(|l| l["target"] == "sidekey::access")
        .unwrap();
    assert_eq!(access["code"], "token_unavailable", "{access}");
    assert_eq!(access["status"], 503, "{access}");
    assert!(access["duration_ms"].is_number(), "{access}");
}

//! deploy/monitoring stays true to the code: every metric that an alert or a
//! dashboard panel names exists in a running sidekey's /metrics, so renaming
//! a metric cannot silently break an alert. Actors:
//! // App: reqwest through the proxy (plain and intercepted HTTPS), and a TLS
//! //   client that does not trust sidekey's CA.
//! // Proxy: sidekey in-process with interception and a redis [store].
//! // Upstream: TLS on localhost. Token servers: one working, one down.
//! // Redis: a real redis-server.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed setup step should fail the test loudly"
)]

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use support::intercept::{connect_tls, Interception};
use support::pki::new_ca;
use support::redis::Redis;
use support::token_server::{Mode, TokenServer};

fn monitoring(file: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/monitoring")
        .join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The `sidekey_*` and `process_*` metric names in a PromQL expression.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = expr.as_bytes();
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b':';
    let mut i = 0;
    while i < bytes.len() {
        if word(bytes[i]) && (i == 0 || !word(bytes[i - 1])) {
            let end = (i..bytes.len())
                .find(|&j| !word(bytes[j]))
                .unwrap_or(bytes.len());
            let w = &expr[i..end];
            if w.starts_with("sidekey_") || w.starts_with("process_") {
                names.insert(w.to_string());
            }
            i = end;
        } else {
            i += 1;
        }
    }
    names
}

/// Every PromQL expression of the rules file, which must be a PrometheusRule.
fn rule_exprs() -> Vec<String> {
    let rules: serde_norway::Value = serde_norway::from_str(&monitoring("prometheusrule.yaml"))
        .expect("prometheusrule.yaml parses");
    assert_eq!(rules["kind"].as_str(), Some("PrometheusRule"));
    let mut exprs = Vec::new();
    for group in rules["spec"]["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            assert!(rule["alert"].as_str().is_some(), "{rule:?}");
            assert!(
                rule["annotations"]["summary"].as_str().is_some(),
                "{rule:?}"
            );
            exprs.push(rule["expr"].as_str().unwrap().to_string());
        }
    }
    assert!(exprs.len() >= 6, "{exprs:?}");
    exprs
}

/// Every PromQL expression of the dashboard: panel targets and variables.
fn dashboard_exprs() -> Vec<String> {
    let dash: serde_json::Value =
        serde_json::from_str(&monitoring("dashboard.json")).expect("dashboard.json parses");
    let mut exprs = Vec::new();
    for panel in dash["panels"].as_array().unwrap() {
        assert!(panel["title"].as_str().is_some(), "{panel}");
        for t in panel["targets"].as_array().unwrap() {
            exprs.push(t["expr"].as_str().unwrap().to_string());
        }
    }
    for var in dash["templating"]["list"].as_array().unwrap() {
        if var["type"] == "query" {
            exprs.push(var["query"].as_str().unwrap().to_string());
        }
    }
    exprs
}

#[test]
fn the_podmonitor_scrapes_the_admin_port_of_the_sidekey_container() {
    let pm: serde_norway::Value =
        serde_norway::from_str(&monitoring("podmonitor.yaml")).expect("podmonitor.yaml parses");
    assert_eq!(pm["kind"].as_str(), Some("PodMonitor"));
    let ep = &pm["spec"]["podMetricsEndpoints"][0];
    assert_eq!(ep["port"].as_str(), Some("admin"));
    assert_eq!(ep["path"].as_str(), Some("/metrics"));
    let sidecar = monitoring("../kubernetes/sidecar/sidecar.yaml");
    assert!(
        sidecar.contains("- name: sidekey\n")
            && sidecar.contains("name: admin, containerPort: 9901")
    );
}

#[test]
fn the_name_scanner_finds_metric_names_only() {
    let names = metric_names(
        "histogram_quantile(0.99, sum by (le) (rate(sidekey_request_duration_seconds_bucket{code=\"x\"}[5m]))) > process_open_fds",
    );
    let want: BTreeSet<String> = [
        "sidekey_request_duration_seconds_bucket",
        "process_open_fds",
    ]
    .map(String::from)
    .into();
    assert_eq!(names, want);
}

#[tokio::test]
async fn every_metric_in_the_rules_and_dashboard_exists_in_metrics() {
    // Redis: the shared store. Token servers: "orders" works, "broken" does not.
    let redis = Redis::start().await;
    let ts = TokenServer::start().await;
    let down = TokenServer::start().await;
    down.set_mode(Mode::Fail(500));
    let clients = format!(
        "[store]\nbackend = \"redis\"\nurl = \"{}\"\nallow_plaintext = true\n\n\
         [clients.orders]\ngrant = \"client_credentials\"\ntoken_url = \"{}\"\nclient_id = \"o\"\nclient_secret = \"s\"\n\n\
         [clients.broken]\ngrant = \"client_credentials\"\ntoken_url = \"{}\"\nclient_id = \"b\"\nclient_secret = \"s\"\n\n\
         [[routes]]\nname = \"api\"\nhosts = [\"localhost\"]\nclient = \"orders\"\nset_headers = {{ Authorization = \"Bearer <<oauth.token>>\" }}\n\n\
         [[routes]]\nname = \"down\"\nhosts = [\"127.0.0.1\"]\nclient = \"broken\"\nset_headers = {{ Authorization = \"Bearer <<oauth.token>>\" }}\n",
        redis.url(),
        ts.url("/token"),
        down.url("/token"),
    );
    let f = Interception::start("", &clients).await;
    let port = f.up.addr.port();
    // An intercepted HTTPS request with a token (fetch, store, expiry).
    let ok = f
        .client()
        .get(format!("https://localhost:{port}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    // sidekey's own 503 (token fetch error).
    let failed = f
        .proxy
        .client()
        .get(format!("http://127.0.0.1:{port}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(failed.status(), 503);
    // An app that does not trust sidekey's CA.
    let stranger = new_ca("not sidekey");
    assert!(connect_tls(f.proxy.addr, port, &stranger, "localhost", &[])
        .await
        .is_err());
    support::eventually(
        Duration::from_secs(10),
        "the handshake failure counted",
        || async {
            f.proxy
                .metrics()
                .await
                .contains("sidekey_tls_handshake_failures_total{")
        },
    )
    .await;
    let metrics = f.proxy.metrics().await;
    let present = |name: &str| {
        metrics.lines().any(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
    };
    let mut checked = BTreeSet::new();
    for expr in rule_exprs().iter().chain(dashboard_exprs().iter()) {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "no sidekey metric in {expr}");
        for name in names {
            assert!(
                present(&name),
                "{name} (in {expr}) is not in /metrics:\n{metrics}"
            );
            checked.insert(name);
        }
    }
    // The families the issue asks alerts and panels for are all covered.
    for must in [
        "sidekey_errors_total",
        "sidekey_token_fetches_total",
        "sidekey_token_fetch_duration_seconds_bucket",
        "sidekey_token_expiry_timestamp_seconds",
        "sidekey_store_operations_total",
        "sidekey_config_last_reload_success",
        "sidekey_tls_ca_expiry_timestamp_seconds",
        "sidekey_tls_handshake_failures_total",
        "sidekey_request_duration_seconds_bucket",
        "sidekey_connections_open",
        "process_resident_memory_bytes",
    ] {
        assert!(checked.contains(must), "no alert or panel uses {must}");
    }
}

//! OpenTelemetry traces end to end (SPEC "Telemetry"). Actors:
//! // App: reqwest through the proxy, sending its own W3C traceparent.
//! // Proxy: the sidekey binary with `[telemetry] otlp_endpoint`.
//! // Collector: a hyper server on 127.0.0.1:0 taking POST /v1/traces and
//! //   decoding the protobuf with the opentelemetry-proto types.
//! // Upstream: records the traceparent it got. Token server: issues tokens.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed setup step should fail the test loudly"
)]

mod support;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

use support::sidekey::{free_port, Binary};
use support::token_server::TokenServer;
use support::upstream::Upstream;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const APP_SPAN: &str = "00f067aa0ba902b7";

/// Every span the collector received, with its resource's service name,
/// and the raw bodies (to look for secrets in).
#[derive(Default)]
struct Received {
    spans: Vec<(String, Span)>,
    raw: Vec<Bytes>,
}

async fn collector() -> (std::net::SocketAddr, Arc<Mutex<Received>>) {
    let got = Arc::new(Mutex::new(Received::default()));
    let store = Arc::clone(&got);
    // The serving task is detached: it lives as long as the test's runtime.
    let (addr, _) = support::serve(None, move |req: http::Request<hyper::body::Incoming>| {
        let store = Arc::clone(&store);
        async move {
            assert_eq!(req.uri().path(), "/v1/traces");
            assert_eq!(req.headers()["content-type"], "application/x-protobuf");
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let export = ExportTraceServiceRequest::decode(body.clone()).unwrap();
            let mut got = store.lock().unwrap();
            got.raw.push(body);
            for rs in export.resource_spans {
                let service = rs
                    .resource
                    .iter()
                    .flat_map(|r| &r.attributes)
                    .find(|kv| kv.key == "service.name")
                    .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                        Value::StringValue(s) => Some(s.clone()),
                        _ => None,
                    })
                    .unwrap_or_default();
                for ss in rs.scope_spans {
                    for span in ss.spans {
                        got.spans.push((service.clone(), span));
                    }
                }
            }
            Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::new())))
        }
    })
    .await;
    (addr, got)
}

fn config(ts: &TokenServer, endpoint: &str) -> String {
    format!(
        "[telemetry]\notlp_endpoint = \"{endpoint}\"\n\n\
         [clients.orders]\ngrant = \"client_credentials\"\ntoken_url = \"{}\"\nclient_id = \"orders-sync\"\nclient_secret = \"s3cr3t-value\"\n\n\
         [[routes]]\nname = \"api\"\nhosts = [\"localhost\"]\nclient = \"orders\"\nset_headers = {{ Authorization = \"Bearer <<oauth.token>>\" }}\n",
        ts.url("/oauth2/token")
    )
}

fn attr(span: &Span, key: &str) -> Option<String> {
    let v = span.attributes.iter().find(|kv| kv.key == key)?;
    match v.value.as_ref()?.value.as_ref()? {
        Value::StringValue(s) => Some(s.clone()),
        Value::IntValue(i) => Some(i.to_string()),
        other => Some(format!("{other:?}")),
    }
}

#[tokio::test]
async fn request_span_continues_the_apps_trace_and_parents_upstream_and_token_fetch() {
    let (addr, got) = collector().await;
    // Token server: 2 s tokens, so a background refresh follows soon.
    let ts = TokenServer::start().await;
    ts.set_ttl(2);
    let up = Upstream::start().await;
    let env = [
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("OTEL_SERVICE_NAME", "orders-sidecar"),
    ];
    let bin = Binary::start("", &config(&ts, &format!("http://{addr}")), &env).await;
    let resp = bin
        .client()
        .get(format!("http://localhost:{}/orders", up.addr.port()))
        .header("traceparent", format!("00-{TRACE}-{APP_SPAN}-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    // Upstream: its parent is sidekey's span, in the app's trace.
    let seen = up.last().unwrap();
    let tp = seen.headers["traceparent"].to_str().unwrap().to_string();
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(parts.len(), 4, "{tp}");
    assert_eq!((parts[0], parts[1], parts[3]), ("00", TRACE, "01"), "{tp}");
    let sidekey_span = parts[2].to_string();
    assert_ne!(sidekey_span, APP_SPAN, "sidekey's own span is the parent");

    support::eventually(Duration::from_secs(20), "both spans exported", || async {
        let got = got.lock().unwrap();
        ["sidekey.request", "sidekey.token_fetch"]
            .iter()
            .all(|n| got.spans.iter().any(|(_, s)| s.name == *n))
    })
    .await;
    // The guard is dropped before the next await.
    {
        let seen = got.lock().unwrap();
        let find = |name: &str| {
            seen.spans
                .iter()
                .find(|(_, s)| s.name == name)
                .unwrap_or_else(|| panic!("no {name} span"))
        };
        let (service, request) = find("sidekey.request");
        assert_eq!(service, "orders-sidecar");
        assert_eq!(hex(&request.trace_id), TRACE);
        assert_eq!(hex(&request.parent_span_id), APP_SPAN);
        assert_eq!(hex(&request.span_id), sidekey_span);
        assert_eq!(attr(request, "route").as_deref(), Some("api"));
        assert_eq!(attr(request, "client").as_deref(), Some("orders"));
        assert_eq!(attr(request, "status").as_deref(), Some("200"));
        assert_eq!(attr(request, "method").as_deref(), Some("GET"));
        let (_, fetch) = find("sidekey.token_fetch");
        assert_eq!(hex(&fetch.trace_id), TRACE);
        assert_eq!(
            hex(&fetch.parent_span_id),
            sidekey_span,
            "fetch is the request's child"
        );
        assert_eq!(attr(fetch, "client").as_deref(), Some("orders"));
        assert_eq!(attr(fetch, "outcome").as_deref(), Some("ok"));
        // Nothing secret in what was exported: not the token, not the secret.
        for body in &seen.raw {
            for secret in ["tok-1", "s3cr3t-value", "Bearer"] {
                assert!(
                    !body.windows(secret.len()).any(|w| w == secret.as_bytes()),
                    "{secret} exported"
                );
            }
        }
    }
    // The refresh ahead of expiry waited for no request: a trace of its own.
    support::eventually(
        Duration::from_secs(20),
        "a background refresh span",
        || async {
            let got = got.lock().unwrap();
            got.spans.iter().any(|(_, s)| {
                s.name == "sidekey.token_fetch"
                    && s.parent_span_id.is_empty()
                    && hex(&s.trace_id) != TRACE
            })
        },
    )
    .await;
    // The access line names the trace.
    let logs = bin.logs();
    let access: serde_json::Value = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["target"] == "sidekey::access")
        .unwrap_or_else(|| panic!("no access line in\n{logs}"));
    assert_eq!(access["trace_id"], TRACE, "{access}");
}

#[tokio::test]
async fn an_unreachable_collector_costs_requests_nothing_and_is_logged_once() {
    // Collector: an address nothing listens on (connections refused).
    let gone = free_port();
    let ts = TokenServer::start().await;
    let up = Upstream::start().await;
    let env = [("OTEL_BSP_SCHEDULE_DELAY", "50")];
    let bin = Binary::start("", &config(&ts, &format!("http://{gone}")), &env).await;
    let app = bin.client();
    let url = format!("http://localhost:{}/", up.addr.port());
    let warned = || {
        bin.logs()
            .lines()
            .filter(|l| l.contains("OTLP collector unreachable"))
            .count()
    };
    // Bursts of sampled requests spread over several export rounds.
    let mut ok = 0;
    for burst in 0..5 {
        for _ in 0..10 {
            let r = app
                .get(&url)
                .header("traceparent", format!("00-{TRACE}-{APP_SPAN}-01"))
                .send()
                .await
                .unwrap();
            ok += usize::from(r.status() == 200);
        }
        if burst == 0 {
            support::eventually(
                Duration::from_secs(20),
                "the collector failure logged",
                || async { warned() >= 1 },
            )
            .await;
        } else {
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }
    assert_eq!(ok, 50, "every request succeeded");
    assert_eq!(up.count(), 50);
    assert_eq!(ts.calls(), 1, "one token for all of them");
    assert_eq!(warned(), 1, "logged once per state change:\n{}", bin.logs());
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

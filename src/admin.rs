//! Admin endpoints: `/healthz`, `/readyz` (503 while draining), `/metrics`
//! for any peer (probes, Prometheus); `/tokens` for loopback peers only,
//! since it tells which credentials exist and when they expire.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{header, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::body::{self, ProxyBody};
use crate::runtime::Shared;
use crate::token::TokenSource;

pub(crate) async fn handle(
    shared: Arc<Shared>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let text = |s: &str| (StatusCode::OK, "text/plain", s.to_string());
    let (status, ctype, text) = match (req.method().as_str(), req.uri().path()) {
        ("GET", "/healthz") => text("ok\n"),
        ("GET", "/readyz") if shared.is_draining() => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "draining\n".to_string(),
        ),
        ("GET", "/readyz") => text("ready\n"),
        ("GET", "/metrics") => {
            shared.tokens.update_gauges();
            let open = i64::try_from(shared.drain.open()).unwrap_or(i64::MAX);
            shared.metrics.connections_open.set(open);
            (
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                shared.metrics.encode(),
            )
        }
        ("GET", "/tokens") if !peer.ip().is_loopback() => (
            StatusCode::FORBIDDEN,
            "text/plain",
            "/tokens is served to loopback peers only\n".to_string(),
        ),
        ("GET", "/tokens") => (StatusCode::OK, "application/json", tokens(&shared)),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_string(),
        ),
    };
    let mut resp = Response::new(body::full(text));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(ctype),
    );
    resp
}

/// Per client of the current config: its cache state, never a token.
fn tokens(shared: &Shared) -> String {
    let rt = shared.runtime();
    let mut clients = serde_json::Map::new();
    for (name, settings) in &rt.config.clients {
        let status = match shared.tokens.get(settings) {
            Some(TokenSource::Client(slot)) => slot.status(),
            // Per user: counts only, nothing that identifies a user.
            Some(TokenSource::PerUser(users)) => serde_json::json!({
                "grant": settings.grant.name(),
                "state": "per_user",
                "subjects": users.subjects(),
                "max_subjects": users.max_subjects(),
            }),
            None => serde_json::json!({ "grant": settings.grant.name(), "state": "unused" }),
        };
        clients.insert(name.clone(), status);
    }
    serde_json::json!({ "clients": clients }).to_string()
}

//! Admin endpoints: `/healthz`, `/readyz` (503 while draining), `/metrics`
//! for any peer (probes, Prometheus); `/tokens` for loopback peers only,
//! since it tells which credentials exist and when they expire.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::{header, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::body::{self, ProxyBody};
use crate::runtime::Shared;
use crate::token::TokenSource;

pub async fn handle(
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
        ("GET", "/tokens") if !is_loopback(peer.ip()) => (
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

/// Whether the peer is this host. On a dual-stack `[::]` listener an IPv4
/// client arrives as `::ffff:127.0.0.1`, which `Ipv6Addr::is_loopback`
/// does not count: the mapped address is unwrapped first.
pub fn is_loopback(peer: IpAddr) -> bool {
    match peer {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or(v6.is_loopback(), |v4| v4.is_loopback()),
    }
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

#[cfg(test)]
mod tests {
    use super::is_loopback;

    #[test]
    fn ipv4_mapped_loopback_is_loopback() {
        for (ip, want) in [
            ("127.0.0.1", true),
            ("127.3.2.1", true),
            ("::1", true),
            ("::ffff:127.0.0.1", true),
            ("::ffff:127.9.9.9", true),
            ("::ffff:10.0.0.1", false),
            ("10.0.0.1", false),
            ("::", false),
            ("fe80::1", false),
            ("::ffff:0.0.0.1", false),
        ] {
            assert_eq!(is_loopback(ip.parse().unwrap()), want, "{ip}");
        }
    }
}

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
        ("GET", "/tokens") if !is_loopback(peer.ip()) => (
            StatusCode::FORBIDDEN,
            "text/plain",
            "/tokens is served to loopback peers only\n".to_string(),
        ),
        ("GET", "/tokens") => (StatusCode::OK, "application/json", tokens(&shared)),
        ("DELETE", path) if path.starts_with("/users/") && !is_loopback(peer.ip()) => (
            StatusCode::FORBIDDEN,
            "text/plain",
            "/users is served to loopback peers only\n".to_string(),
        ),
        ("DELETE", path) if path.starts_with("/users/") => disconnect(&shared, path).await,
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

/// `DELETE /users/CLIENT/USER`: a user of a per-user client disconnects
/// (tokens deleted from memory and the store).
async fn disconnect(shared: &Shared, path: &str) -> (StatusCode, &'static str, String) {
    let not_found = |what: &str| (StatusCode::NOT_FOUND, "text/plain", format!("{what}\n"));
    let decode = |s: &str| {
        url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
    };
    let Some((client, user)) = path
        .strip_prefix("/users/")
        .and_then(|rest| rest.split_once('/'))
        .and_then(|(c, u)| Some((decode(c)?, decode(u)?)))
        .filter(|(c, u)| !c.is_empty() && !u.is_empty())
    else {
        return not_found("use DELETE /users/CLIENT/USER");
    };
    let rt = shared.runtime();
    let source = rt
        .config
        .clients
        .get(&client)
        .and_then(|s| shared.tokens.get(s));
    match source {
        Some(TokenSource::Account(accounts)) => {
            accounts.disconnect(&user).await;
            tracing::info!(client, "a user was disconnected through the admin port");
            (StatusCode::NO_CONTENT, "text/plain", String::new())
        }
        _ => not_found("no per-user client of that name"),
    }
}

/// Whether the peer is this host. On a dual-stack `[::]` listener an IPv4
/// client arrives as `::ffff:127.0.0.1`, which `Ipv6Addr::is_loopback`
/// does not count: the mapped address is unwrapped first.
pub(crate) fn is_loopback(peer: IpAddr) -> bool {
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
            Some(TokenSource::Account(accounts)) => serde_json::json!({
                "grant": settings.grant.name(),
                "state": "per_user",
                "users": accounts.users(),
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

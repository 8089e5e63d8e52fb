//! Inbound stage: what the application asked for. Parses absolute-form and
//! CONNECT targets, checks proxy credentials, and strips hop-by-hop headers
//! (RFC 9110 §7.6.1) so nothing meant for the proxy goes further.

use http::header::{self, HeaderMap, HeaderName};
use http::{Method, Request, Uri};

use crate::error::ProxyError;
use crate::secret::Secret;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Https => "https",
        }
    }

    pub fn default_port(self) -> u16 {
        match self {
            Self::Http => 80,
            Self::Https => 443,
        }
    }
}

/// Where a request is going.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub scheme: Scheme,
    /// Lower-case host name, or an IP literal without brackets.
    pub host: String,
    pub port: u16,
}

impl Target {
    /// `host:port` as written in a URI authority (IPv6 bracketed).
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    pub fn ip(&self) -> Option<std::net::IpAddr> {
        self.host.parse().ok()
    }
}

/// The target of an absolute-form request (`GET http://host:port/path`).
pub fn target(uri: &Uri) -> Result<Target, ProxyError> {
    let scheme =
        match uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("http") => Scheme::Http,
            Some(s) if s.eq_ignore_ascii_case("https") => Scheme::Https,
            Some(s) => return Err(ProxyError::BadRequest(format!("unsupported scheme {s:?}"))),
            None => return Err(ProxyError::BadRequest(
                "not a proxy request: send absolute-form requests (set HTTP_PROXY to this address)"
                    .into(),
            )),
        };
    let authority = uri
        .authority()
        .ok_or_else(|| ProxyError::BadRequest("request target has no host".into()))?;
    let host = host_of(authority.host())?;
    let port = authority.port_u16().unwrap_or(scheme.default_port());
    Ok(Target { scheme, host, port })
}

/// The target of `CONNECT host:port`.
pub fn connect_target(uri: &Uri) -> Result<Target, ProxyError> {
    let authority = uri
        .authority()
        .filter(|_| {
            uri.scheme().is_none()
                && uri
                    .path_and_query()
                    .is_none_or(|p| p.as_str().is_empty() || p.as_str() == "/")
        })
        .ok_or_else(|| ProxyError::BadRequest("CONNECT needs a host:port target".into()))?;
    let port = authority
        .port_u16()
        .ok_or_else(|| ProxyError::BadRequest("CONNECT target has no port".into()))?;
    Ok(Target {
        scheme: Scheme::Https,
        host: host_of(authority.host())?,
        port,
    })
}

fn host_of(h: &str) -> Result<String, ProxyError> {
    let h = h.trim_start_matches('[').trim_end_matches(']');
    if h.is_empty() {
        return Err(ProxyError::BadRequest(
            "request target has an empty host".into(),
        ));
    }
    Ok(h.to_ascii_lowercase())
}

/// `proxy_auth`: the exact Basic credentials, compared in constant time.
pub fn check_proxy_auth<B>(expected: Option<&Secret>, req: &Request<B>) -> Result<(), ProxyError> {
    let Some(expected) = expected else {
        return Ok(());
    };
    let given = req
        .headers()
        .get(header::PROXY_AUTHORIZATION)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if constant_time_eq(given, expected.expose().as_bytes()) {
        Ok(())
    } else {
        Err(ProxyError::ProxyAuthRequired)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Removes hop-by-hop headers, including those named in `Connection`.
/// `keep_upgrade` keeps `Connection: upgrade` and `Upgrade` for a
/// WebSocket-style handshake, which must reach the upstream.
pub fn strip_hop_by_hop(h: &mut HeaderMap, keep_upgrade: bool) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        if !(keep_upgrade && n == header::UPGRADE) {
            h.remove(n);
        }
    }
    for n in &HOP_BY_HOP {
        h.remove(n);
    }
    if keep_upgrade {
        h.insert(
            header::CONNECTION,
            http::HeaderValue::from_static("upgrade"),
        );
    } else {
        h.remove(header::UPGRADE);
    }
}

/// A `Connection: upgrade` request with an `Upgrade` header (WebSocket).
pub fn is_upgrade(method: &Method, h: &HeaderMap) -> bool {
    method == Method::GET
        && h.contains_key(header::UPGRADE)
        && h.get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_targets() {
        let t = target(&"http://API.example.com/x".parse().unwrap()).unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.scheme),
            ("api.example.com", 80, Scheme::Http)
        );
        let t = target(&"http://[::1]:8080/".parse().unwrap()).unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 8080));
        assert_eq!(t.authority(), "[::1]:8080");
        assert!(matches!(
            target(&"/just/a/path".parse().unwrap()),
            Err(ProxyError::BadRequest(_))
        ));
        assert!(matches!(
            target(&"ftp://x/".parse().unwrap()),
            Err(ProxyError::BadRequest(_))
        ));
        let c = connect_target(&"example.com:443".parse().unwrap()).unwrap();
        assert_eq!((c.host.as_str(), c.port), ("example.com", 443));
        assert!(connect_target(&"example.com".parse().unwrap()).is_err());
    }

    #[test]
    fn strips_hop_by_hop_including_connection_named() {
        let mut h = HeaderMap::new();
        h.insert("connection", "keep-alive, x-private".parse().unwrap());
        h.insert("x-private", "1".parse().unwrap());
        h.insert("proxy-authorization", "Basic x".parse().unwrap());
        h.insert("proxy-connection", "keep-alive".parse().unwrap());
        h.insert("te", "trailers".parse().unwrap());
        h.insert("host", "a".parse().unwrap());
        h.insert("upgrade", "websocket".parse().unwrap());
        strip_hop_by_hop(&mut h, false);
        let left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, vec!["host"]);
    }

    #[test]
    fn proxy_auth_compares_exactly() {
        let want = Secret::new("Basic YXBwOnB3");
        let req = Request::builder()
            .header("proxy-authorization", "Basic YXBwOnB3")
            .body(())
            .unwrap();
        assert!(check_proxy_auth(Some(&want), &req).is_ok());
        let req = Request::builder()
            .header("proxy-authorization", "Basic YXBwOnB4")
            .body(())
            .unwrap();
        assert!(check_proxy_auth(Some(&want), &req).is_err());
        assert!(check_proxy_auth(Some(&want), &Request::new(())).is_err());
        assert!(check_proxy_auth(None, &Request::new(())).is_ok());
    }
}

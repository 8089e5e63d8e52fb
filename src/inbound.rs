//! Inbound stage: what the application asked for. Parses absolute-form and
//! CONNECT targets, checks proxy credentials, and strips hop-by-hop headers
//! (RFC 9110 §7.6.1) so nothing meant for the proxy goes further.

use base64::Engine;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::Authority;
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
    let (host, port) = host_port(authority)?;
    Ok(Target {
        scheme,
        host,
        port: port.unwrap_or(scheme.default_port()),
    })
}

/// The target of `CONNECT host:port`.
pub(crate) fn connect_target(uri: &Uri) -> Result<Target, ProxyError> {
    let authority = uri
        .authority()
        .filter(|_| {
            uri.scheme().is_none()
                && uri
                    .path_and_query()
                    .is_none_or(|p| p.as_str().is_empty() || p.as_str() == "/")
        })
        .ok_or_else(|| ProxyError::BadRequest("CONNECT needs a host:port target".into()))?;
    let (host, port) = host_port(authority)?;
    let port = port.ok_or_else(|| ProxyError::BadRequest("CONNECT target has no port".into()))?;
    Ok(Target {
        scheme: Scheme::Https,
        host,
        port,
    })
}

/// Host and explicit port of an authority. Userinfo is refused (it would
/// be a credential in a URL, and `http` parses `a@b` leniently), and so is
/// a port that is not 1-65535: `http` reports such a port as absent, which
/// once meant "use the default" and sent the request somewhere else.
fn host_port(authority: &Authority) -> Result<(String, Option<u16>), ProxyError> {
    let text = authority.as_str();
    if text.contains('@') {
        return Err(ProxyError::BadRequest(
            "request target must not carry userinfo (user:password@host)".into(),
        ));
    }
    let host = authority.host();
    let port = match text.get(host.len()..).unwrap_or_default() {
        "" | ":" => None,
        rest => match rest.strip_prefix(':').map(str::parse::<u16>) {
            Some(Ok(p)) if p != 0 => Some(p),
            _ => {
                return Err(ProxyError::BadRequest(
                    "request target has an invalid port (must be 1-65535)".into(),
                ))
            }
        },
    };
    Ok((host_of(host)?, port))
}

/// `host[:port]` of a request for the access log and errors: never the
/// userinfo, even of a request that is refused for carrying one.
pub(crate) fn log_authority(uri: &Uri) -> &str {
    let a = uri.authority().map_or("", Authority::as_str);
    a.rsplit_once('@').map_or(a, |(_, host)| host)
}

/// A host as routes and the upstream see it: a bracketed IPv6 literal
/// (brackets off), or a name or IPv4 address of letters, digits, `-`, `.`
/// and `_`. Anything else (`http` lets stray brackets and `%`, `&` into a
/// reg-name) is a malformed target, refused rather than "corrected".
fn host_of(h: &str) -> Result<String, ProxyError> {
    let bad = |why: &str| Err(ProxyError::BadRequest(format!("request target {why}")));
    if let Some(inner) = h.strip_prefix('[') {
        return match inner
            .strip_suffix(']')
            .map(str::parse::<std::net::Ipv6Addr>)
        {
            Some(Ok(ip)) => Ok(ip.to_string()),
            _ => bad("has a bracketed host that is not an IPv6 address"),
        };
    }
    if h.is_empty() {
        return bad("has an empty host");
    }
    if !h
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    {
        return bad("has a host with characters a host name cannot have");
    }
    Ok(h.to_ascii_lowercase())
}

/// `proxy_auth`: Basic credentials (`expected` is `user:password`),
/// compared in constant time. The scheme name is case-insensitive (RFC 9110
/// §11.1), so `basic …` and `BASIC …` are as good as `Basic …`.
pub(crate) fn check_proxy_auth<B>(
    expected: Option<&Secret>,
    req: &Request<B>,
) -> Result<(), ProxyError> {
    let Some(expected) = expected else {
        return Ok(());
    };
    let given = req
        .headers()
        .get(header::PROXY_AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
        .and_then(|(_, b64)| {
            base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .ok()
        })
        .unwrap_or_default();
    if constant_time_eq(&given, expected.expose().as_bytes()) {
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
pub(crate) fn strip_hop_by_hop(h: &mut HeaderMap, keep_upgrade: bool) {
    // `TE: trailers` is the one hop-by-hop value that must go on: gRPC
    // servers refuse requests without it. Any other TE value is dropped.
    let te_trailers = h.get_all(header::TE).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',').any(|t| {
                t.split(';')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .eq_ignore_ascii_case("trailers")
            })
        })
    });
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
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        h.remove(header::UPGRADE);
    }
    if te_trailers {
        h.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// A `Connection: upgrade` request with an `Upgrade` header (WebSocket).
pub(crate) fn is_upgrade(method: &Method, h: &HeaderMap) -> bool {
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
        assert_eq!(left, vec!["host", "te"], "te: trailers goes on");
        assert_eq!(h["te"], "trailers");
        let mut h = HeaderMap::new();
        h.insert("connection", "TE".parse().unwrap());
        h.insert("te", "gzip;q=0.5, Trailers".parse().unwrap());
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h["te"], "trailers", "only the trailers value");
        let mut h = HeaderMap::new();
        h.insert("te", "gzip".parse().unwrap());
        strip_hop_by_hop(&mut h, false);
        assert!(h.get("te").is_none());
    }

    #[test]
    fn refuses_userinfo_and_invalid_ports() {
        for bad in [
            "http://user:pw@api.example.com/x",
            "http://user@api.example.com/x",
            "http://api.example.com:131101/x",
            "http://api.example.com:0/x",
            "http://api.example.com:8o/x",
        ] {
            let uri: Uri = bad.parse().unwrap();
            assert!(
                matches!(target(&uri), Err(ProxyError::BadRequest(_))),
                "{bad}"
            );
        }
        for bad in ["user:pw@host:443", "host:131101", "host:0"] {
            let uri: Uri = bad.parse().unwrap();
            assert!(connect_target(&uri).is_err(), "{bad}");
        }
        let t = target(&"http://api.example.com:/x".parse().unwrap()).unwrap();
        assert_eq!(t.port, 80, "an empty port is the default one");
        let uri: Uri = "http://alice:pw@host:81/x".parse().unwrap();
        assert_eq!(log_authority(&uri), "host:81");
    }

    #[test]
    fn proxy_auth_compares_exactly() {
        let want = Secret::new("app:pw");
        for scheme in ["Basic", "basic", "BASIC"] {
            let req = Request::builder()
                .header("proxy-authorization", format!("{scheme} YXBwOnB3"))
                .body(())
                .unwrap();
            assert!(check_proxy_auth(Some(&want), &req).is_ok(), "{scheme}");
        }
        let req = Request::builder()
            .header("proxy-authorization", "Bearer YXBwOnB3")
            .body(())
            .unwrap();
        assert!(check_proxy_auth(Some(&want), &req).is_err());
        let req = Request::builder()
            .header("proxy-authorization", "Basic YXBwOnB4")
            .body(())
            .unwrap();
        assert!(check_proxy_auth(Some(&want), &req).is_err());
        assert!(check_proxy_auth(Some(&want), &Request::new(())).is_err());
        assert!(check_proxy_auth(None, &Request::new(())).is_ok());
    }
}

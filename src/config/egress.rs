//! Config for how sidekey itself reaches the network: the parent proxies of
//! corporate networks (`upstream_proxy`, `token_proxy`, `no_upstream_proxy`)
//! and which roots it trusts as a TLS client (`upstream_roots`).

use std::fmt;
use std::net::IpAddr;

use http::{HeaderValue, Uri};
use ipnet::IpNet;
use toml::Spanned;

use super::diag::Errors;

/// The env var that overrides `[proxy] upstream_proxy` (`sidekey inject`
/// passes the app's own proxy this way).
pub const UPSTREAM_PROXY_ENV: &str = "SIDEKEY_UPSTREAM_PROXY";

/// Which public roots sidekey trusts as a TLS client, always plus
/// `extra_roots`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum UpstreamRoots {
    /// The Mozilla roots compiled in.
    #[default]
    Webpki,
    /// The OS store (honouring `SSL_CERT_FILE`/`SSL_CERT_DIR`).
    System,
}

/// A parent proxy: `http://[user:password@]host:port`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ParentProxy {
    /// Without userinfo: safe to log.
    pub uri: Uri,
    /// `Basic ...` from the URL's userinfo, marked sensitive.
    pub auth: Option<HeaderValue>,
}

impl fmt::Debug for ParentProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The credentials never reach a log line.
        let auth = self.auth.as_ref().map(|_| "[redacted]");
        f.debug_struct("ParentProxy")
            .field("uri", &self.uri)
            .field("auth", &auth)
            .finish()
    }
}

impl ParentProxy {
    /// The proxy URL with its credentials, for clients (reqwest) that take
    /// them that way. Never logged.
    pub fn credentials(&self) -> Option<(String, String)> {
        let v = self.auth.as_ref()?.to_str().ok()?.strip_prefix("Basic ")?;
        use base64::Engine;
        let raw = base64::engine::general_purpose::STANDARD.decode(v).ok()?;
        let raw = String::from_utf8(raw).ok()?;
        let (user, pass) = raw.split_once(':')?;
        Some((user.to_string(), pass.to_string()))
    }
}

/// How one kind of outbound traffic leaves: which roots it trusts and
/// which parent proxy (if any) it goes through.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Egress {
    pub roots: UpstreamRoots,
    pub extra_roots: Vec<std::path::PathBuf>,
    pub proxy: Option<ParentProxy>,
    pub direct: DirectHosts,
}

impl Egress {
    /// Of every setting and of the root files' contents: a rotated CA file
    /// under the same name is a different egress.
    pub fn digest(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.hash(&mut h);
        for path in &self.extra_roots {
            std::fs::read(path).ok().hash(&mut h);
        }
        h.finish()
    }
}

/// Hosts reached directly despite a parent proxy (`no_upstream_proxy`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct DirectHosts {
    /// Lower-cased names: `svc` matches `svc` and `*.svc`; written with a
    /// leading dot or not, the same.
    pub suffixes: Vec<String>,
    /// Matched against IP-literal targets only: a name is not resolved
    /// locally to decide (the parent may be the only one that can).
    pub nets: Vec<IpNet>,
}

impl DirectHosts {
    /// Whether `host` (a name or IP literal, brackets allowed) is reached directly.
    pub fn contains(&self, host: &str) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = host.parse::<IpAddr>() {
            let ip = match ip {
                IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
                v4 => v4,
            };
            return self.nets.iter().any(|n| n.contains(&ip))
                || self.suffixes.iter().any(|s| *s == ip.to_string());
        }
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.suffixes.iter().any(|s| {
            host == *s
                || (host.len() > s.len()
                    && host.ends_with(s.as_str())
                    && host.as_bytes()[host.len() - s.len() - 1] == b'.')
        })
    }

    /// The list as reqwest's `NoProxy` reads it.
    pub fn to_no_proxy_string(&self) -> String {
        let nets = self.nets.iter().map(ToString::to_string);
        let names = self.suffixes.iter().map(|s| format!(".{s}"));
        nets.chain(names).collect::<Vec<_>>().join(",")
    }
}

/// Parses `upstream_proxy`/`token_proxy`; `key` names it in errors. The
/// value is never quoted back: it may hold a password.
pub(super) fn parent_proxy(
    value: &str,
    span: Option<std::ops::Range<usize>>,
    key: &str,
    errs: &mut Errors,
) -> Option<ParentProxy> {
    let mut fail = |why: &str| {
        let message = format!("{key}: {why} (expected \"http://host:port\", credentials allowed as \"http://user:password@host:port\")");
        errs.0.push(super::ConfigError {
            span: span.clone(),
            message,
        });
        None
    };
    let Ok(url) = url::Url::parse(value) else {
        return fail("not a URL");
    };
    if url.scheme() != "http" {
        return fail("only http:// parent proxies are supported");
    }
    let Some(host) = url.host_str() else {
        return fail("no host");
    };
    if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
        return fail("a parent proxy URL has no path or query");
    }
    let port = url.port_or_known_default().unwrap_or(80);
    let Ok(uri) = format!("http://{host}:{port}").parse::<Uri>() else {
        return fail("not a valid host");
    };
    let auth = if url.username().is_empty() && url.password().is_none() {
        None
    } else {
        let decode =
            |s: &str| percent_decode(s).ok_or("credentials are not valid percent-encoded UTF-8");
        let (user, pass) = match (decode(url.username()), decode(url.password().unwrap_or(""))) {
            (Ok(u), Ok(p)) => (u, p),
            (Err(e), _) | (_, Err(e)) => return fail(e),
        };
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        let Ok(mut v) = HeaderValue::from_str(&format!("Basic {b64}")) else {
            return fail("credentials cannot be sent in a header");
        };
        v.set_sensitive(true);
        Some(v)
    };
    Some(ParentProxy { uri, auth })
}

fn percent_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hex = [bytes.next()?, bytes.next()?];
            let hex = std::str::from_utf8(&hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).ok()
}

/// `upstream_proxy`, with `SIDEKEY_UPSTREAM_PROXY` (when set and not empty)
/// taking its place.
pub(super) fn upstream_proxy(
    raw: Option<&Spanned<String>>,
    env: &dyn Fn(&str) -> Option<String>,
    errs: &mut Errors,
) -> Option<ParentProxy> {
    if let Some(v) = env(UPSTREAM_PROXY_ENV).filter(|v| !v.trim().is_empty()) {
        return parent_proxy(v.trim(), None, UPSTREAM_PROXY_ENV, errs);
    }
    let raw = raw?;
    parent_proxy(
        raw.get_ref(),
        Some(raw.span()),
        "proxy.upstream_proxy",
        errs,
    )
}

pub(super) fn direct_hosts(raw: &[Spanned<String>], errs: &mut Errors) -> DirectHosts {
    let mut out = DirectHosts::default();
    for entry in raw {
        let v = entry.get_ref().trim();
        if let Ok(net) = v.parse::<IpNet>() {
            out.nets.push(net);
            continue;
        }
        let name = v.trim_start_matches("*.").trim_start_matches('.');
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let valid = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b':'));
        if valid {
            out.suffixes.push(name);
        } else {
            errs.at(
                entry.span(),
                format!("proxy.no_upstream_proxy: {v:?} is neither a host name (\".svc\", \"example.com\") nor a CIDR (\"10.0.0.0/8\")"),
            );
        }
    }
    out
}

pub(super) fn upstream_roots(raw: Option<&Spanned<String>>, errs: &mut Errors) -> UpstreamRoots {
    match raw.map(|r| (r.get_ref().as_str(), r.span())) {
        None | Some(("webpki", _)) => UpstreamRoots::Webpki,
        Some(("system", _)) => UpstreamRoots::System,
        Some((other, span)) => {
            errs.at(
                span,
                format!("tls.upstream_roots: {other:?} is not \"webpki\" or \"system\""),
            );
            UpstreamRoots::Webpki
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: &str) -> Result<ParentProxy, String> {
        let mut errs = Errors(Vec::new());
        parent_proxy(v, None, "proxy.upstream_proxy", &mut errs)
            .ok_or_else(|| errs.0[0].message.clone())
    }

    #[test]
    fn parent_proxy_urls() {
        let p = parse("http://proxy.corp:3128").unwrap();
        assert_eq!(p.uri, "http://proxy.corp:3128/");
        assert!(p.auth.is_none());
        assert_eq!(
            parse("http://proxy.corp").unwrap().uri,
            "http://proxy.corp:80/"
        );
        let p = parse("http://svc%40corp:p%3Ass@proxy.corp:8080").unwrap();
        assert_eq!(p.credentials().unwrap(), ("svc@corp".into(), "p:ss".into()));
        assert!(p.auth.as_ref().unwrap().is_sensitive());
        let debug = format!("{p:?}");
        assert!(
            !debug.contains("svc") && debug.contains("[redacted]"),
            "{debug}"
        );
        for bad in [
            "https://p:3128",
            "proxy.corp:3128",
            "http://p:3128/x",
            "socks5://p:1",
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.starts_with("proxy.upstream_proxy: "), "{bad}: {e}");
        }
        // The value (and a password in it) is never quoted back.
        let e = parse("https://u:hunter2@p:3128").unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn the_env_var_overrides_upstream_proxy() {
        let mut errs = Errors(Vec::new());
        let raw = Spanned::new(0..1, "http://from-file:3128".to_string());
        let env = |k: &str| (k == UPSTREAM_PROXY_ENV).then(|| "http://from-env:8080".to_string());
        let p = upstream_proxy(Some(&raw), &env, &mut errs).unwrap();
        assert_eq!(p.uri, "http://from-env:8080/");
        let p = upstream_proxy(Some(&raw), &|_| Some(String::new()), &mut errs).unwrap();
        assert_eq!(
            p.uri, "http://from-file:3128/",
            "an empty variable is not set"
        );
        assert!(upstream_proxy(None, &|_| None, &mut errs).is_none());
        assert!(errs.0.is_empty());
    }

    #[test]
    fn direct_hosts_match_suffixes_and_ip_literals() {
        let mut errs = Errors(Vec::new());
        let raw: Vec<Spanned<String>> = [".svc", "Example.COM", "10.0.0.0/8", "*.internal"]
            .iter()
            .map(|s| Spanned::new(0..1, s.to_string()))
            .collect();
        let d = direct_hosts(&raw, &mut errs);
        assert!(errs.0.is_empty());
        for yes in [
            "orders.ns.svc",
            "svc",
            "example.com",
            "API.example.com.",
            "10.1.2.3",
            "[::ffff:10.0.0.1]",
            "a.internal",
        ] {
            assert!(d.contains(yes), "{yes}");
        }
        for no in [
            "notsvc",
            "example.com.evil",
            "badexample.com",
            "11.0.0.1",
            "internal.org",
        ] {
            assert!(!d.contains(no), "{no}");
        }
        assert_eq!(
            d.to_no_proxy_string(),
            "10.0.0.0/8,.svc,.example.com,.internal"
        );
        let bad = [Spanned::new(0..1, "http://x/".to_string())];
        direct_hosts(&bad, &mut errs);
        assert!(errs.0[0].message.starts_with("proxy.no_upstream_proxy: "));
    }

    #[test]
    fn bad_values_are_reported_at_their_place_without_the_password() {
        let src = "[proxy]\nupstream_proxy = \"socks5://u:hunter2@p:1080\"\n\
                   token_proxy = \"http://p:3128/path\"\nno_upstream_proxy = [\"a b\"]\n\
                   [tls]\nupstream_roots = \"os\"\n";
        let path = std::path::Path::new("proxy.toml");
        let err = super::super::load_str(path, src, &|_| None)
            .unwrap_err()
            .to_string();
        for want in [
            "proxy.toml:2:18: proxy.upstream_proxy: only http:// parent proxies are supported",
            "proxy.toml:3:15: proxy.token_proxy: a parent proxy URL has no path or query",
            "proxy.toml:4:22: proxy.no_upstream_proxy: \"a b\" is neither",
            "proxy.toml:6:18: tls.upstream_roots: \"os\" is not \"webpki\" or \"system\"",
        ] {
            assert!(err.contains(want), "{want}\nin:\n{err}");
        }
        assert!(!err.contains("hunter2"), "{err}");
    }
}

//! Config stage 2: cross-field rules for `[proxy]`, `[tls]` and `[[routes]]`,
//! collecting every error rather than stopping at the first.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use toml::Spanned;

use super::diag::{resolve_path, ConfigError, Errors};
use super::model::*;
use super::raw::{RawConfig, RawProxy, RawTls};
use crate::secret::Secret;
use crate::template::{Context, Template};

pub(super) fn validate(
    mut raw: RawConfig,
    path: &Path,
    base: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    broken_clients: &[String],
) -> Result<ValidConfig, Vec<ConfigError>> {
    let mut errs = Errors(Vec::new());
    super::env::expand_plain(&mut raw, env, &mut errs);
    let proxy = proxy(raw.proxy, env, &mut errs);
    let tls = raw.tls.map(|t| tls(t, base, &mut errs)).unwrap_or_default();
    let store = super::store::store(raw.store, base, env, &mut errs);
    let telemetry = super::telemetry::telemetry(raw.telemetry, env, &mut errs);
    let login = raw.login.and_then(|l| login(l, &mut errs));
    let mut declared: Vec<String> = raw.clients.keys().cloned().collect();
    // Clients whose own parse errors are reported already.
    declared.extend(broken_clients.iter().cloned());
    let mut clients = BTreeMap::new();
    for (name, c) in raw.clients {
        if let Some(c) = super::client::client(&name, c, base, env, &mut errs) {
            clients.insert(name, Arc::new(c));
        }
    }
    for (name, c) in &clients {
        if c.user.is_some() && login.is_none() {
            errs.at(
                0..0,
                format!("client {name:?}: a per-user client (user = ...) needs a [login] section (listen, public_url) where its users connect"),
            );
        }
        if c.user.is_some() && store.backend == StoreBackend::Memory {
            // A warning, not an error: per-user tokens then live only as
            // long as the process (every user logs in again on restart).
            tracing::warn!(client = %name, "per-user client on the memory store: users must connect again after every restart; set [store] backend = \"file\" or \"redis\"");
        }
    }
    let mut routes: Vec<RouteSettings> = Vec::new();
    let mut names: BTreeMap<String, ()> = BTreeMap::new();
    for r in raw.routes {
        let span = r.span();
        if let Some(route) =
            super::routes::route(r.into_inner(), &clients, &declared, env, &mut errs)
        {
            if names.insert(route.name.to_string(), ()).is_some() {
                errs.at(
                    span,
                    format!("route {:?}: another route has this name", route.name),
                );
            }
            routes.push(route);
        }
    }
    if errs.0.is_empty() {
        if let Some(proxy) = proxy {
            return Ok(ValidConfig {
                path: path.to_path_buf(),
                proxy,
                tls,
                clients,
                routes,
                store,
                telemetry,
                login,
            });
        }
    }
    Err(errs.0)
}

fn proxy(
    raw: RawProxy,
    env: &dyn Fn(&str) -> Option<String>,
    errs: &mut Errors,
) -> Option<ProxySettings> {
    let before = errs.0.len();
    let listen = socket_addr(&raw.listen, "proxy.listen", errs);
    let admin = if raw.admin.get_ref().is_empty() {
        None
    } else {
        socket_addr(&raw.admin, "proxy.admin", errs)
    };
    if raw.max_connections == 0 {
        errs.0.push(ConfigError {
            span: None,
            message: "proxy.max_connections must be at least 1".into(),
        });
    }
    for (what, d) in [
        ("header_read_timeout", raw.header_read_timeout),
        ("idle_timeout", raw.idle_timeout),
    ] {
        if d.is_zero() {
            errs.0.push(ConfigError {
                span: None,
                message: format!("proxy.{what} must be more than 0s"),
            });
        }
    }
    if raw.connect_ports.is_empty() {
        errs.0.push(ConfigError {
            span: None,
            message: "proxy.connect_ports is empty: list at least one port (e.g. [443])".into(),
        });
    }
    let mut deny = Vec::new();
    for d in &raw.deny_destinations {
        match parse_net(d.get_ref()) {
            Some(net) => deny.push(net),
            None => errs.at(
                d.span(),
                format!(
                    "proxy.deny_destinations: {:?} is not a CIDR such as \"169.254.0.0/16\"",
                    d.get_ref()
                ),
            ),
        }
    }
    let proxy_auth = raw.proxy_auth.and_then(|a| {
        let span = a.span();
        let a = a.into_inner();
        let user = expand(
            &a.username,
            span.clone(),
            "proxy.proxy_auth.username",
            env,
            errs,
        )?;
        let pass = expand(
            &a.password,
            span.clone(),
            "proxy.proxy_auth.password",
            env,
            errs,
        )?;
        if user.contains(':') {
            errs.at(span, "proxy.proxy_auth.username must not contain ':'");
            return None;
        }
        Some(Secret::new(format!("{user}:{pass}")))
    });
    let upstream_proxy = super::egress::upstream_proxy(raw.upstream_proxy.as_ref(), env, errs);
    let token_proxy = raw.token_proxy.as_ref().and_then(|t| {
        super::egress::parent_proxy(t.get_ref(), Some(t.span()), "proxy.token_proxy", errs)
    });
    let no_upstream_proxy = super::egress::direct_hosts(&raw.no_upstream_proxy, errs);
    let workers = workers(raw.workers.as_ref(), errs);
    if errs.0.len() > before {
        return None;
    }
    Some(ProxySettings {
        listen: listen?,
        admin,
        unmatched: raw.unmatched,
        connect: raw.connect,
        connect_ports: raw.connect_ports,
        upstream_timeout: raw.upstream_timeout,
        retry_body_limit: raw.retry_body_limit.0,
        tunnel_idle_timeout: raw.tunnel_idle_timeout,
        deny_destinations: deny,
        proxy_auth,
        drain_timeout: raw.drain_timeout,
        shutdown_delay: raw.shutdown_delay,
        limits: ConnLimits {
            header_read_timeout: raw.header_read_timeout,
            idle_timeout: raw.idle_timeout,
            max_connections: raw.max_connections,
        },
        upstream_proxy,
        token_proxy,
        no_upstream_proxy,
        workers: workers?,
    })
}

/// `proxy.workers`: a thread count, or "auto" for the CPUs this process
/// may use (std reads the cgroup quota, so a pod's CPU limit counts).
fn workers(raw: Option<&Spanned<toml::Value>>, errs: &mut Errors) -> Option<usize> {
    const MAX: i64 = 1024;
    let Some(v) = raw else {
        return Some(1);
    };
    match v.get_ref() {
        toml::Value::Integer(n) if (1..=MAX).contains(n) => usize::try_from(*n).ok(),
        toml::Value::String(s) if s == "auto" => Some(
            std::thread::available_parallelism()
                .map(std::num::NonZeroUsize::get)
                .unwrap_or(1),
        ),
        _ => {
            errs.at(
                v.span(),
                format!("proxy.workers must be a number of threads from 1 to {MAX}, or \"auto\""),
            );
            None
        }
    }
}

/// `10.0.0.0/8`, or a bare address meaning just that host.
fn parse_net(s: &str) -> Option<ipnet::IpNet> {
    s.parse()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(ipnet::IpNet::from))
}

fn socket_addr(s: &Spanned<String>, what: &str, errs: &mut Errors) -> Option<SocketAddr> {
    match s.get_ref().parse() {
        Ok(a) => Some(a),
        Err(_) => {
            errs.at(
                s.span(),
                format!(
                    "{what}: {:?} is not an address such as \"127.0.0.1:3128\"",
                    s.get_ref()
                ),
            );
            None
        }
    }
}

/// Resolves `<<env.*>>` in a plain string field (no other placeholders).
fn expand(
    s: &str,
    span: Range<usize>,
    what: &str,
    env: &dyn Fn(&str) -> Option<String>,
    errs: &mut Errors,
) -> Option<String> {
    match Template::parse(s, Context::Header, env) {
        Ok(t) => match t.as_literal() {
            Some(v) => Some(v.to_string()),
            None => {
                errs.at(
                    span,
                    format!("{what}: only <<env.*>> placeholders are allowed here"),
                );
                None
            }
        },
        Err(e) => {
            errs.at(span, format!("{what}: {e}"));
            None
        }
    }
}

fn tls(raw: Spanned<RawTls>, base: &Path, errs: &mut Errors) -> TlsSettings {
    let raw = raw.into_inner();
    let path = |s: &Spanned<String>| resolve_path(base, s.get_ref());
    let ca = match (&raw.ca_cert, &raw.ca_key) {
        (Some(c), Some(k)) => Some((path(c), path(k))),
        (Some(c), None) => {
            errs.at(c.span(), "tls: ca_key is required when ca_cert is set");
            None
        }
        (None, Some(k)) => {
            errs.at(k.span(), "tls: ca_cert is required when ca_key is set");
            None
        }
        (None, None) => None,
    };
    let mut extra_roots = Vec::new();
    for r in &raw.extra_roots {
        let p = path(r);
        if !p.is_file() {
            errs.at(
                r.span(),
                format!("tls.extra_roots: cannot read {}", p.display()),
            );
        }
        extra_roots.push(p);
    }
    let upstream_roots = super::egress::upstream_roots(raw.upstream_roots.as_ref(), errs);
    TlsSettings {
        ca,
        extra_roots,
        upstream_roots,
    }
}

/// `[login]`: the address, the public URL (http(s), no query) and the
/// allowed `return_to` prefixes.
fn login(raw: toml::Spanned<super::raw::RawLogin>, errs: &mut Errors) -> Option<LoginSettings> {
    let raw = raw.into_inner();
    let listen = match raw.listen.get_ref().parse::<std::net::SocketAddr>() {
        Ok(a) => Some(a),
        Err(e) => {
            errs.at(raw.listen.span(), format!("login.listen: {e}"));
            None
        }
    };
    let url = |s: &toml::Spanned<String>, key: &str, errs: &mut Errors| match url::Url::parse(
        s.get_ref(),
    ) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Some(u),
        _ => {
            errs.at(
                s.span(),
                format!("{key} must be an http(s) URL such as \"https://app.example.com/sidekey\""),
            );
            None
        }
    };
    let public_url = url(&raw.public_url, "login.public_url", errs);
    let return_to = raw
        .return_to
        .iter()
        .filter_map(|r| url(r, "login.return_to", errs))
        .collect();
    let link_ttl = raw.link_ttl.unwrap_or(std::time::Duration::from_secs(600));
    if link_ttl.is_zero() {
        errs.at(
            raw.public_url.span(),
            "login.link_ttl must be more than 0s".to_string(),
        );
    }
    Some(LoginSettings {
        listen: listen?,
        public_url: public_url?,
        return_to,
        link_ttl,
    })
}

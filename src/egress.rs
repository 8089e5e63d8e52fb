//! Egress policy in one place (smokescreen's `safeResolve`/`classifyAddr`
//! kept apart from the transport): which addresses `deny_destinations`
//! refuses, IP-literal targets, name resolution that drops denied answers,
//! and the `DeniedDestination` refusal the transport reports as a 403.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::dns::{GaiResolver, Name};
use ipnet::IpNet;

use crate::error::ProxyError;
use crate::inbound::Target;
use crate::ip_literal::{self, Host};

/// Raised by the resolver when every address of a name is denied.
#[derive(Debug, thiserror::Error)]
#[error("{0} resolves only to denied addresses")]
pub(crate) struct DeniedDestination(pub String);

/// An IP-literal target in the deny list: the refusal, naming the key.
/// (Names are checked after resolution.)
pub(crate) fn literal_refusal(deny: &[IpNet], target: &Target) -> Option<String> {
    let ip = target.ip().filter(|ip| is_denied(deny, *ip))?;
    Some(format!("{ip} is in proxy.deny_destinations"))
}

/// Whether sidekey refuses to connect to `ip`. The unspecified addresses
/// (`0.0.0.0/8`, `::`) are always refused: connecting to them reaches the
/// local host, whatever the deny list says about loopback.
pub(crate) fn is_denied(deny: &[IpNet], ip: IpAddr) -> bool {
    let ip = match ip {
        // An IPv4-mapped IPv6 address is the IPv4 address in disguise.
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    let unspecified = match ip {
        IpAddr::V4(v4) => v4.octets()[0] == 0,
        IpAddr::V6(v6) => v6.is_unspecified(),
    };
    unspecified || deny.iter().any(|n| n.contains(&ip))
}

/// An IP-literal target going through a parent proxy is checked here: the parent would connect to it
/// for us whatever `deny_destinations` says. Names are the parent's to
/// resolve (and to police).
/// "2130706433" and the like are literals too: the parent's resolver reads
/// them as addresses (see `ip_literal`).
pub(crate) fn check_literal(deny: &[IpNet], host: &str) -> Result<(), std::io::Error> {
    let denied = |what: String| Err(std::io::Error::other(DeniedDestination(what)));
    match ip_literal::classify(host) {
        Host::Ip(ip) if is_denied(deny, ip) => denied(host.to_string()),
        Host::Malformed => denied(format!("{host} (a numeric host that is no IP address)")),
        Host::Ip(_) | Host::Name => Ok(()),
    }
}

/// Resolves names with getaddrinfo and drops denied addresses.
#[derive(Clone)]
pub(crate) struct DenyResolver {
    deny: Arc<Vec<IpNet>>,
    inner: GaiResolver,
}

impl DenyResolver {
    pub(crate) fn new(deny: Arc<Vec<IpNet>>) -> Self {
        Self {
            deny,
            inner: GaiResolver::new(),
        }
    }
}

impl tower_service::Service<Name> for DenyResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let deny = Arc::clone(&self.deny);
        let fut = self.inner.call(name.clone());
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = fut.await?.collect();
            let allowed: Vec<SocketAddr> = addrs
                .iter()
                .copied()
                .filter(|a| !is_denied(&deny, a.ip()))
                .collect();
            if allowed.is_empty() && !addrs.is_empty() {
                return Err(std::io::Error::other(DeniedDestination(name.to_string())));
            }
            Ok(allowed.into_iter())
        })
    }
}

/// Resolves `host:port` for a tunnel, with the same deny rule.
pub(crate) async fn resolve_allowed(
    deny: &[IpNet],
    host: &str,
    port: u16,
) -> Result<Vec<SocketAddr>, ProxyError> {
    let unreachable = |reason: String| ProxyError::UpstreamUnreachable {
        authority: format!("{host}:{port}"),
        reason,
    };
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| unreachable(e.to_string()))?
        .collect();
    let allowed: Vec<SocketAddr> = addrs
        .iter()
        .copied()
        .filter(|a| !is_denied(deny, a.ip()))
        .collect();
    if allowed.is_empty() {
        if addrs.is_empty() {
            return Err(unreachable("no addresses".into()));
        }
        return Err(ProxyError::Denied(
            DeniedDestination(host.to_string()).to_string(),
        ));
    }
    Ok(allowed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denies_link_local_and_mapped_v4() {
        let deny: Vec<IpNet> = vec![
            "169.254.0.0/16".parse().unwrap(),
            "fe80::/10".parse().unwrap(),
        ];
        assert!(is_denied(&deny, "169.254.169.254".parse().unwrap()));
        assert!(is_denied(&deny, "::ffff:169.254.169.254".parse().unwrap()));
        assert!(is_denied(&deny, "fe80::1".parse().unwrap()));
        assert!(!is_denied(&deny, "127.0.0.1".parse().unwrap()));
        for always in ["0.0.0.0", "0.1.2.3", "::", "::ffff:0.0.0.0"] {
            assert!(is_denied(&[], always.parse().unwrap()), "{always}");
        }
    }
}

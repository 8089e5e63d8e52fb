//! CONNECT: a pure decision (intercept, tunnel, or deny with a reason),
//! tested from a table like route decisions, and the blind tunnel that
//! sees nothing and injects nothing.

use std::time::Duration;

use ipnet::IpNet;
use tokio::net::TcpStream;

use crate::config::ConnectPolicy;
use crate::drain::Drain;
use crate::error::ProxyError;
use crate::inbound::Target;
use crate::runtime::Runtime;
use crate::{egress, tunnel};

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// A route names the host and `[tls]` has a CA: terminate TLS and
    /// serve the decrypted requests through the pipeline.
    Intercept,
    /// Open a TCP connection to the target and splice bytes, blind.
    Tunnel,
    Deny(String),
}

/// What `decide` looks at, and nothing more: built from the runtime by
/// `Policy::of`, or written out in a test (no CA on disk needed).
pub(crate) struct Policy<'a> {
    pub connect: ConnectPolicy,
    pub connect_ports: &'a [u16],
    pub deny: &'a [IpNet],
    /// A route names the CONNECT host (and port).
    pub routed: bool,
    /// `[tls]` has a CA, so a routed host can be intercepted.
    pub intercepts: bool,
}

impl<'a> Policy<'a> {
    pub(crate) fn of(rt: &'a Runtime, target: &Target) -> Self {
        let proxy = &rt.config.proxy;
        Self {
            connect: proxy.connect,
            connect_ports: &proxy.connect_ports,
            deny: rt.upstream.deny(),
            routed: rt.routes.names_host(&target.host, target.port),
            intercepts: rt.intercept.is_some(),
        }
    }
}

/// What to do with `CONNECT target`. The addresses a tunnel may reach
/// are checked again after resolution (`open`), so DNS cannot get around
/// `deny_destinations`.
pub(crate) fn decide(policy: &Policy<'_>, target: &Target) -> Action {
    if !policy.connect_ports.contains(&target.port) {
        return Action::Deny(format!(
            "CONNECT to port {} is not allowed (proxy.connect_ports)",
            target.port
        ));
    }
    if let Some(refusal) = egress::literal_refusal(policy.deny, target) {
        return Action::Deny(refusal);
    }
    if policy.routed && policy.intercepts {
        return Action::Intercept;
    }
    if policy.routed {
        tracing::warn!(host = %target.host, "a route matches this CONNECT host but [tls] has no CA: tunnelling without injection");
    }
    if policy.connect == ConnectPolicy::Deny {
        return Action::Deny(format!(
            "CONNECT to {} is refused: no route intercepts it and proxy.connect is \"deny\"",
            target.authority()
        ));
    }
    Action::Tunnel
}

/// Connects to a tunnel's target first, so a failure is a proper 502 (or
/// 403 for a denied address) rather than a dead tunnel.
pub(crate) async fn open(rt: &Runtime, target: &Target) -> Result<TcpStream, ProxyError> {
    let proxy = &rt.config.proxy;
    if let Some(parent) = rt.upstream.parent_for(&target.host) {
        let deny = &proxy.deny_destinations;
        return crate::parent_proxy::tunnel(parent, deny, target, proxy.upstream_timeout).await;
    }
    let addrs =
        egress::resolve_allowed(&proxy.deny_destinations, &target.host, target.port).await?;
    let stream = tokio::time::timeout(proxy.upstream_timeout, TcpStream::connect(&addrs[..]))
        .await
        .map_err(|_| ProxyError::UpstreamTimeout {
            authority: target.authority(),
            after: proxy.upstream_timeout,
        })?
        .map_err(|e| ProxyError::UpstreamUnreachable {
            authority: target.authority(),
            reason: e.to_string(),
        })?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Copies bytes both ways until both sides close or the tunnel is idle.
pub(crate) async fn tunnel<A>(
    client: A,
    server: TcpStream,
    idle: Duration,
    target: &Target,
    drain: &Drain,
) where
    A: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    match tunnel::copy_bidirectional(client, server, idle, drain).await {
        Ok((up, down)) => tracing::debug!(host = %target.host, up, down, "tunnel closed"),
        Err(e) => tracing::debug!(host = %target.host, error = %e, "tunnel ended"),
    }
}

#[cfg(test)]
mod tests;

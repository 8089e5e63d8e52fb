//! CONNECT: port policy, then either interception (a route matches the
//! host and `[tls]` has a CA) or a blind TCP tunnel that sees nothing and
//! injects nothing. Also splices upgraded (WebSocket) connections.

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::body::{self, ProxyBody};
use crate::config::ConnectPolicy;
use crate::error::ProxyError;
use crate::inbound::{self, Target};
use crate::proxy::Ctx;
use crate::runtime::{Runtime, Shared};
use crate::upstream;

mod idle;

pub async fn handle(
    shared: &Arc<Shared>,
    rt: &Arc<Runtime>,
    req: Request<Incoming>,
    ctx: &mut Ctx,
) -> Result<Response<ProxyBody>, ProxyError> {
    let target = inbound::connect_target(req.uri())?;
    let proxy = &rt.config.proxy;
    if !proxy.connect_ports.contains(&target.port) {
        return Err(ProxyError::Denied(format!(
            "CONNECT to port {} is not allowed (proxy.connect_ports)",
            target.port
        )));
    }
    if let Some(ip) = target.ip().filter(|ip| rt.upstream.is_denied(*ip)) {
        return Err(ProxyError::Denied(format!(
            "{ip} is in proxy.deny_destinations"
        )));
    }
    let routed = rt.routes.names_host(&target.host, target.port);
    if let (true, Some(interceptor)) = (routed, &rt.intercept) {
        tracing::debug!(host = %target.host, port = target.port, "CONNECT intercepted");
        let interceptor = Arc::clone(interceptor);
        let shared = Arc::clone(shared);
        let on_upgrade = hyper::upgrade::on(req);
        tokio::spawn(async move {
            match on_upgrade.await {
                Ok(up) => interceptor.serve(shared, target, TokioIo::new(up)).await,
                Err(e) => tracing::debug!(error = %e, "CONNECT upgrade failed"),
            }
        });
        return Ok(Response::new(body::empty()));
    }
    if routed {
        tracing::warn!(host = %target.host, "a route matches this CONNECT host but [tls] has no CA: tunnelling without injection");
    }
    if proxy.connect == ConnectPolicy::Deny {
        return Err(ProxyError::Denied(format!(
            "CONNECT to {} is refused: no route intercepts it and proxy.connect is \"deny\"",
            target.authority()
        )));
    }
    // Connect first, so a failure is a proper 502 rather than a dead tunnel.
    let addrs =
        upstream::resolve_allowed(&proxy.deny_destinations, &target.host, target.port).await?;
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
    let idle_timeout = proxy.tunnel_idle_timeout;
    let on_upgrade = hyper::upgrade::on(req);
    ctx.label = "connect";
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(up) => tunnel(TokioIo::new(up), stream, idle_timeout, &target).await,
            Err(e) => tracing::debug!(error = %e, "CONNECT upgrade failed"),
        }
    });
    Ok(Response::new(body::empty()))
}

/// Copies bytes both ways until both sides close or the tunnel is idle.
async fn tunnel<A, B>(client: A, server: B, idle_timeout: Duration, target: &Target)
where
    A: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    B: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    match idle::copy_bidirectional(client, server, idle_timeout).await {
        Ok((up, down)) => tracing::debug!(host = %target.host, up, down, "tunnel closed"),
        Err(e) => tracing::debug!(host = %target.host, error = %e, "tunnel ended"),
    }
}

/// Splices an upgraded client connection to the upgraded upstream one.
pub async fn splice_upgrades(client: OnUpgrade, upstream: OnUpgrade) {
    match tokio::try_join!(client, upstream) {
        Ok((c, u)) => {
            let idle = Duration::from_secs(3600);
            if let Err(e) = idle::copy_bidirectional(TokioIo::new(c), TokioIo::new(u), idle).await {
                tracing::debug!(error = %e, "upgraded connection ended");
            }
        }
        Err(e) => tracing::debug!(error = %e, "upgrade failed"),
    }
}

//! Upstream stage, the connection itself: straight to the target, or
//! through the parent proxy of `[proxy] upstream_proxy` on corporate
//! networks (CONNECT for TLS and blind tunnels, absolute-form for plain
//! HTTP). The parent resolves the names it is asked for, so here only
//! IP-literal targets can be held to `deny_destinations`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderValue, Uri};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use ipnet::IpNet;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::{DirectHosts, ParentProxy};
use crate::egress::{check_literal, DenyResolver};
use crate::error::ProxyError;
use crate::inbound::Target;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A parent proxy and the hosts reached without it.
#[derive(Debug, Clone)]
pub(crate) struct Parent {
    pub proxy: ParentProxy,
    pub direct: DirectHosts,
}

impl Parent {
    /// Whether a connection to `host` goes through the parent.
    pub(crate) fn applies_to(&self, host: &str) -> bool {
        !self.direct.contains(host)
    }
}

/// hyper-util connector: the direct `HttpConnector` (with its
/// deny-checking resolver), or a parent proxy in front of it.
#[derive(Clone)]
pub(crate) struct Connector {
    pub http: HttpConnector<DenyResolver>,
    pub parent: Option<Arc<Parent>>,
    pub deny: Arc<Vec<IpNet>>,
}

impl tower_service::Service<Uri> for Connector {
    type Response = Conn;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Conn, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let mut http = self.http.clone();
        let host = dst.host().unwrap_or_default().to_string();
        let parent = self.parent.clone().filter(|p| p.applies_to(&host));
        let deny = Arc::clone(&self.deny);
        Box::pin(async move {
            let Some(parent) = parent else {
                let io = http.call(dst).await?;
                return Ok(Conn { io, proxied: false });
            };
            check_literal(&deny, &host)?;
            if dst.scheme() == Some(&http::uri::Scheme::HTTPS) {
                let port = dst.port_u16().unwrap_or(443);
                let proxy = http.call(parent.proxy.uri.clone()).await?;
                let io =
                    handshake(proxy.into_inner(), &host, port, parent.proxy.auth.as_ref()).await?;
                Ok(Conn {
                    io: TokioIo::new(io),
                    proxied: false,
                })
            } else {
                // hyper-util sends absolute-form to a connection marked
                // proxied; `Upstream::send` adds Proxy-Authorization.
                let io = http.call(parent.proxy.uri.clone()).await?;
                Ok(Conn { io, proxied: true })
            }
        })
    }
}

/// A blind tunnel through the parent (CONNECT), for `connect::open`:
/// 403 for a denied IP literal, 504 past `timeout`, else 502.
pub(crate) async fn tunnel(
    parent: &Parent,
    deny: &[IpNet],
    target: &Target,
    timeout: Duration,
) -> Result<TcpStream, ProxyError> {
    if let Err(e) = check_literal(deny, &target.host) {
        return Err(ProxyError::Denied(e.to_string()));
    }
    let unreachable = |e: std::io::Error| ProxyError::UpstreamUnreachable {
        authority: target.authority(),
        reason: e.to_string(),
    };
    let authority = parent
        .proxy
        .uri
        .authority()
        .map(|a| a.as_str().to_string())
        .unwrap_or_default();
    let open = async {
        let stream = TcpStream::connect(authority.as_str()).await?;
        let _ = stream.set_nodelay(true);
        handshake(
            stream,
            &target.host,
            target.port,
            parent.proxy.auth.as_ref(),
        )
        .await
    };
    match tokio::time::timeout(timeout, open).await {
        Err(_) => Err(ProxyError::UpstreamTimeout {
            authority: target.authority(),
            after: timeout,
        }),
        Ok(result) => result.map_err(unreachable),
    }
}

/// The largest CONNECT response head read from a parent.
const MAX_HEAD: usize = 8 * 1024;

/// Sends `CONNECT host:port` and reads the parent's answer; the stream is
/// the tunnel once it said 2xx. The head is read a byte at a time so not
/// one byte of the target's own traffic is swallowed with it.
async fn handshake(
    mut io: TcpStream,
    host: &str,
    port: u16,
    auth: Option<&HeaderValue>,
) -> Result<TcpStream, std::io::Error> {
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    let mut head =
        format!("CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n").into_bytes();
    if let Some(auth) = auth {
        head.extend_from_slice(b"Proxy-Authorization: ");
        head.extend_from_slice(auth.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    io.write_all(&head).await?;
    let mut resp = Vec::with_capacity(128);
    while !resp.ends_with(b"\r\n\r\n") {
        if resp.len() >= MAX_HEAD {
            return Err(std::io::Error::other(
                "parent proxy: CONNECT response head too large",
            ));
        }
        let b = io.read_u8().await.map_err(|e| {
            std::io::Error::new(e.kind(), format!("parent proxy closed during CONNECT: {e}"))
        })?;
        resp.push(b);
    }
    let line = resp.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let status = line.split_whitespace().nth(1).unwrap_or_default();
    if !status.starts_with('2') || status.len() != 3 {
        // The status line only: the rest may echo what we sent.
        let line: String = line.trim_end().chars().take(100).collect();
        return Err(std::io::Error::other(format!(
            "the parent proxy (proxy.upstream_proxy) refused CONNECT {host}:{port}: {line}"
        )));
    }
    Ok(io)
}

/// A connection to the target, or to the parent proxy for plain HTTP
/// (`proxied`: hyper-util then keeps the request URI absolute).
pub(crate) struct Conn {
    io: TokioIo<TcpStream>,
    proxied: bool,
}

impl Connection for Conn {
    fn connected(&self) -> Connected {
        self.io.connected().proxy(self.proxied)
    }
}

impl hyper::rt::Read for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}

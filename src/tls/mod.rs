//! TLS interception: for a CONNECT to a routed host, terminate the
//! application's TLS with a leaf minted from our CA, then serve the
//! decrypted HTTP/1.1 or HTTP/2 through the same pipeline as plain HTTP.

pub mod ca;
mod mint;

use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_rustls::LazyConfigAcceptor;

use crate::inbound::Target;
use crate::proxy::{self, Ctx};
use crate::runtime::Shared;

pub use mint::LeafCache;

/// A tunnel whose client does not finish a TLS handshake in this time is
/// closed, so idle CONNECTs cannot hold sockets.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

pub struct Interceptor {
    leaves: LeafCache,
}

impl Interceptor {
    /// Loads the CA; a missing or unreadable CA is a start-up error.
    pub fn load(cert: &Path, key: &Path) -> anyhow::Result<Self> {
        let ca = ca::Ca::load(cert, key)?;
        Ok(Self {
            leaves: LeafCache::new(ca),
        })
    }

    pub fn leaves(&self) -> &LeafCache {
        &self.leaves
    }

    /// Serves one intercepted tunnel until the application closes it.
    pub async fn serve<IO>(&self, shared: Arc<Shared>, target: Target, io: IO)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let hello = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io);
        let start = match tokio::time::timeout(HANDSHAKE_TIMEOUT, hello).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(host = %target.host, error = %e, "not a TLS ClientHello inside CONNECT");
                return;
            }
            Err(_) => {
                tracing::debug!(host = %target.host, "no TLS ClientHello inside CONNECT: closing");
                return;
            }
        };
        // A leaf is minted for the CONNECT authority only. A ClientHello
        // naming another host is refused: serving it would make sidekey a
        // certificate oracle for any name, and the app would be talking to
        // a host other than the one its token is routed for.
        if let Some(sni) = start.client_hello().server_name() {
            if !sni.eq_ignore_ascii_case(&target.host) {
                tracing::warn!(host = %target.host, sni, "TLS ClientHello names another host than the CONNECT target: refused");
                return;
            }
        }
        let name = target.host.clone();
        let config = match self.leaves.server_config(&name) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(host = %name, error = %e, "cannot mint a certificate");
                return;
            }
        };
        let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, start.into_stream(config)).await {
            Ok(Ok(t)) => t,
            Err(_) => {
                tracing::debug!(host = %target.host, "TLS handshake with the application timed out");
                return;
            }
            Ok(Err(e)) => {
                // Typically the application does not trust our CA. Nothing
                // was decrypted, so nothing was forwarded and no token sent.
                tracing::warn!(host = %target.host, error = %e, "TLS handshake with the application failed (does it trust the sidekey CA?)");
                return;
            }
        };
        let svc = service_fn(move |req| {
            let shared = Arc::clone(&shared);
            let target = target.clone();
            async move {
                let rt = shared.runtime();
                let started = Instant::now();
                let method = req.method().clone();
                let authority = target.authority();
                let mut ctx = Ctx {
                    label: "unmatched",
                    ..Ctx::default()
                };
                let result = proxy::forward(&rt, target, req, &mut ctx).await;
                Ok::<_, Infallible>(proxy::finish(
                    &shared, result, &method, &authority, &ctx, started,
                ))
            }
        });
        let builder = auto::Builder::new(TokioExecutor::new());
        if let Err(e) = builder
            .serve_connection_with_upgrades(TokioIo::new(tls), svc)
            .await
        {
            tracing::debug!(error = %e, "intercepted connection ended");
        }
    }
}

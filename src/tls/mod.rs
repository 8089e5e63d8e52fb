//! TLS interception: for a CONNECT to a routed host, terminate the
//! application's TLS with a leaf minted from our CA for that host, and hand
//! the decrypted stream back. What is served on it is the server's and the
//! pipeline's business, not this module's.

pub(crate) mod ca;
mod mint;

use std::path::Path;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::server::TlsStream;
use tokio_rustls::LazyConfigAcceptor;

pub use mint::LeafCache;

/// A tunnel whose client does not finish a TLS handshake in this time is
/// closed, so idle CONNECTs cannot hold sockets.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

pub(crate) struct Interceptor {
    leaves: LeafCache,
}

impl Interceptor {
    /// Loads the CA; a missing or unreadable CA is a start-up error.
    pub(crate) fn load(cert: &Path, key: &Path) -> anyhow::Result<Self> {
        let ca = ca::Ca::load(cert, key)?;
        Ok(Self {
            leaves: LeafCache::new(ca),
        })
    }

    /// Terminates the application's TLS for `host` (the CONNECT authority's
    /// host). `None` when the client sends no ClientHello in time, names
    /// another host in it, or rejects our certificate.
    pub(crate) async fn accept<IO>(&self, host: &str, io: IO) -> Option<TlsStream<IO>>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let hello = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io);
        let start = match tokio::time::timeout(HANDSHAKE_TIMEOUT, hello).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(host, error = %e, "not a TLS ClientHello inside CONNECT");
                return None;
            }
            Err(_) => {
                tracing::debug!(host, "no TLS ClientHello inside CONNECT: closing");
                return None;
            }
        };
        // A leaf is minted for the CONNECT authority only. A ClientHello
        // naming another host is refused: serving it would make sidekey a
        // certificate oracle for any name, and the app would be talking to
        // a host other than the one its token is routed for.
        if let Some(sni) = start.client_hello().server_name() {
            if !sni.eq_ignore_ascii_case(host) {
                tracing::warn!(
                    host,
                    sni,
                    "TLS ClientHello names another host than the CONNECT target: refused"
                );
                return None;
            }
        }
        let config = match self.leaves.server_config(host) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(host, error = %e, "cannot mint a certificate");
                return None;
            }
        };
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, start.into_stream(config)).await {
            Ok(Ok(tls)) => Some(tls),
            Err(_) => {
                tracing::debug!(host, "TLS handshake with the application timed out");
                None
            }
            Ok(Err(e)) => {
                // Typically the application does not trust our CA. Nothing
                // was decrypted, so nothing was forwarded and no token sent.
                tracing::warn!(host, error = %e, "TLS handshake with the application failed (does it trust the sidekey CA?)");
                None
            }
        }
    }
}

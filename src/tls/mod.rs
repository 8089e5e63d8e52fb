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

use crate::metrics::HandshakeFailure;

/// A tunnel whose client does not finish a TLS handshake in this time is
/// closed, so idle CONNECTs cannot hold sockets.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

pub(crate) struct Interceptor {
    leaves: LeafCache,
    /// The CA certificate's `notAfter`, Unix seconds (for `/metrics`).
    ca_not_after: Option<i64>,
}

impl Interceptor {
    /// Loads the CA; a missing or unreadable CA is a start-up error.
    pub(crate) fn load(cert: &Path, key: &Path) -> anyhow::Result<Self> {
        let ca = ca::Ca::load(cert, key)?;
        Ok(Self {
            leaves: LeafCache::new(ca),
            ca_not_after: not_after(cert),
        })
    }

    pub(crate) fn ca_not_after(&self) -> Option<i64> {
        self.ca_not_after
    }

    /// Terminates the application's TLS for `host` (the CONNECT authority's
    /// host). Fails when the client sends no ClientHello in time, names
    /// another host in it, or rejects our certificate; the reason is
    /// counted in `sidekey_tls_handshake_failures_total`.
    pub(crate) async fn accept<IO>(
        &self,
        host: &str,
        io: IO,
    ) -> Result<TlsStream<IO>, HandshakeFailure>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let hello = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io);
        let start = match tokio::time::timeout(HANDSHAKE_TIMEOUT, hello).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(host, error = %e, "not a TLS ClientHello inside CONNECT");
                return Err(classify(&e));
            }
            Err(_) => {
                tracing::debug!(host, "no TLS ClientHello inside CONNECT: closing");
                return Err(HandshakeFailure::Timeout);
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
                return Err(HandshakeFailure::SniMismatch);
            }
        }
        let config = match self.leaves.server_config(host) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(host, error = %e, "cannot mint a certificate");
                return Err(HandshakeFailure::Other);
            }
        };
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, start.into_stream(config)).await {
            Ok(Ok(tls)) => Ok(tls),
            Err(_) => {
                tracing::debug!(host, "TLS handshake with the application timed out");
                Err(HandshakeFailure::Timeout)
            }
            Ok(Err(e)) => {
                // Typically the application does not trust our CA. Nothing
                // was decrypted, so nothing was forwarded and no token sent.
                let why = classify(&e);
                if why == HandshakeFailure::UnknownCa {
                    tracing::warn!(host, error = %e, "TLS handshake with the application failed: it does not trust the sidekey CA");
                } else {
                    tracing::warn!(host, error = %e, reason = why.as_str(), "TLS handshake with the application failed");
                }
                Err(why)
            }
        }
    }
}

/// Maps a handshake error to its fixed reason: the app's alert when it
/// rejected our certificate, or what the two sides could not agree on.
fn classify(e: &std::io::Error) -> HandshakeFailure {
    use rustls::AlertDescription as A;
    let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        return HandshakeFailure::Other;
    };
    match tls {
        rustls::Error::AlertReceived(
            A::BadCertificate
            | A::UnknownCA
            | A::CertificateUnknown
            | A::UnsupportedCertificate
            | A::CertificateExpired
            | A::CertificateRevoked
            | A::AccessDenied,
        ) => HandshakeFailure::UnknownCa,
        rustls::Error::AlertReceived(A::ProtocolVersion | A::HandshakeFailure)
        | rustls::Error::PeerIncompatible(_)
        | rustls::Error::NoApplicationProtocol => HandshakeFailure::NoSharedProtocol,
        _ => HandshakeFailure::Other,
    }
}

/// The `notAfter` of the first certificate in `path`, Unix seconds.
fn not_after(path: &Path) -> Option<i64> {
    use rustls_pki_types::pem::PemObject;
    let der = rustls_pki_types::CertificateDer::from_pem_file(path).ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
    Some(cert.validity().not_after.timestamp())
}

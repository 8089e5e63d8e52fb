//! The certificate authorities sidekey trusts as a TLS client: one list,
//! `upstream_roots` (bundled web PKI or the OS store) plus `extra_roots`,
//! used alike for upstreams, token endpoints and `rediss://`, so a private
//! CA trusted for one is trusted for all three.

use std::path::PathBuf;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use crate::config::UpstreamRoots;

/// Every trusted root certificate, DER.
pub(crate) fn certificates(
    source: UpstreamRoots,
    extra_roots: &[PathBuf],
) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let mut certs = public(source)?;
    certs.extend(extra(extra_roots)?);
    Ok(certs)
}

/// A rustls root store of `certificates`. Roots of the OS store that
/// webpki cannot use are skipped, as browsers do; an operator's own
/// `extra_roots` that cannot be used are a config error.
pub(crate) fn root_store(
    source: UpstreamRoots,
    extra_roots: &[PathBuf],
) -> anyhow::Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    let (_, skipped) = roots.add_parsable_certificates(public(source)?);
    if skipped > 0 {
        tracing::debug!(skipped, "skipped unusable public roots");
    }
    for cert in extra(extra_roots)? {
        roots
            .add(cert)
            .map_err(|e| anyhow::anyhow!("tls.extra_roots: {e}"))?;
    }
    Ok(roots)
}

fn public(source: UpstreamRoots) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    Ok(match source {
        UpstreamRoots::Webpki => webpki_root_certs::TLS_SERVER_ROOT_CERTS.to_vec(),
        UpstreamRoots::System => {
            let found = rustls_native_certs::load_native_certs();
            if found.certs.is_empty() {
                let why = found
                    .errors
                    .first()
                    .map_or_else(|| "the store is empty".to_string(), ToString::to_string);
                anyhow::bail!(
                    "tls.upstream_roots = \"system\": no certificate found in the system store \
                     (SSL_CERT_FILE/SSL_CERT_DIR or the OS default): {why}"
                );
            }
            // A stray unreadable file among many must not stop start-up.
            for e in &found.errors {
                tracing::warn!(error = %e, "tls.upstream_roots = \"system\": skipped a certificate source");
            }
            found.certs
        }
    })
}

fn extra(extra_roots: &[PathBuf]) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let mut certs = Vec::new();
    for path in extra_roots {
        let pem = std::fs::read(path)
            .map_err(|e| anyhow::anyhow!("tls.extra_roots: cannot read {}: {e}", path.display()))?;
        let before = certs.len();
        for cert in CertificateDer::pem_slice_iter(&pem) {
            certs.push(
                cert.map_err(|e| anyhow::anyhow!("tls.extra_roots: {}: {e}", path.display()))?,
            );
        }
        if certs.len() == before {
            anyhow::bail!(
                "tls.extra_roots: {} holds no PEM certificate",
                path.display()
            );
        }
    }
    Ok(certs)
}

/// The same roots as one PEM bundle (the redis client takes them so).
pub(crate) fn pem_bundle(
    source: UpstreamRoots,
    extra_roots: &[PathBuf],
) -> anyhow::Result<Vec<u8>> {
    use base64::Engine;
    let mut out = Vec::new();
    for cert in certificates(source, extra_roots)? {
        let b64 = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
        out.extend_from_slice(b"-----BEGIN CERTIFICATE-----\n");
        for line in b64.as_bytes().chunks(64) {
            out.extend_from_slice(line);
            out.push(b'\n');
        }
        out.extend_from_slice(b"-----END CERTIFICATE-----\n");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_roots_join_the_bundled_ones_and_survive_the_pem_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let ca = rcgen::generate_simple_self_signed(vec!["ca.test".into()]).unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, ca.cert.pem()).unwrap();
        let certs = certificates(UpstreamRoots::Webpki, std::slice::from_ref(&path)).unwrap();
        assert_eq!(
            certs.len(),
            webpki_root_certs::TLS_SERVER_ROOT_CERTS.len() + 1
        );
        assert_eq!(certs.last().unwrap().as_ref(), ca.cert.der().as_ref());
        let pem = pem_bundle(UpstreamRoots::Webpki, &[path]).unwrap();
        let back: Vec<_> = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(back, certs);
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "nothing").unwrap();
        let e = certificates(UpstreamRoots::Webpki, &[empty]).unwrap_err();
        assert!(e.to_string().contains("holds no PEM certificate"), "{e}");
    }
}

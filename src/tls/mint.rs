//! Leaf certificates for intercepted hosts: ECDSA P-256, a SAN for the DNS
//! name or IP, valid for a day, minted once per host and reused (with the
//! rustls `ServerConfig`, so TLS session resumption works too).

use std::net::IpAddr;
use std::sync::Arc;

use dashmap::DashMap;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyPair, SanType,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::time::Instant;

use super::ca::Ca;

const VALIDITY: time::Duration = time::Duration::hours(24);
/// Re-mint well before a cached leaf expires.
const REUSE_FOR: std::time::Duration = std::time::Duration::from_secs(12 * 3600);

pub struct LeafCache {
    ca: Ca,
    cache: DashMap<String, (Instant, Arc<rustls::ServerConfig>)>,
}

impl LeafCache {
    pub fn new(ca: Ca) -> Self {
        Self {
            ca,
            cache: DashMap::new(),
        }
    }

    /// The server config presenting a leaf for `host`, minted on first use.
    pub fn server_config(&self, host: &str) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        let cached = self
            .cache
            .get(host)
            .filter(|e| e.0.elapsed() < REUSE_FOR)
            .map(|e| Arc::clone(&e.1));
        if let Some(c) = cached {
            return Ok(c);
        }
        let config = Arc::new(self.mint(host)?);
        // Bound the cache: a client cycling through SNI names cannot grow it forever.
        if self.cache.len() > 10_000 {
            self.cache.clear();
        }
        self.cache
            .insert(host.to_string(), (Instant::now(), Arc::clone(&config)));
        Ok(config)
    }

    pub fn mint(&self, host: &str) -> anyhow::Result<rustls::ServerConfig> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, host);
        params.distinguished_name = dn;
        params.subject_alt_names = vec![match host.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(host.try_into()?),
        }];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + VALIDITY;
        let leaf = params.signed_by(&key, &self.ca.cert, &self.ca.key)?;
        let chain = vec![
            leaf.der().clone(),
            CertificateDer::from(self.ca.cert.der().to_vec()),
        ];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }
}

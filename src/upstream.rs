//! Upstream stage: one pooled hyper-util client (HTTP/1.1 and, by ALPN,
//! HTTP/2) over rustls with `upstream_roots` plus `extra_roots`, directly
//! or through `upstream_proxy`. DNS answers are filtered against
//! `deny_destinations` by `egress`'s resolver, after resolution, so DNS
//! rebinding cannot reach a denied address.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use ipnet::IpNet;

use crate::body::ProxyBody;
use crate::config::{Egress, UpstreamRoots};
use crate::egress::{DeniedDestination, DenyResolver};
use crate::error::ProxyError;
use crate::parent_proxy::{self, Parent};

type Connector = hyper_rustls::HttpsConnector<parent_proxy::Connector>;

#[derive(Clone)]
pub(crate) struct Upstream {
    client: Client<Connector, ProxyBody>,
    /// HTTP/1.1 only (ALPN `http/1.1`): an `Upgrade` handshake cannot ride HTTP/2.
    client_h1: Client<Connector, ProxyBody>,
    deny: Arc<Vec<IpNet>>,
    /// `upstream_proxy`, when set.
    parent: Option<Arc<Parent>>,
    timeout: Duration,
    /// Of the settings it was built from (see `Upstream::key`).
    key: u64,
}

impl Upstream {
    /// `max_idle_per_host`: pooled idle connections kept per upstream (see
    /// `idle_per_host`).
    pub(crate) fn new(
        deny: Vec<IpNet>,
        egress: &Egress,
        timeout: Duration,
        max_idle_per_host: usize,
    ) -> anyhow::Result<Self> {
        let key = Self::key(&deny, egress, timeout, max_idle_per_host);
        let deny = Arc::new(deny);
        let tls = client_tls(egress.roots, &egress.extra_roots)?;
        let mut http = HttpConnector::new_with_resolver(DenyResolver::new(Arc::clone(&deny)));
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(timeout));
        let parent = egress.proxy.clone().map(|proxy| {
            Arc::new(Parent {
                proxy,
                direct: egress.direct.clone(),
            })
        });
        let http = parent_proxy::Connector {
            http,
            parent: parent.clone(),
            deny: Arc::clone(&deny),
        };
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls.clone())
            .https_or_http();
        let https = builder
            .enable_http1()
            .enable_http2()
            .wrap_connector(http.clone());
        let https_h1 = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let pool = |c| {
            Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(90))
                .pool_max_idle_per_host(max_idle_per_host)
                .build(c)
        };
        Ok(Self {
            client: pool(https),
            client_h1: pool(https_h1),
            deny,
            parent,
            timeout,
            key,
        })
    }

    /// What an upstream client is built from, contents of the extra root
    /// files included. A reload that leaves it unchanged keeps the client,
    /// and with it the pooled connections and TLS sessions; a changed
    /// parent proxy is a new client, so no pooled connection made through
    /// the old one (or around it) is reused.
    pub(crate) fn key(
        deny: &[IpNet],
        egress: &Egress,
        timeout: Duration,
        max_idle_per_host: usize,
    ) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (deny, egress.digest(), timeout, max_idle_per_host).hash(&mut h);
        h.finish()
    }

    /// This client, if it was built from the settings `key` names.
    pub(crate) fn reusable_for(&self, key: u64) -> Option<Self> {
        (self.key == key).then(|| self.clone())
    }

    /// `proxy.deny_destinations`, for the checks before a connection.
    pub(crate) fn deny(&self) -> &[IpNet] {
        &self.deny
    }

    /// The parent proxy a connection to `host` goes through, if any.
    pub(crate) fn parent_for(&self, host: &str) -> Option<&Parent> {
        self.parent.as_deref().filter(|p| p.applies_to(host))
    }

    /// Sends `req` (absolute URI); the timeout covers connect and response head.
    pub(crate) async fn send(
        &self,
        mut req: Request<ProxyBody>,
        upgrade: bool,
    ) -> Result<Response<Incoming>, Failed> {
        // Plain HTTP through a parent goes in absolute-form on the parent's
        // own connection: its credentials ride on the request. (TLS
        // carries them in the CONNECT, never to the target.)
        let via_parent = req.uri().scheme() == Some(&http::uri::Scheme::HTTP)
            && self
                .parent_for(req.uri().host().unwrap_or_default())
                .inspect(|p| {
                    if let Some(auth) = p.proxy.auth.clone() {
                        req.headers_mut()
                            .insert(http::header::PROXY_AUTHORIZATION, auth);
                    }
                })
                .is_some();
        // A reference-counted copy: the text is only made for an error.
        let authority = req.uri().authority().cloned();
        let authority = move || authority.map(|a| a.to_string()).unwrap_or_default();
        let client = if upgrade {
            &self.client_h1
        } else {
            &self.client
        };
        match tokio::time::timeout(self.timeout, client.request(req)).await {
            Err(_) => Err(Failed {
                error: ProxyError::UpstreamTimeout {
                    authority: authority(),
                    after: self.timeout,
                },
                stale: false,
            }),
            // The parent's own refusal is sidekey's failure to reach the
            // upstream, not an answer the app could act on (its proxy is
            // sidekey, which asked for no credentials).
            Ok(Ok(resp))
                if via_parent
                    && resp.status() == http::StatusCode::PROXY_AUTHENTICATION_REQUIRED =>
            {
                Err(Failed {
                    error: ProxyError::UpstreamUnreachable {
                        authority: authority(),
                        reason: "the parent proxy (proxy.upstream_proxy) answered 407: \
                                 its credentials are missing or wrong"
                            .into(),
                    },
                    stale: false,
                })
            }
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(Failed {
                stale: stale_connection(&e),
                error: classify(&e, authority()),
            }),
        }
    }
}

/// Idle upstream connections kept per host: as many as client connections
/// may be busy at once, up to `IDLE_PER_HOST_MAX`. A pool smaller than the
/// load closes and reopens connections under it (at 256 client
/// connections and a pool of 64, one request in five opened a new one); a
/// pool as large as `max_connections` (10,000) would keep a whole burst's
/// sockets and buffers for the idle timeout (3,000 at once: 121 MB RSS).
pub(crate) fn idle_per_host(max_connections: usize) -> usize {
    max_connections.min(IDLE_PER_HOST_MAX)
}

pub(crate) const IDLE_PER_HOST_MAX: usize = 256;

/// An upstream request that failed.
#[derive(Debug)]
pub struct Failed {
    pub error: ProxyError,
    /// A pooled connection closed under the request before any response
    /// (the keep-alive race): an idempotent request without a body can go
    /// again on a new connection.
    pub stale: bool,
}

impl From<Failed> for ProxyError {
    fn from(f: Failed) -> Self {
        f.error
    }
}

/// The connection closed before a response began, with nothing to say
/// the server acted on the request.
fn stale_connection(e: &hyper_util::client::legacy::Error) -> bool {
    if e.is_connect() {
        return false;
    }
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = src {
        if let Some(h) = s.downcast_ref::<hyper::Error>() {
            if h.is_incomplete_message() || h.is_canceled() {
                return true;
            }
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            ) {
                return true;
            }
        }
        src = s.source();
    }
    false
}

/// A denied destination is a policy refusal (403), anything else a 502.
fn classify(e: &hyper_util::client::legacy::Error, authority: String) -> ProxyError {
    let mut reason = String::new();
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = src {
        let inner = s
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|i| i.downcast_ref::<DeniedDestination>());
        if let Some(d) = inner.or_else(|| s.downcast_ref::<DeniedDestination>()) {
            return ProxyError::Denied(d.to_string());
        }
        if !reason.is_empty() {
            reason.push_str(": ");
        }
        reason.push_str(&s.to_string());
        src = s.source();
    }
    ProxyError::UpstreamUnreachable { authority, reason }
}

/// rustls client config: ring provider, `upstream_roots` plus `extra_roots`.
pub(crate) fn client_tls(
    source: UpstreamRoots,
    extra_roots: &[PathBuf],
) -> anyhow::Result<rustls::ClientConfig> {
    let roots = crate::roots::root_store(source, extra_roots)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_key_changes_with_any_setting_or_root_file_content() {
        let dir = tempfile::tempdir().unwrap();
        let egress = Egress {
            extra_roots: vec![dir.path().join("ca.pem")],
            ..Egress::default()
        };
        std::fs::write(&egress.extra_roots[0], "one").unwrap();
        let t = Duration::from_secs(30);
        let key = |deny: &[IpNet], t, n| Upstream::key(deny, &egress, t, n);
        let k = key(&[], t, 256);
        assert_eq!(k, key(&[], t, 256), "same settings, same client");
        assert_ne!(k, key(&["10.0.0.0/8".parse().unwrap()], t, 256));
        assert_ne!(k, key(&[], Duration::from_secs(31), 256));
        assert_ne!(k, key(&[], t, 255));
        // A rotated CA file under the same name is a new client.
        std::fs::write(&egress.extra_roots[0], "two").unwrap();
        assert_ne!(k, key(&[], t, 256));
        let k = key(&[], t, 256);
        // So is another parent proxy, another direct list, other roots.
        let with = |f: &dyn Fn(&mut Egress)| {
            let mut e = egress.clone();
            f(&mut e);
            Upstream::key(&[], &e, t, 256)
        };
        let proxy = |u: &str| crate::config::ParentProxy {
            uri: u.parse().unwrap(),
            auth: None,
        };
        let a = with(&|e| e.proxy = Some(proxy("http://a:3128")));
        assert_ne!(k, a);
        assert_ne!(a, with(&|e| e.proxy = Some(proxy("http://b:3128"))));
        assert_ne!(k, with(&|e| e.direct.suffixes.push("svc".into())));
        assert_ne!(k, with(&|e| e.roots = UpstreamRoots::System));
    }
}

//! `sidekey webhook`: the mutating admission webhook. HTTPS (HTTP/1.1) with `POST /mutate` and
//! `GET /healthz`; the serving certificate is re-read when its files change (cert-manager renews it
//! by rewriting the mounted Secret), checked at each new connection.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;

use super::review::{review, Decision};
use super::Defaults;

/// The API server caps a request at 3 MiB; a pod is far smaller.
const MAX_BODY: usize = 3 * 1024 * 1024;

/// Serves until `shutdown` resolves. Fails at start when the listener or the certificate cannot be
/// set up, naming the file.
pub async fn serve(
    listen: SocketAddr,
    cert: PathBuf,
    key: PathBuf,
    defaults: Defaults,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let resolver = Arc::new(CertFiles::load(cert, key)?);
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_cert_resolver(resolver.clone());
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    tracing::info!(listen = %listener.local_addr()?, "webhook serving /mutate and /healthz");
    let defaults = Arc::new(defaults);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
        };
        resolver.refresh();
        let (acceptor, defaults) = (acceptor.clone(), defaults.clone());
        tokio::spawn(async move {
            let stream = match acceptor.accept(tcp).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "webhook TLS handshake failed");
                    return;
                }
            };
            let service = hyper::service::service_fn(move |req| {
                let defaults = defaults.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(req, &defaults).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "webhook connection ended");
            }
        });
    }
}

async fn handle(req: Request<Incoming>, defaults: &Defaults) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => reply(StatusCode::OK, "ok\n"),
        (&Method::POST, "/mutate") => {
            let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => return reply(StatusCode::PAYLOAD_TOO_LARGE, "body too large\n"),
            };
            match review(&body, defaults) {
                Ok((answer, decision)) => {
                    log(&answer, &decision);
                    let mut res = Response::new(Full::new(Bytes::from(answer.to_string())));
                    res.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static("application/json"),
                    );
                    res
                }
                Err(e) => reply(StatusCode::BAD_REQUEST, &format!("{e}\n")),
            }
        }
        _ => reply(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn log(answer: &serde_json::Value, decision: &Decision) {
    let uid = answer["response"]["uid"].as_str().unwrap_or("");
    match decision {
        Decision::Injected => tracing::info!(uid, "injected sidekey"),
        Decision::Skipped(why) => tracing::debug!(uid, reason = ?why, "left the pod alone"),
        // Allowed anyway: a webhook that blocks pods it does not understand stops deployments.
        Decision::Unparseable(why) => {
            tracing::warn!(uid, error = %why, "cannot parse the pod; allowed unchanged")
        }
    }
}

fn reply(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from(text.to_owned())));
    *res.status_mut() = status;
    res
}

// === impl CertFiles ===

/// The serving certificate and key, reloaded when either file's modification time or size changes.
/// A stat per new connection is cheap at admission rates and needs no watcher thread.
#[derive(Debug)]
struct CertFiles {
    cert: PathBuf,
    key: PathBuf,
    current: Mutex<(Stamp, Arc<CertifiedKey>)>,
}

type Stamp = Option<[(SystemTime, u64); 2]>;

impl CertFiles {
    fn load(cert: PathBuf, key: PathBuf) -> anyhow::Result<Self> {
        let stamp = stamp(&cert, &key);
        let loaded = load_pair(&cert, &key)?;
        Ok(Self {
            cert,
            key,
            current: Mutex::new((stamp, Arc::new(loaded))),
        })
    }

    /// A pair that fails to load (half-written during a rotation) keeps the old one serving.
    fn refresh(&self) {
        let stamp = stamp(&self.cert, &self.key);
        let Ok(mut current) = self.current.lock() else {
            return;
        };
        if stamp.is_none() || stamp == current.0 {
            return;
        }
        match load_pair(&self.cert, &self.key) {
            Ok(pair) => {
                *current = (stamp, Arc::new(pair));
                tracing::info!(cert = %self.cert.display(), "webhook certificate reloaded");
            }
            Err(e) => {
                tracing::warn!(error = %e, "webhook certificate not reloaded; keeping the old one")
            }
        }
    }
}

impl ResolvesServerCert for CertFiles {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.lock().ok().map(|c| c.1.clone())
    }
}

fn stamp(cert: &Path, key: &Path) -> Stamp {
    let one = |p: &Path| {
        let m = std::fs::metadata(p).ok()?;
        Some((m.modified().ok()?, m.len()))
    };
    Some([one(cert)?, one(key)?])
}

fn load_pair(cert: &Path, key: &Path) -> anyhow::Result<CertifiedKey> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("--tls-cert {}: {e}", cert.display()))?;
    if chain.is_empty() {
        anyhow::bail!("--tls-cert {}: no certificate in it", cert.display());
    }
    let der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| anyhow::anyhow!("--tls-key {}: {e}", key.display()))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&der)
        .map_err(|e| anyhow::anyhow!("--tls-key {}: {e}", key.display()))?;
    Ok(CertifiedKey::new(chain, signing))
}

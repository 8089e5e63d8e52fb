//! Soak actors for `bench/soak.sh`: a token endpoint issuing short-lived
//! tokens with a switch to go down, upstreams (plain HTTP and TLS) that
//! accept only tokens the endpoint issued and that have not expired, and a
//! bounded load client. Loopback only.
//!
//! soak_actors serve --lifetime SECS --ca-out DIR [--grace-ms 50]
//!     prints `ready token=PORT plain=PORT tls=PORT` (TLS leaf for
//!     localhost from a fresh CA in DIR/upstream-ca.pem); on the token
//!     port: `POST /token`, `GET /control/down`, `/control/up`, `/control/stats`
//! soak_actors load --proxy ADDR --plain URL --tls URL --ca PEM
//!     --seconds N [--workers 4] [--rate 25] --out FILE
//!     `--workers` clients per URL, each `--rate` requests a second at most;
//!     writes counts and every failure (epoch ms, route, status, code).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "soak tool"
)]

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

// === serve: token endpoint and validating upstreams ===

struct Actors {
    down: AtomicBool,
    lifetime: Duration,
    /// A token up to this much past its expiry still counts as valid: the
    /// time sidekey's copy of it took to arrive (sidekey counts the
    /// lifetime from then).
    grace: Duration,
    live: Mutex<HashMap<String, Instant>>,
    /// (issued, expires) in epoch ms, for the soak's verdict.
    issued: Mutex<Vec<(u64, u64)>>,
    refused: AtomicU64,
    up_ok: AtomicU64,
    up_missing: AtomicU64,
    up_unknown: AtomicU64,
    up_expired: AtomicU64,
    late_max_us: AtomicU64,
}

type Resp = http::Response<Full<Bytes>>;

fn json(status: u16, v: &serde_json::Value) -> Resp {
    let mut r = http::Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
    r.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    r
}

async fn token_port(
    a: Arc<Actors>,
    req: http::Request<hyper::body::Incoming>,
) -> Result<Resp, Infallible> {
    let path = req.uri().path().to_string();
    let _ = req.into_body().collect().await;
    Ok(match path.as_str() {
        "/control/down" => {
            a.down.store(true, Ordering::SeqCst);
            json(200, &serde_json::json!({"down": true}))
        }
        "/control/up" => {
            a.down.store(false, Ordering::SeqCst);
            json(200, &serde_json::json!({"down": false}))
        }
        "/control/stats" => json(
            200,
            &serde_json::json!({
                "issued": *a.issued.lock().unwrap(),
                "refused": a.refused.load(Ordering::SeqCst),
                "upstream": {
                    "ok": a.up_ok.load(Ordering::SeqCst),
                    "missing": a.up_missing.load(Ordering::SeqCst),
                    "unknown": a.up_unknown.load(Ordering::SeqCst),
                    "expired": a.up_expired.load(Ordering::SeqCst),
                    "late_max_us": a.late_max_us.load(Ordering::SeqCst),
                },
                "grace_ms": a.grace.as_millis() as u64,
            }),
        ),
        _ if a.down.load(Ordering::SeqCst) => {
            a.refused.fetch_add(1, Ordering::SeqCst);
            json(
                503,
                &serde_json::json!({"error": "temporarily_unavailable"}),
            )
        }
        _ => {
            let mut issued = a.issued.lock().unwrap();
            let token = format!("soak-{}", issued.len() + 1);
            let now = epoch_ms();
            issued.push((now, now + a.lifetime.as_millis() as u64));
            a.live
                .lock()
                .unwrap()
                .insert(token.clone(), Instant::now() + a.lifetime);
            json(
                200,
                &serde_json::json!({"access_token": token, "token_type": "Bearer", "expires_in": a.lifetime.as_secs()}),
            )
        }
    })
}

/// Accepts a request only with a token the endpoint issued that has not
/// expired; 401 otherwise (and counts why).
async fn upstream(
    a: Arc<Actors>,
    req: http::Request<hyper::body::Incoming>,
) -> Result<Resp, Infallible> {
    let now = Instant::now();
    let token = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    let _ = req.into_body().collect().await;
    let verdict = match token {
        None => &a.up_missing,
        Some(t) => match a.live.lock().unwrap().get(&t) {
            None => &a.up_unknown,
            Some(exp) if now > *exp => {
                let late = now - *exp;
                a.late_max_us
                    .fetch_max(late.as_micros() as u64, Ordering::SeqCst);
                if late > a.grace {
                    &a.up_expired
                } else {
                    &a.up_ok
                }
            }
            Some(_) => &a.up_ok,
        },
    };
    verdict.fetch_add(1, Ordering::SeqCst);
    if std::ptr::eq(verdict, &a.up_ok) {
        Ok(http::Response::new(Full::new(Bytes::from_static(b"ok"))))
    } else {
        Ok(json(401, &serde_json::json!({"error": "invalid_token"})))
    }
}

fn tls_config(ca_out: &str) -> Arc<rustls::ServerConfig> {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::default();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    std::fs::create_dir_all(ca_out).unwrap();
    std::fs::write(format!("{ca_out}/upstream-ca.pem"), ca_cert.pem()).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    leaf.subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    let cert = leaf.signed_by(&key, &ca_cert, &ca_key).unwrap();
    let der = rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let mut c = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.der().clone()], der)
    .unwrap();
    c.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(c)
}

async fn listen<F, Fut>(tls: Option<tokio_rustls::TlsAcceptor>, handler: F) -> u16
where
    F: Fn(http::Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Resp, Infallible>> + Send + 'static,
{
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = l.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let (tls, handler) = (tls.clone(), handler.clone());
            tokio::spawn(async move {
                let b = auto::Builder::new(TokioExecutor::new());
                let svc = service_fn(handler);
                match tls {
                    Some(a) => {
                        if let Ok(s) = a.accept(stream).await {
                            let _ = b.serve_connection(TokioIo::new(s), svc).await;
                        }
                    }
                    None => {
                        let _ = b.serve_connection(TokioIo::new(stream), svc).await;
                    }
                }
            });
        }
    });
    port
}

async fn serve() {
    let lifetime = Duration::from_secs(arg("--lifetime").map_or(2, |v| v.parse().unwrap()));
    let grace = Duration::from_millis(arg("--grace-ms").map_or(50, |v| v.parse().unwrap()));
    let a = Arc::new(Actors {
        down: AtomicBool::new(false),
        lifetime,
        grace,
        live: Mutex::new(HashMap::new()),
        issued: Mutex::new(Vec::new()),
        refused: AtomicU64::new(0),
        up_ok: AtomicU64::new(0),
        up_missing: AtomicU64::new(0),
        up_unknown: AtomicU64::new(0),
        up_expired: AtomicU64::new(0),
        late_max_us: AtomicU64::new(0),
    });
    let t = Arc::clone(&a);
    let token = listen(None, move |req| token_port(Arc::clone(&t), req)).await;
    let u = Arc::clone(&a);
    let plain = listen(None, move |req| upstream(Arc::clone(&u), req)).await;
    let u = Arc::clone(&a);
    let tls =
        tokio_rustls::TlsAcceptor::from(tls_config(&arg("--ca-out").unwrap_or_else(|| ".".into())));
    let tls = listen(Some(tls), move |req| upstream(Arc::clone(&u), req)).await;
    println!("ready token={token} plain={plain} tls={tls}");
    std::future::pending::<()>().await;
}

// === load: a bounded client through sidekey ===

#[derive(Default)]
struct Tally {
    by: BTreeMap<String, u64>,
    failures: Vec<(u64, String, u16, String)>,
}

async fn worker(
    client: reqwest::Client,
    url: String,
    route: &'static str,
    deadline: Instant,
    every: Duration,
    tally: Arc<Mutex<Tally>>,
) {
    let mut next = Instant::now();
    while Instant::now() < deadline {
        let at = epoch_ms();
        let (status, code) = match client.get(&url).send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                let code = r
                    .headers()
                    .get("x-sidekey-error")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-")
                    .to_string();
                // The body must arrive whole too.
                match r.bytes().await {
                    Ok(_) => (status, code),
                    Err(e) => (0, format!("body: {e}")),
                }
            }
            Err(e) => (0, format!("transport: {e}")),
        };
        {
            let mut t = tally.lock().unwrap();
            *t.by.entry(format!("{route} {status} {code}")).or_default() += 1;
            if status != 200 && t.failures.len() < 100_000 {
                t.failures.push((at, route.to_string(), status, code));
            }
        }
        next += every;
        let now = Instant::now();
        if next > now {
            tokio::time::sleep(next - now).await;
        } else {
            next = now;
        }
    }
}

async fn load() {
    let proxy = arg("--proxy").expect("--proxy");
    let plain = arg("--plain").expect("--plain");
    let tls = arg("--tls").expect("--tls");
    let ca = std::fs::read(arg("--ca").expect("--ca")).unwrap();
    let seconds: u64 = arg("--seconds").expect("--seconds").parse().unwrap();
    let workers: usize = arg("--workers").map_or(4, |v| v.parse().unwrap());
    let rate: f64 = arg("--rate").map_or(25.0, |v| v.parse().unwrap());
    let out = arg("--out").expect("--out");
    let client = |trust: bool| {
        let mut b = reqwest::Client::builder()
            .proxy(reqwest::Proxy::all(format!("http://{proxy}")).unwrap())
            .timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(workers);
        if trust {
            b = b.add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap());
        }
        b.build().unwrap()
    };
    let (plain_client, tls_client) = (client(false), client(true));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let started = epoch_ms();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let every = Duration::from_secs_f64(1.0 / rate.max(0.1));
    let mut tasks = Vec::new();
    for _ in 0..workers {
        tasks.push(tokio::spawn(worker(
            plain_client.clone(),
            plain.clone(),
            "plain",
            deadline,
            every,
            Arc::clone(&tally),
        )));
        tasks.push(tokio::spawn(worker(
            tls_client.clone(),
            tls.clone(),
            "intercepted",
            deadline,
            every,
            Arc::clone(&tally),
        )));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let t = tally.lock().unwrap();
    let requests: u64 = t.by.values().sum();
    let report = serde_json::json!({
        "started_ms": started,
        "ended_ms": epoch_ms(),
        "requests": requests,
        "by": t.by,
        "failures": t.failures,
    });
    std::fs::write(&out, report.to_string()).unwrap();
    println!("requests={requests} failures={}", t.failures.len());
}

#[tokio::main]
async fn main() {
    sidekey::init_crypto();
    match std::env::args().nth(1).as_deref() {
        Some("serve") => serve().await,
        Some("load") => load().await,
        _ => {
            eprintln!("usage: soak_actors serve|load ... (see the file's header)");
            std::process::exit(2);
        }
    }
}

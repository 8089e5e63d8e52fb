//! Fault matrix (issue 12): for each thing that can go wrong around
//! sidekey, the status and `X-Sidekey-Error` code the app sees (SPEC
//! "Errors from sidekey itself"), recovery once the fault is gone, and no
//! leaked connections: sidekey's open file descriptors (`/proc/PID/fd` of
//! the real binary, so only sidekey's own are counted) and
//! `sidekey_connections_open` come back to where they were before.
//! Actors in every test:
//! // App: reqwest through the proxy, or raw TCP to half-send or half-read.
//! // Proxy: the real binary (support::sidekey::Binary).
//! // Token servers and upstreams: the support fakes, or small purpose-built
//! //   ones below (raw TCP or hyper) for faults the fakes do not offer.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed setup step should fail the test loudly"
)]

mod support;

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use support::sidekey::Binary;
use support::token_server::{Mode, TokenServer};
use support::upstream::Upstream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

// === what sidekey holds: fds and connections ===

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

fn fd_list(pid: u32) -> String {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return String::new();
    };
    let mut v: Vec<String> = dir
        .flatten()
        .map(|e| {
            let target = std::fs::read_link(e.path()).unwrap_or_default();
            format!(
                "{} -> {}",
                e.file_name().to_string_lossy(),
                target.display()
            )
        })
        .collect();
    v.sort();
    v.join("\n")
}

/// sidekey's TCP sockets as `(local, remote, state)` from /proc: its fds'
/// socket inodes looked up in the namespace's tcp tables.
fn sockets(pid: u32) -> Vec<(String, String, &'static str)> {
    let inodes: std::collections::HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter_map(|l| {
                    let l = l.to_string_lossy().into_owned();
                    Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    let mut out = Vec::new();
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() > 9 && inodes.contains(f[9]) {
                let state = match f[3] {
                    "01" => "ESTABLISHED",
                    "02" => "SYN_SENT",
                    "04" => "FIN_WAIT1",
                    "05" => "FIN_WAIT2",
                    "06" => "TIME_WAIT",
                    "07" => "CLOSE",
                    "08" => "CLOSE_WAIT",
                    "09" => "LAST_ACK",
                    "0A" => "LISTEN",
                    "0B" => "CLOSING",
                    _ => "OTHER",
                };
                out.push((f[1].to_string(), f[2].to_string(), state));
            }
        }
    }
    out
}

/// One admin request on its own connection, which the server closes: the
/// probe leaves nothing pooled behind that would count as sidekey's.
async fn admin_get(admin: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(admin).await.unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .expect("admin answered within 5 s")
        .unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    text.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

/// The value of the first sample line `name` (labels included) in `text`.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(name)?
            .strip_prefix(' ')?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

async fn connections_open(admin: SocketAddr) -> f64 {
    let m = admin_get(admin, "/metrics").await;
    metric(&m, "sidekey_connections_open").unwrap_or_else(|| panic!("no gauge in:\n{m}"))
}

/// sidekey at rest: no app connection open and the fd count steady for
/// three samples in a row (at most 5 s).
async fn at_rest(bin: &Binary) -> usize {
    let pid = bin.pid();
    let (mut last, mut same) = (usize::MAX, 0);
    for _ in 0..50 {
        let open = connections_open(bin.admin).await;
        let n = fd_count(pid);
        same = if open == 0.0 && n == last {
            same + 1
        } else {
            0
        };
        if same >= 2 {
            return n;
        }
        last = n;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("sidekey never came to rest; fds:\n{}", fd_list(pid));
}

/// After a fault (and once the test dropped its app clients): within 10 s
/// no app connection is open, no socket of sidekey's sits in CLOSE_WAIT
/// (closed by the peer, still held), and its fds are back to `base`, give
/// or take `slack` keep-alive connections it legitimately pools to the
/// fakes (faults are repeated where they can be, so that a per-request
/// leak would exceed that).
async fn settles(bin: &Binary, base: usize, slack: usize, what: &str) {
    let pid = bin.pid();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let open = connections_open(bin.admin).await;
        let n = fd_count(pid);
        let socks = sockets(pid);
        // A socket its peer closed that sidekey still holds is a leak in
        // the making, whatever the count says.
        let half_closed = socks.iter().filter(|s| s.2 == "CLOSE_WAIT").count();
        if open == 0.0 && n <= base + slack && half_closed == 0 {
            let pooled = socks.iter().filter(|s| s.2 == "ESTABLISHED").count();
            eprintln!("{what}: fds {n} (baseline {base}), connections_open 0, {pooled} pooled upstream/token connections");
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "{what}: sidekey did not settle: connections_open {open}, fds {n} (baseline {base} + {slack}), \
                 {half_closed} in CLOSE_WAIT:\n{socks:#?}\n{}",
                fd_list(pid)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// === configs and assertions ===

fn client(name: &str, token_url: &str, extra: &str) -> String {
    format!(
        "[clients.{name}]\ngrant = \"client_credentials\"\ntoken_url = \"{token_url}\"\nclient_id = \"id-{name}\"\nclient_secret = \"secret-{name}\"\n{extra}\n"
    )
}

fn route(name: &str, client: &str, path_prefix: &str) -> String {
    format!(
        "[[routes]]\nname = \"{name}\"\nhosts = [\"127.0.0.1\"]\npath_prefix = \"{path_prefix}\"\nclient = \"{client}\"\nset_headers = {{ Authorization = \"Bearer <<oauth.token>>\" }}\n"
    )
}

/// sidekey with client `c` (token endpoint `token_url`, `extra` settings)
/// behind route `r` for every path on 127.0.0.1; its fds at rest, an app
/// client through it, and the URL `/x` on `up`.
struct Rig {
    bin: Binary,
    base: usize,
    app: reqwest::Client,
    url: String,
}

async fn token_rig(token_url: &str, extra: &str, up: SocketAddr) -> Rig {
    let cfg = format!("{}{}", client("c", token_url, extra), route("r", "c", "/"));
    let bin = Binary::start("", &cfg, &[]).await;
    let base = at_rest(&bin).await;
    let app = bin.client();
    Rig {
        bin,
        base,
        app,
        url: format!("http://{up}/x"),
    }
}

/// Asserts a sidekey error: status, `X-Sidekey-Error` and the JSON body's
/// `error`; returns the body.
async fn expect_error(resp: reqwest::Response, status: u16, code: &str) -> serde_json::Value {
    let got = resp.status().as_u16();
    let header = resp
        .headers()
        .get("x-sidekey-error")
        .map(|v| v.to_str().unwrap().to_string());
    let text = resp.text().await.unwrap();
    assert_eq!(
        (got, header.as_deref()),
        (status, Some(code)),
        "body: {text}"
    );
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["error"], code, "{text}");
    v
}

/// Polls `url` until it answers 200 (at most `within`); how long it took.
async fn until_ok(app: &reqwest::Client, url: &str, within: Duration) -> Duration {
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < within {
        match app.get(url).send().await {
            Ok(r) if r.status() == 200 => return start.elapsed(),
            Ok(r) => last = format!("{} {}", r.status(), r.text().await.unwrap_or_default()),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{url} did not recover within {within:?}; last answer: {last}");
}

// === small raw HTTP/1.1 servers for faults the support fakes lack ===

/// Aborts the accept loop when the test is done with the server.
struct Serving(tokio::task::JoinHandle<()>);

impl Drop for Serving {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Serves each accepted connection with `f` on 127.0.0.1:0.
async fn raw_server<F, Fut>(f: F) -> (SocketAddr, Serving)
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            // Every connection's work is bounded in time.
            tokio::spawn(tokio::time::timeout(Duration::from_secs(30), f(s)));
        }
    });
    (addr, Serving(task))
}

/// A keep-alive upstream that holds each request `hold`, answers
/// `answer(request head)`, and counts the connections it accepts.
async fn counting_upstream(
    hold: Duration,
    answer: fn(&str) -> String,
) -> (SocketAddr, Serving, Arc<AtomicUsize>) {
    let accepted = Arc::new(AtomicUsize::new(0));
    let a = Arc::clone(&accepted);
    let (addr, serving) = raw_server(move |mut s| {
        a.fetch_add(1, Ordering::SeqCst);
        async move {
            while let Some(head) = read_request(&mut s).await {
                tokio::time::sleep(hold).await;
                let out = http_response("200 OK", "", &answer(&head));
                if s.write_all(out.as_bytes()).await.is_err() {
                    return;
                }
            }
        }
    })
    .await;
    (addr, serving, accepted)
}

/// Reads one request (head, then a Content-Length body); `None` at EOF.
async fn read_request(s: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            let mut have = buf.len() - end - 4;
            while have < len {
                let n = s.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                have += n;
            }
            return Some(head);
        }
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// App: `n` GETs one after another to `up`; every one must be a 200,
/// else the failures are listed with sidekey's error code and body.
async fn gets_all_succeed(app: &reqwest::Client, up: SocketAddr, n: usize) {
    let mut failed = Vec::new();
    for i in 0..n {
        let r = app.get(format!("http://{up}/n/{i}")).send().await.unwrap();
        if r.status() != 200 {
            let (status, code) = (r.status(), r.headers().get("x-sidekey-error").cloned());
            failed.push(format!(
                "GET {i}: {status} {code:?} {}",
                r.text().await.unwrap()
            ));
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {n} failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

fn http_response(status: &str, extra: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{extra}\r\n{body}",
        body.len()
    )
}

fn token_json(token: &str, expires_in: u64) -> String {
    format!(r#"{{"access_token":"{token}","token_type":"Bearer","expires_in":{expires_in}}}"#)
}

// === token endpoint faults ===

#[tokio::test]
async fn token_endpoint_500s_give_503_at_once_then_recover_after_backoff() {
    // Token server: answers 500 until the test switches it back to Ok.
    let ts = TokenServer::start().await;
    ts.set_mode(Mode::Fail(500));
    // Upstream: records the Authorization that arrives after recovery.
    let up = Upstream::start().await;
    // Counted from the start: the first fetch may be made at start-up.
    let first = Instant::now();
    let Rig {
        bin,
        base,
        app,
        url,
    } = token_rig(&ts.url("/token"), "", up.addr).await;
    for _ in 0..10 {
        let started = Instant::now();
        let v = expect_error(
            app.get(&url).send().await.unwrap(),
            503,
            "token_unavailable",
        )
        .await;
        assert_eq!(
            (v["route"].as_str(), v["client"].as_str()),
            (Some("r"), Some("c"))
        );
        assert!(v["message"].as_str().unwrap().contains("500"), "{v}");
        // While a retry is pending, the answer comes at once: no request
        // waits out a backoff.
        assert!(started.elapsed() < Duration::from_secs(2));
    }
    support::assert_backoff_held(ts.calls(), first, 4);
    assert_eq!(
        up.count(),
        0,
        "nothing reaches the upstream without a token"
    );
    ts.set_mode(Mode::Ok);
    let took = until_ok(&app, &url, Duration::from_secs(10)).await;
    eprintln!("recovered {took:?} after the endpoint came back");
    assert_eq!(up.last().unwrap().headers["authorization"], "Bearer tok-1");
    drop(app);
    settles(&bin, base, 3, "token endpoint 500s").await;
}

#[tokio::test]
async fn hanging_token_endpoint_gives_503_after_the_client_timeout() {
    // Token server: accepts and never answers, until switched back to Ok.
    let ts = TokenServer::start().await;
    ts.set_mode(Mode::Hang);
    // Upstream: answers 200.
    let up = Upstream::start().await;
    let Rig {
        bin,
        base,
        app,
        url,
    } = token_rig(&ts.url("/token"), "timeout = \"1s\"", up.addr).await;
    // Five requests at once wait on one fetch, and all get 503 once the
    // client's timeout has passed.
    let started = Instant::now();
    let answers = futures_util::future::join_all((0..5).map(|_| app.get(&url).send())).await;
    let took = started.elapsed();
    for r in answers {
        let v = expect_error(r.unwrap(), 503, "token_unavailable").await;
        let msg = v["message"].as_str().unwrap();
        assert!(msg.contains("within") || msg.contains("timed out"), "{msg}");
    }
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "503 after {took:?}, expected about the 1 s client timeout"
    );
    assert_eq!(ts.calls(), 1, "five waiting requests share one fetch");
    ts.set_mode(Mode::Ok);
    until_ok(&app, &url, Duration::from_secs(10)).await;
    drop(app);
    settles(&bin, base, 3, "hanging token endpoint").await;
}

#[tokio::test]
async fn token_endpoint_closing_mid_response_gives_503_then_recovers() {
    // Token server: writes a response head and half a JSON body, then
    // closes; once `fixed`, answers a whole token (one per connection).
    let fixed = Arc::new(AtomicBool::new(false));
    let f = Arc::clone(&fixed);
    let (ts, _ts_task) = raw_server(move |mut s| {
        let fixed = f.load(Ordering::SeqCst);
        async move {
            if read_request(&mut s).await.is_none() {
                return;
            }
            let out = if fixed {
                http_response("200 OK", "connection: close\r\n", &token_json("whole", 3600))
            } else {
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 200\r\n\r\n{\"access_token\":\"ha".to_string()
            };
            let _ = s.write_all(out.as_bytes()).await;
        }
    })
    .await;
    let up = Upstream::start().await;
    let Rig {
        bin,
        base,
        app,
        url,
    } = token_rig(&format!("http://{ts}/token"), "", up.addr).await;
    expect_error(
        app.get(&url).send().await.unwrap(),
        503,
        "token_unavailable",
    )
    .await;
    fixed.store(true, Ordering::SeqCst);
    until_ok(&app, &url, Duration::from_secs(10)).await;
    assert_eq!(up.last().unwrap().headers["authorization"], "Bearer whole");
    drop(app);
    settles(&bin, base, 3, "token endpoint closing mid-response").await;
}

#[tokio::test]
async fn token_endpoint_answering_invalid_json_gives_503_then_recovers() {
    // Token server: 200 with "not json", then Ok.
    let ts = TokenServer::start().await;
    ts.set_mode(Mode::Garbage);
    let up = Upstream::start().await;
    let Rig {
        bin,
        base,
        app,
        url,
    } = token_rig(&ts.url("/token"), "", up.addr).await;
    let v = expect_error(
        app.get(&url).send().await.unwrap(),
        503,
        "token_unavailable",
    )
    .await;
    assert!(v["message"].as_str().unwrap().contains("not JSON"), "{v}");
    ts.set_mode(Mode::Ok);
    until_ok(&app, &url, Duration::from_secs(10)).await;
    drop(app);
    settles(&bin, base, 3, "invalid JSON").await;
}

#[tokio::test]
async fn a_token_without_expiry_lives_default_ttl() {
    // Token server: `expires_in: null` in every answer (and an opaque token).
    let ts = TokenServer::start().await;
    ts.set_extra(serde_json::json!({ "expires_in": null }));
    let up = Upstream::start().await;
    let cfg = format!(
        "{}{}",
        client("c", &ts.url("/token"), "default_ttl = \"123s\""),
        route("r", "c", "/")
    );
    let bin = Binary::start("", &cfg, &[]).await;
    let app = bin.client();
    let r = app
        .get(format!("http://{}/x", up.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let tokens: serde_json::Value =
        serde_json::from_str(&admin_get(bin.admin, "/tokens").await).unwrap();
    let left = tokens["clients"]["c"]["expires_in_seconds"]
        .as_u64()
        .unwrap();
    assert!((118..=123).contains(&left), "/tokens: {tokens}");
    let m = admin_get(bin.admin, "/metrics").await;
    let gauge = metric(&m, "sidekey_token_expires_in_seconds{client=\"c\"}").unwrap();
    assert!((118.0..=123.0).contains(&gauge), "gauge {gauge}");
}

/// Token server for the short-lived tokens: issues `live-N` valid for
/// `ttl` from the moment it answers (optionally after `delay_ms`), and
/// remembers each token's expiry so the upstream can check it.
#[derive(Default)]
struct LiveTokens {
    expiry: Mutex<HashMap<String, Instant>>,
    issued: AtomicUsize,
    delay_ms: AtomicU64,
    /// Upstream's findings: requests with a token it never issued, and
    /// with one past its expiry (beyond `grace_ms`); the worst lateness.
    unknown: AtomicUsize,
    expired: AtomicUsize,
    worst_late_us: AtomicU64,
    grace_ms: AtomicU64,
    seen: AtomicUsize,
}

#[tokio::test]
async fn a_token_expiring_in_one_second_is_refreshed_and_never_sent_expired() {
    let live = Arc::new(LiveTokens::default());
    // Token server: `expires_in: 1`, each token's expiry remembered.
    let st = Arc::clone(&live);
    let (ts, ts_task) = support::serve(None, move |_req| {
        let st = Arc::clone(&st);
        async move {
            tokio::time::sleep(Duration::from_millis(st.delay_ms.load(Ordering::SeqCst))).await;
            let n = st.issued.fetch_add(1, Ordering::SeqCst) + 1;
            let token = format!("live-{n}");
            st.expiry
                .lock()
                .unwrap()
                .insert(token.clone(), Instant::now() + Duration::from_secs(1));
            let mut r = http::Response::new(Full::new(Bytes::from(token_json(&token, 1))));
            r.headers_mut()
                .insert("content-type", "application/json".parse().unwrap());
            Ok::<_, Infallible>(r)
        }
    })
    .await;
    // Upstream: checks each Bearer token against the live set, as the API
    // behind the token server would; answers 200 either way and counts.
    let st = Arc::clone(&live);
    let (up, up_task) = support::serve(None, move |req: http::Request<hyper::body::Incoming>| {
        let st = Arc::clone(&st);
        async move {
            let now = Instant::now();
            st.seen.fetch_add(1, Ordering::SeqCst);
            let token = req
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or_default()
                .to_string();
            match st.expiry.lock().unwrap().get(&token) {
                None => {
                    st.unknown.fetch_add(1, Ordering::SeqCst);
                }
                Some(exp) if now > *exp => {
                    let late = now - *exp;
                    st.worst_late_us
                        .fetch_max(late.as_micros() as u64, Ordering::SeqCst);
                    if late > Duration::from_millis(st.grace_ms.load(Ordering::SeqCst)) {
                        st.expired.fetch_add(1, Ordering::SeqCst);
                    }
                }
                Some(_) => {}
            }
            Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(b"ok"))))
        }
    })
    .await;
    let cfg = format!(
        "{}{}",
        client("c", &format!("http://{ts}/token"), ""),
        route("r", "c", "/")
    );
    let bin = Binary::start("", &cfg, &[]).await;
    let app = bin.client();
    let url = format!("http://{up}/x");
    let steady = |what: &'static str, requests: usize| {
        let (app, url, live) = (app.clone(), url.clone(), Arc::clone(&live));
        async move {
            let before = live.issued.load(Ordering::SeqCst);
            // Requests 20 ms apart (bounded by `requests`).
            for _ in 0..requests {
                let r = app.get(&url).send().await.unwrap();
                assert_eq!(r.status(), 200, "{what}: {}", r.text().await.unwrap());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            live.issued.load(Ordering::SeqCst) - before
        }
    };
    // Phase 1: a prompt endpoint. The refresh runs at half the lifetime,
    // so no token comes anywhere near its expiry: checked strictly.
    let fetched = steady("prompt endpoint", 150).await;
    assert!(fetched >= 4, "only {fetched} tokens in 3 s of 1 s tokens");
    assert_eq!(live.unknown.load(Ordering::SeqCst), 0);
    assert_eq!(
        live.expired.load(Ordering::SeqCst),
        0,
        "expired tokens reached the upstream (worst {} µs late)",
        live.worst_late_us.load(Ordering::SeqCst)
    );
    // Phase 2: the endpoint takes 1.5 s, so each refresh lands 1 s after
    // the old token expired: requests in that gap must wait for the new
    // one. sidekey counts a lifetime from when the answer arrives, which
    // is a little after the token server counted it; 250 ms covers that
    // transit and the request's own way to the upstream on a loaded
    // machine, while a token sent on through the gap would be up to 1 s
    // late.
    live.grace_ms.store(250, Ordering::SeqCst);
    live.delay_ms.store(1500, Ordering::SeqCst);
    let fetched = steady("slow endpoint", 250).await;
    assert!(fetched >= 2, "only {fetched} tokens from the slow endpoint");
    assert_eq!(live.unknown.load(Ordering::SeqCst), 0);
    assert_eq!(
        live.expired.load(Ordering::SeqCst),
        0,
        "expired tokens reached the upstream (worst {} µs late)",
        live.worst_late_us.load(Ordering::SeqCst)
    );
    eprintln!(
        "{} requests, {} tokens, worst lateness {} µs",
        live.seen.load(Ordering::SeqCst),
        live.issued.load(Ordering::SeqCst),
        live.worst_late_us.load(Ordering::SeqCst)
    );
    ts_task.abort();
    up_task.abort();
}

#[tokio::test]
async fn a_fifty_megabyte_token_response_is_refused_in_bounded_memory() {
    // Token server: 50 MiB of body (with a Content-Length on /cl, chunked
    // without one on /chunked) until `fixed`; then a real token.
    let fixed = Arc::new(AtomicBool::new(false));
    let f = Arc::clone(&fixed);
    let (ts, _ts_task) = raw_server(move |mut s| {
        let fixed = f.load(Ordering::SeqCst);
        async move {
            let Some(head) = read_request(&mut s).await else {
                return;
            };
            if fixed {
                let out =
                    http_response("200 OK", "connection: close\r\n", &token_json("small", 3600));
                let _ = s.write_all(out.as_bytes()).await;
                return;
            }
            const SIZE: usize = 50 * 1024 * 1024;
            let chunked = head.starts_with("POST /chunked");
            let h = if chunked {
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n".to_string()
            } else {
                format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {SIZE}\r\n\r\n")
            };
            if s.write_all(h.as_bytes()).await.is_err() {
                return;
            }
            let block = vec![b' '; 64 * 1024];
            for _ in 0..SIZE / block.len() {
                let w = async {
                    if chunked {
                        s.write_all(format!("{:x}\r\n", block.len()).as_bytes()).await?;
                        s.write_all(&block).await?;
                        s.write_all(b"\r\n").await
                    } else {
                        s.write_all(&block).await
                    }
                };
                // sidekey stops reading and closes: the writes fail or stall.
                match tokio::time::timeout(Duration::from_secs(2), w).await {
                    Ok(Ok(())) => {}
                    _ => return,
                }
            }
            let _ = s.write_all(b"0\r\n\r\n").await;
        }
    })
    .await;
    let up = Upstream::start().await;
    let cfg = format!(
        "{}{}{}{}",
        client("cl", &format!("http://{ts}/cl"), ""),
        client("chunked", &format!("http://{ts}/chunked"), ""),
        route("r-cl", "cl", "/cl"),
        route("r-chunked", "chunked", "/chunked"),
    );
    let bin = Binary::start("", &cfg, &[]).await;
    let base = at_rest(&bin).await;
    let rss_before = bin.peak_rss_kib();
    let app = bin.client();
    for path in ["cl", "chunked"] {
        let url = format!("http://{}/{path}", up.addr);
        let v = expect_error(
            app.get(&url).send().await.unwrap(),
            503,
            "token_unavailable",
        )
        .await;
        let msg = v["message"].as_str().unwrap();
        assert!(msg.contains("larger than 1024 KiB"), "{path}: {msg}");
    }
    let peak = bin.peak_rss_kib();
    eprintln!(
        "sidekey peak RSS: {rss_before} KiB before, {peak} KiB after two 50 MiB token answers"
    );
    assert!(peak < 40 * 1024, "peak RSS {peak} KiB");
    fixed.store(true, Ordering::SeqCst);
    for path in ["cl", "chunked"] {
        until_ok(
            &app,
            &format!("http://{}/{path}", up.addr),
            Duration::from_secs(10),
        )
        .await;
    }
    drop(app);
    settles(&bin, base, 3, "50 MiB token response").await;
}

// === upstream faults ===

#[tokio::test]
async fn an_upstream_resetting_mid_body_cuts_that_response_only() {
    // Upstream: on /reset, a head promising 1 MB, 64 KiB of it, then a TCP
    // reset; anything else is a keep-alive `200 ok`.
    let (up, _up_task) = raw_server(|mut s| async move {
        while let Some(head) = read_request(&mut s).await {
            if head.starts_with("GET /reset") {
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1000000\r\n\r\n")
                    .await;
                let _ = s.write_all(&[b'x'; 65536]).await;
                let _ = s.set_zero_linger();
                return;
            }
            if s.write_all(http_response("200 OK", "", "ok").as_bytes())
                .await
                .is_err()
            {
                return;
            }
        }
    })
    .await;
    let bin = Binary::start("", "", &[]).await;
    let base = at_rest(&bin).await;
    let app = bin.client();
    for _ in 0..5 {
        // The app sees the body cut: an error while reading it, or less
        // than the promised length (never a silent short 200).
        match app.get(format!("http://{up}/reset")).send().await {
            Err(_) => {}
            Ok(r) => {
                assert_eq!(r.status(), 200);
                match r.bytes().await {
                    Err(_) => {}
                    Ok(b) => panic!("a cut body arrived whole-looking ({} bytes)", b.len()),
                }
            }
        }
        // sidekey keeps serving, on the same upstream too.
        let r = app.get(format!("http://{up}/fine")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), "ok");
    }
    drop(app);
    settles(&bin, base, 3, "upstream reset mid-body").await;
}

#[tokio::test]
async fn a_slow_upstream_gives_504_after_upstream_timeout() {
    // Upstream: `/slow?ms=N` answers after N ms.
    let up = Upstream::start().await;
    let bin = Binary::start("upstream_timeout = \"1s\"", "", &[]).await;
    let base = at_rest(&bin).await;
    let app = bin.client();
    for _ in 0..3 {
        let started = Instant::now();
        let r = app
            .get(format!("http://{}/slow?ms=4000", up.addr))
            .send()
            .await
            .unwrap();
        let v = expect_error(r, 504, "upstream_timeout").await;
        assert!(v["message"].as_str().unwrap().contains("1s"), "{v}");
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(5),
            "504 after {took:?}, expected about the 1 s upstream_timeout"
        );
    }
    let r = app
        .get(format!("http://{}/slow?ms=10", up.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    drop(app);
    settles(&bin, base, 3, "slow upstream").await;
}

#[tokio::test]
async fn an_upstream_closing_keep_alive_after_each_response_is_invisible_to_the_app() {
    // Upstream: one request per connection, then it closes, without
    // saying `Connection: close` (as servers with a short keep-alive do).
    let accepted = Arc::new(AtomicUsize::new(0));
    let a = Arc::clone(&accepted);
    let (up, _up_task) = raw_server(move |mut s| {
        a.fetch_add(1, Ordering::SeqCst);
        async move {
            if read_request(&mut s).await.is_some() {
                let _ = s
                    .write_all(http_response("200 OK", "", "ok").as_bytes())
                    .await;
            }
        }
    })
    .await;
    let bin = Binary::start("", "", &[]).await;
    let base = at_rest(&bin).await;
    let app = bin.client();
    const N: usize = 30;
    gets_all_succeed(&app, up, N).await;
    assert!(accepted.load(Ordering::SeqCst) >= N);
    drop(app);
    settles(&bin, base, 3, "upstream closing keep-alive").await;
}

#[tokio::test]
async fn upstream_connections_are_reused_when_more_than_64_requests_run_at_once() {
    // Each request held 100 ms, so N requests at once need N connections.
    let (up, _up_task, accepted) =
        counting_upstream(Duration::from_millis(100), |_| "ok".into()).await;
    let bin = Binary::start("", "", &[]).await;
    let app = bin.client();
    const N: usize = 100;
    for round in 0..3 {
        let all = (0..N).map(|i| app.get(format!("http://{up}/r{round}/{i}")).send());
        for r in futures_util::future::join_all(all).await {
            assert_eq!(r.unwrap().status(), 200);
        }
    }
    // Each round needs N connections; the next round finds them pooled. A
    // pool capped below N (it was 64) closed the rest after each round and
    // opened them again: 100 + 2 x 36.
    let n = accepted.load(Ordering::SeqCst);
    assert!(
        n <= N + 10,
        "{n} upstream connections for 3 rounds of {N} at once"
    );
}

#[tokio::test]
async fn after_a_burst_at_most_256_idle_upstream_connections_stay_pooled() {
    let (up, _up_task, _) = counting_upstream(Duration::from_millis(200), |_| "ok".into()).await;
    let bin = Binary::start("", "", &[]).await;
    let app = bin.client();
    const N: usize = 280;
    let all = (0..N).map(|i| app.get(format!("http://{up}/{i}")).send());
    for r in futures_util::future::join_all(all).await {
        assert_eq!(r.unwrap().status(), 200);
    }
    // The connections over the cap close just after their responses went
    // out, so give them a moment; the pool's idle timeout is 90 s, so an
    // uncapped pool still fails.
    let port = format!(":{:04X}", up.port());
    let pooled = || {
        sockets(bin.pid())
            .iter()
            .filter(|s| s.1.ends_with(&port) && s.2 == "ESTABLISHED")
            .count()
    };
    support::eventually(
        Duration::from_secs(3),
        &format!("at most 256 idle upstream connections after a burst of {N}"),
        || async { pooled() <= 256 },
    )
    .await;
}

#[tokio::test]
async fn a_reload_keeps_pooled_upstream_connections_unless_upstream_settings_change() {
    // The upstream answers with the X-Version header it got.
    let (up, _up_task, accepted) = counting_upstream(Duration::ZERO, |head| {
        head.lines()
            .find_map(|l| l.strip_prefix("x-version: "))
            .unwrap_or("none")
            .to_string()
    })
    .await;
    let routes = |v: &str| {
        format!("[[routes]]\nname = \"r\"\nhosts = [\"127.0.0.1\"]\nset_headers = {{ \"X-Version\" = \"{v}\" }}\n")
    };
    let bin = Binary::start("", &routes("one"), &[]).await;
    let app = bin.client();
    let url = format!("http://{up}/");
    let get = || async { app.get(&url).send().await.unwrap().text().await.unwrap() };
    assert_eq!(get().await, "one");
    // Poll until the new config answers (each poll is one request).
    let until = |want: &'static str| {
        support::eventually(Duration::from_secs(10), want, move || async move {
            get().await == want
        })
    };
    // A new header: routes change, the upstream client and its pool stay.
    bin.write_config("", &routes("two"));
    until("two").await;
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "a reload reopened upstream connections"
    );
    // A new upstream timeout: a new client, so one new connection.
    bin.write_config("upstream_timeout = \"9s\"", &routes("three"));
    until("three").await;
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_pooled_connection_closed_as_the_next_request_arrives_is_retried_for_get() {
    // Upstream: answers the first request of a connection; the next one
    // on it is read and the connection closed without an answer: the
    // keep-alive race (the server's idle timer fires as the request
    // arrives) made deterministic.
    let arrived = Arc::new(AtomicUsize::new(0));
    let a = Arc::clone(&arrived);
    let (up, _up_task) = raw_server(move |mut s| {
        let a = Arc::clone(&a);
        async move {
            if read_request(&mut s).await.is_none() {
                return;
            }
            a.fetch_add(1, Ordering::SeqCst);
            let _ = s
                .write_all(http_response("200 OK", "", "ok").as_bytes())
                .await;
            if read_request(&mut s).await.is_some() {
                a.fetch_add(1, Ordering::SeqCst);
            }
        }
    })
    .await;
    let bin = Binary::start("", "", &[]).await;
    let base = at_rest(&bin).await;
    let app = bin.client();
    const N: usize = 10;
    gets_all_succeed(&app, up, N).await;
    // Every GET after the first met the closing pooled connection, then
    // went again on a fresh one: 2N - 1 arrivals.
    eprintln!(
        "{} requests arrived for {N} GETs",
        arrived.load(Ordering::SeqCst)
    );
    drop(app);
    settles(&bin, base, 3, "pooled connection closed under a request").await;
}

// === client faults ===

#[tokio::test]
async fn clients_leaving_mid_request_or_mid_response_leak_nothing() {
    // Token server: issues tokens. Upstream: /upload reads whole bodies,
    // /download?bytes=N streams N bytes.
    let ts = TokenServer::start().await;
    let up = Upstream::start().await;
    // Requests with `X-Routed: 1` take route "r" (client "c", bodies teed
    // for a 401 retry); the others are unmatched (passed through).
    let cfg = format!(
        "{}{}match_headers = {{ X-Routed = \"1\" }}\n",
        client("c", &ts.url("/token"), ""),
        route("r", "c", "/")
    );
    let bin = Binary::start("", &cfg, &[]).await;
    let app = bin.client();
    // Warm up: token cached, upstream connection pooled.
    let r = app
        .get(format!("http://{}/warm", up.addr))
        .header("x-routed", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    drop(app);
    let base = at_rest(&bin).await;
    // App: announces 10 MB, sends 100 KiB, closes.
    for i in 0..10 {
        let routed = if i % 2 == 0 { "X-Routed: 1\r\n" } else { "" };
        let mut s = TcpStream::connect(bin.addr).await.unwrap();
        s.write_all(
            format!(
                "POST http://{}/upload HTTP/1.1\r\nHost: {}\r\n{routed}Content-Length: 10000000\r\n\r\n",
                up.addr, up.addr
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        s.write_all(&vec![b'u'; 100 * 1024]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(s);
    }
    // App: asks for 50 MiB, reads 1 MiB, closes.
    for i in 0..6 {
        let routed = if i % 2 == 0 { "X-Routed: 1\r\n" } else { "" };
        let mut s = TcpStream::connect(bin.addr).await.unwrap();
        s.write_all(
            format!(
                "GET http://{}/download?bytes=52428800 HTTP/1.1\r\nHost: {}\r\n{routed}\r\n",
                up.addr, up.addr
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let mut got = 0usize;
        let mut buf = vec![0u8; 65536];
        while got < 1024 * 1024 {
            let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "download {i} ({routed:?}) stalled after {got} bytes: {:?}",
                        String::from_utf8_lossy(&buf[..buf.len().min(200)])
                    )
                })
                .unwrap();
            assert!(n > 0, "sidekey closed download {i} before 1 MiB");
            got += n;
        }
        drop(s);
    }
    // sidekey keeps serving both paths.
    let app = bin.client();
    for routed in ["1", "0"] {
        let r = app
            .get(format!("http://{}/after", up.addr))
            .header("x-routed", routed)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "x-routed: {routed}");
    }
    let auth: Vec<bool> = up
        .requests()
        .iter()
        .filter(|r| r.uri.path() == "/after")
        .map(|r| r.headers.contains_key("authorization"))
        .collect();
    assert_eq!(auth, [true, false], "the routed request carries the token");
    assert_eq!(ts.calls(), 1, "one token for all of it");
    drop(app);
    settles(
        &bin,
        base,
        3,
        "clients leaving mid-request and mid-response",
    )
    .await;
}

/// Trickles a request head one byte per 100 ms; how long until the peer
/// closed, or `None` if it stayed open for `within`.
async fn slowloris(addr: SocketAddr, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut s = TcpStream::connect(addr).await.unwrap();
    let head = b"GET http://127.0.0.1:9/ HTTP/1.1\r\nHost: 127.0.0.1:9\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
    let mut buf = [0u8; 1024];
    for b in head.iter().cycle() {
        if start.elapsed() > within {
            return None;
        }
        if s.write_all(&[*b]).await.is_err() {
            return Some(start.elapsed());
        }
        // Anything sidekey says first (a 408) is fine; the close counts.
        let read = tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await;
        if let Ok(Ok(0) | Err(_)) = read {
            return Some(start.elapsed());
        }
    }
    None
}

#[tokio::test]
async fn slowloris_clients_are_cut_on_the_proxy_and_admin_ports() {
    // App: 10 connections per port trickling a request head, one byte per
    // 100 ms, and meanwhile a normal request.
    // Upstream: answers 200.
    let up = Upstream::start().await;
    let bin = Binary::start("header_read_timeout = \"500ms\"", "", &[]).await;
    let base = at_rest(&bin).await;
    let slow = (0..20).map(|i| {
        let addr = if i % 2 == 0 { bin.addr } else { bin.admin };
        async move { (i % 2 == 0, slowloris(addr, Duration::from_secs(5)).await) }
    });
    let app = bin.client();
    let normal = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        app.get(format!("http://{}/x", up.addr))
            .send()
            .await
            .unwrap()
            .status()
    };
    let (cut, status) = tokio::join!(futures_util::future::join_all(slow), normal);
    assert_eq!(status, 200, "a normal request during the slowloris");
    for (proxy_port, took) in cut {
        let port = if proxy_port { "proxy" } else { "admin" };
        let took =
            took.unwrap_or_else(|| panic!("a slowloris client on the {port} port stayed open 5 s"));
        assert!(
            took < Duration::from_millis(2500),
            "a slowloris client on the {port} port was cut only after {took:?}"
        );
    }
    drop(app);
    settles(&bin, base, 3, "slowloris").await;
}

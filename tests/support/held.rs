//! What sidekey holds while the fault tests run (its open fds, sockets and
//! `sidekey_connections_open`, read from the real binary) and the rig they
//! start: sidekey with one client behind one route, at rest. The fault
//! matrix (tests/faults_*.rs) checks for each fault the status and
//! `X-Sidekey-Error` code the app sees (SPEC "Errors from sidekey itself"),
//! recovery once the fault is gone, and that these come back to where they
//! were.
//! // App: reqwest through the proxy, or raw TCP to half-send or half-read.
//! // Proxy: the real binary (support::sidekey::Binary).
//! // Token servers and upstreams: the support fakes, or raw ones
//! //   (support::raw_http) for faults the fakes do not offer.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::config::{client, route};
use super::sidekey::Binary;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

pub fn fd_list(pid: u32) -> String {
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
pub fn sockets(pid: u32) -> Vec<(String, String, &'static str)> {
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
pub async fn admin_get(admin: SocketAddr, path: &str) -> String {
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
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(name)?
            .strip_prefix(' ')?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

pub async fn connections_open(admin: SocketAddr) -> f64 {
    let m = admin_get(admin, "/metrics").await;
    metric(&m, "sidekey_connections_open").unwrap_or_else(|| panic!("no gauge in:\n{m}"))
}

/// sidekey at rest: no app connection open and the fd count steady for
/// three samples in a row (at most 5 s).
pub async fn at_rest(bin: &Binary) -> usize {
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
pub async fn settles(bin: &Binary, base: usize, slack: usize, what: &str) {
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

/// Client `c` (token endpoint `token_url`, `extra` settings) behind the
/// Bearer route `r` for every path on 127.0.0.1.
pub fn token_config(token_url: &str, extra: &str) -> String {
    format!(
        "{}{}",
        client("c", token_url).extra(extra),
        route("r")
            .host("127.0.0.1")
            .path_prefix("/")
            .client("c")
            .bearer()
    )
}

/// The real binary on `proxy_extra` and `cfg`, once at rest: it, its fds
/// at rest, and an app client through it.
pub async fn resting(proxy_extra: &str, cfg: &str) -> (Binary, usize, reqwest::Client) {
    let bin = Binary::start(proxy_extra, cfg, &[]).await;
    let base = at_rest(&bin).await;
    let app = bin.client();
    (bin, base, app)
}

/// sidekey with `token_config(token_url, extra)`; its fds at rest, an app
/// client through it, and the URL `/x` on `up`.
pub struct Rig {
    pub bin: Binary,
    pub base: usize,
    pub app: reqwest::Client,
    pub url: String,
}

pub async fn token_rig(token_url: &str, extra: &str, up: SocketAddr) -> Rig {
    let (bin, base, app) = resting("", &token_config(token_url, extra)).await;
    Rig {
        bin,
        base,
        app,
        url: format!("http://{up}/x"),
    }
}

impl Rig {
    /// App: a GET to `url`, answered 503 `token_unavailable` for route `r`
    /// and client `c`; the error body.
    pub async fn token_unavailable(&self) -> serde_json::Value {
        let r = super::get_via_proxy(&self.app, &self.url).await;
        let v = super::expect_error(r, 503, "token_unavailable").await;
        assert_eq!(
            (v["route"].as_str(), v["client"].as_str()),
            (Some("r"), Some("c"))
        );
        v
    }

    /// Once the fault is gone: `url` answers 200 within 10 s, then (the app
    /// client dropped) sidekey settles back to its fds at rest, give or
    /// take 3 pooled connections; how long the recovery took.
    pub async fn recovers(self, what: &str) -> Duration {
        let took = until_ok(&self.app, &self.url, Duration::from_secs(10)).await;
        drop(self.app);
        settles(&self.bin, self.base, 3, what).await;
        took
    }
}

/// Polls `url` until it answers 200 (at most `within`); how long it took.
pub async fn until_ok(app: &reqwest::Client, url: &str, within: Duration) -> Duration {
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

/// App: `n` GETs one after another to `up`; every one must be a 200,
/// else the failures are listed with sidekey's error code and body.
pub async fn gets_all_succeed(app: &reqwest::Client, up: SocketAddr, n: usize) {
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

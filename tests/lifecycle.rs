//! The real binary: logs, memory, signals, reloads and the CLI commands.
//! // App: reqwest through the proxy. Proxy: `sidekey run` as a child process.
//! // Upstream / token server: in-process fakes on 127.0.0.1:0.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed setup step should fail the test loudly"
)]

mod support;

use std::time::Duration;

use support::sidekey::{Binary, Proxy};
use support::token_server::TokenServer;
use support::upstream::Upstream;

const SECRET: &str = "Sup3r-S3cret-Value-xyz";
const PASSWORD: &str = "Pa55w0rd-never-logged";

fn config(ts: &TokenServer, host: &str) -> String {
    format!(
        "[clients.orders]\ngrant = \"client_credentials\"\ntoken_url = \"{}\"\nclient_id = \"orders-sync\"\nclient_secret = \"<<env.ORDERS_SECRET>>\"\n\n\
         [clients.pw]\ngrant = \"password\"\ntoken_url = \"{}\"\nclient_id = \"pw-client\"\nclient_secret = \"<<env.ORDERS_SECRET>>\"\nusername = \"alice\"\npassword = \"{PASSWORD}\"\n\n\
         [[routes]]\nname = \"orders\"\nhosts = [\"{host}\"]\npath_prefix = \"/orders\"\nclient = \"orders\"\nset_headers = {{ Authorization = \"Bearer <<oauth.token>>\" }}\n\n\
         [[routes]]\nname = \"pw\"\nhosts = [\"{host}\"]\nclient = \"pw\"\nset_headers = {{ Authorization = \"Bearer <<oauth.token>>\" }}\n",
        ts.url("/token"),
        ts.url("/token"),
    )
}

#[tokio::test]
async fn tokens_secrets_and_passwords_never_reach_the_logs() {
    let ts = TokenServer::start().await;
    ts.set_extra(serde_json::json!({"refresh_token": "rt-secret-refresh"}));
    let up = Upstream::start().await;
    let bin = Binary::start("", &config(&ts, "localhost"), &[("ORDERS_SECRET", SECRET)]).await;
    let app = bin.client();
    let port = up.addr.port();
    assert_eq!(
        app.get(format!("http://localhost:{port}/orders"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        app.get(format!("http://localhost:{port}/other"))
            .header("authorization", "Bearer app-own-token")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(up.requests()[1].headers["authorization"], "Bearer tok-2");
    // Token endpoint failing with a description: logged, still no secret.
    ts.set_mode(support::token_server::Mode::OAuthError(
        "invalid_client".into(),
    ));
    // Access lines are written in batches, every 20 ms.
    support::eventually(Duration::from_secs(5), "the access log line", || async {
        bin.logs().contains("\"route\":\"orders\"")
    })
    .await;
    let logs = bin.logs();
    // The access line is written by hand (log::access): it must stay one
    // JSON object per line with tracing's shape and the request's fields.
    let access: Vec<serde_json::Value> = logs
        .lines()
        .filter(|l| l.contains("sidekey::access"))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let orders = access
        .iter()
        .find(|v| v["route"] == "orders")
        .unwrap_or_else(|| panic!("no access line for route orders:\n{logs}"));
    assert_eq!(orders["target"], "sidekey::access", "{orders}");
    assert_eq!(orders["level"], "INFO", "{orders}");
    assert_eq!(orders["message"], "request", "{orders}");
    assert_eq!(orders["method"], "GET", "{orders}");
    assert_eq!(orders["host"], format!("localhost:{port}"), "{orders}");
    assert_eq!(orders["client"], "orders", "{orders}");
    assert_eq!(orders["status"], 200, "{orders}");
    assert!(
        orders["duration_ms"].as_f64().is_some_and(|d| d >= 0.0),
        "{orders}"
    );
    assert!(
        orders["timestamp"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{orders}"
    );
    for leaked in [
        SECRET,
        PASSWORD,
        "tok-1",
        "tok-2",
        "rt-secret-refresh",
        "app-own-token",
    ] {
        assert!(
            !logs.contains(leaked),
            "{leaked} appears in the logs:\n{logs}"
        );
    }
    // Every line is one JSON object.
    for line in logs.lines() {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    }
}

#[tokio::test]
async fn fifty_megabytes_stream_both_ways_in_bounded_memory() {
    let up = Upstream::start().await;
    let ts = TokenServer::start().await;
    let bin = Binary::start("", &config(&ts, "localhost"), &[("ORDERS_SECRET", SECRET)]).await;
    let app = bin.client();
    let port = up.addr.port();
    let baseline = bin.peak_rss_kib();
    const SIZE: u64 = 50 * 1024 * 1024;
    // Download: the body streams through, the proxy never holds it.
    let mut resp = app
        .get(format!("http://localhost:{port}/download?bytes={SIZE}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut n = 0u64;
    while let Some(chunk) = resp.chunk().await.unwrap() {
        n += chunk.len() as u64;
    }
    assert_eq!(n, SIZE);
    // Upload on a routed path with a client: past retry_body_limit it streams.
    let chunks = futures_util::stream::iter((0..SIZE / 65536).map(|_| {
        Ok::<_, std::convert::Infallible>(http_body::Frame::data(bytes::Bytes::from(vec![
            b'u';
            65536
        ])))
    }));
    let r = app
        .post(format!("http://localhost:{port}/orders/upload"))
        .body(reqwest::Body::wrap(http_body_util::StreamBody::new(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let up_seen = up.last().unwrap();
    assert_eq!(up_seen.body_len, SIZE);
    // The download went through route "pw" (tok-1); the upload through "orders".
    assert_eq!(up_seen.headers["authorization"], "Bearer tok-2");
    let peak = bin.peak_rss_kib();
    let grew_mib = (peak.saturating_sub(baseline)) / 1024;
    eprintln!("sidekey peak RSS: baseline {baseline} KiB, after 2 x 50 MiB {peak} KiB");
    assert!(
        grew_mib < 24,
        "proxy RSS grew by {grew_mib} MiB moving 2 x 50 MiB (peak {peak} KiB)"
    );
}

#[tokio::test]
async fn sigterm_finishes_in_flight_requests_and_exits_zero() {
    let up = Upstream::start().await;
    let mut bin = Binary::start("", "", &[]).await;
    let app = bin.client();
    let url = format!("http://127.0.0.1:{}/slow?ms=1000", up.addr.port());
    let inflight =
        tokio::spawn(async move { app.get(url).send().await.map(|r| r.status().as_u16()) });
    support::eventually(
        Duration::from_secs(5),
        "the slow request in flight",
        || async { up.count() == 1 },
    )
    .await;
    bin.signal("TERM");
    // Draining: readiness goes away while the request finishes.
    let status = inflight.await.unwrap().unwrap();
    assert_eq!(status, 200, "in-flight request was cut off");
    let exit = tokio::time::timeout(Duration::from_secs(10), bin.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "exit status {exit:?}");
    // New connections are refused after shutdown.
    assert!(tokio::net::TcpStream::connect(bin.addr).await.is_err());
}

#[tokio::test]
async fn sighup_reloads_and_a_broken_config_keeps_the_old_one() {
    let up = Upstream::start().await;
    let route = |v: &str| {
        format!("[[routes]]\nname = \"r\"\nhosts = [\"localhost\"]\nset_headers = {{ \"X-Version\" = \"{v}\" }}\n")
    };
    let bin = Binary::start("", &route("one"), &[]).await;
    let app = bin.client();
    let url = format!("http://localhost:{}/", up.addr.port());
    app.get(&url).send().await.unwrap();
    assert_eq!(up.last().unwrap().headers["x-version"], "one");
    let path = bin.dir.path().join("proxy.toml");
    let head: String = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .take(3)
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&path, format!("{head}\n{}", route("two"))).unwrap();
    bin.signal("HUP");
    let mut seen = String::new();
    for _ in 0..50 {
        app.get(&url).send().await.unwrap();
        seen = up.last().unwrap().headers["x-version"]
            .to_str()
            .unwrap()
            .to_string();
        if seen == "two" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen, "two");
    // A broken config is rejected; "two" keeps serving.
    std::fs::write(&path, format!("{head}\nbogus = 1\n")).unwrap();
    bin.signal("HUP");
    support::eventually(
        Duration::from_secs(5),
        "the reload error metric",
        || async {
            reqwest::get(format!("http://{}/metrics", bin.admin))
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
                .contains("sidekey_config_reloads_total{outcome=\"error\"}")
        },
    )
    .await;
    app.get(&url).send().await.unwrap();
    assert_eq!(up.last().unwrap().headers["x-version"], "two");
    support::eventually(
        Duration::from_secs(5),
        "the reload rejection log",
        || async { bin.logs().contains("config reload rejected") },
    )
    .await;
}

#[tokio::test]
async fn file_change_reloads_and_unchanged_clients_keep_their_token() {
    let ts = TokenServer::start().await;
    let up = Upstream::start().await;
    let client = format!(
        "[clients.orders]\ngrant = \"client_credentials\"\ntoken_url = \"{}\"\nclient_id = \"a\"\nclient_secret = \"b\"\n",
        ts.url("/token")
    );
    let routes = |v: &str| {
        format!("[[routes]]\nname = \"r\"\nhosts = [\"localhost\"]\nclient = \"orders\"\nset_headers = {{ Authorization = \"Bearer <<oauth.token>>\", \"X-Version\" = \"{v}\" }}\n")
    };
    let proxy = Proxy::start("", &format!("{client}{}", routes("one"))).await;
    let app = proxy.client();
    let url = format!("http://localhost:{}/", up.addr.port());
    app.get(&url).send().await.unwrap();
    proxy.write_config("", &format!("{client}{}", routes("two")));
    let mut version = String::new();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        app.get(&url).send().await.unwrap();
        version = up.last().unwrap().headers["x-version"]
            .to_str()
            .unwrap()
            .to_string();
        if version == "two" {
            break;
        }
    }
    assert_eq!(version, "two", "file change did not reload");
    assert_eq!(up.last().unwrap().headers["authorization"], "Bearer tok-1");
    assert_eq!(
        ts.calls(),
        1,
        "an unchanged client kept its cached token across the reload"
    );
    assert!(proxy
        .metrics()
        .await
        .contains("sidekey_config_reloads_total{outcome=\"ok\"}"));
    proxy.shutdown().await;
}

#[test]
fn check_prints_ok_or_every_error_with_positions() {
    let bin = env!("CARGO_BIN_EXE_sidekey");
    let root = env!("CARGO_MANIFEST_DIR");
    let out = std::process::Command::new(bin)
        .args(["check", "--config", &format!("{root}/proxy.toml")])
        .env_remove("CAP_CLIENT_KEY")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n");
    let broken = format!("{root}/tests/fixtures/broken/several_errors.toml");
    let out = std::process::Command::new(bin)
        .args(["check", "--config", &broken])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "diagnostics go to stderr");
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains(&format!("{broken}:13:10: route \"one\"")),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "{broken}:18:29: route \"two\": header \"X-Token\""
        )),
        "{text}"
    );
    // `run` on a broken config exits 78 (EX_CONFIG).
    let out = std::process::Command::new(bin)
        .args(["run", "--config", &broken])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    // SIDEKEY_CONFIG is the fallback for --config.
    let out = std::process::Command::new(bin)
        .arg("check")
        .env("SIDEKEY_CONFIG", &broken)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn check_never_prints_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.toml");
    std::fs::write(
        &path,
        format!("[clients.c]\ngrant = \"password\"\ntoken_url = \"not a url\"\nclient_id = \"i\"\nclient_secret = \"{SECRET}\"\nusername = \"u\"\npassword = \"{PASSWORD}\"\n"),
    )
    .unwrap();
    let (code, text) = support::sidekey::check(&path);
    assert_eq!(code, Some(1));
    assert!(text.contains("token_url"), "{text}");
    assert!(!text.contains(SECRET) && !text.contains(PASSWORD), "{text}");
}

#[tokio::test]
async fn token_command_prints_type_expiry_scopes_and_the_token_only_with_show() {
    let ts = TokenServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.toml");
    std::fs::write(
        &path,
        format!("[clients.c]\ngrant = \"client_credentials\"\ntoken_url = \"{}\"\nclient_id = \"i\"\nclient_secret = \"s\"\nscopes = [\"a\", \"b\"]\n", ts.url("/token")),
    )
    .unwrap();
    let run = move |show: bool| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_sidekey"));
        cmd.args(["token", "c", "--config"]).arg(&path);
        if show {
            cmd.arg("--show");
        }
        cmd.output().unwrap()
    };
    let out = tokio::task::spawn_blocking(move || (run(false), run(true)))
        .await
        .unwrap();
    let plain = String::from_utf8_lossy(&out.0.stdout).to_string();
    assert!(out.0.status.success(), "{plain}");
    assert!(plain.contains("type: Bearer\n"), "{plain}");
    let left: u64 = plain
        .lines()
        .find_map(|l| {
            l.strip_prefix("expires_in: ")?
                .strip_suffix('s')?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no expires_in line: {plain}"));
    assert!((3590..=3600).contains(&left), "{plain}");
    assert!(plain.contains("scopes: a b\n"), "{plain}");
    assert!(!plain.contains("tok-1"), "token printed without --show");
    let shown = String::from_utf8_lossy(&out.1.stdout);
    assert!(shown.contains("token: tok-2"), "{shown}");
}

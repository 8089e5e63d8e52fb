//! Corporate networks: `[proxy] upstream_proxy`, `token_proxy`,
//! `no_upstream_proxy` and `SIDEKEY_UPSTREAM_PROXY`, through a real parent
//! proxy; and sidekey's own `HTTP_PROXY` left to the app.
//! Actors:
//! // Parent: tinyproxy on an ephemeral loopback port, Basic credentials
//! //   required; its log shows each request line it received.
//! // IdP: the counting token server (plain HTTP).
//! // Upstreams: record what arrived (plain, or TLS from a test CA).
//! // App: reqwest with sidekey as its proxy.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed setup step should fail the test loudly"
)]

mod support;

use std::time::Duration;

use support::config;
use support::expect_error;
use support::parent_proxy::Tinyproxy;
use support::pki::new_ca;
use support::sidekey::{proxy_env, Binary, Proxy};
use support::token_server::TokenServer;
use support::upstream::Upstream;

/// A Bearer route through client `c`, to `upstream` (`as-requested`,
/// `https`, ...).
fn route(name: &str, host: &str, upstream: &str) -> String {
    config::route(name)
        .host(host)
        .client("c")
        .bearer()
        .extra(&format!("upstream = \"{upstream}\""))
        .to_string()
}

fn client(token_url: &str) -> String {
    config::client("c", token_url).to_string()
}

/// The client and one route to plain-HTTP upstreams on 127.0.0.1.
fn plain_route_config(ts: &TokenServer) -> String {
    format!(
        "{}{}",
        client(&ts.url("/token")),
        route("r", "127.0.0.1", "as-requested")
    )
}

/// What every test here starts with: a private CA trusted through
/// `extra_roots`, a token server, a plain and a TLS upstream, and the client
/// plus a route to each upstream.
struct Rig {
    _dir: tempfile::TempDir,
    ca: support::pki::TestCa,
    ts: TokenServer,
    plain: Upstream,
    tls: Upstream,
    config: String,
}

impl Rig {
    async fn start(ca_name: &str) -> Rig {
        let ca = new_ca(ca_name);
        let dir = tempfile::tempdir().unwrap();
        let ca_path = dir.path().join("ca.pem");
        std::fs::write(&ca_path, &ca.cert_pem).unwrap();
        let ts = TokenServer::start().await;
        let plain = Upstream::start().await;
        let tls = Upstream::start_tls(ca.server_config(&["127.0.0.1"], &[b"http/1.1"])).await;
        let config = format!(
            "[tls]\nextra_roots = [\"{}\"]\n{}{}{}",
            ca_path.display(),
            client(&ts.url("/token")),
            route(
                "plain",
                &format!("127.0.0.1:{}", plain.addr.port()),
                "as-requested"
            ),
            route("tls", &format!("127.0.0.1:{}", tls.addr.port()), "https"),
        );
        Rig {
            _dir: dir,
            ca,
            ts,
            plain,
            tls,
            config,
        }
    }
}

fn authorization(up: &Upstream) -> Vec<Option<String>> {
    up.requests()
        .iter()
        .map(|r| {
            r.headers
                .get("authorization")
                .map(|v| v.to_str().unwrap().to_string())
        })
        .collect()
}

async fn wait_for_line(parent: &Tinyproxy, line: &str) {
    support::eventually(Duration::from_secs(10), line, || async {
        parent.requests().iter().any(|l| l == line)
    })
    .await;
}

#[tokio::test]
async fn plain_tls_tunnel_and_token_traffic_go_through_the_parent_and_the_token_only_to_its_host() {
    support::init_crypto();
    let parent = Tinyproxy::start().await;
    let Rig {
        _dir,
        ca,
        ts,
        plain,
        tls,
        config,
    } = Rig::start("corporate test CA").await;
    let unrouted = Upstream::start().await;
    let direct = Upstream::start().await;
    let tunnelled = Upstream::start_tls(ca.server_config(&["127.0.0.1"], &[b"http/1.1"])).await;
    let port = |u: &Upstream| u.addr.port();
    let proxy_extra = format!(
        "upstream_proxy = \"{p}\"\ntoken_proxy = \"{p}\"\nno_upstream_proxy = [\"localhost\"]\nconnect_ports = [{}]\n",
        port(&tunnelled),
        p = parent.url_with_credentials(),
    );
    let cfg = format!(
        "{config}{}",
        route(
            "direct",
            &format!("localhost:{}", port(&direct)),
            "as-requested"
        ),
    );
    let sidekey = Proxy::start(&proxy_extra, &cfg).await;
    let app = sidekey.client();
    let get = |url: String| {
        let app = app.clone();
        async move { app.get(url).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(
        get(format!("http://127.0.0.1:{}/p", port(&plain))).await,
        200
    );
    assert_eq!(get(format!("http://127.0.0.1:{}/t", port(&tls))).await, 200);
    assert_eq!(
        get(format!("http://127.0.0.1:{}/o", port(&unrouted))).await,
        200
    );
    assert_eq!(
        get(format!("http://localhost:{}/d", port(&direct))).await,
        200
    );
    // An IP literal in deny_destinations is refused before the parent is asked.
    assert_eq!(
        get("http://169.254.169.254/latest/meta-data/".into()).await,
        403
    );
    // App: a blind tunnel (CONNECT to an unrouted host) through sidekey.
    let tunnel_app = reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(sidekey.url()).unwrap())
        .add_root_certificate(reqwest::Certificate::from_pem(ca.cert_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let r = tunnel_app
        .get(format!("https://127.0.0.1:{}/z", port(&tunnelled)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Upstreams: the token reached the routed hosts only; none of them saw
    // the parent's credentials.
    let bearer = || vec![Some("Bearer tok-1".to_string())];
    assert_eq!(authorization(&plain), bearer());
    assert_eq!(authorization(&tls), bearer());
    assert_eq!(authorization(&direct), bearer());
    assert_eq!(authorization(&unrouted), vec![None]);
    assert_eq!(authorization(&tunnelled), vec![None]);
    for up in [&plain, &tls, &unrouted, &direct, &tunnelled] {
        assert!(up
            .last()
            .unwrap()
            .headers
            .get("proxy-authorization")
            .is_none());
    }
    assert_eq!(ts.calls(), 1);
    assert!(ts.requests()[0]
        .headers
        .get("proxy-authorization")
        .is_none());

    // Parent: absolute-form for plain HTTP (token request included), CONNECT
    // for TLS and the tunnel; nothing for `no_upstream_proxy` or the denied
    // address.
    for line in [
        format!("POST http://127.0.0.1:{}/token HTTP/1.1", ts.addr.port()),
        format!("GET http://127.0.0.1:{}/p HTTP/1.1", port(&plain)),
        format!("CONNECT 127.0.0.1:{} HTTP/1.1", port(&tls)),
        format!("GET http://127.0.0.1:{}/o HTTP/1.1", port(&unrouted)),
        format!("CONNECT 127.0.0.1:{} HTTP/1.1", port(&tunnelled)),
    ] {
        wait_for_line(&parent, &line).await;
    }
    let seen = parent.requests();
    let direct_port = format!(":{}", port(&direct));
    assert!(
        !seen
            .iter()
            .any(|l| l.contains(&direct_port) || l.contains("169.254")),
        "{seen:#?}"
    );
    // The app's keep-alive tunnel would otherwise hold the drain open.
    drop((app, tunnel_app));
    sidekey.shutdown().await;
}

#[tokio::test]
async fn without_credentials_the_parent_refuses_and_the_app_gets_a_502_not_its_407() {
    support::init_crypto();
    let parent = Tinyproxy::start().await;
    let Rig {
        _dir,
        ts,
        plain: up,
        tls,
        config: cfg,
        ..
    } = Rig::start("corporate test CA").await;
    let sidekey = Proxy::start(&format!("upstream_proxy = \"{}\"\n", parent.url()), &cfg).await;
    // Plain HTTP (the parent's 407 response) and TLS (its 407 to CONNECT)
    // alike: sidekey's failure, not a question for the app.
    for target in [up.addr, tls.addr] {
        let r = sidekey
            .client()
            .get(format!("http://{target}/x"))
            .send()
            .await
            .unwrap();
        expect_error(r, 502, "upstream_unreachable").await;
    }
    // The token came directly (no token_proxy); no upstream saw a request.
    assert_eq!(ts.calls(), 1);
    assert_eq!(up.count() + tls.count(), 0);
    sidekey.shutdown().await;
}

#[tokio::test]
async fn sidekey_upstream_proxy_in_the_environment_overrides_the_config() {
    let parent = Tinyproxy::start().await;
    let ts = TokenServer::start().await;
    let up = Upstream::start().await;
    let cfg = plain_route_config(&ts);
    // The file names a parent nobody listens on; the variable wins.
    let dead = support::sidekey::free_port();
    let bin = Binary::start(
        &format!("upstream_proxy = \"http://{dead}\"\n"),
        &cfg,
        &[("SIDEKEY_UPSTREAM_PROXY", &parent.url_with_credentials())],
    )
    .await;
    let r = bin
        .client()
        .get(format!("http://{}/env", up.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "logs:\n{}", bin.logs());
    assert_eq!(authorization(&up), vec![Some("Bearer tok-1".to_string())]);
    wait_for_line(&parent, &format!("GET http://{}/env HTTP/1.1", up.addr)).await;
    // The credentials in the variable are never logged.
    assert!(!bin.logs().contains(parent.password), "{}", bin.logs());
}

#[tokio::test]
async fn sidekey_ignores_http_proxy_in_its_own_environment() {
    support::init_crypto();
    // Trap: what HTTP(S)_PROXY points at; it must see nothing.
    let trap = Upstream::start().await;
    let Rig {
        _dir,
        ts,
        plain,
        tls,
        config: cfg,
        ..
    } = Rig::start("env test CA").await;
    let trap_url = format!("http://{}", trap.addr);
    let bin = Binary::start("", &cfg, &proxy_env(&trap_url)).await;
    for up in [&plain, &tls] {
        let r = bin
            .client()
            .get(format!("http://{}/x", up.addr))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "logs:\n{}", bin.logs());
        assert_eq!(authorization(up), vec![Some("Bearer tok-1".to_string())]);
    }
    assert_eq!(ts.calls(), 1);
    assert_eq!(trap.count(), 0, "sidekey used the app's proxy settings");
}

#[tokio::test]
async fn a_reload_that_sets_token_proxy_sends_the_next_token_request_through_it() {
    let parent = Tinyproxy::start().await;
    let ts = TokenServer::start().await;
    let up = Upstream::start().await;
    let cfg = plain_route_config(&ts);
    let sidekey = Proxy::start("", &cfg).await;
    let get = || async {
        let r = sidekey.client().get(format!("http://{}/x", up.addr)).send();
        r.await.unwrap().status().as_u16()
    };
    assert_eq!(get().await, 200);
    assert_eq!(ts.calls(), 1);
    // The same client, now behind a token proxy: its cached token was got
    // without one, and the next token request must use it.
    sidekey.write_config(
        &format!("token_proxy = \"{}\"\n", parent.url_with_credentials()),
        &cfg,
    );
    let token_line = format!("POST http://{}/token HTTP/1.1", ts.addr);
    support::eventually(
        Duration::from_secs(15),
        "a token request through the new token_proxy",
        || async {
            assert_eq!(get().await, 200);
            parent.requests().contains(&token_line)
        },
    )
    .await;
    sidekey.shutdown().await;
}

/// App: writes `raw` to sidekey and reads what comes back within a few
/// seconds (the first bytes of a CONNECT answer are enough).
async fn raw_head(proxy: std::net::SocketAddr, raw: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(proxy).await.unwrap();
    s.write_all(raw.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .map(|r| r.unwrap_or(0))
        .unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// The parent resolves names with getaddrinfo, which reads "2130706433",
/// "0x7f.1" or "127.1" as 127.0.0.1: such a target is an IP literal in
/// disguise and is held to `deny_destinations` before the parent is asked.
#[tokio::test]
async fn a_numeric_ipv4_target_in_disguise_is_denied_before_the_parent() {
    let parent = Tinyproxy::start().await;
    let up = Upstream::start().await;
    let p = up.addr.port();
    let proxy_extra = format!(
        "upstream_proxy = \"{}\"\ndeny_destinations = [\"127.0.0.0/8\"]\nconnect_ports = [{p}]\nupstream_timeout = \"5s\"\n",
        parent.url_with_credentials(),
    );
    let sidekey = Proxy::start(&proxy_extra, "").await;
    for host in ["2130706433", "0x7f.1", "127.1", "0177.0.0.1", "127.0.0.1."] {
        let get = raw_head(
            sidekey.addr,
            &format!(
                "GET http://{host}:{p}/x HTTP/1.1\r\nHost: {host}:{p}\r\nConnection: close\r\n\r\n"
            ),
        )
        .await;
        assert!(get.starts_with("HTTP/1.1 403"), "GET via {host}: {get}");
        let connect = raw_head(
            sidekey.addr,
            &format!("CONNECT {host}:{p} HTTP/1.1\r\nHost: {host}:{p}\r\n\r\n"),
        )
        .await;
        assert!(
            connect.starts_with("HTTP/1.1 403"),
            "CONNECT {host}: {connect}"
        );
    }
    assert!(up.requests().is_empty());
    let seen = parent.requests();
    assert!(seen.is_empty(), "{seen:#?}");
    sidekey.shutdown().await;
}

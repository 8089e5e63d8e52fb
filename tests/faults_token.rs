//! Fault matrix, token endpoints: failing, hanging, closing mid-answer,
//! invalid JSON, no expiry, one-second tokens, a 50 MB answer.
//! Each checks the status and error code the app sees, recovery, and that
//! sidekey's fds and connections come back (actors: see support::held).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed setup step should fail the test loudly"
)]

mod support;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use support::config::{client, route};
use support::held::*;
use support::raw_http::*;
use support::sidekey::Binary;
use support::token_server::{Mode, TokenServer};
use support::upstream::Upstream;
use support::{expect_error, get_via_proxy};
use tokio::io::AsyncWriteExt;

#[tokio::test]
async fn token_endpoint_500s_give_503_at_once_then_recover_after_backoff() {
    // Token server: answers 500 until the test switches it back to Ok.
    let ts = TokenServer::start().await;
    ts.set_mode(Mode::Fail(500));
    // Upstream: records the Authorization that arrives after recovery.
    let up = Upstream::start().await;
    // Counted from the start: the first fetch may be made at start-up.
    let first = Instant::now();
    let rig = token_rig(&ts.url("/token"), "", up.addr).await;
    for _ in 0..10 {
        let started = Instant::now();
        let v = rig.token_unavailable().await;
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
    let took = rig.recovers("token endpoint 500s").await;
    eprintln!("recovered {took:?} after the endpoint came back");
    assert_eq!(up.last().unwrap().headers["authorization"], "Bearer tok-1");
}

#[tokio::test]
async fn hanging_token_endpoint_gives_503_after_the_client_timeout() {
    // Token server: accepts and never answers, until switched back to Ok.
    let ts = TokenServer::start().await;
    ts.set_mode(Mode::Hang);
    // Upstream: answers 200.
    let up = Upstream::start().await;
    let rig = token_rig(&ts.url("/token"), "timeout = \"1s\"", up.addr).await;
    // Five requests at once wait on one fetch, and all get 503 once the
    // client's timeout has passed.
    let started = Instant::now();
    let answers =
        futures_util::future::join_all((0..5).map(|_| rig.app.get(&rig.url).send())).await;
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
    rig.recovers("hanging token endpoint").await;
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
                token_response("whole")
            } else {
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 200\r\n\r\n{\"access_token\":\"ha".to_string()
            };
            let _ = s.write_all(out.as_bytes()).await;
        }
    })
    .await;
    let up = Upstream::start().await;
    let rig = token_rig(&format!("http://{ts}/token"), "", up.addr).await;
    rig.token_unavailable().await;
    fixed.store(true, Ordering::SeqCst);
    rig.recovers("token endpoint closing mid-response").await;
    assert_eq!(up.last().unwrap().headers["authorization"], "Bearer whole");
}

#[tokio::test]
async fn token_endpoint_answering_invalid_json_gives_503_then_recovers() {
    // Token server: 200 with "not json", then Ok.
    let ts = TokenServer::start().await;
    ts.set_mode(Mode::Garbage);
    let up = Upstream::start().await;
    let rig = token_rig(&ts.url("/token"), "", up.addr).await;
    let v = rig.token_unavailable().await;
    assert!(v["message"].as_str().unwrap().contains("not JSON"), "{v}");
    ts.set_mode(Mode::Ok);
    rig.recovers("invalid JSON").await;
}

#[tokio::test]
async fn a_token_without_expiry_lives_default_ttl() {
    // Token server: `expires_in: null` in every answer (and an opaque token).
    let ts = TokenServer::start().await;
    ts.set_extra(serde_json::json!({ "expires_in": null }));
    let up = Upstream::start().await;
    let cfg = token_config(&ts.url("/token"), "default_ttl = \"123s\"");
    let bin = Binary::start("", &cfg, &[]).await;
    let r = get_via_proxy(&bin.client(), format!("http://{}/x", up.addr)).await;
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
    let cfg = token_config(&format!("http://{ts}/token"), "");
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
                let _ = s.write_all(token_response("small").as_bytes()).await;
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
        client("cl", &format!("http://{ts}/cl")),
        client("chunked", &format!("http://{ts}/chunked")),
        route("r-cl")
            .host("127.0.0.1")
            .path_prefix("/cl")
            .client("cl")
            .bearer(),
        route("r-chunked")
            .host("127.0.0.1")
            .path_prefix("/chunked")
            .client("chunked")
            .bearer(),
    );
    let bin = Binary::start("", &cfg, &[]).await;
    let base = at_rest(&bin).await;
    let rss_before = bin.peak_rss_kib();
    let app = bin.client();
    for path in ["cl", "chunked"] {
        let url = format!("http://{}/{path}", up.addr);
        let v = expect_error(get_via_proxy(&app, &url).await, 503, "token_unavailable").await;
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

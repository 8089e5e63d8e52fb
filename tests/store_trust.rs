//! `[store]` under attack and misuse: the store key is the whole client,
//! oversized values are never read, a 401 removes the token from the
//! store, locks expire, and the file store follows no planted path.
//! Actors:
//! // Redis: a real redis-server on an ephemeral loopback port.
//! // IdP: the counting token server (tok-1, tok-2, … in order).
//! // sidekey: in-process, one or more "replicas" on the same store.
//! // Upstream: records the injected tokens; can answer 401 to some.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed setup step should fail the test loudly"
)]

mod support;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::config::{self, client, file_store, route, stored_client};
use support::redis::Redis;
use support::sidekey::Proxy;
use support::token_server::TokenServer;
use support::upstream::Upstream;

fn redis_store(r: &Redis) -> String {
    config::redis_store(&r.url(), "2s", "")
}

/// One client `c` (`extra` settings) on one route.
fn one_client(token_url: &str, store: &str, extra: &str) -> String {
    stored_client(store, &client("c", token_url).extra(extra))
}

/// App: a GET through `p`; the status and the Authorization the upstream saw.
async fn get(p: &Proxy, up: &Upstream, path: &str) -> (u16, String) {
    let status = p
        .client()
        .get(format!("http://{}{path}", up.addr))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16();
    let auth = up
        .last()
        .and_then(|r| r.headers.get("authorization").cloned())
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, auth)
}

/// The one `sidekey:token:<digest>` key; its digest.
async fn token_digest(redis: &Redis) -> String {
    let keys = redis.keys("sidekey:token:*").await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    keys[0].trim_start_matches("sidekey:token:").to_string()
}

#[tokio::test]
async fn clients_that_differ_in_any_rendered_setting_never_share_a_stored_token() {
    let ts = TokenServer::start().await;
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let (sa, sb) = (file("sa", "subject-a"), file("sb", "subject-b"));
    // Pairs of clients alike (the same id and secret) but for one setting
    // the endpoint sees.
    let pairs = [
        (
            "client_credentials",
            "params = { resource = \"https://a\" }".to_string(),
            "params = { resource = \"https://b\" }".to_string(),
        ),
        (
            "password",
            "username = \"ann\"\npassword = \"p\"".into(),
            "username = \"bob\"\npassword = \"p\"".into(),
        ),
        (
            "token_exchange",
            format!("subject_token = \"<<file:{sa}>>\""),
            format!("subject_token = \"<<file:{sb}>>\""),
        ),
        (
            "refresh_token",
            "refresh_token = \"rt-a\"".into(),
            "refresh_token = \"rt-b\"".into(),
        ),
    ];
    for (i, (grant, a, b)) in pairs.iter().enumerate() {
        let store = file_store(&dir.path().join(format!("tokens-{i}.json")));
        let alike = |name: &str, extra: &str| {
            client(name, &ts.url("/token"))
                .grant(grant)
                .credentials("i", Some("s"))
                .extra(extra)
        };
        let routed = |name: &str| {
            route(&format!("r{name}"))
                .host("127.0.0.1")
                .path_prefix(&format!("/{name}"))
                .client(name)
                .bearer()
        };
        let cfg = format!(
            "{store}\n{}{}{}{}",
            alike("a", a),
            alike("b", b),
            routed("a"),
            routed("b")
        );
        let p = Proxy::start("", &cfg).await;
        let before = ts.calls();
        let (sa, ta) = get(&p, &up, "/a").await;
        let (sb, tb) = get(&p, &up, "/b").await;
        assert_eq!((sa, sb), (200, 200));
        assert_ne!(
            ta, tb,
            "client b was served client a's token ({grant}: {a} / {b})"
        );
        assert_eq!(ts.calls(), before + 2, "{grant}: {a} / {b}");
        p.shutdown().await;
    }
}

#[tokio::test]
async fn a_rotated_client_id_file_fetches_anew_instead_of_taking_the_stored_token() {
    let ts = TokenServer::start().await;
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let id = dir.path().join("client_id");
    std::fs::write(&id, "org-one").unwrap();
    let store = file_store(&dir.path().join("tokens.json"));
    let cfg = stored_client(
        &store,
        &client("c", &ts.url("/token"))
            .credentials(&format!("<<file:{}>>", id.display()), Some("s")),
    );
    let p = Proxy::start("", &cfg).await;
    assert_eq!(get(&p, &up, "/1").await, (200, "Bearer tok-1".into()));
    // The Secret behind the file rotates to another org's client.
    std::fs::write(&id, "org-two").unwrap();
    support::eventually(
        Duration::from_secs(10),
        "a token for the new client_id",
        || async { get(&p, &up, "/2").await.1 != "Bearer tok-1" },
    )
    .await;
    let last = ts.requests().last().unwrap().clone();
    assert_eq!(last.auth.unwrap().0, "org-two");
}

#[tokio::test]
async fn an_oversized_store_value_is_ignored_without_being_read() {
    let redis = Redis::start().await;
    let ts = TokenServer::start().await;
    let up = Upstream::start().await;
    let cfg = one_client(&ts.url("/token"), &redis_store(&redis), "");
    let a = Proxy::start("", &cfg).await;
    assert_eq!(get(&a, &up, "/1").await.0, 200);
    a.shutdown().await;
    let key = format!("sidekey:token:{}", token_digest(&redis).await);
    // Planted: 8 MiB where a sealed token (well under 1 KiB) belongs.
    let big = "A".repeat(8 << 20);
    let _: () = redis
        .query(redis::cmd("SET").arg(&key).arg(&big))
        .await
        .unwrap();
    let sent = || async {
        let info: String = redis.query(redis::cmd("INFO").arg("stats")).await.unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("total_net_output_bytes:"))
            .unwrap()
            .trim()
            .parse::<u64>()
            .unwrap()
    };
    let before = sent().await;
    let b = Proxy::start("", &cfg).await;
    assert_eq!(get(&b, &up, "/2").await, (200, "Bearer tok-2".into()));
    let out = sent().await - before;
    eprintln!("Redis sent {out} bytes to a cold replica over an 8 MiB value");
    assert!(
        out < 1 << 20,
        "Redis sent {out} bytes: the oversized value was read"
    );
    assert_eq!(ts.calls(), 2, "a corrupt value is a miss: fetched instead");
    assert!(b
        .metrics()
        .await
        .contains("op=\"get\",outcome=\"rejected\""));
}

#[tokio::test]
async fn a_401_removes_the_token_from_the_store_and_an_older_one_written_back_is_not_taken() {
    let redis = Redis::start().await;
    let ts = TokenServer::start().await;
    let up = Upstream::start().await;
    // Upstream: 401 for the tokens the test has revoked.
    let revoked: Arc<Mutex<HashSet<String>>> = Arc::default();
    let r = Arc::clone(&revoked);
    up.set_responder(move |req| {
        let auth = req.headers.get("authorization")?.to_str().ok()?;
        r.lock()
            .unwrap()
            .contains(auth)
            .then(|| (401, vec![], "revoked".to_string()))
    });
    let revoke = |t: &str| revoked.lock().unwrap().insert(format!("Bearer {t}"));
    let cfg = one_client(&ts.url("/token"), &redis_store(&redis), "");
    let a = Proxy::start("", &cfg).await;
    assert_eq!(get(&a, &up, "/1").await, (200, "Bearer tok-1".into()));
    let key = format!("sidekey:token:{}", token_digest(&redis).await);
    let sealed_tok1: String = redis.query(redis::cmd("GET").arg(&key)).await.unwrap();

    // tok-1 revoked: the retry carries a new token, not tok-1 read back.
    revoke("tok-1");
    assert_eq!(get(&a, &up, "/2").await, (200, "Bearer tok-2".into()));
    // Another replica, cold, takes tok-2 from the store.
    let b = Proxy::start("", &cfg).await;
    assert_eq!(get(&b, &up, "/3").await, (200, "Bearer tok-2".into()));
    assert_eq!(ts.calls(), 2);

    // The older sealed tok-1 written back over tok-2, then tok-2 revoked:
    // replica a fetches tok-3 rather than taking the older value.
    let _: () = redis
        .query(redis::cmd("SET").arg(&key).arg(&sealed_tok1))
        .await
        .unwrap();
    revoke("tok-2");
    assert_eq!(get(&a, &up, "/4").await, (200, "Bearer tok-3".into()));
}

#[tokio::test]
async fn a_lock_without_expiry_or_held_by_another_replica_stalls_nothing_and_the_token_is_stored() {
    let redis = Redis::start().await;
    let ts = TokenServer::start().await;
    let up = Upstream::start().await;
    // Default client timeout (10 s): a lock that is never released would
    // hold a cold fetch that long.
    for (client, lock_px) in [("", None), ("timeout = \"2s\"", Some(60_000u64))] {
        redis.query::<()>(&redis::cmd("FLUSHALL")).await.unwrap();
        let cfg = one_client(&ts.url("/token"), &redis_store(&redis), client);
        let first = Proxy::start("", &cfg).await;
        assert_eq!(get(&first, &up, "/1").await.0, 200);
        first.shutdown().await;
        let digest = token_digest(&redis).await;
        let lock = format!("sidekey:lock:{digest}");
        redis
            .query::<()>(redis::cmd("DEL").arg(format!("sidekey:token:{digest}")))
            .await
            .unwrap();
        // A crashed replica's lock: without expiry, or one far longer
        // than any fetch (60 s).
        let mut set = redis::cmd("SET");
        set.arg(&lock).arg("crashed-replica");
        if let Some(px) = lock_px {
            set.arg("PX").arg(px);
        }
        redis.query::<()>(&set).await.unwrap();

        let p = Proxy::start("", &cfg).await;
        let t0 = Instant::now();
        assert_eq!(get(&p, &up, "/2").await.0, 200);
        let took = t0.elapsed();
        eprintln!("cold fetch past a crashed replica's lock ({client:?}): {took:?}");
        if lock_px.is_none() {
            assert!(
                took < Duration::from_secs(5),
                "a lock without expiry held the fetch {took:?}"
            );
        }
        let left: i64 = redis.query(redis::cmd("PTTL").arg(&lock)).await.unwrap();
        assert_ne!(left, -1, "a lock without expiry is left ({client})");
        assert!(
            left <= 10_000,
            "a lock outlives the token endpoint timeout: {left} ms"
        );
        assert_eq!(
            redis.keys("sidekey:token:*").await.len(),
            1,
            "the token fetched while the lock was held was not stored ({client})"
        );
        p.shutdown().await;
    }
}

// === File store ===

/// sidekey's start-up error for `cfg`, if it refuses to start.
async fn start_error(cfg: &str) -> Option<String> {
    match Proxy::try_start("", cfg).await {
        Ok(p) => {
            p.shutdown().await;
            None
        }
        Err(e) => Some(e),
    }
}

#[tokio::test]
async fn a_file_store_at_a_symlink_or_another_users_file_is_refused_naming_it() {
    let ts = TokenServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "{}").unwrap();
    for (name, target) in [
        ("live.json", victim.clone()),
        ("dangling.json", dir.path().join("nowhere")),
    ] {
        let link = dir.path().join(name);
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let cfg = one_client(&ts.url("/token"), &file_store(&link), "");
        let err = start_error(&cfg)
            .await
            .expect("a symlinked store path was accepted");
        assert!(
            err.contains(&link.display().to_string()) && err.contains("symlink"),
            "{err}"
        );
    }
    // Another user's file (checkable only where the test may chown).
    let theirs = dir.path().join("theirs.json");
    std::fs::write(&theirs, "{}").unwrap();
    if std::os::unix::fs::chown(&theirs, Some(4242), None).is_ok() {
        let cfg = one_client(&ts.url("/token"), &file_store(&theirs), "");
        let err = start_error(&cfg)
            .await
            .expect("another user's store file was accepted");
        assert!(
            err.contains(&theirs.display().to_string()) && err.contains("owned"),
            "{err}"
        );
    }
}

#[tokio::test]
async fn a_file_store_writes_through_a_fresh_private_temp_file_and_a_corrupt_one_is_a_miss() {
    use std::os::unix::fs::PermissionsExt;
    let ts = TokenServer::start().await;
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.json");
    // Planted where the old temp name was: a link to a file of the attacker's.
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "untouched").unwrap();
    let planted = dir
        .path()
        .join(format!("tokens.tmp.{}", std::process::id()));
    std::os::unix::fs::symlink(&victim, &planted).unwrap();
    for corrupt in ["", "not json {"] {
        std::fs::write(&path, corrupt).unwrap();
        let cfg = one_client(&ts.url("/token"), &file_store(&path), "");
        let p = Proxy::start("", &cfg).await;
        assert_eq!(get(&p, &up, "/1").await.0, 200, "{corrupt:?}");
        p.shutdown().await;
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(meta.is_file(), "the store is no longer a regular file");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let stored: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(
            stored.as_object().unwrap().len(),
            1,
            "the fetched token was stored"
        );
    }
    // No temp file left behind.
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

//! Cache rules from the SPEC, on paused time with a fake endpoint:
//! singleflight, refresh ahead of expiry, backoff, never-stale, 401 drop.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex as StdMutex;

use super::*;
use crate::secret::Secret;
use crate::template::TokenView;

/// A token endpoint that counts calls and answers from a script.
#[derive(Default)]
struct Fake {
    calls: AtomicUsize,
    fail: StdMutex<bool>,
    ttl: u64,
    delay: Duration,
}

impl FetchToken for Arc<Fake> {
    fn fetch<'a>(
        &'a self,
        _s: &'a ClientSettings,
    ) -> BoxFuture<'a, Result<TokenResponse, FetchError>> {
        Box::pin(async move {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::time::sleep(self.delay).await;
            if *self.fail.lock().unwrap() {
                return Err(FetchError::Status(503));
            }
            Ok(TokenResponse {
                access_token: Secret::new(format!("tok-{n}")),
                expires_in: Some(self.ttl),
                ..Default::default()
            })
        })
    }
}

fn settings(refresh_before: Duration) -> Arc<ClientSettings> {
    let cfg = crate::config::load_str(
        std::path::Path::new("t.toml"),
        &format!(
            "[clients.c]\ngrant = \"client_credentials\"\ntoken_url = \"http://127.0.0.1:1/t\"\nclient_id = \"i\"\nclient_secret = \"s\"\nrefresh_before = \"{}s\"\n",
            refresh_before.as_secs()
        ),
        &|_| None,
    )
    .unwrap();
    Arc::clone(&cfg.clients["c"])
}

fn slot(fake: &Arc<Fake>, refresh_before: Duration) -> Arc<Slot> {
    Slot::new(
        settings(refresh_before),
        Box::new(Arc::clone(fake)),
        Arc::new(Metrics::new()),
    )
}

fn fake(ttl: u64, delay_ms: u64) -> Arc<Fake> {
    Arc::new(Fake {
        ttl,
        delay: Duration::from_millis(delay_ms),
        ..Default::default()
    })
}

#[tokio::test(start_paused = true)]
async fn concurrent_cold_requests_share_one_fetch() {
    let f = fake(3600, 50);
    let s = slot(&f, Duration::from_secs(60));
    let waiters: Vec<_> = (0..200)
        .map(|_| {
            let s = Arc::clone(&s);
            tokio::spawn(async move { s.get().await })
        })
        .collect();
    for w in waiters {
        assert_eq!(w.await.unwrap().unwrap().access_token(), "tok-1");
    }
    assert_eq!(f.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn refreshes_in_the_background_before_expiry() {
    let f = fake(100, 0);
    let s = slot(&f, Duration::from_secs(30));
    assert_eq!(s.get().await.unwrap().access_token(), "tok-1");
    // expiry - refresh_before = 70s, inside [50s, 90s]: refresh at 70s.
    tokio::time::sleep(Duration::from_secs(69)).await;
    assert_eq!(f.calls.load(Ordering::SeqCst), 1);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        f.calls.load(Ordering::SeqCst),
        2,
        "refreshed ahead of expiry, with no request waiting"
    );
    assert_eq!(s.peek().unwrap().access_token(), "tok-2");
}

#[test]
fn refresh_time_is_clamped_to_half_and_ninety_percent() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let t = Token::from_response(
            TokenResponse {
                access_token: Secret::new("t"),
                expires_in: Some(100),
                ..Default::default()
            },
            Duration::from_secs(300),
        )
        .unwrap();
        let at = |rb| (refresh_at(&t, Duration::from_secs(rb)) - t.issued_at).as_secs();
        assert_eq!(at(10), 90, "never later than 90% of the lifetime");
        assert_eq!(at(80), 50, "never before half of the lifetime");
        assert_eq!(at(30), 70);
    });
}

#[tokio::test(start_paused = true)]
async fn failing_endpoint_backs_off_and_fails_fast() {
    let f = fake(3600, 0);
    *f.fail.lock().unwrap() = true;
    let s = slot(&f, Duration::from_secs(60));
    assert!(s.get().await.is_err());
    // While the retry is pending, requests fail at once, without a call.
    for _ in 0..100 {
        assert!(s.get().await.is_err());
    }
    assert_eq!(f.calls.load(Ordering::SeqCst), 1);
    // Over 10 s of demand, retries stay few: 0.5 + 1 + 2 + 4 s ...
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let _ = s.get().await;
    }
    let calls = f.calls.load(Ordering::SeqCst);
    assert!((3..=6).contains(&calls), "{calls} token requests in 10 s");
    // Recovery: the endpoint comes back, a retry fetches, requests succeed.
    *f.fail.lock().unwrap() = false;
    tokio::time::sleep(Duration::from_secs(31)).await;
    assert!(s.get().await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_valid_token_keeps_serving_but_never_past_expiry() {
    let f = fake(100, 0);
    let s = slot(&f, Duration::from_secs(30));
    s.get().await.unwrap();
    *f.fail.lock().unwrap() = true;
    tokio::time::sleep(Duration::from_secs(95)).await;
    assert_eq!(
        s.get().await.unwrap().access_token(),
        "tok-1",
        "refresh failed, old token still valid"
    );
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(s.get().await.is_err(), "expired token must not be served");
}

#[tokio::test(start_paused = true)]
async fn invalidate_drops_only_the_rejected_token() {
    let f = fake(3600, 0);
    let s = slot(&f, Duration::from_secs(60));
    let t1 = s.get().await.unwrap();
    s.invalidate(&t1);
    let t2 = s.get().await.unwrap();
    assert_eq!(t2.access_token(), "tok-2");
    // A late 401 for tok-1 must not throw away tok-2.
    s.invalidate(&t1);
    assert_eq!(s.get().await.unwrap().access_token(), "tok-2");
    assert_eq!(f.calls.load(Ordering::SeqCst), 2);
}

#[test]
fn backoff_doubles_from_half_a_second_to_thirty() {
    for _ in 0..50 {
        let b1 = backoff(1).as_secs_f64();
        assert!((0.4..=0.6).contains(&b1), "{b1}");
        let b3 = backoff(3).as_secs_f64();
        assert!((1.6..=2.4).contains(&b3), "{b3}");
        assert!(backoff(20) <= Duration::from_secs(30));
        assert!(backoff(20) >= Duration::from_secs(24));
    }
}

/// An endpoint whose first answer makes the fetch panic (as an overflow in
/// expiry arithmetic once did), then answers normally.
struct PanicsOnce(AtomicUsize);

impl FetchToken for Arc<PanicsOnce> {
    fn fetch<'a>(
        &'a self,
        _s: &'a ClientSettings,
    ) -> BoxFuture<'a, Result<TokenResponse, FetchError>> {
        Box::pin(async move {
            if self.0.fetch_add(1, Ordering::SeqCst) == 0 {
                panic!("boom inside the fetch");
            }
            Ok(TokenResponse {
                access_token: Secret::new("after-panic"),
                expires_in: Some(3600),
                ..Default::default()
            })
        })
    }
}

#[tokio::test(start_paused = true)]
async fn a_panic_inside_a_fetch_does_not_poison_the_client() {
    let f = Arc::new(PanicsOnce(AtomicUsize::new(0)));
    let s = Slot::new(
        settings(Duration::from_secs(60)),
        Box::new(Arc::clone(&f)),
        Arc::new(Metrics::new()),
    );
    let (a, b) = tokio::join!(s.get(), s.get());
    assert!(
        a.is_err() && b.is_err(),
        "both waiters see the failed fetch"
    );
    // After the backoff, the client fetches again and recovers.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let t = s.get().await.expect("the client recovers after a panic");
    assert_eq!(t.access_token(), "after-panic");
    assert_eq!(f.0.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_token_expired_on_arrival_is_a_failed_fetch() {
    let f = fake(0, 0);
    let s = slot(&f, Duration::from_secs(60));
    let (a, b) = tokio::join!(s.get(), s.get());
    assert!(matches!(a, Err(FetchError::BadResponse(_))), "{a:?}");
    assert!(b.is_err());
    // Backoff holds: no fetch per request.
    for _ in 0..10 {
        assert!(s.get().await.is_err());
    }
    assert_eq!(f.calls.load(Ordering::SeqCst), 1);
}

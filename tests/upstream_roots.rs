//! `[tls] upstream_roots` and `extra_roots`: one set of trusted roots for
//! upstreams, token endpoints and `rediss://`.
//! Actors:
//! // Redis: a real redis-server speaking only TLS, its certificate from a
//! //   private test CA.
//! // IdP: the counting token server (plain, or TLS from the test CA).
//! // Upstream: records the injected header (plain, or TLS from the test CA).
//! // sidekey: in-process, or the real binary when the test sets its
//! //   environment (SSL_CERT_FILE).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed setup step should fail the test loudly"
)]

mod support;

use std::time::Duration;

use support::pki::new_ca;
use support::redis::Redis;
use support::sidekey::{Binary, Proxy};
use support::token_server::TokenServer;
use support::upstream::Upstream;

const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

fn client_and_route(token_url: &str, upstream: &str) -> String {
    format!(
        "[clients.c]\ngrant = \"client_credentials\"\ntoken_url = \"{token_url}\"\nclient_id = \"i\"\nclient_secret = \"s\"\n\
         [[routes]]\nname = \"r\"\nhosts = [\"127.0.0.1\"]\nclient = \"c\"\nupstream = \"{upstream}\"\n\
         set_headers = {{ Authorization = \"Bearer <<oauth.token>>\" }}\n"
    )
}

/// The keys in a TLS-only Redis, read by a client trusting `ca_pem`.
async fn tls_keys(redis: &Redis, ca_pem: &str) -> Vec<String> {
    let certs = redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(ca_pem.as_bytes().to_vec()),
    };
    let client =
        redis::Client::build_with_tls(format!("rediss://{}/0", redis.addr), certs).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("KEYS")
        .arg("sidekey:*")
        .query_async(&mut conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_rediss_store_signed_by_a_private_ca_is_trusted_through_extra_roots() {
    support::init_crypto();
    let ca = new_ca("redis test CA");
    let dir = tempfile::tempdir().unwrap();
    let (ca_path, _) = ca.write_to(dir.path());
    let (cert, key) = ca.leaf_pem(&["127.0.0.1"]);
    let (cert_path, key_path) = (dir.path().join("redis.crt"), dir.path().join("redis.key"));
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, key).unwrap();
    // Redis: TLS only; its CA is known to sidekey through extra_roots alone.
    let redis = Redis::start_tls(&cert_path, &key_path, &ca_path).await;
    let ts = TokenServer::start().await;
    let up = Upstream::start().await;
    let cfg = format!(
        "[tls]\nextra_roots = [\"{}\"]\n\
         [store]\nbackend = \"redis\"\nurl = \"rediss://{}/0\"\nencryption_key = \"{KEY}\"\ntimeout = \"2s\"\n{}",
        ca_path.display(),
        redis.addr,
        client_and_route(&ts.url("/token"), "as-requested"),
    );
    let first = Proxy::start("", &cfg).await;
    let r = first
        .client()
        .get(format!("http://{}/a", up.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Redis: the (sealed) token arrives over TLS. The old client refused
    // the private CA (UnknownIssuer) and never wrote it.
    support::eventually(
        Duration::from_secs(10),
        "a token stored in the TLS Redis",
        || async { !tls_keys(&redis, &ca.cert_pem).await.is_empty() },
    )
    .await;
    // A second replica takes the stored token instead of fetching its own.
    let second = Proxy::start("", &cfg).await;
    let r = second
        .client()
        .get(format!("http://{}/b", up.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        ts.calls(),
        1,
        "the second replica read the token from Redis"
    );
    let seen: Vec<String> = up
        .requests()
        .iter()
        .map(|r| r.headers["authorization"].to_str().unwrap().to_string())
        .collect();
    assert_eq!(seen, ["Bearer tok-1", "Bearer tok-1"]);
    first.shutdown().await;
    second.shutdown().await;
}

#[tokio::test]
async fn system_roots_honour_ssl_cert_file_for_upstreams_token_endpoints_and_rediss() {
    support::init_crypto();
    let ca = new_ca("system store test CA");
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("bundle.pem");
    std::fs::write(&bundle, &ca.cert_pem).unwrap();
    // IdP, upstream and Redis: TLS from a CA that only the test bundle holds.
    let ts = TokenServer::start_tls(ca.server_config(&["localhost"], &[b"http/1.1"])).await;
    let up = Upstream::start_tls(ca.server_config(&["127.0.0.1"], &[b"http/1.1"])).await;
    let (cert, key) = ca.leaf_pem(&["127.0.0.1"]);
    let (cert_path, key_path) = (dir.path().join("redis.crt"), dir.path().join("redis.key"));
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, key).unwrap();
    let redis = Redis::start_tls(&cert_path, &key_path, &bundle).await;
    let cfg = format!(
        "[tls]\nupstream_roots = \"system\"\n\
         [store]\nbackend = \"redis\"\nurl = \"rediss://{}/0\"\nencryption_key = \"{KEY}\"\ntimeout = \"2s\"\n{}",
        redis.addr,
        client_and_route(&ts.https_url("/token"), "https")
    );
    // sidekey: the OS store is SSL_CERT_FILE, as rustls-native-certs reads it.
    let bin = Binary::start("", &cfg, &[("SSL_CERT_FILE", bundle.to_str().unwrap())]).await;
    let r = bin
        .client()
        .get(format!("http://{}/x", up.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "logs:\n{}", bin.logs());
    let last = up.last().unwrap();
    assert_eq!(last.headers["authorization"], "Bearer tok-1");
    assert_eq!(ts.calls(), 1);
    support::eventually(
        Duration::from_secs(10),
        "a token stored in the TLS Redis",
        || async { !tls_keys(&redis, &ca.cert_pem).await.is_empty() },
    )
    .await;
}

#[tokio::test]
async fn the_bundled_roots_do_not_trust_a_private_ca() {
    // The same upstream and IdP with the default `webpki` roots: refused,
    // so the test above passes because of SSL_CERT_FILE.
    support::init_crypto();
    let ca = new_ca("system store test CA");
    let ts = TokenServer::start_tls(ca.server_config(&["localhost"], &[b"http/1.1"])).await;
    let up = Upstream::start_tls(ca.server_config(&["127.0.0.1"], &[b"http/1.1"])).await;
    let p = Proxy::start("", &client_and_route(&ts.https_url("/token"), "https")).await;
    let r = p
        .client()
        .get(format!("http://{}/x", up.addr))
        .send()
        .await
        .unwrap();
    assert_ne!(r.status(), 200);
    assert_eq!(up.count(), 0);
    p.shutdown().await;
}

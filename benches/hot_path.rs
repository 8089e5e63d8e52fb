//! Per-request costs sidekey adds, on a 100-route config: route decision,
//! header rendering, and (for interception) leaf minting and a TLS
//! handshake with a cached leaf. Run: `cargo bench --bench hot_path`.
#![allow(
    clippy::expect_used,
    reason = "benchmark setup: a failure should stop the run loudly"
)]

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, Method};
use sidekey::bench::{self, Head, RequestInfo, RouteTable, Token, TokenResponse};

/// 100 routes: 70 exact hosts, 20 wildcards, 10 path/header-specific.
fn config_100() -> String {
    let mut s = String::from("[clients.c]\ngrant = \"client_credentials\"\ntoken_url = \"http://127.0.0.1:1/t\"\nclient_id = \"i\"\nclient_secret = \"s\"\n");
    for i in 0..70 {
        s += &format!("[[routes]]\nname = \"exact-{i}\"\nhosts = [\"api{i}.example.com\"]\nclient = \"c\"\nset_headers = {{ Authorization = \"Bearer <<oauth.token>>\", \"X-Static\" = \"v{i}\" }}\n");
    }
    for i in 0..20 {
        s += &format!("[[routes]]\nname = \"wild-{i}\"\nhosts = [\"*.svc{i}.example.net\"]\nset_headers = {{ \"X-Static\" = \"w{i}\" }}\n");
    }
    for i in 0..10 {
        s += &format!("[[routes]]\nname = \"org-{i}\"\nhosts = [\"eu.api.capillarytech.com\"]\npath_prefix = \"/v2/\"\nmatch_headers = {{ \"X-Org\" = \"org{i}\" }}\nclient = \"c\"\nset_headers = {{ \"X-CAP-API-OAUTH-TOKEN\" = \"<<oauth.token>>\" }}\n");
    }
    s
}

fn table() -> RouteTable {
    let cfg = sidekey::config::load_str(Path::new("bench.toml"), &config_100(), &|_| None)
        .expect("bench config");
    bench::route_table(cfg)
}

fn decide(c: &mut Criterion) {
    let t = table();
    let mut h = HeaderMap::new();
    h.insert("x-org", "org9".parse().expect("header"));
    let cases = [
        ("exact_hit", "api69.example.com", "/orders"),
        ("wildcard_hit", "a.b.svc19.example.net", "/"),
        (
            "header_match_10th",
            "eu.api.capillarytech.com",
            "/v2/customers",
        ),
        ("miss", "unrouted.example.org", "/"),
    ];
    let mut g = c.benchmark_group("route_decide_100_routes");
    for (name, host, path) in cases {
        g.bench_function(name, |b| {
            b.iter(|| {
                let info = RequestInfo {
                    host: black_box(host),
                    port: 443,
                    method: &Method::GET,
                    path,
                    headers: &h,
                };
                black_box(t.decide(&info).map(|d| d.route.name().len()))
            })
        });
    }
    g.finish();
}

fn render(c: &mut Criterion) {
    let t = table();
    let token = std::sync::Arc::new(
        Token::from_response(
            TokenResponse {
                access_token: bench::Secret::new("eyJhbGciOi.a-typical-length-access-token.sig"),
                ..Default::default()
            },
            std::time::Duration::from_secs(300),
        )
        .expect("a token with the default lifetime"),
    );
    let route = &t.routes()[69];
    let mut headers = HeaderMap::new();
    for (k, v) in [
        ("host", "api69.example.com"),
        ("user-agent", "bench/1"),
        ("accept", "*/*"),
        ("connection", "keep-alive"),
    ] {
        headers.insert(k, v.parse().expect("header"));
    }
    let head = Head {
        method: Method::GET,
        path_and_query: http::uri::PathAndQuery::from_static("/orders?page=2"),
        headers,
        upgrade: false,
    };
    let target = bench::target(
        &"http://api69.example.com/orders?page=2"
            .parse()
            .expect("uri"),
    )
    .expect("target");
    c.bench_function("rewrite_request_bearer_plus_static", |b| {
        b.iter(|| {
            // What a request does: the route's values for the client's
            // current token (rendered on the first call only), then the URI
            // and the request.
            let values = route.values(Some(&token), false).expect("values");
            let uri =
                bench::upstream_uri(Some(route), &target, &head.path_and_query, Some(&values))
                    .expect("uri");
            black_box(
                bench::upstream_request(
                    Some(route),
                    &head,
                    uri,
                    Some(&values),
                    bench::empty_body(),
                )
                .expect("request"),
            )
        })
    });
}

fn tls(c: &mut Criterion) {
    sidekey::init_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    bench::generate_ca(dir.path()).expect("ca");
    let ca = bench::Ca::load(&dir.path().join("ca.crt"), &dir.path().join("ca.key")).expect("load");
    let leaves = bench::LeafCache::new(ca);
    c.bench_function("leaf_mint_ecdsa_p256", |b| {
        b.iter(|| black_box(leaves.mint("api.example.com").expect("mint")))
    });
    let server = leaves.server_config("api.example.com").expect("config");
    let ca_pem = std::fs::read(dir.path().join("ca.crt")).expect("ca pem");
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::pem::PemObject::pem_slice_iter(&ca_pem) {
        roots.add(cert.expect("cert")).expect("root");
    }
    let client = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth(),
    );
    c.bench_function("tls_handshake_cached_leaf_in_memory", |b| {
        b.iter(|| {
            let name = rustls_pki_types::ServerName::try_from("api.example.com").expect("name");
            let mut cc = rustls::ClientConnection::new(Arc::clone(&client), name).expect("client");
            let mut sc = rustls::ServerConnection::new(Arc::clone(&server)).expect("server");
            while cc.is_handshaking() || sc.is_handshaking() {
                let mut buf = Vec::new();
                cc.write_tls(&mut buf).expect("write");
                sc.read_tls(&mut buf.as_slice()).expect("read");
                sc.process_new_packets().expect("server process");
                let mut buf = Vec::new();
                sc.write_tls(&mut buf).expect("write");
                cc.read_tls(&mut buf.as_slice()).expect("read");
                cc.process_new_packets().expect("client process");
            }
            black_box(cc.is_handshaking())
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(2)).warm_up_time(std::time::Duration::from_millis(500));
    targets = decide, render, tls
}
criterion_main!(benches);

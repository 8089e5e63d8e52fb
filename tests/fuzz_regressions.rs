//! What the fuzz targets in `fuzz/` found, kept as stable tests: each
//! input goes to the same `sidekey::fuzz` function the target calls,
//! which returns `Err("class: …")` when a SPEC invariant breaks (and must
//! not panic). Plus the seed shapes of every target, so the harness itself
//! is known to accept valid input. Run the fuzzers with `scripts/fuzz.sh`.
//! // No actors, except the token-answer tests: a loopback token endpoint
//! // inside `TokenEndpoint` that answers what the test says.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed setup step should fail the test loudly"
)]

use sidekey::fuzz::{self, Grant, TokenEndpoint};

fn ok(r: Result<(), String>) {
    if let Err(f) = r {
        panic!("{f}");
    }
}

// === the harness accepts valid input ===

#[test]
fn valid_configs_pass() {
    ok(fuzz::config(include_str!("../proxy.toml")));
    ok(fuzz::config("[proxy]\nlisten = \"nonsense\"\n"));
    ok(fuzz::config("not toml at all ["));
}

#[test]
fn valid_templates_pass() {
    let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    ok(fuzz::template(
        0,
        "Bearer <<oauth.token>> <<oauth.tokenDecoded.org.id>>",
        &v(&["tok", "Bearer", "id", r#"{"org":{"id":7}}"#]),
    ));
    ok(fuzz::template(
        2,
        r#"{"key": "<<client.client_id>>", "n": <<client.client_secret>>, "e": "<<env.V0>>"}"#,
        &v(&["a\"b", "c\\d\nx"]),
    ));
    ok(fuzz::template(
        0x82,
        "grant_type=x&id=<<client.client_id>>&s=<<client.client_secret>>",
        &v(&["a&b=c", "%20"]),
    ));
    ok(fuzz::template(
        1,
        "<<env.UNSET:-fallback>>-<<env.SET>>",
        &[],
    ));
}

#[test]
fn valid_token_answers_pass() {
    let mut ep = TokenEndpoint::new().unwrap();
    ok(ep.check(
        Grant::OAuth,
        "access_token",
        "",
        200,
        br#"{"access_token":"t","token_type":"bearer","expires_in":3600,"id_token":"a.eyJzdWIiOiJ4In0.s"}"#,
        false,
    ));
    ok(ep.check(
        Grant::OAuth,
        "access_token",
        "",
        400,
        br#"{"error":"invalid_client"}"#,
        true,
    ));
    ok(ep.check(
        Grant::Capillary,
        "",
        "",
        200,
        br#"{"data":{"accessToken":"t","ttlSeconds":900},"errors":null}"#,
        false,
    ));
    ok(ep.check(
        Grant::Custom,
        "data.list.0.t",
        "data.ttl",
        200,
        br#"{"data":{"list":[{"t":"x"}],"ttl":"60"}}"#,
        true,
    ));
    ok(ep.check(Grant::OAuth, "access_token", "", 200, b"not json", false));
    ok(fuzz::token_from_response("opaque", Some(u64::MAX), None));
}

#[test]
fn valid_routes_and_requests_pass() {
    ok(fuzz::route_match(
        "api.example.com,*.example.com:8080|/v2/|GET,POST|x-org=eu\n*.b.example.com||\n127.0.0.1:8080,::1||\n--\na.b.example.com|8080|GET|/v2/x?y=1|x-org=eu",
    ));
    ok(fuzz::route_match("*.example.com\n--\nexample.com|80|GET|/"));
    ok(fuzz::inbound(0, b"http://API.example.com:8080/x?y"));
    ok(fuzz::inbound(0, b"example.com:443"));
    ok(fuzz::inbound(0, b"http://[::1]:81/"));
    ok(fuzz::inbound(0, b"http://user:pw@example.com/"));
    ok(fuzz::inbound(1, b"Basic YXBwOnB3"));
    ok(fuzz::inbound(
        2,
        b"connection: x-a, te\nx-a: 1\nte: gzip, trailers\nkeep-alive: 5\nhost: a\n",
    ));
    ok(fuzz::inbound(
        0x82,
        b"connection: upgrade\nupgrade: websocket\nhost: a\n",
    ));
}

// === findings: token lifetimes (fixed in src/token, 156b3e7) ===

/// SPEC: "a token already expired on arrival is a failed fetch, never
/// injected". A negative lifetime (number or numeric string, OAuth
/// `expires_in` or Capillary `ttlSeconds`) was read as "no lifetime given"
/// (`endpoint::number` returned None for it), so the token got
/// `default_ttl` (300 s) instead.
#[test]
fn a_negative_lifetime_is_expired_on_arrival() {
    let mut ep = TokenEndpoint::new().unwrap();
    ok(ep.check(
        Grant::OAuth,
        "access_token",
        "",
        200,
        br#"{"access_token":"t","expires_in":-5}"#,
        false,
    ));
    ok(ep.check(
        Grant::OAuth,
        "access_token",
        "",
        200,
        br#"{"access_token":"t","expires_in":"-5"}"#,
        false,
    ));
    ok(ep.check(
        Grant::Capillary,
        "",
        "",
        200,
        br#"{"data":{"accessToken":"t","ttlSeconds":-1},"errors":null}"#,
        false,
    ));
}

/// The same for a JWT access token without `expires_in` whose `exp` is in
/// the past but not a u64: RFC 7519 allows any JSON number (`1000.5`), and
/// `-1` is as past as it gets. `jwt::remaining` read `exp` with
/// `as_u64`, found none, and the token got `default_ttl`.
#[test]
fn a_past_jwt_exp_that_is_not_an_integer_is_expired_on_arrival() {
    let mut ep = TokenEndpoint::new().unwrap();
    // payloads {"exp":1000.5} and {"exp":-1}
    for token in ["a.eyJleHAiOjEwMDAuNX0.s", "a.eyJleHAiOi0xfQ.s"] {
        let body = format!(r#"{{"access_token":"{token}"}}"#);
        ok(ep.check(
            Grant::OAuth,
            "access_token",
            "",
            200,
            body.as_bytes(),
            false,
        ));
    }
}

/// A lifetime in a string with a fraction (`"1.5"`) was ignored (only
/// integer strings parsed), so a token said to live 1.5 s lived 300 s.
#[test]
fn a_fractional_lifetime_string_is_not_ignored() {
    let mut ep = TokenEndpoint::new().unwrap();
    ok(ep.check(
        Grant::OAuth,
        "access_token",
        "",
        200,
        br#"{"access_token":"t","expires_in":"1.5"}"#,
        false,
    ));
}

// === findings: request-target hosts (fixed in src/inbound.rs, 156b3e7) ===

/// `http://&[]/` parses (the `http` crate lets `[` and `]` into a
/// reg-name) and `inbound::target` returned the host `"&["`: `host_of`
/// trimmed a leading `[` and a trailing `]` independently and checked the
/// rest for nothing. SPEC: a malformed target is 400 `bad_request`; it
/// failed only later, when the upstream URI would not parse.
#[test]
fn a_host_with_stray_brackets_is_refused() {
    ok(fuzz::inbound(0, b"http://&[]/"));
    ok(fuzz::inbound(0, b"http://&[t]:81/"));
}

/// Same root cause: brackets hold an IPv6 literal (RFC 3986), but
/// `http://[%]/` gave the host `"%"` (whose authority `%:80` does not
/// even parse again) and `http://[api.example.com]/` the host
/// `api.example.com`: the malformed target was "corrected" instead of
/// refused.
#[test]
fn a_bracketed_host_must_be_an_ipv6_literal() {
    ok(fuzz::inbound(0, b"http://[%]/"));
    ok(fuzz::inbound(0, b"http://[api.example.com]/"));
    ok(fuzz::inbound(0, b"[api.example.com]:443"));
}

#[test]
fn malformed_hosts_do_not_panic() {
    for uri in [
        "http://&[]/",
        "http://&[t]:81/",
        "&[]:443",
        "http://[]/",
        "http://a]/",
        "http://[%]/",
        "http://[api.example.com]/",
    ] {
        let _ = fuzz::inbound(0, uri.as_bytes());
    }
}

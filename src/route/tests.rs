//! Table tests for `decide`, in the style of smokescreen's `acl.Decide`.

use super::*;
use crate::config;

fn table(toml: &str) -> RouteTable {
    let cfg = config::load_str(std::path::Path::new("t.toml"), toml, &|_| None).unwrap();
    RouteTable::new(
        cfg.routes
            .into_iter()
            .map(|settings| Route::new(settings, None))
            .collect(),
    )
}

fn decide(
    t: &RouteTable,
    host: &str,
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Option<String> {
    let mut h = HeaderMap::new();
    for (k, v) in headers {
        h.append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    let m = Method::from_bytes(method.as_bytes()).unwrap();
    let info = RequestInfo {
        host,
        port,
        method: &m,
        path,
        headers: &h,
    };
    t.decide(&info).map(|d| d.route.name().to_string())
}

const ROUTES: &str = r#"
[[routes]]
name = "eu-org"
hosts = ["eu.api.capillarytech.com"]
match_headers = { "X-Org" = "eu-child" }

[[routes]]
name = "eu-v2"
hosts = ["eu.api.capillarytech.com"]
path_prefix = "/v2/"
methods = ["GET", "post"]

[[routes]]
name = "wild"
hosts = ["*.example.com"]

[[routes]]
name = "exact-after-wild"
hosts = ["a.example.com"]

[[routes]]
name = "port"
hosts = ["svc.local:8080", "10.0.0.7", "[::1]:9000"]
"#;

#[test]
fn first_match_in_file_order() {
    let t = table(ROUTES);
    type Case<'a> = (
        &'a str,
        u16,
        &'a str,
        &'a str,
        &'a [(&'a str, &'a str)],
        Option<&'a str>,
    );
    let cases: &[Case] = &[
        (
            "eu.api.capillarytech.com",
            80,
            "GET",
            "/v2/x",
            &[("x-org", "eu-child")],
            Some("eu-org"),
        ),
        (
            "eu.api.capillarytech.com",
            80,
            "GET",
            "/v2/x",
            &[("X-Org", "other")],
            Some("eu-v2"),
        ),
        (
            "eu.api.capillarytech.com",
            443,
            "POST",
            "/v2/x",
            &[],
            Some("eu-v2"),
        ),
        ("eu.api.capillarytech.com", 80, "DELETE", "/v2/x", &[], None),
        ("eu.api.capillarytech.com", 80, "GET", "/v3/x", &[], None),
        ("a.example.com", 80, "GET", "/", &[], Some("wild")),
        ("a.b.example.com", 80, "GET", "/", &[], Some("wild")),
        ("example.com", 80, "GET", "/", &[], None),
        ("badexample.com", 80, "GET", "/", &[], None),
        ("svc.local", 8080, "GET", "/", &[], Some("port")),
        ("svc.local", 80, "GET", "/", &[], None),
        ("10.0.0.7", 1234, "GET", "/", &[], Some("port")),
        ("10.0.0.8", 1234, "GET", "/", &[], None),
        ("::1", 9000, "GET", "/", &[], Some("port")),
        ("::1", 9001, "GET", "/", &[], None),
    ];
    for (host, port, method, path, headers, want) in cases {
        assert_eq!(
            decide(&t, host, *port, method, path, headers).as_deref(),
            *want,
            "{method} {host}:{port}{path} {headers:?}"
        );
    }
}

#[test]
fn decision_explains_itself() {
    let t = table(ROUTES);
    let h = HeaderMap::new();
    let info = RequestInfo {
        host: "x.example.com",
        port: 443,
        method: &Method::GET,
        path: "/",
        headers: &h,
    };
    assert_eq!(
        t.decide(&info).unwrap().to_string(),
        r#"route "wild": host matched *.example.com"#
    );
}

#[test]
fn connect_hosts_are_looked_up_not_scanned() {
    let t = table(ROUTES);
    assert!(t.names_host("eu.api.capillarytech.com", 443));
    assert!(t.names_host("a.b.example.com", 443));
    assert!(!t.names_host("example.com", 443));
    assert!(t.names_host("svc.local", 8080));
    assert!(!t.names_host("svc.local", 443));
    assert!(t.names_host("::1", 9000));
    assert!(!t.names_host("10.0.0.8", 443));
}

#[test]
fn a_route_keeps_values_for_its_clients_token_but_never_for_a_users() {
    let t = table(
        r#"
[[routes]]
name = "r"
hosts = ["a.example.com"]
set_headers = { "X-Team" = "platform" }
"#,
    );
    let route = &t.routes()[0];
    let token = crate::values::fixture::token("user-token");
    let own = route.values(Some(&token), false).unwrap();
    assert!(Arc::ptr_eq(
        &own,
        &route.values(Some(&token), false).unwrap()
    ));
    // A user's token: rendered for the request, not kept (a second call
    // renders again, and the route still holds the client's values).
    let a = route.values(Some(&token), true).unwrap();
    let b = route.values(Some(&token), true).unwrap();
    assert!(!Arc::ptr_eq(&a, &b) && !Arc::ptr_eq(&a, &own));
    assert_eq!(
        Arc::strong_count(&token),
        4,
        "own (cached), a, b and the test's own"
    );
    drop((a, b));
    assert_eq!(
        Arc::strong_count(&token),
        2,
        "only the route's values of its client's token"
    );
    // Without a client: one set of values, kept.
    let none = route.values(None, false).unwrap();
    assert!(Arc::ptr_eq(&none, &route.values(None, false).unwrap()));
    assert_eq!(none.sets[0], "platform");
}

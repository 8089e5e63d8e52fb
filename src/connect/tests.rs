//! `decide` from a table: port policy, denied addresses, interception of
//! routed hosts (only with a CA), and the `connect` policy for the rest.
//! The policy is written out, so no CA has to exist on disk.

use std::sync::Arc;

use super::*;
use crate::inbound::Scheme;
use crate::metrics::Metrics;
use crate::token::Registry;

fn target(host: &str, port: u16) -> Target {
    Target {
        scheme: Scheme::Https,
        host: host.into(),
        port,
    }
}

#[test]
fn decisions() {
    let deny: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
    let policy = |connect, routed, intercepts| Policy {
        connect,
        connect_ports: &[443, 8443],
        deny: &deny,
        routed,
        intercepts,
    };
    let (allow, refuse) = (ConnectPolicy::Tunnel, ConnectPolicy::Deny);
    // (policy, host, port, routed, CA, want)
    let cases: &[(ConnectPolicy, &str, u16, bool, bool, &str)] = &[
        (allow, "api.example.com", 443, true, true, "intercept"),
        (allow, "other.example", 443, false, true, "tunnel"),
        (allow, "api.example.com", 25, true, true, "deny"),
        (allow, "10.1.2.3", 443, false, true, "deny"),
        (allow, "10.1.2.3", 443, true, true, "deny"),
        (allow, "0.0.0.0", 443, false, true, "deny"),
        (allow, "api.example.com", 443, true, false, "tunnel"),
        (refuse, "api.example.com", 443, true, true, "intercept"),
        (refuse, "other.example", 443, false, true, "deny"),
        (refuse, "api.example.com", 443, true, false, "deny"),
    ];
    for (connect, host, port, routed, ca, want) in cases {
        let got = decide(&policy(*connect, *routed, *ca), &target(host, *port));
        let ok = match *want {
            "intercept" => got == Action::Intercept,
            "tunnel" => got == Action::Tunnel,
            _ => matches!(got, Action::Deny(_)),
        };
        assert!(ok, "{host}:{port} should be {want}, got {got:?}");
    }
}

/// `Policy::of` reads the runtime: which hosts (and ports) a route names,
/// the deny list, and whether a CA is configured.
#[test]
fn the_policy_comes_from_the_runtime() {
    let src = "[proxy]\nconnect_ports = [443, 8443]\ndeny_destinations = [\"10.0.0.0/8\"]\nconnect = \"deny\"\n\
         [[routes]]\nname = \"api\"\nhosts = [\"api.example.com\", \"*.corp.example\"]\nset_headers = { \"X-A\" = \"1\" }\n\
         [[routes]]\nname = \"only-8443\"\nhosts = [\"pinned.example:8443\"]\nset_headers = { \"X-A\" = \"1\" }\n";
    let cfg = crate::config::load_str(std::path::Path::new("t.toml"), src, &|_| None).unwrap();
    let rt = Runtime::build(cfg, &Registry::new(Arc::new(Metrics::new())), None).unwrap();
    let routed = |host, port| Policy::of(&rt, &target(host, port)).routed;
    assert!(routed("api.example.com", 443));
    assert!(routed("x.y.corp.example", 443));
    assert!(routed("pinned.example", 8443));
    assert!(!routed("pinned.example", 443));
    assert!(!routed("other.example", 443));
    let p = Policy::of(&rt, &target("api.example.com", 443));
    assert!(!p.intercepts, "no [tls] CA");
    assert_eq!(p.connect, ConnectPolicy::Deny);
    assert_eq!(p.connect_ports, &[443, 8443]);
    assert_eq!(p.deny, &["10.0.0.0/8".parse::<IpNet>().unwrap()]);
}

//! `decide` from a table: port policy, denied addresses, interception of
//! routed hosts (only with a CA), and the `connect` policy for the rest.

use std::sync::Arc;

use super::*;
use crate::inbound::Scheme;
use crate::metrics::Metrics;
use crate::token::TokenStore;

fn runtime(extra_proxy: &str, with_ca: bool) -> Runtime {
    let dir = tempfile::tempdir().unwrap();
    let tls = if with_ca {
        crate::tls::ca::generate(dir.path()).unwrap();
        format!(
            "[tls]\nca_cert = \"{}\"\nca_key = \"{}\"\n",
            dir.path().join("ca.crt").display(),
            dir.path().join("ca.key").display()
        )
    } else {
        String::new()
    };
    let src = format!(
        "[proxy]\nconnect_ports = [443, 8443]\ndeny_destinations = [\"10.0.0.0/8\"]\n{extra_proxy}\n{tls}\n\
         [[routes]]\nname = \"api\"\nhosts = [\"api.example.com\", \"*.corp.example\"]\nset_headers = {{ \"X-A\" = \"1\" }}\n\
         [[routes]]\nname = \"only-8443\"\nhosts = [\"pinned.example:8443\"]\nset_headers = {{ \"X-A\" = \"1\" }}\n"
    );
    let cfg = crate::config::load_str(std::path::Path::new("t.toml"), &src, &|_| None).unwrap();
    Runtime::build(cfg, &TokenStore::new(Arc::new(Metrics::new())), None).unwrap()
}

fn target(host: &str, port: u16) -> Target {
    Target {
        scheme: Scheme::Https,
        host: host.into(),
        port,
    }
}

#[test]
fn decisions() {
    let ca = runtime("", true);
    let no_ca = runtime("", false);
    let deny = runtime("connect = \"deny\"", true);
    let deny_no_ca = runtime("connect = \"deny\"", false);
    let cases: &[(&Runtime, &str, u16, &str)] = &[
        (&ca, "api.example.com", 443, "intercept"),
        (&ca, "x.y.corp.example", 443, "intercept"),
        (&ca, "other.example", 443, "tunnel"),
        (&ca, "api.example.com", 25, "deny"),
        (&ca, "10.1.2.3", 443, "deny"),
        (&ca, "0.0.0.0", 443, "deny"),
        (&ca, "pinned.example", 8443, "intercept"),
        (&ca, "pinned.example", 443, "tunnel"),
        (&no_ca, "api.example.com", 443, "tunnel"),
        (&deny, "api.example.com", 443, "intercept"),
        (&deny, "other.example", 443, "deny"),
        (&deny_no_ca, "api.example.com", 443, "deny"),
    ];
    for (rt, host, port, want) in cases {
        let got = decide(rt, &target(host, *port));
        let ok = match *want {
            "intercept" => got == Action::Intercept,
            "tunnel" => got == Action::Tunnel,
            _ => matches!(got, Action::Deny(_)),
        };
        assert!(ok, "{host}:{port} should be {want}, got {got:?}");
    }
}

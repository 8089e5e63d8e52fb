//! Config validation: one fixture per failure under tests/fixtures/broken,
//! each with the message and position `sidekey check` must print.

use std::path::{Path, PathBuf};

use super::*;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/broken")
        .join(name)
}

fn errors(name: &str) -> String {
    let path = fixture(name);
    let src = std::fs::read_to_string(&path).unwrap();
    let err = load_str(&path, &src, &|_| None).expect_err(name);
    // Paths are shown as given; make them stable for the assertions.
    err.to_string().replace(&path.display().to_string(), name)
}

#[test]
fn every_broken_fixture_names_place_and_problem() {
    let cases: &[(&str, &[&str])] = &[
        (
            "unknown_key.toml",
            &["unknown_key.toml:3:1:", "proxy: unknown field `listne`"],
        ),
        (
            "unknown_client.toml",
            &[
                "unknown_client.toml:4:10:",
                "route \"orders\"",
                "client \"nope\" is not defined",
            ],
        ),
        (
            "oauth_without_client.toml",
            &[
                "oauth_without_client.toml:4:",
                "route \"static\"",
                "header \"Authorization\"",
                "has no client",
            ],
        ),
        (
            "unknown_placeholder.toml",
            &[
                "unknown_placeholder.toml:11:",
                "header \"Authorization\"",
                "unknown placeholder <<oauth.tokn>>",
            ],
        ),
        (
            "bad_duration.toml",
            &["bad_duration.toml:2:", "thirty seconds"],
        ),
        ("bad_size.toml", &["bad_size.toml:2:", "potatoes"]),
        (
            "ca_cert_without_key.toml",
            &[
                "ca_cert_without_key.toml:2:",
                "ca_key is required when ca_cert is set",
            ],
        ),
        (
            "bad_host.toml",
            &[
                "bad_host.toml:3:10:",
                "only as the first label",
                "bad_host.toml:3:31:",
                "bad port",
            ],
        ),
        (
            "missing_env.toml",
            &[
                "missing_env.toml:5:",
                "client \"c\"",
                "SIDEKEY_TEST_DEFINITELY_UNSET is not set",
            ],
        ),
        (
            "unknown_grant.toml",
            &["unknown_grant.toml:2:", "unknown grant \"implicit\""],
        ),
        (
            "password_without_username.toml",
            &["password_without_username.toml:2:", "username is required"],
        ),
        (
            "bad_token_url.toml",
            &["bad_token_url.toml:3:", "token_url must be an http(s) URL"],
        ),
    ];
    for (name, wants) in cases {
        let got = errors(name);
        for want in *wants {
            assert!(got.contains(want), "{name}: expected {want:?} in:\n{got}");
        }
    }
}

#[test]
fn reports_every_error_not_just_the_first() {
    let got = errors("several_errors.toml");
    assert_eq!(got.lines().count(), 2, "{got}");
    assert!(
        got.contains("several_errors.toml:13:10:") && got.contains("\"missing\""),
        "{got}"
    );
    assert!(
        got.contains("several_errors.toml:18:29:") && got.contains("route \"two\""),
        "{got}"
    );
}

#[test]
fn seven_mistakes_are_seven_errors_each_naming_its_place() {
    let got = errors("seven_mistakes.toml");
    let lines: Vec<&str> = got.lines().collect();
    let wants: [&[&str]; 7] = [
        &[
            ":3:1:",
            "proxy: unknown field `listne` (did you mean `listen`?)",
        ],
        &[":4:20:", "proxy.upstream_timeout:", "thirty seconds"],
        &[
            ":10:17:",
            "client \"api\": client_secret: invalid type: integer, expected a string",
        ],
        &[
            ":11:1:",
            "client \"api\": unknown field `refresh_befor` (did you mean `refresh_before`?)",
        ],
        &[
            ":16:10:",
            "route \"orders\"",
            "client \"nope\" is not defined",
        ],
        &[
            ":22:16:",
            "route \"billing\": retry_on_401: invalid type: string",
        ],
        &[":24:", "route \"static\": missing field `hosts`"],
    ];
    assert_eq!(lines.len(), wants.len(), "{got}");
    for (line, want) in lines.iter().zip(wants) {
        for w in want {
            assert!(line.contains(w), "expected {w:?} in {line:?}; all:\n{got}");
        }
    }
    // The value of a type error is never shown: it may be a secret.
    assert!(!got.contains("12345"), "{got}");
}

#[test]
fn a_field_of_a_nested_table_and_an_array_element_are_named() {
    let src = "[proxy]\nconnect_ports = [443, \"x\"]\n[proxy.proxy_auth]\nusername = \"u\"\n\
               [clients.c]\ngrant = \"client_credentials\"\ntoken_url = \"https://i/t\"\nparams = { a = 1, b = \"ok\" }\n\
               [[routes]]\nname = \"r\"\nhosts = [\"h\"]\nmatch_headers = { x = \"ok\" }\nset_headers = { y = true }\n";
    let err = load_str(Path::new("p.toml"), src, &|_| None)
        .unwrap_err()
        .to_string();
    assert_eq!(err.lines().count(), 4, "{err}");
    assert!(
        err.contains("route \"r\": set_headers.y: invalid type: boolean"),
        "{err}"
    );
    assert!(
        err.contains("p.toml:2:23: proxy.connect_ports: invalid type: string"),
        "{err}"
    );
    assert!(
        err.contains("proxy.proxy_auth: missing field `password`"),
        "{err}"
    );
    assert!(
        err.contains("client \"c\": params.a: invalid type: integer"),
        "{err}"
    );
}

#[test]
fn inline_routes_and_unknown_sections_are_reported_too() {
    let src = "telemtry = { endpoint = \"x\" }\n\
               routes = [{ name = \"a\", hosts = [\"a.example\"], retry_on_401 = 1 }, { name = \"b\", hosts = \"b.example\" }]\n";
    let err = load_str(Path::new("p.toml"), src, &|_| None)
        .unwrap_err()
        .to_string();
    assert_eq!(err.lines().count(), 3, "{err}");
    assert!(
        err.contains("p.toml:1:1: unknown field `telemtry`"),
        "{err}"
    );
    assert!(
        err.contains("route \"a\": retry_on_401: invalid type: integer"),
        "{err}"
    );
    assert!(
        err.contains("route \"b\": hosts: invalid type: string"),
        "{err}"
    );
}

#[test]
fn the_repo_example_loads_without_credentials() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("proxy.toml");
    let src = std::fs::read_to_string(&path).unwrap();
    let cfg = load_str(&path, &src, &|_| None).unwrap();
    assert_eq!(cfg.routes.len(), 3);
    assert!(cfg.clients.contains_key("capillary_eu"));
}

#[test]
fn defaults_and_typed_values() {
    let cfg = load_str(Path::new("x.toml"), "", &|_| None).unwrap();
    assert_eq!(cfg.proxy.listen.to_string(), "127.0.0.1:3128");
    assert_eq!(
        cfg.proxy.admin.map(|a| a.to_string()).as_deref(),
        Some("127.0.0.1:9901")
    );
    assert_eq!(cfg.proxy.connect_ports, vec![443]);
    assert_eq!(cfg.proxy.retry_body_limit, 64 * 1024);
    assert_eq!(
        cfg.proxy.upstream_timeout,
        std::time::Duration::from_secs(30)
    );
    let deny: Vec<String> = cfg
        .proxy
        .deny_destinations
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(
        deny,
        [
            "169.254.0.0/16",
            "fe80::/10",
            "fd00:ec2::254/128",
            "100.100.100.200/32"
        ]
    );
    let cfg = load_str(
        Path::new("x.toml"),
        "[proxy]\nadmin = \"\"\nretry_body_limit = \"1MiB\"\nupstream_timeout = \"5m\"\nproxy_auth = { username = \"app\", password = \"<<env.PW>>\" }\n",
        &|n| (n == "PW").then(|| "pw".to_string()),
    )
    .unwrap();
    assert_eq!(cfg.proxy.admin, None);
    assert_eq!(cfg.proxy.retry_body_limit, 1024 * 1024);
    assert_eq!(cfg.proxy.upstream_timeout.as_secs(), 300);
    assert_eq!(cfg.proxy.proxy_auth.unwrap().expose(), "app:pw");
}

#[test]
fn the_spec_example_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "s3cret\n").unwrap();
    let src = format!(
        r#"
[proxy]
listen = "127.0.0.1:3128"
admin = "127.0.0.1:9901"
unmatched = "pass"
connect = "tunnel"
connect_ports = [443]
upstream_timeout = "30s"
retry_body_limit = "64KiB"
deny_destinations = ["169.254.0.0/16", "fe80::/10"]

[clients.capillary_eu]
grant = "capillary"
token_url = "https://eu.api.capillarytech.com/v3/oauth/token/generate"
client_id = "<<env.CAP_CLIENT_KEY>>"
client_secret = "<<file:{secret}>>"

[clients.orders]
grant = "client_credentials"
token_url = "https://idp.example.com/oauth2/token"
client_id = "orders-sync"
client_secret = "<<env.ORDERS_SECRET>>"
client_auth = "basic"
scopes = ["orders.read", "orders.write"]
audience = "https://api.example.com"
params = {{ resource = "https://api.example.com" }}
refresh_before = "60s"
default_ttl = "300s"

[[routes]]
name = "capillary-eu"
hosts = ["eu.api.capillarytech.com"]
path_prefix = "/v2/"
methods = ["GET", "POST"]
match_headers = {{ "X-Org" = "eu" }}
client = "capillary_eu"
upstream = "https"
set_headers = {{ "X-CAP-API-OAUTH-TOKEN" = "<<oauth.token>>", "X-CAP-API-ATTRIBUTION-ENTITY-TYPE" = "STORE_CODE", "X-CAP-API-ATTRIBUTION-ENTITY-CODE" = "store-042" }}
remove_headers = ["X-Org"]
retry_on_401 = true
"#,
        secret = secret.display()
    );
    let env = |n: &str| matches!(n, "CAP_CLIENT_KEY" | "ORDERS_SECRET").then(|| "v".to_string());
    let cfg = load_str(Path::new("spec.toml"), &src, &env).unwrap();
    let route = &cfg.routes[0];
    assert_eq!(route.upstream, UpstreamScheme::Https);
    assert!(matches!(
        route
            .set_headers
            .iter()
            .find(|(k, _)| k == "x-cap-api-attribution-entity-type")
            .unwrap()
            .1,
        HeaderTemplate::Static(_)
    ));
    assert_eq!(
        cfg.clients["orders"].scopes,
        vec!["orders.read", "orders.write"]
    );
}

#[test]
fn env_placeholders_work_in_plain_settings_too() {
    let src = r#"
[proxy]
listen = "<<env.LISTEN:-127.0.0.1:3128>>"
admin = "<<env.ADMIN>>"

[[routes]]
name = "r"
hosts = ["<<env.API_HOST>>"]
path_prefix = "<<env.PREFIX:-/v2/>>"
set_headers = { "X-A" = "1" }
"#;
    let env = |n: &str| match n {
        "ADMIN" => Some("127.0.0.1:9999".to_string()),
        "API_HOST" => Some("api.internal".to_string()),
        _ => None,
    };
    let cfg = load_str(Path::new("e.toml"), src, &env).unwrap();
    assert_eq!(cfg.proxy.listen.to_string(), "127.0.0.1:3128");
    assert_eq!(cfg.proxy.admin.unwrap().to_string(), "127.0.0.1:9999");
    assert_eq!(
        cfg.routes[0].hosts,
        vec![HostPattern::Exact {
            host: "api.internal".into(),
            port: None
        }]
    );
    assert_eq!(cfg.routes[0].path_prefix.as_deref(), Some("/v2/"));
    let err = load_str(
        Path::new("e.toml"),
        "[proxy]\nlisten = \"<<env.NOPE>>\"\n",
        &|_| None,
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("e.toml:2:10: environment variable NOPE is not set"),
        "{err}"
    );
}

#[test]
fn type_errors_never_print_the_value() {
    let path = Path::new("p.toml");
    for (src, secret) in [
        ("[clients.c]\ngrant = \"client_credentials\"\ntoken_url = \"http://i/t\"\nclient_id = \"a\"\nclient_secret = 98765432123\n", "98765432123"),
        ("[clients.c]\ngrant = \"client_credentials\"\ntoken_url = \"http://i/t\"\nclient_id = \"a\"\nclient_secret = 1.5e300\n", "1.5e300"),
        ("[clients.c]\ngrant = \"client_credentials\"\ntoken_url = \"http://i/t\"\nclient_id = \"a\"\nscopes = \"hunter2-secret\"\n", "hunter2-secret"),
    ] {
        let err = load_str(path, src, &|_| None).unwrap_err().to_string();
        assert!(!err.contains(secret), "{err}");
        assert!(err.contains("invalid type") && err.contains("p.toml:"), "{err}");
    }
}

#[test]
fn control_characters_in_a_per_request_header_template_fail_at_load() {
    let src = "[clients.c]\ngrant = \"client_credentials\"\ntoken_url = \"http://i/t\"\nclient_id = \"a\"\nclient_secret = \"s\"\n[[routes]]\nname = \"r\"\nhosts = [\"a.example\"]\nclient = \"c\"\nset_headers = { \"Authorization\" = \"Bearer <<oauth.token>><<env.SUFFIX>>\" }\n";
    let env = |n: &str| (n == "SUFFIX").then(|| "x\r\nX-Injected: 1".to_string());
    let err = load_str(Path::new("p.toml"), src, &env)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("route \"r\"")
            && err.contains("header \"Authorization\"")
            && err.contains("CR/LF"),
        "{err}"
    );
}

#[test]
fn workers_default_to_one_and_take_a_count_or_auto() {
    let load = |src: &str| load_str(Path::new("w.toml"), src, &|_| None);
    assert_eq!(load("").unwrap().proxy.workers, 1);
    assert_eq!(load("[proxy]\nworkers = 4").unwrap().proxy.workers, 4);
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    assert_eq!(
        load("[proxy]\nworkers = \"auto\"").unwrap().proxy.workers,
        cpus
    );
    for bad in ["0", "-1", "100000", "\"many\"", "1.5"] {
        let err = load(&format!("[proxy]\nworkers = {bad}"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("w.toml:2:")
                && err.contains(
                    "proxy.workers must be a number of threads from 1 to 1024, or \"auto\""
                ),
            "{bad}: {err}"
        );
    }
}

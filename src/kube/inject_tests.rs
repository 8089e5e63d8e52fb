//! Table-style tests of the pure injection: annotations, classic mode, a parent proxy from a Secret,
//! the webhook's opt-in, and reinvocation after another webhook added a container.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, EnvVar, EnvVarSource, PodSpec, PodTemplateSpec, SecretKeySelector,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::*;

fn template(annotations: &[(&str, &str)], containers: Vec<Container>) -> PodTemplateSpec {
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            annotations: Some(
                annotations
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            containers,
            ..PodSpec::default()
        }),
    }
}

fn app(name: &str) -> Container {
    Container {
        name: name.to_owned(),
        image: Some("app:1".to_owned()),
        ..Container::default()
    }
}

fn injected(t: &PodTemplateSpec, d: &Defaults) -> PodSpec {
    match inject(t, d) {
        Outcome::Injected(t) => t.spec.unwrap_or_default(),
        other => panic!("expected an injection, got {other:?}"),
    }
}

fn env<'a>(c: &'a Container, name: &str) -> Option<&'a EnvVar> {
    c.env.as_ref()?.iter().find(|e| e.name == name)
}

#[test]
fn the_webhook_injects_only_pods_that_ask() {
    let d = Defaults {
        require_opt_in: true,
        ..Defaults::default()
    };
    let cases = [
        (None, false),
        (Some("true"), true),
        (Some("false"), false),
        (Some("yes"), false),
    ];
    for (value, want) in cases {
        let ann: Vec<(&str, &str)> = value.map(|v| (ANNOTATION_INJECT, v)).into_iter().collect();
        let got = matches!(
            inject(&template(&ann, vec![app("a")]), &d),
            Outcome::Injected(_)
        );
        assert_eq!(got, want, "sidekey.io/inject = {value:?}");
    }
    // `inject` (no opt-in needed) skips only "false".
    let t = template(&[(ANNOTATION_INJECT, "false")], vec![app("a")]);
    assert_eq!(
        inject(&t, &Defaults::default()),
        Outcome::Skipped(Skipped::NotRequested)
    );
}

#[test]
fn annotations_pick_config_image_and_classic_mode() {
    let t = template(
        &[
            (ANNOTATION_CONFIG, "orders-sidekey"),
            (ANNOTATION_IMAGE, "registry.example.com/sidekey:2"),
            (ANNOTATION_NATIVE, "false"),
            (ANNOTATION_CA_SECRET, "orders-ca"),
        ],
        vec![app("a")],
    );
    let spec = injected(&t, &Defaults::default());
    // Classic: sidekey first among the regular containers, without restartPolicy.
    assert_eq!(spec.containers[0].name, "sidekey");
    assert_eq!(spec.containers[0].restart_policy, None);
    assert_eq!(
        spec.containers[0].image.as_deref(),
        Some("registry.example.com/sidekey:2")
    );
    let inits: Vec<&str> = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(inits, ["sidekey-ca-bundle"]);
    let volumes = spec.volumes.unwrap_or_default();
    let config = volumes
        .iter()
        .find(|v| v.name == "sidekey-config")
        .and_then(|v| v.config_map.as_ref());
    assert_eq!(config.map(|c| c.name.as_str()), Some("orders-sidekey"));
    let secret = volumes
        .iter()
        .find(|v| v.name == "sidekey-ca")
        .and_then(|v| v.secret.as_ref());
    assert_eq!(
        secret.and_then(|s| s.secret_name.as_deref()),
        Some("orders-ca")
    );
}

#[test]
fn a_parent_proxy_from_a_secret_is_passed_on_as_such() {
    let from = EnvVarSource {
        secret_key_ref: Some(SecretKeySelector {
            name: "corp-proxy".to_owned(),
            key: "url".to_owned(),
            optional: None,
        }),
        ..EnvVarSource::default()
    };
    let mut a = app("a");
    a.env = Some(vec![EnvVar {
        name: "HTTP_PROXY".to_owned(),
        value: None,
        value_from: Some(from.clone()),
    }]);
    let spec = injected(&template(&[], vec![a]), &Defaults::default());
    let sidekey = &spec.init_containers.unwrap_or_default()[1];
    let parent = env(sidekey, "SIDEKEY_UPSTREAM_PROXY").map(|e| e.value_from.clone());
    assert_eq!(parent, Some(Some(from)));
    let app_proxy = env(&spec.containers[0], "HTTP_PROXY");
    assert_eq!(
        app_proxy.and_then(|e| e.value.as_deref()),
        Some("http://127.0.0.1:3128")
    );
    assert!(app_proxy.is_some_and(|e| e.value_from.is_none()));
}

#[test]
fn a_container_added_after_injection_is_wired_on_reinvocation() {
    let d = Defaults::default();
    let mut once = match inject(&template(&[], vec![app("a")]), &d) {
        Outcome::Injected(t) => *t,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        inject(&once, &d),
        Outcome::Skipped(Skipped::AlreadyInjected)
    );
    // Another webhook adds a container after sidekey's ran.
    if let Some(spec) = once.spec.as_mut() {
        spec.containers.push(app("log-shipper"));
    }
    let again = injected(&once, &d);
    let shipper = &again.containers[1];
    assert_eq!(
        env(shipper, "HTTPS_PROXY").and_then(|e| e.value.as_deref()),
        Some("http://127.0.0.1:3128")
    );
    assert!(env(shipper, "SSL_CERT_FILE").is_some());
    assert_eq!(
        again.init_containers.map(|c| c.len()),
        Some(2),
        "no second sidekey"
    );
}

#[test]
fn a_pod_without_containers_is_left_alone() {
    let t = template(&[], vec![]);
    assert_eq!(
        inject(&t, &Defaults::default()),
        Outcome::Skipped(Skipped::NoContainers)
    );
}

#[test]
fn a_host_network_pod_is_left_alone() {
    let mut t = template(&[], vec![app("a")]);
    if let Some(spec) = t.spec.as_mut() {
        spec.host_network = Some(true);
    }
    assert_eq!(
        inject(&t, &Defaults::default()),
        Outcome::Skipped(Skipped::HostNetwork)
    );
}

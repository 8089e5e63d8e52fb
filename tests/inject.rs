//! `sidekey inject` on the fixtures in tests/fixtures/kube: every workload kind, Lists, an app with
//! its own securityContext and proxy, opted-out workloads, a config without [tls], idempotence.
//! Schema validation of the same outputs: scripts/check-kubernetes.sh (tests/deploy.rs).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed setup step should fail the test loudly"
)]

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/kube");
const PROXY: &str = "http://127.0.0.1:3128";

/// Runs `sidekey inject` with `input` on stdin; returns stdout.
fn inject_stdin(input: &str, args: &[&str]) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sidekey"))
        .arg("inject")
        .args(args)
        .args(["--log-format", "json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "sidekey inject failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(Path::new(FIXTURES).join(name)).unwrap()
}

/// Every document of a YAML stream, as JSON for easy indexing.
fn docs(yaml: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(yaml)
        .map(|d| {
            let v: serde_norway::Value = serde::Deserialize::deserialize(d).unwrap();
            serde_json::to_value(v).unwrap()
        })
        .filter(|v| !v.is_null())
        .collect()
}

fn pod_spec(doc: &Value) -> &Value {
    match doc["kind"].as_str().unwrap() {
        "Pod" => &doc["spec"],
        "CronJob" => &doc["spec"]["jobTemplate"]["spec"]["template"]["spec"],
        _ => &doc["spec"]["template"]["spec"],
    }
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array()
        .map(|l| l.iter().map(|c| c["name"].as_str().unwrap()).collect())
        .unwrap_or_default()
}

fn env<'a>(container: &'a Value, name: &str) -> Option<&'a str> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)?["value"]
        .as_str()
}

#[test]
fn every_workload_kind_gets_sidekey_and_other_objects_stay_byte_for_byte() {
    let input = fixture("workloads.yaml");
    let out = inject_stdin(&input, &[]);
    // The ConfigMap (with its comments and quoted "0440") and the Service come out as they went in.
    let configmap = &input[..input.find("---").unwrap()];
    assert!(out.starts_with(configmap), "ConfigMap changed:\n{out}");
    let service = &input[input.rfind("---").unwrap()..];
    assert!(out.ends_with(service), "Service changed:\n{out}");

    let docs = docs(&out);
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "ConfigMap",
            "Pod",
            "Deployment",
            "StatefulSet",
            "DaemonSet",
            "ReplicaSet",
            "Job",
            "CronJob",
            "Service"
        ]
    );
    for doc in &docs[1..8] {
        let spec = pod_spec(doc);
        let kind = doc["kind"].as_str().unwrap();
        assert_eq!(
            names(&spec["initContainers"]),
            ["sidekey-ca-bundle", "sidekey"],
            "{kind}: {spec:#}"
        );
        let sidekey = &spec["initContainers"][1];
        assert_eq!(sidekey["restartPolicy"], "Always", "{kind}: native sidecar");
        for app in spec["containers"].as_array().unwrap() {
            for var in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
                assert_eq!(env(app, var), Some(PROXY), "{kind}: {var}");
            }
            assert_eq!(
                env(app, "SSL_CERT_FILE"),
                Some("/etc/sidekey/trust/ca-bundle.pem")
            );
            assert!(env(app, "NO_PROXY").unwrap().contains(".svc"));
        }
        assert!(
            spec.get("securityContext").is_none(),
            "{kind}: no pod securityContext added"
        );
        // ca.key only for sidekey itself; the bundle step mounts the certificate alone.
        let bundle_mounts = names(&spec["initContainers"][0]["volumeMounts"]);
        assert!(
            !bundle_mounts.contains(&"sidekey-ca"),
            "{kind}: {bundle_mounts:?}"
        );
    }
    // Written so that YAML 1.1 (kubectl) reads strings as strings.
    for quoted in [r#"canary: "no""#, r#"build: "1_000""#, r#"value: "off""#] {
        assert!(out.contains(quoted), "{quoted} not quoted:\n{out}");
    }
    // YAML 1.1 octal and a numeric quantity, read as Kubernetes reads them.
    let deployment = pod_spec(&docs[2]);
    assert_eq!(deployment["volumes"][0]["configMap"]["defaultMode"], 0o440);
    assert_eq!(
        deployment["containers"][0]["resources"]["requests"]["cpu"],
        "1"
    );
}

#[test]
fn a_list_has_its_workloads_injected() {
    let out = inject_stdin(&fixture("list.yaml"), &[]);
    let docs = docs(&out);
    assert_eq!(docs.len(), 1);
    let items = docs[0]["items"].as_array().unwrap();
    assert_eq!(
        names(&pod_spec(&items[0])["initContainers"]),
        ["sidekey-ca-bundle", "sidekey"]
    );
    assert_eq!(items[1]["kind"], "Service");
    assert!(items[1]["spec"].get("template").is_none());
}

#[test]
fn the_apps_security_context_proxy_and_no_proxy_are_kept() {
    let input = fixture("own-settings.yaml");
    let before = &docs(&input)[0];
    let after = &docs(&inject_stdin(&input, &[]))[0];
    let (b, a) = (pod_spec(before), pod_spec(after));
    assert_eq!(
        a["securityContext"], b["securityContext"],
        "pod securityContext"
    );
    let app = &a["containers"][0];
    assert_eq!(
        app["securityContext"],
        b["containers"][0]["securityContext"]
    );
    assert_eq!(env(app, "LOG_LEVEL"), Some("debug"));
    // One volume at two paths: both mounts as they were, then sidekey's trust mount.
    let mounts = app["volumeMounts"].as_array().unwrap();
    assert_eq!(
        mounts[..2],
        b["containers"][0]["volumeMounts"].as_array().unwrap()[..]
    );
    assert_eq!(mounts[2]["name"], "sidekey-trust");
    assert_eq!(env(app, "HTTPS_PROXY"), Some(PROXY));
    let no_proxy = env(app, "NO_PROXY").unwrap();
    assert!(
        no_proxy.starts_with(".corp.example,10.0.0.0/8,localhost,"),
        "NO_PROXY extended, not replaced: {no_proxy}"
    );
    assert_eq!(env(app, "no_proxy"), Some(no_proxy));
    // The corporate proxy becomes sidekey's parent proxy.
    let sidekey = &a["initContainers"][1];
    assert_eq!(
        env(sidekey, "SIDEKEY_UPSTREAM_PROXY"),
        Some("http://proxy.corp.example:3128")
    );
    assert!(env(sidekey, "HTTPS_PROXY").is_none());
    assert_eq!(
        after["spec"]["template"]["metadata"]["annotations"]["team"],
        "payments"
    );
}

#[test]
fn opted_out_workloads_are_left_byte_for_byte() {
    let input = fixture("opted-out.yaml");
    assert_eq!(inject_stdin(&input, &[]), input);
}

#[test]
fn a_config_without_tls_gets_no_ca_secret_and_no_bundle_step() {
    let out = inject_stdin(&fixture("no-tls.yaml"), &[]);
    let spec = pod_spec(&docs(&out)[0]).clone();
    assert_eq!(names(&spec["initContainers"]), ["sidekey"]);
    assert_eq!(names(&spec["volumes"]), ["sidekey-config"]);
    assert_eq!(spec["volumes"][0]["configMap"]["name"], "reports-sidekey");
    let app = &spec["containers"][0];
    assert_eq!(env(app, "HTTPS_PROXY"), Some(PROXY));
    assert!(env(app, "SSL_CERT_FILE").is_none());
    assert!(app.get("volumeMounts").is_none());
    assert!(!out.contains("sidekey-ca"), "{out}");
}

#[test]
fn injecting_twice_changes_nothing() {
    for name in [
        "workloads.yaml",
        "list.yaml",
        "own-settings.yaml",
        "no-tls.yaml",
    ] {
        let once = inject_stdin(&fixture(name), &[]);
        let twice = inject_stdin(&once, &[]);
        assert_eq!(twice, once, "{name}: a second inject changed the output");
    }
}

#[test]
fn file_argument_and_flags_set_the_defaults() {
    let path = Path::new(FIXTURES).join("list.yaml");
    let out = inject_stdin(
        "",
        &[
            "-f",
            path.to_str().unwrap(),
            "--image",
            "registry.example.com/sidekey:9",
            "--ca-secret",
            "",
        ],
    );
    let spec = pod_spec(&docs(&out)[0]["items"][0]).clone();
    assert_eq!(names(&spec["initContainers"]), ["sidekey"]);
    assert_eq!(
        spec["initContainers"][0]["image"],
        "registry.example.com/sidekey:9"
    );
}

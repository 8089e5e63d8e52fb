//! `sidekey webhook`: real AdmissionReview v1 JSON posted over TLS to the binary, the returned
//! JSONPatch applied with an independent RFC 6902 implementation, and the serving certificate
//! swapped on disk while it runs.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed setup step should fail the test loudly"
)]

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};
use support::pki::{new_ca, TestCa};

/// The webhook as the binary, killed when dropped.
struct Webhook {
    child: Child,
    addr: SocketAddr,
    logs: std::path::PathBuf,
}

impl Webhook {
    async fn start(dir: &Path, ca: &TestCa) -> Webhook {
        write_cert(dir, ca);
        let logs = dir.join("webhook.log");
        for _attempt in 0..5 {
            // Webhook: serves /mutate and /healthz on a port picked just before it starts.
            let addr = support::sidekey::free_port();
            let child = Command::new(env!("CARGO_BIN_EXE_sidekey"))
                .args(["webhook", "--listen", &addr.to_string()])
                .arg("--tls-cert")
                .arg(dir.join("tls.crt"))
                .arg("--tls-key")
                .arg(dir.join("tls.key"))
                .args([
                    "--image",
                    "registry.example.com/sidekey:1",
                    "--log-format",
                    "json",
                ])
                .env("RUST_LOG", "info")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&logs).unwrap())
                .spawn()
                .unwrap();
            let mut hook = Webhook {
                child,
                addr,
                logs: logs.clone(),
            };
            let client = client(ca);
            for _ in 0..250 {
                if matches!(hook.child.try_wait(), Ok(Some(_))) {
                    break; // the port was taken meanwhile: try another
                }
                if let Ok(r) = client.get(hook.url("/healthz")).send().await {
                    assert_eq!(r.status(), 200);
                    return hook;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let _ = hook.child.kill();
        }
        panic!(
            "sidekey webhook did not come up:\n{}",
            std::fs::read_to_string(&logs).unwrap()
        );
    }

    fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.addr.port())
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.logs).unwrap()
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_cert(dir: &Path, ca: &TestCa) {
    let (cert, key) = ca.server_cert_pem(&["localhost"]);
    // Written aside and renamed, as kubelet swaps a mounted Secret.
    for (name, text) in [("tls.key", key), ("tls.crt", cert)] {
        std::fs::write(dir.join(format!("{name}.new")), text).unwrap();
        std::fs::rename(dir.join(format!("{name}.new")), dir.join(name)).unwrap();
    }
}

/// Trusts only `ca`, resolves localhost to the webhook's loopback address.
fn client(ca: &TestCa) -> reqwest::Client {
    reqwest::Client::builder()
        .use_preconfigured_tls((*ca.client_config(&[b"http/1.1"])).clone())
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// An AdmissionReview v1 for a pod CREATE, as the API server sends it.
fn review(uid: &str, pod: &Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": { "group": "", "version": "v1", "kind": "Pod" },
            "resource": { "group": "", "version": "v1", "resource": "pods" },
            "requestKind": { "group": "", "version": "v1", "kind": "Pod" },
            "requestResource": { "group": "", "version": "v1", "resource": "pods" },
            "namespace": "payments",
            "operation": "CREATE",
            "userInfo": { "username": "system:serviceaccount:kube-system:replicaset-controller" },
            "object": pod,
            "oldObject": null,
            "dryRun": false,
            "options": { "apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions" }
        }
    })
}

fn pod(annotations: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "generateName": "billing-7d9f-", "namespace": "payments", "annotations": annotations },
        "spec": {
            "securityContext": { "runAsUser": 1000, "fsGroup": 2000 },
            "containers": [{
                "name": "app",
                "image": "registry.example.com/billing:5.1",
                "env": [
                    { "name": "HTTPS_PROXY", "value": "http://proxy.corp.example:3128" },
                    { "name": "NO_PROXY", "value": ".corp.example" }
                ],
                "resources": { "limits": { "memory": "256Mi" } },
                "terminationMessagePolicy": "File"
            }],
            "restartPolicy": "Always",
            "dnsPolicy": "ClusterFirst"
        }
    })
}

/// Posts one review; returns the response and the decoded patch, if any.
async fn mutate(
    client: &reqwest::Client,
    hook: &Webhook,
    uid: &str,
    pod: &Value,
) -> (Value, Option<Value>) {
    let res = client
        .post(hook.url("/mutate"))
        .json(&review(uid, pod))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(body["kind"], "AdmissionReview");
    let response = body["response"].clone();
    assert_eq!(response["uid"], uid);
    assert_eq!(response["allowed"], true, "sidekey never blocks a pod");
    let patch = response["patch"].as_str().map(|p| {
        assert_eq!(response["patchType"], "JSONPatch");
        serde_json::from_slice(&base64::engine::general_purpose::STANDARD.decode(p).unwrap())
            .unwrap()
    });
    (response, patch)
}

fn env<'a>(c: &'a Value, name: &str) -> Option<&'a str> {
    c["env"].as_array()?.iter().find(|e| e["name"] == name)?["value"].as_str()
}

#[tokio::test]
async fn annotated_pods_are_patched_others_allowed_unchanged() {
    support::init_crypto();
    let dir = tempfile::tempdir().unwrap();
    let ca = new_ca("webhook test CA");
    let hook = Webhook::start(dir.path(), &ca).await;
    let client = client(&ca);

    // API server: a pod that asks for sidekey.
    let original = pod(json!({ "sidekey.io/inject": "true" }));
    let (_, patch) = mutate(&client, &hook, "a1", &original).await;
    let patch: json_patch::Patch = serde_json::from_value(patch.expect("a patch")).unwrap();
    let mut patched = original.clone();
    json_patch::patch(&mut patched, &patch).unwrap();
    let spec = &patched["spec"];
    let inits: Vec<&str> = spec["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(inits, ["sidekey-ca-bundle", "sidekey"]);
    assert_eq!(
        spec["initContainers"][1]["image"],
        "registry.example.com/sidekey:1"
    );
    assert_eq!(
        env(&spec["initContainers"][1], "SIDEKEY_UPSTREAM_PROXY"),
        Some("http://proxy.corp.example:3128")
    );
    let app = &spec["containers"][0];
    assert_eq!(env(app, "HTTPS_PROXY"), Some("http://127.0.0.1:3128"));
    assert!(env(app, "NO_PROXY")
        .unwrap()
        .starts_with(".corp.example,localhost"));
    // What the app set and sidekey has no business with is as it was.
    assert_eq!(spec["securityContext"], original["spec"]["securityContext"]);
    assert_eq!(app["terminationMessagePolicy"], "File");
    assert_eq!(
        app["resources"],
        original["spec"]["containers"][0]["resources"]
    );
    assert_eq!(spec["dnsPolicy"], "ClusterFirst");
    assert_eq!(
        patched["metadata"]["annotations"]["sidekey.io/inject"],
        "true"
    );

    // Reinvocation: the injected pod comes back; nothing more to do.
    let (_, again) = mutate(&client, &hook, "a2", &patched).await;
    assert!(again.is_none(), "a second pass patched again: {again:?}");
    // Reinvocation after another webhook added a container: only that container is wired.
    let mut grown = patched.clone();
    grown["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "name": "log-shipper", "image": "registry.example.com/shipper:1" }));
    let (_, patch) = mutate(&client, &hook, "a3", &grown).await;
    let patch: json_patch::Patch = serde_json::from_value(patch.expect("a patch")).unwrap();
    json_patch::patch(&mut grown, &patch).unwrap();
    let shipper = &grown["spec"]["containers"][1];
    assert_eq!(env(shipper, "HTTPS_PROXY"), Some("http://127.0.0.1:3128"));
    assert_eq!(
        grown["spec"]["initContainers"],
        patched["spec"]["initContainers"]
    );
    assert_eq!(
        grown["spec"]["containers"][0],
        patched["spec"]["containers"][0]
    );

    // Not annotated, or annotated "false": allowed, no patch.
    for annotations in [json!({}), json!({ "sidekey.io/inject": "false" })] {
        let (_, patch) = mutate(&client, &hook, "b", &pod(annotations)).await;
        assert!(patch.is_none());
    }

    // A pod it cannot parse: allowed unchanged, and logged.
    let mut broken = pod(json!({ "sidekey.io/inject": "true" }));
    broken["spec"]["containers"] = json!("not a list");
    let (_, patch) = mutate(&client, &hook, "c-broken", &broken).await;
    assert!(patch.is_none());
    support::eventually(
        Duration::from_secs(5),
        "the unparseable pod is logged",
        || {
            let logs = hook.logs();
            async move { logs.contains("c-broken") && logs.contains("cannot parse the pod") }
        },
    )
    .await;

    // Not an AdmissionReview at all: 400.
    let res = client
        .post(hook.url("/mutate"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
}

#[tokio::test]
async fn a_renewed_certificate_is_served_without_a_restart() {
    support::init_crypto();
    let dir = tempfile::tempdir().unwrap();
    let old_ca = new_ca("webhook old CA");
    let hook = Webhook::start(dir.path(), &old_ca).await;

    // cert-manager: renews the Secret, here with a certificate from another CA.
    let new_ca = new_ca("webhook new CA");
    write_cert(dir.path(), &new_ca);
    let client = client(&new_ca);
    support::eventually(
        Duration::from_secs(10),
        "the new certificate is served",
        || {
            let (client, url) = (client.clone(), hook.url("/healthz"));
            async move {
                client
                    .get(url)
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200)
            }
        },
    )
    .await;
    assert!(hook.logs().contains("webhook certificate reloaded"));
}

//! The webhook's decision, without the server: an AdmissionReview v1 in, the AdmissionReview answer
//! out, always `allowed: true` (sidekey never blocks a pod), with a JSONPatch when it injected.

use base64::Engine as _;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use serde_json::{json, Value};

use super::raw::{merge_into, yaml11_compat};
use super::{inject, Defaults, Outcome, Skipped};

/// The top-level keys of a pod the injection may change, as JSON pointers and their path.
const CHANGED: [(&str, [&str; 2]); 4] = [
    ("/metadata/annotations", ["metadata", "annotations"]),
    ("/spec/initContainers", ["spec", "initContainers"]),
    ("/spec/containers", ["spec", "containers"]),
    ("/spec/volumes", ["spec", "volumes"]),
];

/// A request that is not an AdmissionReview: the API server never sends one, so 400.
#[derive(Debug, thiserror::Error)]
#[error("not an AdmissionReview v1 request: {0}")]
pub struct NotAReview(&'static str);

/// What happened to the pod, for the log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Injected,
    Skipped(Skipped),
    /// The pod did not parse as a pod: allowed unchanged.
    Unparseable(String),
}

/// Answers one AdmissionReview.
pub fn review(body: &[u8], defaults: &Defaults) -> Result<(Value, Decision), NotAReview> {
    let review: Value = serde_json::from_slice(body).map_err(|_| NotAReview("not JSON"))?;
    let request = review.get("request").ok_or(NotAReview("no request"))?;
    let uid = request
        .get("uid")
        .and_then(Value::as_str)
        .ok_or(NotAReview("no request.uid"))?;
    let pod = request.get("object").cloned().unwrap_or(Value::Null);
    let (patch, decision) = match patch_for(&pod, defaults) {
        Ok(Ok(patch)) => (Some(patch), Decision::Injected),
        Ok(Err(why)) => (None, Decision::Skipped(why)),
        Err(why) => (None, Decision::Unparseable(why)),
    };
    let mut response = json!({ "uid": uid, "allowed": true });
    if let Some(patch) = patch {
        let encoded = base64::engine::general_purpose::STANDARD.encode(patch.to_string());
        response["patchType"] = json!("JSONPatch");
        response["patch"] = json!(encoded);
    }
    let answer = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": response,
    });
    Ok((answer, decision))
}

/// The JSONPatch that injects `pod`, or why it is left alone; Err when it is not a pod.
fn patch_for(pod: &Value, defaults: &Defaults) -> Result<Result<Value, Skipped>, String> {
    let template = template_of(pod)?;
    let new = match inject(&template, defaults) {
        Outcome::Injected(new) => new,
        Outcome::Skipped(why) => return Ok(Err(why)),
    };
    // The original pod with the injected fields merged in, so fields the typed pod does not know
    // (a newer API's) survive in the patched lists.
    let mut merged = to_yaml(pod)?;
    let new = serde_norway::to_value(&*new).map_err(|e| e.to_string())?;
    merge_into(&mut merged, new, None);
    let merged = serde_json::to_value(&merged).map_err(|e| e.to_string())?;
    let ops: Vec<Value> = CHANGED
        .iter()
        .filter_map(|(pointer, path)| {
            let after = merged.get(path[0])?.get(path[1])?;
            let before = pod.get(path[0]).and_then(|v| v.get(path[1]));
            match before {
                Some(b) if b == after => None,
                Some(_) => Some(json!({ "op": "replace", "path": pointer, "value": after })),
                None => Some(json!({ "op": "add", "path": pointer, "value": after })),
            }
        })
        .collect();
    // A pod always has metadata and spec, so `add` of their children has a parent.
    if ops.is_empty() {
        return Ok(Err(Skipped::AlreadyInjected));
    }
    Ok(Ok(Value::Array(ops)))
}

/// The pod's metadata and spec as a template.
fn template_of(pod: &Value) -> Result<PodTemplateSpec, String> {
    if pod.get("kind").and_then(Value::as_str) != Some("Pod") || pod.get("spec").is_none() {
        return Err("the object is not a Pod with a spec".into());
    }
    let mut raw = to_yaml(pod)?;
    yaml11_compat(&mut raw, None);
    serde_norway::from_value(raw).map_err(|e| e.to_string())
}

fn to_yaml(v: &Value) -> Result<serde_norway::Value, String> {
    serde_norway::to_value(v).map_err(|e| e.to_string())
}

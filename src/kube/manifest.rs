//! `sidekey inject`: Kubernetes manifests in, the same out with sidekey in every pod template.
//! Documents are split on their `---` lines and only a document whose template changed is written
//! anew; every other document (and every separator and comment between them) is copied byte for byte.

use k8s_openapi::api::core::v1::PodTemplateSpec;
use serde_norway::Value;

use super::raw::{merge_into, yaml11_compat};
use super::{inject, Defaults, Outcome, Skipped, ANNOTATION_INJECT};

/// A document `inject` cannot work on; names the document so the user finds it.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("document {index}: not valid YAML: {source}")]
    Yaml {
        index: usize,
        source: serde_norway::Error,
    },
    #[error("document {index} ({kind} {name}): {path} is not a pod template: {source}")]
    Template {
        index: usize,
        kind: String,
        name: String,
        path: String,
        source: serde_norway::Error,
    },
}

/// Injects every workload of a multi-document YAML stream; returns the new stream and how many
/// pod templates got sidekey.
pub fn inject_manifests(
    input: &str,
    defaults: &Defaults,
) -> Result<(String, usize), ManifestError> {
    let mut out = String::with_capacity(input.len() * 2);
    let mut injected = 0;
    for (index, (separator, body)) in documents(input).into_iter().enumerate() {
        out.push_str(separator);
        if is_blank(body) {
            out.push_str(body);
            continue;
        }
        let mut doc: Value =
            serde_norway::from_str(body).map_err(|source| ManifestError::Yaml { index, source })?;
        let n = inject_object(&mut doc, index, defaults)?;
        if n == 0 {
            out.push_str(body);
            continue;
        }
        injected += n;
        out.push_str(&super::emit::document(&doc));
    }
    Ok((out, injected))
}

/// Only comments and blank lines: nothing to parse, copied as is.
fn is_blank(body: &str) -> bool {
    body.lines()
        .map(str::trim)
        .all(|l| l.is_empty() || l.starts_with('#'))
}

/// (the separator line before it, or "" for the first, the document's text).
fn documents(input: &str) -> Vec<(&str, &str)> {
    let mut docs = Vec::new();
    let mut separator = "";
    let mut start = 0;
    let mut pos = 0;
    for line in input.split_inclusive('\n') {
        let is_separator =
            line.starts_with("---") && line[3..].chars().next().is_none_or(char::is_whitespace);
        if is_separator {
            docs.push((separator, &input[start..pos]));
            separator = line;
            start = pos + line.len();
        }
        pos += line.len();
    }
    docs.push((separator, &input[start..]));
    // A stream that opens with `---` has an empty first document: keep its (empty) text in place.
    docs
}

/// Where each workload kind keeps its pod template, for the API groups that define them.
fn template_path(api_version: &str, kind: &str) -> Option<&'static [&'static str]> {
    match (api_version, kind) {
        ("v1", "Pod") => Some(&[]),
        ("v1", "PodTemplate") => Some(&["template"]),
        ("apps/v1", "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet")
        | ("v1", "ReplicationController")
        | ("batch/v1", "Job") => Some(&["spec", "template"]),
        ("batch/v1", "CronJob") => Some(&["spec", "jobTemplate", "spec", "template"]),
        _ => None,
    }
}

/// Injects one object (or each item of a `List`); returns how many templates changed.
fn inject_object(
    doc: &mut Value,
    index: usize,
    defaults: &Defaults,
) -> Result<usize, ManifestError> {
    let str_at = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).unwrap_or("").to_owned();
    let (api_version, kind) = (str_at(doc, "apiVersion"), str_at(doc, "kind"));
    if kind.ends_with("List") {
        let mut n = 0;
        if let Some(items) = doc.get_mut("items").and_then(Value::as_sequence_mut) {
            for item in items {
                n += inject_object(item, index, defaults)?;
            }
        }
        return Ok(n);
    }
    let Some(path) = template_path(&api_version, &kind) else {
        return Ok(0);
    };
    // The workload's own annotation opts its pods out too, as `linkerd inject` does.
    let opted_out = doc
        .get("metadata")
        .and_then(|m| m.get("annotations"))
        .and_then(|a| a.get(ANNOTATION_INJECT))
        .and_then(Value::as_str)
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("false"));
    if opted_out {
        return Ok(0);
    }
    let name = doc
        .get("metadata")
        .map(|m| str_at(m, "name"))
        .unwrap_or_default();
    let Some(slot) = path.iter().try_fold(&mut *doc, |v, key| v.get_mut(*key)) else {
        return Ok(0);
    };
    let fail = |source| ManifestError::Template {
        index,
        kind: kind.clone(),
        name: name.clone(),
        path: if path.is_empty() {
            ".".into()
        } else {
            path.join(".")
        },
        source,
    };
    let mut raw = slot.clone();
    yaml11_compat(&mut raw, None);
    let template: PodTemplateSpec = serde_norway::from_value(raw).map_err(fail)?;
    let new = match inject(&template, defaults) {
        Outcome::Injected(new) => new,
        Outcome::Skipped(Skipped::HostNetwork) => {
            tracing::warn!(document = index, %kind, %name, "hostNetwork pod: sidekey not added");
            return Ok(0);
        }
        Outcome::Skipped(_) => return Ok(0),
    };
    let new = serde_norway::to_value(&*new).map_err(fail)?;
    merge_into(slot, new, None);
    Ok(1)
}

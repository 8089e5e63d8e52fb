//! The injection itself: a pure function from a pod template (its annotations over [`Defaults`]) to
//! the template with sidekey added. `sidekey inject` and `sidekey webhook` both call it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PodSpec, PodTemplateSpec};

use super::app_env;
use super::pieces::{self, Parts};
use super::{
    ANNOTATION_CA_SECRET, ANNOTATION_CONFIG, ANNOTATION_IMAGE, ANNOTATION_INJECT, ANNOTATION_NATIVE,
};

/// What a template gets when its annotations say nothing else.
#[derive(Debug, Clone)]
pub struct Defaults {
    /// The sidekey image. Default is `sidekey:` plus this build's version.
    pub image: String,
    /// ConfigMap with `proxy.toml`. Default is `sidekey-config`.
    pub config_map: String,
    /// Secret with `ca.crt` and `ca.key`; `None` for a config without `[tls]`. Default is `sidekey-ca`.
    pub ca_secret: Option<String>,
    /// Inject only templates annotated `sidekey.io/inject: "true"` (the webhook). Default is false:
    /// every template but those annotated `"false"` (`sidekey inject`, which a user points at files).
    pub require_opt_in: bool,
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            image: concat!("sidekey:", env!("CARGO_PKG_VERSION")).to_owned(),
            config_map: "sidekey-config".to_owned(),
            ca_secret: Some("sidekey-ca".to_owned()),
            require_opt_in: false,
        }
    }
}

/// The result of [`inject`].
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Injected(Box<PodTemplateSpec>),
    Skipped(Skipped),
}

/// Why a template was left as it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skipped {
    /// Annotated `sidekey.io/inject: "false"`, or (webhook) not annotated `"true"`.
    NotRequested,
    /// sidekey is already in it, and every app container points at it: injecting twice changes
    /// nothing.
    AlreadyInjected,
    /// A pod template without a spec or without containers: nothing to point at sidekey.
    NoContainers,
    /// `hostNetwork: true`: the pod's loopback is the node's, so sidekey's port would be too.
    HostNetwork,
}

/// Adds sidekey to `template`. Never touches the pod's or a container's `securityContext`, nor any
/// app field other than the proxy and CA variables and the trust mount (SPEC "Kubernetes").
pub fn inject(template: &PodTemplateSpec, defaults: &Defaults) -> Outcome {
    let empty = BTreeMap::new();
    let annotations = template
        .metadata
        .as_ref()
        .and_then(|m| m.annotations.as_ref())
        .unwrap_or(&empty);
    let get = |key: &str| annotations.get(key).map(|v| v.trim());
    let requested = match get(ANNOTATION_INJECT) {
        Some(v) if v.eq_ignore_ascii_case("false") => false,
        Some(v) if v.eq_ignore_ascii_case("true") => true,
        _ => !defaults.require_opt_in,
    };
    if !requested {
        return Outcome::Skipped(Skipped::NotRequested);
    }
    let Some(spec) = template.spec.as_ref().filter(|s| !s.containers.is_empty()) else {
        return Outcome::Skipped(Skipped::NoContainers);
    };
    if spec.host_network == Some(true) {
        // sidekey's 127.0.0.1:3128 would be the node's, shared by every such pod on it.
        return Outcome::Skipped(Skipped::HostNetwork);
    }
    if already_injected(spec) {
        return rewire(template);
    }
    let ca_secret = match get(ANNOTATION_CA_SECRET) {
        Some(v) if v.is_empty() || v.eq_ignore_ascii_case("none") => None,
        Some(v) => Some(v),
        None => defaults.ca_secret.as_deref(),
    };
    let parts = Parts {
        image: get(ANNOTATION_IMAGE).unwrap_or(&defaults.image),
        config_map: get(ANNOTATION_CONFIG).unwrap_or(&defaults.config_map),
        ca_secret,
        native: !get(ANNOTATION_NATIVE).is_some_and(|v| v.eq_ignore_ascii_case("false")),
        upstream_proxy: app_env::upstream_proxy(&spec.containers),
    };
    let mut out = template.clone();
    let spec = out.spec.get_or_insert_with(PodSpec::default);
    let tls = parts.ca_secret.is_some();
    for container in &mut spec.containers {
        app_env::wire(container, tls);
    }
    let mut ours = Vec::new();
    if tls {
        ours.push(pieces::bundle_step(parts.image));
    }
    if parts.native {
        ours.push(pieces::sidekey(&parts));
        let init = spec.init_containers.get_or_insert_with(Vec::new);
        // Before the app's own init containers, which may already call out through the proxy.
        init.splice(0..0, ours);
    } else {
        // Classic sidecar: first of the regular containers, so it starts first; kubelet does not
        // wait for it, and every container gets SIGTERM at once (the config's shutdown_delay).
        spec.containers.insert(0, pieces::sidekey(&parts));
        if !ours.is_empty() {
            spec.init_containers
                .get_or_insert_with(Vec::new)
                .splice(0..0, ours);
        }
    }
    let volumes = spec.volumes.get_or_insert_with(Vec::new);
    for volume in pieces::volumes(&parts) {
        if !volumes.iter().any(|v| v.name == volume.name) {
            volumes.push(volume);
        }
    }
    let meta = out.metadata.get_or_insert_with(Default::default);
    let annotations = meta.annotations.get_or_insert_with(BTreeMap::new);
    for (key, value) in [
        ("prometheus.io/scrape", "true"),
        ("prometheus.io/port", "9901"),
        ("prometheus.io/path", "/metrics"),
    ] {
        annotations
            .entry(key.to_owned())
            .or_insert_with(|| value.to_owned());
    }
    Outcome::Injected(Box::new(out))
}

/// sidekey's container is there already (native or classic).
fn already_injected(spec: &PodSpec) -> bool {
    let named = |c: &k8s_openapi::api::core::v1::Container| c.name == pieces::SIDEKEY;
    spec.containers.iter().any(named) || spec.init_containers.iter().flatten().any(named)
}

/// An injected template again: only app containers added since (by another admission webhook,
/// which is why the webhook asks to be reinvoked) are pointed at sidekey; the rest is unchanged.
fn rewire(template: &PodTemplateSpec) -> Outcome {
    let mut out = template.clone();
    if let Some(spec) = out.spec.as_mut() {
        let tls = spec
            .volumes
            .iter()
            .flatten()
            .any(|v| v.name == pieces::TRUST_VOLUME);
        let apps = spec
            .containers
            .iter_mut()
            .filter(|c| c.name != pieces::SIDEKEY);
        for container in apps {
            app_env::wire(container, tls);
        }
    }
    if out == *template {
        return Outcome::Skipped(Skipped::AlreadyInjected);
    }
    Outcome::Injected(Box::new(out))
}

#[cfg(test)]
#[path = "inject_tests.rs"]
mod tests;

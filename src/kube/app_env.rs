//! What every app container gets: the proxy variables (an existing `NO_PROXY` extended, an existing
//! `HTTP(S)_PROXY` handed to sidekey as its parent proxy), the CA-bundle variables and the trust mount.

use k8s_openapi::api::core::v1::{Container, EnvVar, VolumeMount};

use super::pieces::{BUNDLE_PATH, PROXY_URL, TRUST_DIR, TRUST_VOLUME};

/// Proxy variable names, upper and lower case: curl reads only the lowercase `http_proxy`, wget only
/// lowercase names, most other clients the uppercase ones.
const PROXY_VARS: [&str; 4] = ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"];
const NO_PROXY_VARS: [&str; 2] = ["NO_PROXY", "no_proxy"];
/// Read by OpenSSL, Python requests, Node and curl respectively.
const CA_VARS: [&str; 4] = [
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
    "CURL_CA_BUNDLE",
];
/// In-cluster traffic goes direct. `$(KUBERNETES_SERVICE_HOST)` is the API server's ClusterIP:
/// kubelet expands service variables in env values.
const NO_PROXY_ENTRIES: [&str; 8] = [
    "localhost",
    "127.0.0.1",
    "::1",
    ".svc",
    ".svc.cluster.local",
    ".cluster.local",
    "kubernetes.default.svc",
    "$(KUBERNETES_SERVICE_HOST)",
];

/// The app's own parent proxy, if any container names one, as sidekey's `SIDEKEY_UPSTREAM_PROXY`:
/// sidekey forwards through it instead. HTTPS first: that is where a corporate proxy matters most.
/// A value from a Secret or ConfigMap (`valueFrom`) is passed on as such.
pub(super) fn upstream_proxy(containers: &[Container]) -> Option<EnvVar> {
    PROXY_VARS.iter().find_map(|name| {
        containers.iter().find_map(|c| {
            let var = c.env.as_ref()?.iter().find(|e| e.name == *name)?;
            let usable = match (&var.value, &var.value_from) {
                (Some(v), _) => !v.is_empty() && v != PROXY_URL,
                (None, from) => from.is_some(),
            };
            usable.then(|| EnvVar {
                name: "SIDEKEY_UPSTREAM_PROXY".to_owned(),
                ..var.clone()
            })
        })
    })
}

/// Points one app container at sidekey. Only the named variables and the trust mount change; every
/// other field of the container stays as the app wrote it.
pub(super) fn wire(container: &mut Container, tls: bool) {
    let env = container.env.get_or_insert_with(Vec::new);
    for name in PROXY_VARS {
        set(env, name, PROXY_URL.to_owned());
    }
    let no_proxy = merged_no_proxy(env);
    for name in NO_PROXY_VARS {
        set(env, name, no_proxy.clone());
    }
    if !tls {
        return;
    }
    for name in CA_VARS {
        set(env, name, BUNDLE_PATH.to_owned());
    }
    let mounts = container.volume_mounts.get_or_insert_with(Vec::new);
    if !mounts.iter().any(|m| m.name == TRUST_VOLUME) {
        mounts.push(VolumeMount {
            name: TRUST_VOLUME.to_owned(),
            mount_path: TRUST_DIR.to_owned(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }
}

/// The app's own `NO_PROXY` and `no_proxy` entries (e.g. `.corp.example`), then sidekey's, each once.
fn merged_no_proxy(env: &[EnvVar]) -> String {
    let mut entries: Vec<String> = Vec::new();
    let own = NO_PROXY_VARS
        .iter()
        .filter_map(|name| env.iter().find(|e| e.name == *name)?.value.clone());
    for value in own {
        for entry in value.split(',').map(str::trim) {
            push_once(&mut entries, entry);
        }
    }
    for entry in NO_PROXY_ENTRIES {
        push_once(&mut entries, entry);
    }
    entries.join(",")
}

fn push_once(entries: &mut Vec<String>, entry: &str) {
    if !entry.is_empty() && !entries.iter().any(|e| e == entry) {
        entries.push(entry.to_owned());
    }
}

/// Overwrites the variable in place (its position matters for `$(VAR)` references), else appends it.
fn set(env: &mut Vec<EnvVar>, name: &str, value: String) {
    let var = EnvVar {
        name: name.to_owned(),
        value: Some(value),
        value_from: None,
    };
    match env.iter_mut().find(|e| e.name == name) {
        Some(existing) => *existing = var,
        None => env.push(var),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn var(name: &str, value: &str) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: Some(value.into()),
            value_from: None,
        }
    }

    #[test]
    fn no_proxy_keeps_the_apps_entries_first() {
        let env = vec![var("NO_PROXY", "internal.example, .corp.example,localhost")];
        let merged = merged_no_proxy(&env);
        assert!(merged.starts_with("internal.example,.corp.example,localhost,127.0.0.1"));
        assert_eq!(merged.matches("localhost").count(), 1);
    }

    #[test]
    fn the_apps_proxy_becomes_sidekeys_and_sidekeys_own_is_not_a_parent() {
        let mut c = Container {
            env: Some(vec![var("HTTPS_PROXY", "http://proxy.corp:3128")]),
            ..Container::default()
        };
        let parent = upstream_proxy(std::slice::from_ref(&c));
        assert_eq!(
            parent.and_then(|e| e.value).as_deref(),
            Some("http://proxy.corp:3128")
        );
        wire(&mut c, false);
        assert!(upstream_proxy(std::slice::from_ref(&c)).is_none());
    }
}

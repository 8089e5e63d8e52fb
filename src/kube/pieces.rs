//! sidekey's own parts of an injected pod: the CA-bundle init step, the sidekey container and their
//! volumes. They match `deploy/kubernetes/sidecar`; secrets mount only into these containers.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    HTTPGetAction, KeyToPath, Probe, ResourceRequirements, SeccompProfile, SecretVolumeSource,
    SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

pub(super) const SIDEKEY: &str = "sidekey";
pub(super) const BUNDLE_STEP: &str = "sidekey-ca-bundle";
pub(super) const PROXY_URL: &str = "http://127.0.0.1:3128";
pub(super) const TRUST_VOLUME: &str = "sidekey-trust";
pub(super) const TRUST_DIR: &str = "/etc/sidekey/trust";
pub(super) const BUNDLE_PATH: &str = "/etc/sidekey/trust/ca-bundle.pem";
const CONFIG_VOLUME: &str = "sidekey-config";
const CA_VOLUME: &str = "sidekey-ca";
/// Only `ca.crt` of the CA Secret: the bundle step never sees the key.
const CA_CERT_VOLUME: &str = "sidekey-ca-cert";
/// The distroless `nonroot` user the image runs as.
const UID: i64 = 65532;

/// What the injected parts are built from (annotations over [`super::Defaults`]).
pub(super) struct Parts<'a> {
    pub image: &'a str,
    pub config_map: &'a str,
    pub ca_secret: Option<&'a str>,
    pub native: bool,
    pub upstream_proxy: Option<EnvVar>,
}

/// sidekey itself. Native: an init container with `restartPolicy: Always` (Kubernetes 1.29+), which
/// kubelet starts before the app (once the startup probe passes) and stops after it.
pub(super) fn sidekey(parts: &Parts) -> Container {
    let mut env = vec![EnvVar {
        name: "RUST_LOG".into(),
        value: Some("info".into()),
        value_from: None,
    }];
    // The app's parent proxy, which `[proxy] upstream_proxy` would otherwise have to repeat.
    env.extend(parts.upstream_proxy.clone());
    // A directory mount, not subPath: kubelet swaps the ..data symlink on ConfigMap edits and
    // sidekey reloads; subPath never updates.
    let mut mounts = vec![mount(CONFIG_VOLUME, "/etc/sidekey")];
    if parts.ca_secret.is_some() {
        mounts.push(mount(CA_VOLUME, "/etc/sidekey/ca"));
    }
    Container {
        name: SIDEKEY.into(),
        image: Some(parts.image.into()),
        restart_policy: parts.native.then(|| "Always".into()),
        args: Some(strings(&[
            "run",
            "--config",
            "/etc/sidekey/proxy.toml",
            "--log-format",
            "json",
        ])),
        env: Some(env),
        // The admin listener (`admin = "0.0.0.0:9901"`): probes and Prometheus come from outside.
        ports: Some(vec![ContainerPort {
            name: Some("admin".into()),
            container_port: 9901,
            ..ContainerPort::default()
        }]),
        startup_probe: Some(probe("/readyz", 1, Some(30))),
        readiness_probe: Some(probe("/readyz", 5, None)),
        liveness_probe: Some(probe("/healthz", 10, None)),
        resources: Some(resources()),
        security_context: Some(security_context()),
        volume_mounts: Some(mounts),
        ..Container::default()
    }
}

/// Writes the system roots plus sidekey's CA certificate for the app. `--ca-cert`: it needs neither
/// the config nor any secret but the certificate.
pub(super) fn bundle_step(image: &str) -> Container {
    Container {
        name: BUNDLE_STEP.into(),
        image: Some(image.into()),
        args: Some(strings(&[
            "ca",
            "bundle",
            "--out",
            BUNDLE_PATH,
            "--ca-cert",
            "/etc/sidekey/ca/ca.crt",
            "--log-format",
            "json",
        ])),
        resources: Some(resources()),
        security_context: Some(security_context()),
        volume_mounts: Some(vec![
            mount(CA_CERT_VOLUME, "/etc/sidekey/ca"),
            VolumeMount {
                name: TRUST_VOLUME.into(),
                mount_path: TRUST_DIR.into(),
                ..VolumeMount::default()
            },
        ]),
        ..Container::default()
    }
}

/// The volumes the parts above mount.
pub(super) fn volumes(parts: &Parts) -> Vec<Volume> {
    let mut volumes = vec![Volume {
        name: CONFIG_VOLUME.into(),
        config_map: Some(ConfigMapVolumeSource {
            name: parts.config_map.into(),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    }];
    let Some(secret) = parts.ca_secret else {
        return volumes;
    };
    // 0444: without a pod-level fsGroup the files are root's; only sidekey's containers mount them.
    let secret_volume = |name: &str, items: Option<Vec<KeyToPath>>| Volume {
        name: name.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.into()),
            default_mode: Some(0o444),
            items,
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    };
    volumes.push(secret_volume(CA_VOLUME, None));
    volumes.push(secret_volume(
        CA_CERT_VOLUME,
        Some(vec![KeyToPath {
            key: "ca.crt".into(),
            path: "ca.crt".into(),
            mode: None,
        }]),
    ));
    volumes.push(Volume {
        name: TRUST_VOLUME.into(),
        empty_dir: Some(EmptyDirVolumeSource {
            size_limit: Some(Quantity("1Mi".into())),
            medium: None,
        }),
        ..Volume::default()
    });
    volumes
}

fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: Some(true),
        ..VolumeMount::default()
    }
}

fn probe(path: &str, period: i32, failure_threshold: Option<i32>) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("admin".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold,
        ..Probe::default()
    }
}

/// 64 MiB holds sidekey's ~15 MiB baseline plus 2,000 idle connections at 19.8 KiB each: the
/// shipped configs set `max_connections = 2000` (raise both together).
fn resources() -> ResourceRequirements {
    let q = |s: &str| Quantity(s.into());
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".into(), q("10m")),
            ("memory".into(), q("16Mi")),
        ])),
        limits: Some(BTreeMap::from([("memory".into(), q("64Mi"))])),
        ..ResourceRequirements::default()
    }
}

/// sidekey's containers set their own user, so the pod's `securityContext` stays the app's.
fn security_context() -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(UID),
        run_as_group: Some(UID),
        read_only_root_filesystem: Some(true),
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: None,
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            localhost_profile: None,
        }),
        ..SecurityContext::default()
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

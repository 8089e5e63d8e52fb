//! Kubernetes packaging (SPEC "Kubernetes"): one injection, used by `sidekey inject` on manifests and by
//! `sidekey webhook` on pods at admission, so both add exactly the same sidecar.

mod app_env;
mod emit;
pub mod inject;
pub mod manifest;
mod pieces;
mod raw;
pub mod review;
pub mod webhook;

pub use inject::{inject, Defaults, Outcome, Skipped};

/// `"true"` / `"false"`: the webhook injects only `"true"`; `inject` skips only `"false"`.
pub const ANNOTATION_INJECT: &str = "sidekey.io/inject";
/// ConfigMap holding `proxy.toml`. Default is `sidekey-config`.
pub const ANNOTATION_CONFIG: &str = "sidekey.io/config";
/// Secret holding `ca.crt` and `ca.key`; `""` or `"none"` for a config without `[tls]`. Default is `sidekey-ca`.
pub const ANNOTATION_CA_SECRET: &str = "sidekey.io/ca-secret";
/// The sidekey image. Default is [`Defaults::image`].
pub const ANNOTATION_IMAGE: &str = "sidekey.io/image";
/// `"false"`: a classic sidecar container (clusters before 1.29). Default is `"true"`.
pub const ANNOTATION_NATIVE: &str = "sidekey.io/native";

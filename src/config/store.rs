//! Config stage 2 for `[store]`: the backend and its keys, and the rule
//! that a shared (redis) store holds only sealed tokens unless the
//! operator says otherwise.

use std::path::Path;
use std::time::Duration;

use toml::Spanned;

use super::diag::{resolve_path, Errors};
use super::model::{StoreBackend, StoreSettings};
use super::raw::RawStore;
use crate::template::{Context, Template};

pub(super) fn store(
    raw: Option<Spanned<RawStore>>,
    base: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    errs: &mut Errors,
) -> StoreSettings {
    let Some(raw) = raw else {
        return StoreSettings {
            key_prefix: "sidekey:".into(),
            timeout: Duration::from_millis(50),
            ..StoreSettings::default()
        };
    };
    let span = raw.span();
    let raw = raw.into_inner();
    let mut template = |f: &Option<Spanned<String>>, key: &str| -> Option<Template> {
        let f = f.as_ref()?;
        match Template::parse(f.get_ref(), Context::ClientField, env) {
            Ok(t) => {
                // Opened now, as client secrets are: a store secret the
                // sidekey user cannot read fails `check`, not the pod.
                for p in t.files() {
                    if let Err(e) = std::fs::File::open(p) {
                        errs.at(
                            f.span(),
                            format!("store.{key}: cannot read {}: {e}", p.display()),
                        );
                    }
                }
                Some(t)
            }
            Err(e) => {
                errs.at(f.span(), format!("store.{key}: {e}"));
                None
            }
        }
    };
    let username = template(&raw.username, "username");
    let password = template(&raw.password, "password");
    let encryption_key = template(&raw.encryption_key, "encryption_key");
    let kind = raw
        .backend
        .as_ref()
        .map_or("memory", |b| b.get_ref().as_str());
    let only = |key: &str, set: bool, errs: &mut Errors| {
        if set {
            errs.at(
                span.clone(),
                format!("store.{key} is not used by backend {kind:?}"),
            );
        }
    };
    let backend = match kind {
        "memory" => {
            only("path", raw.path.is_some(), errs);
            only("url", raw.url.is_some(), errs);
            StoreBackend::Memory
        }
        "file" => {
            only("url", raw.url.is_some(), errs);
            match &raw.path {
                Some(p) => StoreBackend::File(resolve_path(base, p.get_ref())),
                None => {
                    errs.at(span.clone(), "store.path is required for backend \"file\"");
                    StoreBackend::Memory
                }
            }
        }
        "redis" => {
            only("path", raw.path.is_some(), errs);
            let url = raw.url.as_ref().map(|u| (u.get_ref().clone(), u.span()));
            match url {
                Some((u, _)) if u.starts_with("redis://") || u.starts_with("rediss://") => {
                    if encryption_key.is_none() && !raw.allow_plaintext {
                        errs.at(
                            span.clone(),
                            "store: a redis store holds tokens every replica can read: set encryption_key (32 bytes, base64), or allow_plaintext = true to store them unencrypted",
                        );
                    }
                    StoreBackend::Redis {
                        url: u,
                        username,
                        password,
                    }
                }
                Some((_, span)) => {
                    errs.at(span, "store.url must start with redis:// or rediss://");
                    StoreBackend::Memory
                }
                None => {
                    errs.at(span.clone(), "store.url is required for backend \"redis\"");
                    StoreBackend::Memory
                }
            }
        }
        other => {
            let at = raw.backend.as_ref().map_or(span.clone(), Spanned::span);
            errs.at(
                at,
                format!("store.backend {other:?} must be \"memory\", \"file\" or \"redis\""),
            );
            StoreBackend::Memory
        }
    };
    // The key is checked now, whether written in or read from a file.
    if let Some(k) = encryption_key
        .as_ref()
        .and_then(|t| t.render_value(&|_| None).ok())
    {
        if let Err(e) = crate::seal::Seal::new(k.expose()) {
            errs.at(
                span,
                format!("{e} (make one with `openssl rand -base64 32`)"),
            );
        }
    }
    StoreSettings {
        backend,
        key_prefix: raw
            .key_prefix
            .map_or_else(|| "sidekey:".into(), Spanned::into_inner),
        encryption_key,
        timeout: raw.timeout.unwrap_or(Duration::from_millis(50)),
    }
}

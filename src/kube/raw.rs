//! The raw side of a rewrite, shared by `inject` and the webhook: YAML read as Kubernetes reads it
//! before it becomes typed, and the typed result merged back over the raw object so that what the
//! types do not know survives.

use serde_norway::{Mapping, Value};

/// Writes the injected template over the original, key by key, so fields the typed template does not
/// know (a newer API's) survive. Lists of uniquely named entries (containers, volumes) merge by
/// name, in the injected order; other lists, and `env` (the injection may drop a `valueFrom`), are
/// taken whole.
pub(super) fn merge_into(slot: &mut Value, new: Value, key: Option<&str>) {
    match (slot, new) {
        (Value::Mapping(old), Value::Mapping(new)) => {
            for (k, value) in new {
                let name = k.as_str().map(str::to_owned);
                match old.get_mut(&k) {
                    Some(existing) => merge_into(existing, value, name.as_deref()),
                    None => {
                        old.insert(k, value);
                    }
                }
            }
        }
        (Value::Sequence(old), Value::Sequence(new))
            if key != Some("env") && names_unique(old) && names_unique(&new) =>
        {
            let name_of = |v: &Value| v.get("name").and_then(Value::as_str).map(str::to_owned);
            let merged = new
                .into_iter()
                .map(|item| {
                    let same = name_of(&item)
                        .and_then(|n| old.iter().find(|o| name_of(o).as_deref() == Some(&n)));
                    match same {
                        Some(o) => {
                            let mut o = o.clone();
                            merge_into(&mut o, item, None);
                            o
                        }
                        None => item,
                    }
                })
                .collect();
            *old = merged;
        }
        (slot, new) => *slot = new,
    }
}

/// Whether every entry has a name no other entry has: one volume mounted at two paths (two
/// `volumeMounts` with the same name) must not merge into one.
fn names_unique(items: &[Value]) -> bool {
    let mut seen = std::collections::HashSet::new();
    items.iter().all(|v| {
        v.get("name")
            .and_then(Value::as_str)
            .is_some_and(|n| seen.insert(n.to_owned()))
    })
}

/// Kubernetes reads manifests as YAML 1.1, serde_norway as 1.2: there `0440` is a string, not octal,
/// and `cpu: 1` a number where the typed Quantity wants a string. Only these two shapes differ in
/// pod templates.
pub(super) fn yaml11_compat(value: &mut Value, key: Option<&str>) {
    match value {
        Value::Mapping(map) => compat_mapping(map, key),
        Value::Sequence(items) => items.iter_mut().for_each(|v| yaml11_compat(v, None)),
        Value::String(s) if matches!(key, Some("defaultMode" | "mode")) => {
            let octal = s.len() > 1 && s.starts_with('0') && s.bytes().all(|b| b.is_ascii_digit());
            if let Some(n) = octal.then(|| i64::from_str_radix(s, 8).ok()).flatten() {
                *value = Value::Number(n.into());
            }
        }
        Value::Number(n) if matches!(key, Some("sizeLimit")) => {
            *value = Value::String(n.to_string())
        }
        _ => {}
    }
}

fn compat_mapping(map: &mut Mapping, parent: Option<&str>) {
    let quantities = matches!(parent, Some("limits" | "requests" | "overhead"));
    for (k, v) in map.iter_mut() {
        let key = k.as_str();
        match v {
            Value::Number(n) if quantities => *v = Value::String(n.to_string()),
            _ => yaml11_compat(v, key),
        }
    }
}

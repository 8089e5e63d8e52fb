//! The `template` target: the template parser and its header, client-field
//! and body renderers, checked against SPEC "Templates".

use super::{finding, fuzz_env, Finding};
use crate::secret::Secret;
use crate::template::{BodyFormat, Context, Template, TokenView};

/// A token for header templates: the values come from the fuzz input.
struct FuzzToken {
    access: String,
    kind: String,
    id: Option<String>,
    claims: serde_json::Value,
}

impl TokenView for FuzzToken {
    fn access_token(&self) -> &str {
        &self.access
    }
    fn token_type(&self) -> &str {
        &self.kind
    }
    fn id_token(&self) -> Option<&str> {
        self.id.as_deref()
    }
    fn claim(&self, path: &[String]) -> Option<String> {
        crate::template::claim_at(&self.claims, path)
    }
}

/// Parses `src` in the context chosen by `selector` and renders it.
/// Header templates render with a token made of `values`; body templates
/// are checked against SPEC "Templates": a JSON body that is valid with
/// plain values stays valid whatever the values hold (quotes, backslashes,
/// newlines), and a form body keeps its fields however many `&` and `=`
/// the values hold.
pub fn template(selector: u8, src: &str, values: &[String]) -> Result<(), Finding> {
    let value = |i: usize| values.get(i).cloned().unwrap_or_default();
    let env = |name: &str| match name {
        "V0" => Some(value(0)),
        "V1" => Some(value(1)),
        other => fuzz_env(other),
    };
    let ctx = match selector % 3 {
        0 => Context::Header,
        1 => Context::ClientField,
        _ => Context::Body,
    };
    let Ok(t) = Template::parse(src, ctx, &env) else {
        return Ok(());
    };
    if !src.contains("<<") && t.as_literal() != Some(src) {
        return finding(
            "template_literal_changed",
            format!("{src:?} parsed as {:?}", t.as_literal()),
        );
    }
    match ctx {
        Context::Header => {
            let token = FuzzToken {
                access: value(0),
                kind: value(1),
                id: values.get(2).cloned(),
                claims: serde_json::from_str(&value(3)).unwrap_or_default(),
            };
            let with = t.render_header(Some(&token));
            let without = t.render_header(None);
            if let (Some(lit), Ok(out)) = (t.as_literal(), &without) {
                if lit != out {
                    return finding("template_literal_render", format!("{src:?}"));
                }
            }
            if without.is_ok() && with.is_err() {
                return finding(
                    "template_token_breaks_render",
                    format!("{src:?} renders without a token, not with one"),
                );
            }
            Ok(())
        }
        Context::ClientField => {
            if t.files().next().is_none() {
                let _ = t.render_value(&|_| None);
            }
            Ok(())
        }
        Context::Body => {
            if t.files().next().is_some() {
                return Ok(());
            }
            let pick = |name: &str| {
                let i = crate::template::CLIENT_FIELDS
                    .iter()
                    .position(|f| *f == name)
                    .unwrap_or(0);
                value(i % values.len().max(1))
            };
            let fuzzed = |name: &str| Some(Secret::new(pick(name)));
            // The same shape with harmless values (empty where the real
            // one is empty, so a form field that vanishes vanishes in both).
            let plain =
                |name: &str| Some(Secret::new(if pick(name).is_empty() { "" } else { "x" }));
            let format = if selector & 0x80 == 0 {
                BodyFormat::Json
            } else {
                BodyFormat::Form
            };
            let (Ok(skeleton), Ok(real)) = (
                t.render_body(&plain, format),
                t.render_body(&fuzzed, format),
            ) else {
                return Ok(());
            };
            // `<<env.*>>` values are fixed at parse time; the skeleton has
            // them too, so only `<<client.*>>` values differ.
            match format {
                BodyFormat::Json => {
                    let ok =
                        |s: &Secret| serde_json::from_str::<serde_json::Value>(s.expose()).is_ok();
                    if ok(&skeleton) && !ok(&real) {
                        return finding(
                            "template_json_body_broken",
                            format!("{src:?} with values {values:?} gives {:?}", real.expose()),
                        );
                    }
                }
                BodyFormat::Form => {
                    let fields =
                        |s: &Secret| url::form_urlencoded::parse(s.expose().as_bytes()).count();
                    if fields(&skeleton) != fields(&real) {
                        return finding(
                            "template_form_body_split",
                            format!("{src:?} with values {values:?} gives {:?}", real.expose()),
                        );
                    }
                }
            }
            Ok(())
        }
    }
}

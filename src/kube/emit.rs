//! Writes a rewritten manifest as block YAML that reads the same in YAML 1.1 (Kubernetes, kubectl)
//! and 1.2. serde_norway writes `yes`, `on` or `1_000` as plain strings, which a 1.1 reader takes
//! for a bool or a number; here every string that is not plainly a word or a path is quoted.

use serde_norway::{Mapping, Value};

/// The document as block YAML, ending with a newline.
pub(super) fn document(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Mapping(m) if !m.is_empty() => mapping(m, 0, &mut out),
        Value::Sequence(s) if !s.is_empty() => sequence(s, 0, &mut out),
        other => {
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
    out
}

fn mapping(map: &Mapping, indent: usize, out: &mut String) {
    for (key, value) in map {
        push_indent(out, indent);
        out.push_str(&scalar(key));
        out.push(':');
        match untagged(value) {
            Value::Mapping(m) if !m.is_empty() => {
                out.push('\n');
                mapping(m, indent + 2, out);
            }
            // Kubernetes' own style: a list's dashes at its key's indent.
            Value::Sequence(s) if !s.is_empty() => {
                out.push('\n');
                sequence(s, indent, out);
            }
            other => {
                out.push(' ');
                out.push_str(&scalar(other));
                out.push('\n');
            }
        }
    }
}

fn sequence(items: &[Value], indent: usize, out: &mut String) {
    for item in items {
        match untagged(item) {
            Value::Mapping(m) if !m.is_empty() => {
                // The mapping one level in, its first line's indent turned into the dash.
                let mut inner = String::new();
                mapping(m, indent + 2, &mut inner);
                push_indent(out, indent);
                out.push_str("- ");
                out.push_str(&inner[indent + 2..]);
            }
            Value::Sequence(s) if !s.is_empty() => {
                push_indent(out, indent);
                out.push_str("-\n");
                sequence(s, indent + 2, out);
            }
            other => {
                push_indent(out, indent);
                out.push_str("- ");
                out.push_str(&scalar(other));
                out.push('\n');
            }
        }
    }
}

fn untagged(value: &Value) -> &Value {
    match value {
        // Kubernetes manifests carry no tags; a tagged value is written as its value.
        Value::Tagged(t) => untagged(&t.value),
        other => other,
    }
}

fn scalar(value: &Value) -> String {
    match untagged(value) {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) if plain(s) => s.clone(),
        // A JSON string is a valid YAML double-quoted scalar, escapes included.
        Value::String(s) => serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned()),
        Value::Mapping(_) => "{}".to_owned(),
        Value::Sequence(_) => "[]".to_owned(),
        Value::Tagged(_) => "null".to_owned(),
    }
}

/// A string that no YAML version reads as anything but itself: a letter or `/` first (so never a
/// number, nor 1.1's sexagesimal `1:20`), then only letters, digits and `._/-:` (no `: `, no
/// trailing `:`, as there are no spaces), and not one of YAML 1.1's bool or null words.
fn plain(s: &str) -> bool {
    const WORDS: [&str; 12] = [
        "y", "yes", "n", "no", "true", "false", "on", "off", "null", "nan", "inf", "-",
    ];
    let mut chars = s.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '/');
    first_ok
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | '-' | ':'))
        && !s.ends_with(':')
        && !WORDS.contains(&s.to_ascii_lowercase().as_str())
}

fn push_indent(out: &mut String, indent: usize) {
    out.extend(std::iter::repeat_n(' ', indent));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ambiguous_strings_are_quoted_and_the_document_reads_back_the_same() {
        let text = r#"
labels: { a: "yes", b: "on", c: "0755", d: "1e3", e: "~", f: "null", g: "1_000", h: "N", i: "x: y", j: "1:20", k: "key:" }
image: "registry.example.com/app:1.2"
spec:
  containers:
    - name: app
      args: [run, "--flag", "multi
        line"]
      env: []
      resources: { limits: { memory: 64Mi } }
      ports: [{ containerPort: 9901, name: admin }]
  nested: [[1, 2], []]
  empty: {}
  mode: 288
  enabled: true
  nothing: null
"#;
        let value: Value = serde_norway::from_str(text).unwrap();
        let out = document(&value);
        for quoted in [
            r#""yes""#,
            r#""on""#,
            r#""0755""#,
            r#""1_000""#,
            r#""N""#,
            r#""x: y""#,
            r#""1:20""#,
            r#""key:""#,
        ] {
            assert!(out.contains(quoted), "{quoted} not quoted in:\n{out}");
        }
        assert!(out.contains("- name: app\n"), "{out}");
        assert!(
            out.contains("image: registry.example.com/app:1.2\n"),
            "{out}"
        );
        let back: Value = serde_norway::from_str(&out).unwrap();
        assert_eq!(back, value, "{out}");
    }
}

//! The text of a parse error: where (client, route, dotted key) and what,
//! with serde's list of every field after an unknown key replaced by the
//! likely one.

use toml_edit::Item;

use super::doc::get;
use super::Seg;

/// `client "api": client_secret: invalid type: integer, expected a string`.
pub(super) fn describe(root: &Item, path: &[Seg], message: &str) -> String {
    let message = super::super::hide_value(&unknown_field(message.trim()));
    let (whose, rest) = match path {
        [Seg::Key(c), Seg::Key(name), rest @ ..] if c == "clients" => {
            (format!("client {name:?}"), rest)
        }
        [Seg::Key(r), Seg::Index(i), rest @ ..] if r == "routes" => {
            let name = get(root, &path[..2])
                .and_then(|r| r.as_table_like()?.get("name")?.as_str().map(str::to_string));
            match name {
                Some(name) => (format!("route {name:?}"), rest),
                None => (format!("routes[{i}]"), rest),
            }
        }
        _ => (String::new(), path),
    };
    // An unknown key is named by the message itself.
    let rest = if message.starts_with("unknown field") {
        &rest[..rest.len().saturating_sub(1)]
    } else {
        rest
    };
    let mut key = String::new();
    for seg in rest {
        match seg {
            Seg::Key(k) if key.is_empty() => key.push_str(k),
            Seg::Key(k) => {
                key.push('.');
                key.push_str(k);
            }
            Seg::Index(i) => key.push_str(&format!("[{i}]")),
        }
    }
    match (whose.is_empty(), key.is_empty()) {
        (true, true) => message,
        (true, false) => format!("{key}: {message}"),
        (false, true) => format!("{whose}: {message}"),
        (false, false) => format!("{whose}: {key}: {message}"),
    }
}

/// serde lists every field after an unknown one (forty for a client);
/// name the likely one instead.
fn unknown_field(message: &str) -> String {
    let Some(rest) = message.strip_prefix("unknown field `") else {
        return message.to_string();
    };
    let Some((field, expected)) = rest.split_once('`') else {
        return message.to_string();
    };
    let best = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|cand| (distance(field, cand), cand))
        .filter(|(d, _)| *d <= 2)
        .min();
    match best {
        Some((_, cand)) => format!("unknown field `{field}` (did you mean `{cand}`?)"),
        None => format!("unknown field `{field}`"),
    }
}

/// Levenshtein distance, for "did you mean".
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

//! A token endpoint's own words (`error_description`, a vendor's error
//! message) on their way to logs and error bodies: cut short, and never
//! echoing a secret sidekey sent (SPEC "Egress safety"). They are
//! JSON-escaped where shown, in `FetchError`'s Display.

use crate::token::model::FetchError;

/// How much of a token endpoint's own text (`error_description`) is kept
/// for logs and error bodies (SPEC "Egress safety").
pub(crate) const MAX_IDP_TEXT: usize = 256;

/// The endpoint's text cut to `MAX_IDP_TEXT` characters. It is escaped
/// where it is shown (`FetchError`'s Display), not here.
pub(crate) fn idp_text(s: &str) -> String {
    s.chars().take(MAX_IDP_TEXT).collect()
}

/// Removes from an endpoint's error text what sidekey sent it as a secret
/// (the subject token above all: IdPs like to echo "token eyJ… is
/// expired"). An echo can be cut or quoted, so besides the whole value any
/// run of token characters at least `MIN_ECHO` long that appears in a sent
/// secret is replaced.
pub(crate) fn without_sent(e: FetchError, sent: &[&str]) -> FetchError {
    const MIN_ECHO: usize = 8;
    let FetchError::OAuth {
        status,
        error,
        description: Some(d),
    } = e
    else {
        return e;
    };
    let sent: Vec<&str> = sent
        .iter()
        .copied()
        .filter(|v| v.len() >= MIN_ECHO)
        .collect();
    let mut d = d;
    for v in &sent {
        d = d.replace(v, "[redacted]");
    }
    let is_token_char = |c: char| c.is_ascii_alphanumeric() || "-._~+/=".contains(c);
    let mut out = String::with_capacity(d.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if word.len() >= MIN_ECHO && sent.iter().any(|v| v.contains(word.as_str())) {
            out.push_str("[redacted]");
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in d.chars() {
        if is_token_char(c) {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    FetchError::OAuth {
        status,
        error,
        description: Some(idp_text(&out)),
    }
}

#[cfg(test)]
mod tests {
    use super::super::endpoint::parse_oauth;
    use super::*;

    #[test]
    fn idp_text_is_escaped_cut_and_never_echoes_what_was_sent() {
        let subject = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl";
        let body = serde_json::json!({
            "error": "invalid_grant",
            "error_description": format!(
                "token {subject} revoked\r\nINFO forged line; prefix '{}'", &subject[..30]
            ),
        });
        let e = parse_oauth(400, body.to_string().as_bytes()).unwrap_err();
        let shown = without_sent(e, &[subject, "grant"]).to_string();
        assert!(!shown.contains(&subject[..12]), "{shown}");
        assert!(!shown.contains('\n') && !shown.contains('\r'), "{shown}");
        assert!(shown.contains(r"revoked\r\nINFO forged line"), "{shown}");
        // Short sent values ("grant") are not hunted for in ordinary words.
        assert!(shown.contains("invalid_grant"), "{shown}");

        let long = serde_json::json!({"error": "x", "error_description": "y".repeat(5000)});
        let shown = parse_oauth(400, long.to_string().as_bytes())
            .unwrap_err()
            .to_string();
        assert_eq!(shown.matches('y').count(), MAX_IDP_TEXT, "{shown}");

        let odd = serde_json::json!({"error": "bad\ncode", "error_description": "d"});
        let shown = parse_oauth(400, odd.to_string().as_bytes())
            .unwrap_err()
            .to_string();
        assert!(!shown.contains('\n'), "{shown}");
    }
}

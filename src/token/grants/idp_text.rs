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

/// An echo shorter than this is not hunted for: ordinary words of the
/// error text would match pieces of long secrets by chance.
const MIN_ECHO: usize = 8;

/// Removes from an endpoint's error text (its `error` code as well as its
/// `error_description`: both are shown) what sidekey sent it as a secret
/// (the subject token above all: IdPs like to echo "token eyJ… is
/// expired"). An echo can be cut ("eyJhbGci..."), glued to its field name
/// ("subject_token=eyJ…"), form-encoded or JSON-escaped, so any run of at
/// least `MIN_ECHO` characters that is a piece of a sent secret, in any of
/// those encodings, is replaced, wherever it starts or ends.
pub(crate) fn without_sent(e: FetchError, sent: &[&str]) -> FetchError {
    let FetchError::OAuth {
        status,
        error,
        description,
    } = e
    else {
        return e;
    };
    let forms: Vec<Vec<char>> = sent
        .iter()
        .filter(|v| v.chars().count() >= MIN_ECHO)
        .flat_map(|v| encodings(v))
        .map(|f| f.chars().collect())
        .collect();
    // A registered code is the IdP's word, never an echo, and is what a
    // rejected subject is recognised by: a subject crafted to contain
    // "invalid_grant" must not turn its refusal into an endpoint failure.
    let error = if REGISTERED.contains(&error.as_str()) {
        error
    } else {
        scrub(&error, &forms)
    };
    FetchError::OAuth {
        status,
        error,
        description: description.map(|d| idp_text(&scrub(&d, &forms))),
    }
}

/// OAuth error codes (RFC 6749 §5.2, RFC 8693 §2.2.2, RFC 8628 §3.5).
const REGISTERED: &[&str] = &[
    "invalid_request",
    "invalid_client",
    "invalid_grant",
    "unauthorized_client",
    "unsupported_grant_type",
    "invalid_scope",
    "invalid_target",
    "access_denied",
    "authorization_pending",
    "slow_down",
    "expired_token",
];

/// A secret as it may be echoed: as sent, form-encoded (`+` or `%20` for a
/// space), and JSON-escaped (with `/` escaped or not).
fn encodings(v: &str) -> Vec<String> {
    let form: String = url::form_urlencoded::byte_serialize(v.as_bytes()).collect();
    let pct = form.replace('+', "%20");
    let json = serde_json::to_string(v).unwrap_or_default();
    let json = json.trim_matches('"').to_string();
    let json_slash = json.replace('/', "\\/");
    vec![v.to_string(), form, pct, json, json_slash]
}

/// `text` with every run of `MIN_ECHO` or more characters that also occurs
/// in one of `forms` replaced by "[redacted]". Longest common substrings by
/// dynamic programming: a row per text character, so the cost is
/// text length times secret length (the text is at most a few hundred
/// characters).
fn scrub(text: &str, forms: &[Vec<char>]) -> String {
    let t: Vec<char> = text.chars().collect();
    let mut hidden = vec![false; t.len()];
    for f in forms {
        let mut prev = vec![0usize; f.len() + 1];
        let mut cur = vec![0usize; f.len() + 1];
        for (i, tc) in t.iter().enumerate() {
            for (j, fc) in f.iter().enumerate() {
                cur[j + 1] = if tc == fc { prev[j] + 1 } else { 0 };
                let run = cur[j + 1];
                if run >= MIN_ECHO {
                    hidden[i + 1 - run..=i].iter_mut().for_each(|h| *h = true);
                }
            }
            std::mem::swap(&mut prev, &mut cur);
        }
    }
    let mut out = String::with_capacity(text.len());
    for (i, c) in t.iter().enumerate() {
        if !hidden[i] {
            out.push(*c);
        } else if i == 0 || !hidden[i - 1] {
            out.push_str("[redacted]");
        }
    }
    out
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

#[cfg(test)]
mod echo_tests {
    use super::*;

    fn shown(error: &str, description: &str, sent: &[&str]) -> String {
        let e = FetchError::OAuth {
            status: 400,
            error: error.into(),
            description: Some(idp_text(description)),
        };
        without_sent(e, sent).to_string()
    }

    /// An IdP that cuts its echo with "..." or quotes it as `name=value`
    /// still gives away most of the token: the run around it is not a
    /// piece of the secret, but a piece of the secret is in it.
    #[test]
    fn a_cut_or_prefixed_echo_is_still_redacted() {
        let subject = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlX2xvbmc";
        let piece = &subject[..40];
        for d in [
            format!("token {piece}... is expired"),
            format!("bad request: subject_token={piece}"),
            format!("bad request: subject_token={subject}&grant_type=x"),
            format!("{}subject_token={subject}", "x".repeat(230)),
        ] {
            let out = shown("invalid_grant", &d, &[subject]);
            assert!(!out.contains(&piece[..12]), "{out}");
            assert!(!out.contains(&subject[20..32]), "{out}");
        }
    }

    /// The `error` code is shown too, so an echo there is removed as well.
    #[test]
    fn an_echo_in_the_error_code_is_redacted() {
        let secret = "pw-0123456789abcdef";
        let out = shown(&format!("bad password {secret}"), "d", &[secret]);
        assert!(!out.contains("0123456789"), "{out}");
        // A registered code stays what it is, whatever the subject held.
        let subject = "attacker-invalid_grant-subject";
        let out = shown("invalid_grant", subject, &[subject]);
        assert!(out.contains(": invalid_grant ("), "{out}");
    }

    /// A secret echoed form-encoded or JSON-escaped is the same secret.
    #[test]
    fn an_encoded_echo_is_redacted() {
        let secret = "Sup3r$ecret/Passw0rd!x+y";
        for d in [
            "password=Sup3r%24ecret%2FPassw0rd%21x%2By".to_string(),
            r"password: Sup3r$ecret\/Passw0rd!x+y".to_string(),
        ] {
            let out = shown("invalid_grant", &d, &[secret]);
            assert!(!out.contains("ecret"), "{out}");
            assert!(!out.contains("Passw0rd"), "{out}");
        }
    }
}

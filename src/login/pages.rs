//! The login listener's pages and redirects: small plain HTML, no
//! scripts, every echoed value escaped, and the headers a login page
//! needs (no framing, no referrer, no caching, no sniffing).

use http::{header, HeaderValue, Response, StatusCode};

use crate::body::{self, ProxyBody};

/// A short page: `title` and `text` are escaped here.
pub(super) fn page(status: StatusCode, title: &str, text: &str) -> Response<ProxyBody> {
    let html = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{t}</title></head>\n<body><h1>{t}</h1>\n<p>{x}</p></body></html>\n",
        t = escape(title),
        x = escape(text)
    );
    let mut resp = Response::new(body::full(html));
    *resp.status_mut() = status;
    secure(&mut resp);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    resp
}

/// 400 with a short reason.
pub(super) fn refused(why: &str) -> Response<ProxyBody> {
    page(StatusCode::BAD_REQUEST, "sidekey: login refused", why)
}

/// A 302 to `to`, optionally setting a cookie.
pub(super) fn redirect(to: &str, cookie: Option<String>) -> Response<ProxyBody> {
    let Ok(location) = HeaderValue::from_str(to) else {
        return refused("the redirect target is not a valid URL");
    };
    let mut resp = Response::new(body::empty());
    *resp.status_mut() = StatusCode::FOUND;
    secure(&mut resp);
    let h = resp.headers_mut();
    h.insert(header::LOCATION, location);
    if let Some(c) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        h.insert(header::SET_COOKIE, c);
    }
    resp
}

/// The form of a per-user password client. It posts back to `password`
/// with the login's state; the browser's cookie proves it is the browser
/// that opened the link (the CSRF check).
pub(super) fn password_form(state: &str, client: &str, cookie: String) -> Response<ProxyBody> {
    let html = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Connect {c}</title></head>\n<body><h1>Connect {c}</h1>\n<form method=\"post\" action=\"password\">\n<input type=\"hidden\" name=\"state\" value=\"{s}\">\n<p><label>Username <input name=\"username\" autocomplete=\"username\"></label></p>\n<p><label>Password <input type=\"password\" name=\"password\" autocomplete=\"current-password\"></label></p>\n<p><button type=\"submit\">Connect</button></p>\n</form></body></html>\n",
        c = escape(client),
        s = escape(state)
    );
    let mut resp = Response::new(body::full(html));
    secure(&mut resp);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    if let Ok(c) = HeaderValue::from_str(&cookie) {
        h.insert(header::SET_COOKIE, c);
    }
    resp
}

fn secure(resp: &mut Response<ProxyBody>) {
    let h = resp.headers_mut();
    for (k, v) in [
        (
            "content-security-policy",
            "default-src 'none'; form-action 'self'; frame-ancestors 'none'",
        ),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        ("cache-control", "no-store"),
        ("x-content-type-options", "nosniff"),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
}

/// HTML-escapes text and attribute values.
pub(super) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoed_text_is_escaped_and_headers_set() {
        assert_eq!(
            escape("<script>\"x\"&'y'"),
            "&lt;script&gt;&quot;x&quot;&amp;&#39;y&#39;"
        );
        let r = page(StatusCode::BAD_REQUEST, "t", "<b>");
        assert_eq!(r.headers()["x-frame-options"], "DENY");
        assert_eq!(r.headers()["cache-control"], "no-store");
        assert!(r.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'none'"));
    }
}

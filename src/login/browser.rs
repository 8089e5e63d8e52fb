//! What a login's browser brings and gets: the cookie binding it to its
//! login (HttpOnly, SameSite=Lax, Secure on https, scoped to the login
//! path) and the check of where it may be sent back (`return_to`).

use http::Request;

use crate::config::LoginSettings;

const COOKIE: &str = "sidekey_login";

/// Whether `to` starts with one of the allowed prefixes (compared as
/// parsed URLs, so `https://app.example.com.evil/` is not under
/// `https://app.example.com/`).
pub(super) fn allowed(settings: &LoginSettings, to: &str) -> bool {
    let Ok(to) = url::Url::parse(to) else {
        return false;
    };
    settings.return_to.iter().any(|p| {
        p.scheme() == to.scheme()
            && p.host() == to.host()
            && p.port_or_known_default() == to.port_or_known_default()
            && to.path().starts_with(p.path())
    })
}

fn cookie_path(settings: &LoginSettings) -> String {
    let p = settings.public_url.path().trim_end_matches('/');
    if p.is_empty() {
        "/".into()
    } else {
        p.to_string()
    }
}

pub(super) fn set_cookie(settings: &LoginSettings, value: &str) -> String {
    let secure = if settings.public_url.scheme() == "https" {
        "; Secure"
    } else {
        ""
    };
    format!(
        "{COOKIE}={value}; Path={}; Max-Age={}; HttpOnly; SameSite=Lax{secure}",
        cookie_path(settings),
        settings.link_ttl.as_secs()
    )
}

pub(super) fn clear_cookie(settings: &LoginSettings) -> String {
    format!(
        "{COOKIE}=; Path={}; Max-Age=0; HttpOnly; SameSite=Lax",
        cookie_path(settings)
    )
}

pub(super) fn cookie<B>(req: &Request<B>) -> Option<String> {
    req.headers()
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            c.trim()
                .strip_prefix(&format!("{COOKIE}="))
                .map(str::to_string)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_to_must_be_under_an_allowed_prefix() {
        let s = LoginSettings {
            listen: "127.0.0.1:0".parse().unwrap(),
            public_url: url::Url::parse("https://app.example.com/sidekey").unwrap(),
            return_to: vec![url::Url::parse("https://app.example.com/settings/").unwrap()],
            link_ttl: std::time::Duration::from_secs(60),
        };
        assert!(allowed(&s, "https://app.example.com/settings/crm?ok=1"));
        assert!(!allowed(&s, "https://app.example.com.evil/settings/"));
        assert!(!allowed(&s, "http://app.example.com/settings/"));
        assert!(!allowed(&s, "https://app.example.com/other"));
        assert!(!allowed(&s, "/settings/"));
        let c = set_cookie(&s, "v");
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Lax") && c.contains("Secure"));
        assert!(c.contains("Path=/sidekey"));
    }
}

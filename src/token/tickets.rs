//! Login links and logins in progress: a ticket (128 random bits, bound to
//! a client and a user, single use, valid `link_ttl`) becomes a pending
//! login when a browser opens it; the callback must bring back that
//! login's `state` and the cookie set on that browser. Both maps are
//! bounded, so a flood of 401s cannot grow memory without limit.

use std::collections::HashMap;
use std::sync::Mutex;

use base64::Engine;
use rand::RngCore;
use tokio::time::Instant;

use crate::config::LoginSettings;

/// Outstanding tickets, and logins in progress, each at most this many.
const MAX_OUTSTANDING: usize = 10_000;

/// Who a login link is for.
#[derive(Clone)]
pub struct Ticket {
    pub client: String,
    pub user: String,
    expires: Instant,
}

/// A login a browser started: what the callback needs.
pub struct Pending {
    pub ticket: Ticket,
    pub verifier: String,
    pub return_to: Option<String>,
    cookie: String,
    expires: Instant,
}

/// What `/start` hands the browser.
pub struct Started {
    pub state: String,
    pub verifier: String,
    pub cookie: String,
}

#[derive(Default)]
pub struct Logins {
    settings: Mutex<Option<LoginSettings>>,
    tickets: Mutex<HashMap<String, Ticket>>,
    pending: Mutex<HashMap<String, Pending>>,
}

impl Logins {
    pub fn new() -> Self {
        Self::default()
    }

    /// The `[login]` of the config now serving (`None`: no per-user client).
    pub fn configure(&self, settings: Option<LoginSettings>) {
        *lock(&self.settings) = settings;
    }

    pub fn settings(&self) -> Option<LoginSettings> {
        lock(&self.settings).clone()
    }

    /// A new login link for `user` of `client`; `None` without `[login]`.
    pub fn issue(&self, client: &str, user: &str) -> Option<String> {
        let settings = self.settings()?;
        let t = random();
        let mut tickets = lock(&self.tickets);
        make_room(&mut tickets, |t| t.expires);
        tickets.insert(
            t.clone(),
            Ticket {
                client: client.to_string(),
                user: user.to_string(),
                expires: Instant::now() + settings.link_ttl,
            },
        );
        Some(format!("{}?t={t}", settings.url("/start")))
    }

    /// Takes a ticket: it works once, and only before it expires.
    pub fn redeem(&self, t: &str) -> Option<Ticket> {
        lock(&self.tickets)
            .remove(t)
            .filter(|t| Instant::now() < t.expires)
    }

    /// A browser opened a valid link: a login bound to a fresh cookie.
    pub fn begin(&self, ticket: Ticket, return_to: Option<String>) -> Started {
        let ttl = self
            .settings()
            .map_or(std::time::Duration::from_secs(600), |s| s.link_ttl);
        let started = Started {
            state: random(),
            verifier: format!("{}{}", random(), random()),
            cookie: random(),
        };
        let mut pending = lock(&self.pending);
        make_room(&mut pending, |p| p.expires);
        pending.insert(
            started.state.clone(),
            Pending {
                ticket,
                verifier: started.verifier.clone(),
                return_to,
                cookie: started.cookie.clone(),
                expires: Instant::now() + ttl,
            },
        );
        started
    }

    /// The login `state` names, if `cookie` is the one its browser got.
    /// A wrong or missing cookie leaves the login in place (the real
    /// browser may still come back) and exchanges nothing.
    pub fn finish(&self, state: &str, cookie: Option<&str>) -> Option<Pending> {
        let mut pending = lock(&self.pending);
        let p = pending.get(state)?;
        // Digests compared, so the time taken says nothing about the cookie.
        let digest = |s: &str| ring::digest::digest(&ring::digest::SHA256, s.as_bytes());
        let same = cookie.is_some_and(|c| digest(c).as_ref() == digest(&p.cookie).as_ref());
        if !same || Instant::now() >= p.expires {
            return None;
        }
        pending.remove(state)
    }
}

/// 128 bits from the OS's generator, URL-safe.
fn random() -> String {
    let mut b = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// Drops expired entries; at the bound, also the one closest to expiry.
fn make_room<V>(map: &mut HashMap<String, V>, expires: impl Fn(&V) -> Instant) {
    if map.len() < MAX_OUTSTANDING {
        return;
    }
    let now = Instant::now();
    map.retain(|_, v| expires(v) > now);
    if map.len() >= MAX_OUTSTANDING {
        let oldest = map
            .iter()
            .min_by_key(|(_, v)| expires(v))
            .map(|(k, _)| k.clone());
        if let Some(k) = oldest {
            map.remove(&k);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every write is one insert or remove: a poisoned map is still whole.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logins() -> Logins {
        let l = Logins::new();
        l.configure(Some(LoginSettings {
            listen: "127.0.0.1:0".parse().unwrap(),
            public_url: url::Url::parse("https://app.example.com/sidekey").unwrap(),
            return_to: vec![],
            link_ttl: std::time::Duration::from_secs(60),
        }));
        l
    }

    #[tokio::test]
    async fn a_ticket_works_once_and_a_login_needs_its_cookie() {
        let l = logins();
        let url = l.issue("crm", "alice").unwrap();
        let t = url.split("t=").nth(1).unwrap();
        assert!(url.starts_with("https://app.example.com/sidekey/start?t="));
        assert_eq!(t.len(), 22, "128 bits, base64url");
        let ticket = l.redeem(t).unwrap();
        assert!(l.redeem(t).is_none(), "single use");
        let started = l.begin(ticket, None);
        assert!(l.finish(&started.state, None).is_none());
        assert!(l.finish(&started.state, Some("forged")).is_none());
        assert!(l.finish("other-state", Some(&started.cookie)).is_none());
        let p = l.finish(&started.state, Some(&started.cookie)).unwrap();
        assert_eq!(
            (p.ticket.client.as_str(), p.ticket.user.as_str()),
            ("crm", "alice")
        );
        assert!(l.finish(&started.state, Some(&started.cookie)).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn tickets_expire_after_link_ttl() {
        let l = logins();
        let url = l.issue("crm", "alice").unwrap();
        let t = url.split("t=").nth(1).unwrap().to_string();
        tokio::time::advance(std::time::Duration::from_secs(61)).await;
        assert!(l.redeem(&t).is_none());
    }
}

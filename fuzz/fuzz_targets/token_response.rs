//! Token endpoint answers through the real client and parsers (OAuth,
//! Capillary, custom dotted paths), then `Token::from_response`, checked
//! against SPEC "Tokens". Input: byte 0 picks the parser (and chunked
//! transfer, and the raw `from_response` mode), byte 1 the HTTP status;
//! for custom, a line `token_path|expires_in_path`; the rest is the body.
#![no_main]

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;
use sidekey::fuzz::{Grant, TokenEndpoint};

const STATUSES: [u16; 8] = [200, 200, 201, 400, 401, 500, 503, 302];

thread_local! {
    static ENDPOINT: RefCell<Option<TokenEndpoint>> = const { RefCell::new(None) };
}

fn check(r: Result<(), String>) {
    if let Err(f) = r {
        if !sidekey::fuzz::is_known(&f) {
            panic!("{f}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let [mode, status, rest @ ..] = data else {
        return;
    };
    if mode & 0x40 != 0 {
        // Straight into `Token::from_response`: access token, then an
        // optional `expires_in` and id_token, NUL-separated.
        let text = String::from_utf8_lossy(rest);
        let mut p = text.split('\0');
        let access = p.next().unwrap_or_default();
        let expires_in = p.next().and_then(|e| e.parse().ok());
        let id_token = p.next();
        check(sidekey::fuzz::token_from_response(
            access, expires_in, id_token,
        ));
        return;
    }
    let grant = match mode % 3 {
        0 => Grant::OAuth,
        1 => Grant::Capillary,
        _ => Grant::Custom,
    };
    let chunked = mode & 0x80 != 0;
    let status = STATUSES[usize::from(*status) % STATUSES.len()];
    let (paths, body) = if grant == Grant::Custom {
        let cut = rest.iter().position(|b| *b == b'\n').unwrap_or(rest.len());
        let line = String::from_utf8_lossy(&rest[..cut]).into_owned();
        (line, rest.get(cut + 1..).unwrap_or_default())
    } else {
        (String::new(), rest)
    };
    let (token_path, expires_in_path) = paths.split_once('|').unwrap_or((&paths, ""));
    ENDPOINT.with(|e| {
        let mut e = e.borrow_mut();
        if e.is_none() {
            *e = Some(TokenEndpoint::new().expect("a loopback token endpoint"));
        }
        if let Some(ep) = e.as_mut() {
            let token_path = if token_path.is_empty() {
                "access_token"
            } else {
                token_path
            };
            check(ep.check(grant, token_path, expires_in_path, status, body, chunked));
        }
    });
});

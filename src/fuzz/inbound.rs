//! The `inbound_target` target: request targets, `Proxy-Authorization`
//! and hop-by-hop stripping on the application's side.

use http::{HeaderMap, HeaderName, HeaderValue, Request, Uri};

use super::{finding, Finding};
use crate::inbound;
use crate::secret::Secret;

/// The application's side: request targets (absolute-form and CONNECT),
/// `Proxy-Authorization`, and hop-by-hop stripping, chosen by `mode`.
pub fn inbound(mode: u8, data: &[u8]) -> Result<(), Finding> {
    match mode % 3 {
        0 => targets(data),
        1 => proxy_auth(data),
        _ => hop_by_hop(mode & 0x80 != 0, data),
    }
}

fn targets(data: &[u8]) -> Result<(), Finding> {
    let Ok(uri) = Uri::try_from(data) else {
        return Ok(());
    };
    let shown = inbound::log_authority(&uri);
    if shown.contains('@') {
        return finding("inbound_log_userinfo", format!("{shown:?}"));
    }
    let userinfo = uri.authority().is_some_and(|a| a.as_str().contains('@'));
    for (which, t) in [
        ("target", inbound::target(&uri)),
        ("connect_target", inbound::connect_target(&uri)),
    ] {
        let Ok(t) = t else { continue };
        if userinfo {
            return finding("inbound_userinfo_accepted", format!("{which}({uri})"));
        }
        if t.port == 0 || t.host.is_empty() {
            return finding(
                "inbound_empty_host_or_port",
                format!("{which}({uri}) = {t:?}"),
            );
        }
        if t.host != t.host.to_ascii_lowercase() {
            return finding(
                "inbound_host_not_lowercase",
                format!("{which}({uri}) = {t:?}"),
            );
        }
        if t.host.contains(['@', '/', '[', ']', '?', '#', ' '])
            || t.host.chars().any(char::is_control)
        {
            return finding("inbound_host_charset", format!("{which}({uri}) = {t:?}"));
        }
        // Brackets hold an IPv6 literal (RFC 3986 IP-literal), nothing else.
        let written_host = uri.authority().map(|a| a.host()).unwrap_or_default();
        if written_host.starts_with('[') && t.host.parse::<std::net::Ipv6Addr>().is_err() {
            return finding(
                "inbound_bracketed_not_ipv6",
                format!("{which}({uri}) = {t:?}"),
            );
        }
        // An explicit port is the port; none is the scheme's default.
        let written = uri.authority().map(|a| a.as_str()).unwrap_or_default();
        if let Some(p) = uri.port_u16() {
            if p != t.port {
                return finding(
                    "inbound_port_changed",
                    format!("{which}({written}) = {t:?}"),
                );
            }
        }
        // The authority sidekey connects to names the same host and port.
        let again = format!("http://{}/", t.authority())
            .parse::<Uri>()
            .map_err(|e| {
                format!(
                    "inbound_authority_unparsable: {which}({uri}) -> {}: {e}",
                    t.authority()
                )
            })?;
        match inbound::target(&again) {
            Ok(t2) if t2.host == t.host && t2.port == t.port => {}
            other => {
                return finding(
                    "inbound_authority_roundtrip",
                    format!("{which}({uri}) = {t:?}, re-parsed {other:?}"),
                )
            }
        }
    }
    Ok(())
}

fn proxy_auth(data: &[u8]) -> Result<(), Finding> {
    use base64::Engine;
    let Ok(value) = HeaderValue::from_bytes(data) else {
        return Ok(());
    };
    let Ok(req) = Request::builder()
        .header(http::header::PROXY_AUTHORIZATION, value.clone())
        .body(())
    else {
        return Ok(());
    };
    let want = Secret::new("app:pw");
    let accepted = inbound::check_proxy_auth(Some(&want), &req).is_ok();
    // Accepted only if the header really carries Basic app:pw.
    let carries = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
        .and_then(|(_, b)| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .is_some_and(|d| d == b"app:pw");
    if accepted && !carries {
        return finding("inbound_proxy_auth_accepted", format!("{value:?}"));
    }
    Ok(())
}

fn hop_by_hop(keep_upgrade: bool, data: &[u8]) -> Result<(), Finding> {
    let mut h = HeaderMap::new();
    for line in data.split(|b| *b == b'\n') {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) {
            h.append(k, v);
        }
    }
    let named: Vec<HeaderName> = h
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    let before = h.clone();
    inbound::strip_hop_by_hop(&mut h, keep_upgrade);
    for n in [
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "trailer",
        "transfer-encoding",
    ] {
        if h.contains_key(n) {
            return finding(
                "inbound_hop_by_hop_kept",
                format!("{n} survived {before:?}"),
            );
        }
    }
    if h.get_all(http::header::TE).iter().any(|v| v != "trailers") {
        return finding(
            "inbound_hop_by_hop_kept",
            format!("te {:?} survived", h.get(http::header::TE)),
        );
    }
    for n in &named {
        let allowed = (keep_upgrade
            && (n == http::header::UPGRADE || n == http::header::CONNECTION))
            || (n == http::header::TE);
        if !allowed && h.contains_key(n) {
            return finding(
                "inbound_connection_named_kept",
                format!("{n} survived {before:?}"),
            );
        }
    }
    // Everything else goes on untouched.
    if keep_upgrade {
        if h.get_all(http::header::CONNECTION)
            .iter()
            .any(|v| v != "upgrade")
        {
            return finding(
                "inbound_hop_by_hop_kept",
                format!("connection {:?} survived", h.get(http::header::CONNECTION)),
            );
        }
    } else {
        for n in [http::header::CONNECTION, http::header::UPGRADE] {
            if h.contains_key(&n) {
                return finding(
                    "inbound_hop_by_hop_kept",
                    format!("{n} survived {before:?}"),
                );
            }
        }
    }
    for (k, v) in &before {
        let hop = named.contains(k)
            || [
                "connection",
                "keep-alive",
                "proxy-connection",
                "proxy-authenticate",
                "proxy-authorization",
                "te",
                "trailer",
                "transfer-encoding",
                "upgrade",
            ]
            .contains(&k.as_str());
        if !hop && !h.get_all(k).iter().any(|x| x == v) {
            return finding(
                "inbound_end_to_end_dropped",
                format!("{k}: {v:?} from {before:?}"),
            );
        }
    }
    Ok(())
}

//! Config stage 2 for `[[routes]]`: hosts, matchers and header templates,
//! each error naming the route and header it concerns.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use http::{HeaderName, HeaderValue, Method};

use super::diag::Errors;
use super::model::*;
use super::raw::RawRoute;
use crate::template::{Context, Template};

pub(super) fn route(
    raw: RawRoute,
    clients: &BTreeMap<String, Arc<ClientSettings>>,
    declared: &[String],
    env: &dyn Fn(&str) -> Option<String>,
    errs: &mut Errors,
) -> Option<RouteSettings> {
    let before = errs.0.len();
    let name = raw.name.get_ref().clone();
    let ctx = |what: &str| format!("route {name:?}: {what}");
    if name.is_empty() {
        errs.at(raw.name.span(), "route: name must not be empty");
    }
    let mut hosts = Vec::new();
    if raw.hosts.get_ref().is_empty() {
        errs.at(
            raw.hosts.span(),
            ctx("hosts is empty: list at least one host"),
        );
    }
    for h in raw.hosts.get_ref() {
        match host_pattern(h.get_ref()) {
            Ok(p) => hosts.push(p),
            Err(e) => errs.at(h.span(), ctx(&format!("host {:?}: {e}", h.get_ref()))),
        }
    }
    let path_prefix = raw.path_prefix.and_then(|p| {
        if p.get_ref().starts_with('/') {
            Some(p.into_inner())
        } else {
            errs.at(p.span(), ctx("path_prefix must start with '/'"));
            None
        }
    });
    let mut methods = Vec::new();
    for m in &raw.methods {
        match Method::from_bytes(m.get_ref().to_ascii_uppercase().as_bytes()) {
            Ok(v) => methods.push(v),
            Err(_) => errs.at(
                m.span(),
                ctx(&format!("{:?} is not an HTTP method", m.get_ref())),
            ),
        }
    }
    let mut match_headers = Vec::new();
    for (k, v) in &raw.match_headers {
        match (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v.get_ref()),
        ) {
            (Ok(k), Ok(v)) => match_headers.push((k, v)),
            _ => errs.at(
                v.span(),
                ctx(&format!(
                    "match_headers {k:?}: invalid header name or value"
                )),
            ),
        }
    }
    let client = raw.client.as_ref().and_then(|c| {
        if clients.contains_key(c.get_ref()) {
            Some(c.get_ref().clone())
        } else if declared.contains(c.get_ref()) {
            // The client has errors of its own, reported there; saying it
            // is "not defined" too would only mislead.
            None
        } else {
            let known: Vec<&str> = declared.iter().map(String::as_str).collect();
            errs.at(
                c.span(),
                ctx(&format!(
                    "client {:?} is not defined (defined: {})",
                    c.get_ref(),
                    known.join(", ")
                )),
            );
            None
        }
    });
    let upstream = match raw
        .upstream
        .as_ref()
        .map(|u| (u.get_ref().as_str(), u.span()))
    {
        None | Some(("as-requested", _)) => UpstreamScheme::AsRequested,
        Some(("https", _)) => UpstreamScheme::Https,
        Some((other, span)) => {
            errs.at(
                span,
                ctx(&format!(
                    "upstream {other:?} must be \"https\" or \"as-requested\""
                )),
            );
            UpstreamScheme::AsRequested
        }
    };
    let route_client = client.as_ref().and_then(|c| clients.get(c)).map(|c| &**c);
    let set_headers = header_templates(
        &raw.set_headers,
        raw.client.is_some(),
        route_client,
        env,
        errs,
        &ctx,
    );
    let default_headers = header_templates(
        &raw.default_headers,
        raw.client.is_some(),
        route_client,
        env,
        errs,
        &ctx,
    );
    let mut set_query = Vec::new();
    for (k, v) in &raw.set_query {
        if k.is_empty() {
            errs.at(
                v.span(),
                ctx("set_query: a parameter name must not be empty"),
            );
            continue;
        }
        match Template::parse(v.get_ref(), Context::Header, env) {
            Err(e) => errs.at(v.span(), ctx(&format!("set_query {k:?}: {e}"))),
            Ok(t) if t.uses_oauth() && raw.client.is_none() => errs.at(
                v.span(),
                ctx(&format!(
                    "set_query {k:?}: uses <<oauth.*>> but the route has no client"
                )),
            ),
            Ok(t) if no_id_token(&t, route_client).is_some() => {
                let why = no_id_token(&t, route_client).unwrap_or_default();
                errs.at(v.span(), ctx(&format!("set_query {k:?}: {why}")))
            }
            Ok(t) => set_query.push((k.clone(), t)),
        }
    }
    let mut remove_headers = Vec::new();
    for h in &raw.remove_headers {
        match HeaderName::from_bytes(h.get_ref().as_bytes()) {
            Ok(n) => remove_headers.push(n),
            Err(_) => errs.at(
                h.span(),
                ctx(&format!(
                    "remove_headers {:?}: not a header name",
                    h.get_ref()
                )),
            ),
        }
    }
    if errs.0.len() > before {
        return None;
    }
    Some(RouteSettings {
        name: Arc::from(name),
        hosts,
        path_prefix,
        methods,
        match_headers,
        client,
        upstream,
        set_headers,
        remove_headers,
        set_query,
        retry_on_401: raw.retry_on_401,
        default_headers,
    })
}

/// Why `<<oauth.idToken>>` in `t` could never render with `client`: its
/// kind of grant never reads an id_token from the answer, so every request
/// would be a 503. Standard OAuth grants read `id_token` when the IdP sends
/// one and pass. Claims (`<<oauth.tokenDecoded.*>>`) are not judged here:
/// they fall back to the access token, which may be a JWT whatever the
/// grant (Capillary's are).
fn no_id_token(t: &Template, client: Option<&ClientSettings>) -> Option<String> {
    let c = client.filter(|_| t.uses_id_token())?;
    match &c.grant {
        GrantSettings::Capillary => Some(format!(
            "<<oauth.idToken>> cannot be rendered: client {:?} (grant \"capillary\") never receives an id_token",
            c.name
        )),
        GrantSettings::Custom {
            id_token_path: None,
            ..
        } => Some(format!(
            "<<oauth.idToken>> cannot be rendered: client {:?} (grant \"custom\") has no id_token_path; set it to the dotted path of the id_token in the response",
            c.name
        )),
        _ => None,
    }
}

/// `set_headers` and `default_headers`: each value a template, literal
/// ones turned into header values once, here.
fn header_templates(
    map: &std::collections::BTreeMap<String, toml::Spanned<String>>,
    has_client: bool,
    route_client: Option<&ClientSettings>,
    env: &dyn Fn(&str) -> Option<String>,
    errs: &mut Errors,
    ctx: &dyn Fn(&str) -> String,
) -> Vec<(HeaderName, HeaderTemplate)> {
    let mut set_headers = Vec::new();
    for (k, v) in map {
        let Ok(hname) = HeaderName::from_bytes(k.as_bytes()) else {
            errs.at(
                v.span(),
                ctx(&format!("header {k:?}: not a valid header name")),
            );
            continue;
        };
        match Template::parse(v.get_ref(), Context::Header, env) {
            Err(e) => errs.at(v.span(), ctx(&format!("header {k:?}: {e}"))),
            Ok(t) if t.uses_oauth() && !has_client => errs.at(
                v.span(),
                ctx(&format!(
                    "header {k:?}: uses <<oauth.*>> but the route has no client"
                )),
            ),
            Ok(t) if no_id_token(&t, route_client).is_some() => {
                let why = no_id_token(&t, route_client).unwrap_or_default();
                errs.at(v.span(), ctx(&format!("header {k:?}: {why}")))
            }
            Ok(t) => match t.as_literal().map(HeaderValue::from_str) {
                Some(Ok(mut v)) => {
                    // Header values may be credentials: keep them out of
                    // Debug output and HTTP/2 header compression tables.
                    v.set_sensitive(true);
                    set_headers.push((hname, HeaderTemplate::Static(v)))
                }
                Some(Err(_)) => errs.at(
                    v.span(),
                    ctx(&format!("header {k:?}: not a valid header value")),
                ),
                // The fixed parts of a per-request template (an env value
                // with a CR/LF, say) are checked now, not on every request.
                None if t.literals().any(|l| HeaderValue::from_str(l).is_err()) => errs.at(
                    v.span(),
                    ctx(&format!(
                        "header {k:?}: not a valid header value (control characters such as CR/LF, perhaps from an environment variable)"
                    )),
                ),
                None => set_headers.push((hname, HeaderTemplate::Dynamic(t))),
            },
        }
    }
    set_headers
}

/// `api.example.com`, `*.example.com`, either with `:port`, or an IP literal.
pub(crate) fn host_pattern(s: &str) -> Result<HostPattern, String> {
    let s = s.trim().to_ascii_lowercase();
    let (host, port) = split_host_port(&s)?;
    if host.is_empty() {
        return Err("empty host".into());
    }
    if let Some(suffix) = host.strip_prefix("*.") {
        if suffix.is_empty() || suffix.contains('*') {
            return Err("a wildcard is written \"*.example.com\"".into());
        }
        return Ok(HostPattern::Wildcard {
            suffix: format!(".{suffix}"),
            port,
        });
    }
    if host.contains('*') {
        return Err("'*' is allowed only as the first label (\"*.example.com\")".into());
    }
    let valid = host.parse::<IpAddr>().is_ok()
        || host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_');
    if !valid {
        return Err("not a host name or IP address".into());
    }
    Ok(HostPattern::Exact { host, port })
}

/// Splits `host:port`, `[v6]:port`, `[v6]` and bare IPv6 literals.
fn split_host_port(s: &str) -> Result<(String, Option<u16>), String> {
    if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest.split_once(']').ok_or("unclosed '['")?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().map_err(|_| format!("bad port {p:?}"))?),
            None if after.is_empty() => None,
            None => return Err("unexpected text after ']'".into()),
        };
        return Ok((h.to_string(), port));
    }
    if s.parse::<std::net::Ipv6Addr>().is_ok() {
        return Ok((s.to_string(), None));
    }
    match s.rsplit_once(':') {
        Some((h, p)) => Ok((
            h.to_string(),
            Some(p.parse().map_err(|_| format!("bad port {p:?}"))?),
        )),
        None => Ok((s.to_string(), None)),
    }
}

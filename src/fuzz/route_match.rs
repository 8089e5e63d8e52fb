//! The `route_match` target: `RouteTable::decide` against a plain scan in
//! file order, and the upstream URI naming the request's own host.

use std::path::Path;

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};

use super::{finding, fuzz_env, toml_str, Finding};
use crate::config::{HostPattern, RouteSettings};
use crate::inbound;
use crate::route::{RequestInfo, Route, RouteTable};

/// A route table from fuzzed route lines, and a fuzzed request: the
/// precompiled `RouteTable::decide` must pick what a plain scan in file
/// order picks (SPEC "Routes are tried in file order"), `names_host` must
/// agree with it, and the upstream URI must name the request's own host.
///
/// Input: route lines `hosts|path_prefix|methods|hdr=val;…`, a line `--`,
/// then `host|port|method|path|hdr=val;…`.
pub fn route_match(text: &str) -> Result<(), Finding> {
    let Some((routes_text, request)) = text.split_once("\n--\n") else {
        return Ok(());
    };
    let mut cfg = String::from("[proxy]\nlisten = \"127.0.0.1:0\"\nadmin = \"\"\n");
    for (i, line) in routes_text.lines().take(16).enumerate() {
        let f: Vec<&str> = line.split('|').collect();
        let list = |s: Option<&&str>| {
            s.map(|s| {
                s.split(',')
                    .filter(|x| !x.is_empty())
                    .map(toml_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
        };
        cfg.push_str(&format!(
            "[[routes]]\nname = \"r{i}\"\nhosts = [{}]\n",
            list(f.first())
        ));
        if let Some(p) = f.get(1).filter(|p| !p.is_empty()) {
            cfg.push_str(&format!("path_prefix = {}\n", toml_str(p)));
        }
        if f.get(2).is_some_and(|m| !m.is_empty()) {
            cfg.push_str(&format!("methods = [{}]\n", list(f.get(2))));
        }
        if let Some(h) = f.get(3).filter(|h| !h.is_empty()) {
            let pairs: Vec<String> = h
                .split(';')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| format!("{} = {}", toml_str(k), toml_str(v)))
                .collect();
            cfg.push_str(&format!("match_headers = {{ {} }}\n", pairs.join(", ")));
        }
    }
    let Ok(config) = crate::config::load_str(
        Path::new("/nonexistent-fuzz-dir/proxy.toml"),
        &cfg,
        &fuzz_env,
    ) else {
        return Ok(());
    };
    let settings: Vec<RouteSettings> = config.routes.clone();
    let table = RouteTable::new(
        settings
            .iter()
            .map(|s| Route::new(s.clone(), None))
            .collect(),
    );
    let f: Vec<&str> = request
        .lines()
        .next()
        .unwrap_or_default()
        .split('|')
        .collect();
    let host = f.first().copied().unwrap_or_default();
    let port = f.get(1).copied().unwrap_or_default();
    let Ok(method) = Method::from_bytes(f.get(2).copied().unwrap_or("GET").as_bytes()) else {
        return Ok(());
    };
    let path = f.get(3).copied().unwrap_or("/");
    let mut headers = HeaderMap::new();
    for kv in f.get(4).copied().unwrap_or_default().split(';') {
        if let Some((k, v)) = kv.split_once('=') {
            if let (Ok(k), Ok(v)) = (
                HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(v),
            ) {
                headers.append(k, v);
            }
        }
    }
    let authority = if port.is_empty() {
        host.to_string()
    } else {
        format!("{host}:{port}")
    };
    // The request as the proxy sees it: an absolute-form target.
    let Ok(uri) = format!("http://{authority}{path}").parse::<Uri>() else {
        return Ok(());
    };
    let Ok(target) = inbound::target(&uri) else {
        return Ok(());
    };
    let pq = uri.path_and_query().map_or("/", |p| p.as_str());
    let info = RequestInfo {
        host: &target.host,
        port: target.port,
        method: &method,
        path: pq,
        headers: &headers,
    };
    let got = table.decide(&info).map(|d| d.route.name().to_string());
    let want = settings
        .iter()
        .find(|s| route_matches(s, &info, true))
        .map(|s| s.name.to_string());
    if got != want {
        return finding(
            "route_decide_differs",
            format!("decide picked {got:?}, a scan in file order {want:?}, for {authority}{path} ({method}) in\n{cfg}"),
        );
    }
    let named = table.names_host(&target.host, target.port);
    let want_named = settings.iter().any(|s| route_matches(s, &info, false));
    if named != want_named {
        return finding(
            "route_names_host_differs",
            format!("names_host {named}, a scan {want_named}, for {authority} in\n{cfg}"),
        );
    }
    let route = table.decide(&info).map(|d| d.route);
    // The pipeline's path: as hyper parsed it, `/` if there is none.
    let pq = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    match crate::rewrite::upstream_uri(route, &target, &pq, None) {
        Ok(up) => {
            let up_host = up
                .host()
                .unwrap_or_default()
                .trim_start_matches('[')
                .trim_end_matches(']');
            if !up_host.eq_ignore_ascii_case(&target.host) {
                return finding(
                    "route_upstream_host_differs",
                    format!("request for {:?} goes to {up}", target.host),
                );
            }
            Ok(())
        }
        Err(e) => finding(
            "route_upstream_uri_refused",
            format!("a parsed target {target:?} with {pq:?} gives no upstream URI: {e}"),
        ),
    }
}

/// SPEC matching, one route at a time: host (exact, or `*.suffix` at any
/// depth but not the apex, never for IP literals), optional port, and with
/// `full` also path prefix, methods and headers.
fn route_matches(s: &RouteSettings, req: &RequestInfo<'_>, full: bool) -> bool {
    let is_ip = req.host.parse::<std::net::IpAddr>().is_ok();
    let host_ok = s.hosts.iter().any(|p| match p {
        HostPattern::Exact { host, port } => host == req.host && port.is_none_or(|p| p == req.port),
        HostPattern::Wildcard { suffix, port } => {
            !is_ip
                && req.host.len() > suffix.len()
                && req.host.ends_with(suffix.as_str())
                && port.is_none_or(|p| p == req.port)
        }
    });
    host_ok
        && (!full
            || (s
                .path_prefix
                .as_deref()
                .is_none_or(|p| req.path.starts_with(p))
                && (s.methods.is_empty() || s.methods.contains(req.method))
                && s.match_headers
                    .iter()
                    .all(|(k, v)| req.headers.get_all(k).iter().any(|h| h == v))))
}

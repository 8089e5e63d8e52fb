//! Rewrite stage (pingora's `upstream_request_filter`): the request that
//! goes upstream. Hop-by-hop and `remove_headers` go, `set_headers` are
//! rendered with the route's token, and the URI gets the upstream scheme.

use http::header::HeaderMap;
use http::uri::{Authority, PathAndQuery};
use http::{HeaderValue, Method, Request, Response, Uri, Version};

use crate::body::ProxyBody;
use crate::config::UpstreamScheme;
use crate::error::{ProxyError, ERROR_HEADER, LOGIN_HEADER};
use crate::inbound::{self, Scheme, Target};
use crate::route::Route;
use crate::template::Template;
use crate::values::Values;

/// What is kept of the application's request to build (and rebuild, on a
/// 401 retry) the upstream request.
pub struct Head {
    pub method: Method,
    /// Origin-form: path and query (shares the request's bytes).
    pub path_and_query: PathAndQuery,
    pub headers: HeaderMap,
    pub upgrade: bool,
}

/// The URI the upstream request goes to: the target's authority (over TLS
/// for `upstream = "https"`), the app's path and query, and the route's
/// `set_query` parameters (their values rendered with the token).
pub fn upstream_uri(
    route: Option<&Route>,
    target: &Target,
    pq: &PathAndQuery,
    values: Option<&Values>,
) -> Result<Uri, ProxyError> {
    let invalid = || ProxyError::BadRequest("request target is not a valid URI".into());
    let to_https = route.is_some_and(|r| r.settings.upstream == UpstreamScheme::Https);
    let (scheme, port) = match (target.scheme, to_https) {
        // Port 80 means "the default port", which over TLS is 443.
        (Scheme::Http, true) if target.port == 80 => (Scheme::Https, 443),
        (_, true) => (Scheme::Https, target.port),
        (s, false) => (s, target.port),
    };
    let bracketed = target.host.contains(':');
    let authority = match (port == scheme.default_port(), bracketed) {
        (true, false) => target.host.clone(),
        (true, true) => format!("[{}]", target.host),
        (false, false) => format!("{}:{port}", target.host),
        (false, true) => format!("[{}]:{port}", target.host),
    };
    let set_query = route.map_or(&[][..], |r| &r.settings.set_query[..]);
    // The app's path and query are reused as they are (no copy, no parse)
    // unless the route sets query parameters.
    let pq = match values {
        Some(v) if !set_query.is_empty() => {
            PathAndQuery::try_from(with_query(pq.as_str(), set_query, &v.query))
                .map_err(|_| invalid())?
        }
        _ => pq.clone(),
    };
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(match scheme {
        Scheme::Http => http::uri::Scheme::HTTP,
        Scheme::Https => http::uri::Scheme::HTTPS,
    });
    parts.authority = Some(Authority::try_from(authority).map_err(|_| invalid())?);
    parts.path_and_query = Some(pq);
    Uri::from_parts(parts).map_err(|_| invalid())
}

/// Sets or replaces query parameters: every existing pair with one of the
/// names goes, the others stay as the app wrote them, and the new values
/// are percent-encoded (a token with `+`, `/` or `=` arrives intact).
fn with_query(pq: &str, set: &[(String, Template)], values: &[String]) -> String {
    let (path, query) = pq.split_once('?').unwrap_or((pq, ""));
    let replaced = |pair: &str| {
        url::form_urlencoded::parse(pair.as_bytes())
            .next()
            .is_some_and(|(name, _)| set.iter().any(|(n, _)| *n == name))
    };
    let mut out = String::with_capacity(pq.len() + 64);
    out.push_str(path);
    let mut sep = '?';
    for pair in query.split('&').filter(|p| !p.is_empty() && !replaced(p)) {
        out.push(sep);
        out.push_str(pair);
        sep = '&';
    }
    for ((name, _), value) in set.iter().zip(values) {
        out.push(sep);
        out.extend(url::form_urlencoded::byte_serialize(name.as_bytes()));
        out.push('=');
        out.extend(url::form_urlencoded::byte_serialize(value.as_bytes()));
        sep = '&';
    }
    out
}

/// The upstream request, keeping `head` for a possible resend (the headers
/// are copied). Without a resend, use `into_upstream_request`.
pub fn upstream_request(
    route: Option<&Route>,
    head: &Head,
    uri: Uri,
    values: Option<&Values>,
    body: ProxyBody,
) -> Result<Request<ProxyBody>, ProxyError> {
    build(
        route,
        head.method.clone(),
        head.headers.clone(),
        head.upgrade,
        uri,
        values,
        body,
    )
}

/// The upstream request, moving the app's headers (no copy per request).
pub(crate) fn into_upstream_request(
    route: Option<&Route>,
    head: Head,
    uri: Uri,
    values: Option<&Values>,
    body: ProxyBody,
) -> Result<Request<ProxyBody>, ProxyError> {
    build(
        route,
        head.method,
        head.headers,
        head.upgrade,
        uri,
        values,
        body,
    )
}

fn build(
    route: Option<&Route>,
    method: Method,
    mut headers: HeaderMap,
    upgrade: bool,
    uri: Uri,
    values: Option<&Values>,
    body: ProxyBody,
) -> Result<Request<ProxyBody>, ProxyError> {
    inbound::strip_hop_by_hop(&mut headers, upgrade);
    headers.remove(ERROR_HEADER);
    // The app's Host (however many) never goes on: shared front ends pick
    // the tenant by it, so a Host other than the target would carry the
    // token to another service (RFC 9112 §3.2.2). The client sets exactly
    // one from the URI (`:authority` on HTTP/2).
    headers.remove(http::header::HOST);
    if let Some(route) = route {
        for name in &route.settings.remove_headers {
            headers.remove(name);
        }
        if let Some(values) = values {
            set_headers(&route.settings, values, &mut headers)?;
        }
    }
    let mut req = Request::new(body);
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;
    *req.headers_mut() = headers;
    Ok(req)
}

/// `default_headers` where the app sent none (checked before any is
/// added), then `set_headers`, with values rendered for this token. A
/// default the token cannot fill is an error only where the app did not
/// send the header itself.
fn set_headers(
    route: &crate::config::RouteSettings,
    values: &Values,
    headers: &mut HeaderMap,
) -> Result<(), ProxyError> {
    let absent = route
        .default_headers
        .iter()
        .map(|(name, _)| !headers.contains_key(name))
        .collect::<Vec<_>>();
    for (((name, _), value), absent) in route
        .default_headers
        .iter()
        .zip(&values.defaults)
        .zip(absent)
    {
        match value {
            _ if !absent => {}
            Ok(v) => {
                headers.insert(name.clone(), v.clone());
            }
            Err(reason) => {
                return Err(ProxyError::TokenContent {
                    header: name.to_string(),
                    reason: reason.clone(),
                })
            }
        }
    }
    for ((name, _), value) in route.set_headers.iter().zip(&values.sets) {
        headers.insert(name.clone(), value.clone());
    }
    Ok(())
}

/// Response filter: hop-by-hop headers and any forged `X-Sidekey-Error`
/// or `X-Sidekey-Login` go: apps send their user's browser to the login
/// link, so an upstream setting one could phish that user.
pub(crate) fn downstream_response<B>(mut resp: Response<B>) -> Response<B> {
    let upgrade = resp.status() == http::StatusCode::SWITCHING_PROTOCOLS;
    inbound::strip_hop_by_hop(resp.headers_mut(), upgrade);
    resp.headers_mut().remove(ERROR_HEADER);
    resp.headers_mut().remove(LOGIN_HEADER);
    resp
}

/// Redirect filter: the parameters `set_query` injected go from the
/// response's `Location` and `Content-Location`. An upstream that echoes
/// the request's query into a redirect would otherwise hand the token to
/// whatever host it names, and clients follow redirects on their own.
pub(crate) fn strip_set_query<B>(route: Option<&Route>, resp: &mut Response<B>) {
    let set = route.map_or(&[][..], |r| &r.settings.set_query[..]);
    if set.is_empty() {
        return;
    }
    for name in [http::header::LOCATION, http::header::CONTENT_LOCATION] {
        let values: Vec<HeaderValue> = resp.headers().get_all(&name).iter().cloned().collect();
        let stripped: Vec<Option<Vec<u8>>> = values
            .iter()
            .map(|v| without_params(v.as_bytes(), set))
            .collect();
        if stripped.iter().all(Option::is_none) {
            continue;
        }
        resp.headers_mut().remove(&name);
        for (value, stripped) in values.into_iter().zip(stripped) {
            // Bytes of a valid header value minus whole pairs stay valid;
            // should that ever fail, the header is dropped, never kept as is.
            let value = match stripped {
                None => Some(value),
                Some(b) => HeaderValue::from_bytes(&b).ok(),
            };
            if let Some(v) = value {
                resp.headers_mut().append(name.clone(), v);
            }
        }
    }
}

/// A URI reference without the query pairs named in `set`; `None` when it
/// has none of them. The fragment and the other pairs stay byte for byte.
fn without_params(value: &[u8], set: &[(String, Template)]) -> Option<Vec<u8>> {
    let end = value.iter().position(|&b| b == b'#').unwrap_or(value.len());
    let (uri, fragment) = value.split_at(end);
    let q = uri.iter().position(|&b| b == b'?')?;
    let (path, query) = (&uri[..q], &uri[q + 1..]);
    let named = |pair: &[u8]| {
        url::form_urlencoded::parse(pair)
            .next()
            .is_some_and(|(n, _)| set.iter().any(|(s, _)| *s == n))
    };
    let mut removed = false;
    let mut out = Vec::with_capacity(value.len());
    out.extend_from_slice(path);
    let mut sep = b'?';
    for pair in query.split(|&b| b == b'&') {
        if named(pair) {
            removed = true;
            continue;
        }
        out.push(sep);
        out.extend_from_slice(pair);
        sep = b'&';
    }
    if !removed {
        return None;
    }
    out.extend_from_slice(fragment);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(target: &str, pq: &str) -> Uri {
        let target = inbound::target(&target.parse().unwrap()).unwrap();
        let pq = PathAndQuery::try_from(pq).unwrap();
        upstream_uri(None, &target, &pq, None).unwrap()
    }

    fn uri(target: &str, pq: &str) -> String {
        upstream(target, pq).to_string()
    }

    #[test]
    fn the_upstream_uri_is_the_target_with_the_apps_path() {
        assert_eq!(
            uri("http://Example.COM/", "/a?b=1"),
            "http://example.com/a?b=1"
        );
        assert_eq!(uri("http://example.com:80/", "/"), "http://example.com/");
        assert_eq!(
            uri("http://example.com:8080/", "/x"),
            "http://example.com:8080/x"
        );
        assert_eq!(uri("https://example.com:443/", "/"), "https://example.com/");
        assert_eq!(uri("http://[::1]:8080/", "/v6"), "http://[::1]:8080/v6");
        assert_eq!(uri("http://[::1]/", "/v6"), "http://[::1]/v6");
        // Asterisk-form (`OPTIONS *` inside a tunnel) keeps its target's
        // authority; the old format-and-parse glued `*` onto the port.
        let star = upstream("https://example.com:8443/", "*");
        assert_eq!(
            star.authority().map(|a| a.as_str()),
            Some("example.com:8443")
        );
        assert_eq!(star.path(), "*");
    }

    #[test]
    fn set_query_parameters_leave_no_uri_reference() {
        let t = |s: &str| Template::parse(s, crate::template::Context::Header, &|_| None).unwrap();
        let set = [
            ("access_token".to_string(), t("<<oauth.token>>")),
            ("api-version".to_string(), t("1")),
        ];
        let strip =
            |v: &str| without_params(v.as_bytes(), &set).map(|b| String::from_utf8(b).unwrap());
        assert_eq!(
            strip("https://evil.example/cb?x=1&access_token=tok&y=2#frag").as_deref(),
            Some("https://evil.example/cb?x=1&y=2#frag")
        );
        assert_eq!(
            strip("/next?access_token=tok&api-version=1").as_deref(),
            Some("/next")
        );
        // Percent-encoded names are the same parameter to the next server.
        assert_eq!(
            strip("/n?%61ccess_token=tok&a=b").as_deref(),
            Some("/n?a=b")
        );
        assert_eq!(strip("/n?a=b&access_tokens=x"), None);
        assert_eq!(strip("/n#access_token=not-a-query"), None);
        assert_eq!(strip("/plain"), None);
    }

    #[test]
    fn a_default_header_the_app_sent_is_kept_even_when_the_token_cannot_fill_it() {
        use crate::values::fixture;
        let route = Route::new(fixture::route(fixture::DEFAULT_SUB), None);
        let token = fixture::token("opaque");
        let values = route.values(Some(&token), false).unwrap();
        let target = inbound::target(&"http://api.example.com/".parse().unwrap()).unwrap();
        let head = |app_sends: bool| {
            let mut headers = HeaderMap::new();
            if app_sends {
                headers.insert("x-sub", HeaderValue::from_static("alice"));
            }
            Head {
                method: Method::GET,
                path_and_query: PathAndQuery::from_static("/"),
                headers,
                upgrade: false,
            }
        };
        let send = |app_sends: bool| {
            let pq = PathAndQuery::from_static("/");
            let uri = upstream_uri(Some(&route), &target, &pq, Some(&values)).unwrap();
            upstream_request(
                Some(&route),
                &head(app_sends),
                uri,
                Some(&values),
                crate::body::empty(),
            )
        };
        let req = send(true).unwrap();
        assert_eq!(req.headers()["x-sub"], "alice");
        assert_eq!(req.headers()["authorization"], "Bearer opaque");
        let err = send(false).err().unwrap();
        assert!(
            matches!(&err, ProxyError::TokenContent { header, .. } if header == "x-sub"),
            "{err:?}"
        );
    }
}

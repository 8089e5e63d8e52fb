//! Rewrite stage (pingora's `upstream_request_filter`): the request that
//! goes upstream. Hop-by-hop and `remove_headers` go, `set_headers` are
//! rendered with the route's token, and the URI gets the upstream scheme.

use http::header::HeaderMap;
use http::{HeaderValue, Method, Request, Response, Uri, Version};

use crate::body::ProxyBody;
use crate::config::{HeaderTemplate, UpstreamScheme};
use crate::error::{ProxyError, ERROR_HEADER};
use crate::inbound::{self, Scheme, Target};
use crate::route::Route;
use crate::template::TokenView;
use crate::token::Token;

/// What is kept of the application's request to build (and rebuild, on a
/// 401 retry) the upstream request.
pub struct Head {
    pub method: Method,
    /// Origin-form: path and query.
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub upgrade: bool,
}

/// The URI the upstream request goes to.
pub fn upstream_uri(route: Option<&Route>, target: &Target, pq: &str) -> Result<Uri, ProxyError> {
    let to_https = route.is_some_and(|r| r.settings.upstream == UpstreamScheme::Https);
    let (scheme, port) = match (target.scheme, to_https) {
        // Port 80 means "the default port", which over TLS is 443.
        (Scheme::Http, true) if target.port == 80 => (Scheme::Https, 443),
        (_, true) => (Scheme::Https, target.port),
        (s, false) => (s, target.port),
    };
    let host = if target.host.contains(':') {
        format!("[{}]", target.host)
    } else {
        target.host.clone()
    };
    let uri = if port == scheme.default_port() {
        format!("{}://{host}{pq}", scheme.as_str())
    } else {
        format!("{}://{host}:{port}{pq}", scheme.as_str())
    };
    uri.parse()
        .map_err(|_| ProxyError::BadRequest("request target is not a valid URI".into()))
}

pub fn upstream_request(
    route: Option<&Route>,
    head: &Head,
    uri: Uri,
    token: Option<&Token>,
    body: ProxyBody,
) -> Result<Request<ProxyBody>, ProxyError> {
    let mut headers = head.headers.clone();
    inbound::strip_hop_by_hop(&mut headers, head.upgrade);
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
        for (name, value) in &route.settings.set_headers {
            let value = match value {
                HeaderTemplate::Static(v) => v.clone(),
                HeaderTemplate::Dynamic(t) => {
                    let rendered = t
                        .render_header(token.map(|t| t as &dyn TokenView))
                        .map_err(|e| ProxyError::TokenContent {
                            header: name.to_string(),
                            reason: e.to_string(),
                        })?;
                    let mut v =
                        HeaderValue::from_str(&rendered).map_err(|_| ProxyError::TokenContent {
                            header: name.to_string(),
                            reason: "the token holds characters a header cannot carry".into(),
                        })?;
                    v.set_sensitive(true);
                    v
                }
            };
            headers.insert(name.clone(), value);
        }
    }
    let mut req = Request::new(body);
    *req.method_mut() = head.method.clone();
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;
    *req.headers_mut() = headers;
    Ok(req)
}

/// Response filter: hop-by-hop headers and any forged `X-Sidekey-Error` go.
pub fn downstream_response<B>(mut resp: Response<B>) -> Response<B> {
    let upgrade = resp.status() == http::StatusCode::SWITCHING_PROTOCOLS;
    inbound::strip_hop_by_hop(resp.headers_mut(), upgrade);
    resp.headers_mut().remove(ERROR_HEADER);
    resp
}

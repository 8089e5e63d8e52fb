//! Talking to a token endpoint, shared by every kind of grant: rendering
//! client fields, sending with a bounded response, and reading standard
//! OAuth answers and vendor JSON.

use crate::secret::Secret;
use crate::token::model::{FetchError, TokenResponse};

use super::idp_text::idp_text;

/// Client fields hold either PEM text or a path to a PEM file. `what`
/// names the field in errors: the value itself is never printed, since a
/// key pasted without its PEM armour would otherwise end up in a log line.
pub(crate) fn pem_or_path(v: &str, what: &str) -> Result<String, FetchError> {
    if v.trim_start().starts_with("-----BEGIN") {
        Ok(v.to_string())
    } else {
        std::fs::read_to_string(v).map_err(|e| {
            FetchError::Setup(format!(
                "{what} is neither PEM text (-----BEGIN ...) nor the path of a readable file ({})",
                e.kind()
            ))
        })
    }
}

/// Renders a client field; `what` names it in errors (never its value).
pub(crate) fn field(
    t: Option<&crate::template::Template>,
    what: &str,
) -> Result<Option<Secret>, FetchError> {
    let Some(t) = t else { return Ok(None) };
    let v = t
        .render_value(&|_| None)
        .map_err(|e| FetchError::Setup(format!("{what}: {e}")))?;
    if v.is_empty() {
        let hint = match t.defaulted_env() {
            [] => "its value, file or environment variable is empty".to_string(),
            vars => format!("set {}", vars.join(" and ")),
        };
        return Err(FetchError::Setup(format!("{what} is empty: {hint}")));
    }
    Ok(Some(v))
}

/// The roots and parent proxy of `egress` (`upstream_roots`, `extra_roots`,
/// `token_proxy`, `no_upstream_proxy`) on a client builder that has
/// already dropped proxies from sidekey's own environment (`no_proxy`).
pub(crate) fn egress(
    mut b: reqwest::ClientBuilder,
    egress: &crate::config::Egress,
) -> Result<reqwest::ClientBuilder, FetchError> {
    // Only the roots chosen: the bundled ones would otherwise trust the
    // web PKI where `upstream_roots = "system"` asked for the OS store.
    b = b.tls_built_in_root_certs(false);
    let roots = crate::roots::certificates(egress.roots, &egress.extra_roots)
        .map_err(|e| FetchError::Setup(e.to_string()))?;
    for cert in roots {
        let cert = reqwest::Certificate::from_der(&cert)
            .map_err(|e| FetchError::Setup(format!("trusted roots: {e}")))?;
        b = b.add_root_certificate(cert);
    }
    if let Some(p) = &egress.proxy {
        let mut proxy = reqwest::Proxy::all(p.uri.to_string())
            .map_err(|e| FetchError::Setup(format!("proxy.token_proxy: {e}")))?;
        if let Some((user, password)) = p.credentials() {
            proxy = proxy.basic_auth(&user, &password);
        }
        let direct = egress.direct.to_no_proxy_string();
        proxy = proxy.no_proxy(reqwest::NoProxy::from_string(&direct));
        b = b.proxy(proxy);
    }
    Ok(b)
}

/// The client's `token_headers` (an API gateway's subscription key), on
/// every token request of any grant.
pub(crate) fn token_headers(
    s: &crate::config::ClientSettings,
    mut req: reqwest::RequestBuilder,
) -> Result<reqwest::RequestBuilder, FetchError> {
    for (name, t) in &s.token_headers {
        let v = field(Some(t), &format!("token_headers.{name}"))?.unwrap_or_default();
        let mut v = http::HeaderValue::from_str(v.expose()).map_err(|_| {
            FetchError::Setup(format!("token_headers.{name}: not a valid header value"))
        })?;
        v.set_sensitive(true);
        req = req.header(name.clone(), v);
    }
    Ok(req)
}

/// Token responses are a few KiB; anything past this is refused (SPEC), so
/// a broken or hostile endpoint cannot balloon a 64 MiB sidecar.
pub(crate) const MAX_TOKEN_RESPONSE: usize = 1024 * 1024;

/// Sends a prepared request and maps transport failures. The body is read
/// as it streams and refused once it passes `MAX_TOKEN_RESPONSE`.
pub(crate) async fn send(req: reqwest::RequestBuilder) -> Result<(u16, bytes::Bytes), FetchError> {
    let too_large = || {
        FetchError::BadResponse(format!(
            "the response is larger than {} KiB",
            MAX_TOKEN_RESPONSE / 1024
        ))
    };
    let mut resp = req.send().await.map_err(transport)?;
    let status = resp.status().as_u16();
    if resp
        .content_length()
        .is_some_and(|n| n > MAX_TOKEN_RESPONSE as u64)
    {
        return Err(too_large());
    }
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = resp.chunk().await.map_err(transport)? {
        if body.len() + chunk.len() > MAX_TOKEN_RESPONSE {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok((status, body.freeze()))
}

fn transport(e: reqwest::Error) -> FetchError {
    if e.is_timeout() {
        return FetchError::Transport("timed out".into());
    }
    // The chain says *why* (refused, DNS, TLS), which the top error omits.
    let e = e.without_url();
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    FetchError::Transport(msg)
}

/// Parses a standard OAuth token response (RFC 6749 §5.1/§5.2).
pub(crate) fn parse_oauth(status: u16, body: &[u8]) -> Result<TokenResponse, FetchError> {
    let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    if let Some(err) = json
        .as_ref()
        .and_then(|j| j.get("error"))
        .and_then(|e| e.as_str())
    {
        let description = json
            .as_ref()
            .and_then(|j| j.get("error_description"))
            .and_then(|d| d.as_str())
            .map(idp_text);
        return Err(FetchError::OAuth {
            status,
            error: err.chars().take(64).collect(),
            description,
        });
    }
    if !(200..300).contains(&status) {
        return Err(FetchError::Status(status));
    }
    let json = json.ok_or_else(|| FetchError::BadResponse("body is not JSON".into()))?;
    let access = json
        .get("access_token")
        .and_then(|v| v.as_str())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| FetchError::BadResponse("no access_token".into()))?;
    let str_of = |k: &str| json.get(k).and_then(|v| v.as_str()).map(str::to_string);
    Ok(TokenResponse {
        access_token: Secret::new(access),
        token_type: str_of("token_type"),
        expires_in: json.get("expires_in").and_then(number),
        refresh_token: str_of("refresh_token").map(Secret::new),
        id_token: str_of("id_token").map(Secret::new),
        scope: str_of("scope"),
        not_after: None,
    })
}

/// A lifetime given as a JSON number or a numeric string.
/// A lifetime at or below zero is 0 (expired on arrival, so a failed
/// fetch), never "no lifetime given"; a fraction is rounded down.
pub(crate) fn number(v: &serde_json::Value) -> Option<u64> {
    if let Some(n) = v.as_u64() {
        return Some(n);
    }
    let f = v
        .as_f64()
        .or_else(|| v.as_str()?.trim().parse::<f64>().ok())
        .filter(|f| f.is_finite())?;
    // `as` saturates: a lifetime past u64 is clamped later anyway.
    Some(if f <= 0.0 { 0 } else { f as u64 })
}

/// Follows a dotted path (`data.accessToken`) into JSON.
pub(crate) fn at_path<'a>(
    v: &'a serde_json::Value,
    path: &[String],
) -> Option<&'a serde_json::Value> {
    path.iter().try_fold(v, |v, p| match v {
        serde_json::Value::Array(a) => a.get(p.parse::<usize>().ok()?),
        _ => v.get(p),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_success_and_errors() {
        let ok = parse_oauth(
            200,
            br#"{"access_token":"a","expires_in":"60","token_type":"bearer"}"#,
        )
        .unwrap();
        assert_eq!(ok.expires_in, Some(60));
        let err = parse_oauth(
            400,
            br#"{"error":"invalid_client","error_description":"bad"}"#,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "token endpoint answered HTTP 400: invalid_client (\"bad\")"
        );
        assert!(matches!(
            parse_oauth(502, b"<html>"),
            Err(FetchError::Status(502))
        ));
        assert!(matches!(
            parse_oauth(200, b"{}"),
            Err(FetchError::BadResponse(_))
        ));
        assert!(matches!(
            parse_oauth(200, b"nope"),
            Err(FetchError::BadResponse(_))
        ));
    }

    #[test]
    fn paths_reach_nested_values() {
        let v = serde_json::json!({"data": {"list": [{"t": "x"}]}});
        let p: Vec<String> = "data.list.0.t".split('.').map(str::to_string).collect();
        assert_eq!(at_path(&v, &p).unwrap(), "x");
    }
}

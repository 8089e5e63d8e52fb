//! Token server: an OAuth token endpoint (form-encoded, RFC 6749 §5) and
//! Capillary's JSON endpoint, that counts calls, records each request and
//! can fail, hang or answer garbage on demand. Its `/authorize` plays a
//! browser login: the code names the user the browser signed in as.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

#[derive(Clone, Debug, PartialEq)]
pub enum Mode {
    Ok,
    Fail(u16),
    Hang,
    OAuthError(String),
    Garbage,
}

#[derive(Clone, Debug)]
pub struct TokenRequest {
    pub path: String,
    pub headers: HeaderMap,
    pub form: Vec<(String, String)>,
    pub json: Option<serde_json::Value>,
    pub auth: Option<(String, String)>,
}

impl TokenRequest {
    pub fn field(&self, k: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }
}

type Validator = Arc<dyn Fn(&TokenRequest) -> Result<(), String> + Send + Sync>;

struct State {
    validator: Option<Validator>,
    mode: Mode,
    ttl: u64,
    delay: Duration,
    client: Option<(String, String)>,
    extra: serde_json::Value,
    issue_refresh: bool,
    issued: usize,
    calls: usize,
    requests: Vec<TokenRequest>,
}

pub struct TokenServer {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TokenServer {
    pub async fn start() -> TokenServer {
        Self::serve(None).await
    }

    /// Over TLS; with a config from `TestCa::server_config_mtls` it
    /// requires a client certificate (RFC 8705).
    pub async fn start_tls(config: Arc<rustls::ServerConfig>) -> TokenServer {
        Self::serve(Some(tokio_rustls::TlsAcceptor::from(config))).await
    }

    async fn serve(tls: Option<tokio_rustls::TlsAcceptor>) -> TokenServer {
        let state = Arc::new(Mutex::new(State {
            validator: None,
            mode: Mode::Ok,
            ttl: 3600,
            delay: Duration::ZERO,
            client: None,
            extra: serde_json::json!({}),
            issue_refresh: false,
            issued: 0,
            calls: 0,
            requests: Vec::new(),
        }));
        let st = Arc::clone(&state);
        let (addr, task) = super::serve(tls, move |req| handle(Arc::clone(&st), req)).await;
        TokenServer { addr, state, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
    pub fn https_url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.addr.port())
    }
    /// Checks each token request as an IdP would; an `Err` is answered
    /// 400 `invalid_grant` with the reason as `error_description`.
    pub fn set_validator(
        &self,
        f: impl Fn(&TokenRequest) -> Result<(), String> + Send + Sync + 'static,
    ) {
        self.state.lock().unwrap().validator = Some(Arc::new(f));
    }
    pub fn calls(&self) -> usize {
        self.state.lock().unwrap().calls
    }
    pub fn set_mode(&self, m: Mode) {
        self.state.lock().unwrap().mode = m;
    }
    pub fn set_ttl(&self, secs: u64) {
        self.state.lock().unwrap().ttl = secs;
    }
    pub fn set_delay(&self, d: Duration) {
        self.state.lock().unwrap().delay = d;
    }
    pub fn expect_client(&self, id: &str, secret: &str) {
        self.state.lock().unwrap().client = Some((id.into(), secret.into()));
    }
    pub fn set_extra(&self, v: serde_json::Value) {
        self.state.lock().unwrap().extra = v;
    }
    pub fn set_issue_refresh(&self, on: bool) {
        self.state.lock().unwrap().issue_refresh = on;
    }
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.state.lock().unwrap().requests.clone()
    }
}

fn reply(status: u16, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
    r.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    r
}

/// RFC 6749 §2.3.1: Basic credentials are form-urlencoded before base64.
fn basic(headers: &HeaderMap) -> Option<(String, String)> {
    let v = headers
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Basic ")?;
    let raw = String::from_utf8(base64::engine::general_purpose::STANDARD.decode(v).ok()?).ok()?;
    let (u, p) = raw.split_once(':')?;
    let dec = |s: &str| {
        url::form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
    };
    Some((dec(u)?, dec(p)?))
}

async fn handle(
    st: Arc<Mutex<State>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    if path == "/authorize" {
        return Ok(authorize(&st, &req));
    }
    let headers = req.headers().clone();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let is_json = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"));
    let rec = TokenRequest {
        path: path.clone(),
        headers: headers.clone(),
        form: if is_json {
            vec![]
        } else {
            url::form_urlencoded::parse(&body).into_owned().collect()
        },
        json: if is_json {
            serde_json::from_slice(&body).ok()
        } else {
            None
        },
        auth: basic(&headers),
    };
    let (mode, delay) = {
        let mut s = st.lock().unwrap();
        s.calls += 1;
        s.requests.push(rec.clone());
        (s.mode.clone(), s.delay)
    };
    tokio::time::sleep(delay).await;
    match mode {
        Mode::Ok => {}
        Mode::Fail(code) => return Ok(reply(code, serde_json::json!({"error": "server_error"}))),
        Mode::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        Mode::OAuthError(e) => {
            return Ok(reply(
                400,
                serde_json::json!({"error": e, "error_description": "the server said no"}),
            ))
        }
        Mode::Garbage => {
            let mut r = Response::new(Full::new(Bytes::from_static(b"not json")));
            *r.status_mut() = http::StatusCode::OK;
            return Ok(r);
        }
    }
    let mut s = st.lock().unwrap();
    if let Some(v) = s.validator.clone() {
        if let Err(why) = v(&rec) {
            return Ok(reply(
                400,
                serde_json::json!({"error": "invalid_grant", "error_description": why}),
            ));
        }
    }
    if path == "/v3/oauth/token/generate" {
        let json = rec.json.clone().unwrap_or_default();
        if let Some((id, secret)) = &s.client {
            if json["key"] != id.as_str() || json["secret"] != secret.as_str() {
                return Ok(reply(
                    200,
                    serde_json::json!({"data": null, "errors": [{"code": 1001, "message": "Invalid key/secret"}]}),
                ));
            }
        }
        s.issued += 1;
        return Ok(reply(
            200,
            serde_json::json!({"data": {"accessToken": format!("tok-{}", s.issued), "ttlSeconds": s.ttl}, "errors": null}),
        ));
    }
    if let Some((id, secret)) = &s.client {
        let given = rec.auth.clone().or_else(|| {
            Some((
                rec.field("client_id")?.to_string(),
                rec.field("client_secret")?.to_string(),
            ))
        });
        if given.as_ref() != Some(&(id.clone(), secret.clone())) {
            return Ok(reply(401, serde_json::json!({"error": "invalid_client"})));
        }
    }
    s.issued += 1;
    let n = s.issued;
    // A code from a login as someone (see `authorize`), and the refresh
    // tokens descended from it, yield tokens that name that user.
    let subject = match rec.field("grant_type") {
        Some("authorization_code") => rec
            .field("code")
            .and_then(|c| c.strip_prefix("code-for-"))
            .map(str::to_string),
        Some("refresh_token") => rec
            .field("refresh_token")
            .and_then(|r| r.split_once("-for-"))
            .map(|(_, u)| u.to_string()),
        _ => None,
    };
    if let Some(user) = subject {
        return Ok(reply(
            200,
            serde_json::json!({"access_token": format!("tok-{n}-for-{user}"), "token_type": "Bearer",
                "expires_in": s.ttl, "refresh_token": format!("rt-{n}-for-{user}")}),
        ));
    }
    let mut out = serde_json::json!({"access_token": format!("tok-{n}"), "token_type": "Bearer", "expires_in": s.ttl});
    if let Some(scope) = rec.field("scope") {
        out["scope"] = scope.into();
    }
    if s.issue_refresh {
        out["refresh_token"] = format!("rt-{n}").into();
    }
    if let Some(extra) = s.extra.as_object() {
        for (k, v) in extra {
            out[k] = v.clone();
        }
    }
    Ok(reply(200, out))
}

/// The authorization endpoint of a code flow: records the request (the
/// test reads `code_challenge` from it) and redirects back with a code.
fn authorize<B>(st: &Mutex<State>, req: &Request<B>) -> Response<Full<Bytes>> {
    let q: Vec<(String, String)> =
        url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let get = |k: &str| {
        q.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    st.lock().unwrap().requests.push(TokenRequest {
        path: "/authorize".into(),
        headers: req.headers().clone(),
        form: q.clone(),
        json: None,
        auth: None,
    });
    // A browser that "signs in" as someone says who in `x-test-user`;
    // the code then carries that user (an IdP's session, in short).
    let code = match req
        .headers()
        .get("x-test-user")
        .and_then(|v| v.to_str().ok())
    {
        Some(user) => format!("code-for-{user}"),
        None => "code-123".to_string(),
    };
    let location = format!("{}?code={code}&state={}", get("redirect_uri"), get("state"));
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = http::StatusCode::FOUND;
    r.headers_mut()
        .insert("location", location.parse().unwrap());
    r
}

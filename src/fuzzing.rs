//! Entry points for the fuzz targets in `fuzz/` and for their regression
//! tests (`tests/fuzz_regressions.rs`, stable): thin wrappers around the
//! parsers an operator, an IdP or an application can feed, each checking
//! invariants from SPEC.md. A wrapper never panics itself: a broken
//! invariant is an `Err("class: what")`, so any panic found is the parser's
//! and any `Err` is a finding the harness decides to report. Not an API.
#![doc(hidden)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};

use crate::config::{ClientSettings, HostPattern, RouteSettings};
use crate::inbound;
use crate::route::{RequestInfo, Route, RouteTable};
use crate::secret::Secret;
use crate::template::{BodyFormat, Context, Template, TokenView};
use crate::token::grants::Fetcher;
use crate::token::{FetchError, Token, TokenResponse, MAX_LIFETIME};

/// A broken invariant: `class: details`. The class names the kind of
/// finding, so a fuzzing run can skip ones already reported (see
/// `is_known`).
pub type Finding = String;

fn finding(class: &str, what: impl std::fmt::Display) -> Result<(), Finding> {
    Err(format!("{class}: {what}"))
}

/// Whether `f`'s class is listed in `SIDEKEY_FUZZ_KNOWN` (comma-separated):
/// lets a fuzzing run go past a finding that is reported and awaits a fix.
pub fn is_known(f: &str) -> bool {
    let class = f.split(':').next().unwrap_or_default();
    std::env::var("SIDEKEY_FUZZ_KNOWN")
        .is_ok_and(|known| known.split(',').any(|k| k.trim() == class))
}

/// Paths a fuzzed config or template must not make sidekey read: device
/// files never end (`/dev/zero`), and no real secret belongs in a corpus.
fn touches_system_files(text: &str) -> bool {
    // TOML's \u escapes could spell any of these.
    [
        "/dev", "/proc", "/sys", "..", "/etc", "/root", "/home", "~", "\\u", "\\U",
    ]
    .iter()
    .any(|p| text.contains(p))
}

fn fuzz_env(name: &str) -> Option<String> {
    match name {
        "SET" => Some("value".into()),
        "EMPTY" => Some(String::new()),
        "QUOTE" => Some("a\"b\\c\nd".into()),
        _ => None,
    }
}

// === config ===

/// `config::load_str` on arbitrary text. Errors must render (with their
/// positions) and name the file; a valid config's derived values must be
/// computable.
pub fn config(text: &str) -> Result<(), Finding> {
    if touches_system_files(text) {
        return Ok(());
    }
    let path = Path::new("/nonexistent-fuzz-dir/proxy.toml");
    match crate::config::load_str(path, text, &fuzz_env) {
        Ok(cfg) => {
            for c in cfg.clients.values() {
                let _ = c.cache_key();
                let _ = c.files();
            }
            let _ = format!("{cfg:?}");
            let routes = cfg
                .routes
                .iter()
                .map(|settings| Route {
                    settings: settings.clone(),
                    credential: None,
                })
                .collect();
            let _ = RouteTable::new(routes);
            Ok(())
        }
        Err(e) => {
            let shown = e.to_string();
            if e.errors.is_empty() {
                return finding("config_no_errors", "load_str failed without an error");
            }
            if !shown.starts_with("/nonexistent-fuzz-dir/proxy.toml") {
                return finding("config_error_unnamed", format!("{shown:?}"));
            }
            Ok(())
        }
    }
}

// === templates ===

/// A token for header templates: the values come from the fuzz input.
struct FuzzToken {
    access: String,
    kind: String,
    id: Option<String>,
    claims: serde_json::Value,
}

impl TokenView for FuzzToken {
    fn access_token(&self) -> &str {
        &self.access
    }
    fn token_type(&self) -> &str {
        &self.kind
    }
    fn id_token(&self) -> Option<&str> {
        self.id.as_deref()
    }
    fn claim(&self, path: &[String]) -> Option<String> {
        crate::template::claim_at(&self.claims, path)
    }
}

/// Parses `src` in the context chosen by `selector` and renders it.
/// Header templates render with a token made of `values`; body templates
/// are checked against SPEC "Templates": a JSON body that is valid with
/// plain values stays valid whatever the values hold (quotes, backslashes,
/// newlines), and a form body keeps its fields however many `&` and `=`
/// the values hold.
pub fn template(selector: u8, src: &str, values: &[String]) -> Result<(), Finding> {
    let value = |i: usize| values.get(i).cloned().unwrap_or_default();
    let env = |name: &str| match name {
        "V0" => Some(value(0)),
        "V1" => Some(value(1)),
        other => fuzz_env(other),
    };
    let ctx = match selector % 3 {
        0 => Context::Header,
        1 => Context::ClientField,
        _ => Context::Body,
    };
    let Ok(t) = Template::parse(src, ctx, &env) else {
        return Ok(());
    };
    if !src.contains("<<") && t.as_literal() != Some(src) {
        return finding(
            "template_literal_changed",
            format!("{src:?} parsed as {:?}", t.as_literal()),
        );
    }
    match ctx {
        Context::Header => {
            let token = FuzzToken {
                access: value(0),
                kind: value(1),
                id: values.get(2).cloned(),
                claims: serde_json::from_str(&value(3)).unwrap_or_default(),
            };
            let with = t.render_header(Some(&token));
            let without = t.render_header(None);
            if let (Some(lit), Ok(out)) = (t.as_literal(), &without) {
                if lit != out {
                    return finding("template_literal_render", format!("{src:?}"));
                }
            }
            if without.is_ok() && with.is_err() {
                return finding(
                    "template_token_breaks_render",
                    format!("{src:?} renders without a token, not with one"),
                );
            }
            Ok(())
        }
        Context::ClientField => {
            if t.files().next().is_none() {
                let _ = t.render_value(&|_| None);
            }
            Ok(())
        }
        Context::Body => {
            if t.files().next().is_some() {
                return Ok(());
            }
            let pick = |name: &str| {
                let i = crate::template::CLIENT_FIELDS
                    .iter()
                    .position(|f| *f == name)
                    .unwrap_or(0);
                value(i % values.len().max(1))
            };
            let fuzzed = |name: &str| Some(Secret::new(pick(name)));
            // The same shape with harmless values (empty where the real
            // one is empty, so a form field that vanishes vanishes in both).
            let plain =
                |name: &str| Some(Secret::new(if pick(name).is_empty() { "" } else { "x" }));
            let format = if selector & 0x80 == 0 {
                BodyFormat::Json
            } else {
                BodyFormat::Form
            };
            let (Ok(skeleton), Ok(real)) = (
                t.render_body(&plain, format),
                t.render_body(&fuzzed, format),
            ) else {
                return Ok(());
            };
            // `<<env.*>>` values are fixed at parse time; the skeleton has
            // them too, so only `<<client.*>>` values differ.
            match format {
                BodyFormat::Json => {
                    let ok =
                        |s: &Secret| serde_json::from_str::<serde_json::Value>(s.expose()).is_ok();
                    if ok(&skeleton) && !ok(&real) {
                        return finding(
                            "template_json_body_broken",
                            format!("{src:?} with values {values:?} gives {:?}", real.expose()),
                        );
                    }
                }
                BodyFormat::Form => {
                    let fields =
                        |s: &Secret| url::form_urlencoded::parse(s.expose().as_bytes()).count();
                    if fields(&skeleton) != fields(&real) {
                        return finding(
                            "template_form_body_split",
                            format!("{src:?} with values {values:?} gives {:?}", real.expose()),
                        );
                    }
                }
            }
            Ok(())
        }
    }
}

// === token endpoint answers ===

/// Which parser reads the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Grant {
    /// RFC 6749 §5.1/§5.2 (every form grant).
    OAuth,
    /// Capillary's `data.accessToken` / `data.ttlSeconds` / `errors`.
    Capillary,
    /// `custom`: dotted `token_path` and `expires_in_path`.
    Custom,
}

type Reply = (u16, Bytes, bool);

/// A token endpoint on loopback that answers whatever the fuzzer says, and
/// one `Fetcher` that asks it: the answer goes through the real client
/// (streaming, the 1 MiB limit) and the real parsers, then
/// `Token::from_response`. The private parsers are reached through their
/// public caller, so nothing in `token/` has to be opened up for this.
pub struct TokenEndpoint {
    rt: tokio::runtime::Runtime,
    addr: SocketAddr,
    reply: Arc<Mutex<Reply>>,
    fetcher: Fetcher,
    clients: HashMap<(Grant, String, String), Arc<ClientSettings>>,
}

/// What a fetch gave: the token's lifetime, or why it failed.
#[derive(Debug)]
pub enum Fetched {
    Token { lifetime: Duration, access: String },
    Failed(FetchError),
}

impl TokenEndpoint {
    pub fn new() -> Result<Self, String> {
        crate::init_crypto();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let reply: Arc<Mutex<Reply>> = Arc::new(Mutex::new((200, Bytes::new(), false)));
        let r = Arc::clone(&reply);
        let addr = rt.block_on(async move {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(|e| e.to_string())?;
            let addr = l.local_addr().map_err(|e| e.to_string())?;
            tokio::spawn(async move {
                while let Ok((s, _)) = l.accept().await {
                    let r = Arc::clone(&r);
                    let svc = hyper::service::service_fn(move |_req| {
                        let (status, body, chunked) =
                            r.lock()
                                .map(|g| g.clone())
                                .unwrap_or((500, Bytes::new(), false));
                        async move {
                            let body: BoxBody<Bytes, std::convert::Infallible> = if chunked {
                                let frames =
                                    futures_util::stream::iter([Ok(http_body::Frame::data(body))]);
                                BodyExt::boxed(StreamBody::new(frames))
                            } else {
                                BodyExt::boxed(Full::new(body))
                            };
                            let mut resp = http::Response::new(body);
                            *resp.status_mut() =
                                http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
                            resp.headers_mut().insert(
                                http::header::CONTENT_TYPE,
                                HeaderValue::from_static("application/json"),
                            );
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    });
                    tokio::spawn(
                        hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(s), svc),
                    );
                }
            });
            Ok::<_, String>(addr)
        })?;
        let mut me = Self {
            rt,
            addr,
            reply,
            fetcher: Fetcher::new(
                &*client_for(addr, Grant::OAuth, "", "")?,
                &crate::config::Egress::default(),
            )
            .map_err(|e| e.to_string())?,
            clients: HashMap::new(),
        };
        me.settings(Grant::OAuth, "", "")?;
        Ok(me)
    }

    fn settings(
        &mut self,
        grant: Grant,
        token_path: &str,
        expires_in_path: &str,
    ) -> Result<Arc<ClientSettings>, String> {
        let key = (grant, token_path.to_string(), expires_in_path.to_string());
        if let Some(s) = self.clients.get(&key) {
            return Ok(Arc::clone(s));
        }
        if self.clients.len() > 512 {
            self.clients.clear();
        }
        let s = client_for(self.addr, grant, token_path, expires_in_path)?;
        self.clients.insert(key, Arc::clone(&s));
        Ok(s)
    }

    /// The endpoint answers `status` with `body` (chunked, without a
    /// length, if `chunked`); returns what sidekey made of it. `Err` is a
    /// harness problem (a custom path the config refuses), not a finding.
    pub fn fetch(
        &mut self,
        grant: Grant,
        token_path: &str,
        expires_in_path: &str,
        status: u16,
        body: &[u8],
        chunked: bool,
    ) -> Result<Fetched, String> {
        let s = self.settings(grant, token_path, expires_in_path)?;
        if let Ok(mut r) = self.reply.lock() {
            *r = (status, Bytes::copy_from_slice(body), chunked);
        }
        let resp = self.rt.block_on(self.fetcher.request(&s));
        Ok(
            match resp.and_then(|r| Token::from_response(r, s.default_ttl)) {
                Ok(t) => Fetched::Token {
                    lifetime: t.lifetime(),
                    access: t.access_token().to_string(),
                },
                Err(e) => Fetched::Failed(e),
            },
        )
    }

    /// Fetches, then checks the outcome against SPEC "Tokens" (expiry
    /// rules, expired-on-arrival, 1 MiB) and what the answer said.
    pub fn check(
        &mut self,
        grant: Grant,
        token_path: &str,
        expires_in_path: &str,
        status: u16,
        body: &[u8],
        chunked: bool,
    ) -> Result<(), Finding> {
        // Statuses whose answers carry no body, or that hyper will not
        // send as a final answer, say nothing about the parsers.
        let status = match status {
            200..=599 if ![204, 205, 304].contains(&status) => status,
            _ => 200,
        };
        let Ok(got) = self.fetch(grant, token_path, expires_in_path, status, body, chunked) else {
            return Ok(());
        };
        let expected = expectation(grant, token_path, expires_in_path, status, body);
        match (&expected, &got) {
            (Expect::Token { access, .. }, Fetched::Failed(e)) => finding(
                "token_answer_refused",
                format!("a usable answer was refused ({e}); expected token {access:?}"),
            ),
            (
                Expect::Token { access, lifetime },
                Fetched::Token {
                    lifetime: l,
                    access: a,
                },
            ) => {
                if a != access {
                    return finding("token_wrong_value", format!("{a:?} instead of {access:?}"));
                }
                match lifetime {
                    Some(want) if l.abs_diff(*want) > Duration::from_secs(2) => finding(
                        "token_wrong_lifetime",
                        format!("lifetime {l:?}, the answer said {want:?}"),
                    ),
                    _ => Ok(()),
                }
            }
            (Expect::Expired(why), Fetched::Token { lifetime, .. }) => finding(
                "token_expired_on_arrival_accepted",
                format!("{why}, yet a token valid for {lifetime:?} came out"),
            ),
            (Expect::Failure(why), Fetched::Token { .. }) => {
                finding("token_bad_answer_accepted", why)
            }
            (Expect::TooLarge, Fetched::Token { .. }) => {
                finding("token_too_large_accepted", format!("{} bytes", body.len()))
            }
            (Expect::Unknown, _)
            | (Expect::Failure(_) | Expect::Expired(_) | Expect::TooLarge, Fetched::Failed(_)) => {
                Ok(())
            }
        }
    }
}

fn toml_str(s: &str) -> String {
    // A JSON string literal is a valid TOML basic string.
    serde_json::Value::String(s.to_string()).to_string()
}

fn client_for(
    addr: SocketAddr,
    grant: Grant,
    token_path: &str,
    expires_in_path: &str,
) -> Result<Arc<ClientSettings>, String> {
    let client = match grant {
        Grant::OAuth => format!(
            "grant = \"client_credentials\"\ntoken_url = \"http://{addr}/token\"\nclient_id = \"id\"\nclient_secret = \"secret\"\n"
        ),
        Grant::Capillary => format!(
            "grant = \"capillary\"\ntoken_url = \"http://{addr}/v3/oauth/token/generate\"\nclient_id = \"key\"\nclient_secret = \"secret\"\n"
        ),
        Grant::Custom => {
            let exp = if expires_in_path.is_empty() {
                String::new()
            } else {
                format!("expires_in_path = {}\n", toml_str(expires_in_path))
            };
            format!(
                "grant = \"custom\"\ntoken_url = \"http://{addr}/custom\"\nclient_id = \"id\"\nclient_secret = \"secret\"\nbody = '{{\"key\": \"<<client.client_id>>\"}}'\ntoken_path = {}\n{exp}",
                toml_str(token_path)
            )
        }
    };
    let text = format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\nadmin = \"\"\n[clients.c]\n{client}timeout = \"5s\"\n"
    );
    let cfg = crate::config::load_str(
        Path::new("/nonexistent-fuzz-dir/proxy.toml"),
        &text,
        &fuzz_env,
    )
    .map_err(|e| e.to_string())?;
    cfg.clients
        .get("c")
        .cloned()
        .ok_or_else(|| "no client".to_string())
}

/// What SPEC says an answer must give, worked out independently of the
/// parsers.
enum Expect {
    Token {
        access: String,
        lifetime: Option<Duration>,
    },
    /// The answer states a lifetime that is already over.
    Expired(String),
    Failure(String),
    TooLarge,
    /// Not worth an opinion (e.g. a JWT whose `exp` is about now).
    Unknown,
}

fn at_path<'a>(v: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    path.split('.').try_fold(v, |v, p| match v {
        serde_json::Value::Array(a) => a.get(p.parse::<usize>().ok()?),
        _ => v.get(p),
    })
}

fn expectation(
    grant: Grant,
    token_path: &str,
    expires_in_path: &str,
    status: u16,
    body: &[u8],
) -> Expect {
    if body.len() > crate::token::grants::MAX_TOKEN_RESPONSE {
        return Expect::TooLarge;
    }
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Expect::Failure("the body is not JSON".into());
    };
    if !(200..300).contains(&status) {
        return Expect::Failure(format!("HTTP {status}"));
    }
    let (token, expires) = match grant {
        Grant::OAuth => {
            if json.get("error").is_some_and(serde_json::Value::is_string) {
                return Expect::Failure("an OAuth error".into());
            }
            (json.get("access_token"), json.get("expires_in"))
        }
        Grant::Capillary => {
            if json.get("errors").is_some_and(|e| !e.is_null()) {
                return Expect::Failure("Capillary errors".into());
            }
            let data = json.get("data");
            (
                data.and_then(|d| d.get("accessToken")),
                data.and_then(|d| d.get("ttlSeconds")),
            )
        }
        Grant::Custom => {
            if json.get("error").is_some_and(serde_json::Value::is_string) {
                return Expect::Failure("an OAuth-style error".into());
            }
            (
                at_path(&json, token_path),
                (!expires_in_path.is_empty())
                    .then(|| at_path(&json, expires_in_path))
                    .flatten(),
            )
        }
    };
    let Some(access) = token
        .and_then(serde_json::Value::as_str)
        .filter(|t| !t.is_empty())
    else {
        return Expect::Failure("no token in the answer".into());
    };
    // A lifetime the answer states: a number, or a number in a string.
    let stated: Option<f64> = expires.and_then(|v| match v {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(s) => s.trim().parse::<f64>().ok().filter(|f| f.is_finite()),
        _ => None,
    });
    match stated {
        Some(secs) if secs < 1.0 => Expect::Expired(format!("expires_in {secs}")),
        Some(secs) => Expect::Token {
            access: access.to_string(),
            lifetime: Some(Duration::from_secs_f64(
                secs.min(MAX_LIFETIME.as_secs_f64()),
            )),
        },
        None => match jwt_exp(access) {
            Some(exp) => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64());
                if exp < now - 5.0 {
                    Expect::Expired(format!("a JWT exp {exp} in the past"))
                } else if exp > now + 5.0 {
                    Expect::Token {
                        access: access.to_string(),
                        lifetime: Some(Duration::from_secs_f64(
                            (exp - now).min(MAX_LIFETIME.as_secs_f64()),
                        )),
                    }
                } else {
                    Expect::Unknown
                }
            }
            None => Expect::Token {
                access: access.to_string(),
                lifetime: None,
            },
        },
    }
}

/// The `exp` of a JWT-shaped token (three dot-separated parts, the middle
/// one base64url JSON), as RFC 7519 defines it: any JSON number.
fn jwt_exp(token: &str) -> Option<f64> {
    use base64::Engine;
    let parts: Vec<&str> = token.split('.').collect();
    let [_, payload, _] = parts.as_slice() else {
        return None;
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v.as_object()?.get("exp")?.as_f64()
}

/// A raw `TokenResponse` (as a grant would hand it over) into a `Token`:
/// `expires_in`, else the JWT `exp`, else `default_ttl`; never a panic,
/// never a token that is already expired.
pub fn token_from_response(
    access: &str,
    expires_in: Option<u64>,
    id_token: Option<&str>,
) -> Result<(), Finding> {
    let resp = TokenResponse {
        access_token: Secret::new(access),
        expires_in,
        id_token: id_token.map(Secret::new),
        ..TokenResponse::default()
    };
    if let Ok(t) = Token::from_response(resp, Duration::from_secs(300)) {
        if t.lifetime().is_zero() || t.lifetime() > MAX_LIFETIME {
            return finding("token_lifetime_out_of_range", format!("{:?}", t.lifetime()));
        }
        let _ = t.claim(&["a".into(), "b".into()]);
    }
    Ok(())
}

// === route matching ===

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
            .map(|s| Route {
                settings: s.clone(),
                credential: None,
            })
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

// === inbound ===

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

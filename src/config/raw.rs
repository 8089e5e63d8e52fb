//! Config stage 1: the `proxy.toml` schema exactly as written, deserialized
//! strictly (unknown keys are errors) and with spans kept so that
//! validation can point at file:line:column.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub proxy: RawProxy,
    #[serde(default)]
    pub tls: Option<Spanned<RawTls>>,
    #[serde(default)]
    pub clients: BTreeMap<String, Spanned<RawClient>>,
    #[serde(default)]
    pub routes: Vec<Spanned<RawRoute>>,
    #[serde(default)]
    pub store: Option<Spanned<RawStore>>,
    #[serde(default)]
    pub telemetry: Option<Spanned<RawTelemetry>>,
    /// Per-user accounts: where end users' browsers connect them.
    #[serde(default)]
    pub login: Option<Spanned<RawLogin>>,
}

/// `[telemetry]`: OpenTelemetry traces, off unless an endpoint is set.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTelemetry {
    /// OTLP/HTTP base URL (`/v1/traces` is appended). Default is
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`, else none (tracing off).
    pub otlp_endpoint: Option<Spanned<String>>,
    /// Share of requests without a sampled `traceparent` that start a
    /// sampled trace. Default is `1.0`.
    pub sample_ratio: Option<Spanned<f64>>,
}

/// `[login]`: the listener end users' browsers reach for per-user clients.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLogin {
    /// Where the login pages listen. Required.
    pub listen: Spanned<String>,
    /// How browsers reach `listen` (through the app's ingress); the
    /// redirect URI is this plus `/callback`. Required.
    pub public_url: Spanned<String>,
    /// Allowed prefixes of `?return_to`. Default is none (a "connected" page).
    #[serde(default)]
    pub return_to: Vec<Spanned<String>>,
    /// How long a login link works (once). Default is `10m`.
    #[serde(default, with = "humantime_serde")]
    pub link_ttl: Option<Duration>,
}

/// `[store]`: where tokens are kept besides memory.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    /// `memory`, `file` or `redis`. Default is `memory`.
    #[serde(default)]
    pub backend: Option<Spanned<String>>,
    /// file: the JSON file (mode 0600, atomic writes).
    pub path: Option<Spanned<String>>,
    /// redis: `redis://` or `rediss://` URL.
    pub url: Option<Spanned<String>>,
    pub username: Option<Spanned<String>>,
    pub password: Option<Spanned<String>>,
    /// Default is `sidekey:`.
    pub key_prefix: Option<Spanned<String>>,
    /// 32 bytes, base64: seals every stored token (ChaCha20-Poly1305).
    pub encryption_key: Option<Spanned<String>>,
    /// A redis store without `encryption_key` is refused unless this is
    /// `true`. Default is `false`.
    #[serde(default)]
    pub allow_plaintext: bool,
    /// Per store operation; past it sidekey fetches on its own. Default is `50ms`.
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProxy {
    /// The forward proxy's address. Default is `127.0.0.1:3128`.
    #[serde(default = "default_listen")]
    pub listen: Spanned<String>,
    /// Admin address; `""` disables it. Default is `127.0.0.1:9901`.
    #[serde(default = "default_admin")]
    pub admin: Spanned<String>,
    /// `pass` or `deny`. Default is `pass`.
    #[serde(default)]
    pub unmatched: Unmatched,
    /// `tunnel` or `deny`. Default is `tunnel`.
    #[serde(default)]
    pub connect: ConnectPolicy,
    /// Ports CONNECT may reach. Default is `[443]`.
    #[serde(default = "default_connect_ports")]
    pub connect_ports: Vec<u16>,
    /// Connect + response-head timeout. Default is `30s`.
    #[serde(default = "default_upstream_timeout", with = "humantime_serde")]
    pub upstream_timeout: Duration,
    /// Bodies up to this size are kept for a 401 retry. Default is `64KiB`.
    #[serde(default = "default_retry_body_limit")]
    pub retry_body_limit: ByteSize,
    /// Idle timeout of blind CONNECT tunnels. Default is `5m`.
    #[serde(default = "default_tunnel_idle_timeout", with = "humantime_serde")]
    pub tunnel_idle_timeout: Duration,
    /// CIDRs never connected to. Default is the cloud metadata ranges
    /// (`169.254.0.0/16`, `fe80::/10`, `fd00:ec2::254/128`, `100.100.100.200/32`).
    #[serde(default = "default_deny_destinations")]
    pub deny_destinations: Vec<Spanned<String>>,
    /// Basic credentials the application must present. Default is none.
    #[serde(default)]
    pub proxy_auth: Option<Spanned<RawProxyAuth>>,
    /// SIGTERM: how long in-flight requests, tunnels and WebSockets may
    /// finish before they are cut. Default is `30s`.
    #[serde(default = "default_drain_timeout", with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// SIGTERM: keep accepting this long first (classic sidecars whose app
    /// makes its last calls while shutting down). Default is `0s`.
    #[serde(default, with = "humantime_serde")]
    pub shutdown_delay: Duration,
    /// A new connection must send its first byte, and a request its whole
    /// head, within this (slowloris). Default is `30s`.
    #[serde(default = "default_header_read_timeout", with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// A keep-alive connection with no request in flight and no byte moved
    /// for this long is closed (HTTP/1.1 and HTTP/2). Default is `5m`.
    #[serde(default = "default_idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Client connections served at once; past it, new ones wait in the
    /// listen backlog. Default is `10000`.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Parent proxy for upstream requests (`http://[user:pw@]host:port`;
    /// CONNECT for TLS). `SIDEKEY_UPSTREAM_PROXY` overrides it. Default is none.
    #[serde(default)]
    pub upstream_proxy: Option<Spanned<String>>,
    /// Parent proxy for token endpoints and the login flow. Default is none.
    #[serde(default)]
    pub token_proxy: Option<Spanned<String>>,
    /// Hosts (suffixes) and CIDRs reached directly despite both. Default is `[]`.
    #[serde(default)]
    pub no_upstream_proxy: Vec<Spanned<String>>,
    /// Threads serving the proxy: a number, or `"auto"` (the CPUs this
    /// process may use). Default is `1`.
    #[serde(default)]
    pub workers: Option<Spanned<toml::Value>>,
}

impl Default for RawProxy {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            admin: default_admin(),
            unmatched: Unmatched::default(),
            connect: ConnectPolicy::default(),
            connect_ports: default_connect_ports(),
            upstream_timeout: default_upstream_timeout(),
            retry_body_limit: default_retry_body_limit(),
            tunnel_idle_timeout: default_tunnel_idle_timeout(),
            deny_destinations: default_deny_destinations(),
            proxy_auth: None,
            drain_timeout: default_drain_timeout(),
            shutdown_delay: Duration::ZERO,
            header_read_timeout: default_header_read_timeout(),
            idle_timeout: default_idle_timeout(),
            max_connections: default_max_connections(),
            upstream_proxy: None,
            token_proxy: None,
            no_upstream_proxy: Vec::new(),
            workers: None,
        }
    }
}

fn default_drain_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_header_read_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_idle_timeout() -> Duration {
    Duration::from_secs(300)
}
fn default_max_connections() -> usize {
    10_000
}

fn default_listen() -> Spanned<String> {
    Spanned::new(0..0, "127.0.0.1:3128".into())
}
fn default_admin() -> Spanned<String> {
    Spanned::new(0..0, "127.0.0.1:9901".into())
}
fn default_connect_ports() -> Vec<u16> {
    vec![443]
}
fn default_upstream_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_tunnel_idle_timeout() -> Duration {
    Duration::from_secs(300)
}
fn default_retry_body_limit() -> ByteSize {
    ByteSize(64 * 1024)
}
fn default_deny_destinations() -> Vec<Spanned<String>> {
    // Cloud metadata services: link-local (AWS, GCP, Azure IPv4), AWS's
    // IPv6 endpoint, Alibaba's.
    [
        "169.254.0.0/16",
        "fe80::/10",
        "fd00:ec2::254/128",
        "100.100.100.200/32",
    ]
    .into_iter()
    .map(|s| Spanned::new(0..0, s.to_string()))
    .collect()
}

#[derive(Debug, Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Unmatched {
    #[default]
    Pass,
    Deny,
}

#[derive(Debug, Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ConnectPolicy {
    #[default]
    Tunnel,
    Deny,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProxyAuth {
    pub username: String,
    pub password: String,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub ca_cert: Option<Spanned<String>>,
    pub ca_key: Option<Spanned<String>>,
    #[serde(default)]
    pub extra_roots: Vec<Spanned<String>>,
    /// `webpki` (bundled public roots) or `system` (the OS store). Default is `webpki`.
    #[serde(default)]
    pub upstream_roots: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClient {
    /// Default is `client_credentials`.
    #[serde(default = "default_grant")]
    pub grant: Spanned<String>,
    pub token_url: Spanned<String>,
    pub client_id: Option<Spanned<String>>,
    pub client_secret: Option<Spanned<String>>,
    pub client_auth: Option<Spanned<String>>,
    #[serde(default)]
    pub scopes: Vec<String>,
    pub audience: Option<Spanned<String>>,
    #[serde(default)]
    pub params: BTreeMap<String, Spanned<String>>,
    #[serde(default, with = "humantime_serde")]
    pub refresh_before: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub default_ttl: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    // password
    pub username: Option<Spanned<String>>,
    pub password: Option<Spanned<String>>,
    // refresh_token
    pub refresh_token: Option<Spanned<String>>,
    pub state_file: Option<Spanned<String>>,
    pub authorize_url: Option<Spanned<String>>,
    pub redirect_uri: Option<Spanned<String>>,
    // token_exchange
    pub subject_token: Option<Spanned<String>>,
    pub subject_token_type: Option<Spanned<String>>,
    pub requested_token_type: Option<Spanned<String>>,
    pub actor_token: Option<Spanned<String>>,
    pub actor_token_type: Option<Spanned<String>>,
    // private_key_jwt
    pub private_key: Option<Spanned<String>>,
    pub key_id: Option<Spanned<String>>,
    pub signing_alg: Option<Spanned<String>>,
    // mTLS to the token endpoint
    pub tls_client_cert: Option<Spanned<String>>,
    pub tls_client_key: Option<Spanned<String>>,
    // custom
    pub body: Option<Spanned<String>>,
    pub content_type: Option<Spanned<String>>,
    pub token_path: Option<Spanned<String>>,
    pub expires_in_path: Option<Spanned<String>>,
    pub refresh_token_path: Option<Spanned<String>>,
    /// custom: dotted path to the id_token, for `<<oauth.idToken>>` and
    /// claims. Default is none (the response has no id_token).
    pub id_token_path: Option<Spanned<String>>,
    /// custom: where and what to POST once a refresh token is held.
    pub refresh_url: Option<Spanned<String>>,
    pub refresh_body: Option<Spanned<String>>,
    /// custom: the authorization-code exchange of `sidekey login`.
    pub code_body: Option<Spanned<String>>,
    /// `sidekey login`: extra authorize parameters (`audience`, `prompt`, …).
    #[serde(default)]
    pub authorize_params: BTreeMap<String, String>,
    /// on-behalf-of: cached tokens, one per user. Default is `10000`.
    pub max_subjects: Option<Spanned<usize>>,
    /// Per-user accounts: `<<request.header.NAME>>`, the app's header
    /// naming the end user. Default is none (one token for the client).
    pub user: Option<Spanned<String>>,
    /// Extra headers on every token request (an API gateway's
    /// subscription key). Default is none.
    #[serde(default)]
    pub token_headers: BTreeMap<String, Spanned<String>>,
    /// No request for this long: stop refreshing in the background.
    /// Default is `1h`.
    #[serde(default, with = "humantime_serde")]
    pub idle_after: Option<Duration>,
    /// jwt_bearer: the assertion's `sub`. Default is `client_id`.
    pub subject: Option<Spanned<String>>,
    /// jwt_bearer: the assertion's `aud`. Default is `token_url`.
    pub assertion_audience: Option<Spanned<String>>,
}

fn default_grant() -> Spanned<String> {
    Spanned::new(0..0, "client_credentials".into())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub name: Spanned<String>,
    pub hosts: Spanned<Vec<Spanned<String>>>,
    pub path_prefix: Option<Spanned<String>>,
    #[serde(default)]
    pub methods: Vec<Spanned<String>>,
    #[serde(default)]
    pub match_headers: BTreeMap<String, Spanned<String>>,
    pub client: Option<Spanned<String>>,
    pub upstream: Option<Spanned<String>>,
    #[serde(default)]
    pub set_headers: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    pub remove_headers: Vec<Spanned<String>>,
    /// Query parameters set or replaced, e.g. `{ access_token = "<<oauth.token>>" }`.
    #[serde(default)]
    pub set_query: BTreeMap<String, Spanned<String>>,
    #[serde(default = "default_true")]
    pub retry_on_401: bool,
    /// Like `set_headers`, but only where the app's request lacks the header.
    #[serde(default)]
    pub default_headers: BTreeMap<String, Spanned<String>>,
}

fn default_true() -> bool {
    true
}

/// A size such as `"64KiB"`, `"1MB"` or a plain number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("invalid size {s:?}: expected e.g. \"64KiB\""))?;
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "KB" | "kB" => 1000,
            "KiB" => 1024,
            "MB" => 1000 * 1000,
            "MiB" => 1024 * 1024,
            "GB" => 1000 * 1000 * 1000,
            "GiB" => 1024 * 1024 * 1024,
            other => {
                return Err(format!(
                    "invalid size unit {other:?} in {s:?}: use B, KiB, MiB, GiB, KB, MB or GB"
                ))
            }
        };
        n.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| format!("size {s:?} is too large"))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Num(u64),
            Str(String),
        }
        match Repr::deserialize(d)? {
            Repr::Num(n) => Ok(ByteSize(n)),
            Repr::Str(s) => ByteSize::parse(&s).map_err(serde::de::Error::custom),
        }
    }
}

//! Config stage 3: the typed, validated configuration. Nothing here can be
//! built except through `config::load`, so an unchecked config cannot exist.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use ipnet::IpNet;

pub use super::egress::{DirectHosts, Egress, ParentProxy, UpstreamRoots};
pub use super::raw::{ConnectPolicy, Unmatched};
use crate::secret::Secret;
use crate::template::Template;

#[derive(Debug)]
pub struct ValidConfig {
    /// The file it was loaded from (watched for reloads).
    pub path: PathBuf,
    pub proxy: ProxySettings,
    pub tls: TlsSettings,
    pub clients: BTreeMap<String, Arc<ClientSettings>>,
    pub routes: Vec<RouteSettings>,
    pub store: StoreSettings,
    pub telemetry: TelemetrySettings,
    /// `[login]`: present when some client is per-user.
    pub login: Option<LoginSettings>,
}

/// `[telemetry]`, validated; read once at start-up.
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetrySettings {
    /// `None`: no exporter, no OpenTelemetry layer, no request spans.
    pub otlp_endpoint: Option<url::Url>,
    /// `OTEL_SERVICE_NAME`, else `sidekey`.
    pub service_name: String,
    pub sample_ratio: f64,
}

/// `[login]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginSettings {
    pub listen: SocketAddr,
    /// Without a trailing slash.
    pub public_url: url::Url,
    pub return_to: Vec<url::Url>,
    pub link_ttl: Duration,
}

impl LoginSettings {
    /// `public_url` + `path` (`/start`, `/callback`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.public_url.as_str().trim_end_matches('/'))
    }
}

/// `[store]`, validated.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StoreSettings {
    pub backend: StoreBackend,
    pub key_prefix: String,
    /// Template (env or file) of the base64 key; `None`: plaintext.
    pub encryption_key: Option<Template>,
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum StoreBackend {
    #[default]
    Memory,
    File(PathBuf),
    Redis {
        url: String,
        username: Option<Template>,
        password: Option<Template>,
    },
}

#[derive(Debug, Clone)]
pub struct ProxySettings {
    pub listen: SocketAddr,
    pub admin: Option<SocketAddr>,
    pub unmatched: Unmatched,
    pub connect: ConnectPolicy,
    pub connect_ports: Vec<u16>,
    pub upstream_timeout: Duration,
    pub retry_body_limit: u64,
    pub tunnel_idle_timeout: Duration,
    pub deny_destinations: Vec<IpNet>,
    /// The Basic credentials expected in `Proxy-Authorization`, as `user:password`.
    pub proxy_auth: Option<Secret>,
    pub drain_timeout: Duration,
    pub shutdown_delay: Duration,
    pub limits: ConnLimits,
    pub upstream_proxy: Option<ParentProxy>,
    pub token_proxy: Option<ParentProxy>,
    pub no_upstream_proxy: DirectHosts,
    /// Threads serving connections (1: one thread runs everything).
    pub workers: usize,
}

/// What every served connection is held to, plain or intercepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// First byte of a connection, and a whole request head.
    pub header_read_timeout: Duration,
    /// No request in flight and no byte moved.
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// CA certificate and key for interception: both or neither.
    pub ca: Option<(PathBuf, PathBuf)>,
    pub extra_roots: Vec<PathBuf>,
    pub upstream_roots: UpstreamRoots,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// A lower-cased host name or IP literal.
    Exact { host: String, port: Option<u16> },
    /// `*.example.com`, kept as the suffix `.example.com`.
    Wildcard { suffix: String, port: Option<u16> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamScheme {
    AsRequested,
    Https,
}

#[derive(Debug, Clone)]
pub enum HeaderTemplate {
    /// Known at load: inserted as is, no per-request work.
    Static(HeaderValue),
    Dynamic(Template),
}

#[derive(Debug, Clone)]
pub struct RouteSettings {
    pub name: Arc<str>,
    pub hosts: Vec<HostPattern>,
    pub path_prefix: Option<String>,
    pub methods: Vec<Method>,
    /// Names compare case-insensitively (HeaderName is lower-case); values exactly.
    pub match_headers: Vec<(HeaderName, HeaderValue)>,
    pub client: Option<String>,
    pub upstream: UpstreamScheme,
    pub set_headers: Vec<(HeaderName, HeaderTemplate)>,
    pub remove_headers: Vec<HeaderName>,
    /// Query parameters set or replaced (name, value template).
    pub set_query: Vec<(String, Template)>,
    pub retry_on_401: bool,
    /// Set only where the app's request lacks the header.
    pub default_headers: Vec<(HeaderName, HeaderTemplate)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum JwtAlg {
    Rs256,
    Es256,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ClientAuth {
    /// client_secret_basic (RFC 6749 §2.3.1).
    Basic,
    /// client_secret_post.
    Post,
    /// Public client: only `client_id` is sent.
    None,
    /// RFC 7523 client assertion signed with `key` (PEM).
    PrivateKeyJwt {
        key: Template,
        key_id: Option<String>,
        alg: JwtAlg,
    },
    /// client_secret_jwt: an HS256 assertion keyed with client_secret.
    ClientSecretJwt,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContentType {
    Json,
    Form,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[expect(
    clippy::large_enum_variant,
    reason = "one per client, built once at load: size does not matter here"
)]
pub enum GrantSettings {
    ClientCredentials,
    Password {
        username: Template,
        password: Template,
    },
    RefreshToken {
        refresh_token: Option<Template>,
        state_file: Option<PathBuf>,
        authorize_url: Option<url::Url>,
        redirect_uri: url::Url,
    },
    TokenExchange {
        subject_token: Template,
        /// On-behalf-of: the app's request header holding the user's token
        /// (`<<request.header.NAME>>`); one cached token per user.
        subject_header: Option<HeaderName>,
        max_subjects: usize,
        subject_token_type: String,
        requested_token_type: Option<String>,
        actor_token: Option<Template>,
        actor_token_type: Option<String>,
    },
    Capillary,
    /// Per-user password: each end user signs in once in sidekey's form;
    /// only the tokens are kept.
    PasswordForm,
    /// Per-user accounts: each end user's code exchange and refresh.
    AuthorizationCode {
        authorize_url: url::Url,
    },
    /// RFC 7523 §2.1: a signed assertion is the grant.
    JwtBearer {
        key: Template,
        key_id: Option<String>,
        alg: JwtAlg,
        /// The assertion's `sub`; default client_id.
        subject: Option<Template>,
        /// The assertion's `aud`; default token_url.
        audience: Option<String>,
    },
    Custom {
        body: Template,
        content_type: ContentType,
        token_path: Vec<String>,
        expires_in_path: Option<Vec<String>>,
        refresh_token_path: Option<Vec<String>>,
        /// Where the id_token is; none means the response has none.
        id_token_path: Option<Vec<String>>,
        refresh_token: Option<Template>,
        state_file: Option<PathBuf>,
        /// Once a refresh token is held: POST `refresh_body` here.
        refresh_url: Option<url::Url>,
        refresh_body: Option<Template>,
        /// `sidekey login`: the code exchange body, and where to log in.
        code_body: Option<Template>,
        authorize_url: Option<url::Url>,
        redirect_uri: url::Url,
    },
}

impl GrantSettings {
    pub fn name(&self) -> &'static str {
        match self {
            Self::ClientCredentials => "client_credentials",
            Self::Password { .. } | Self::PasswordForm => "password",
            Self::RefreshToken { .. } => "refresh_token",
            Self::TokenExchange { .. } => "token_exchange",
            Self::Capillary => "capillary",
            Self::AuthorizationCode { .. } => "authorization_code",
            Self::JwtBearer { .. } => "jwt_bearer",
            Self::Custom { .. } => "custom",
        }
    }
}

/// One OAuth client. `PartialEq`/`Hash` cover every setting, so a reload
/// can tell whether a client changed and keep its token if it did not.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientSettings {
    pub name: String,
    pub grant: GrantSettings,
    pub token_url: url::Url,
    pub client_id: Option<Template>,
    pub client_secret: Option<Template>,
    pub client_auth: ClientAuth,
    pub scopes: Vec<String>,
    pub audience: Option<Template>,
    pub params: Vec<(String, Template)>,
    pub refresh_before: Duration,
    pub default_ttl: Duration,
    pub timeout: Duration,
    /// mTLS to the token endpoint (RFC 8705): certificate and key PEM.
    pub tls_identity: Option<(Template, Template)>,
    /// `sidekey login`: extra query parameters of the authorize URL.
    pub authorize_params: Vec<(String, String)>,
    /// Per-user accounts: the app's header naming the end user.
    pub user: Option<HeaderName>,
    /// Extra headers on every token request.
    pub token_headers: Vec<(HeaderName, Template)>,
    /// No request for this long: no more background refreshes.
    pub idle_after: Duration,
}

impl ClientSettings {
    /// Every template of this client, for what is derived from them all
    /// (the `<<file:…>>` paths watched for secret rotation).
    pub fn templates(&self) -> Vec<&Template> {
        let mut t: Vec<&Template> = Vec::new();
        t.extend(
            self.client_id
                .iter()
                .chain(&self.client_secret)
                .chain(&self.audience),
        );
        t.extend(self.params.iter().map(|(_, v)| v));
        t.extend(self.token_headers.iter().map(|(_, v)| v));
        if let Some((cert, key)) = &self.tls_identity {
            t.extend([cert, key]);
        }
        if let ClientAuth::PrivateKeyJwt { key, .. } = &self.client_auth {
            t.push(key);
        }
        match &self.grant {
            GrantSettings::Password { username, password } => t.extend([username, password]),
            GrantSettings::RefreshToken { refresh_token, .. } => t.extend(refresh_token),
            GrantSettings::TokenExchange {
                subject_token,
                actor_token,
                ..
            } => {
                t.push(subject_token);
                t.extend(actor_token);
            }
            GrantSettings::Custom {
                body,
                refresh_token,
                refresh_body,
                code_body,
                ..
            } => {
                t.push(body);
                t.extend(refresh_token.iter().chain(refresh_body).chain(code_body));
            }
            GrantSettings::JwtBearer { key, subject, .. } => {
                t.push(key);
                t.extend(subject);
            }
            GrantSettings::ClientCredentials
            | GrantSettings::Capillary
            | GrantSettings::AuthorizationCode { .. }
            | GrantSettings::PasswordForm => {}
        }
        t
    }

    /// The files this client's templates read (`<<file:…>>`).
    pub fn files(&self) -> Vec<PathBuf> {
        self.templates()
            .into_iter()
            .flat_map(|t| t.files().cloned())
            .collect()
    }

    /// The identity a cached token belongs to (SPEC: token_url, client_id,
    /// grant, scopes, audience, subject), plus every other setting that
    /// changes what the endpoint returns. Never printed: it may hash secrets.
    /// Same settings under any name: such clients share one token.
    pub fn same_client(&self, other: &Self) -> bool {
        let mut a = self.clone();
        a.name.clone_from(&other.name);
        a == *other
    }
}

// The egress settings each kind of connection uses (kept here, by
// `ValidConfig`, so config::egress need not import the model back).
impl ValidConfig {
    /// Upstream requests and blind tunnels: `upstream_proxy`.
    pub fn upstream_egress(&self) -> Egress {
        self.egress(self.proxy.upstream_proxy.clone())
    }

    /// Token endpoints and the login flow: `token_proxy`.
    pub fn token_egress(&self) -> Egress {
        self.egress(self.proxy.token_proxy.clone())
    }

    fn egress(&self, proxy: Option<ParentProxy>) -> Egress {
        Egress {
            roots: self.tls.upstream_roots,
            extra_roots: self.tls.extra_roots.clone(),
            proxy,
            direct: self.proxy.no_upstream_proxy.clone(),
        }
    }
}

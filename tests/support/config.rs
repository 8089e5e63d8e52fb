//! One way for a test to write the TOML of its routes and clients:
//! `route("r").client("c").bearer()` instead of a format string per file.
//! Both print as TOML (`Display`), so they go straight into `format!`.

use std::fmt;

/// A `[[routes]]` table. Hosts default to `localhost`.
#[derive(Clone, Debug)]
pub struct Route {
    name: String,
    hosts: Vec<String>,
    path_prefix: Option<String>,
    client: Option<String>,
    headers: Vec<(String, String)>,
    extra: String,
}

pub fn route(name: &str) -> Route {
    Route {
        name: name.into(),
        hosts: Vec::new(),
        path_prefix: None,
        client: None,
        headers: Vec::new(),
        extra: String::new(),
    }
}

impl Route {
    pub fn host(mut self, host: &str) -> Self {
        self.hosts.push(host.into());
        self
    }

    pub fn path_prefix(mut self, prefix: &str) -> Self {
        self.path_prefix = Some(prefix.into());
        self
    }

    pub fn client(mut self, client: &str) -> Self {
        self.client = Some(client.into());
        self
    }

    /// A `set_headers` entry; `template` is sidekey's `<<...>>` syntax.
    pub fn header(mut self, name: &str, template: &str) -> Self {
        self.headers.push((name.into(), template.into()));
        self
    }

    /// `Authorization = "Bearer <<oauth.token>>"`.
    pub fn bearer(self) -> Self {
        self.header("Authorization", "Bearer <<oauth.token>>")
    }

    /// More settings, as TOML lines (`upstream = "..."`).
    pub fn extra(mut self, toml: &str) -> Self {
        self.extra.push_str(toml);
        self.extra.push('\n');
        self
    }
}

/// A TOML basic string: a JSON string literal is one.
fn toml_str(s: &str) -> String {
    serde_json::Value::String(s.into()).to_string()
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hosts: Vec<String> = if self.hosts.is_empty() {
            vec![toml_str("localhost")]
        } else {
            self.hosts.iter().map(|h| toml_str(h)).collect()
        };
        writeln!(f, "[[routes]]\nname = {}", toml_str(&self.name))?;
        writeln!(f, "hosts = [{}]", hosts.join(", "))?;
        if let Some(p) = &self.path_prefix {
            writeln!(f, "path_prefix = {}", toml_str(p))?;
        }
        if let Some(c) = &self.client {
            writeln!(f, "client = {}", toml_str(c))?;
        }
        if !self.headers.is_empty() {
            let entries: Vec<String> = self
                .headers
                .iter()
                .map(|(k, v)| format!("{} = {}", toml_str(k), toml_str(v)))
                .collect();
            writeln!(f, "set_headers = {{ {} }}", entries.join(", "))?;
        }
        f.write_str(&self.extra)
    }
}

/// A client, by default `client_credentials` with `client_id = "id-NAME"`
/// and `client_secret = "secret-NAME"`, plus `extra` TOML lines.
#[derive(Clone, Debug)]
pub struct Client {
    name: String,
    grant: String,
    token_url: String,
    id: String,
    secret: Option<String>,
    extra: String,
}

pub fn client(name: &str, token_url: &str) -> Client {
    Client {
        name: name.into(),
        grant: "client_credentials".into(),
        token_url: token_url.into(),
        id: format!("id-{name}"),
        secret: Some(format!("secret-{name}")),
        extra: String::new(),
    }
}

impl Client {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Another grant than `client_credentials`.
    pub fn grant(mut self, grant: &str) -> Self {
        self.grant = grant.into();
        self
    }

    /// `client_id` and `client_secret` (`None`: no secret line at all).
    pub fn credentials(mut self, id: &str, secret: Option<&str>) -> Self {
        self.id = id.into();
        self.secret = secret.map(Into::into);
        self
    }

    /// More settings, as TOML lines (`default_ttl = "123s"`).
    pub fn extra(mut self, toml: &str) -> Self {
        self.extra.push_str(toml);
        self.extra.push('\n');
        self
    }
}

impl fmt::Display for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "[clients.{}]", self.name)?;
        writeln!(f, "grant = {}", toml_str(&self.grant))?;
        writeln!(f, "token_url = {}", toml_str(&self.token_url))?;
        writeln!(f, "client_id = {}", toml_str(&self.id))?;
        if let Some(s) = &self.secret {
            writeln!(f, "client_secret = {}", toml_str(s))?;
        }
        writeln!(f, "{}", self.extra)
    }
}

// === [store] ===

/// The key the store tests seal with (32 bytes, base64).
pub const STORE_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// `[store]` on the Redis at `url`, sealed with `STORE_KEY`, with an
/// operation `timeout`, plus `extra` TOML lines.
pub fn redis_store(url: &str, timeout: &str, extra: &str) -> String {
    format!(
        "[store]\nbackend = \"redis\"\nurl = {}\nencryption_key = \"{STORE_KEY}\"\ntimeout = {}\n{extra}",
        toml_str(url),
        toml_str(timeout)
    )
}

/// `[store]` in the file at `path`.
pub fn file_store(path: &std::path::Path) -> String {
    format!(
        "[store]\nbackend = \"file\"\npath = {}\n",
        toml_str(&path.display().to_string())
    )
}

/// `store`, then `client` behind the Bearer route `r` for 127.0.0.1.
pub fn stored_client(store: &str, client: &Client) -> String {
    format!(
        "{store}\n{client}{}",
        route("r").host("127.0.0.1").client(client.name()).bearer()
    )
}

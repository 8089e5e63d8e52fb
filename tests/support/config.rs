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
}

pub fn route(name: &str) -> Route {
    Route {
        name: name.into(),
        hosts: Vec::new(),
        path_prefix: None,
        client: None,
        headers: Vec::new(),
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
        Ok(())
    }
}

/// A `client_credentials` client: `client_id = "id-NAME"`,
/// `client_secret = "secret-NAME"`, plus `extra` TOML lines.
#[derive(Clone, Debug)]
pub struct Client {
    name: String,
    token_url: String,
    extra: String,
}

pub fn client(name: &str, token_url: &str) -> Client {
    Client {
        name: name.into(),
        token_url: token_url.into(),
        extra: String::new(),
    }
}

impl Client {
    /// More settings, as TOML lines (`default_ttl = "123s"`).
    pub fn extra(mut self, toml: &str) -> Self {
        self.extra.push_str(toml);
        self.extra.push('\n');
        self
    }
}

impl fmt::Display for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = &self.name;
        writeln!(
            f,
            "[clients.{n}]\ngrant = \"client_credentials\"\ntoken_url = {}\nclient_id = \"id-{n}\"\nclient_secret = \"secret-{n}\"\n{}",
            toml_str(&self.token_url),
            self.extra
        )
    }
}

//! Templates: `<<name>>` placeholders parsed once at config load into
//! literal and placeholder segments, so a request only concatenates.
//! `<<env.*>>` is resolved at load; the rest are filled per use.

use std::path::PathBuf;

/// Where a template appears decides which placeholders it may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    /// Route `set_headers` values: `oauth.*` and `env.*`.
    Header,
    /// Client fields: `env.*` and `file:`.
    ClientField,
    /// A custom grant's `body`: `env.*`, `file:` and `client.*`.
    Body,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Segment {
    Lit(String),
    Token,
    TokenType,
    IdToken,
    /// `oauth.tokenDecoded.a.b`: a claim path.
    Claim(Vec<String>),
    File(PathBuf),
    /// `client.FIELD` in a custom body.
    Client(String),
    /// An `<<env.*>>` value in a body: known at load, but escaped for the
    /// body's format like any other value.
    Value(String),
    /// `request.header.NAME` (lower-case): the app's own header, for an
    /// on-behalf-of `subject_token`.
    RequestHeader(String),
}

/// How values are escaped in a request body (SPEC "Templates").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    /// Inside a JSON string: escaped; standing as a bare value: a string.
    Json,
    /// `application/x-www-form-urlencoded`: percent-encoded.
    Form,
}

#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Template {
    segments: Vec<Segment>,
    /// `<<env.NAME:-DEFAULT>>` variables that were unset, so a value that
    /// turns out empty can say which variable to set.
    defaulted: Vec<String>,
}

/// Literals may be secrets (`client_secret = "..."`): Debug shows only the
/// placeholders, so a config printed with `{:?}` leaks nothing.
impl std::fmt::Debug for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut l = f.debug_list();
        for seg in &self.segments {
            match seg {
                Segment::Lit(_) | Segment::Value(_) => l.entry(&format_args!("[redacted]")),
                other => l.entry(other),
            };
        }
        l.finish()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TemplateError {
    #[error("unterminated placeholder: `<<` without `>>`")]
    Unterminated,
    #[error("unknown placeholder <<{0}>>")]
    Unknown(String),
    #[error("environment variable {0} is not set (use <<env.{0}:-DEFAULT>> for a default)")]
    MissingEnv(String),
    #[error("<<{0}>> cannot be used here ({1})")]
    NotAllowed(String, &'static str),
}

/// What a header template needs from the current token.
pub trait TokenView {
    fn access_token(&self) -> &str;
    fn token_type(&self) -> &str;
    fn id_token(&self) -> Option<&str>;
    fn claim(&self, path: &[String]) -> Option<String>;
}

/// `<<oauth.tokenDecoded.a.b>>`: the claim at a dotted path, a string as
/// is and anything else as compact JSON; the empty path is the whole object.
pub(crate) fn claim_at(claims: &serde_json::Value, path: &[String]) -> Option<String> {
    let v = path.iter().try_fold(claims, |v, p| v.get(p))?;
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Null => None,
        other => Some(other.to_string()),
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RenderError {
    #[error("the token has no id_token")]
    IdTokenMissing,
    #[error("the token has no claim `{0}`")]
    ClaimMissing(String),
    #[error("no token is available to this template")]
    NoToken,
}

/// Every `<<client.FIELD>>` there is; which of them a body may use depends
/// on the client and the body (checked in `config`).
pub(crate) const CLIENT_FIELDS: &[&str] = &[
    "client_id",
    "client_secret",
    "refresh_token",
    "username",
    "password",
    "audience",
    "scope",
    "auth_code",
    "redirect_uri",
    "code_verifier",
];

impl Template {
    /// Parses `src`, resolving `<<env.*>>` through `env`.
    pub fn parse(
        src: &str,
        ctx: Context,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, TemplateError> {
        let mut segments = Vec::new();
        let mut defaulted = Vec::new();
        let mut lit = String::new();
        let mut rest = src;
        while let Some(start) = rest.find("<<") {
            lit.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after.find(">>").ok_or(TemplateError::Unterminated)?;
            let name = after[..end].trim();
            match placeholder(name, ctx, env, &mut defaulted)? {
                // In a body, an env value is escaped like any value.
                Segment::Lit(s) if ctx == Context::Body && name.starts_with("env.") => {
                    if !lit.is_empty() {
                        segments.push(Segment::Lit(std::mem::take(&mut lit)));
                    }
                    segments.push(Segment::Value(s));
                }
                Segment::Lit(s) => lit.push_str(&s),
                seg => {
                    if !lit.is_empty() {
                        segments.push(Segment::Lit(std::mem::take(&mut lit)));
                    }
                    segments.push(seg);
                }
            }
            rest = &after[end + 2..];
        }
        lit.push_str(rest);
        if !lit.is_empty() || segments.is_empty() {
            segments.push(Segment::Lit(lit));
        }
        Ok(Self {
            segments,
            defaulted,
        })
    }

    /// A template with no placeholders left after load.
    pub fn literal(s: impl Into<String>) -> Self {
        Self {
            segments: vec![Segment::Lit(s.into())],
            defaulted: Vec::new(),
        }
    }

    pub fn as_literal(&self) -> Option<&str> {
        match self.segments.as_slice() {
            [Segment::Lit(s)] => Some(s),
            _ => None,
        }
    }

    /// The literal text between placeholders (`<<env.*>>` values included).
    pub fn literals(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Lit(l) => Some(l.as_str()),
            _ => None,
        })
    }

    /// Environment variables that were unset when this template loaded.
    pub fn defaulted_env(&self) -> &[String] {
        &self.defaulted
    }

    pub fn uses_oauth(&self) -> bool {
        self.segments.iter().any(|s| {
            matches!(
                s,
                Segment::Token | Segment::TokenType | Segment::IdToken | Segment::Claim(_)
            )
        })
    }

    /// Whether `<<oauth.idToken>>` is used (claims are not: they fall back
    /// to the access token).
    pub fn uses_id_token(&self) -> bool {
        self.segments.contains(&Segment::IdToken)
    }

    /// The `<<client.FIELD>>` names used.
    pub fn client_fields(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Client(f) => Some(f.as_str()),
            _ => None,
        })
    }

    /// `Some(name)` if this template is exactly `<<request.header.NAME>>`;
    /// `Err` if it mixes that placeholder with anything else.
    pub fn request_header(&self) -> Result<Option<&str>, &'static str> {
        let uses = self
            .segments
            .iter()
            .any(|s| matches!(s, Segment::RequestHeader(_)));
        match self.segments.as_slice() {
            [Segment::RequestHeader(h)] => Ok(Some(h)),
            _ if uses => Err("<<request.header.NAME>> must stand alone"),
            _ => Ok(None),
        }
    }

    pub fn files(&self) -> impl Iterator<Item = &PathBuf> {
        self.segments.iter().filter_map(|s| match s {
            Segment::File(p) => Some(p),
            _ => None,
        })
    }
}

fn placeholder(
    name: &str,
    ctx: Context,
    env: &dyn Fn(&str) -> Option<String>,
    defaulted: &mut Vec<String>,
) -> Result<Segment, TemplateError> {
    let not_allowed = |why| Err(TemplateError::NotAllowed(name.to_string(), why));
    if let Some(var) = name.strip_prefix("env.") {
        let (var, default) = match var.split_once(":-") {
            Some((v, d)) => (v, Some(d)),
            None => (var, None),
        };
        if var.is_empty() || !var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(TemplateError::Unknown(name.to_string()));
        }
        return match (
            env(var).filter(|v| !v.is_empty() || default.is_none()),
            default,
        ) {
            (Some(v), _) => Ok(Segment::Lit(v)),
            (None, Some(d)) => {
                defaulted.push(var.to_string());
                Ok(Segment::Lit(d.to_string()))
            }
            (None, None) => Err(TemplateError::MissingEnv(var.to_string())),
        };
    }
    if let Some(path) = name.strip_prefix("file:") {
        if ctx == Context::Header {
            return not_allowed("files are read for client fields only");
        }
        if path.is_empty() {
            return Err(TemplateError::Unknown(name.to_string()));
        }
        return Ok(Segment::File(PathBuf::from(path)));
    }
    if let Some(header) = name.strip_prefix("request.header.") {
        if ctx != Context::ClientField {
            return not_allowed("the app's request headers are for an on-behalf-of subject_token");
        }
        if http::HeaderName::from_bytes(header.as_bytes()).is_err() {
            return Err(TemplateError::Unknown(name.to_string()));
        }
        return Ok(Segment::RequestHeader(header.to_ascii_lowercase()));
    }
    if let Some(field) = name.strip_prefix("client.") {
        if ctx != Context::Body {
            return not_allowed("client fields are for a custom grant's body");
        }
        if !CLIENT_FIELDS.contains(&field) {
            return Err(TemplateError::Unknown(name.to_string()));
        }
        return Ok(Segment::Client(field.to_string()));
    }
    if let Some(what) = name.strip_prefix("oauth.") {
        if ctx != Context::Header {
            return not_allowed("oauth values are for route headers");
        }
        return match what {
            "token" => Ok(Segment::Token),
            "tokenType" => Ok(Segment::TokenType),
            "idToken" => Ok(Segment::IdToken),
            // The whole claims object, as compact JSON.
            "tokenDecoded" => Ok(Segment::Claim(Vec::new())),
            _ => match what.strip_prefix("tokenDecoded.") {
                Some(path) if !path.is_empty() && path.split('.').all(|p| !p.is_empty()) => Ok(
                    Segment::Claim(path.split('.').map(str::to_string).collect()),
                ),
                _ => Err(TemplateError::Unknown(name.to_string())),
            },
        };
    }
    Err(TemplateError::Unknown(name.to_string()))
}

mod render;

#[cfg(test)]
mod tests;

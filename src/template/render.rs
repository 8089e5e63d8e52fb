//! Rendering templates: header values from the current token, client
//! fields and bodies with `<<file:…>>` re-read on every use, each value of
//! a body escaped for its format.

use super::{BodyFormat, RenderError, Segment, Template, TokenView};
use crate::secret::Secret;

impl Template {
    /// Renders a header value from the current token.
    pub fn render_header(&self, token: Option<&dyn TokenView>) -> Result<String, RenderError> {
        let mut out = String::new();
        for seg in &self.segments {
            match seg {
                Segment::Lit(s) => out.push_str(s),
                Segment::Token => out.push_str(token.ok_or(RenderError::NoToken)?.access_token()),
                Segment::TokenType => out.push_str(token.ok_or(RenderError::NoToken)?.token_type()),
                Segment::IdToken => out.push_str(
                    token
                        .ok_or(RenderError::NoToken)?
                        .id_token()
                        .ok_or(RenderError::IdTokenMissing)?,
                ),
                Segment::Claim(path) => out.push_str(
                    &token
                        .ok_or(RenderError::NoToken)?
                        .claim(path)
                        .ok_or_else(|| RenderError::ClaimMissing(path.join(".")))?,
                ),
                Segment::File(_)
                | Segment::Client(_)
                | Segment::Value(_)
                | Segment::RequestHeader(_) => return Err(RenderError::NoToken),
            }
        }
        Ok(out)
    }

    /// Renders a client field or body, reading `<<file:…>>` afresh (so a
    /// rotated secret file is picked up) and `<<client.*>>` through `field`.
    pub fn render_value(
        &self,
        field: &dyn Fn(&str) -> Option<Secret>,
    ) -> Result<Secret, std::io::Error> {
        self.render(field, None)
    }

    /// Renders a request body, each value escaped for `format`: a secret
    /// with `"`, `\` or a newline still gives valid JSON, and `&` or `=`
    /// cannot split a form field.
    pub fn render_body(
        &self,
        field: &dyn Fn(&str) -> Option<Secret>,
        format: BodyFormat,
    ) -> Result<Secret, std::io::Error> {
        self.render(field, Some(format))
    }

    fn render(
        &self,
        field: &dyn Fn(&str) -> Option<Secret>,
        format: Option<BodyFormat>,
    ) -> Result<Secret, std::io::Error> {
        let mut out = String::new();
        let mut json = JsonState::default();
        for seg in &self.segments {
            let value = match seg {
                Segment::Lit(s) => {
                    json.scan(s);
                    out.push_str(s);
                    continue;
                }
                Segment::Value(v) => v.clone(),
                Segment::File(path) => read_secret_file(path)?,
                Segment::Client(name) => field(name)
                    .map(|v| v.expose().to_string())
                    .unwrap_or_default(),
                Segment::Token
                | Segment::TokenType
                | Segment::IdToken
                | Segment::Claim(_)
                | Segment::RequestHeader(_) => continue,
            };
            match format {
                None => out.push_str(&value),
                Some(BodyFormat::Form) => {
                    out.extend(url::form_urlencoded::byte_serialize(value.as_bytes()));
                }
                Some(BodyFormat::Json) => {
                    let quoted = serde_json::Value::String(value).to_string();
                    if json.in_string {
                        out.push_str(&quoted[1..quoted.len() - 1]);
                    } else {
                        out.push_str(&quoted);
                    }
                }
            }
        }
        Ok(Secret::new(out))
    }
}

/// Whether the literal text so far leaves us inside a JSON string.
#[derive(Default)]
struct JsonState {
    in_string: bool,
    escaped: bool,
}

impl JsonState {
    fn scan(&mut self, text: &str) {
        for c in text.chars() {
            match (self.in_string, self.escaped, c) {
                (true, true, _) => self.escaped = false,
                (true, false, '\\') => self.escaped = true,
                (true, false, '"') => self.in_string = false,
                (false, _, '"') => self.in_string = true,
                _ => {}
            }
        }
    }
}

/// Reads a secret file, trimming one trailing newline (`\n` or `\r\n`).
fn read_secret_file(path: &std::path::Path) -> Result<String, std::io::Error> {
    let mut s = std::fs::read_to_string(path).map_err(|e| {
        std::io::Error::new(e.kind(), format!("cannot read {}: {e}", path.display()))
    })?;
    if s.ends_with('\n') {
        s.pop();
        if s.ends_with('\r') {
            s.pop();
        }
    }
    Ok(s)
}

//! What a route's templates say for one token: the header values
//! (`default_headers`, then `set_headers`, in route order) and the
//! `set_query` values. Rendered once per token and kept by the route, so a
//! request copies values instead of formatting strings and parsing them
//! into headers.

use std::sync::{Arc, Mutex, PoisonError};

use http::HeaderValue;

use crate::config::{HeaderTemplate, RouteSettings};
use crate::error::ProxyError;
use crate::template::TokenView;
use crate::token::Token;

/// A route's template values for one token (or none, for a route
/// without a client).
pub struct Values {
    token: Option<Arc<Token>>,
    /// One per `default_headers` entry: a value, or why the token cannot
    /// give one. Only a default the app did not send is an error (a
    /// request that brings its own never needs the token's claim).
    pub(crate) defaults: Vec<Result<HeaderValue, String>>,
    /// One per `set_headers` entry.
    pub(crate) sets: Vec<HeaderValue>,
    /// One per `set_query` entry, not yet percent-encoded.
    pub(crate) query: Vec<String>,
}

impl Values {
    /// Renders every template of `route` with `token`.
    pub fn render(route: &RouteSettings, token: Option<&Arc<Token>>) -> Result<Self, ProxyError> {
        let view = token.map(|t| &**t as &dyn TokenView);
        let defaults = route
            .default_headers
            .iter()
            .map(|(_, template)| value(template, view))
            .collect();
        let sets = route
            .set_headers
            .iter()
            .map(|(name, template)| {
                value(template, view).map_err(|reason| ProxyError::TokenContent {
                    header: name.to_string(),
                    reason,
                })
            })
            .collect::<Result<_, ProxyError>>()?;
        let query = route
            .set_query
            .iter()
            .map(|(name, template)| {
                template
                    .render_header(view)
                    .map_err(|e| ProxyError::TokenContent {
                        header: format!("?{name}"),
                        reason: e.to_string(),
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            token: token.cloned(),
            defaults,
            sets,
            query,
        })
    }

    /// The token these values were rendered with.
    pub fn token(&self) -> Option<&Arc<Token>> {
        self.token.as_ref()
    }

    fn rendered_with(&self, token: Option<&Arc<Token>>) -> bool {
        match (&self.token, token) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

/// One header value: a static one as configured, a template rendered with
/// the token (and marked sensitive).
fn value(template: &HeaderTemplate, view: Option<&dyn TokenView>) -> Result<HeaderValue, String> {
    match template {
        HeaderTemplate::Static(v) => Ok(v.clone()),
        HeaderTemplate::Dynamic(t) => {
            let rendered = t.render_header(view).map_err(|e| e.to_string())?;
            let mut v = HeaderValue::try_from(rendered)
                .map_err(|_| "the token holds characters a header cannot carry".to_string())?;
            v.set_sensitive(true);
            Ok(v)
        }
    }
}

/// A route's values for the token its client holds now (or for no token):
/// rendered when the token changes, then shared by every request that
/// carries it. Holding the token keeps its address from being reused, so
/// pointer identity cannot match a different token.
#[derive(Default)]
pub(crate) struct ValueCache(Mutex<Option<Arc<Values>>>);

impl ValueCache {
    pub(crate) fn get(
        &self,
        route: &RouteSettings,
        token: Option<&Arc<Token>>,
    ) -> Result<Arc<Values>, ProxyError> {
        let cached = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(v) = cached.filter(|v| v.rendered_with(token)) {
            return Ok(v);
        }
        // Rendered outside the lock: a request racing this one for the
        // same new token renders it too, and either result is right.
        let fresh = Arc::new(Values::render(route, token)?);
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(&fresh));
        Ok(fresh)
    }
}

/// A route of client `c` with the given header lines, and tokens: what
/// the value tests here, in rewrite and in route are written against.
#[cfg(test)]
pub(crate) mod fixture {
    use super::*;

    pub(crate) fn route(lines: &str) -> RouteSettings {
        let toml = format!(
            "[clients.c]\ntoken_url = \"http://127.0.0.1:1/token\"\nclient_id = \"id\"\nclient_secret = \"s\"\n\
             [[routes]]\nname = \"r\"\nhosts = [\"api.example.com\"]\nclient = \"c\"\n{lines}"
        );
        let cfg =
            crate::config::load_str(std::path::Path::new("t.toml"), &toml, &|_| None).unwrap();
        cfg.routes.into_iter().next().unwrap()
    }

    pub(crate) fn token(value: &str) -> Arc<Token> {
        let resp = crate::token::model::TokenResponse {
            access_token: crate::secret::Secret::new(value),
            ..Default::default()
        };
        Arc::new(Token::from_response(resp, std::time::Duration::from_secs(60)).unwrap())
    }

    /// A default whose claim an opaque token lacks.
    pub(crate) const DEFAULT_SUB: &str =
        "set_headers = { Authorization = \"Bearer <<oauth.token>>\" }\n\
         default_headers = { \"X-Sub\" = \"<<oauth.tokenDecoded.sub>>\" }";
}

#[cfg(test)]
mod tests {
    use super::fixture::{self, token};
    use super::*;

    fn route() -> RouteSettings {
        fixture::route(
            "set_headers = { Authorization = \"Bearer <<oauth.token>>\", \"X-Team\" = \"platform\" }\n\
             default_headers = { \"X-Kind\" = \"t-<<oauth.token>>\" }\n\
             set_query = { key = \"<<oauth.token>>\" }",
        )
    }

    #[test]
    fn values_are_rendered_once_per_token_and_anew_for_the_next() {
        let (route, cache) = (route(), ValueCache::default());
        let (first, second) = (token("tok-1"), token("tok-2"));
        let a = cache.get(&route, Some(&first)).unwrap();
        assert_eq!(a.defaults[0].as_ref().unwrap(), "t-tok-1");
        assert_eq!(a.sets[0], "Bearer tok-1");
        assert_eq!(a.sets[1], "platform");
        assert!(a.sets.iter().all(HeaderValue::is_sensitive));
        assert_eq!(a.query, ["tok-1"]);
        // Same token: the very same values, nothing rendered.
        assert!(Arc::ptr_eq(&a, &cache.get(&route, Some(&first)).unwrap()));
        // A new token (a refresh): rendered anew, and kept in its place.
        let b = cache.get(&route, Some(&second)).unwrap();
        assert_eq!(b.sets[0], "Bearer tok-2");
        assert!(Arc::ptr_eq(&b, &cache.get(&route, Some(&second)).unwrap()));
        // A token equal in value but not the same token is rendered for itself.
        let again = token("tok-2");
        let c = cache.get(&route, Some(&again)).unwrap();
        assert!(!Arc::ptr_eq(&b, &c));
        assert!(c.token().is_some_and(|t| Arc::ptr_eq(t, &again)));
    }

    #[test]
    fn a_token_a_header_cannot_carry_is_an_error_every_time_and_never_kept() {
        let (route, cache) = (route(), ValueCache::default());
        let bad = token("line\nbreak");
        for _ in 0..2 {
            let err = cache.get(&route, Some(&bad)).err().unwrap();
            assert!(matches!(err, ProxyError::TokenContent { .. }), "{err:?}");
        }
        assert!(cache.0.lock().unwrap().is_none());
    }

    /// A default header whose claim the token lacks does not fail the
    /// request when the app sent the header itself (it did fail, for every
    /// request, while every default was rendered up front).
    #[test]
    fn a_default_the_token_cannot_fill_fails_only_where_the_app_sent_none() {
        let route = fixture::route(fixture::DEFAULT_SUB);
        let values = Values::render(&route, Some(&token("opaque-token")))
            .expect("rendering must not fail on a default the app may send itself");
        assert!(values.defaults[0]
            .as_ref()
            .is_err_and(|e| e.contains("sub")));
        assert_eq!(values.sets[0], "Bearer opaque-token");
    }
}

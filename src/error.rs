//! Everything that can fail while serving a request, grouped by where it
//! came from, and the one place that turns it into a response with
//! `X-Sidekey-Error` and the SPEC's JSON body.

use std::time::Duration;

use http::{HeaderValue, Response, StatusCode};

use crate::body::{self, ProxyBody};
use crate::metrics::{ErrorLabels, Metrics, RouteName};
use crate::token::FetchError;

pub(crate) const ERROR_HEADER: &str = "x-sidekey-error";
/// Where a per-user route's user connects their account (`login_required`).
pub(crate) const LOGIN_HEADER: &str = "x-sidekey-login";

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    // === downstream: the application's request ===
    #[error("{0}")]
    BadRequest(String),
    #[error("proxy authentication required")]
    ProxyAuthRequired,
    #[error("{0}")]
    Denied(String),

    // === tokens ===
    #[error("no valid token for client {client:?}: {source}")]
    TokenUnavailable { client: String, source: FetchError },
    #[error("header {header:?}: {reason}")]
    TokenContent { header: String, reason: String },
    #[error("{0}")]
    SubjectMissing(String),
    #[error("the token endpoint refused the user's token for client {client:?}: {source}")]
    SubjectRejected { client: String, source: FetchError },
    #[error("{0}")]
    UserMissing(String),
    #[error("this user has not connected client {client:?}: send the user's browser to login_url")]
    LoginRequired { client: String, login_url: String },

    // === upstream ===
    #[error("cannot reach {authority}: {reason}")]
    UpstreamUnreachable { authority: String, reason: String },
    #[error("{authority} did not answer within {after:?}")]
    UpstreamTimeout { authority: String, after: Duration },
}

impl ProxyError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad_request",
            Self::ProxyAuthRequired => "proxy_auth_required",
            Self::Denied(_) => "denied",
            Self::TokenUnavailable { .. } | Self::TokenContent { .. } => "token_unavailable",
            Self::SubjectMissing(_) => "subject_missing",
            Self::SubjectRejected { .. } => "subject_rejected",
            Self::UserMissing(_) => "user_missing",
            Self::LoginRequired { .. } => "login_required",
            Self::UpstreamUnreachable { .. } => "upstream_unreachable",
            Self::UpstreamTimeout { .. } => "upstream_timeout",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::ProxyAuthRequired => StatusCode::PROXY_AUTHENTICATION_REQUIRED,
            Self::Denied(_) => StatusCode::FORBIDDEN,
            Self::TokenUnavailable { .. } | Self::TokenContent { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::SubjectMissing(_)
            | Self::SubjectRejected { .. }
            | Self::UserMissing(_)
            | Self::LoginRequired { .. } => StatusCode::UNAUTHORIZED,
            Self::UpstreamUnreachable { .. } => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The one place a sidekey error becomes the application's response:
    /// counted in `sidekey_errors_total{route,code}`, so sidekey's own 503s
    /// (`token_unavailable`) are told from the upstream's.
    pub fn respond(
        &self,
        metrics: &Metrics,
        label: &RouteName,
        route: Option<&str>,
        client: Option<&str>,
    ) -> Response<ProxyBody> {
        metrics
            .op
            .errors
            .get_or_create(&ErrorLabels {
                route: label.clone(),
                code: self.code(),
            })
            .inc();
        self.to_response(route, client)
    }

    /// The response the application sees. `route`/`client` are null where
    /// they do not apply.
    pub fn to_response(&self, route: Option<&str>, client: Option<&str>) -> Response<ProxyBody> {
        let mut json = serde_json::json!({
            "error": self.code(),
            "message": self.to_string(),
            "route": route,
            "client": client,
        });
        let login = match self {
            Self::LoginRequired { login_url, .. } => {
                json["login_url"] = login_url.as_str().into();
                HeaderValue::from_str(login_url).ok()
            }
            _ => None,
        };
        let mut resp = Response::new(body::full(json.to_string()));
        *resp.status_mut() = self.status();
        let h = resp.headers_mut();
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(ERROR_HEADER, HeaderValue::from_static(self.code()));
        if matches!(self, Self::ProxyAuthRequired) {
            h.insert(
                http::header::PROXY_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"sidekey\""),
            );
        }
        if matches!(self, Self::SubjectMissing(_) | Self::SubjectRejected { .. }) {
            h.insert(
                http::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"sidekey\""),
            );
        }
        if let Some(url) = login {
            h.insert(LOGIN_HEADER, url);
        }
        if matches!(self, Self::TokenUnavailable { .. }) {
            h.insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn renders_code_header_and_json() {
        let e = ProxyError::Denied("no route for evil.example".into());
        let resp = e.to_response(None, None);
        assert_eq!(resp.status(), 403);
        assert_eq!(resp.headers()[ERROR_HEADER], "denied");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"], "denied");
        assert!(v["route"].is_null() && v["client"].is_null());
        let e = ProxyError::TokenUnavailable {
            client: "orders".into(),
            source: FetchError::Status(500),
        };
        assert_eq!(e.status(), 503);
        assert_eq!(e.code(), "token_unavailable");
    }
}

//! Token endpoint requests, one module per kind of endpoint: standard OAuth
//! form grants (RFC 6749, 8693), Capillary's JSON endpoint, and `custom`
//! endpoints described by a body template and JSON paths.

mod capillary;
pub(crate) mod client_auth;
pub(crate) mod custom;
pub(crate) mod endpoint;
pub(crate) mod form;
mod idp_text;
pub(crate) mod refresh_state;

pub(crate) use endpoint::field;

use std::time::Duration;

use crate::config::{ClientSettings, GrantSettings};
use crate::secret::Secret;

use super::model::{FetchError, TokenResponse};
use endpoint::pem_or_path;
use refresh_state::RefreshState;

/// Everything needed to ask one client's token endpoint for a token.
pub struct Fetcher {
    http: reqwest::Client,
    /// The newest refresh token of a `refresh_token` client (rotations included).
    refresh: Option<RefreshState>,
}

impl Fetcher {
    pub fn new(
        settings: &ClientSettings,
        egress: &crate::config::Egress,
    ) -> Result<Self, FetchError> {
        let mut b = reqwest::Client::builder()
            .use_rustls_tls()
            // HTTP(S)_PROXY in sidekey's environment is meant for the app;
            // honouring it would send client secrets to that proxy (or loop
            // them back into sidekey).
            .no_proxy()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout.min(Duration::from_secs(10)))
            // A token endpoint that redirects is misconfigured; following it
            // would send credentials to another host.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("sidekey/", env!("CARGO_PKG_VERSION")));
        b = endpoint::egress(b, egress)?;
        if let Some((cert, key)) = &settings.tls_identity {
            let cert = pem_or_path(
                cert.render_value(&|_| None).map_err(setup)?.expose(),
                "tls_client_cert",
            )?;
            let key = pem_or_path(
                key.render_value(&|_| None).map_err(setup)?.expose(),
                "tls_client_key",
            )?;
            let mut pem = cert.into_bytes();
            pem.push(b'\n');
            pem.extend_from_slice(key.as_bytes());
            let id = reqwest::Identity::from_pem(&pem)
                .map_err(|e| FetchError::Setup(format!("tls_client_cert/tls_client_key: {e}")))?;
            b = b.identity(id);
        }
        let http = b
            .build()
            .map_err(|e| FetchError::Setup(format!("HTTP client: {e}")))?;
        let refresh = match &settings.grant {
            GrantSettings::RefreshToken {
                refresh_token,
                state_file,
                ..
            }
            | GrantSettings::Custom {
                refresh_token,
                state_file,
                ..
            } => Some(
                RefreshState::load(refresh_token.as_ref(), state_file.as_deref()).map_err(setup)?,
            ),
            // A password client refreshes with the refresh token of its
            // last response, held in memory only.
            GrantSettings::Password { .. } => Some(RefreshState::load(None, None).map_err(setup)?),
            _ => None,
        };
        Ok(Self { http, refresh })
    }

    /// One request to the token endpoint.
    pub async fn request(&self, s: &ClientSettings) -> Result<TokenResponse, FetchError> {
        self.request_for(s, None).await
    }

    /// One request; `subject` is the user's token of an on-behalf-of
    /// exchange (`<<request.header.*>>`), never logged.
    pub async fn request_for(
        &self,
        s: &ClientSettings,
        subject: Option<&Secret>,
    ) -> Result<TokenResponse, FetchError> {
        let resp = match &s.grant {
            GrantSettings::Capillary => capillary::fetch(&self.http, s).await?,
            GrantSettings::Custom { .. } => {
                custom::fetch(&self.http, s, self.refresh_token()).await?
            }
            GrantSettings::Password { .. } => self.password(s).await?,
            _ => form::fetch(&self.http, s, self.refresh.as_ref(), subject).await?,
        };
        if let (Some(state), Some(rt)) = (&self.refresh, &resp.refresh_token) {
            state.rotate(rt.clone()).map_err(setup)?;
        }
        Ok(resp)
    }

    /// The password grant as its users document it: once a response has
    /// carried a refresh token, refresh with it; only when that is refused
    /// sign in with the password again.
    async fn password(&self, s: &ClientSettings) -> Result<TokenResponse, FetchError> {
        if let (Some(state), Some(rt)) = (&self.refresh, self.refresh_token()) {
            match form::refresh(&self.http, s, rt).await {
                Err(FetchError::OAuth { error, .. }) => {
                    tracing::info!(client = %s.name, error, "refresh token refused: signing in with the password");
                    state.clear();
                }
                other => return other,
            }
        }
        form::fetch(&self.http, s, None, None).await
    }

    /// The HTTP client for this token endpoint (timeouts, roots, mTLS).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub fn refresh_token(&self) -> Option<Secret> {
        self.refresh.as_ref().and_then(RefreshState::current)
    }
}

impl crate::token::cache::FetchToken for Fetcher {
    fn fetch<'a>(
        &'a self,
        s: &'a ClientSettings,
    ) -> futures_util::future::BoxFuture<'a, Result<TokenResponse, FetchError>> {
        Box::pin(self.request(s))
    }

    fn refresh_token(&self) -> Option<Secret> {
        Fetcher::refresh_token(self)
    }

    fn adopt_refresh_token(&self, token: Secret) {
        if let Some(state) = &self.refresh {
            if let Err(e) = state.rotate(token) {
                tracing::warn!(error = %e, "cannot save the shared refresh token locally");
            }
        }
    }
}

fn setup(e: impl std::fmt::Display) -> FetchError {
    FetchError::Setup(e.to_string())
}

//! Token stage: a route's credential. The pipeline asks it for a lease on
//! a token and never learns whether the token is the client's own, an
//! on-behalf-of exchange of the user's token, or a per-user account; the
//! lease knows what an upstream 401 means for it.

use std::sync::Arc;

use http::HeaderMap;

use crate::error::ProxyError;
use crate::token::accounts::AccountError;
use crate::token::per_user::SubjectError;
use crate::token::{FetchError, Slot, Token, TokenSource};

/// Where a route's tokens come from (the kind lives in `TokenSource`).
#[derive(Clone)]
pub struct Credential {
    source: TokenSource,
    /// The route's client name, for errors.
    client: String,
}

/// One request's hold on a token, and the slot it came from.
pub struct Lease {
    slot: Arc<Slot>,
    token: Arc<Token>,
    /// An on-behalf-of or per-user account token: one user's, not the
    /// client's own.
    per_user: bool,
}

impl Credential {
    pub fn new(source: TokenSource, client: String) -> Self {
        Self { source, client }
    }

    pub fn source(&self) -> &TokenSource {
        &self.source
    }

    fn client(&self) -> String {
        self.client.clone()
    }

    /// A token for this request. The header naming the user (an
    /// on-behalf-of subject, or a per-user account's user id) is taken
    /// out of `headers` here, so it never reaches the upstream.
    pub async fn acquire(&self, headers: &mut HeaderMap) -> Result<Lease, ProxyError> {
        let slot = match &self.source {
            TokenSource::Client(slot) => Arc::clone(slot),
            TokenSource::PerUser(users) => {
                let value = take(headers, users.header());
                match users.slot(value.as_ref()) {
                    Ok(slot) => slot,
                    Err(e @ SubjectError::Missing(_)) => {
                        return Err(ProxyError::SubjectMissing(e.to_string()))
                    }
                    Err(e @ SubjectError::Expired(_)) => {
                        return Err(ProxyError::SubjectRejected {
                            client: self.client(),
                            source: FetchError::BadResponse(e.to_string()),
                        })
                    }
                }
            }
            TokenSource::Account(accounts) => {
                let value = take(headers, accounts.header());
                return match accounts.token(value.as_ref()).await {
                    Ok((slot, token)) => Ok(Lease {
                        slot,
                        token,
                        per_user: true,
                    }),
                    Err(e) => Err(self.account_error(e)),
                };
            }
        };
        match slot.get().await {
            Ok(token) => Ok(Lease {
                slot,
                token,
                per_user: matches!(self.source, TokenSource::PerUser(_)),
            }),
            // The IdP refused this user's token: the user's problem (401),
            // not an outage (503); other users' slots are untouched.
            Err(source)
                if matches!(self.source, TokenSource::PerUser(_)) && subject_refused(&source) =>
            {
                Err(ProxyError::SubjectRejected {
                    client: self.client(),
                    source,
                })
            }
            Err(source) => Err(ProxyError::TokenUnavailable {
                client: self.client(),
                source,
            }),
        }
    }

    fn account_error(&self, e: AccountError) -> ProxyError {
        match e {
            AccountError::UserMissing(header) => ProxyError::UserMissing(format!(
                "the request has no {header} header naming the user"
            )),
            AccountError::LoginRequired { login_url } => ProxyError::LoginRequired {
                client: self.client(),
                login_url,
            },
            AccountError::Fetch(source) => ProxyError::TokenUnavailable {
                client: self.client(),
                source,
            },
        }
    }
}

/// Removes every `name` header, returning the first.
fn take(headers: &mut HeaderMap, name: &http::HeaderName) -> Option<http::HeaderValue> {
    let value = headers.get(name).cloned();
    while headers.remove(name).is_some() {}
    value
}

/// RFC 8693 answers `invalid_request` for an unacceptable subject token;
/// most IdPs (Entra's on-behalf-of, oidc-provider) say `invalid_grant`.
fn subject_refused(e: &FetchError) -> bool {
    matches!(e, FetchError::OAuth { error, .. } if error == "invalid_grant" || error == "invalid_request")
}

impl Lease {
    pub fn token(&self) -> &Arc<Token> {
        &self.token
    }

    pub fn client(&self) -> &str {
        self.slot.name()
    }

    /// Whether the token is one user's rather than the client's own.
    pub fn per_user(&self) -> bool {
        self.per_user
    }

    /// The upstream answered 401 with this lease's token. Returns whether
    /// a retry is worth it at all; if so the token is dropped (unless a
    /// newer one replaced it) so `fresh` fetches anew.
    pub fn rejected(&self) -> bool {
        if !self.slot.trusts_401() {
            return false;
        }
        self.slot.invalidate(&self.token);
        true
    }

    /// A token other than the rejected one, if one can be had.
    pub async fn fresh(&self) -> Option<Arc<Token>> {
        match self.slot.get().await {
            Ok(fresh) if !Arc::ptr_eq(&fresh, &self.token) => Some(fresh),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(client = self.slot.name(), error = %e, "upstream answered 401 and no fresh token could be had");
                None
            }
        }
    }

    /// The fresh token was rejected too: 401s are not about token age.
    pub fn rejected_again(&self) {
        self.slot.distrust_401();
    }
}

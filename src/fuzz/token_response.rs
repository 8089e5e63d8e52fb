//! The `token_response` target: a loopback token endpoint answering what
//! the fuzzer says, read by the real client and parsers.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderValue;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};

use super::token_oracle::{expectation, Expect};
use super::{finding, fuzz_env, toml_str, Finding};
use crate::config::ClientSettings;
use crate::template::TokenView;
use crate::token::grants::Fetcher;
use crate::token::{FetchError, Token};

/// Which parser reads the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Grant {
    /// RFC 6749 §5.1/§5.2 (every form grant).
    OAuth,
    /// Capillary's `data.accessToken` / `data.ttlSeconds` / `errors`.
    Capillary,
    /// `custom`: dotted `token_path` and `expires_in_path`.
    Custom,
}

type Reply = (u16, Bytes, bool);

/// A token endpoint on loopback that answers whatever the fuzzer says, and
/// one `Fetcher` that asks it: the answer goes through the real client
/// (streaming, the 1 MiB limit) and the real parsers, then
/// `Token::from_response`. The private parsers are reached through their
/// public caller, so nothing in `token/` has to be opened up for this.
pub struct TokenEndpoint {
    rt: tokio::runtime::Runtime,
    addr: SocketAddr,
    reply: Arc<Mutex<Reply>>,
    fetcher: Fetcher,
    clients: HashMap<(Grant, String, String), Arc<ClientSettings>>,
}

/// What a fetch gave: the token's lifetime, or why it failed.
#[derive(Debug)]
pub enum Fetched {
    Token { lifetime: Duration, access: String },
    Failed(FetchError),
}

impl TokenEndpoint {
    pub fn new() -> Result<Self, String> {
        crate::init_crypto();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let reply: Arc<Mutex<Reply>> = Arc::new(Mutex::new((200, Bytes::new(), false)));
        let r = Arc::clone(&reply);
        let addr = rt.block_on(async move {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(|e| e.to_string())?;
            let addr = l.local_addr().map_err(|e| e.to_string())?;
            tokio::spawn(async move {
                while let Ok((s, _)) = l.accept().await {
                    let r = Arc::clone(&r);
                    let svc = hyper::service::service_fn(move |_req| {
                        let (status, body, chunked) =
                            r.lock()
                                .map(|g| g.clone())
                                .unwrap_or((500, Bytes::new(), false));
                        async move {
                            let body: BoxBody<Bytes, std::convert::Infallible> = if chunked {
                                let frames =
                                    futures_util::stream::iter([Ok(http_body::Frame::data(body))]);
                                BodyExt::boxed(StreamBody::new(frames))
                            } else {
                                BodyExt::boxed(Full::new(body))
                            };
                            let mut resp = http::Response::new(body);
                            *resp.status_mut() =
                                http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
                            resp.headers_mut().insert(
                                http::header::CONTENT_TYPE,
                                HeaderValue::from_static("application/json"),
                            );
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    });
                    tokio::spawn(
                        hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(s), svc),
                    );
                }
            });
            Ok::<_, String>(addr)
        })?;
        let mut me = Self {
            rt,
            addr,
            reply,
            fetcher: Fetcher::new(
                &*client_for(addr, Grant::OAuth, "", "")?,
                &crate::config::Egress::default(),
            )
            .map_err(|e| e.to_string())?,
            clients: HashMap::new(),
        };
        me.settings(Grant::OAuth, "", "")?;
        Ok(me)
    }

    fn settings(
        &mut self,
        grant: Grant,
        token_path: &str,
        expires_in_path: &str,
    ) -> Result<Arc<ClientSettings>, String> {
        let key = (grant, token_path.to_string(), expires_in_path.to_string());
        if let Some(s) = self.clients.get(&key) {
            return Ok(Arc::clone(s));
        }
        if self.clients.len() > 512 {
            self.clients.clear();
        }
        let s = client_for(self.addr, grant, token_path, expires_in_path)?;
        self.clients.insert(key, Arc::clone(&s));
        Ok(s)
    }

    /// The endpoint answers `status` with `body` (chunked, without a
    /// length, if `chunked`); returns what sidekey made of it. `Err` is a
    /// harness problem (a custom path the config refuses), not a finding.
    pub fn fetch(
        &mut self,
        grant: Grant,
        token_path: &str,
        expires_in_path: &str,
        status: u16,
        body: &[u8],
        chunked: bool,
    ) -> Result<Fetched, String> {
        let s = self.settings(grant, token_path, expires_in_path)?;
        if let Ok(mut r) = self.reply.lock() {
            *r = (status, Bytes::copy_from_slice(body), chunked);
        }
        let resp = self.rt.block_on(self.fetcher.request(&s));
        Ok(
            match resp.and_then(|r| Token::from_response(r, s.default_ttl)) {
                Ok(t) => Fetched::Token {
                    lifetime: t.lifetime(),
                    access: t.access_token().to_string(),
                },
                Err(e) => Fetched::Failed(e),
            },
        )
    }

    /// Fetches, then checks the outcome against SPEC "Tokens" (expiry
    /// rules, expired-on-arrival, 1 MiB) and what the answer said.
    pub fn check(
        &mut self,
        grant: Grant,
        token_path: &str,
        expires_in_path: &str,
        status: u16,
        body: &[u8],
        chunked: bool,
    ) -> Result<(), Finding> {
        // Statuses whose answers carry no body, or that hyper will not
        // send as a final answer, say nothing about the parsers.
        let status = match status {
            200..=599 if ![204, 205, 304].contains(&status) => status,
            _ => 200,
        };
        let Ok(got) = self.fetch(grant, token_path, expires_in_path, status, body, chunked) else {
            return Ok(());
        };
        let expected = expectation(grant, token_path, expires_in_path, status, body);
        match (&expected, &got) {
            (Expect::Token { access, .. }, Fetched::Failed(e)) => finding(
                "token_answer_refused",
                format!("a usable answer was refused ({e}); expected token {access:?}"),
            ),
            (
                Expect::Token { access, lifetime },
                Fetched::Token {
                    lifetime: l,
                    access: a,
                },
            ) => {
                if a != access {
                    return finding("token_wrong_value", format!("{a:?} instead of {access:?}"));
                }
                match lifetime {
                    Some(want) if l.abs_diff(*want) > Duration::from_secs(2) => finding(
                        "token_wrong_lifetime",
                        format!("lifetime {l:?}, the answer said {want:?}"),
                    ),
                    _ => Ok(()),
                }
            }
            (Expect::Expired(why), Fetched::Token { lifetime, .. }) => finding(
                "token_expired_on_arrival_accepted",
                format!("{why}, yet a token valid for {lifetime:?} came out"),
            ),
            (Expect::Failure(why), Fetched::Token { .. }) => {
                finding("token_bad_answer_accepted", why)
            }
            (Expect::TooLarge, Fetched::Token { .. }) => {
                finding("token_too_large_accepted", format!("{} bytes", body.len()))
            }
            (Expect::Unknown, _)
            | (Expect::Failure(_) | Expect::Expired(_) | Expect::TooLarge, Fetched::Failed(_)) => {
                Ok(())
            }
        }
    }
}

fn client_for(
    addr: SocketAddr,
    grant: Grant,
    token_path: &str,
    expires_in_path: &str,
) -> Result<Arc<ClientSettings>, String> {
    let client = match grant {
        Grant::OAuth => format!(
            "grant = \"client_credentials\"\ntoken_url = \"http://{addr}/token\"\nclient_id = \"id\"\nclient_secret = \"secret\"\n"
        ),
        Grant::Capillary => format!(
            "grant = \"capillary\"\ntoken_url = \"http://{addr}/v3/oauth/token/generate\"\nclient_id = \"key\"\nclient_secret = \"secret\"\n"
        ),
        Grant::Custom => {
            let exp = if expires_in_path.is_empty() {
                String::new()
            } else {
                format!("expires_in_path = {}\n", toml_str(expires_in_path))
            };
            format!(
                "grant = \"custom\"\ntoken_url = \"http://{addr}/custom\"\nclient_id = \"id\"\nclient_secret = \"secret\"\nbody = '{{\"key\": \"<<client.client_id>>\"}}'\ntoken_path = {}\n{exp}",
                toml_str(token_path)
            )
        }
    };
    let text = format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\nadmin = \"\"\n[clients.c]\n{client}timeout = \"5s\"\n"
    );
    let cfg = crate::config::load_str(
        Path::new("/nonexistent-fuzz-dir/proxy.toml"),
        &text,
        &fuzz_env,
    )
    .map_err(|e| e.to_string())?;
    cfg.clients
        .get("c")
        .cloned()
        .ok_or_else(|| "no client".to_string())
}

//! `sidekey login CLIENT`: authorization code + PKCE (RFC 7636, S256) and
//! `state` for a `refresh_token` client. Prints the URL, receives the
//! redirect on a loopback port, exchanges the code and stores the refresh
//! token in `state_file`: how a shared user-owned token is bootstrapped.

use std::convert::Infallible;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use base64::Engine;
use http::{Response, StatusCode};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use sha2::Digest;
use tokio::sync::mpsc;

use crate::body::{self, ProxyBody};
use crate::config::{self, GrantSettings};
use crate::token::grants::{custom, refresh_state, Fetcher};

const WAIT: Duration = Duration::from_secs(300);

pub async fn login(
    path: &Path,
    client: &str,
    no_browser: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    crate::init_crypto();
    let cfg = config::load(path)?;
    let s = cfg
        .clients
        .get(client)
        .ok_or_else(|| anyhow::anyhow!("client {client:?} is not defined"))?;
    let (authorize_url, redirect_uri, state_file) = match &s.grant {
        GrantSettings::RefreshToken {
            authorize_url,
            redirect_uri,
            state_file,
            ..
        } => (authorize_url, redirect_uri, state_file),
        GrantSettings::Custom {
            authorize_url,
            redirect_uri,
            state_file,
            code_body,
            ..
        } => {
            if code_body.is_none() {
                anyhow::bail!("client {client:?}: set code_body, the body that exchanges the authorization code (<<client.auth_code>>, <<client.redirect_uri>>, <<client.code_verifier>>)");
            }
            (authorize_url, redirect_uri, state_file)
        }
        other => anyhow::bail!(
            "client {client:?} has grant {:?}; login is for grants \"refresh_token\" and \"custom\"",
            other.name()
        ),
    };
    let authorize_url = authorize_url
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("client {client:?}: set authorize_url to log in"))?;
    let state_file = state_file.as_ref().ok_or_else(|| {
        anyhow::anyhow!("client {client:?}: set state_file, where the refresh token is kept")
    })?;
    let host = redirect_uri.host_str().unwrap_or_default();
    if !matches!(host, "127.0.0.1" | "localhost" | "[::1]" | "::1") {
        anyhow::bail!("redirect_uri must be a loopback address (RFC 8252 §7.3), not {host}");
    }
    let port = redirect_uri.port_or_known_default().unwrap_or(80);
    let listener = tokio::net::TcpListener::bind((
        if host == "localhost" {
            "127.0.0.1"
        } else {
            host.trim_matches(['[', ']'])
        },
        port,
    ))
    .await
    .map_err(|e| anyhow::anyhow!("cannot listen on {redirect_uri} for the callback: {e}"))?;

    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let verifier = b64.encode(rand::random::<[u8; 32]>());
    let challenge = b64.encode(sha2::Sha256::digest(verifier.as_bytes()));
    let state = b64.encode(rand::random::<[u8; 16]>());
    let fetcher = Fetcher::new(s, &cfg.token_egress())?;
    let client_id = crate::token::grants::field(s.client_id.as_ref(), "client_id")?
        .ok_or_else(|| anyhow::anyhow!("client {client:?}: client_id is required"))?;

    let mut url = authorize_url.clone();
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("response_type", "code")
            .append_pair("client_id", client_id.expose())
            .append_pair("redirect_uri", redirect_uri.as_str())
            .append_pair("state", &state)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
        if !s.scopes.is_empty() {
            q.append_pair("scope", &s.scopes.join(" "));
        }
        // The client's audience, as the token requests carry it (Auth0
        // and others want it on the authorize URL); authorize_params wins.
        if let Some(aud) = crate::token::grants::field(s.audience.as_ref(), "audience")? {
            if !s.authorize_params.iter().any(|(k, _)| k == "audience") {
                q.append_pair("audience", aud.expose());
            }
        }
        // `audience`, `prompt`, … as the IdP wants them.
        for (k, v) in &s.authorize_params {
            q.append_pair(k, v);
        }
    }
    writeln!(out, "Open this URL in a browser and sign in:\n\n  {url}\n")?;
    writeln!(out, "Waiting for the redirect to {redirect_uri} ...")?;
    out.flush()?;
    if !no_browser {
        let _ = std::process::Command::new("xdg-open")
            .arg(url.as_str())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
    }

    let code = tokio::time::timeout(
        WAIT,
        callback(listener, redirect_uri.path().to_string(), state),
    )
    .await
    .map_err(|_| anyhow::anyhow!("no redirect within {WAIT:?}"))??;
    let resp = exchange(&fetcher, s, &code, &verifier, redirect_uri.as_str())
        .await
        .map_err(|e| anyhow::anyhow!("client {client:?}: code exchange failed: {e}"))?;
    let rt = resp
        .refresh_token
        .ok_or_else(|| anyhow::anyhow!("client {client:?}: the token response has no refresh_token (does the client need the offline_access scope?)"))?;
    refresh_state::save(state_file, &rt)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", state_file.display()))?;
    writeln!(
        out,
        "Saved the refresh token for {client:?} to {} (mode 0600).",
        state_file.display()
    )?;
    Ok(())
}

/// The code exchange: the standard form (RFC 6749 §4.1.3 with the PKCE
/// verifier), or a custom client's `code_body` at its token URL.
async fn exchange(
    fetcher: &Fetcher,
    s: &crate::config::ClientSettings,
    code: &str,
    verifier: &str,
    redirect_uri: &str,
) -> Result<crate::token::TokenResponse, crate::token::FetchError> {
    custom::exchange_code(fetcher.http(), s, code, verifier, redirect_uri).await
}

/// Serves the loopback redirect until one carries our `state` and a code.
async fn callback(
    listener: tokio::net::TcpListener,
    path: String,
    state: String,
) -> anyhow::Result<String> {
    let (tx, mut rx) = mpsc::channel::<anyhow::Result<String>>(1);
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => r?,
            Some(result) = rx.recv() => return result,
        };
        let tx = tx.clone();
        let path = path.clone();
        let state = state.clone();
        let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
            let redirect = read_redirect(&req, &path, &state);
            let tx = tx.clone();
            async move {
                let (status, text) = match &redirect {
                    Redirect::Done(Ok(_)) => (
                        StatusCode::OK,
                        "sidekey: signed in. You can close this window.".to_string(),
                    ),
                    Redirect::Done(Err(e)) => (
                        StatusCode::BAD_REQUEST,
                        format!("sidekey: login failed: {e}"),
                    ),
                    Redirect::Stray => (
                        StatusCode::BAD_REQUEST,
                        "sidekey: this redirect is not from the login in progress; still waiting"
                            .to_string(),
                    ),
                    Redirect::Other => (StatusCode::NOT_FOUND, "not found".to_string()),
                };
                if let Redirect::Done(o) = redirect {
                    let _ = tx.send(o).await;
                }
                let mut resp: Response<ProxyBody> = Response::new(body::full(text));
                *resp.status_mut() = status;
                Ok::<_, Infallible>(resp)
            }
        });
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// What a request to the loopback listener is to the login.
enum Redirect {
    /// Not the callback path (a favicon).
    Other,
    /// The callback without this login's `state`: forged, stray or from an
    /// older attempt. Anyone on the host can reach the port, so it is
    /// refused and the login keeps waiting for the real redirect.
    Stray,
    /// This login's answer: the code, or the authorization server's error.
    Done(anyhow::Result<String>),
}

fn read_redirect<B>(req: &http::Request<B>, path: &str, state: &str) -> Redirect {
    if req.uri().path() != path {
        return Redirect::Other;
    }
    let q: Vec<(String, String)> =
        url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    // The state first: an error redirect carries it too (RFC 6749
    // §4.1.2.1), so a forged `?error=` cannot end the login either.
    if get("state") != Some(state) {
        tracing::warn!("ignored a redirect without this login's state");
        return Redirect::Stray;
    }
    if let Some(e) = get("error") {
        let d = get("error_description").unwrap_or("");
        return Redirect::Done(Err(anyhow::anyhow!("authorization server said {e}: {d}")));
    }
    match get("code") {
        Some(c) if !c.is_empty() => Redirect::Done(Ok(c.to_string())),
        _ => Redirect::Done(Err(anyhow::anyhow!("the redirect has no code"))),
    }
}

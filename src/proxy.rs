//! The request pipeline for a request whose target is known, as named
//! phases over one `Exchange` (pingora's per-request context): route ->
//! credential -> body -> upstream (one retry loop) -> response.
//! `service` calls it for plain and intercepted requests alike.

use std::sync::Arc;

use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;

use crate::body::{self, Capture, ProxyBody};
use crate::credential::Lease;
use crate::egress;
use crate::error::ProxyError;
use crate::inbound::{self, Target};
use crate::metrics::Unrouted;
use crate::rewrite::{self, Head};
use crate::route::{Decision, RequestInfo, Route};
use crate::runtime::{Runtime, Shared};
use crate::values::Values;
use crate::{config::Unmatched, tunnel};

/// The route of a request (borrowed from the runtime that routed it), for
/// its log line, metrics and errors.
pub(crate) struct Ctx<'r> {
    pub route: Option<&'r Route>,
    /// Metric label when no route applies.
    pub label: Unrouted,
}

impl<'r> Ctx<'r> {
    pub(crate) fn new(label: Unrouted) -> Self {
        Self { route: None, label }
    }

    pub(crate) fn route_name(&self) -> Option<&'r str> {
        self.route.map(Route::name)
    }

    pub(crate) fn client(&self) -> Option<&'r str> {
        self.route.and_then(|r| r.settings.client.as_deref())
    }
}

/// One request on its way upstream: what every phase reads and updates.
struct Exchange<'r> {
    rt: &'r Runtime,
    route: Option<&'r Route>,
    target: Target,
    head: Head,
    lease: Option<Lease>,
    /// The route's template values for the token the next upstream
    /// request carries: the lease's, then the fresh one after a 401.
    values: Option<Arc<Values>>,
    /// The request body as sent, kept for a 401 retry.
    kept: Option<Arc<Capture>>,
    /// An idempotent request without a body can go again if a pooled
    /// connection closes under it (RFC 9110 §9.2.2).
    resendable: bool,
}

/// route -> credential -> body -> upstream -> response, for a request
/// whose target is known (absolute-form, or the CONNECT authority of an
/// intercepted tunnel).
pub(crate) async fn forward<'r>(
    shared: &Shared,
    rt: &'r Runtime,
    target: Target,
    req: Request<Incoming>,
    ctx: &mut Ctx<'r>,
) -> Result<Response<ProxyBody>, ProxyError> {
    if let Some(refusal) = egress::literal_refusal(rt.upstream.deny(), &target) {
        return Err(ProxyError::Denied(refusal));
    }
    let (mut ex, incoming, downstream_upgrade) = Exchange::route(rt, target, req)?;
    ctx.route = ex.route;
    ex.acquire().await?;
    let first = ex.capture(incoming);
    let resp = ex.send(first).await?;
    Ok(respond(shared, ex.route, resp, downstream_upgrade))
}

impl<'r> Exchange<'r> {
    /// Phase route: the route the request matches, or none if unmatched
    /// requests pass through.
    fn route(
        rt: &'r Runtime,
        target: Target,
        mut req: Request<Incoming>,
    ) -> Result<(Self, Incoming, Option<OnUpgrade>), ProxyError> {
        // A shared handle on the request's own bytes, not a copy.
        let pq = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let decision = rt.routes.decide(&RequestInfo {
            host: &target.host,
            port: target.port,
            method: req.method(),
            path: pq.as_str(),
            headers: req.headers(),
        });
        match &decision {
            Some(d) => tracing::debug!(decision = %d, "routed"),
            None if rt.config.proxy.unmatched == Unmatched::Deny => {
                return Err(ProxyError::Denied(format!(
                    "no route matches {} and proxy.unmatched is \"deny\"",
                    target.authority()
                )))
            }
            None => tracing::debug!(host = %target.host, "no route: passing through untouched"),
        }
        let upgrade = inbound::is_upgrade(req.method(), req.headers());
        let downstream_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let (parts, incoming) = req.into_parts();
        let resendable =
            !upgrade && http_body::Body::is_end_stream(&incoming) && parts.method.is_idempotent();
        let ex = Self {
            rt,
            route: decision.as_ref().map(|d: &Decision<'_>| d.route),
            target,
            head: Head {
                method: parts.method,
                path_and_query: pq,
                headers: parts.headers,
                upgrade,
            },
            lease: None,
            values: None,
            kept: None,
            resendable,
        };
        Ok((ex, incoming, downstream_upgrade))
    }

    /// Phase credential: the route's lease (its token and 401 policy).
    async fn acquire(&mut self) -> Result<(), ProxyError> {
        if let Some(route) = self.route {
            self.values = Some(match &route.credential {
                Some(credential) => {
                    let lease = credential.acquire(&mut self.head.headers).await?;
                    let values = route.values(Some(lease.token()), lease.per_user())?;
                    self.lease = Some(lease);
                    values
                }
                None => route.values(None, false)?,
            });
        }
        if crate::telemetry::enabled() {
            // The upstream's span becomes a child of this request's span.
            crate::telemetry::inject(&mut self.head.headers);
        }
        Ok(())
    }

    /// Phase body: the body is kept (up to `retry_body_limit`) only when a
    /// 401 may send it again.
    fn capture(&mut self, incoming: Incoming) -> ProxyBody {
        if self.retries_401() && !self.head.upgrade {
            let (first, kept) = body::tee(incoming, self.rt.config.proxy.retry_body_limit);
            self.kept = Some(kept);
            first
        } else {
            body::boxed(incoming)
        }
    }

    fn retries_401(&self) -> bool {
        self.lease.is_some() && self.route.is_some_and(|r| r.settings.retry_on_401)
    }

    /// The upstream request with the current token. The head's headers
    /// are copied only when the request may go again (its head is kept);
    /// else they move.
    fn upstream_request(&mut self, body: ProxyBody) -> Result<Request<ProxyBody>, ProxyError> {
        let values = self.values.as_deref();
        let pq = &self.head.path_and_query;
        let uri = rewrite::upstream_uri(self.route, &self.target, pq, values)?;
        if self.retries_401() || self.resendable {
            return rewrite::upstream_request(self.route, &self.head, uri, values, body);
        }
        let head = Head {
            method: self.head.method.clone(),
            path_and_query: pq.clone(),
            headers: std::mem::take(&mut self.head.headers),
            upgrade: self.head.upgrade,
        };
        rewrite::into_upstream_request(self.route, head, uri, values, body)
    }

    /// Phase upstream: one loop; the failure decides whether and how the
    /// request goes again (pingora's `error.retry`): a stale pooled
    /// connection resends it, a 401 asks the lease. Each kind happens
    /// once, so at most three sends.
    async fn send(&mut self, first: ProxyBody) -> Result<Response<Incoming>, ProxyError> {
        let (mut body, mut resent, mut reauthorized) = (first, false, false);
        loop {
            let req = self.upstream_request(body)?;
            body = match self.rt.upstream.send(req, self.head.upgrade).await {
                Err(failed) if failed.stale && self.resendable && !resent => {
                    tracing::debug!(host = %self.target.host, "pooled upstream connection closed under the request: sending it again");
                    resent = true;
                    body::empty()
                }
                Err(failed) => return Err(failed.into()),
                Ok(resp) if resp.status() != StatusCode::UNAUTHORIZED => return Ok(resp),
                Ok(resp) if reauthorized => {
                    // The fresh token was refused too: 401s are not about token age.
                    if let Some(lease) = &self.lease {
                        lease.rejected_again();
                    }
                    return Ok(resp);
                }
                Ok(resp) => match self.after_401().await? {
                    Some(kept) => {
                        reauthorized = true;
                        body::full(kept)
                    }
                    None => return Ok(resp),
                },
            };
        }
    }

    /// The SPEC's 401 rule: the lease drops the rejected token (unless a
    /// newer one is cached) and, if the body was kept, a fresh token goes
    /// with it once. Returns the body to send again, if any.
    async fn after_401(&mut self) -> Result<Option<bytes::Bytes>, ProxyError> {
        // Unchanged from before the Exchange: a request that could never go
        // again (a body, and retry_on_401 off) leaves the token cached.
        if !(self.retries_401() || self.resendable) {
            return Ok(None);
        }
        let (Some(lease), Some(route)) = (self.lease.as_ref(), self.route) else {
            return Ok(None);
        };
        if !lease.rejected() {
            return Ok(None);
        }
        let kept = match &self.kept {
            Some(k) => k.replayable(REPLAY_WAIT).await,
            None => None,
        };
        let Some(kept) = kept else {
            tracing::info!(
                client = lease.client(),
                "upstream answered 401; body too large to retry, token dropped"
            );
            return Ok(None);
        };
        let Some(fresh) = lease.fresh().await else {
            return Ok(None);
        };
        tracing::info!(
            client = lease.client(),
            route = self.route.map(Route::name),
            "upstream answered 401: retrying once with a fresh token"
        );
        self.values = Some(route.values(Some(&fresh), lease.per_user())?);
        Ok(Some(kept))
    }
}

/// How long a 401 waits for the rest of a small request body that the
/// upstream answered before reading to the end.
const REPLAY_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Phase response: a 101 splices the two upgraded connections; the
/// response loses hop-by-hop headers and the route's `set_query` echoes.
fn respond(
    shared: &Shared,
    route: Option<&Route>,
    mut resp: Response<Incoming>,
    downstream_upgrade: Option<OnUpgrade>,
) -> Response<ProxyBody> {
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(on_client) = downstream_upgrade {
            let on_upstream = hyper::upgrade::on(&mut resp);
            shared.drain.spawn(tunnel::splice_upgrades(
                on_client,
                on_upstream,
                Arc::clone(&shared.drain),
            ));
        }
    }
    let mut resp = rewrite::downstream_response(resp.map(body::boxed));
    rewrite::strip_set_query(route, &mut resp);
    resp
}

//! The request pipeline, top to bottom, for a request whose target is
//! known: route -> token -> rewrite -> upstream -> response, with the 401
//! rule. `service` calls it for plain and intercepted requests alike.

use std::sync::Arc;

use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::body::{self, Capture, ProxyBody};
use crate::credential::Lease;
use crate::error::ProxyError;
use crate::inbound::{self, Target};
use crate::rewrite::{self, Head};
use crate::route::{Decision, RequestInfo, Route};
use crate::runtime::{Runtime, Shared};
use crate::{config::Unmatched, tunnel};

/// The route of a request (borrowed from the runtime that routed it), for
/// its log line, metrics and errors.
pub(crate) struct Ctx<'r> {
    pub route: Option<&'r Route>,
    /// Metric label when no route applies: `unmatched` or `connect`.
    pub label: &'static str,
}

impl<'r> Ctx<'r> {
    pub(crate) fn new(label: &'static str) -> Self {
        Self { route: None, label }
    }

    pub(crate) fn route_name(&self) -> Option<&'r str> {
        self.route.map(Route::name)
    }

    pub(crate) fn client(&self) -> Option<&'r str> {
        self.route.and_then(|r| r.settings.client.as_deref())
    }
}

/// route -> token -> rewrite -> upstream, for a request whose target is
/// known (absolute-form, or the CONNECT authority of an intercepted tunnel).
pub(crate) async fn forward<'r>(
    shared: &Shared,
    rt: &'r Runtime,
    target: Target,
    mut req: Request<Incoming>,
    ctx: &mut Ctx<'r>,
) -> Result<Response<ProxyBody>, ProxyError> {
    if let Some(ip) = target.ip().filter(|ip| rt.upstream.is_denied(*ip)) {
        return Err(ProxyError::Denied(format!(
            "{ip} is in proxy.deny_destinations"
        )));
    }
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
    let route = decision.as_ref().map(|d: &Decision<'_>| d.route);
    match &decision {
        Some(d) => {
            tracing::debug!(decision = %d, "routed");
            ctx.route = Some(d.route);
        }
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
    let mut head = Head {
        method: parts.method,
        path_and_query: pq,
        headers: parts.headers,
        upgrade,
    };
    let lease = match route.and_then(|r| r.credential.as_ref()) {
        Some(credential) => Some(credential.acquire(&mut head.headers).await?),
        None => None,
    };
    let token = lease.as_ref().map(|l| Arc::clone(l.token()));
    if crate::telemetry::enabled() {
        // The upstream's span becomes a child of this request's span.
        crate::telemetry::inject(&mut head.headers);
    }
    let uri = rewrite::upstream_uri(route, &target, &head.path_and_query, token.as_deref())?;
    let retry = route.is_some_and(|r| r.settings.retry_on_401) && lease.is_some();
    // An idempotent request without a body can go again if a pooled
    // connection closes under it (RFC 9110 §9.2.2).
    let resendable =
        !upgrade && http_body::Body::is_end_stream(&incoming) && head.method.is_idempotent();
    let (first, kept) = if retry && !upgrade {
        let (b, kept) = body::tee(incoming, rt.config.proxy.retry_body_limit);
        (b, Some(kept))
    } else {
        (body::boxed(incoming), None)
    };
    // The head is kept only when the request may have to go again; else
    // its headers move into the upstream request, uncopied.
    let (req, kept_head) = if retry || resendable {
        let req = rewrite::upstream_request(route, &head, uri, token.as_deref(), first)?;
        (req, Some(head))
    } else {
        let req = rewrite::into_upstream_request(route, head, uri, token.as_deref(), first)?;
        (req, None)
    };
    let mut resp = match rt.upstream.send(req, upgrade).await {
        Ok(resp) => resp,
        Err(failed) => match (&kept_head, failed.stale && resendable) {
            (Some(head), true) => {
                tracing::debug!(host = %target.host, "pooled upstream connection closed under the request: sending it again");
                let uri =
                    rewrite::upstream_uri(route, &target, &head.path_and_query, token.as_deref())?;
                let again =
                    rewrite::upstream_request(route, head, uri, token.as_deref(), body::empty())?;
                rt.upstream.send(again, upgrade).await?
            }
            _ => return Err(failed.into()),
        },
    };

    if let (true, Some(route), Some(lease), Some(head)) = (
        resp.status() == StatusCode::UNAUTHORIZED,
        route,
        &lease,
        &kept_head,
    ) {
        let again = Resend {
            rt,
            route,
            head,
            target: &target,
            upgrade,
        };
        if let Some(r) = retry_on_401(again, lease, kept).await? {
            resp = r;
        }
    }
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
    Ok(resp)
}

/// How long a 401 waits for the rest of a small request body that the
/// upstream answered before reading to the end.
const REPLAY_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// What is needed to send the same request again.
struct Resend<'a> {
    rt: &'a Runtime,
    route: &'a Route,
    head: &'a Head,
    target: &'a Target,
    upgrade: bool,
}

/// The SPEC's 401 rule: drop the rejected token (unless a newer one is
/// cached), get a fresh one, and resend once if the body was kept. The
/// lease decides what a 401 means (see `Lease::rejected`).
async fn retry_on_401(
    again: Resend<'_>,
    lease: &Lease,
    kept: Option<Arc<Capture>>,
) -> Result<Option<Response<Incoming>>, ProxyError> {
    if !lease.rejected() {
        return Ok(None);
    }
    let kept = match kept {
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
        route = again.route.name(),
        "upstream answered 401: retrying once with a fresh token"
    );
    let req = rewrite::upstream_request(
        Some(again.route),
        again.head,
        rewrite::upstream_uri(
            Some(again.route),
            again.target,
            &again.head.path_and_query,
            Some(&fresh),
        )?,
        Some(&fresh),
        body::full(kept),
    )?;
    let resp = again.rt.upstream.send(req, again.upgrade).await?;
    if resp.status() == StatusCode::UNAUTHORIZED {
        lease.rejected_again();
    }
    Ok(Some(resp))
}

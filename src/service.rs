//! What a request to the proxy port means: proxy auth, then CONNECT
//! (decided by `connect`, carried out here as interception or a tunnel)
//! or a forwarded request (the `proxy` pipeline). Intercepted streams are
//! served by the same `server` set-up and enter at the same `request`,
//! with their `Origin`.
//! Every request is logged and counted once, in `finish`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use http::{Method, Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

use crate::body::{self, ProxyBody};
use crate::connect::{self, Action};
use crate::error::ProxyError;
use crate::inbound::{self, Target};
use crate::log::access::Access;
use crate::metrics::{RequestLabels, RouteLabel, RouteName, Unrouted};
use crate::proxy::{self, Ctx};
use crate::runtime::{Runtime, Shared};
use crate::server::{self, ConnInfo};
use crate::telemetry;
use tracing::Instrument;

/// Where a request came from: the proxy port (its target is in the
/// request), or an intercepted tunnel (its target is the CONNECT authority,
/// whatever its Host or `:authority` says).
#[derive(Clone)]
pub(crate) enum Origin {
    Forward(Arc<ConnInfo>),
    Intercepted(Target, Arc<str>),
}

/// Entry point for every request the application sends, on the proxy port
/// or inside an intercepted tunnel. With `[telemetry]`, the request runs
/// in its `sidekey.request` span.
pub(crate) async fn request(
    shared: Arc<Shared>,
    origin: Origin,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    if telemetry::enabled() {
        let host = match &origin {
            Origin::Forward(_) => inbound::log_authority(req.uri()),
            Origin::Intercepted(_, authority) => authority,
        };
        let span = telemetry::request_span(req.method(), host, req.headers());
        return handle(shared, origin, req).instrument(span).await;
    }
    handle(shared, origin, req).await
}

async fn handle(
    shared: Arc<Shared>,
    origin: Origin,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let rt = shared.runtime();
    let mut ctx = Ctx::new(Unrouted::Unmatched);
    let started = Instant::now();
    let method = req.method().clone();
    match origin {
        Origin::Forward(conn) => {
            // The URI is moved into the pipeline: keep its (shared) parts for the log.
            let uri = req.uri().clone();
            let result = forwarded(&shared, &rt, conn, req, &mut ctx).await;
            let authority = inbound::log_authority(&uri);
            finish(&shared, result, &method, authority, &ctx, started)
        }
        Origin::Intercepted(target, authority) => {
            let result = intercepted(&shared, &rt, target, &authority, req, &mut ctx).await;
            finish(&shared, result, &method, &authority, &ctx, started)
        }
    }
}

/// A request on the proxy port: proxy auth, then CONNECT or the pipeline.
async fn forwarded<'r>(
    shared: &Arc<Shared>,
    rt: &'r Arc<Runtime>,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
    ctx: &mut Ctx<'r>,
) -> Result<Response<ProxyBody>, ProxyError> {
    inbound::check_proxy_auth(rt.config.proxy.proxy_auth.as_ref(), &req)?;
    if req.method() == Method::CONNECT {
        ctx.label = Unrouted::Connect;
        return connect_boxed(shared, rt, conn, req).await;
    }
    let target = inbound::target(req.uri())?;
    proxy::forward(shared, rt, target, req, ctx).await
}

/// A request inside an intercepted tunnel. An absolute-form target
/// (HTTP/1.1) is the app naming a host outright: one that is not the
/// CONNECT host is refused. (`inbound::target` refuses userinfo and bad
/// ports as well.)
async fn intercepted<'r>(
    shared: &Shared,
    rt: &'r Runtime,
    target: Target,
    authority: &str,
    req: Request<Incoming>,
    ctx: &mut Ctx<'r>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let conflict = req.version() < http::Version::HTTP_2
        && req.uri().authority().is_some()
        && !inbound::target(req.uri())
            .is_ok_and(|t| t.host == target.host && t.port == target.port);
    if conflict {
        return Err(ProxyError::BadRequest(format!(
            "the request target names another host than the CONNECT target {authority}"
        )));
    }
    proxy::forward(shared, rt, target, req, ctx).await
}

/// `connect` as a named `Send` future: an intercepted tunnel's requests
/// enter at `request` again, and the compiler cannot infer `Send` around
/// that circle through opaque types. One allocation per CONNECT.
fn connect_boxed<'a>(
    shared: &'a Arc<Shared>,
    rt: &'a Arc<Runtime>,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
) -> Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, ProxyError>> + Send + 'a>> {
    Box::pin(connect(shared, rt, conn, req))
}

/// Carries out `connect::decide`: the tunnel or the intercepted stream
/// runs as a drain-tracked task once hyper hands over the connection.
async fn connect(
    shared: &Arc<Shared>,
    rt: &Arc<Runtime>,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let target = inbound::connect_target(req.uri())?;
    match connect::decide(&connect::Policy::of(rt, &target), &target) {
        Action::Deny(reason) => Err(ProxyError::Denied(reason)),
        Action::Intercept => {
            let Some(interceptor) = rt.intercept.clone() else {
                return Err(ProxyError::Denied("interception is not configured".into()));
            };
            tracing::debug!(host = %target.host, port = target.port, "CONNECT intercepted");
            let on_upgrade = hyper::upgrade::on(req);
            let tracked = Arc::clone(shared);
            shared.drain.spawn(async move {
                let shared = tracked;
                let _conn = conn;
                let up = match on_upgrade.await {
                    Ok(up) => up,
                    Err(e) => return tracing::debug!(error = %e, "CONNECT upgrade failed"),
                };
                let tls = match interceptor.accept(&target.host, TokioIo::new(up)).await {
                    Ok(tls) => tls,
                    Err(why) => return shared.metrics.op.handshake_failed(why),
                };
                let limits = shared.runtime().config.proxy.limits;
                let drain = Arc::clone(&shared.drain);
                let authority: Arc<str> = target.authority().into();
                let origin = Origin::Intercepted(target, authority);
                server::serve_connection(tls, limits, drain, move |req| {
                    request(Arc::clone(&shared), origin.clone(), req)
                })
                .await;
            });
            Ok(Response::new(body::empty()))
        }
        Action::Tunnel => {
            let stream = connect::open(rt, &target).await?;
            let idle = rt.config.proxy.tunnel_idle_timeout;
            let on_upgrade = hyper::upgrade::on(req);
            let drain = Arc::clone(&shared.drain);
            shared.drain.spawn(async move {
                let _conn = conn;
                match on_upgrade.await {
                    Ok(up) => {
                        connect::tunnel(TokioIo::new(up), stream, idle, &target, &drain).await;
                    }
                    Err(e) => tracing::debug!(error = %e, "CONNECT upgrade failed"),
                }
            });
            Ok(Response::new(body::empty()))
        }
    }
}

/// Turns the outcome into the response, and logs and counts it once.
fn finish(
    shared: &Shared,
    result: Result<Response<ProxyBody>, ProxyError>,
    method: &Method,
    authority: &str,
    ctx: &Ctx<'_>,
    started: Instant,
) -> Response<ProxyBody> {
    let route = ctx.route_name();
    let client = ctx.client();
    // Labels are shared names (a reference count each), not new strings.
    let label = match ctx.route {
        Some(r) => RouteName(Arc::clone(&r.settings.name)),
        None => shared.metrics.fixed_label(ctx.label),
    };
    let mut code = None;
    let resp = match result {
        Ok(resp) => resp,
        Err(e) => {
            tracing::warn!(%method, host = authority, route, client, error = %e, code = e.code(), "request failed");
            code = Some(e.code());
            e.respond(&shared.metrics, &label, route, client)
        }
    };
    let status = resp.status().as_u16();
    let elapsed = started.elapsed();
    let trace_id = if telemetry::enabled() {
        let span = tracing::Span::current();
        telemetry::record(&span, route, client, status, code);
        telemetry::trace_id(&span)
    } else {
        None
    };
    shared
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            route: label.clone(),
            status,
        })
        .inc();
    shared
        .metrics
        .duration
        .get_or_create(&RouteLabel { route: label })
        .observe(elapsed.as_secs_f64());
    crate::log::access::request(&Access {
        method,
        host: authority,
        route,
        client,
        status,
        elapsed,
        code,
        trace_id: trace_id.as_deref(),
    });
    resp
}

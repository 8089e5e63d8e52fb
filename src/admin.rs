//! Admin endpoints: `/healthz`, `/readyz` (503 while draining), `/metrics`.

use std::sync::Arc;

use http::{header, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::body::{self, ProxyBody};
use crate::runtime::Shared;

pub async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<ProxyBody> {
    let (status, ctype, text) = match (req.method().as_str(), req.uri().path()) {
        ("GET", "/healthz") => (StatusCode::OK, "text/plain", "ok\n".to_string()),
        ("GET", "/readyz") if shared.is_draining() => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "draining\n".to_string(),
        ),
        ("GET", "/readyz") => (StatusCode::OK, "text/plain", "ready\n".to_string()),
        ("GET", "/metrics") => {
            shared.tokens.update_gauges();
            (
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                shared.metrics.encode(),
            )
        }
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_string(),
        ),
    };
    let mut resp = Response::new(body::full(text));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(ctype),
    );
    resp
}

//! Upstream: records every request that arrives (headers, first 64 KiB of
//! the body, body length) and answers by path; HTTP/1.1 + h2, plain or TLS.
//! `/slow?ms=N` answers after N ms, `/drip?ms=N` sends a byte every 100 ms
//! for N ms, `/hang` never answers, `/ws` echoes WebSocket messages.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, Uri, Version};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;

type Body = BoxBody<Bytes, Infallible>;

#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub body_len: u64,
    pub version: Version,
}

impl Recorded {
    /// What arrived, before the body is read.
    fn head<B>(req: &Request<B>) -> Recorded {
        Recorded {
            method: req.method().clone(),
            uri: req.uri().clone(),
            headers: req.headers().clone(),
            body: Bytes::new(),
            body_len: 0,
            version: req.version(),
        }
    }
}

type Responder =
    Arc<dyn Fn(&Recorded) -> Option<(u16, Vec<(String, String)>, String)> + Send + Sync>;

#[derive(Default)]
struct State {
    requests: Mutex<Vec<Recorded>>,
    responder: Mutex<Option<Responder>>,
}

pub struct Upstream {
    pub addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    pub async fn start() -> Upstream {
        Self::serve(None).await
    }

    pub async fn start_tls(config: Arc<rustls::ServerConfig>) -> Upstream {
        Self::serve(Some(tokio_rustls::TlsAcceptor::from(config))).await
    }

    async fn serve(tls: Option<tokio_rustls::TlsAcceptor>) -> Upstream {
        let state = Arc::new(State::default());
        let st = Arc::clone(&state);
        let (addr, task) = super::serve(tls, move |req| handle(Arc::clone(&st), req)).await;
        Upstream { addr, state, task }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.state.requests.lock().unwrap().len()
    }

    pub fn last(&self) -> Option<Recorded> {
        self.state.requests.lock().unwrap().last().cloned()
    }

    pub fn set_responder(
        &self,
        f: impl Fn(&Recorded) -> Option<(u16, Vec<(String, String)>, String)> + Send + Sync + 'static,
    ) {
        *self.state.responder.lock().unwrap() = Some(Arc::new(f));
    }
}

fn full(s: impl Into<Bytes>) -> Body {
    Full::new(s.into()).boxed()
}

fn query_num(uri: &Uri, key: &str) -> u64 {
    uri.query()
        .unwrap_or("")
        .split('&')
        .find_map(|kv| {
            kv.strip_prefix(&format!("{key}="))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

async fn handle(st: Arc<State>, mut req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    if path == "/ws" {
        return Ok(websocket(&st, &mut req));
    }
    if path == "/grpc" {
        return Ok(grpc(&st, req));
    }
    let mut rec = Recorded::head(&req);
    // Read the body frame by frame, keeping only the first 64 KiB.
    let mut body = req.into_body();
    let mut kept = Vec::new();
    while let Some(Ok(frame)) = body.frame().await {
        if let Ok(data) = frame.into_data() {
            rec.body_len += data.len() as u64;
            if kept.len() < 65536 {
                kept.extend_from_slice(&data[..data.len().min(65536 - kept.len())]);
            }
        }
    }
    rec.body = Bytes::from(kept);
    st.requests.lock().unwrap().push(rec.clone());
    let custom = st.responder.lock().unwrap().clone().and_then(|f| f(&rec));
    if let Some((status, headers, text)) = custom {
        let mut resp = Response::new(full(text));
        *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
        for (k, v) in headers {
            resp.headers_mut().insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        return Ok(resp);
    }
    let resp = match path.as_str() {
        "/download" => {
            let n = query_num(&rec.uri, "bytes");
            let chunk = Bytes::from(vec![b'x'; 65536]);
            let frames = futures_util::stream::unfold(n, move |left| {
                let chunk = chunk.clone();
                async move {
                    (left > 0).then(|| {
                        let take = left.min(chunk.len() as u64);
                        (
                            Ok::<_, Infallible>(Frame::data(chunk.slice(..take as usize))),
                            left - take,
                        )
                    })
                }
            });
            let mut resp = Response::new(BoxBody::new(StreamBody::new(frames)));
            resp.headers_mut().insert("content-length", n.into());
            resp
        }
        "/upload" => Response::new(full(
            serde_json::json!({ "body_len": rec.body_len }).to_string(),
        )),
        "/hang" => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Response::new(full(""))
        }
        "/drip" => {
            // One byte every 100 ms for `ms`: a slow answer that keeps bytes
            // moving (a tunnel carrying it is never idle).
            let n = query_num(&rec.uri, "ms") / 100;
            let frames = futures_util::stream::unfold(n, |left| async move {
                if left == 0 {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                Some((
                    Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"."))),
                    left - 1,
                ))
            });
            let mut resp = Response::new(BoxBody::new(StreamBody::new(frames)));
            resp.headers_mut().insert("content-length", n.into());
            resp
        }
        "/slow" => {
            tokio::time::sleep(Duration::from_millis(query_num(&rec.uri, "ms"))).await;
            Response::new(full("slow"))
        }
        "/sidekey-error" => {
            let mut r = Response::new(full("forged"));
            r.headers_mut()
                .insert("x-sidekey-error", "forged".parse().unwrap());
            r
        }
        _ => {
            let headers: serde_json::Map<String, serde_json::Value> = rec
                .headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").into()))
                .collect();
            let json = serde_json::json!({
                "method": rec.method.as_str(),
                "path": rec.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"),
                "headers": headers,
                "body_len": rec.body_len,
            });
            Response::new(full(json.to_string()))
        }
    };
    let mut resp = resp;
    resp.headers_mut()
        .insert("x-upstream", "yes".parse().unwrap());
    Ok(resp)
}

/// gRPC-style: streams the request body back and ends with trailers.
fn grpc(st: &State, req: Request<Incoming>) -> Response<Body> {
    st.requests.lock().unwrap().push(Recorded::head(&req));
    let body = req.into_body();
    let frames = futures_util::stream::unfold((body, false), |(mut body, done)| async move {
        if done {
            return None;
        }
        match body.frame().await {
            Some(Ok(f)) => match f.into_data() {
                Ok(d) => Some((Ok::<_, Infallible>(Frame::data(d)), (body, false))),
                Err(_) => Some((Ok(Frame::data(Bytes::new())), (body, false))),
            },
            _ => {
                let mut t = HeaderMap::new();
                t.insert("grpc-status", "0".parse().unwrap());
                t.insert("grpc-message", "ok".parse().unwrap());
                Some((Ok(Frame::trailers(t)), (body, true)))
            }
        }
    });
    let mut resp = Response::new(BoxBody::new(StreamBody::new(frames)));
    resp.headers_mut()
        .insert("content-type", "application/grpc".parse().unwrap());
    resp
}

/// WebSocket echo (RFC 6455 handshake, then tungstenite).
fn websocket(st: &State, req: &mut Request<Incoming>) -> Response<Body> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::{handshake::derive_accept_key, protocol::Role};
    st.requests.lock().unwrap().push(Recorded::head(req));
    let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
        let mut r = Response::new(full("not a websocket request"));
        *r.status_mut() = http::StatusCode::BAD_REQUEST;
        return r;
    };
    let on_upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let Ok(up) = on_upgrade.await else { return };
        let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            TokioIo::new(up),
            Role::Server,
            None,
        )
        .await;
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_text() || msg.is_binary() {
                if ws.send(msg).await.is_err() {
                    break;
                }
            } else if msg.is_close() {
                break;
            }
        }
    });
    let mut r = Response::new(full(""));
    *r.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert("connection", "upgrade".parse().unwrap());
    h.insert("upgrade", "websocket".parse().unwrap());
    h.insert(
        "sec-websocket-accept",
        derive_accept_key(key.as_bytes()).parse().unwrap(),
    );
    r
}

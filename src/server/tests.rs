//! The serving layer's idle watchdog, on HTTP/2 with paused time.

use std::time::Duration;

use http::{Request, Response};
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::*;

/// Serves one in-memory HTTP/2 connection (idle timeout 60 s, keep-alive
/// PINGs every 20 s) and returns the client's request sender and the
/// server task.
async fn h2_pair() -> (
    hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
    tokio::task::JoinHandle<()>,
) {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let limits = ConnLimits {
        header_read_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(60),
        max_connections: 1,
    };
    let served = tokio::spawn(serve_connection(
        server,
        limits,
        Arc::new(Drain::new()),
        |_req| async { Response::new(crate::body::empty()) },
    ));
    // Client: answers the server's PINGs (h2 does), sends nothing else.
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(client))
            .await
            .unwrap();
    tokio::spawn(conn);
    (sender, served)
}

async fn get(sender: &mut hyper::client::conn::http2::SendRequest<Empty<Bytes>>) {
    let req = Request::get("http://x/").body(Empty::new()).unwrap();
    assert_eq!(sender.send_request(req).await.unwrap().status(), 200);
}

#[tokio::test(start_paused = true)]
async fn an_h2_connection_without_requests_idles_out_despite_its_pings() {
    let (_sender, served) = h2_pair().await;
    // Six rounds of PING and ACK later it would still be open if they
    // counted as traffic.
    tokio::time::timeout(Duration::from_secs(130), served)
        .await
        .expect("the connection was kept open by sidekey's own PINGs")
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_h2_connection_with_requests_stays_open_until_they_stop() {
    let (mut sender, served) = h2_pair().await;
    for _ in 0..3 {
        get(&mut sender).await;
        tokio::time::sleep(Duration::from_secs(40)).await;
        assert!(!served.is_finished(), "closed while the peer was active");
    }
    // The last request at 80 s: closed about 60 s later.
    tokio::time::timeout(Duration::from_secs(30), served)
        .await
        .expect("still open a minute after the last request")
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_h2_response_still_streaming_keeps_its_connection() {
    use http_body_util::BodyExt;
    let (client, server) = tokio::io::duplex(64 * 1024);
    let limits = ConnLimits {
        header_read_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(60),
        max_connections: 1,
    };
    // Server: `/stream` sends a byte every 30 s for 150 s (small enough
    // that the client sends no WINDOW_UPDATE: only sidekey writes).
    let served = tokio::spawn(serve_connection(
        server,
        limits,
        Arc::new(Drain::new()),
        |req: Request<hyper::body::Incoming>| async move {
            if req.uri().path() != "/stream" {
                return Response::new(crate::body::empty());
            }
            let frames = futures_util::stream::unfold(0u8, |n| async move {
                if n == 5 {
                    return None;
                }
                tokio::time::sleep(Duration::from_secs(30)).await;
                Some((
                    Ok::<_, crate::body::BoxError>(http_body::Frame::data(Bytes::from_static(
                        b".",
                    ))),
                    n + 1,
                ))
            });
            Response::new(crate::body::boxed(http_body_util::StreamBody::new(frames)))
        },
    ));
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(client))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::get("http://x/stream").body(Empty::new()).unwrap();
    let body = sender
        .send_request(req)
        .await
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap();
    assert_eq!(body.to_bytes().len(), 5);
    // 150 s after the request, 0 s after the body's end: still open.
    assert!(!served.is_finished());
    get(&mut sender).await;
}

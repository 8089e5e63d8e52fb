//! Small raw HTTP/1.1 servers for the faults the support fakes do not
//! offer: a connection closed mid-answer, a held request, a counted
//! keep-alive connection.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Aborts the accept loop when the test is done with the server.
pub struct Serving(tokio::task::JoinHandle<()>);

impl Drop for Serving {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Serves each accepted connection with `f` on 127.0.0.1:0.
pub async fn raw_server<F, Fut>(f: F) -> (SocketAddr, Serving)
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            // Every connection's work is bounded in time.
            tokio::spawn(tokio::time::timeout(Duration::from_secs(30), f(s)));
        }
    });
    (addr, Serving(task))
}

/// A keep-alive upstream that holds each request `hold`, answers
/// `answer(request head)`, and counts the connections it accepts.
pub async fn counting_upstream(
    hold: Duration,
    answer: fn(&str) -> String,
) -> (SocketAddr, Serving, Arc<AtomicUsize>) {
    let accepted = Arc::new(AtomicUsize::new(0));
    let a = Arc::clone(&accepted);
    let (addr, serving) = raw_server(move |mut s| {
        a.fetch_add(1, Ordering::SeqCst);
        async move {
            while let Some(head) = read_request(&mut s).await {
                tokio::time::sleep(hold).await;
                let out = http_response("200 OK", "", &answer(&head));
                if s.write_all(out.as_bytes()).await.is_err() {
                    return;
                }
            }
        }
    })
    .await;
    (addr, serving, accepted)
}

/// An upstream that answers the first request of each connection `200 ok`
/// and reads the next one on it, then closes without an answer: the
/// keep-alive race (the server's idle timer fires as the request arrives)
/// made deterministic. The heads of all requests that arrived.
pub async fn closing_after_one_answer() -> (SocketAddr, Serving, Arc<Mutex<Vec<String>>>) {
    let heads = Arc::new(Mutex::new(Vec::<String>::new()));
    let h = Arc::clone(&heads);
    let (addr, serving) = raw_server(move |mut s| {
        let h = Arc::clone(&h);
        async move {
            let Some(first) = read_request(&mut s).await else {
                return;
            };
            h.lock().unwrap().push(first);
            let _ = s
                .write_all(http_response("200 OK", "", "ok").as_bytes())
                .await;
            if let Some(second) = read_request(&mut s).await {
                h.lock().unwrap().push(second);
            }
        }
    })
    .await;
    (addr, serving, heads)
}

/// Reads one request (head, then a Content-Length body); `None` at EOF.
pub async fn read_request(s: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            let mut have = buf.len() - end - 4;
            while have < len {
                let n = s.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                have += n;
            }
            return Some(head);
        }
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

pub fn http_response(status: &str, extra: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{extra}\r\n{body}",
        body.len()
    )
}

/// A whole one-hour token answer on a connection that then closes.
pub fn token_response(token: &str) -> String {
    http_response("200 OK", "connection: close\r\n", &token_json(token, 3600))
}

pub fn token_json(token: &str, expires_in: u64) -> String {
    format!(r#"{{"access_token":"{token}","token_type":"Bearer","expires_in":{expires_in}}}"#)
}

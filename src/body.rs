//! Bodies: streamed both ways; only a request body up to
//! `retry_body_limit` is kept, so that a 401 can be retried with it.

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame};
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full, StreamBody};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type ProxyBody = BoxBody<Bytes, BoxError>;

pub fn full(b: impl Into<Bytes>) -> ProxyBody {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

pub fn empty() -> ProxyBody {
    Empty::new().map_err(|never| match never {}).boxed()
}

pub fn boxed<B>(b: B) -> ProxyBody
where
    B: Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    b.map_err(Into::into).boxed()
}

/// A request body, either kept whole (replayable) or streaming.
pub enum Outgoing {
    Kept(Bytes),
    Streaming(ProxyBody),
}

impl Outgoing {
    /// The body to send now, and the bytes to send again on a retry.
    pub fn take(self) -> (ProxyBody, Option<Bytes>) {
        match self {
            Self::Kept(b) => (full(b.clone()), Some(b)),
            Self::Streaming(b) => (b, None),
        }
    }
}

/// Reads up to `limit` bytes of `body`. A body that ends within the limit is
/// kept; a longer one streams on, its first frames replayed in front.
pub async fn keep_up_to<B>(mut body: B, limit: u64) -> Result<Outgoing, BoxError>
where
    B: Body<Data = Bytes> + Send + Sync + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    if body.size_hint().lower() > limit {
        return Ok(Outgoing::Streaming(boxed(body)));
    }
    let mut kept = BytesMut::new();
    loop {
        match body.frame().await {
            None => return Ok(Outgoing::Kept(kept.freeze())),
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    kept.extend_from_slice(&data);
                    if kept.len() as u64 > limit {
                        return Ok(Outgoing::Streaming(prefixed(kept.freeze(), None, body)));
                    }
                }
                // Trailers: not replayable as `Full`, so send them on as they are.
                Err(frame) => {
                    return Ok(Outgoing::Streaming(prefixed(
                        kept.freeze(),
                        Some(frame),
                        body,
                    )))
                }
            },
        }
    }
}

fn prefixed<B>(head: Bytes, extra: Option<Frame<Bytes>>, rest: B) -> ProxyBody
where
    B: Body<Data = Bytes> + Send + Sync + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    use futures_util::stream::{self, StreamExt};
    let first = (!head.is_empty()).then(|| Ok::<_, BoxError>(Frame::data(head)));
    let head = stream::iter(first.into_iter().chain(extra.map(Ok)));
    let rest = http_body_util::BodyStream::new(rest).map(|r| r.map_err(Into::into));
    BoxBody::new(StreamBody::new(head.chain(rest)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keeps_small_bodies_and_streams_large_ones() {
        let small = Full::new(Bytes::from_static(b"hello"));
        match keep_up_to(small, 10).await.unwrap() {
            Outgoing::Kept(b) => assert_eq!(&b[..], b"hello"),
            Outgoing::Streaming(_) => panic!("should keep"),
        }
        let chunks: Vec<Result<Frame<Bytes>, BoxError>> = (0..4)
            .map(|_| Ok(Frame::data(Bytes::from(vec![b'x'; 8]))))
            .collect();
        let big = StreamBody::new(futures_util::stream::iter(chunks));
        match keep_up_to(big, 10).await.unwrap() {
            Outgoing::Streaming(b) => {
                let all = b.collect().await.unwrap().to_bytes();
                assert_eq!(
                    all.len(),
                    32,
                    "the kept prefix is sent in front of the rest"
                );
            }
            Outgoing::Kept(_) => panic!("should stream"),
        }
    }
}

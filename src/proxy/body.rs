//! Bodies that stream through the proxy, never held whole, both bounded by
//! the body idle deadline: the request body sent upstream and the response
//! body type.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Either, Full};
use hyper::body::Incoming;

use super::pool::PooledBody;
use crate::timeouts::{BoxError, IdleBody};

/// A response body: the upstream's, streamed under the idle deadline, or one
/// sessiongate wrote.
pub type ProxyBody = Either<IdleBody<PooledBody>, Full<Bytes>>;

/// The upstream's response body, bounded by the body idle deadline.
pub fn upstream_body(body: PooledBody, idle: Duration) -> ProxyBody {
    Either::Left(IdleBody::new(body, idle))
}

/// A short body of sessiongate's own.
pub fn own_body(text: &'static str) -> ProxyBody {
    Either::Right(Full::new(Bytes::from_static(text.as_bytes())))
}

/// The body of a request sent upstream, under the body idle deadline.
pub struct RequestBody(Option<IdleBody<Incoming>>);

impl RequestBody {
    /// Wraps a client's body for forwarding; pauses longer than `idle` fail it.
    pub fn new(body: Incoming, idle: Duration) -> RequestBody {
        match body.is_end_stream() {
            true => RequestBody::empty(),
            false => RequestBody(Some(IdleBody::new(body, idle))),
        }
    }

    /// No body.
    pub fn empty() -> RequestBody {
        RequestBody(None)
    }

    /// True when there is no body at all.
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.0 {
            None => Poll::Ready(None),
            Some(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.0.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.0
            .as_ref()
            .map_or(SizeHint::with_exact(0), Body::size_hint)
    }
}

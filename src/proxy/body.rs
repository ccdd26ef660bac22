//! Bodies that stream through the proxy, never held whole: the request body
//! sent upstream, which can be taken back when connecting to a server fails
//! (so the request is retried on the next one), and the response body type.
//! Both are bounded by the body idle deadline.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Either, Full};
use hyper::body::Incoming;

use crate::timeouts::{BoxError, IdleBody};

/// A response body: the upstream's, streamed under the idle deadline, or one
/// sessiongate wrote.
pub type ProxyBody = Either<IdleBody<Incoming>, Full<Bytes>>;

/// The upstream's response body, bounded by the body idle deadline.
pub fn upstream_body(body: Incoming, idle: Duration) -> ProxyBody {
    Either::Left(IdleBody::new(body, idle))
}

/// A short body of sessiongate's own.
pub fn own_body(text: &'static str) -> ProxyBody {
    Either::Right(Full::new(Bytes::from_static(text.as_bytes())))
}

type Slot = Arc<Mutex<Option<Incoming>>>;

/// The body of a request sent upstream. The client's body stays in a shared
/// slot until the upstream client first polls it, which happens only once a
/// connection carries the request; until then [`Reclaim`] can take it back.
pub struct RequestBody(State);

enum State {
    /// The request had no body.
    Empty,
    /// Not polled yet.
    Waiting(Slot, SizeHint, Duration),
    /// Polled: now streaming, under the body idle deadline.
    Streaming(IdleBody<Incoming>),
}

/// The right to take a request body back after a failed attempt.
pub struct Reclaim(Option<(Slot, Duration)>);

impl RequestBody {
    /// Wraps a client's body for forwarding; pauses longer than `idle` fail it.
    pub fn new(body: Incoming, idle: Duration) -> (RequestBody, Reclaim) {
        if body.is_end_stream() {
            return (RequestBody::empty(), Reclaim(None));
        }
        let hint = body.size_hint();
        let slot = Arc::new(Mutex::new(Some(body)));
        let waiting = State::Waiting(slot.clone(), hint, idle);
        (RequestBody(waiting), Reclaim(Some((slot, idle))))
    }

    /// No body (a health check's).
    pub fn empty() -> RequestBody {
        RequestBody(State::Empty)
    }

    /// True when there is no body at all.
    pub fn is_empty(&self) -> bool {
        matches!(self.0, State::Empty)
    }
}

impl Reclaim {
    /// The body again, for another attempt, if the failed one never read it.
    pub fn reclaim(self) -> Option<(RequestBody, Reclaim)> {
        match self.0 {
            None => Some((RequestBody::empty(), Reclaim(None))),
            Some((slot, idle)) => {
                let body = slot.lock().ok()?.take()?;
                Some(RequestBody::new(body, idle))
            }
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            match &mut self.0 {
                State::Empty => return Poll::Ready(None),
                State::Streaming(body) => return Pin::new(body).poll_frame(cx),
                State::Waiting(slot, _, idle) => {
                    let idle = *idle;
                    let taken = slot.lock().ok().and_then(|mut s| s.take());
                    // Only a reclaim empties the slot, and it runs after this
                    // attempt was dropped: then nothing is left to poll.
                    self.0 = match taken {
                        Some(body) => State::Streaming(IdleBody::new(body, idle)),
                        None => State::Empty,
                    };
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            State::Empty => true,
            State::Waiting(..) => false,
            State::Streaming(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            State::Empty => SizeHint::with_exact(0),
            State::Waiting(_, hint, _) => *hint,
            State::Streaming(body) => body.size_hint(),
        }
    }
}

//! Bodies that stream through the proxy, never held whole: the request body
//! sent upstream, which can be taken back when connecting to a server fails
//! (so the request is retried on the next one), and the response body type.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Either, Full};
use hyper::body::Incoming;

/// A response body: the upstream's, streamed, or one sessiongate wrote.
pub type ProxyBody = Either<Incoming, Full<Bytes>>;

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
    Waiting(Slot, SizeHint),
    /// Polled: now streaming.
    Streaming(Incoming),
}

/// The right to take a request body back after a failed attempt.
pub struct Reclaim(Option<Slot>);

impl RequestBody {
    /// Wraps a client's body for forwarding.
    pub fn new(body: Incoming) -> (RequestBody, Reclaim) {
        if body.is_end_stream() {
            return (RequestBody(State::Empty), Reclaim(None));
        }
        let hint = body.size_hint();
        let slot = Arc::new(Mutex::new(Some(body)));
        (
            RequestBody(State::Waiting(slot.clone(), hint)),
            Reclaim(Some(slot)),
        )
    }
}

impl Reclaim {
    /// The body again, for another attempt, if the failed one never read it.
    pub fn reclaim(self) -> Option<(RequestBody, Reclaim)> {
        match self.0 {
            None => Some((RequestBody(State::Empty), Reclaim(None))),
            Some(slot) => {
                let body = slot.lock().ok()?.take()?;
                Some(RequestBody::new(body))
            }
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        loop {
            match &mut self.0 {
                State::Empty => return Poll::Ready(None),
                State::Streaming(body) => return Pin::new(body).poll_frame(cx),
                State::Waiting(slot, _) => {
                    let taken = slot.lock().ok().and_then(|mut s| s.take());
                    // Only a reclaim empties the slot, and it runs after this
                    // attempt was dropped: then nothing is left to poll.
                    self.0 = taken.map_or(State::Empty, State::Streaming);
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
            State::Waiting(_, hint) => *hint,
            State::Streaming(body) => body.size_hint(),
        }
    }
}

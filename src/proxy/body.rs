//! The body of a request on its way upstream: the client's, streamed (never
//! held whole) under the body idle deadline. Its failures are marked as the
//! client's own ([`ClientBodyError`]), so that a client that sends a broken
//! body, or stops halfway, is never counted against a server; and it says
//! when it has been sent whole, so that the wait for the response head
//! starts then, not while a slow client is still uploading.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::sync::Notify;

use crate::error::ClientBodyError;
use crate::timeouts::{BoxError, Elapsed, IdleBody};

/// The body of a request sent upstream, under the body idle deadline.
pub struct RequestBody(Option<Streaming>);

struct Streaming {
    body: IdleBody<Incoming>,
    /// Notified once the body has ended (or failed).
    done: Arc<Notify>,
}

impl RequestBody {
    /// Wraps a client's body for forwarding; pauses longer than `idle` fail it.
    pub fn new(body: Incoming, idle: Duration) -> RequestBody {
        match body.is_end_stream() {
            true => RequestBody::empty(),
            false => RequestBody(Some(Streaming {
                body: IdleBody::new(body, idle),
                done: Arc::new(Notify::new()),
            })),
        }
    }

    /// No body.
    pub fn empty() -> RequestBody {
        RequestBody(None)
    }

    /// Completes once the body has been read to its end, or has failed;
    /// at once when there is none.
    pub fn sent(&self) -> impl Future<Output = ()> + use<> {
        let done = self.0.as_ref().map(|s| s.done.clone());
        async move {
            if let Some(done) = done {
                done.notified().await;
            }
        }
    }
}

/// Marks an error of the client's body as the client's.
fn clients_fault(error: BoxError) -> BoxError {
    let marked = match error.downcast::<Elapsed>() {
        Ok(elapsed) => ClientBodyError::Stalled(*elapsed),
        Err(error) => match error.downcast::<hyper::Error>() {
            Ok(broken) => ClientBodyError::Broken(*broken),
            Err(other) => return other,
        },
    };
    Box::new(marked)
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let Some(streaming) = &mut self.0 else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(&mut streaming.body).poll_frame(cx);
        let ended = match &polled {
            Poll::Ready(None | Some(Err(_))) => true,
            Poll::Ready(Some(Ok(_))) => streaming.body.is_end_stream(),
            Poll::Pending => false,
        };
        if ended {
            // A permit is kept if nobody waits yet.
            streaming.done.notify_one();
        }
        polled.map(|frame| frame.map(|f| f.map_err(clients_fault)))
    }

    fn is_end_stream(&self) -> bool {
        self.0.as_ref().is_none_or(|s| s.body.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.0
            .as_ref()
            .map_or(SizeHint::with_exact(0), |s| s.body.size_hint())
    }
}

//! Parking: hyper keeps a read and a write buffer (about 24 KiB) for as long
//! as its connection object lives. Once an HTTP/1.1 keep-alive connection has
//! been idle for [`PARK_AFTER`] (its response flushed, nothing of a next
//! request read), [`drive`] asks hyper to close, which an idle connection
//! does at once; the stream lets it without closing the socket, and the
//! socket alone waits for the client's next request. (HTTP/2 connections
//! multiplex and are not parked.) [`drive`] also closes a connection
//! gracefully at shutdown, and says whether its close should linger.

use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Poll, ready};
use std::time::Duration;

use http_body::Body;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::HttpService;
use hyper_util::rt::TokioExecutor;
use tokio_util::sync::WaitForCancellationFuture;
use tracing::debug;

use super::activity::Activity;
use crate::timeouts::Alarm;

/// How long a keep-alive connection sits idle before it is parked. A busy
/// client's next request comes sooner and finds hyper's connection still
/// there: making a fresh one per request would cost about 2 µs each.
pub(super) const PARK_AFTER: Duration = Duration::from_millis(50);

/// How [`drive`] let go of a connection.
pub(super) enum Ending {
    /// Closed by hyper, or upgraded. `lingers` after a clean end (the client
    /// may still be sending behind a response, or has closed first) or a
    /// refused request head; not after a failure that leaves no response to
    /// protect. See [`GuardedStream::linger`].
    ///
    /// [`GuardedStream::linger`]: super::GuardedStream::linger
    Closed { lingers: bool },
    /// Idle, and closed by hyper without closing the socket.
    Parked,
}

/// A hyper server connection that can be asked to finish gracefully.
pub(super) trait Graceful: Future<Output = hyper::Result<()>> {
    /// Close when idle; finish what is in flight first.
    fn close_when_idle(self: Pin<&mut Self>);
}

impl<I, S, B> Graceful for http1::UpgradeableConnection<I, S>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn close_when_idle(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S, B> Graceful for http2::Connection<I, S, TokioExecutor>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    S: HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    TokioExecutor: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    fn close_when_idle(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// Polls `connection` until it ends, closing it gracefully once `stopped`
/// completes. With `parks`, the connection's activity and its count of
/// requests served when this hyper connection began, it is also parked once
/// it has served one and been idle for [`PARK_AFTER`]: hyper, asked to close
/// then, does so at once, and the stream lets it without closing the socket.
pub(super) async fn drive<C: Graceful>(
    mut connection: Pin<&mut C>,
    mut stopped: Pin<&mut WaitForCancellationFuture<'_>>,
    peer: &SocketAddr,
    parks: Option<(&Activity, u32)>,
) -> Ending {
    let mut closing = false;
    let mut idle = Alarm::default();
    poll_fn(|cx| {
        if !closing && stopped.as_mut().poll(cx).is_ready() {
            closing = true;
            connection.as_mut().close_when_idle();
        }
        if let Poll::Ready(result) = connection.as_mut().poll(cx) {
            return Poll::Ready(closed(result, peer));
        }
        let Some((activity, served)) = parks else {
            return Poll::Pending;
        };
        let Some(park_at) = activity.park_at(served).filter(|_| !closing) else {
            return Poll::Pending;
        };
        ready!(idle.poll_not_before(park_at, cx));
        activity.parking.store(true, Ordering::Relaxed);
        connection.as_mut().close_when_idle();
        let parked = connection.as_mut().poll(cx);
        activity.parking.store(false, Ordering::Relaxed);
        match parked {
            Poll::Ready(Ok(())) => Poll::Ready(Ending::Parked),
            Poll::Ready(Err(error)) => Poll::Ready(closed(Err(error), peer)),
            Poll::Pending => {
                // Mid-message after all: hyper closes it after this message.
                debug!(%peer, "a connection taken for idle was not; it closes after its message");
                closing = true;
                Poll::Pending
            }
        }
    })
    .await
}

/// How a connection that hyper ended is let go: it lingers after a clean end
/// or a request head hyper refused (400, 414, 431; also the few parse errors
/// hyper answers with nothing, where the lingering is bounded and merely
/// useless), not after a failed socket or a deadline (which the stream
/// tells from its own deadlines: hyper reports one that cut off an idle
/// connection as a clean end).
fn closed(result: hyper::Result<()>, peer: &SocketAddr) -> Ending {
    let lingers = match result {
        Ok(()) => true,
        Err(error) => {
            debug!(%peer, %error, "connection ended with an error");
            error.is_parse()
        }
    };
    Ending::Closed { lingers }
}

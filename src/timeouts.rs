//! Deadlines: every network wait has a named, configured one (`[timeouts]`
//! and `store.timeout`), and this module holds the three ways they are
//! enforced:
//!
//! - [`within`]: a deadline on one future (upstream response head, store call);
//! - a watchdog on each client connection's stream, in [`crate::connection`],
//!   which closes it when its request head takes longer than
//!   `request_header` (slowloris) or when it sits idle between requests
//!   longer than `keepalive`;
//! - [`IdleBody`]: a body, either way, that pauses longer than `body_idle`.
//!
//! Upstream connects (`upstream_connect`) and idle pooled connections
//! (`upstream_idle`) are bounded by the pool, `proxy::pool`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::config::Config;

/// Every configured deadline, read once from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Connecting to an upstream server.
    pub upstream_connect: Duration,
    /// From sending a request upstream until its response head arrives.
    pub upstream_response: Duration,
    /// An idle pooled upstream connection.
    pub upstream_idle: Duration,
    /// The longest pause within a body.
    pub body_idle: Duration,
    /// A client's request head.
    pub request_header: Duration,
    /// An idle client keep-alive connection.
    pub keepalive: Duration,
    /// In-flight requests at shutdown.
    pub drain: Duration,
    /// One store call.
    pub store: Duration,
}

impl Timeouts {
    /// The deadlines of a configuration.
    pub fn new(config: &Config) -> Timeouts {
        let t = &config.timeouts;
        Timeouts {
            upstream_connect: t.upstream_connect,
            upstream_response: t.upstream_response,
            upstream_idle: t.upstream_idle,
            body_idle: t.body_idle,
            request_header: t.request_header,
            keepalive: t.keepalive,
            drain: t.drain,
            store: config.store.timeout,
        }
    }
}

/// A wait that took longer than its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{what} took longer than {limit:?}")]
pub struct Elapsed {
    /// Which wait.
    pub what: &'static str,
    /// Its deadline.
    pub limit: Duration,
}

/// Runs `future` under a deadline. Not an `async fn`: one would hold
/// `future` twice in its state (as its argument and as what it awaits),
/// doubling the size of every future built around it.
pub fn within<F: Future>(
    what: &'static str,
    limit: Duration,
    future: F,
) -> impl Future<Output = Result<F::Output, Elapsed>> {
    tokio::time::timeout(limit, future)
        .map(move |result| result.map_err(|_| Elapsed { what, limit }))
}

/// A timer made on first use and moved to whatever deadline applies when
/// polled: the one mechanism behind the connection watchdog and [`IdleBody`].
#[derive(Default)]
pub(crate) struct Alarm(Option<Pin<Box<Sleep>>>);

impl Alarm {
    /// Ready once `deadline` has passed; wakes the task then.
    pub(crate) fn poll_until(&mut self, deadline: Instant, cx: &mut Context<'_>) -> Poll<()> {
        let timer = self
            .0
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        timer.as_mut().poll(cx)
    }

    /// Like [`poll_until`](Alarm::poll_until) for a deadline that keeps
    /// moving later: a timer set earlier is left to fire, and only then
    /// moved, rather than moved at every call.
    pub(crate) fn poll_not_before(&mut self, deadline: Instant, cx: &mut Context<'_>) -> Poll<()> {
        if let Some(timer) = &mut self.0
            && timer.deadline() < deadline
            && !timer.is_elapsed()
        {
            ready!(timer.as_mut().poll(cx));
        }
        self.poll_until(deadline, cx)
    }
}

// ------------------------------------------------------------ bodies

/// A body error of sessiongate's own, or the inner body's.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A body that fails once it makes no progress for `limit`. A pause is
/// timed from when the inner body first has nothing ready, so the clock is
/// read, and the timer armed, only then: a body whose frames are ready
/// when asked for reads no clock at all.
pub struct IdleBody<B> {
    inner: B,
    limit: Duration,
    /// When the current pause began; `None` while frames keep coming.
    waiting_since: Option<Instant>,
    alarm: Alarm,
}

impl<B> IdleBody<B> {
    /// Bounds the pauses of `inner`.
    pub fn new(inner: B, limit: Duration) -> IdleBody<B> {
        IdleBody {
            inner,
            limit,
            waiting_since: None,
            alarm: Alarm::default(),
        }
    }
}

impl<B> Body for IdleBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.waiting_since = None;
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let since = *this.waiting_since.get_or_insert_with(Instant::now);
                ready!(this.alarm.poll_until(since + this.limit, cx));
                Poll::Ready(Some(Err(Box::new(Elapsed {
                    what: "a pause in the body",
                    limit: this.limit,
                }))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

//! Deadlines: every network wait has a named, configured one (`[timeouts]`
//! and `store.timeout`), and this module holds the three ways they are
//! enforced:
//!
//! - [`within`]: a deadline on one future (upstream response head, store call);
//! - [`GuardedStream`]: a watchdog on a client connection, which closes it
//!   when its request head takes longer than `request_header` (slowloris) or
//!   when it sits idle between requests longer than `keepalive`;
//! - [`IdleBody`]: a body, either way, that pauses longer than `body_idle`.
//!
//! Upstream connects (`upstream_connect`) and idle pooled connections
//! (`upstream_idle`) are bounded by the pool, `proxy::pool`.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
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
            upstream_connect: t.upstream_connect.0,
            upstream_response: t.upstream_response.0,
            upstream_idle: t.upstream_idle.0,
            body_idle: t.body_idle.0,
            request_header: t.request_header.0,
            keepalive: t.keepalive.0,
            drain: t.drain.0,
            store: config.store.timeout.0,
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

/// Runs `future` under a deadline.
pub async fn within<T>(
    what: &'static str,
    limit: Duration,
    future: impl Future<Output = T>,
) -> Result<T, Elapsed> {
    tokio::time::timeout(limit, future)
        .await
        .map_err(|_| Elapsed { what, limit })
}

/// A timer made on first use and moved to whatever deadline applies when
/// polled: the one mechanism behind [`GuardedStream`] and [`IdleBody`].
#[derive(Default)]
struct Alarm(Option<Pin<Box<Sleep>>>);

impl Alarm {
    /// Ready once `deadline` has passed; wakes the task then.
    fn poll_until(&mut self, deadline: Instant, cx: &mut Context<'_>) -> Poll<()> {
        let timer = self
            .0
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        timer.as_mut().poll(cx)
    }
}

// ------------------------------------------------------------ connections

/// What a client connection is doing, shared by its stream (which enforces
/// the deadlines) and the requests served on it (which report progress).
#[derive(Debug)]
pub struct Activity {
    origin: Instant,
    /// Requests being served (HTTP/2 may have several).
    in_flight: AtomicU32,
    /// ms since `origin` when the connection last became idle.
    idle_since: AtomicU64,
    /// ms since `origin` (plus one; 0: none) when a request head began.
    head_since: AtomicU64,
    /// Switched protocols: a tunnel now, with no request deadlines.
    upgraded: AtomicBool,
}

impl Activity {
    /// A fresh connection, whose first request head is awaited from now.
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            origin: Instant::now(),
            in_flight: AtomicU32::new(0),
            idle_since: AtomicU64::new(0),
            head_since: AtomicU64::new(1),
            upgraded: AtomicBool::new(false),
        })
    }

    fn ms(&self, at: Instant) -> u64 {
        at.duration_since(self.origin).as_millis() as u64
    }

    /// A request's head has arrived; it is being served until the returned
    /// guard (kept with its response body) is dropped.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.head_since.store(0, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// The connection switched protocols.
    pub fn upgraded(&self) {
        self.upgraded.store(true, Ordering::Relaxed);
    }

    /// The deadline that applies now: none while a request is served or
    /// after an upgrade; else the request-head or the keep-alive deadline.
    fn deadline(&self, request_header: Duration, keepalive: Duration) -> Option<Instant> {
        if self.upgraded.load(Ordering::Relaxed) || self.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let at = |ms: u64| self.origin + Duration::from_millis(ms);
        Some(match self.head_since.load(Ordering::Relaxed) {
            0 => at(self.idle_since.load(Ordering::Relaxed)) + keepalive,
            started => at(started - 1) + request_header,
        })
    }

    /// Bytes arrived: if the connection was idle, a request head has begun.
    fn bytes_arrived(&self) {
        if self.in_flight.load(Ordering::Relaxed) == 0
            && self.head_since.load(Ordering::Relaxed) == 0
        {
            let now = self.ms(Instant::now());
            self.head_since.store(now + 1, Ordering::Relaxed);
        }
    }
}

/// One request being served; dropping it (with the response body) may
/// leave the connection idle.
#[derive(Debug)]
pub struct InFlight(Arc<Activity>);

/// A response body that keeps its request counted as in flight until the
/// body is finished or dropped.
pub struct Tracked<B> {
    inner: B,
    _in_flight: InFlight,
}

impl<B> Tracked<B> {
    /// Ties `inner` to a request in flight.
    pub fn new(inner: B, in_flight: InFlight) -> Tracked<B> {
        Tracked {
            inner,
            _in_flight: in_flight,
        }
    }
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        if activity.in_flight.fetch_sub(1, Ordering::Relaxed) == 1 {
            let now = activity.ms(Instant::now());
            activity.idle_since.store(now, Ordering::Relaxed);
        }
    }
}

/// A client connection's stream with its watchdog: reading fails with
/// `TimedOut`, which makes hyper close the connection, once the request head
/// or the keep-alive deadline of its [`Activity`] has passed.
pub struct GuardedStream<S> {
    inner: S,
    activity: Arc<Activity>,
    request_header: Duration,
    keepalive: Duration,
    alarm: Alarm,
}

impl<S> GuardedStream<S> {
    /// Guards `inner` with the client deadlines of `timeouts`.
    pub fn new(inner: S, activity: Arc<Activity>, timeouts: &Timeouts) -> GuardedStream<S> {
        GuardedStream {
            inner,
            activity,
            request_header: timeouts.request_header,
            keepalive: timeouts.keepalive,
            alarm: Alarm::default(),
        }
    }

    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let Some(deadline) = self.activity.deadline(self.request_header, self.keepalive) else {
            return Ok(());
        };
        match self.alarm.poll_until(deadline, cx) {
            Poll::Ready(()) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "client connection idle or request head too slow",
            )),
            Poll::Pending => Ok(()),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for GuardedStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.check(cx)?;
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        if buf.filled().len() > before {
            self.activity.bytes_arrived();
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for GuardedStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

// ------------------------------------------------------------ bodies

/// A body error of sessiongate's own, or the inner body's.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A body that fails once it makes no progress for `limit`. The timer is
/// armed only when the inner body has nothing ready.
pub struct IdleBody<B> {
    inner: B,
    limit: Duration,
    last_progress: Instant,
    alarm: Alarm,
}

impl<B> IdleBody<B> {
    /// Bounds the pauses of `inner`.
    pub fn new(inner: B, limit: Duration) -> IdleBody<B> {
        IdleBody {
            inner,
            limit,
            last_progress: Instant::now(),
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
                this.last_progress = Instant::now();
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                ready!(this.alarm.poll_until(this.last_progress + this.limit, cx));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_new_connection_gets_the_request_head_deadline() {
        let activity = Activity::new();
        let deadline = activity
            .deadline(Duration::from_secs(10), Duration::from_secs(75))
            .unwrap();
        assert_eq!(deadline, activity.origin + Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_gets_the_keepalive_deadline_until_bytes_arrive() {
        let activity = Activity::new();
        let request = activity.begin();
        assert_eq!(
            activity.deadline(Duration::from_secs(10), Duration::from_secs(75)),
            None
        );
        tokio::time::advance(Duration::from_secs(3)).await;
        drop(request);
        let idle = activity
            .deadline(Duration::from_secs(10), Duration::from_secs(75))
            .unwrap();
        assert_eq!(idle, activity.origin + Duration::from_secs(78));
        tokio::time::advance(Duration::from_secs(20)).await;
        activity.bytes_arrived();
        let head = activity
            .deadline(Duration::from_secs(10), Duration::from_secs(75))
            .unwrap();
        assert_eq!(head, activity.origin + Duration::from_secs(33));
    }

    #[tokio::test(start_paused = true)]
    async fn an_upgraded_connection_has_no_deadline() {
        let activity = Activity::new();
        activity.upgraded();
        assert_eq!(
            activity.deadline(Duration::from_secs(1), Duration::from_secs(1)),
            None
        );
    }
}

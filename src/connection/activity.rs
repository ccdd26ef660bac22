//! What a client connection is doing, shared by its stream (which enforces
//! the deadlines), the requests served on it (which report progress) and
//! the connection's task (which parks it when idle); and the response body
//! wrapper that keeps a request counted as in flight until it is sent.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};
use tokio::time::Instant;

use super::parking::PARK_AFTER;
/// What a client connection is doing, shared by its stream (which enforces
/// the deadlines), the requests served on it (which report progress) and
/// the connection's task (which parks it when idle).
#[derive(Debug)]
pub struct Activity {
    pub(super) origin: Instant,
    /// Requests being served (HTTP/2 may have several).
    pub(super) in_flight: AtomicU32,
    /// Requests begun so far.
    pub(super) served: AtomicU32,
    /// ms since `origin` when the connection last became idle.
    pub(super) idle_since: AtomicU64,
    /// ms since `origin` (plus one; 0: none) when a request head began.
    pub(super) head_since: AtomicU64,
    /// Switched protocols: a tunnel now, with no request deadlines.
    pub(super) upgraded: AtomicBool,
    /// The last write to the client could not complete.
    pub(super) write_blocked: AtomicBool,
    /// hyper is being closed to park: its shutdown must not close the socket.
    pub(super) parking: AtomicBool,
}

impl Activity {
    /// A fresh connection, whose first request head is awaited from now.
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            origin: Instant::now(),
            in_flight: AtomicU32::new(0),
            served: AtomicU32::new(0),
            idle_since: AtomicU64::new(0),
            head_since: AtomicU64::new(1),
            upgraded: AtomicBool::new(false),
            write_blocked: AtomicBool::new(false),
            parking: AtomicBool::new(false),
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
        self.served.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// The connection switched protocols.
    pub fn upgraded(&self) {
        self.upgraded.store(true, Ordering::Relaxed);
    }

    pub(super) fn served(&self) -> u32 {
        self.served.load(Ordering::Relaxed)
    }

    /// When the connection is to park: [`PARK_AFTER`] from when it became
    /// idle, if it has served a request since `served` were counted; None
    /// while anything is in flight, unflushed, or begun.
    pub(super) fn park_at(&self, served: u32) -> Option<Instant> {
        let idle = self.served() != served
            && self.in_flight.load(Ordering::Relaxed) == 0
            && self.head_since.load(Ordering::Relaxed) == 0
            && !self.write_blocked.load(Ordering::Relaxed)
            && !self.upgraded.load(Ordering::Relaxed);
        let idle_since = Duration::from_millis(self.idle_since.load(Ordering::Relaxed));
        idle.then(|| self.origin + idle_since + PARK_AFTER)
    }

    /// The deadline that applies now: none while a request is served or
    /// after an upgrade; else the request-head or the keep-alive deadline.
    pub(super) fn deadline(
        &self,
        request_header: Duration,
        keepalive: Duration,
    ) -> Option<Instant> {
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
    pub(super) fn bytes_arrived(&self) {
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

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        if activity.in_flight.fetch_sub(1, Ordering::Relaxed) == 1 {
            let now = activity.ms(Instant::now());
            activity.idle_since.store(now, Ordering::Relaxed);
        }
    }
}

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

    #[tokio::test(start_paused = true)]
    async fn a_connection_parks_only_when_idle_after_a_request_it_served() {
        let activity = Activity::new();
        let served = activity.served();
        assert_eq!(activity.park_at(served), None, "nothing served yet");
        activity.bytes_arrived();
        let request = activity.begin();
        assert_eq!(activity.park_at(served), None, "a request in flight");
        tokio::time::advance(Duration::from_secs(2)).await;
        drop(request);
        let idle_since = activity.origin + Duration::from_secs(2);
        assert_eq!(activity.park_at(served), Some(idle_since + PARK_AFTER));
        activity.write_blocked.store(true, Ordering::Relaxed);
        assert_eq!(activity.park_at(served), None, "a response not flushed");
        activity.write_blocked.store(false, Ordering::Relaxed);
        activity.bytes_arrived();
        assert_eq!(activity.park_at(served), None, "a next head begun");
    }
}

//! One client connection, from its first byte to its close: tells HTTP/2
//! (prior knowledge) from HTTP/1.1 by its first bytes, serves its requests
//! through the [`Gateway`], keeps the client deadlines with a watchdog on
//! its stream, and parks it while it is idle.
//!
//! Parking: hyper keeps a read and a write buffer (about 24 KiB) for as long
//! as its connection object lives. Once an HTTP/1.1 keep-alive connection has
//! been idle for [`PARK_AFTER`] (its response flushed, nothing of a next
//! request read), the hyper connection is closed without closing the socket,
//! and the socket alone waits for the client's next request, which a fresh
//! hyper connection then serves. Whatever hyper had read ahead is handed on.
//! An idle connection costs its socket, its task and its watchdog timer.
//! (HTTP/2 connections multiplex and are not parked.)

use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::StatusCode;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::{HttpService, service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};
use tracing::debug;

use crate::config::Config;
use crate::proxy::Gateway;
use crate::proxy::headers::Client;
use crate::timeouts::{Alarm, Timeouts};

/// hyper's own limit on header fields when none is set.
const HYPER_DEFAULT_MAX_HEADERS: usize = 100;

/// What an HTTP/2 prior-knowledge connection opens with (RFC 9113, 3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How a new connection's first bytes are read: at most this much at once.
const OPENING_READ: usize = 4096;

/// How long a keep-alive connection sits idle before it is parked. A busy
/// client's next request comes sooner and finds hyper's connection still
/// there: making a fresh one per request would cost about 2 µs each.
const PARK_AFTER: Duration = Duration::from_millis(50);

/// How client connections are served, made once and shared by all of them.
pub struct Connections {
    gateway: Arc<Gateway>,
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
    timeouts: Timeouts,
    trusted_proxies: Vec<IpAddr>,
}

impl Connections {
    /// The HTTP settings of `config`, serving through `gateway`.
    pub fn new(config: &Config, gateway: Arc<Gateway>) -> Connections {
        let mut http1 = http1::Builder::new();
        // The request-head and keep-alive deadlines are GuardedStream's;
        // hyper's own header timer would also cut idle keep-alive short.
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(None)
            .keep_alive(true)
            .max_buf_size(config.server.max_header_bytes);
        // hyper parses into a stack array of its default size (100); a set
        // limit costs a buffer initialized per request.
        if config.server.max_headers != HYPER_DEFAULT_MAX_HEADERS {
            http1.max_headers(config.server.max_headers);
        }
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2.timer(TokioTimer::new()).max_header_list_size(
            u32::try_from(config.server.max_header_bytes).unwrap_or(u32::MAX),
        );
        Connections {
            gateway,
            http1,
            http2,
            timeouts: Timeouts::new(config),
            trusted_proxies: config.server.trusted_proxies.clone(),
        }
    }

    /// Serves one client connection until it closes, times out, or, once
    /// `stopping` is cancelled, finishes its request in flight.
    pub async fn serve(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        stopping: CancellationToken,
    ) {
        let _ = stream.set_nodelay(true);
        let activity = Activity::new();
        let service = {
            let gateway = self.gateway.clone();
            let activity = activity.clone();
            let client = Arc::new(Client::new(peer, self.trusted_proxies.contains(&peer.ip())));
            service_fn(move |request| {
                let gateway = gateway.clone();
                let activity = activity.clone();
                let client = client.clone();
                async move {
                    let in_flight = activity.begin();
                    let response = gateway.handle(request, &client).await;
                    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
                        activity.upgraded();
                    }
                    Ok::<_, Infallible>(response.map(|body| Tracked::new(body, in_flight)))
                }
            })
        };
        let stopped = stopping.cancelled();
        tokio::pin!(stopped);
        let mut stream = GuardedStream::new(stream, activity.clone(), &self.timeouts);
        if !stream.read_opening(stopped.as_mut()).await {
            return;
        }
        if stream.unread.starts_with(H2_PREFACE) {
            let mut connection =
                Box::pin(self.http2.serve_connection(TokioIo::new(stream), service));
            drive(connection.as_mut(), stopped.as_mut(), &peer, None).await;
            return;
        }
        loop {
            // In a block of its own, so that nothing of hyper's connection
            // outlives it while the socket waits.
            let parked = {
                let served = activity.served();
                let mut connection = Box::new(
                    self.http1
                        .serve_connection(TokioIo::new(stream), service.clone())
                        .with_upgrades(),
                );
                let parks = Some((&*activity, served));
                match drive(Pin::new(&mut *connection), stopped.as_mut(), &peer, parks).await {
                    Ending::Parked => connection.into_parts(),
                    Ending::Closed => None,
                }
            };
            // None after an upgrade as well: the tunnel has the socket.
            let Some(parts) = parked else {
                return;
            };
            let http1::Parts { io, read_buf, .. } = parts;
            stream = io.into_inner();
            if !read_buf.is_empty() {
                // A copy: the bytes read ahead share hyper's whole buffer.
                stream.unread = Bytes::copy_from_slice(&read_buf);
                continue;
            }
            drop(read_buf);
            if !stream.wait_for_bytes(stopped.as_mut()).await {
                return;
            }
        }
    }
}

/// How [`drive`] let go of a connection.
enum Ending {
    /// Closed (or upgraded): the socket is gone.
    Closed,
    /// Idle, and closed by hyper without closing the socket.
    Parked,
}

/// A hyper server connection that can be asked to finish gracefully.
trait Graceful: Future<Output = hyper::Result<()>> {
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
async fn drive<C: Graceful>(
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
            if let Err(error) = result {
                debug!(%peer, %error, "connection ended with an error");
            }
            return Poll::Ready(Ending::Closed);
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
            Poll::Ready(Err(error)) => {
                debug!(%peer, %error, "connection ended with an error");
                Poll::Ready(Ending::Closed)
            }
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

// ------------------------------------------------------------ activity

/// What a client connection is doing, shared by its stream (which enforces
/// the deadlines), the requests served on it (which report progress) and
/// the connection's task (which parks it when idle).
#[derive(Debug)]
pub struct Activity {
    origin: Instant,
    /// Requests being served (HTTP/2 may have several).
    in_flight: AtomicU32,
    /// Requests begun so far.
    served: AtomicU32,
    /// ms since `origin` when the connection last became idle.
    idle_since: AtomicU64,
    /// ms since `origin` (plus one; 0: none) when a request head began.
    head_since: AtomicU64,
    /// Switched protocols: a tunnel now, with no request deadlines.
    upgraded: AtomicBool,
    /// The last write to the client could not complete.
    write_blocked: AtomicBool,
    /// hyper is being closed to park: its shutdown must not close the socket.
    parking: AtomicBool,
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

    fn served(&self) -> u32 {
        self.served.load(Ordering::Relaxed)
    }

    /// When the connection is to park: [`PARK_AFTER`] from when it became
    /// idle, if it has served a request since `served` were counted; None
    /// while anything is in flight, unflushed, or begun.
    fn park_at(&self, served: u32) -> Option<Instant> {
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

// ------------------------------------------------------------ the stream

/// A client connection's socket with its watchdog: reading fails with
/// `TimedOut`, which makes hyper close the connection, once the request head
/// or the keep-alive deadline of its [`Activity`] has passed. Bytes already
/// read (the opening, or what hyper read ahead before parking) are read
/// again first.
pub struct GuardedStream {
    inner: TcpStream,
    unread: Bytes,
    activity: Arc<Activity>,
    request_header: Duration,
    keepalive: Duration,
    alarm: Alarm,
}

impl GuardedStream {
    /// Guards `inner` with the client deadlines of `timeouts`.
    pub fn new(inner: TcpStream, activity: Arc<Activity>, timeouts: &Timeouts) -> GuardedStream {
        GuardedStream {
            inner,
            unread: Bytes::new(),
            activity,
            request_header: timeouts.request_header,
            keepalive: timeouts.keepalive,
            alarm: Alarm::default(),
        }
    }

    /// Ready with an error once the deadline that applies has passed.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let Some(deadline) = self.activity.deadline(self.request_header, self.keepalive) else {
            return Poll::Pending;
        };
        ready!(self.alarm.poll_until(deadline, cx));
        Poll::Ready(io::Error::new(
            io::ErrorKind::TimedOut,
            "client connection idle or request head too slow",
        ))
    }

    /// Waits, holding nothing but the socket, until the client sends
    /// something: false at the deadline, at an error, or once `stopped`.
    async fn wait_for_bytes(
        &mut self,
        mut stopped: Pin<&mut WaitForCancellationFuture<'_>>,
    ) -> bool {
        poll_fn(|cx| {
            if stopped.as_mut().poll(cx).is_ready() || self.poll_deadline(cx).is_ready() {
                return Poll::Ready(false);
            }
            self.inner.poll_read_ready(cx).map(|ready| ready.is_ok())
        })
        .await
    }

    /// Reads a new connection's first bytes into `unread`, enough to tell
    /// HTTP/2's preface from an HTTP/1.1 request: false if none come.
    async fn read_opening(&mut self, mut stopped: Pin<&mut WaitForCancellationFuture<'_>>) -> bool {
        let mut opening = BytesMut::new();
        loop {
            if !self.wait_for_bytes(stopped.as_mut()).await {
                return false;
            }
            opening.reserve(OPENING_READ);
            match self.inner.try_read_buf(&mut opening) {
                Ok(0) => return false,
                Ok(_) => {}
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                Err(_) => return false,
            }
            if opening.len() >= H2_PREFACE.len() || !H2_PREFACE.starts_with(&opening) {
                self.unread = opening.freeze();
                return true;
            }
        }
    }
}

impl AsyncRead for GuardedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Poll::Ready(error) = self.poll_deadline(cx) {
            return Poll::Ready(Err(error));
        }
        if !self.unread.is_empty() {
            let n = self.unread.len().min(buf.remaining());
            buf.put_slice(&self.unread[..n]);
            self.unread.advance(n);
            if self.unread.is_empty() {
                self.unread = Bytes::new();
            }
            self.activity.bytes_arrived();
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        if buf.filled().len() > before {
            self.activity.bytes_arrived();
        }
        Poll::Ready(Ok(()))
    }
}

impl GuardedStream {
    /// Notes whether a write to the client is waiting for room.
    fn written<T>(&self, result: Poll<T>) -> Poll<T> {
        self.activity
            .write_blocked
            .store(result.is_pending(), Ordering::Relaxed);
        result
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.written(result)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.written(result)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.activity.parking.load(Ordering::Relaxed) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
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

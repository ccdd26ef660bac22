//! A client connection's stream with its watchdog: the request-head and
//! keep-alive deadlines, enforced on every read, over any transport that
//! can say it is readable without being read ([`ClientIo`]: plain TCP, and
//! a TLS stream). It also reads a new connection's opening bytes, which
//! tell HTTP/2's preface from HTTP/1.1, and closes an HTTP/1.1 connection
//! the way nginx's `lingering_close` does ([`GuardedStream::linger`]).

use std::future::{Future, poll_fn};
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::WaitForCancellationFuture;

use super::activity::Activity;
use crate::timeouts::{Alarm, Timeouts};

/// What an HTTP/2 prior-knowledge connection opens with (RFC 9113, 3.4).
pub(super) const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How a new connection's first bytes are read: at most this much at once.
const OPENING_READ: usize = 4096;

/// A closing connection reads what the client still sends for at most this
/// long ([`GuardedStream::linger`]; nginx's `lingering_time`)...
const LINGER_TIME: Duration = Duration::from_secs(30);
/// ...and gives up once the client pauses this long (`lingering_timeout`).
const LINGER_TIMEOUT: Duration = Duration::from_secs(5);
/// What the lingering close reads at once, and drops.
const LINGER_READ: usize = 4096;

/// A client transport: a byte stream that can also wait until it is
/// readable without reading, so that a parked connection holds no buffer.
pub trait ClientIo: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Ready once something can be read (or the stream has failed).
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

impl ClientIo for TcpStream {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        TcpStream::poll_read_ready(self, cx)
    }
}

/// A client connection's socket with its watchdog: reading fails with
/// `TimedOut`, which makes hyper close the connection, once the request head
/// or the keep-alive deadline of its [`Activity`] has passed. Bytes already
/// read (the opening, or what hyper read ahead before parking) are read
/// again first.
pub struct GuardedStream<S> {
    inner: S,
    pub(super) unread: Bytes,
    activity: Arc<Activity>,
    request_header: Duration,
    keepalive: Duration,
    alarm: Alarm,
}

impl<S: ClientIo> GuardedStream<S> {
    /// Guards `inner` with the client deadlines of `timeouts`.
    pub fn new(inner: S, activity: Arc<Activity>, timeouts: &Timeouts) -> GuardedStream<S> {
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
    pub(super) async fn wait_for_bytes(
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
    pub(super) async fn read_opening(
        &mut self,
        mut stopped: Pin<&mut WaitForCancellationFuture<'_>>,
    ) -> bool {
        let mut opening = BytesMut::new();
        loop {
            opening.reserve(OPENING_READ);
            let read = poll_fn(|cx| {
                if stopped.as_mut().poll(cx).is_ready() || self.poll_deadline(cx).is_ready() {
                    return Poll::Ready(Ok(0));
                }
                let read = self.inner.read_buf(&mut opening);
                std::pin::pin!(read).poll(cx)
            })
            .await;
            match read {
                Ok(0) | Err(_) => return false,
                Ok(_) => {}
            }
            if opening.len() >= H2_PREFACE.len() || !H2_PREFACE.starts_with(&opening) {
                self.unread = opening.freeze();
                return true;
            }
        }
    }

    /// Closes the way nginx's `lingering_close` does, once hyper has let go
    /// of a connection that may still be receiving: the rest of a head it
    /// refused (400, 414, 431), or a body its response did not wait for. A
    /// socket closed with unread bytes sends a reset, and the reset can make
    /// the client's stack drop the response before the client reads it (RFC
    /// 9112, 9.6). So the writing side is shut (hyper has mostly done so
    /// already; again is harmless), and what still comes is read and
    /// dropped until the client stops or closes: at most [`LINGER_TIME`] in
    /// all, [`LINGER_TIMEOUT`] between reads, and not at all once `stopped`
    /// or after a deadline of this stream's own has cut the client off. A
    /// client that closed first costs a `shutdown` and one read.
    pub(super) async fn linger(&mut self, mut stopped: Pin<&mut WaitForCancellationFuture<'_>>) {
        // Cut off by a deadline (which hyper may have reported as a clean end).
        if self
            .activity
            .deadline(self.request_header, self.keepalive)
            .is_some_and(|deadline| deadline <= Instant::now())
        {
            return;
        }
        let give_up = Instant::now() + LINGER_TIME;
        let mut shut = false;
        loop {
            let wait_until = give_up.min(Instant::now() + LINGER_TIMEOUT);
            let read = poll_fn(|cx| {
                if stopped.as_mut().poll(cx).is_ready()
                    || self.alarm.poll_not_before(wait_until, cx).is_ready()
                {
                    return Poll::Ready(Ok(0));
                }
                if !shut {
                    ready!(Pin::new(&mut self.inner).poll_shutdown(cx))?;
                    shut = true;
                }
                // On the stack of this poll only: the future holds no buffer.
                let mut discard = [MaybeUninit::uninit(); LINGER_READ];
                let mut buf = ReadBuf::uninit(&mut discard);
                ready!(Pin::new(&mut self.inner).poll_read(cx, &mut buf))?;
                Poll::Ready(Ok::<_, io::Error>(buf.filled().len()))
            })
            .await;
            if !matches!(read, Ok(n) if n > 0) {
                return;
            }
        }
    }
}

impl<S: ClientIo> AsyncRead for GuardedStream<S> {
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

impl<S: ClientIo> GuardedStream<S> {
    /// Notes whether a write to the client is waiting for room.
    fn written<T>(&self, result: Poll<T>) -> Poll<T> {
        self.activity
            .write_blocked
            .store(result.is_pending(), Ordering::Relaxed);
        result
    }
}

impl<S: ClientIo> AsyncWrite for GuardedStream<S> {
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
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;
    use tokio_util::sync::CancellationToken;

    use super::*;

    /// A connected pair: the proxy's guarded side (deadlines of `deadline`)
    /// and the client's socket.
    async fn pair(deadline: Duration) -> (GuardedStream<TcpStream>, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let timeouts = Timeouts {
            upstream_connect: deadline,
            upstream_response: deadline,
            upstream_idle: deadline,
            body_idle: deadline,
            request_header: deadline,
            keepalive: deadline,
            drain: deadline,
            store: deadline,
        };
        (
            GuardedStream::new(server, Activity::new(), &timeouts),
            client,
        )
    }

    /// How long `linger` took (on tokio's clock, paused in these tests).
    async fn lingered(
        stream: &mut GuardedStream<TcpStream>,
        token: &CancellationToken,
    ) -> Duration {
        let stopped = token.cancelled();
        tokio::pin!(stopped);
        let started = Instant::now();
        stream.linger(stopped).await;
        started.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_client_is_let_go_after_the_lingering_timeout_and_sees_the_close() {
        let (mut stream, mut client) = pair(Duration::from_secs(600)).await;
        let took = lingered(&mut stream, &CancellationToken::new()).await;
        assert!(took >= LINGER_TIMEOUT && took < LINGER_TIME, "{took:?}");
        let mut byte = [0u8; 1];
        assert_eq!(client.read(&mut byte).await.unwrap(), 0, "no FIN");
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_keeps_sending_is_read_for_the_lingering_time_at_most() {
        let (mut stream, mut client) = pair(Duration::from_secs(600)).await;
        let sender = tokio::spawn(async move {
            while client.write_all(&[b'x'; 1000]).await.is_ok() {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        let took = lingered(&mut stream, &CancellationToken::new()).await;
        assert!(
            took >= LINGER_TIME && took < LINGER_TIME + LINGER_TIMEOUT,
            "{took:?}"
        );
        sender.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_closed_first_or_a_stop_ends_the_lingering_at_once() {
        let (mut stream, client) = pair(Duration::from_secs(600)).await;
        drop(client);
        let took = lingered(&mut stream, &CancellationToken::new()).await;
        assert!(took < Duration::from_secs(1), "{took:?}");

        let (mut stream, _client) = pair(Duration::from_secs(600)).await;
        let stop = CancellationToken::new();
        stop.cancel();
        let took = lingered(&mut stream, &stop).await;
        assert!(took < Duration::from_secs(1), "{took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_cut_off_by_its_deadline_gets_no_lingering() {
        let (mut stream, mut client) = pair(Duration::from_secs(2)).await;
        let mut buf = [0u8; 16];
        let read = stream.read(&mut buf).await;
        assert_eq!(read.unwrap_err().kind(), io::ErrorKind::TimedOut);
        client.write_all(b"more").await.unwrap();
        let took = lingered(&mut stream, &CancellationToken::new()).await;
        assert!(took < Duration::from_secs(1), "{took:?}");
    }
}

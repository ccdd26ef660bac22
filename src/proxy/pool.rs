//! Keep-alive HTTP/1.1 connections to one upstream server, on hyper's
//! connection-level client. No task is spawned per connection: the request
//! that uses one polls its connection future itself, while it waits for the
//! response head and then from its response body; an idle one is polled
//! once at checkout and at each sweep, to notice that the server closed
//! it. Only a protocol switch (101) leaves its connection future to a task
//! of its own, which hands the socket to the upgrade.
//!
//! [`Pool::send`] takes a connection: an idle one, or a new one made under
//! the connect deadline. Nothing is sent before that, so a failed connect
//! hands the request back whole ([`Sent::Unsent`]), to go to the next
//! server; so does a fresh connection that fails before the request is
//! written. A pooled connection the server closed in the meantime is
//! replaced by a fresh one, the request unharmed. A connection returns to the
//! pool when its response body has been read to the end.
//!
//! Each connection keeps one timer for the response-head deadline, reused
//! from request to request: it is moved only when it fires, so a request
//! that is answered in time touches no timer wheel.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::{TrySendError, http1};
use hyper_util::rt::TokioIo;
use pin_project_lite::pin_project;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::debug;

use super::body::RequestBody;
use crate::config::UpstreamUrl;
use crate::timeouts::{Alarm, BoxError, Elapsed, within};

/// The connection's future: hyper's HTTP/1.1 state machine, which reads
/// and writes the socket. Nobody spawns it: the task that uses the
/// connection polls it (see [`Sender`]).
type Driver = Pin<Box<dyn Future<Output = Result<(), hyper::Error>> + Send>>;

/// One connection: hyper's request handle and the connection's future,
/// driven by whichever task holds them: the request's while it sends and
/// reads the response, the checkout's to see whether an idle one was closed.
struct Sender {
    send: http1::SendRequest<RequestBody>,
    /// `None` once the connection has ended.
    driver: Option<Driver>,
}

impl Sender {
    /// Lets the connection make progress (read, write, notice its end).
    fn drive(&mut self, cx: &mut Context<'_>) {
        if let Some(driver) = &mut self.driver
            && let Poll::Ready(result) = driver.as_mut().poll(cx)
        {
            if let Err(error) = result {
                debug!(%error, "upstream connection ended with an error");
            }
            // Dropping it answers whatever waits on it.
            self.driver = None;
        }
    }

    /// Drives it once without a task to wake: an idle connection learns
    /// whether the server closed it.
    fn drive_now(&mut self) {
        self.drive(&mut Context::from_waker(std::task::Waker::noop()));
    }

    fn is_ready(&self) -> bool {
        self.driver.is_some() && self.send.is_ready()
    }

    fn is_closed(&self) -> bool {
        self.driver.is_none() || self.send.is_closed()
    }

    /// A protocol switch: the connection's future hands the socket to the
    /// upgrade when it ends, so it runs on by itself from here.
    fn spawn_rest(self) {
        if let Some(driver) = self.driver {
            tokio::spawn(async move {
                if let Err(error) = driver.await {
                    debug!(%error, "upgraded upstream connection ended with an error");
                }
            });
        }
    }
}

/// The connections to one server.
pub struct Pool {
    server: UpstreamUrl,
    idle: Mutex<Vec<Idle>>,
    max_idle: usize,
    idle_timeout: Duration,
    connect_timeout: Duration,
    /// For an `https://` server: the verifying client configuration.
    tls: Option<Arc<rustls::ClientConfig>>,
}

struct Idle {
    sender: Sender,
    alarm: Alarm,
    since: Instant,
}

/// Why no connection could be had.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Connecting failed.
    #[error("connect: {0}")]
    Io(#[from] std::io::Error),
    /// Connecting took too long.
    #[error(transparent)]
    Timeout(#[from] Elapsed),
    /// The HTTP/1.1 handshake failed.
    #[error("handshake: {0}")]
    Handshake(#[from] hyper::Error),
}

/// A connection, taken from the pool or just made, ready for one request.
struct Connection {
    sender: Sender,
    /// Its response-head timer, kept with it.
    alarm: Alarm,
    pool: Arc<Pool>,
    /// True when it served requests before (it may have been closed since).
    reused: bool,
}

/// The outcome of [`Pool::send`].
pub enum Sent {
    /// The response head arrived.
    Response(Response<PooledBody>),
    /// Nothing was sent (connecting failed, or the connection failed before
    /// the request was written): here it is back.
    Unsent(Request<RequestBody>, BoxError),
    /// The connection failed after the request was (perhaps partly) written.
    Failed(BoxError),
    /// No response head within the deadline.
    TimedOut(Elapsed),
}

impl Pool {
    /// An empty pool for `server`.
    pub fn new(
        server: UpstreamUrl,
        max_idle: usize,
        idle_timeout: Duration,
        connect_timeout: Duration,
    ) -> Pool {
        Pool {
            server,
            idle: Mutex::new(Vec::new()),
            max_idle,
            idle_timeout,
            connect_timeout,
            tls: None,
        }
    }

    /// The same pool speaking TLS to its server with `tls` (the URL's host
    /// as SNI, its certificate verified).
    pub fn with_tls(self, tls: Option<Arc<rustls::ClientConfig>>) -> Pool {
        Pool { tls, ..self }
    }

    /// True when this pool can serve `server` as configured now: the same
    /// URL and pool settings (a reload keeps such a pool and its
    /// connections). An https pool is made again, as its roots are re-read.
    pub fn serves(
        &self,
        server: &UpstreamUrl,
        max_idle: usize,
        idle: Duration,
        connect: Duration,
    ) -> bool {
        self.server == *server
            && !server.https
            && self.max_idle == max_idle
            && self.idle_timeout == idle
            && self.connect_timeout == connect
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sends a request on one of this server's connections and waits up to
    /// `response_timeout` for the response head, counted from when the
    /// request body has been sent whole (a slow upload is the body idle
    /// deadline's business); the response body brings the connection back
    /// to the pool once read to the end. (Not an `async fn`, so that its
    /// future keeps one copy of the request, not two.)
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn keeps its arguments twice"
    )]
    pub fn send(
        self: &Arc<Self>,
        mut request: Request<RequestBody>,
        response_timeout: Duration,
    ) -> impl Future<Output = Sent> + '_ {
        async move {
            loop {
                let mut connection = match self.checkout().await {
                    Ok(connection) => connection,
                    Err(error) => return Sent::Unsent(request, error.into()),
                };
                let reused = connection.reused;
                let mut alarm = std::mem::take(&mut connection.alarm);
                let body_sent = request.body().sent();
                let deadline = async {
                    body_sent.await;
                    let at = Instant::now() + response_timeout;
                    std::future::poll_fn(|cx| alarm.poll_not_before(at, cx)).await;
                };
                let sent = tokio::select! {
                    biased;
                    sent = connection.send(request) => sent,
                    () = deadline => Sent::TimedOut(Elapsed {
                        what: "the upstream response head",
                        limit: response_timeout,
                    }),
                };
                match sent {
                    // A pooled connection the server closed meanwhile: a fresh one.
                    Sent::Unsent(unsent, _) if reused => request = unsent,
                    Sent::Response(mut response) => {
                        // The timer goes back to the pool with the connection.
                        if let Some(back) = &mut response.body_mut().give_back {
                            back.alarm = alarm;
                        }
                        return Sent::Response(response);
                    }
                    sent => return sent,
                }
            }
        }
    }

    /// The most recently used idle connection that is still open and not
    /// expired; otherwise a new connection.
    async fn checkout(self: &Arc<Self>) -> Result<Connection, ConnectError> {
        let now = Instant::now();
        let reusable = {
            let mut idle = self.idle();
            let mut found = None;
            while let Some(mut candidate) = idle.pop() {
                let fresh = now.duration_since(candidate.since) < self.idle_timeout;
                candidate.sender.drive_now();
                if fresh && candidate.sender.is_ready() {
                    found = Some((candidate.sender, candidate.alarm));
                    break;
                }
            }
            found
        };
        let (sender, alarm, reused) = match reusable {
            Some((sender, alarm)) => (sender, alarm, true),
            // Boxed: connecting (and a TLS handshake) takes kilobytes of
            // state that a request on a pooled connection would carry too.
            None => (Box::pin(self.connect()).await?, Alarm::default(), false),
        };
        Ok(Connection {
            sender,
            alarm,
            pool: self.clone(),
            reused,
        })
    }

    async fn connect(&self) -> Result<Sender, ConnectError> {
        let address = self.server.authority.as_str();
        let stream = within(
            "connecting upstream",
            self.connect_timeout,
            TcpStream::connect(address),
        )
        .await??;
        stream.set_nodelay(true)?;
        let Some(tls) = &self.tls else {
            return self.handshake(TokioIo::new(stream)).await;
        };
        let host = self.server.authority.host();
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = rustls_pki_types::ServerName::try_from(host.to_string())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let connector = tokio_rustls::TlsConnector::from(tls.clone());
        let stream = within(
            "the TLS handshake upstream",
            self.connect_timeout,
            connector.connect(name, stream),
        )
        .await??;
        self.handshake(TokioIo::new(stream)).await
    }

    async fn handshake<T>(&self, io: T) -> Result<Sender, ConnectError>
    where
        T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let (send, connection) = http1::Builder::new().handshake(io).await?;
        Ok(Sender {
            send,
            driver: Some(Box::pin(connection.with_upgrades())),
        })
    }

    fn give_back(&self, sender: Sender, alarm: Alarm) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle();
        if idle.len() < self.max_idle {
            idle.push(Idle {
                sender,
                alarm,
                since: Instant::now(),
            });
        }
    }

    /// Closes idle connections older than the idle timeout, and those the
    /// server closed (each is driven once to notice).
    pub fn sweep(&self) {
        let now = Instant::now();
        self.idle().retain_mut(|c| {
            c.sender.drive_now();
            now.duration_since(c.since) < self.idle_timeout && !c.sender.is_closed()
        });
    }
}

impl Connection {
    /// Sends a request on this connection: it goes to hyper at once, and
    /// the [`Exchange`] drives the connection until the response head.
    fn send(mut self, request: Request<RequestBody>) -> Exchange<impl Future<Output = Answer>> {
        let response = self.sender.send.try_send_request(request);
        Exchange {
            connection: Some(self),
            response,
        }
    }

    /// What hyper's answer makes of the request.
    fn answered(self, answer: Answer) -> Sent {
        match answer {
            Ok(response) => {
                // A protocol switch takes the connection: it never comes back.
                let keep = response.status() != http::StatusCode::SWITCHING_PROTOCOLS;
                if !keep {
                    self.sender.spawn_rest();
                    return Sent::Response(response.map(|body| PooledBody {
                        inner: body,
                        give_back: None,
                    }));
                }
                let give_back = Some(GiveBack {
                    sender: self.sender,
                    alarm: self.alarm,
                    pool: self.pool,
                });
                Sent::Response(response.map(|body| PooledBody {
                    inner: body,
                    give_back,
                }))
            }
            Err(mut error) => match error.take_message() {
                Some(request) => Sent::Unsent(request, error.into_error().into()),
                None => Sent::Failed(error.into_error().into()),
            },
        }
    }
}

/// hyper's answer to a request: the response head, or the error, with the
/// request when none of it was written.
type Answer = Result<Response<Incoming>, TrySendError<Request<RequestBody>>>;

pin_project! {
    /// A request handed to a connection, until the response head. A future
    /// of its own rather than an `async` block: that would keep hyper's
    /// response future twice, as it was handed over and as it is pinned,
    /// and every future that awaits a request carries this one whole.
    struct Exchange<R> {
        // Taken when the answer comes.
        connection: Option<Connection>,
        #[pin]
        response: R,
    }
}

impl<R: Future<Output = Answer>> Future for Exchange<R> {
    type Output = Sent;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Sent> {
        let mut this = self.project();
        let sender = &mut this
            .connection
            .as_mut()
            .expect("polled after its answer")
            .sender;
        let open = sender.driver.is_some();
        sender.drive(cx);
        let answer = match this.response.as_mut().poll(cx) {
            // The connection ended just now and was dropped, which answers
            // the request: poll once more to get that answer.
            Poll::Pending if open && sender.driver.is_none() => this.response.poll(cx),
            polled => polled,
        };
        let Poll::Ready(answer) = answer else {
            return Poll::Pending;
        };
        let connection = this.connection.take().expect("polled after its answer");
        Poll::Ready(connection.answered(answer))
    }
}

/// A response body that returns its connection to the pool at its end.
pub struct PooledBody {
    inner: Incoming,
    give_back: Option<GiveBack>,
}

/// A connection on its way back to its pool.
struct GiveBack {
    sender: Sender,
    alarm: Alarm,
    pool: Arc<Pool>,
}

impl PooledBody {
    fn finished(&mut self) {
        if let Some(GiveBack {
            sender,
            alarm,
            pool,
        }) = self.give_back.take()
        {
            pool.give_back(sender, alarm);
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        // The body arrives as the connection reads it: drive it first.
        if let Some(back) = &mut self.give_back {
            back.sender.drive(cx);
        }
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.finished(),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.finished(),
            Poll::Ready(Some(Err(_))) => self.give_back = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        // A body dropped unread (say, a HEAD answer or a 304) may be complete.
        if self.inner.is_end_stream() {
            self.finished();
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::{BodyExt, Full};
    use tokio::net::TcpListener;

    use super::*;

    /// A server that answers `/slow` after two seconds, anything else at once.
    async fn server() -> UpstreamUrl {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let service = hyper::service::service_fn(|request: Request<Incoming>| async move {
                    if request.uri().path() == "/slow" {
                        tokio::time::sleep(Duration::from_secs(2)).await;
                    }
                    Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from_static(
                        b"ok",
                    ))))
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        format!("http://{addr}").parse().unwrap()
    }

    fn get(path: &str) -> Request<RequestBody> {
        Request::builder()
            .uri(path)
            .header(http::header::HOST, "upstream")
            .body(RequestBody::empty())
            .unwrap()
    }

    #[tokio::test]
    async fn a_reused_connection_and_its_timer_still_bound_the_response_head() {
        let limit = Duration::from_millis(200);
        // Right after the last answer (its timer still set), and once that
        // timer has fired unattended.
        for pause in [Duration::ZERO, Duration::from_millis(300)] {
            let url = server().await;
            let pool = Arc::new(Pool::new(url, 4, Duration::from_secs(60), limit));
            for _ in 0..2 {
                let Sent::Response(response) = pool.send(get("/"), limit).await else {
                    panic!("the fast path is answered");
                };
                response.into_body().collect().await.unwrap();
            }
            assert_eq!(pool.idle().len(), 1, "one connection, reused");
            tokio::time::sleep(pause).await;
            let started = Instant::now();
            let sent = pool.send(get("/slow"), limit).await;
            assert!(matches!(sent, Sent::TimedOut(_)), "after {pause:?}");
            let took = started.elapsed();
            assert!(
                took >= limit && took < Duration::from_secs(1),
                "{took:?} after {pause:?}"
            );
        }
    }
}

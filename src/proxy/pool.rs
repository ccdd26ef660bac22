//! Keep-alive HTTP/1.1 connections to one upstream server, on hyper's
//! connection-level client.
//!
//! A request first takes a connection ([`Pool::checkout`]): an idle one, or
//! a new one made under the connect deadline. Only then is the request
//! built and sent, so a failed connect leaves the request whole, to be sent
//! to the next server. A pooled connection the server has closed in the
//! meantime hands the request back unsent ([`Sent::Unsent`]). A connection
//! returns to the pool when its response body has been read to the end.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::debug;

use super::body::RequestBody;
use crate::config::UpstreamUrl;
use crate::timeouts::{Elapsed, within};

type Sender = http1::SendRequest<RequestBody>;

/// The connections to one server.
pub struct Pool {
    server: UpstreamUrl,
    idle: Mutex<Vec<Idle>>,
    max_idle: usize,
    idle_timeout: Duration,
    connect_timeout: Duration,
}

struct Idle {
    sender: Sender,
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
pub struct Connection {
    sender: Sender,
    pool: Arc<Pool>,
    /// True when it served requests before (it may have been closed since).
    pub reused: bool,
}

/// The outcome of sending a request on a [`Connection`].
pub enum Sent {
    /// The response head arrived.
    Response(Response<PooledBody>),
    /// The connection failed before the request was written: here it is back.
    Unsent(Request<RequestBody>, hyper::Error),
    /// The connection failed after the request was (perhaps partly) written.
    Failed(hyper::Error),
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
        }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The most recently used idle connection that is still open and not
    /// expired; otherwise a new connection.
    pub async fn checkout(self: &Arc<Self>) -> Result<Connection, ConnectError> {
        let now = Instant::now();
        let reusable = {
            let mut idle = self.idle();
            let mut found = None;
            while let Some(candidate) = idle.pop() {
                let fresh = now.duration_since(candidate.since) < self.idle_timeout;
                if fresh && candidate.sender.is_ready() {
                    found = Some(candidate.sender);
                    break;
                }
            }
            found
        };
        if let Some(sender) = reusable {
            return Ok(Connection {
                sender,
                pool: self.clone(),
                reused: true,
            });
        }
        let sender = self.connect().await?;
        Ok(Connection {
            sender,
            pool: self.clone(),
            reused: false,
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
        let (sender, connection) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await?;
        let server = self.server.clone();
        tokio::spawn(async move {
            if let Err(error) = connection.with_upgrades().await {
                debug!(%server, %error, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }

    fn give_back(&self, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle();
        if idle.len() < self.max_idle {
            idle.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }

    /// Closes idle connections older than the idle timeout.
    pub fn sweep(&self) {
        let now = Instant::now();
        self.idle()
            .retain(|c| now.duration_since(c.since) < self.idle_timeout && !c.sender.is_closed());
    }
}

impl Connection {
    /// Sends a request; its response body brings the connection back to the
    /// pool once read to the end.
    pub async fn send(mut self, request: Request<RequestBody>) -> Sent {
        match self.sender.try_send_request(request).await {
            Ok(response) => {
                // A protocol switch takes the connection: it never comes back.
                let keep = response.status() != http::StatusCode::SWITCHING_PROTOCOLS;
                let give_back = keep.then_some((self.sender, self.pool));
                Sent::Response(response.map(|body| PooledBody {
                    inner: body,
                    give_back,
                }))
            }
            Err(mut error) => match error.take_message() {
                Some(request) => Sent::Unsent(request, error.into_error()),
                None => Sent::Failed(error.into_error()),
            },
        }
    }
}

/// A response body that returns its connection to the pool at its end.
pub struct PooledBody {
    inner: Incoming,
    give_back: Option<(Sender, Arc<Pool>)>,
}

impl PooledBody {
    fn finished(&mut self) {
        if let Some((sender, pool)) = self.give_back.take() {
            pool.give_back(sender);
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

//! One client connection, from its first byte to its close: tells HTTP/2
//! (prior knowledge) from HTTP/1.1 by its first bytes and serves its
//! requests through the [`Gateway`]. Its parts, one file each:
//!
//! - `activity.rs`: what the connection is doing (requests in flight, idle
//!   since when), shared by everything below;
//! - `stream.rs`: the stream's watchdog, the request-head and keep-alive
//!   deadlines, over any [`ClientIo`] transport (TCP, TLS); the lingering
//!   close;
//! - `parking.rs`: an idle HTTP/1.1 connection gives up hyper's buffers and
//!   its socket waits alone; graceful close at shutdown.

mod activity;
mod parking;
mod stream;

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::StatusCode;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio_util::sync::CancellationToken;

pub use self::activity::{Activity, InFlight, Tracked};
use self::parking::{Ending, drive};
use self::stream::H2_PREFACE;
pub use self::stream::{ClientIo, GuardedStream};
use crate::metrics::Protocol;
use crate::proxy::Gateway;
use crate::proxy::headers::Client;
use crate::settings::Settings;
use crate::timeouts::Timeouts;

/// hyper's own limit on header fields when none is set.
const HYPER_DEFAULT_MAX_HEADERS: usize = 100;

/// What the connection runs over, as the listener knows it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Transport {
    /// TLS (`X-Forwarded-Proto: https`).
    pub https: bool,
    /// ALPN chose `h2`: HTTP/2 from the first byte.
    pub h2: bool,
}

/// How client connections are served, made once and shared by all of them.
/// Each request takes the [`Gateway`] in force when it starts.
pub struct Connections {
    gateway: Arc<ArcSwap<Gateway>>,
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
    timeouts: Timeouts,
    trusted_proxies: Vec<IpAddr>,
}

impl Connections {
    /// The HTTP settings of `settings`, serving through `gateway`.
    pub fn new(settings: &Settings, gateway: Arc<ArcSwap<Gateway>>) -> Connections {
        let config = &settings.config;
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
            timeouts: settings.timeouts,
            trusted_proxies: config.server.trusted_proxies.clone(),
        }
    }

    /// Serves one plain TCP client connection (see [`Connections::serve_as`]).
    pub async fn serve<S: ClientIo>(
        self: Arc<Self>,
        stream: S,
        peer: SocketAddr,
        stopping: CancellationToken,
    ) {
        self.serve_as(stream, peer, stopping, Transport::default())
            .await
    }

    /// Serves one client connection until it closes, times out, or, once
    /// `stopping` is cancelled, finishes its request in flight. Over TLS,
    /// ALPN has chosen the protocol; otherwise the first bytes do (the
    /// HTTP/2 preface, or HTTP/1.1).
    pub async fn serve_as<S: ClientIo>(
        self: Arc<Self>,
        stream: S,
        peer: SocketAddr,
        stopping: CancellationToken,
        transport: Transport,
    ) {
        let activity = Activity::new();
        let service = {
            let gateway = self.gateway.clone();
            let activity = activity.clone();
            let client = Arc::new(
                Client::new(peer, self.trusted_proxies.contains(&peer.ip()))
                    .over_tls(transport.https),
            );
            service_fn(move |request| {
                // The configuration in force when the request starts (a
                // reload swaps it; this request keeps the one it began with).
                let gateway = gateway.load_full();
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
        if !transport.h2 && !stream.read_opening(stopped.as_mut()).await {
            return;
        }
        if transport.h2 || stream.unread.starts_with(H2_PREFACE) {
            let _counted = self.gateway.load().metrics().open(Protocol::H2);
            let mut connection =
                Box::pin(self.http2.serve_connection(TokioIo::new(stream), service));
            drive(connection.as_mut(), stopped.as_mut(), &peer, None).await;
            return;
        }
        let _counted = self.gateway.load().metrics().open(Protocol::Http1);
        loop {
            // In a block of its own, so that nothing of hyper's connection
            // outlives it while the socket waits.
            let (ending, parts) = {
                let served = activity.served();
                let mut connection = Box::new(
                    self.http1
                        .serve_connection(TokioIo::new(stream), service.clone())
                        .with_upgrades(),
                );
                let parks = Some((&*activity, served));
                let ending =
                    drive(Pin::new(&mut *connection), stopped.as_mut(), &peer, parks).await;
                (ending, connection.into_parts())
            };
            // None after an upgrade: the tunnel has the socket.
            let Some(http1::Parts { io, read_buf, .. }) = parts else {
                return;
            };
            stream = io.into_inner();
            if let Ending::Closed { lingers } = ending {
                drop(read_buf);
                if lingers {
                    stream.linger(stopped.as_mut()).await;
                }
                return;
            }
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

//! The listener: accepts connections, serves HTTP/1.1 and HTTP/2 (prior
//! knowledge) on each through the [`Gateway`] under the client deadlines and
//! head limits, runs the upstream health checks, and shuts down gracefully:
//! stop accepting, close tunnels, let in-flight requests finish within the
//! drain deadline.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use http::StatusCode;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Config;
use crate::error::StartError;
use crate::proxy::Gateway;
use crate::proxy::headers::Client;
use crate::timeouts::{Activity, GuardedStream, Timeouts, Tracked};

/// hyper's own limit on header fields when none is set.
const HYPER_DEFAULT_MAX_HEADERS: usize = 100;

/// A bound proxy, ready to [`run`](Server::run).
pub struct Server {
    listener: TcpListener,
    gateway: Arc<Gateway>,
    http: auto::Builder<TokioExecutor>,
    timeouts: Timeouts,
    trusted_proxies: Vec<std::net::IpAddr>,
}

impl Server {
    /// Builds the pipeline and binds the listening socket. A store that is
    /// down is reported but does not stop the start: requests then follow
    /// `store.on_error`, and the store is used again once it is back.
    pub async fn bind(config: &Config) -> Result<Server, StartError> {
        let gateway = Arc::new(Gateway::new(config)?);
        if let Err(error) = gateway.sessions().store().ping().await {
            warn!(%error, "the session store does not answer yet; serving per store.on_error until it does");
        }
        let addr = config.server.listen;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })?;
        let mut http = auto::Builder::new(TokioExecutor::new());
        // The request-head and keep-alive deadlines are GuardedStream's;
        // hyper's own header timer would also cut idle keep-alive short.
        let mut http1 = http.http1();
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
        http.http2().timer(TokioTimer::new()).max_header_list_size(
            u32::try_from(config.server.max_header_bytes).unwrap_or(u32::MAX),
        );
        Ok(Server {
            listener,
            gateway,
            http,
            timeouts: Timeouts::new(config),
            trusted_proxies: config.server.trusted_proxies.clone(),
        })
    }

    /// The address it listens on (useful when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` completes, then stops accepting, closes the
    /// tunnels and waits up to the drain deadline for in-flight requests.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let graceful = GracefulShutdown::new();
        let stopping = CancellationToken::new();
        let health = tokio::spawn(
            self.gateway
                .upstreams()
                .clone()
                .check_health(stopping.clone()),
        );
        info!(listen = %self.local_addr(), "sessiongate is serving");
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, peer)) => self.serve(stream, peer, &graceful),
                    Err(error) => {
                        // Out of file descriptors and the like: pause, then go on.
                        warn!(%error, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                },
                () = &mut shutdown => break,
            }
        }
        drop(self.listener);
        stopping.cancel();
        let _ = health.await;
        let tunnels = self.gateway.tunnels();
        info!(
            connections = graceful.count(),
            tunnels = tunnels.len(),
            "shutting down: finishing in-flight requests"
        );
        tunnels.close().await;
        let drain = self.timeouts.drain;
        if tokio::time::timeout(drain, graceful.shutdown())
            .await
            .is_err()
        {
            warn!(
                ?drain,
                "drain deadline passed; closing the connections still open"
            );
        }
        info!("shut down");
    }

    fn serve(&self, stream: TcpStream, peer: SocketAddr, graceful: &GracefulShutdown) {
        let _ = stream.set_nodelay(true);
        let activity = Activity::new();
        let stream = GuardedStream::new(stream, activity.clone(), &self.timeouts);
        let gateway = self.gateway.clone();
        let trusted = self.trusted_proxies.contains(&peer.ip());
        let client = Arc::new(Client::new(peer, trusted));
        let service = service_fn(move |request| {
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
        });
        let connection = self
            .http
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
}

//! The listener: accepts connections, serves HTTP/1.1 and HTTP/2 (prior
//! knowledge) on each through the [`Gateway`], and shuts down gracefully,
//! finishing in-flight requests first.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tracing::{info, warn};

use crate::config::Config;
use crate::error::StartError;
use crate::proxy::Gateway;

/// A bound proxy, ready to [`run`](Server::run).
pub struct Server {
    listener: TcpListener,
    gateway: Arc<Gateway>,
    http: auto::Builder<TokioExecutor>,
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
        http.http1().timer(TokioTimer::new()).keep_alive(true);
        http.http2().timer(TokioTimer::new());
        Ok(Server {
            listener,
            gateway,
            http,
        })
    }

    /// The address it listens on (useful when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` completes, then stops accepting and waits for
    /// the connections' in-flight requests to finish.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let graceful = GracefulShutdown::new();
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
        info!(
            connections = graceful.count(),
            "shutting down: finishing in-flight requests"
        );
        graceful.shutdown().await;
        info!("shut down");
    }

    fn serve(&self, stream: TcpStream, peer: SocketAddr, graceful: &GracefulShutdown) {
        let _ = stream.set_nodelay(true);
        let gateway = self.gateway.clone();
        let service = service_fn(move |request| {
            let gateway = gateway.clone();
            async move { Ok::<_, Infallible>(gateway.handle(request, peer).await) }
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

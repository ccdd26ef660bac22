//! The listener: accepts connections and gives each its own task
//! ([`crate::connection`]), runs the upstream health checks, and shuts down
//! gracefully: stop accepting, close tunnels and idle connections, let
//! in-flight requests finish within the drain deadline.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::admin::Admin;
use crate::config::Config;
use crate::connection::Connections;
use crate::error::StartError;
use crate::proxy::Gateway;
use crate::settings::Settings;

/// A bound proxy, ready to [`run`](Server::run).
pub struct Server {
    listener: TcpListener,
    gateway: Arc<Gateway>,
    connections: Arc<Connections>,
    drain: Duration,
    admin: Option<Admin>,
}

impl Server {
    /// Builds the pipeline and binds the listening socket. A store that is
    /// down is reported but does not stop the start: requests then follow
    /// `store.on_error`, and the store is used again once it is back.
    pub async fn bind(config: &Config) -> Result<Server, StartError> {
        let settings = Settings::new(config.clone());
        let gateway = Arc::new(Gateway::new(&settings)?);
        if let Err(error) = gateway.sessions().store().ping().await {
            let store = gateway.sessions().store().describe();
            warn!(%store, %error, "the session store does not answer yet; serving per store.on_error until it does");
        }
        let addr = config.server.listen;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })?;
        let admin = match &config.admin {
            Some(admin) => Some(Admin::bind(admin, gateway.clone()).await?),
            None => None,
        };
        Ok(Server {
            admin,
            listener,
            connections: Arc::new(Connections::new(&settings, gateway.clone())),
            gateway,
            drain: settings.timeouts.drain,
        })
    }

    /// The address it listens on (useful when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The admin listener's address, when `[admin]` is configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(Admin::local_addr)
    }

    /// Serves until `shutdown` completes, then stops accepting, closes the
    /// tunnels and waits up to the drain deadline for in-flight requests.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        let stopping = CancellationToken::new();
        let admin = self
            .admin
            .take()
            .map(|a| tokio::spawn(a.run(stopping.clone())));
        let connections = TaskTracker::new();
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
                    Ok((stream, peer)) => {
                        let _ = stream.set_nodelay(true);
                        let serve = self.connections.clone().serve(stream, peer, stopping.clone());
                        connections.spawn(serve);
                    }
                    Err(error) => {
                        // Out of file descriptors and the like: pause, then go on.
                        warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                () = &mut shutdown => break,
            }
        }
        drop(self.listener);
        let tunnels = self.gateway.tunnels();
        info!(
            connections = connections.len(),
            tunnels = tunnels.len(),
            "shutting down: finishing in-flight requests"
        );
        stopping.cancel();
        let _ = health.await;
        if let Some(admin) = admin {
            let _ = admin.await;
        }
        tunnels.close().await;
        connections.close();
        if tokio::time::timeout(self.drain, connections.wait())
            .await
            .is_err()
        {
            warn!(
                drain = ?self.drain,
                "drain deadline passed; closing the connections still open"
            );
        }
        info!("shut down");
    }
}

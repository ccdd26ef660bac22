//! The listener: accepts connections (plain TCP, or TLS with the handshake
//! under the request-head deadline) and gives each its own task
//! ([`crate::connection`]), runs the upstream upkeep, serves the optional
//! plain redirect listener, and shuts down gracefully: stop accepting,
//! close tunnels and idle connections, let in-flight requests finish within
//! the drain deadline. What a reload swaps ([`crate::reload`]) is in
//! [`Live`].

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::admin::Admin;
use crate::config::Config;
use crate::connection::{Connections, Transport};
use crate::error::StartError;
use crate::proxy::Gateway;
use crate::settings::Settings;
use crate::tls::{ALPN_H2, CertResolver};

/// What requests and new connections run with, swapped whole by a reload.
pub struct Live {
    /// The pipeline every request that starts now runs through.
    pub gateway: Arc<ArcSwap<Gateway>>,
    /// How new connections are served (HTTP settings, client deadlines).
    pub connections: ArcSwap<Connections>,
    /// The settings in force.
    pub settings: ArcSwap<Settings>,
    /// The configuration the process started with: what a change to
    /// `listen` and the like is measured against (they need a restart).
    pub started: Config,
    /// The certificates new TLS handshakes get (none without TLS).
    pub certs: Option<Arc<CertResolver>>,
    /// Cancelled at shutdown: stops upkeep and connections.
    pub stopping: CancellationToken,
}

/// A bound proxy, ready to [`run`](Server::run).
pub struct Server {
    listener: TcpListener,
    redirect: Option<TcpListener>,
    tls: Option<TlsAcceptor>,
    live: Arc<Live>,
    drain: Duration,
    admin: Option<Admin>,
}

impl Server {
    /// Builds the pipeline and binds the listening socket (and the redirect
    /// listener, with `server.tls.redirect_listen`). A store that is down
    /// is reported but does not stop the start: requests then follow
    /// `store.on_error`, and the store is used again once it is back.
    pub async fn bind(config: &Config) -> Result<Server, StartError> {
        let settings = Settings::new(config.clone());
        let gateway = Arc::new(ArcSwap::from_pointee(Gateway::new(&settings)?));
        if let Err(error) = gateway.load().sessions().store().ping().await {
            let store = gateway.load().sessions().store().describe();
            warn!(%store, %error, "the session store does not answer yet; serving per store.on_error until it does");
        }
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind { addr, source })
        };
        let listener = bind(config.server.listen).await?;
        let tls = config.server.tls.as_ref();
        let redirect = match tls.and_then(|t| t.redirect_listen) {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let admin = match &config.admin {
            Some(admin) => Some(Admin::bind(admin, gateway.clone()).await?),
            None => None,
        };
        let certs = tls.map(|t| {
            Arc::new(CertResolver::new(
                t.loaded.clone().expect("validation loads the certificates"),
            ))
        });
        let live = Live {
            connections: ArcSwap::from_pointee(Connections::new(&settings, gateway.clone())),
            gateway,
            started: config.clone(),
            certs: certs.clone(),
            stopping: CancellationToken::new(),
            settings: ArcSwap::from_pointee(settings),
        };
        Ok(Server {
            admin,
            listener,
            redirect,
            tls: certs.map(crate::tls::acceptor),
            drain: live.settings.load().timeouts.drain,
            live: Arc::new(live),
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

    /// The redirect listener's address, if there is one.
    pub fn redirect_addr(&self) -> Option<SocketAddr> {
        self.redirect.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// What a reload swaps (see [`crate::reload::Reloader`]).
    pub fn live(&self) -> &Arc<Live> {
        &self.live
    }

    /// Serves until `shutdown` completes, then stops accepting, closes the
    /// tunnels and waits up to the drain deadline for in-flight requests.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        let stopping = self.live.stopping.clone();
        let admin = self
            .admin
            .take()
            .map(|a| tokio::spawn(a.run(stopping.clone())));
        let connections = TaskTracker::new();
        let upkeep = self.live.gateway.load().spawn_upkeep(&stopping);
        if let Some(redirect) = self.redirect.take() {
            let port = self.local_addr().port();
            let deadline = self.live.settings.load().timeouts.request_header;
            tokio::spawn(crate::redirect::serve(
                redirect,
                port,
                deadline,
                stopping.clone(),
            ));
        }
        info!(listen = %self.local_addr(), tls = self.tls.is_some(), "sessiongate is serving");
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let _ = stream.set_nodelay(true);
                        let serving = self.live.connections.load_full();
                        match &self.tls {
                            None => {
                                connections.spawn(serving.serve(stream, peer, stopping.clone()));
                            }
                            Some(acceptor) => {
                                let deadline = self.live.settings.load().timeouts.request_header;
                                connections.spawn(serve_tls(
                                    acceptor.clone(), stream, peer, deadline, serving, stopping.clone(),
                                ));
                            }
                        }
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
        let gateway = self.live.gateway.load_full();
        let tunnels = gateway.tunnels();
        info!(
            connections = connections.len(),
            tunnels = tunnels.len(),
            "shutting down: finishing in-flight requests"
        );
        stopping.cancel();
        for task in upkeep {
            let _ = task.await;
        }
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

/// The TLS handshake, within the request-head deadline (a client that
/// sends nothing is cut then), and the connection over it: HTTP/2 when ALPN
/// chose `h2`, else HTTP/1.1.
async fn serve_tls(
    acceptor: TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
    deadline: Duration,
    connections: Arc<Connections>,
    stopping: CancellationToken,
) {
    let handshake = tokio::time::timeout(deadline, acceptor.accept(stream));
    let tls = tokio::select! {
        done = handshake => match done {
            Ok(Ok(tls)) => tls,
            Ok(Err(error)) => {
                debug!(%peer, %error, "TLS handshake failed");
                return;
            }
            Err(_) => {
                debug!(%peer, ?deadline, "TLS handshake not done within timeouts.request_header");
                return;
            }
        },
        () = stopping.cancelled() => return,
    };
    let h2 = tls.get_ref().1.alpn_protocol() == Some(ALPN_H2);
    let transport = Transport { https: true, h2 };
    connections.serve_as(tls, peer, stopping, transport).await;
}

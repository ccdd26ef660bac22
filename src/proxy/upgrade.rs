//! Protocol switches (RFC 9110 §7.8): WebSocket and any other `Upgrade`.
//! The handshake is an ordinary request, so its session is resolved and a
//! `X-Session-Update` on the 101 answer is stored; after the 101, bytes are
//! copied both ways between client and backend. Tunnels are tracked, so
//! shutdown can close them (hyper's graceful shutdown no longer sees an
//! upgraded connection).

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

/// The open tunnels (shared by the gateways a reload swaps in).
#[derive(Default, Clone)]
pub struct Tunnels {
    tracker: TaskTracker,
    closing: CancellationToken,
}

impl Tunnels {
    /// Joins the client's and the backend's upgraded connections once both
    /// sides have switched, and copies bytes between them until either side
    /// closes or [`close`](Self::close) is called. `counted` (the metrics'
    /// tunnel count) is dropped when the tunnel closes.
    pub fn open(&self, client: OnUpgrade, upstream: OnUpgrade, counted: impl Send + 'static) {
        let closing = self.closing.clone();
        self.tracker.spawn(async move {
            let _counted = counted;
            let (client, upstream) = match tokio::try_join!(client, upstream) {
                Ok(both) => both,
                Err(error) => {
                    debug!(%error, "upgrade did not complete");
                    return;
                }
            };
            let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
            tokio::select! {
                copied = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
                    debug!(?copied, "tunnel closed");
                }
                () = closing.cancelled() => debug!("tunnel closed at shutdown"),
            }
        });
    }

    /// Closes every tunnel and waits until they are gone.
    pub async fn close(&self) {
        self.closing.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }

    /// How many tunnels are open.
    pub fn len(&self) -> usize {
        self.tracker.len()
    }

    /// True when no tunnel is open.
    pub fn is_empty(&self) -> bool {
        self.tracker.is_empty()
    }
}

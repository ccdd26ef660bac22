//! Reload on SIGHUP (SPEC §8): the configuration file is read again, with
//! every `env:`/`file:` secret and every certificate, and validated as
//! `check` does. On success a new [`Gateway`] (and new [`Settings`] and
//! [`Connections`]) is swapped in whole: every request that starts
//! afterwards runs with it, requests in flight finish with the one they
//! started with. The store (sessions, the Redis connection) and the open
//! tunnels are kept, and so is the connection pool of every upstream server
//! whose URL did not change. New TLS handshakes get the new certificates;
//! open TLS connections keep their session. On failure nothing changes.
//! Each reload logs one line: `config reloaded` or `config reload failed`.
//!
//! Some keys only take effect at a restart (the listeners, the threads, the
//! store): a change to them is logged as such and otherwise ignored.

use std::path::PathBuf;
use std::sync::Arc;

use tracing::{error, info, warn};

use crate::config::{Config, ConfigError};
use crate::connection::Connections;
use crate::proxy::{BuildError, Gateway};
use crate::server::Live;
use crate::settings::Settings;

/// Why a reload left the old configuration in force.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file, a secret or a certificate is not valid (file:line: key).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The new pipeline could not be built.
    #[error(transparent)]
    Build(#[from] BuildError),
}

/// Reloads the configuration of a running [`crate::Server`].
#[derive(Clone)]
pub struct Reloader {
    live: Arc<Live>,
    path: PathBuf,
}

impl Reloader {
    /// Reloads `live` from the file at `path`.
    pub fn new(live: Arc<Live>, path: PathBuf) -> Reloader {
        Reloader { live, path }
    }

    /// Reads, validates and swaps in the configuration; logs one line.
    pub fn reload(&self) -> Result<(), ReloadError> {
        let outcome = self.try_reload();
        // The counters live on across gateways: the new one has them too.
        let metrics = self.live.gateway.load().metrics().clone();
        metrics.config_reloaded(outcome.is_ok());
        match &outcome {
            Ok(()) => info!(file = %self.path.display(), "config reloaded"),
            Err(problem) => {
                error!(error = %problem, "config reload failed; the previous configuration stays in force");
            }
        }
        outcome
    }

    fn try_reload(&self) -> Result<(), ReloadError> {
        let config = Config::load(&self.path)?;
        for key in needs_restart(&self.live.started, &config) {
            warn!(
                key,
                "changed in the configuration: takes effect at the next restart, not by reload"
            );
        }
        for warning in config.warnings() {
            warn!("{warning}");
        }
        let tls = config.server.tls.as_ref().and_then(|t| t.loaded.clone());
        let settings = Settings::new(config);
        let old = self.live.gateway.load_full();
        let gateway = Arc::new(Gateway::build(&settings, Some(&old))?);
        // Everything is ready: swap. New handshakes, then new requests.
        if let (Some(certs), Some(loaded)) = (&self.live.certs, tls) {
            certs.swap(loaded);
        }
        self.live.connections.store(Arc::new(Connections::new(
            &settings,
            self.live.gateway.clone(),
        )));
        self.live.gateway.store(gateway.clone());
        self.live.settings.store(Arc::new(settings));
        old.retire();
        // Upkeep tasks run detached; they end with the gateway's retirement
        // or at shutdown.
        drop(gateway.spawn_upkeep(&self.live.stopping));
        Ok(())
    }

    /// Reloads on every SIGHUP, for as long as the process runs.
    #[cfg(unix)]
    pub async fn on_sighup(self) {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(hangups) => hangups,
            Err(error) => {
                warn!(%error, "cannot listen for SIGHUP; reload needs a restart");
                return;
            }
        };
        while hangups.recv().await.is_some() {
            let _ = self.reload();
        }
    }
}

/// The keys whose change needs a restart, by their dotted names.
pub fn needs_restart(running: &Config, new: &Config) -> Vec<&'static str> {
    let mut keys = Vec::new();
    let (a, b) = (&running.server, &new.server);
    if a.listen != b.listen {
        keys.push("server.listen");
    }
    if a.worker_threads != b.worker_threads {
        keys.push("server.worker_threads");
    }
    if a.tls.is_some() != b.tls.is_some() {
        keys.push("server.tls");
    }
    if running.admin.as_ref().map(|a| a.listen) != new.admin.as_ref().map(|a| a.listen) {
        keys.push("admin.listen");
    }
    let redirect = |c: &Config| c.server.tls.as_ref().and_then(|t| t.redirect_listen);
    if redirect(running) != redirect(new) {
        keys.push("server.tls.redirect_listen");
    }
    // The store is kept, sessions and connection with it (a memory store
    // would lose every session): its keys, and the session policy it
    // enforces, need a restart.
    if format!("{:?}", running.store) != format!("{:?}", new.store) {
        keys.push("store");
    }
    let (s, t) = (&running.session, &new.session);
    if s.idle_timeout != t.idle_timeout
        || s.absolute_timeout != t.absolute_timeout
        || s.max_bytes != t.max_bytes
    {
        keys.push("session (idle_timeout, absolute_timeout, max_bytes)");
    }
    keys
}

/// The gateway in force, for tests that look at it.
pub fn current(live: &Live) -> Arc<Gateway> {
    live.gateway.load_full()
}

//! `[admin]`: the admin listener (SPEC §9): health, readiness, metrics, the
//! status page, and the bearer token of the `/sessions…` API. Off unless
//! the table is present; meant for a loopback or private address.

use std::net::SocketAddr;

use serde::Deserialize;

use super::Secret;

/// `[admin]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Where the admin listener binds, such as `127.0.0.1:9901`.
    pub listen: SocketAddr,
    /// The bearer token of `/sessions…`: inline, `env:NAME` or `file:/path`,
    /// at least 32 bytes. Without one, every `/sessions…` call is refused.
    #[serde(default)]
    pub token: Option<Secret>,
}

impl AdminConfig {
    /// Rules of `[admin]` against the rest: it must not share the proxy's
    /// address. (The token's length is checked as it is read.)
    pub(crate) fn check(&self, proxy_listen: SocketAddr) -> Result<(), (&'static str, String)> {
        let same_port = self.listen.port() == proxy_listen.port() && self.listen.port() != 0;
        let overlaps = self.listen.ip() == proxy_listen.ip()
            || self.listen.ip().is_unspecified()
            || proxy_listen.ip().is_unspecified();
        if same_port && overlaps {
            return Err((
                "admin.listen",
                format!(
                    "{} is the proxy's own address (server.listen = {proxy_listen}); \
                     give the admin listener a port of its own, such as 127.0.0.1:9901",
                    self.listen
                ),
            ));
        }
        Ok(())
    }

    /// A warning when the admin listener is reachable from other machines.
    pub(crate) fn warnings(&self) -> Vec<String> {
        match self.listen.ip().is_loopback() {
            true => vec![],
            false => vec![format!(
                "admin.listen = {}: the admin listener (metrics, status page) is reachable \
                 from other machines; keep it on a private network",
                self.listen
            )],
        }
    }

    /// `check`'s line: the address and what is exposed there.
    pub(crate) fn describe(&self) -> String {
        let sessions = match &self.token {
            Some(token) => format!("/sessions… with the bearer token from {}", token.origin),
            None => "/sessions… refused (no admin.token)".into(),
        };
        format!(
            "admin      {}: /healthz /readyz /metrics /status /status.json; {sessions}",
            self.listen
        )
    }
}

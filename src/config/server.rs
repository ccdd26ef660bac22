//! `[server]` and `[timeouts]`: where clients connect, and the deadline of
//! every network wait.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, de};

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// The address the proxy listens on: an IP address and a port.
    #[serde(deserialize_with = "listen")]
    pub listen: SocketAddr,
    /// The largest request head (request line and headers), in bytes.
    pub max_header_bytes: usize,
    /// The most header fields a request may have.
    pub max_headers: usize,
    /// Threads serving requests; 0 means one per CPU core.
    pub worker_threads: usize,
    /// Peers (a TLS-terminating proxy in front) whose `X-Forwarded-Proto`
    /// and `X-Forwarded-Host` are passed on instead of replaced.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// `[server.tls]`: TLS termination; plain HTTP when absent.
    pub tls: Option<super::tls::TlsConfig>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            worker_threads: 0,
            trusted_proxies: Vec::new(),
            tls: None,
        }
    }
}

/// Reads `server.listen`; a host name is refused with what to write instead.
fn listen<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(d)?;
    text.parse().map_err(|_| {
        de::Error::custom(format!(
            "{text:?} is not an IP address and port; write e.g. \"127.0.0.1:8080\", \
             \"0.0.0.0:8080\" or \"[::]:8080\""
        ))
    })
}

/// The least `server.max_header_bytes` may be: hyper's smallest read buffer.
pub const MIN_HEADER_BYTES: usize = 8192;

/// `[timeouts]`: every network wait has one of these deadlines.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimeoutsConfig {
    /// Connecting to an upstream server.
    #[serde(deserialize_with = "super::duration::parse")]
    pub upstream_connect: Duration,
    /// From sending a request upstream until its response head arrives.
    #[serde(deserialize_with = "super::duration::parse")]
    pub upstream_response: Duration,
    /// How long a pooled upstream connection may sit idle before it is closed.
    #[serde(deserialize_with = "super::duration::parse")]
    pub upstream_idle: Duration,
    /// The longest pause within a request or response body, either way.
    #[serde(deserialize_with = "super::duration::parse")]
    pub body_idle: Duration,
    /// A client's whole request head, from its first byte (or from accept).
    #[serde(deserialize_with = "super::duration::parse")]
    pub request_header: Duration,
    /// An idle client keep-alive connection.
    #[serde(deserialize_with = "super::duration::parse")]
    pub keepalive: Duration,
    /// At shutdown, how long in-flight requests get to finish.
    #[serde(deserialize_with = "super::duration::parse")]
    pub drain: Duration,
}

impl Default for TimeoutsConfig {
    fn default() -> Self {
        let secs = Duration::from_secs;
        TimeoutsConfig {
            upstream_connect: secs(2),
            upstream_response: secs(60),
            upstream_idle: secs(60),
            body_idle: secs(60),
            request_header: secs(10),
            keepalive: secs(75),
            drain: secs(30),
        }
    }
}

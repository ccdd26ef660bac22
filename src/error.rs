//! Errors, each saying where it came from (upstream, store, start-up), and
//! the one place a request's error becomes a status code and a short body.
//! Clients never see an error's text; the log does.

use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, Response, StatusCode};

use crate::proxy::body::{ProxyBody, own_body};
use crate::session::store::StoreError;

/// Why a request could not be proxied.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// No upstream server could be tried.
    #[error("no upstream server is available")]
    NoUpstream,
    /// An upstream server failed (connect, send or response head).
    #[error("upstream {server}: {source}")]
    Upstream {
        /// The server, as configured.
        server: String,
        /// What failed.
        source: crate::timeouts::BoxError,
    },
    /// An upstream server sent no response head in time.
    #[error("upstream {server}: {elapsed}")]
    UpstreamTimeout {
        /// The server, as configured.
        server: String,
        /// Which deadline passed.
        elapsed: crate::timeouts::Elapsed,
    },
    /// A backend answered 101 to a request that did not ask to switch protocols.
    #[error("upstream switched protocols without being asked")]
    UnexpectedUpgrade,
    /// The session store failed under `fail_closed`.
    #[error("session store: {0}")]
    Store(#[from] StoreError),
}

impl ProxyError {
    /// An upstream failure at `server`.
    pub fn upstream(
        server: &crate::config::UpstreamUrl,
        source: impl Into<crate::timeouts::BoxError>,
    ) -> ProxyError {
        ProxyError::Upstream {
            server: server.to_string(),
            source: source.into(),
        }
    }

    /// Which side failed, for logs.
    pub fn origin(&self) -> &'static str {
        match self {
            ProxyError::NoUpstream
            | ProxyError::Upstream { .. }
            | ProxyError::UpstreamTimeout { .. }
            | ProxyError::UnexpectedUpgrade => "upstream",
            ProxyError::Store(_) => "store",
        }
    }

    /// The response a client gets for this error: 502 when no upstream
    /// answered, 504 when it answered too late, 503 with `Retry-After` when
    /// the store is down.
    pub fn to_response(&self, retry_after: &HeaderValue) -> Response<ProxyBody> {
        let (status, body) = match self {
            ProxyError::NoUpstream
            | ProxyError::Upstream { .. }
            | ProxyError::UnexpectedUpgrade => (StatusCode::BAD_GATEWAY, "502 Bad Gateway\n"),
            ProxyError::UpstreamTimeout { .. } => {
                (StatusCode::GATEWAY_TIMEOUT, "504 Gateway Timeout\n")
            }
            ProxyError::Store(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "503 Service Unavailable: sessions are unavailable, retry shortly\n",
            ),
        };
        let mut response = Response::new(own_body(body));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(RETRY_AFTER, retry_after.clone());
        }
        response
    }
}

/// Why sessiongate could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The listening address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The store could not be set up (a bad URL, not an outage).
    #[error("cannot set up the session store: {0}")]
    Store(#[from] StoreError),
}

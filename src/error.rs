//! Errors that know where they came from, and the one place where a
//! request's error becomes a status code and a short body.
//!
//! A [`ProxyError`] carries an [`Origin`]: the client (a malformed request,
//! a body it broke off or never finished), an upstream server, the session
//! store, or sessiongate itself. The origin decides, and nothing else does,
//! whether a failure counts against a server ([`ProxyError::counts_against_upstream`])
//! and which status the client gets ([`ProxyError::to_response`]). Clients
//! never see an error's text; the log does.

use std::error::Error as StdError;
use std::fmt;

use http::header::{CONNECTION, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, Response, StatusCode};

use crate::proxy::{ProxyBody, own_body};
use crate::session::store::StoreError;
use crate::timeouts::{BoxError, Elapsed};

/// Which side a failure came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The client: a malformed request, or a body it broke off.
    Client,
    /// An upstream server.
    Upstream,
    /// The session store.
    Store,
    /// sessiongate itself.
    Internal,
}

impl Origin {
    /// The name logs use.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Client => "client",
            Origin::Upstream => "upstream",
            Origin::Store => "store",
            Origin::Internal => "internal",
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What went wrong, as far as the response is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The request breaks HTTP's rules (RFC 9112 §3.2: `Host`, say).
    BadRequest,
    /// The client's body was malformed, or ended before it was whole.
    ClientBody,
    /// The client paused within its body for longer than `body_idle`.
    ClientBodyTimeout,
    /// No upstream server could be tried.
    NoUpstream,
    /// An upstream server failed: connect, send, or its response head.
    UpstreamFailed,
    /// An upstream server sent no response head in time.
    UpstreamTimeout,
    /// A backend answered 101 to a request that did not ask to switch.
    UnexpectedUpgrade,
    /// The session store failed under `fail_closed`.
    StoreUnavailable,
}

/// Why a request could not be proxied.
#[derive(Debug)]
pub struct ProxyError {
    kind: Kind,
    /// The upstream server involved, as configured.
    server: Option<String>,
    source: Option<BoxError>,
}

impl ProxyError {
    /// An error of `kind` with no further detail.
    pub fn new(kind: Kind) -> ProxyError {
        ProxyError {
            kind,
            server: None,
            source: None,
        }
    }

    /// A request that breaks HTTP's rules; `why` goes to the log.
    pub fn bad_request(why: &'static str) -> ProxyError {
        ProxyError::new(Kind::BadRequest).because(why)
    }

    /// A failed exchange with `server`. Whose fault it was is read from the
    /// error itself: a client body's own error (see [`ClientBodyError`])
    /// anywhere in its chain makes it the client's, never the server's.
    pub fn exchange(server: &impl fmt::Display, error: impl Into<BoxError>) -> ProxyError {
        let error = error.into();
        let kind = match client_body_error(&*error) {
            Some(ClientBodyError::Stalled(_)) => Kind::ClientBodyTimeout,
            Some(ClientBodyError::Broken(_)) => Kind::ClientBody,
            None => Kind::UpstreamFailed,
        };
        ProxyError {
            kind,
            server: Some(server.to_string()),
            source: Some(error),
        }
    }

    /// No response head from `server` within its deadline.
    pub fn upstream_timeout(server: &impl fmt::Display, elapsed: Elapsed) -> ProxyError {
        ProxyError {
            kind: Kind::UpstreamTimeout,
            server: Some(server.to_string()),
            source: Some(Box::new(elapsed)),
        }
    }

    fn because(mut self, why: impl Into<BoxError>) -> ProxyError {
        self.source = Some(why.into());
        self
    }

    /// The upstream server involved, as configured, if any.
    pub fn server(&self) -> Option<&str> {
        self.server.as_deref()
    }

    /// What went wrong.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Which side it came from.
    pub fn origin(&self) -> Origin {
        match self.kind {
            Kind::BadRequest | Kind::ClientBody | Kind::ClientBodyTimeout => Origin::Client,
            Kind::NoUpstream
            | Kind::UpstreamFailed
            | Kind::UpstreamTimeout
            | Kind::UnexpectedUpgrade => Origin::Upstream,
            Kind::StoreUnavailable => Origin::Store,
        }
    }

    /// True when the failure is the server's own, so that it counts towards
    /// taking the server out of rotation (and a retry elsewhere may help).
    pub fn counts_against_upstream(&self) -> bool {
        self.origin() == Origin::Upstream
    }

    /// The status a client gets for this error.
    pub fn status(&self) -> StatusCode {
        match self.kind {
            Kind::BadRequest | Kind::ClientBody => StatusCode::BAD_REQUEST,
            Kind::ClientBodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Kind::NoUpstream | Kind::UpstreamFailed | Kind::UnexpectedUpgrade => {
                StatusCode::BAD_GATEWAY
            }
            Kind::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Kind::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The response a client gets: a short fixed text per status, with
    /// `Retry-After` when the store is down; a client error also closes the
    /// connection, whose framing can no longer be trusted.
    pub fn to_response(&self, retry_after: &HeaderValue) -> Response<ProxyBody> {
        let status = self.status();
        let body = match status {
            StatusCode::BAD_REQUEST => "400 Bad Request\n",
            StatusCode::REQUEST_TIMEOUT => "408 Request Timeout\n",
            StatusCode::GATEWAY_TIMEOUT => "504 Gateway Timeout\n",
            StatusCode::SERVICE_UNAVAILABLE => {
                "503 Service Unavailable: sessions are unavailable, retry shortly\n"
            }
            _ => "502 Bad Gateway\n",
        };
        let mut response = Response::new(own_body(body));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        match self.origin() {
            Origin::Store => {
                headers.insert(RETRY_AFTER, retry_after.clone());
            }
            Origin::Client => {
                headers.insert(CONNECTION, HeaderValue::from_static("close"));
            }
            Origin::Upstream | Origin::Internal => {}
        }
        response
    }
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            Kind::BadRequest => "bad request",
            Kind::ClientBody => "the client's body was malformed or cut short",
            Kind::ClientBodyTimeout => "the client stalled within its body",
            Kind::NoUpstream => "no upstream server is available",
            Kind::UpstreamFailed => "upstream failed",
            Kind::UpstreamTimeout => "upstream timed out",
            Kind::UnexpectedUpgrade => "upstream switched protocols without being asked",
            Kind::StoreUnavailable => "session store unavailable",
        };
        f.write_str(what)?;
        if let Some(server) = &self.server {
            write!(f, " ({server})")?;
        }
        if let Some(source) = &self.source {
            // The whole chain, each cause once: hyper's errors name only
            // their own layer, while some others repeat their source's text.
            let mut cause: Option<&(dyn StdError + 'static)> = Some(&**source);
            let mut last = String::new();
            while let Some(error) = cause {
                let text = error.to_string();
                if !last.contains(&text) {
                    write!(f, ": {text}")?;
                }
                last = text;
                cause = error.source();
            }
        }
        Ok(())
    }
}

impl StdError for ProxyError {}

impl From<StoreError> for ProxyError {
    fn from(error: StoreError) -> ProxyError {
        ProxyError::new(Kind::StoreUnavailable).because(error)
    }
}

/// A client's request body failed: it is the client's fault, whatever the
/// layer that noticed (hyper's upstream client reports it as its own "user
/// body" error, with this as the cause).
#[derive(Debug, thiserror::Error)]
pub enum ClientBodyError {
    /// Malformed (bad chunk framing), or ended before it was whole.
    #[error("client body: {0}")]
    Broken(hyper::Error),
    /// No progress for `body_idle`.
    #[error("client body: {0}")]
    Stalled(Elapsed),
}

/// The [`ClientBodyError`] in an error's chain, if any.
fn client_body_error<'a>(error: &'a (dyn StdError + 'static)) -> Option<&'a ClientBodyError> {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if let Some(found) = error.downcast_ref::<ClientBodyError>() {
            return Some(found);
        }
        cause = error.source();
    }
    None
}

/// Why sessiongate could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The listening address could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The store could not be set up (a bad URL, not an outage).
    #[error("cannot set up the session store")]
    Store(#[from] StoreError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_body_error_deep_in_the_chain_is_the_clients_fault() {
        #[derive(Debug, thiserror::Error)]
        #[error("error from user's Body stream")]
        struct Wrapper(#[source] ClientBodyError);
        let stalled = ClientBodyError::Stalled(Elapsed {
            what: "a pause in the body",
            limit: std::time::Duration::from_secs(1),
        });
        let error = ProxyError::exchange(&"http://a:1", Wrapper(stalled));
        assert_eq!(error.origin(), Origin::Client);
        assert!(!error.counts_against_upstream());
        assert_eq!(error.status(), StatusCode::REQUEST_TIMEOUT);
        assert!(error.to_string().contains("a pause in the body"), "{error}");
    }

    #[test]
    fn the_log_text_names_each_cause_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("redis: {0}")]
        struct Repeats(#[source] std::io::Error);
        let error = ProxyError::exchange(&"http://a:1", Repeats(std::io::Error::other("refused")));
        assert_eq!(
            error.to_string(),
            "upstream failed (http://a:1): redis: refused"
        );
    }

    #[test]
    fn any_other_exchange_failure_counts_against_the_server() {
        let error = ProxyError::exchange(&"http://a:1", std::io::Error::other("reset"));
        assert_eq!(error.origin(), Origin::Upstream);
        assert!(error.counts_against_upstream());
        assert_eq!(error.status(), StatusCode::BAD_GATEWAY);
    }

    #[test]
    fn each_origin_maps_to_its_status_and_headers() {
        let retry = HeaderValue::from_static("5");
        let store = ProxyError::from(StoreError::Protocol("x".into()));
        let response = store.to_response(&retry);
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()[RETRY_AFTER], "5");
        let bad = ProxyError::bad_request("two Host headers").to_response(&retry);
        assert_eq!(bad.status(), 400);
        assert_eq!(bad.headers()[CONNECTION], "close");
        assert!(!bad.headers().contains_key(RETRY_AFTER));
        let timeout = ProxyError::upstream_timeout(
            &"http://a:1",
            Elapsed {
                what: "the upstream response head",
                limit: std::time::Duration::from_secs(1),
            },
        );
        assert_eq!(timeout.to_response(&retry).status(), 504);
        assert_eq!(ProxyError::new(Kind::NoUpstream).status(), 502);
    }
}

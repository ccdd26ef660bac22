//! The request pipeline. A request runs through named phases:
//!
//! 1. [`Gateway::request_filter`]: strip client headers with the session
//!    prefix; take the session cookie out and verify it (no store call).
//! 2. load: [`Sessions::resolve`], one store round trip for a verified sid.
//! 3. [`Gateway::upstream_request`]: hop-by-hop fields out, `X-Forwarded-*`
//!    and the session headers in.
//! 4. forward: [`Upstreams::forward`], round-robin over the servers in
//!    rotation, retried on the next server when that is safe.
//! 5. [`Gateway::response_filter`]: read the backend's updates and action,
//!    strip every prefixed and hop-by-hop header.
//! 6. commit: [`Sessions::commit`] stores the change before the response
//!    goes on, then [`Gateway::finish`] sets or expires the cookie. A 101
//!    answer to an `Upgrade` request opens a tunnel ([`upgrade`]).

pub mod body;
pub mod headers;
pub mod pool;
pub mod upgrade;
pub mod upstream;

use std::sync::Arc;
use std::time::Duration;

use http::header::{HOST, SET_COOKIE};
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use tracing::{debug, warn};

use self::body::{ProxyBody, upstream_body};
use self::headers::{Client, SessionHeaders};
use self::upgrade::Tunnels;
use self::upstream::{Outbound, Upstreams};
use crate::config::Config;
use crate::error::ProxyError;
use crate::session::codec::UpdateError;
use crate::session::cookie::{CookieCodec, Sid};
use crate::session::store::{SessionPolicy, Store, StoreError};
use crate::session::{CookieChange, Instructions, Resolved, Sessions};
use crate::timeouts::Timeouts;

/// Everything a request needs, built once from the configuration.
pub struct Gateway {
    sessions: Sessions,
    names: SessionHeaders,
    upstreams: Arc<Upstreams>,
    tunnels: Tunnels,
    retry_after: HeaderValue,
    body_idle: Duration,
}

impl Gateway {
    /// Builds the pipeline: cookie codec, store, header names, upstream pool.
    pub fn new(config: &Config) -> Result<Gateway, StoreError> {
        let timeouts = Timeouts::new(config);
        let policy = SessionPolicy {
            idle: config.session.idle_timeout,
            absolute: config.session.absolute_timeout,
            max_bytes: config.session.max_bytes,
        };
        let store = Store::open(&config.store, policy, timeouts.store)?;
        let sessions = Sessions::new(
            CookieCodec::new(&config.cookie),
            store,
            policy,
            config.store.on_error,
        );
        Ok(Gateway {
            sessions,
            names: SessionHeaders::new(&config.session.header_prefix),
            upstreams: Arc::new(Upstreams::new(&config.upstreams, &timeouts)),
            tunnels: Tunnels::default(),
            retry_after: HeaderValue::from(config.store.retry_after.as_secs().max(1)),
            body_idle: timeouts.body_idle,
        })
    }

    /// The upstream pool (to run its health checks).
    pub fn upstreams(&self) -> &Arc<Upstreams> {
        &self.upstreams
    }

    /// The open tunnels (to close them at shutdown).
    pub fn tunnels(&self) -> &Tunnels {
        &self.tunnels
    }

    /// The session machinery (to check the store at start).
    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    /// Proxies one request; every failure becomes a short error response.
    pub async fn handle(&self, request: Request<Incoming>, client: &Client) -> Response<ProxyBody> {
        match self.proxy(request, client).await {
            Ok(response) => response,
            Err(error) => {
                warn!(origin = error.origin(), %error, "request failed");
                error.to_response(&self.retry_after)
            }
        }
    }

    async fn proxy(
        &self,
        mut request: Request<Incoming>,
        client: &Client,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        // A protocol switch is an HTTP/1.1 affair (RFC 9110 §7.8).
        let upgrade =
            request.version() == Version::HTTP_11 && headers::wants_upgrade(request.headers());
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
        let (mut parts, body) = request.into_parts();
        let presented = self.request_filter(&mut parts.headers);
        let session = self.sessions.resolve(presented).await?;
        let host = parts.headers.get(HOST).cloned().or_else(|| {
            let authority = parts.uri.authority()?;
            HeaderValue::from_str(authority.as_str()).ok()
        });
        let upstream_request = |headers: HeaderMap| {
            self.upstream_request(headers, &session, client, host.clone(), upgrade)
        };
        // Only an idempotent request without a body may be sent a second
        // time after a failure; only then are its headers kept for that.
        let replayable = parts.method.is_idempotent() && http_body::Body::is_end_stream(&body);
        let (headers, kept) = match replayable {
            true => (upstream_request(parts.headers.clone()), Some(parts.headers)),
            false => (upstream_request(parts.headers), None),
        };
        let replay = kept
            .as_ref()
            .map(|kept| move || upstream_request(kept.clone()));
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let outbound = Outbound {
            method: parts.method,
            path,
            headers,
            body,
            replay: replay
                .as_ref()
                .map(|r| r as &(dyn Fn() -> HeaderMap + Sync)),
        };
        let mut response = self.upstreams.forward(outbound).await?;
        let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
        let tunnel = match (switching, client_upgrade) {
            (false, _) => None,
            (true, Some(client_upgrade)) => {
                Some((client_upgrade, hyper::upgrade::on(&mut response)))
            }
            (true, None) => return Err(ProxyError::UnexpectedUpgrade),
        };
        let (mut parts, body) = response.into_parts();
        let instructions = self.response_filter(&mut parts.headers, switching);
        let cookie = self.sessions.commit(&session, instructions).await?;
        self.finish(&mut parts.headers, cookie);
        if let Some((client_side, upstream_side)) = tunnel {
            self.tunnels.open(client_side, upstream_side);
        }
        debug!(status = %parts.status, session = ?session.status, "proxied");
        Ok(Response::from_parts(
            parts,
            upstream_body(body, self.body_idle),
        ))
    }

    /// Phase 1: no client header with the session prefix survives, and the
    /// session cookie leaves the `Cookie` header. Returns the verified sid.
    pub fn request_filter(&self, headers: &mut HeaderMap) -> Option<Sid> {
        self.names.strip(headers);
        self.sessions.cookie.take_from(headers).sid()
    }

    /// Phase 3: the headers the backend receives.
    pub fn upstream_request(
        &self,
        mut headers: HeaderMap,
        session: &Resolved,
        client: &Client,
        host: Option<HeaderValue>,
        upgrade: bool,
    ) -> HeaderMap {
        headers::remove_hop_by_hop(&mut headers, upgrade);
        headers::set_forwarded(&mut headers, client, host.clone());
        if let (false, Some(host)) = (headers.contains_key(HOST), host) {
            // An HTTP/2 client names the host in :authority; HTTP/1.1 needs Host.
            headers.insert(HOST, host);
        }
        let names = &self.names;
        let sid = HeaderValue::from_str(session.sid.as_str()).expect("a sid is base64url");
        headers.insert(names.id.clone(), sid);
        headers.insert(names.status.clone(), session.status.header_value());
        let json = HeaderValue::from_maybe_shared(session.json.clone())
            .expect("stores yield printable ASCII");
        headers.insert(names.session.clone(), json);
        headers
    }

    /// Phase 5: what the backend asks of the session; then no header with
    /// the prefix, and no hop-by-hop field, goes on to the client (but the
    /// `Upgrade` of a 101 answer).
    pub fn response_filter(
        &self,
        headers: &mut HeaderMap,
        switching: bool,
    ) -> Result<Instructions, UpdateError> {
        let names = &self.names;
        let instructions = Instructions::parse(
            headers
                .get_all(&names.update)
                .iter()
                .map(HeaderValue::as_bytes),
            headers
                .get_all(&names.action)
                .iter()
                .map(HeaderValue::as_bytes),
        );
        names.strip(headers);
        headers::remove_hop_by_hop(headers, switching);
        instructions
    }

    /// Phase 6, last step: the cookie the client gets.
    pub fn finish(&self, headers: &mut HeaderMap, cookie: CookieChange) {
        let codec = &self.sessions.cookie;
        match cookie {
            CookieChange::Keep => {}
            CookieChange::Set(sid) => {
                headers.append(SET_COOKIE, codec.set_cookie(&sid));
            }
            CookieChange::Expire => {
                headers.append(SET_COOKIE, codec.expire_cookie());
            }
        }
    }
}

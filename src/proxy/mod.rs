//! The request pipeline. A request runs through named phases, each a
//! function over its [`RequestContext`] that can be tested without sockets:
//!
//! 1. [`RequestContext::admit`]: the `Host` (RFC 9112 §3.2), the path, an
//!    `Upgrade`; a request that breaks the rules ends here with a 400.
//! 2. [`Gateway::request_filter`]: strip client headers with the session
//!    prefix; take the session cookie out and verify it (no store call).
//! 3. load: [`Sessions::resolve`], one store round trip for a verified sid.
//! 4. [`Gateway::upstream_request`]: hop-by-hop fields out, `Host`,
//!    `X-Forwarded-*` and the session headers in.
//! 5. forward: [`Upstreams::forward`], round-robin over the servers in
//!    rotation, retried on the next server when that is safe.
//! 6. [`Gateway::response_filter`]: read the backend's updates and action,
//!    strip every prefixed and hop-by-hop header.
//! 7. commit: [`Sessions::commit`] stores the change before the response
//!    goes on, then [`Gateway::finish`] sets or expires the cookie. A 101
//!    answer to an `Upgrade` request opens a tunnel ([`upgrade`]).
//!
//! Every failure is a [`ProxyError`], which becomes a response in one place.

pub mod body;
pub mod context;
pub mod expose;
pub mod headers;
pub mod pool;
pub mod routes;
pub mod upgrade;
pub mod upstream;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{HOST, SET_COOKIE, USER_AGENT};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use self::body::RequestBody;
pub use self::context::RequestContext;
use self::expose::Expose;
use self::headers::{Client, SessionHeaders};
use self::pool::PooledBody;
use self::routes::Routes;
use self::upgrade::Tunnels;
use self::upstream::{Outbound, ReplayCopy, Upstreams};
use crate::access_log::{AccessLog, Entry, Logged, sid_hash};
use crate::error::{Kind, Origin, ProxyError};
use crate::metrics::{DEFAULT_POOL, Metrics, PoolMetrics, Protocol};
use crate::session::codec::UpdateError;
use crate::session::cookie::{CookieCodec, Presented};
use crate::session::store::{Store, StoreError};
use crate::session::{CookieChange, Instructions, Sessions, Status};
use crate::settings::Settings;
use crate::timeouts::IdleBody;

/// A response body: the upstream's, streamed under the idle deadline, or one
/// sessiongate wrote.
pub type ProxyBody = Either<IdleBody<PooledBody>, Full<Bytes>>;

/// A response body as the connection sends it: logged when it ends.
pub type LoggedBody = Logged<ProxyBody>;

/// A short body of sessiongate's own.
pub fn own_body(text: &'static str) -> ProxyBody {
    Either::Right(Full::new(Bytes::from_static(text.as_bytes())))
}

/// Everything a request needs, built once from the settings; a reload
/// builds a new one and swaps it whole.
pub struct Gateway {
    sessions: Sessions,
    names: SessionHeaders,
    /// `[session.expose]`.
    expose: Expose,
    /// The pools, the default one (`[upstreams]`) first.
    pools: Vec<Arc<Upstreams>>,
    routes: Routes,
    tunnels: Tunnels,
    retry_after: HeaderValue,
    body_idle: Duration,
    metrics: Arc<Metrics>,
    /// Per pool, in the order of `pools`: the requests it served.
    pool_metrics: Vec<PoolMetrics>,
    access_log: Option<AccessLog>,
    /// Stops this gateway's upkeep (idle sweeps, health checks) once a
    /// reload has replaced it.
    upkeep: CancellationToken,
}

/// Why a gateway could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The store could not be set up.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A pool's https client could not be made (its CA file).
    #[error("{0}")]
    Tls(String),
}

impl Gateway {
    /// Builds the pipeline: cookie codec, store, header names, pools, routes.
    pub fn new(settings: &Settings) -> Result<Gateway, StoreError> {
        Gateway::build(settings, None).map_err(|error| match error {
            BuildError::Store(error) => error,
            BuildError::Tls(message) => StoreError::Protocol(message),
        })
    }

    /// Builds the pipeline for `settings`; after a reload, `previous` is
    /// the gateway in force: its store (sessions, and the Redis connection)
    /// and its open tunnels are kept, and so is the connection pool of
    /// every upstream server whose URL did not change.
    pub fn build(settings: &Settings, previous: Option<&Gateway>) -> Result<Gateway, BuildError> {
        let config = &settings.config;
        // The counters outlive a reload: they count the process.
        let metrics = previous.map_or_else(
            || Arc::new(Metrics::new(config.admin.is_some())),
            |p| p.metrics.clone(),
        );
        let cookie = CookieCodec::new(&config.cookie);
        let sessions = match previous {
            Some(previous) => previous
                .sessions
                .with_cookie(cookie, config.cookie.persistent),
            None => Sessions::new(
                cookie,
                Store::open(&config.store, settings.policy, settings.timeouts.store)?,
                settings.policy,
                config.store.on_error,
            )
            .persistent(config.cookie.persistent)
            .with_metrics(metrics.clone()),
        }
        .max_per_user(config.session.max_per_user);
        let keep = previous.map_or(&[][..], |p| &p.pools[..]);
        let counted = |name: &str, pool: &crate::config::UpstreamsConfig, upstreams: Upstreams| {
            let servers: Vec<String> = pool.servers.iter().map(|s| s.url.to_string()).collect();
            Arc::new(upstreams.with_metrics(metrics.upstreams(name, &servers)))
        };
        let mut pools = vec![counted(
            DEFAULT_POOL,
            &config.upstreams,
            Upstreams::build(
                DEFAULT_POOL,
                &config.upstreams,
                None,
                &settings.timeouts,
                keep,
            )
            .map_err(BuildError::Tls)?,
        )];
        for (name, pool) in &config.upstreams.pools {
            let inherited = config.upstreams.tls.as_ref();
            let upstreams = Upstreams::build(name, pool, inherited, &settings.timeouts, keep)
                .map_err(BuildError::Tls)?;
            pools.push(counted(name, pool, upstreams));
        }
        let names: Vec<Arc<str>> = pools.iter().map(|p| p.name().clone()).collect();
        Ok(Gateway {
            sessions,
            names: SessionHeaders::new(&config.session.header_prefix),
            expose: Expose::new(&config.session.expose),
            routes: Routes::new(&config.routes, &names),
            pool_metrics: names.iter().map(|name| metrics.pool(name)).collect(),
            access_log: AccessLog::start(&config.log, metrics.clone()),
            metrics,
            pools,
            tunnels: previous.map_or_else(Tunnels::default, |p| p.tunnels.clone()),
            retry_after: HeaderValue::from(config.store.retry_after.as_secs().max(1)),
            body_idle: settings.timeouts.body_idle,
            upkeep: CancellationToken::new(),
        })
    }

    /// The metrics (to serve them, and for the connections to count themselves).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The default pool.
    pub fn upstreams(&self) -> &Arc<Upstreams> {
        &self.pools[0]
    }

    /// Every pool, the default one first.
    pub fn pools(&self) -> &[Arc<Upstreams>] {
        &self.pools
    }

    /// Runs every pool's upkeep (idle sweeps, health checks) until `stop`
    /// or until this gateway is [`retired`](Self::retire).
    pub fn spawn_upkeep(&self, stop: &CancellationToken) -> Vec<tokio::task::JoinHandle<()>> {
        let (upkeep, stop) = (self.upkeep.clone(), stop.clone());
        tokio::spawn(async move {
            tokio::select! {
                () = stop.cancelled() => upkeep.cancel(),
                () = upkeep.cancelled() => {}
            }
        });
        self.pools
            .iter()
            .map(|pool| tokio::spawn(pool.clone().check_health(self.upkeep.clone())))
            .collect()
    }

    /// Stops this gateway's upkeep: a reload has replaced it (its requests
    /// in flight still finish).
    pub fn retire(&self) {
        self.upkeep.cancel();
    }

    /// The routing table.
    pub fn routes(&self) -> &Routes {
        &self.routes
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
    /// Counted in the metrics once its response head is ready; logged once
    /// its body has been sent. (Not an `async fn`: that would keep the
    /// request twice, as passed and as used, in a future that hyper moves
    /// whole; so is [`Gateway::proxy`].)
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn keeps its arguments twice"
    )]
    pub fn handle<'a>(
        &'a self,
        request: Request<Incoming>,
        client: &'a Arc<Client>,
    ) -> impl Future<Output = Response<LoggedBody>> + Send + 'a {
        async move {
            // The clock is read only for what needs it: metrics, the access log.
            let timed = self.metrics.enabled() || self.access_log.is_some();
            let started = timed.then(Instant::now);
            let entry = self.access_log.as_ref().map(|_| Entry {
                ts: SystemTime::now(),
                client: client.addr.ip(),
                method: request.method().clone(),
                host: None,
                path: request.uri().path_and_query().cloned(),
                proto: request.version(),
                status: 0,
                bytes: 0,
                duration: Duration::ZERO,
                pool: self.pools[0].name().clone(),
                upstream: None,
                session: "none",
                sid_hash: None,
                user: None,
                ua: request.headers().get(USER_AGENT).cloned(),
            });
            let mut context = None;
            let mut failed_server = None;
            let mut store_failed = false;
            let response = match self.proxy(request, client, &mut context).await {
                Ok(response) => response,
                Err(error) => {
                    warn!(origin = %error.origin(), client = %client.addr, %error, "request failed");
                    failed_server = error.server().map(str::to_string);
                    store_failed = error.origin() == Origin::Store;
                    error.to_response(&self.retry_after)
                }
            };
            let pool = context.as_ref().map_or(0, |c| c.route.pool);
            if let (true, Some(started)) = (self.metrics.enabled(), started) {
                self.pool_metrics[pool].request(response.status().as_u16(), started.elapsed());
            }
            let (Some(log), Some(mut entry), Some(started)) = (&self.access_log, entry, started)
            else {
                return response.map(Logged::plain);
            };
            entry.status = response.status().as_u16();
            entry.upstream = failed_server;
            if store_failed {
                entry.session = "unavailable";
            }
            if let Some(context) = context {
                entry.pool = context.route.pool_name.clone();
                entry.host = context.host;
                if let Some(served_by) = context.upstream {
                    entry.upstream = Some(served_by.to_string());
                }
                if let Some(session) = &context.session {
                    entry.session = match session.status {
                        Status::New => "new",
                        Status::Active => "active",
                        Status::Unavailable => "unavailable",
                    };
                    if session.status != Status::New {
                        entry.sid_hash = Some(sid_hash(session.sid.as_str()));
                    }
                    entry.user.clone_from(&session.user);
                }
            }
            response.map(|body| Logged::new(body, log.clone(), entry, started))
        }
    }

    fn proxy<'a>(
        &'a self,
        request: Request<Incoming>,
        client: &'a Arc<Client>,
        slot: &'a mut Option<RequestContext>,
    ) -> impl Future<Output = Result<Response<ProxyBody>, ProxyError>> + Send + 'a {
        let (mut parts, body) = request.into_parts();
        async move {
            let context = slot.insert(RequestContext::admit(&parts, client.clone(), &self.routes)?);
            // What hyper::upgrade::on takes from a request, taken from its parts.
            let client_upgrade = match context.upgrade {
                true => parts.extensions.remove::<OnUpgrade>(),
                false => None,
            };
            self.request_filter(&mut parts.headers, context);
            if context.route.sessions {
                context.session = Some(self.sessions.resolve(context.presented.take()).await?);
            }
            self.upstream_request(&mut parts.headers, context);
            // Only an idempotent request without a body may be sent a second
            // time after a failure, and only to another server; only then is a
            // copy of its headers kept.
            let pool = &self.pools[context.route.pool];
            let replay = (pool.can_retry()
                && parts.method.is_idempotent()
                && http_body::Body::is_end_stream(&body))
            .then(|| ReplayCopy::of(&parts.headers));
            let outbound = Outbound {
                method: parts.method,
                path: context.path.clone(),
                headers: parts.headers,
                body: RequestBody::new(body, self.body_idle),
                replay: replay.as_ref(),
            };
            let (mut response, served_by) = pool.forward(outbound).await?;
            context.upstream = Some(served_by);
            let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
            let tunnel = match (switching, client_upgrade) {
                (false, _) => None,
                (true, Some(client_side)) => Some((client_side, hyper::upgrade::on(&mut response))),
                (true, None) => return Err(ProxyError::new(Kind::UnexpectedUpgrade)),
            };
            let (mut parts, body) = response.into_parts();
            let instructions = self.response_filter(&mut parts.headers, switching);
            if let Some(session) = &context.session {
                let cookie = self.sessions.commit(session, instructions).await?;
                self.finish(&mut parts.headers, cookie);
            }
            if let Some((client_side, upstream_side)) = tunnel {
                let counted = self.metrics.open(Protocol::Tunnel);
                self.tunnels.open(client_side, upstream_side, counted);
            }
            debug!(status = %parts.status, session = ?context.session.as_ref().map(|s| s.status), pool = context.pool_name(), "proxied");
            Ok(Response::from_parts(
                parts,
                Either::Left(IdleBody::new(body, self.body_idle)),
            ))
        }
    }

    /// Phase 2: no client header with the session prefix survives, and the
    /// session cookie leaves the `Cookie` header; its sid, if verified,
    /// goes into the context.
    /// On a route without sessions the cookie is removed unread.
    pub fn request_filter(&self, headers: &mut HeaderMap, context: &mut RequestContext) {
        self.names.strip(headers);
        self.expose.strip(headers);
        if context.route.sessions {
            let presented = self.sessions.cookie.take_from(headers);
            if let Presented::Rejected(why) = presented {
                self.metrics.cookie_rejected(why);
            }
            context.presented = presented.sid();
        } else {
            self.sessions.cookie.remove_from(headers);
        }
    }

    /// Phase 4: the headers the backend receives. The session's JSON text
    /// moves from the context into `X-Session`.
    pub fn upstream_request(&self, headers: &mut HeaderMap, context: &mut RequestContext) {
        headers::remove_hop_by_hop(headers, context.upgrade);
        // Room for what is added here, at most: Host and X-Forwarded-*
        // (4), the session's id, status, JSON and user (4), so that the
        // map grows once, if at all.
        headers.reserve(4 + context.session.as_ref().map_or(0, |_| 4));
        headers::set_forwarded(headers, &context.client, context.host.clone());
        match &context.host {
            Some(host) => headers.insert(HOST, host.clone()),
            // HTTP/1.0 without Host: the forward phase names each server.
            None => headers.remove(HOST),
        };
        // A route without sessions sends no session header at all.
        let Some(session) = &mut context.session else {
            return;
        };
        let names = &self.names;
        headers.insert(names.id.clone(), session.sid.header_value());
        headers.insert(names.status.clone(), session.status.header_value());
        if let Some(user) = &session.user {
            let user = HeaderValue::from_str(user).expect("a user id is visible ASCII");
            headers.insert(names.user.clone(), user);
        }
        self.expose.add(headers, &session.json);
        // The JSON moves into its header: a clone of a buffer no one shares
        // yet would allocate.
        let json = HeaderValue::from_maybe_shared(std::mem::take(&mut session.json))
            .expect("stores yield printable ASCII");
        headers.insert(names.session.clone(), json);
    }

    /// Phase 6: what the backend asks of the session; then no header with
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
        )
        .and_then(|instructions| {
            instructions.bind(
                headers
                    .get_all(&names.user)
                    .iter()
                    .map(HeaderValue::as_bytes),
            )
        });
        names.strip(headers);
        headers::remove_hop_by_hop(headers, switching);
        instructions
    }

    /// Phase 7, last step: the cookie the client gets.
    pub fn finish(&self, headers: &mut HeaderMap, cookie: CookieChange) {
        let codec = &self.sessions.cookie;
        match cookie {
            CookieChange::Keep => {}
            CookieChange::Set(sid) => {
                headers.append(SET_COOKIE, codec.set_cookie(&sid));
            }
            CookieChange::Persist { sid, expires_ms } => {
                let left = expires_ms.saturating_sub(crate::session::store::epoch_ms()) / 1000;
                let value = match left {
                    0 => codec.expire_cookie(),
                    secs => codec.persistent_cookie(&sid, secs),
                };
                headers.append(SET_COOKIE, value);
            }
            CookieChange::Expire => {
                headers.append(SET_COOKIE, codec.expire_cookie());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use http::request::Parts;
    use http::{Method, Version};

    use super::*;
    use crate::config::Config;
    use crate::session::{Resolved, Status};

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn gateway() -> Gateway {
        let text = format!(
            "[upstreams]\nservers = [\"http://127.0.0.1:9\"]\n[cookie]\nsecrets = [\"{SECRET}\"]\n\
             [store]\nkind = \"memory\"\n"
        );
        let config = Config::parse(&text, Path::new("test.toml")).unwrap();
        Gateway::new(&Settings::new(config)).unwrap()
    }

    /// The size of the futures `make` returns, without making one.
    fn future_size<A, F: Future>(_make: impl Fn(A) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    #[test]
    fn a_request_future_is_small_whatever_the_store() {
        // hyper moves the future of every request whole into its slot: at
        // 53 KB (Redis client futures inside it, each wrapper doubling what
        // it wraps) that copy was 9% of the gate's CPU.
        let gateway: &'static Gateway = Box::leak(Box::new(gateway()));
        let client: &'static Arc<Client> = Box::leak(Box::new(Arc::new(Client::new(
            "127.0.0.1:5000".parse().unwrap(),
            false,
        ))));
        let size = future_size(|request: Request<Incoming>| gateway.handle(request, client));
        eprintln!("Gateway::handle's future: {size} bytes");
        assert!(
            size <= 16 * 1024,
            "Gateway::handle's future is {size} bytes"
        );
    }

    fn request(headers: &[(&str, &str)]) -> Parts {
        let mut builder = Request::builder()
            .method(Method::GET)
            .uri("/cart")
            .version(Version::HTTP_11);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    fn context(parts: &Parts) -> RequestContext {
        let client = Arc::new(Client::new("192.0.2.7:5000".parse().unwrap(), false));
        RequestContext::admit(parts, client, &Routes::default()).unwrap()
    }

    #[test]
    fn request_filter_strips_prefixed_headers_and_takes_out_a_verified_cookie() {
        let gateway = gateway();
        let sid = crate::session::cookie::Sid::generate();
        let cookie = gateway.sessions.cookie.set_cookie(&sid);
        let pair = cookie
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_string();
        let mut parts = request(&[
            ("host", "shop.example"),
            ("x-session-id", "forged"),
            ("X-Session", "{\"admin\":true}"),
            ("cookie", &format!("theme=dark; {pair}")),
        ]);
        let mut context = context(&parts);
        gateway.request_filter(&mut parts.headers, &mut context);
        assert_eq!(context.presented.as_ref(), Some(&sid));
        assert!(!parts.headers.contains_key("x-session-id"));
        assert!(!parts.headers.contains_key("x-session"));
        assert_eq!(parts.headers["cookie"], "theme=dark");
    }

    #[test]
    fn a_forged_cookie_presents_no_sid() {
        let gateway = gateway();
        let mut parts = request(&[("host", "a"), ("cookie", "sg_session=abc.def")]);
        let mut context = context(&parts);
        gateway.request_filter(&mut parts.headers, &mut context);
        assert_eq!(context.presented, None);
    }

    #[test]
    fn upstream_request_sets_the_decided_host_forwarded_and_session_headers() {
        let gateway = gateway();
        let mut parts = request(&[
            ("host", "shop.example"),
            ("connection", "keep-alive, x-hop"),
            ("x-hop", "1"),
        ]);
        let mut context = context(&parts);
        let sid = crate::session::cookie::Sid::generate();
        context.session = Some(Resolved {
            sid: sid.clone(),
            status: Status::Active,
            json: Bytes::from_static(b"{\"user\":\"ada\"}"),
            created_ms: None,
            user: None,
            persist: false,
        });
        gateway.upstream_request(&mut parts.headers, &mut context);
        let h = &parts.headers;
        assert_eq!(h["host"], "shop.example");
        assert_eq!(h["x-forwarded-host"], "shop.example");
        assert_eq!(h["x-forwarded-for"], "192.0.2.7");
        assert_eq!(h["x-session-id"], sid.as_str());
        assert_eq!(h["x-session-status"], "active");
        assert_eq!(h["x-session"], "{\"user\":\"ada\"}");
        assert!(!h.contains_key("connection") && !h.contains_key("x-hop"));
    }

    #[test]
    fn response_filter_reads_updates_and_action_and_strips_them() {
        let gateway = gateway();
        let mut headers = HeaderMap::new();
        headers.append("x-session-update", HeaderValue::from_static("{\"a\":1}"));
        headers.append("x-session-update", HeaderValue::from_static("{\"b\":2}"));
        headers.append("x-session-action", HeaderValue::from_static("rotate"));
        headers.append("x-session-anything", HeaderValue::from_static("x"));
        headers.append("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.append("content-type", HeaderValue::from_static("text/html"));
        let instructions = gateway.response_filter(&mut headers, false).unwrap();
        assert_eq!(instructions.action, Some(crate::session::Action::Rotate));
        assert_eq!(instructions.changes.iter().count(), 2);
        assert_eq!(headers.keys().collect::<Vec<_>>(), ["content-type"]);
    }

    #[test]
    fn a_rebuilt_gateway_keeps_the_pools_of_unchanged_servers_and_its_store() {
        let config = |servers: &str| {
            let text = format!(
                "[upstreams]\nservers = [{servers}]\n[upstreams.pools.assets]\nservers = [\"http://127.0.0.1:7\"]\n\
                 [cookie]\nsecrets = [\"{SECRET}\"]\n[store]\nkind = \"memory\"\n"
            );
            Settings::new(Config::parse(&text, Path::new("test.toml")).unwrap())
        };
        let old = Gateway::new(&config("\"http://127.0.0.1:9\", \"http://127.0.0.1:8\"")).unwrap();
        let new = Gateway::build(
            &config("\"http://127.0.0.1:9\", \"http://127.0.0.1:6\""),
            Some(&old),
        )
        .unwrap();
        let url = |u: &str| u.parse::<crate::config::UpstreamUrl>().unwrap();
        let kept = |u: &str, pool: usize| {
            let before = old.pools()[pool].pool_of(&url(u)).unwrap();
            let after = new.pools()[pool].pool_of(&url(u)).unwrap();
            Arc::ptr_eq(before, after)
        };
        assert!(kept("http://127.0.0.1:9", 0));
        assert!(kept("http://127.0.0.1:7", 1));
        assert!(new.pools()[0].pool_of(&url("http://127.0.0.1:8")).is_none());
        assert!(std::ptr::eq(old.sessions().store(), new.sessions().store()));
        assert_eq!(&**new.pools()[1].name(), "assets");
    }

    #[test]
    fn finish_sets_or_expires_the_cookie_or_leaves_it() {
        let gateway = gateway();
        let sid = crate::session::cookie::Sid::generate();
        for (change, expected) in [
            (CookieChange::Keep, None),
            (
                CookieChange::Set(sid.clone()),
                Some(sid.as_str().to_string()),
            ),
            (CookieChange::Expire, Some("Max-Age=0".to_string())),
        ] {
            let mut headers = HeaderMap::new();
            gateway.finish(&mut headers, change);
            let set = headers
                .get(SET_COOKIE)
                .map(|v| v.to_str().unwrap().to_string());
            match expected {
                None => assert!(set.is_none()),
                Some(part) => assert!(set.unwrap().contains(&part)),
            }
        }
    }
}

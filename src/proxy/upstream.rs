//! The upstream servers (SPEC §7): weighted round-robin over the servers in
//! rotation, no stickiness; a keep-alive connection pool per server
//! ([`super::pool`]); retries on the next server; passive ejection of a
//! server that keeps failing; active health checks (`[upstreams.health]`).
//!
//! A server is out of rotation while it is ejected (`max_fails` failures in a
//! row, for `fail_timeout`) or while the health check holds it down. Only a
//! server's own failures count ([`ProxyError::counts_against_upstream`]): a
//! client that breaks off its body harms no server. When every server is
//! ejected, the one whose ejection ends first is tried (as nginx does), so
//! service comes back as soon as one answers; when the health checks hold
//! every server down, a request gets an immediate 502.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use http::header::{HOST, USER_AGENT};
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, Uri, Version};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::body::RequestBody;
use super::pool::{Pool, PooledBody, Sent};
use crate::config::tls::UpstreamTlsConfig;
use crate::config::{HealthConfig, UpstreamUrl, UpstreamsConfig};
use crate::error::{Kind, ProxyError};
use crate::metrics::{UpstreamMetrics, UpstreamOutcome};
use crate::timeouts::{Timeouts, within};

/// How often idle pooled connections are swept without health checks.
const IDLE_SWEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The upstream pool.
pub struct Upstreams {
    /// The pool's name: `default` for `[upstreams]`, else its
    /// `[upstreams.pools.NAME]` (the `pool` label of metrics).
    name: Arc<str>,
    servers: Vec<Peer>,
    /// One period of smooth weighted round-robin: indices into `servers`.
    schedule: Vec<usize>,
    next: AtomicUsize,
    max_fails: u32,
    fail_timeout: Duration,
    response_timeout: Duration,
    health: Option<HealthConfig>,
    origin: Instant,
    metrics: UpstreamMetrics,
}

/// Where a server stands, for the admin listener ([`Upstreams::rotation`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotation {
    /// Requests go to it.
    InRotation,
    /// Out for `fail_timeout` after `max_fails` failed requests.
    Ejected,
    /// Out until its health checks pass again.
    FailingHealthChecks,
}

/// One server of the pool, and what is known of its health.
struct Peer {
    url: UpstreamUrl,
    /// Its `host:port`, the `Host` of a request whose client named none.
    host: HeaderValue,
    pool: Arc<Pool>,
    /// Failed requests in a row.
    fails: AtomicU32,
    /// Ejected until this many ms on [`Upstreams::elapsed_ms`]'s clock (0: not ejected).
    ejected_until: AtomicU64,
    /// Held down by the active health check.
    checked_down: AtomicBool,
}

/// A request on its way upstream, without its URI's scheme and authority,
/// which each attempt fills in for its server.
pub struct Outbound<'a> {
    /// The method.
    pub method: Method,
    /// The path and query, as the client sent them.
    pub path: PathAndQuery,
    /// The headers, already filtered, with the `Host` decided for the
    /// request; without one when the client named none (HTTP/1.0).
    pub headers: HeaderMap,
    /// The client's body.
    pub body: RequestBody,
    /// The same headers again, for a request that may be sent a second time
    /// after its first attempt got no response head: only an idempotent
    /// request without a body, to a pool with another server to try (the
    /// caller decides, with [`Upstreams::can_retry`], and keeps the copy).
    pub replay: Option<&'a ReplayCopy>,
}

/// A copy of a request's headers, kept for a replay: each name and value
/// cloned (a reference count, or a copy of a standard name) into a spare
/// list of this thread's, in order. Nothing is hashed: a map is built only
/// for a replay, which is rare, while nearly every GET makes a copy. The
/// copy allocates nothing once a thread has spares, and its list goes back
/// to the spares when it is dropped.
pub struct ReplayCopy(Vec<(HeaderName, HeaderValue)>);

thread_local! {
    /// Cleared lists that keep their memory, for [`ReplayCopy`].
    static SPARE_LISTS: RefCell<Vec<Vec<(HeaderName, HeaderValue)>>> =
        const { RefCell::new(Vec::new()) };
}

/// Spare lists kept per thread at most: one per request in flight on the
/// thread, up to this many (a list of a dozen headers keeps under 1 KiB,
/// so at most some 64 KiB per thread); a thread with more requests in
/// flight than this allocates the copies of the rest. With 8 (measured
/// when the copies were maps), one worker serving 64 keep-alive
/// connections allocated for about every fourth GET.
const MAX_SPARE_LISTS: usize = 64;

impl ReplayCopy {
    /// Copies `headers`, in order, every value of every name.
    pub fn of(headers: &HeaderMap) -> ReplayCopy {
        let mut copy = SPARE_LISTS.with_borrow_mut(Vec::pop).unwrap_or_default();
        copy.extend(
            headers
                .iter()
                .map(|(name, value)| (name.clone(), value.clone())),
        );
        ReplayCopy(copy)
    }

    /// The copied headers, as a map of their own.
    pub fn headers(&self) -> HeaderMap {
        let mut map = HeaderMap::with_capacity(self.0.len());
        for (name, value) in &self.0 {
            map.append(name.clone(), value.clone());
        }
        map
    }
}

impl Drop for ReplayCopy {
    fn drop(&mut self) {
        let mut list = std::mem::take(&mut self.0);
        list.clear();
        SPARE_LISTS.with_borrow_mut(|spare| {
            if spare.len() < MAX_SPARE_LISTS {
                spare.push(list);
            }
        });
    }
}

impl Upstreams {
    /// Prepares the default pool and its client.
    pub fn new(config: &UpstreamsConfig, timeouts: &Timeouts) -> Upstreams {
        Upstreams::build("default", config, None, timeouts, &[])
            .expect("the CA file was read when the configuration was validated")
    }

    /// Prepares the pool `name`. Its https servers are verified against its
    /// own `[…tls] ca`, else `inherited` (the default pool's), else the
    /// system's roots. A server's connection pool in `keep` (the pools in
    /// force before a reload) that still fits is kept, with its open
    /// connections.
    pub fn build(
        name: &str,
        config: &UpstreamsConfig,
        inherited: Option<&UpstreamTlsConfig>,
        timeouts: &Timeouts,
        keep: &[Arc<Upstreams>],
    ) -> Result<Upstreams, String> {
        let weights: Vec<u32> = config.servers.iter().map(|s| s.weight).collect();
        let tls = match config.servers.iter().any(|s| s.url.https) {
            true => Some(crate::tls::upstream_client(
                config.tls.as_ref().or(inherited),
            )?),
            false => None,
        };
        let (max_idle, idle, connect) = (
            config.max_idle_connections,
            timeouts.upstream_idle,
            timeouts.upstream_connect,
        );
        let kept = |url: &UpstreamUrl| {
            keep.iter()
                .flat_map(|upstreams| &upstreams.servers)
                .find(|peer| peer.pool.serves(url, max_idle, idle, connect))
                .map(|peer| peer.pool.clone())
        };
        Ok(Upstreams {
            name: Arc::from(name),
            servers: config
                .servers
                .iter()
                .map(|s| Peer {
                    url: s.url.clone(),
                    host: HeaderValue::from_str(s.url.authority.as_str())
                        .expect("an authority is a header value"),
                    pool: kept(&s.url).unwrap_or_else(|| {
                        Arc::new(
                            Pool::new(s.url.clone(), max_idle, idle, connect)
                                .with_tls(tls.clone().filter(|_| s.url.https)),
                        )
                    }),
                    fails: AtomicU32::new(0),
                    ejected_until: AtomicU64::new(0),
                    checked_down: AtomicBool::new(false),
                })
                .collect(),
            schedule: smooth_weighted_schedule(&weights),
            next: AtomicUsize::new(0),
            max_fails: config.max_fails,
            fail_timeout: config.fail_timeout,
            response_timeout: timeouts.upstream_response,
            health: config.health.clone(),
            origin: Instant::now(),
            metrics: UpstreamMetrics::default(),
        })
    }

    /// The pool's name (`default` for `[upstreams]`).
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// True when a failed request could go on to another server: the pool
    /// has more than one (only then is a replay copy worth keeping).
    pub fn can_retry(&self) -> bool {
        self.servers.len() > 1
    }

    /// The connection pool of one of its servers.
    pub fn pool_of(&self, url: &UpstreamUrl) -> Option<&Arc<Pool>> {
        self.servers
            .iter()
            .find(|peer| peer.url == *url)
            .map(|peer| &peer.pool)
    }

    /// Counts every attempt in `metrics` (made for these servers, in order).
    pub fn with_metrics(mut self, metrics: UpstreamMetrics) -> Upstreams {
        self.metrics = metrics;
        self
    }

    /// Each server, as configured, and where it stands now.
    pub fn rotation(&self) -> Vec<(String, Rotation)> {
        let now = self.elapsed_ms();
        self.servers
            .iter()
            .map(|server| {
                let state = if server.checked_down.load(Ordering::Relaxed) {
                    Rotation::FailingHealthChecks
                } else if server.ejected_until.load(Ordering::Relaxed) > now {
                    Rotation::Ejected
                } else {
                    Rotation::InRotation
                };
                (server.url.to_string(), state)
            })
            .collect()
    }

    /// Milliseconds since the pool was made: the clock of `ejected_until`.
    fn elapsed_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    /// The clock is read only for a server that was ejected.
    fn in_rotation(&self, index: usize) -> bool {
        let server = &self.servers[index];
        let ejected_until = server.ejected_until.load(Ordering::Relaxed);
        !server.checked_down.load(Ordering::Relaxed)
            && (ejected_until == 0 || ejected_until <= self.elapsed_ms())
    }

    /// The next server in weighted round-robin order that is in rotation;
    /// when every server is ejected, the one whose ejection ends first.
    /// None only when the health checks hold every server down.
    fn pick(&self) -> Option<usize> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..self.schedule.len())
            .map(|i| self.schedule[(start + i) % self.schedule.len()])
            .find(|&index| self.in_rotation(index))
            .or_else(|| self.soonest_back(&[]))
    }

    /// The ejected server, not held down by health checks nor in `tried`,
    /// whose ejection ends first.
    fn soonest_back(&self, tried: &[usize]) -> Option<usize> {
        (0..self.servers.len())
            .filter(|index| !tried.contains(index))
            .filter(|&index| !self.servers[index].checked_down.load(Ordering::Relaxed))
            .min_by_key(|&index| self.servers[index].ejected_until.load(Ordering::Relaxed))
    }

    /// For a retry: the next server after `after`, in rotation and not
    /// tried; when none is, the untried ejected one that is back soonest.
    fn pick_after(&self, after: usize, tried: &[usize]) -> Option<usize> {
        let count = self.servers.len();
        (1..count)
            .map(|i| (after + i) % count)
            .find(|index| !tried.contains(index) && self.in_rotation(*index))
            .or_else(|| self.soonest_back(tried))
    }

    /// A server that answered is back in rotation, its failures forgotten.
    fn succeeded(&self, index: usize) {
        let server = &self.servers[index];
        if server.fails.load(Ordering::Relaxed) != 0 {
            server.fails.store(0, Ordering::Relaxed);
        }
        if server.ejected_until.load(Ordering::Relaxed) != 0
            && server.ejected_until.swap(0, Ordering::Relaxed) > self.elapsed_ms()
        {
            info!(server = %server.url, "upstream answered; back in rotation");
        }
    }

    /// Passive health: `max_fails` failures in a row take a server out for
    /// `fail_timeout`. A lone server is never ejected this way (as in nginx):
    /// there would be nothing to send its requests to.
    fn failed(&self, index: usize) {
        let server = &self.servers[index];
        let fails = server.fails.fetch_add(1, Ordering::Relaxed) + 1;
        if fails >= self.max_fails && self.servers.len() > 1 {
            let now = self.elapsed_ms();
            let until = now + self.fail_timeout.as_millis() as u64;
            if server.ejected_until.swap(until, Ordering::Relaxed) <= now {
                warn!(server = %server.url, fails, out_for = ?self.fail_timeout, "upstream taken out of rotation");
            }
        }
    }

    /// Sends a request to the next server in turn. A request goes to the
    /// next server in rotation when nothing of it was sent (connecting
    /// failed, say), body and all; and when it was sent but no response head
    /// came back, if the caller gave a `replay` (an idempotent request
    /// without a body, RFC 9110 §9.2.2). A failure that is not the server's
    /// own (the client's body broke) ends the request at once. Says which
    /// server answered (beside the response, not in its extensions: their
    /// type map would cost three allocations per request). (Not an `async
    /// fn`, which would keep the outbound request twice: as it was passed
    /// and as it is taken apart.)
    pub fn forward<'a>(
        &'a self,
        outbound: Outbound<'a>,
    ) -> impl Future<Output = Result<(Response<PooledBody>, UpstreamUrl), ProxyError>> + 'a {
        let Outbound {
            method,
            path,
            headers,
            mut body,
            replay,
        } = outbound;
        async move {
            let named_host = headers.contains_key(HOST);
            let mut index = self.pick().ok_or(ProxyError::new(Kind::NoUpstream))?;
            let mut headers = Some(headers);
            let mut tried = vec![];
            loop {
                let server = &self.servers[index];
                // In a block of its own, so that the future keeps no room
                // for the spent headers while the request is out.
                let request = {
                    let mut request_headers = match (headers.take(), replay) {
                        (Some(headers), _) => headers,
                        (None, Some(replay)) => replay.headers(),
                        (None, None) => unreachable!("headers are spent only when a replay exists"),
                    };
                    if !named_host {
                        // Each attempt names its own server (RFC 9112 §3.2).
                        request_headers.insert(HOST, server.host.clone());
                    }
                    build_request(
                        &method,
                        &path,
                        request_headers,
                        std::mem::replace(&mut body, RequestBody::empty()),
                    )
                };
                let failure = match server.pool.send(request, self.response_timeout).await {
                    Sent::Response(response) => {
                        self.succeeded(index);
                        self.metrics.attempt(index, UpstreamOutcome::Ok);
                        return Ok((response, server.url.clone()));
                    }
                    Sent::Unsent(request, error) => {
                        let (parts, unsent_body) = request.into_parts();
                        (headers, body) = (Some(parts.headers), unsent_body);
                        ProxyError::exchange(&server.url, error)
                    }
                    Sent::Failed(error) => ProxyError::exchange(&server.url, error),
                    Sent::TimedOut(elapsed) => ProxyError::upstream_timeout(&server.url, elapsed),
                };
                if let Some(outcome) = UpstreamOutcome::of_failure(&failure, headers.is_some()) {
                    self.metrics.attempt(index, outcome);
                }
                if !failure.counts_against_upstream() {
                    return Err(failure);
                }
                self.failed(index);
                tried.push(index);
                let can_resend = headers.is_some() || replay.is_some();
                let Some(next) = self.pick_after(index, &tried).filter(|_| can_resend) else {
                    return Err(failure);
                };
                warn!(error = %failure, next = %self.servers[next].url, "upstream failed; trying the next server");
                index = next;
            }
        }
    }

    /// Closes idle pooled connections past the idle timeout.
    pub fn sweep_idle(&self) {
        for server in &self.servers {
            server.pool.sweep();
        }
    }

    /// Background upkeep, until `stop`: idle pooled connections past their
    /// timeout are closed and, with `[upstreams.health]`, every `interval`
    /// each server is probed with `GET <path>`; a 2xx or 3xx answer within
    /// `timeout` is good.
    /// `unhealthy_threshold` bad probes in a row take a server out,
    /// `healthy_threshold` good ones bring it back (ending any ejection).
    pub async fn check_health(self: Arc<Self>, stop: CancellationToken) {
        let health = self.health.as_ref().map(|health| {
            let path: PathAndQuery = health
                .path
                .parse()
                .expect("validated with the configuration");
            (health, path)
        });
        let every = health
            .as_ref()
            .map_or(IDLE_SWEEP_INTERVAL, |(h, _)| h.interval);
        let mut streaks = vec![(0u32, 0u32); self.servers.len()];
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = stop.cancelled() => return,
            }
            self.sweep_idle();
            if let Some((health, path)) = &health {
                self.check_once(health, path, &mut streaks).await;
            }
        }
    }

    /// Probes every server once and updates their streaks and rotation.
    async fn check_once(
        self: &Arc<Self>,
        health: &HealthConfig,
        path: &PathAndQuery,
        streaks: &mut [(u32, u32)],
    ) {
        let mut probes = tokio::task::JoinSet::new();
        for index in 0..self.servers.len() {
            let (pool, path, timeout) = (self.clone(), path.clone(), health.timeout);
            probes.spawn(async move { (index, pool.probe(index, &path, timeout).await) });
        }
        let mut results = vec![false; self.servers.len()];
        while let Some(Ok((index, good))) = probes.join_next().await {
            results[index] = good;
        }
        for ((server, good), (good_streak, bad_streak)) in
            self.servers.iter().zip(results).zip(streaks)
        {
            if good {
                (*good_streak, *bad_streak) = (*good_streak + 1, 0);
            } else {
                (*good_streak, *bad_streak) = (0, *bad_streak + 1);
            }
            let down = server.checked_down.load(Ordering::Relaxed);
            let ejected = server.ejected_until.load(Ordering::Relaxed) > self.elapsed_ms();
            if (down || ejected) && *good_streak >= health.healthy_threshold {
                server.checked_down.store(false, Ordering::Relaxed);
                server.ejected_until.store(0, Ordering::Relaxed);
                server.fails.store(0, Ordering::Relaxed);
                info!(server = %server.url, "upstream healthy again; back in rotation");
            } else if !down && *bad_streak >= health.unhealthy_threshold {
                server.checked_down.store(true, Ordering::Relaxed);
                warn!(server = %server.url, "upstream failed its health checks; out of rotation");
            }
        }
    }

    async fn probe(&self, index: usize, path: &PathAndQuery, timeout: Duration) -> bool {
        let server = &self.servers[index];
        let mut headers = HeaderMap::new();
        headers.insert(
            USER_AGENT,
            HeaderValue::from_static("sessiongate-health-check"),
        );
        headers.insert(HOST, server.host.clone());
        let request = build_request(&Method::GET, path, headers, RequestBody::empty());
        match within(
            "a health check",
            timeout,
            server.pool.send(request, timeout),
        )
        .await
        {
            Ok(Sent::Response(response)) => {
                response.status().is_success() || response.status().is_redirection()
            }
            _ => false,
        }
    }
}

/// One period of nginx's smooth weighted round-robin: each server appears
/// `weight` times, spread out (weights 5, 1, 1 give a a b a c a a).
fn smooth_weighted_schedule(weights: &[u32]) -> Vec<usize> {
    let total: i64 = weights.iter().map(|&w| i64::from(w)).sum();
    let mut current = vec![0i64; weights.len()];
    (0..total)
        .map(|_| {
            for (c, &w) in current.iter_mut().zip(weights) {
                *c += i64::from(w);
            }
            let best = (0..weights.len())
                .max_by_key(|&i| (current[i], -(i as i64)))
                .expect("at least one server");
            current[best] -= total;
            best
        })
        .collect()
}

/// The request as a server gets it: origin-form target (RFC 9112 §3.2.1)
/// and HTTP/1.1, whatever the client spoke.
fn build_request(
    method: &Method,
    path: &PathAndQuery,
    headers: HeaderMap,
    body: RequestBody,
) -> Request<RequestBody> {
    let mut request = Request::new(body);
    *request.method_mut() = method.clone();
    *request.uri_mut() = Uri::from(path.clone());
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = headers;
    request
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replay_copy_keeps_every_value_in_order_and_its_list_is_reused() {
        let mut headers = HeaderMap::new();
        headers.append(HOST, HeaderValue::from_static("a.example"));
        headers.append("x-a", HeaderValue::from_static("1"));
        headers.append("x-a", HeaderValue::from_static("2"));
        headers.append(USER_AGENT, HeaderValue::from_static("t"));
        let first = ReplayCopy::of(&headers);
        assert_eq!(first.headers(), headers);
        let order = |map: &HeaderMap| {
            map.iter()
                .map(|(n, v)| format!("{n}={}", v.to_str().unwrap()))
                .collect::<Vec<_>>()
        };
        assert_eq!(order(&first.headers()), order(&headers));
        let list = first.0.as_ptr();
        drop(first);
        let mut small = HeaderMap::new();
        small.insert(HOST, HeaderValue::from_static("b.example"));
        let second = ReplayCopy::of(&small);
        assert_eq!(second.headers(), small);
        assert_eq!(second.0.as_ptr(), list, "the spare list was reused");
    }

    #[test]
    fn equal_weights_alternate() {
        assert_eq!(smooth_weighted_schedule(&[1, 1]), [0, 1]);
        assert_eq!(smooth_weighted_schedule(&[1, 1, 1]), [0, 1, 2]);
    }

    #[test]
    fn weights_are_spread_over_the_period() {
        assert_eq!(smooth_weighted_schedule(&[5, 1, 1]), [0, 0, 1, 0, 2, 0, 0]);
        let schedule = smooth_weighted_schedule(&[3, 1]);
        assert_eq!(schedule.iter().filter(|&&i| i == 0).count(), 3);
        assert_eq!(schedule.len(), 4);
    }
}

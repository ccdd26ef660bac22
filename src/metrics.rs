//! Every metric sessiongate exposes (SPEC §9), named in this one module, and
//! the handles the request path counts with.
//!
//! The crate: `metrics` with `metrics-exporter-prometheus` (its recorder
//! only, no HTTP listener: the admin listener serves the text), for the
//! counters and gauges. Chosen over `prometheus-client` because it writes
//! the Prometheus text format 0.0.4, which SPEC §9 names
//! (`prometheus-client` writes OpenMetrics text), and because its handles
//! are plain atomics, where `prometheus-client`'s `Histogram::observe`
//! takes a mutex per sample.
//!
//! The two histograms are this module's own ([`Timing`]): fixed buckets,
//! one atomic add for the bucket and one for the sum per sample. The
//! exporter's histograms buffer every sample (an allocation per 64) until
//! a scrape folds them in; measured per request that cost several times
//! the counters', and a process nobody scrapes would buffer without end.
//!
//! The recorder is this process's own, not the crate's global one, so that
//! two proxies in one process (the tests) never share counts. Every label
//! set is resolved once, at start, into a handle (an `Arc` of atomics), so
//! counting on the request path is an atomic add: no lookup, no lock.
//! Without `[admin]` metrics are off and every handle is a no-op.
//!
//! Labels never carry a sid, a user, a cookie, a query string or a raw path:
//! the only free-form label is `server`, the configured upstream URL.

use std::fmt::Write as _;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::FutureExt;
use metrics::{Counter, Gauge, Key, Label, Level, Metadata, Recorder};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};

use crate::error::{Kind, ProxyError};
use crate::session::cookie::Rejection;
use crate::session::store::{StoreError, epoch_ms};

/// `sessiongate_requests_total{pool, status}`
pub const REQUESTS_TOTAL: &str = "sessiongate_requests_total";
/// `sessiongate_request_duration_seconds{pool}`
pub const REQUEST_DURATION: &str = "sessiongate_request_duration_seconds";
/// `sessiongate_upstream_requests_total{pool, server, outcome}`
pub const UPSTREAM_REQUESTS_TOTAL: &str = "sessiongate_upstream_requests_total";
/// `sessiongate_upstream_in_rotation{pool, server}`
pub const UPSTREAM_IN_ROTATION: &str = "sessiongate_upstream_in_rotation";
/// `sessiongate_store_requests_total{op, outcome}`
pub const STORE_REQUESTS_TOTAL: &str = "sessiongate_store_requests_total";
/// `sessiongate_store_duration_seconds{op}`
pub const STORE_DURATION: &str = "sessiongate_store_duration_seconds";
/// `sessiongate_sessions_total{event}`
pub const SESSIONS_TOTAL: &str = "sessiongate_sessions_total";
/// `sessiongate_cookies_rejected_total{reason}`
pub const COOKIES_REJECTED_TOTAL: &str = "sessiongate_cookies_rejected_total";
/// `sessiongate_connections{protocol}`
pub const CONNECTIONS: &str = "sessiongate_connections";
/// `sessiongate_cache_lookups_total{result}`
pub const CACHE_LOOKUPS_TOTAL: &str = "sessiongate_cache_lookups_total";
/// `sessiongate_config_reloads_total{result}`
pub const CONFIG_RELOADS_TOTAL: &str = "sessiongate_config_reloads_total";
/// `sessiongate_build_info{version}`
pub const BUILD_INFO: &str = "sessiongate_build_info";
/// `sessiongate_access_log_dropped_total`: lines the access log's buffer had no room for.
pub const ACCESS_LOG_DROPPED_TOTAL: &str = "sessiongate_access_log_dropped_total";

/// The pool label until named pools exist.
pub const DEFAULT_POOL: &str = "default";

/// Histogram buckets for a proxy, in seconds: 100 µs to 10 s.
pub const BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// The same bounds, as the `le` labels write them.
const LE: [&str; 16] = [
    "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1",
    "0.25", "0.5", "1", "2.5", "5", "10",
];

/// The same bounds in nanoseconds, for the request path.
const BUCKETS_NS: [u64; 16] = [
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// The `status` label: the class of a status code.
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// What became of one attempt to send a request to a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamOutcome {
    /// A response head arrived.
    Ok,
    /// No connection could be made (or it failed before the request went out).
    ConnectError,
    /// No response head within `timeouts.upstream_response`.
    Timeout,
    /// The exchange failed after the request was sent.
    Error,
}

impl UpstreamOutcome {
    const ALL: [UpstreamOutcome; 4] = [
        UpstreamOutcome::Ok,
        UpstreamOutcome::ConnectError,
        UpstreamOutcome::Timeout,
        UpstreamOutcome::Error,
    ];

    fn label(self) -> &'static str {
        match self {
            UpstreamOutcome::Ok => "ok",
            UpstreamOutcome::ConnectError => "connect_error",
            UpstreamOutcome::Timeout => "timeout",
            UpstreamOutcome::Error => "error",
        }
    }

    /// The outcome of a failed attempt, from its error: `unsent` when
    /// nothing of the request had gone out. None when the failure was the
    /// client's (its body broke): that says nothing of the server.
    pub fn of_failure(error: &ProxyError, unsent: bool) -> Option<UpstreamOutcome> {
        match error.kind() {
            _ if !error.counts_against_upstream() => None,
            Kind::UpstreamTimeout => Some(UpstreamOutcome::Timeout),
            _ if unsent => Some(UpstreamOutcome::ConnectError),
            _ => Some(UpstreamOutcome::Error),
        }
    }
}

/// A store operation, as the `op` label names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOp {
    /// Read a session and push its expiry.
    Load,
    /// Store a response's changes (or a new session).
    Save,
    /// Take a session out to move it to a fresh sid.
    Rotate,
    /// Delete a session.
    Destroy,
    /// Push a cached session's expiry (with the session cache, SPEC §11).
    Touch,
}

impl StoreOp {
    const ALL: [StoreOp; 5] = [
        StoreOp::Load,
        StoreOp::Save,
        StoreOp::Rotate,
        StoreOp::Destroy,
        StoreOp::Touch,
    ];

    fn label(self) -> &'static str {
        match self {
            StoreOp::Load => "load",
            StoreOp::Save => "save",
            StoreOp::Rotate => "rotate",
            StoreOp::Destroy => "destroy",
            StoreOp::Touch => "touch",
        }
    }
}

const STORE_OUTCOMES: [&str; 3] = ["ok", "error", "timeout"];

/// A session event, as the `event` label names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEvent {
    /// A new session was stored.
    Created,
    /// A session moved to a fresh sid.
    Rotated,
    /// A session was deleted.
    Destroyed,
    /// A backend's update was refused (not an object, `__` key, too large).
    UpdateRejected,
    /// A session was bound to a user (SPEC §12; no label says which).
    Bound,
    /// A session was ended because its user's sessions were: by
    /// `destroy-others`, `session.max_per_user` or the admin API.
    Revoked,
}

const SESSION_EVENTS: [&str; 6] = [
    "created",
    "rotated",
    "destroyed",
    "update_rejected",
    "bound",
    "revoked",
];

/// A client connection's protocol, as the `protocol` label names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.x.
    Http1,
    /// HTTP/2.
    H2,
    /// A tunnel after a protocol switch (WebSocket and the like).
    Tunnel,
}

const PROTOCOLS: [&str; 3] = ["http1", "h2", "tunnel"];

/// The state of every metric of one process.
pub struct Metrics {
    recorder: Option<PrometheusRecorder>,
    default_pool: PoolMetrics,
    store: [[Counter; 3]; 5],
    store_duration: [Timing; 5],
    sessions: [Counter; 6],
    cookies_rejected: [Counter; 2],
    connections: [Gauge; 3],
    cache_lookups: [Counter; 2],
    config_reloads: [Counter; 2],
    access_log_dropped: Counter,
    /// `upstream_in_rotation`, per (pool, server): set at scrape time.
    rotation: Mutex<Vec<(String, String, Gauge)>>,
    /// When the configuration in force was loaded, ms since the epoch.
    loaded_ms: AtomicU64,
    /// Every histogram, for [`render`](Self::render).
    histograms: Option<Histograms>,
}

impl Metrics {
    /// Every metric, registered at zero (`enabled`), or none: every handle a
    /// no-op and [`render`](Self::render) empty.
    pub fn new(enabled: bool) -> Metrics {
        let recorder = enabled.then(|| PrometheusBuilder::new().build_recorder());
        let r = recorder.as_ref();
        let histograms = enabled.then(Histograms::default);
        let h = histograms.as_ref();
        describe(r);
        gauge(r, BUILD_INFO, &[("version", env!("CARGO_PKG_VERSION"))]).set(1.0);
        Metrics {
            default_pool: PoolMetrics::new(r, h, DEFAULT_POOL),
            store: StoreOp::ALL.map(|op| {
                STORE_OUTCOMES.map(|outcome| {
                    counter(
                        r,
                        STORE_REQUESTS_TOTAL,
                        &[("op", op.label()), ("outcome", outcome)],
                    )
                })
            }),
            store_duration: StoreOp::ALL.map(|op| timing(h, STORE_DURATION, &[("op", op.label())])),
            sessions: SESSION_EVENTS.map(|event| counter(r, SESSIONS_TOTAL, &[("event", event)])),
            cookies_rejected: ["malformed", "bad_signature"]
                .map(|reason| counter(r, COOKIES_REJECTED_TOTAL, &[("reason", reason)])),
            connections: PROTOCOLS.map(|p| gauge(r, CONNECTIONS, &[("protocol", p)])),
            cache_lookups: ["hit", "miss"]
                .map(|result| counter(r, CACHE_LOOKUPS_TOTAL, &[("result", result)])),
            config_reloads: ["ok", "error"]
                .map(|result| counter(r, CONFIG_RELOADS_TOTAL, &[("result", result)])),
            access_log_dropped: counter(r, ACCESS_LOG_DROPPED_TOTAL, &[]),
            rotation: Mutex::new(Vec::new()),
            loaded_ms: AtomicU64::new(epoch_ms()),
            recorder,
            histograms,
        }
    }

    /// True when metrics are recorded (`[admin]` is configured).
    pub fn enabled(&self) -> bool {
        self.recorder.is_some()
    }

    /// The handles of one pool's servers, registered at zero; `servers` are
    /// the configured URLs.
    pub fn upstreams(&self, pool: &str, servers: &[String]) -> UpstreamMetrics {
        let r = self.recorder.as_ref();
        let mut rotation = self.rotation.lock().expect("not poisoned");
        let per_server = servers
            .iter()
            .map(|server| {
                let in_rotation = gauge(
                    r,
                    UPSTREAM_IN_ROTATION,
                    &[("pool", pool), ("server", server)],
                );
                in_rotation.set(1.0);
                rotation.push((pool.to_string(), server.clone(), in_rotation));
                UpstreamOutcome::ALL.map(|outcome| {
                    counter(
                        r,
                        UPSTREAM_REQUESTS_TOTAL,
                        &[
                            ("pool", pool),
                            ("server", server),
                            ("outcome", outcome.label()),
                        ],
                    )
                })
            })
            .collect();
        UpstreamMetrics { per_server }
    }

    /// One request of the default pool answered with `status`, its
    /// response head after `elapsed`.
    pub fn request(&self, status: u16, elapsed: Duration) {
        self.default_pool.request(status, elapsed);
    }

    /// The request counters of a pool, registered at zero (for named pools;
    /// the default pool's are made at start).
    pub fn pool(&self, name: &str) -> PoolMetrics {
        PoolMetrics::new(self.recorder.as_ref(), self.histograms.as_ref(), name)
    }

    /// `call`, a store call, timed and counted when it ends. Not an `async
    /// fn`, so that `call` is held once in the caller's future, not twice.
    pub fn timed<'a, T>(
        &'a self,
        op: StoreOp,
        call: impl Future<Output = Result<T, StoreError>> + 'a,
    ) -> impl Future<Output = Result<T, StoreError>> + 'a {
        // Without [admin] nothing is counted: no clock read either.
        let started = self.enabled().then(std::time::Instant::now);
        call.map(move |result| {
            if let Some(started) = started {
                self.store_call(op, started.elapsed(), &result);
            }
            result
        })
    }

    /// One store call and how it ended.
    pub fn store_call<T>(&self, op: StoreOp, elapsed: Duration, result: &Result<T, StoreError>) {
        let outcome = match result {
            Ok(_) => 0,
            Err(StoreError::Timeout(_)) => 2,
            Err(_) => 1,
        };
        self.store[op as usize][outcome].increment(1);
        self.store_duration[op as usize].record(elapsed);
    }

    /// A session event.
    pub fn session(&self, event: SessionEvent) {
        self.sessions_n(event, 1);
    }

    /// `n` session events at once (the sessions a revocation ended).
    pub fn sessions_n(&self, event: SessionEvent, n: usize) {
        self.sessions[event as usize].increment(n as u64);
    }

    /// A session cookie that was refused.
    pub fn cookie_rejected(&self, why: Rejection) {
        let index = match why {
            Rejection::Malformed => 0,
            Rejection::BadSignature => 1,
        };
        self.cookies_rejected[index].increment(1);
    }

    /// A connection (or tunnel) opens; it counts until the guard is dropped.
    pub fn open(&self, protocol: Protocol) -> Open {
        let gauge = self.connections[protocol as usize].clone();
        gauge.increment(1.0);
        Open(gauge)
    }

    /// A session cache lookup (SPEC §11 fills this in).
    pub fn cache_lookup(&self, hit: bool) {
        self.cache_lookups[usize::from(!hit)].increment(1);
    }

    /// A configuration reload and whether it took (the reload calls this).
    /// A successful one also moves the configuration's load time.
    pub fn config_reloaded(&self, ok: bool) {
        self.config_reloads[usize::from(!ok)].increment(1);
        if ok {
            self.loaded_ms.store(epoch_ms(), Ordering::Relaxed);
        }
    }

    /// When the configuration in force was loaded.
    pub fn config_loaded_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.loaded_ms.load(Ordering::Relaxed))
    }

    /// An access log line its buffer had no room for.
    pub fn access_log_dropped(&self) {
        self.access_log_dropped.increment(1);
    }

    /// Sets `upstream_in_rotation` of one server (at scrape time).
    pub fn set_in_rotation(&self, pool: &str, server: &str, in_rotation: bool) {
        let rotation = self.rotation.lock().expect("not poisoned");
        if let Some((_, _, gauge)) = rotation.iter().find(|(p, s, _)| p == pool && s == server) {
            gauge.set(if in_rotation { 1.0 } else { 0.0 });
        }
    }

    /// Every metric in the Prometheus text format 0.0.4.
    pub fn render(&self) -> String {
        let mut text = self
            .recorder
            .as_ref()
            .map(|r| r.handle().render())
            .unwrap_or_default();
        if let Some(histograms) = &self.histograms {
            histograms.render(&mut text);
        }
        text
    }
}

/// One pool's request counters.
#[derive(Clone)]
pub struct PoolMetrics {
    requests: [Counter; 5],
    duration: Timing,
}

impl PoolMetrics {
    fn new(r: Option<&PrometheusRecorder>, h: Option<&Histograms>, pool: &str) -> PoolMetrics {
        PoolMetrics {
            requests: STATUS_CLASSES
                .map(|class| counter(r, REQUESTS_TOTAL, &[("pool", pool), ("status", class)])),
            duration: timing(h, REQUEST_DURATION, &[("pool", pool)]),
        }
    }

    /// One request answered with `status`, its response head after `elapsed`.
    pub fn request(&self, status: u16, elapsed: Duration) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.requests[class].increment(1);
        self.duration.record(elapsed);
    }
}

/// One pool's per-server counters, indexed like its servers.
#[derive(Default)]
pub struct UpstreamMetrics {
    per_server: Vec<[Counter; 4]>,
}

impl UpstreamMetrics {
    /// One attempt on server `index` and its outcome.
    pub fn attempt(&self, index: usize, outcome: UpstreamOutcome) {
        if let Some(counters) = self.per_server.get(index) {
            counters[outcome as usize].increment(1);
        }
    }
}

/// An open connection or tunnel, counted in `sessiongate_connections`
/// until dropped.
pub struct Open(Gauge);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

static METADATA: Metadata<'static> = Metadata::new("sessiongate", Level::INFO, Some("sessiongate"));

fn key(name: &'static str, labels: &[(&'static str, &str)]) -> Key {
    let labels: Vec<Label> = labels
        .iter()
        .map(|(k, v)| Label::new(*k, v.to_string()))
        .collect();
    Key::from_parts(name, labels)
}

fn counter(
    r: Option<&PrometheusRecorder>,
    name: &'static str,
    labels: &[(&'static str, &str)],
) -> Counter {
    r.map_or_else(Counter::noop, |r| {
        r.register_counter(&key(name, labels), &METADATA)
    })
}

fn gauge(
    r: Option<&PrometheusRecorder>,
    name: &'static str,
    labels: &[(&'static str, &str)],
) -> Gauge {
    r.map_or_else(Gauge::noop, |r| {
        r.register_gauge(&key(name, labels), &METADATA)
    })
}

/// A histogram of durations with the fixed [`BUCKETS`]: recording is two
/// atomic adds (the bucket, the sum); the buckets are made cumulative when
/// rendered. A no-op when metrics are off.
#[derive(Clone, Default)]
pub struct Timing(Option<Arc<TimingCells>>);

#[derive(Default)]
struct TimingCells {
    name: &'static str,
    /// `k="v",` pairs, rendered once.
    labels: String,
    /// Observations per bucket (not cumulative); the last one is past 10 s.
    counts: [AtomicU64; 17],
    sum_ns: AtomicU64,
}

impl Timing {
    /// One observation.
    pub fn record(&self, elapsed: Duration) {
        if let Some(cells) = &self.0 {
            let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
            let index = BUCKETS_NS.partition_point(|&bound| bound < ns);
            cells.counts[index].fetch_add(1, Ordering::Relaxed);
            cells.sum_ns.fetch_add(ns, Ordering::Relaxed);
        }
    }
}

/// Every [`Timing`] of a process, in registration order.
#[derive(Default)]
struct Histograms(Mutex<Vec<Arc<TimingCells>>>);

impl Histograms {
    fn render(&self, out: &mut String) {
        let all = self.0.lock().expect("not poisoned");
        let mut last_name = "";
        for cells in all.iter() {
            if cells.name != last_name {
                let help = match cells.name {
                    REQUEST_DURATION => "Time from a request's arrival to its response head.",
                    _ => "Session store call time, by operation.",
                };
                let _ = write!(out, "# HELP {0} {help}\n# TYPE {0} histogram\n", cells.name);
                last_name = cells.name;
            }
            let mut cumulative = 0;
            for (i, count) in cells.counts.iter().enumerate() {
                cumulative += count.load(Ordering::Relaxed);
                let le = LE.get(i).copied().unwrap_or("+Inf");
                let _ = writeln!(
                    out,
                    "{}_bucket{{{}le=\"{le}\"}} {cumulative}",
                    cells.name, cells.labels
                );
            }
            let labels = cells.labels.trim_end_matches(',');
            let sum = cells.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
            let _ = writeln!(out, "{}_sum{{{labels}}} {sum}", cells.name);
            let _ = writeln!(out, "{}_count{{{labels}}} {cumulative}", cells.name);
        }
        out.push('\n');
    }
}

fn timing(h: Option<&Histograms>, name: &'static str, labels: &[(&'static str, &str)]) -> Timing {
    let Some(histograms) = h else {
        return Timing(None);
    };
    let labels = labels.iter().fold(String::new(), |mut s, (k, v)| {
        let v = v.replace('\\', "\\\\").replace('"', "\\\"");
        let _ = write!(s, "{k}=\"{v}\",");
        s
    });
    let mut all = histograms.0.lock().expect("not poisoned");
    // The same series asked for again (a reload, say) is the same histogram.
    if let Some(cells) = all.iter().find(|c| c.name == name && c.labels == labels) {
        return Timing(Some(cells.clone()));
    }
    let cells = Arc::new(TimingCells {
        name,
        labels,
        ..TimingCells::default()
    });
    // Kept grouped by name, so that each name's lines are together.
    let at = all
        .iter()
        .rposition(|c| c.name == name)
        .map_or(all.len(), |i| i + 1);
    all.insert(at, cells.clone());
    Timing(Some(cells))
}

/// The `# HELP` lines.
fn describe(r: Option<&PrometheusRecorder>) {
    let Some(r) = r else { return };
    let counters = [
        (
            REQUESTS_TOTAL,
            "Requests answered, by pool and status class.",
        ),
        (
            UPSTREAM_REQUESTS_TOTAL,
            "Attempts to send a request to an upstream server, by outcome.",
        ),
        (
            STORE_REQUESTS_TOTAL,
            "Session store calls, by operation and outcome.",
        ),
        (SESSIONS_TOTAL, "Session events."),
        (
            COOKIES_REJECTED_TOTAL,
            "Session cookies refused, by reason.",
        ),
        (CACHE_LOOKUPS_TOTAL, "Session cache lookups."),
        (CONFIG_RELOADS_TOTAL, "Configuration reloads, by result."),
        (
            ACCESS_LOG_DROPPED_TOTAL,
            "Access log lines dropped because the log's buffer was full.",
        ),
    ];
    for (name, help) in counters {
        r.describe_counter(name.into(), None, help.into());
    }
    let gauges = [
        (
            UPSTREAM_IN_ROTATION,
            "1 while the upstream server is in rotation, else 0.",
        ),
        (CONNECTIONS, "Open client connections and tunnels."),
        (BUILD_INFO, "Always 1; the version as a label."),
    ];
    for (name, help) in gauges {
        r.describe_gauge(name.into(), None, help.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_present_at_zero_from_the_start() {
        let metrics = Metrics::new(true);
        let _pool = metrics.upstreams(DEFAULT_POOL, &["http://127.0.0.1:9".into()]);
        let text = metrics.render();
        for name in [
            "sessiongate_requests_total{pool=\"default\",status=\"5xx\"} 0",
            "sessiongate_request_duration_seconds_bucket{pool=\"default\",le=\"0.0001\"} 0",
            "sessiongate_request_duration_seconds_bucket{pool=\"default\",le=\"10\"} 0",
            "sessiongate_upstream_requests_total{pool=\"default\",server=\"http://127.0.0.1:9\",outcome=\"connect_error\"} 0",
            "sessiongate_upstream_in_rotation{pool=\"default\",server=\"http://127.0.0.1:9\"} 1",
            "sessiongate_store_requests_total{op=\"touch\",outcome=\"timeout\"} 0",
            "sessiongate_store_duration_seconds_count{op=\"load\"} 0",
            "sessiongate_sessions_total{event=\"update_rejected\"} 0",
            "sessiongate_cookies_rejected_total{reason=\"bad_signature\"} 0",
            "sessiongate_connections{protocol=\"tunnel\"} 0",
            "sessiongate_cache_lookups_total{result=\"miss\"} 0",
            "sessiongate_config_reloads_total{result=\"error\"} 0",
            "sessiongate_access_log_dropped_total 0",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
        assert!(text.contains(&format!(
            "sessiongate_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )));
    }

    #[test]
    fn counts_land_in_their_label_sets() {
        let metrics = Metrics::new(true);
        metrics.request(503, Duration::from_millis(3));
        metrics.request(200, Duration::from_micros(50));
        metrics.session(SessionEvent::Rotated);
        let open = metrics.open(Protocol::H2);
        let text = metrics.render();
        assert!(text.contains("sessiongate_requests_total{pool=\"default\",status=\"5xx\"} 1"));
        assert!(text.contains(
            "sessiongate_request_duration_seconds_bucket{pool=\"default\",le=\"0.0001\"} 1"
        ));
        assert!(text.contains("sessiongate_request_duration_seconds_count{pool=\"default\"} 2"));
        assert!(text.contains("sessiongate_sessions_total{event=\"rotated\"} 1"));
        assert!(text.contains("sessiongate_connections{protocol=\"h2\"} 1"));
        drop(open);
        assert!(
            metrics
                .render()
                .contains("sessiongate_connections{protocol=\"h2\"} 0")
        );
    }

    #[test]
    fn disabled_metrics_render_nothing() {
        let metrics = Metrics::new(false);
        metrics.request(200, Duration::from_millis(1));
        assert_eq!(metrics.render(), "");
    }
}

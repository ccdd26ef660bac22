//! What the status page shows, and what `/readyz` decides from: the store's
//! last check, the servers' rotation, and a history of the metrics.
//!
//! Every second the metrics are rendered and read back (the same text
//! `/metrics` serves, so the page and Prometheus never disagree) into a
//! [`Sample`]; ten minutes of samples are kept. Rates are differences
//! between samples; p50 and p99 are read from the differences of the
//! histograms' buckets over the last minute, interpolated within a bucket
//! as Prometheus's `histogram_quantile` does.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::metrics::{
    ACCESS_LOG_DROPPED_TOTAL, BUCKETS, CONNECTIONS, COOKIES_REJECTED_TOTAL, REQUEST_DURATION,
    REQUESTS_TOTAL, SESSIONS_TOTAL, STORE_DURATION, STORE_REQUESTS_TOTAL,
};
use crate::proxy::Gateway;
use crate::proxy::upstream::{Rotation, Upstreams};
use arc_swap::ArcSwap;

/// How often the store is pinged and the metrics sampled.
const EVERY: Duration = Duration::from_secs(1);
/// How much history is kept.
const KEEP: usize = 600;
/// The window of the error rate and the percentiles.
const WINDOW: Duration = Duration::from_secs(60);
/// The window of the current request rate.
const RATE_WINDOW: Duration = Duration::from_secs(10);
/// The sparkline: this many points, this far apart.
const SPARK_POINTS: usize = 60;
const SPARK_STEP: usize = 5;

/// The status of one process, shared by the admin listener and its upkeep.
#[derive(Clone)]
pub struct Status(Arc<Inner>);

struct Inner {
    gateway: Arc<ArcSwap<Gateway>>,
    started: Instant,
    history: Mutex<VecDeque<Sample>>,
    /// The last store check: None before the first; Some(Err) with its error.
    store: Mutex<Option<Result<(), String>>>,
}

/// The metrics at one moment.
#[derive(Debug, Clone, Default)]
struct Sample {
    at: Option<Instant>,
    /// `requests_total` by status class.
    requests: [f64; 5],
    /// Cumulative bucket counts, the last one `+Inf`.
    request_buckets: [f64; 17],
    store_buckets: [f64; 17],
    store_calls: f64,
    store_failures: f64,
    sessions: [f64; 4],
    cookies_rejected: [f64; 2],
    connections: [f64; 3],
    access_log_dropped: f64,
}

impl Sample {
    fn total(&self) -> f64 {
        self.requests.iter().sum()
    }

    fn read(text: &str, at: Instant) -> Sample {
        let mut sample = Sample {
            at: Some(at),
            ..Sample::default()
        };
        for series in parse(text) {
            let label = |name: &str| series.label(name).unwrap_or("");
            let le_index = || -> Option<usize> {
                match label("le") {
                    "+Inf" => Some(BUCKETS.len()),
                    le => le
                        .parse::<f64>()
                        .ok()
                        .and_then(|le| BUCKETS.iter().position(|b| (b - le).abs() < 1e-12)),
                }
            };
            let name = series.name.as_str();
            let value = series.value;
            if name == REQUESTS_TOTAL {
                if let Some(i) = ["1xx", "2xx", "3xx", "4xx", "5xx"]
                    .iter()
                    .position(|c| *c == label("status"))
                {
                    sample.requests[i] += value;
                }
            } else if name == format!("{REQUEST_DURATION}_bucket") {
                if let Some(i) = le_index() {
                    sample.request_buckets[i] += value;
                }
            } else if label("op") == "touch" {
                // The cache's batches of touches: no request waits on them,
                // so the store's figures here leave them to /metrics.
            } else if name == format!("{STORE_DURATION}_bucket") {
                if let Some(i) = le_index() {
                    sample.store_buckets[i] += value;
                }
            } else if name == STORE_REQUESTS_TOTAL {
                sample.store_calls += value;
                if label("outcome") != "ok" {
                    sample.store_failures += value;
                }
            } else if name == SESSIONS_TOTAL {
                if let Some(i) = ["created", "rotated", "destroyed", "update_rejected"]
                    .iter()
                    .position(|e| *e == label("event"))
                {
                    sample.sessions[i] = value;
                }
            } else if name == COOKIES_REJECTED_TOTAL {
                let i = usize::from(label("reason") == "bad_signature");
                sample.cookies_rejected[i] = value;
            } else if name == CONNECTIONS {
                if let Some(i) = ["http1", "h2", "tunnel"]
                    .iter()
                    .position(|p| *p == label("protocol"))
                {
                    sample.connections[i] = value;
                }
            } else if name == ACCESS_LOG_DROPPED_TOTAL {
                sample.access_log_dropped = value;
            }
        }
        sample
    }
}

impl Status {
    /// The status of the process behind `gateway`.
    pub fn new(gateway: Arc<ArcSwap<Gateway>>) -> Status {
        Status(Arc::new(Inner {
            gateway,
            started: Instant::now(),
            history: Mutex::new(VecDeque::with_capacity(KEEP + 1)),
            store: Mutex::new(None),
        }))
    }

    /// Pings the store and samples the metrics every second, until `stop`.
    pub async fn upkeep(self, stop: CancellationToken) {
        let ping = async {
            loop {
                let gateway = self.0.gateway.load_full();
                let result = gateway.sessions().store().ping().await;
                self.store_checked(result.map_err(|e| e.to_string()));
                tokio::select! {
                    () = tokio::time::sleep(EVERY) => {}
                    () = stop.cancelled() => return,
                }
            }
        };
        let sample = async {
            let mut ticks = tokio::time::interval(EVERY);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticks.tick() => self.sample(),
                    () = stop.cancelled() => return,
                }
            }
        };
        tokio::join!(ping, sample);
    }

    fn store_checked(&self, result: Result<(), String>) {
        let mut last = self.0.store.lock().expect("not poisoned");
        match (&*last, &result) {
            (Some(Ok(())) | None, Err(error)) => {
                warn!(%error, "the session store did not answer its check; not ready")
            }
            (Some(Err(_)), Ok(())) => info!("the session store answers again; ready"),
            _ => {}
        }
        *last = Some(result);
    }

    fn sample(&self) {
        let text = self.metrics_text();
        let sample = Sample::read(&text, Instant::now());
        let mut history = self.0.history.lock().expect("not poisoned");
        history.push_back(sample);
        while history.len() > KEEP {
            history.pop_front();
        }
    }

    /// The metrics, with the servers' rotation as of now.
    pub fn metrics_text(&self) -> String {
        let gateway = self.0.gateway.load();
        let metrics = gateway.metrics();
        for pool in gateway.pools() {
            for (server, state) in pool.rotation() {
                metrics.set_in_rotation(pool.name(), &server, state == Rotation::InRotation);
            }
        }
        metrics.render()
    }

    /// Why the process is not ready, if it is not.
    pub fn not_ready(&self) -> Option<String> {
        match &*self.0.store.lock().expect("not poisoned") {
            None => return Some("not ready: the session store has not been checked yet".into()),
            Some(Err(error)) => {
                return Some(format!(
                    "not ready: the session store did not answer its last check: {error}"
                ));
            }
            Some(Ok(())) => {}
        }
        let gateway = self.0.gateway.load();
        gateway.pools().iter().find_map(|pool| {
            let rotation = pool.rotation();
            (!rotation.iter().any(|(_, s)| *s == Rotation::InRotation))
                .then(|| format!("not ready: pool {} has no server in rotation", pool.name()))
        })
    }

    /// The data of the status page.
    pub fn json(&self) -> Value {
        let history = self.0.history.lock().expect("not poisoned");
        let now = Instant::now();
        let latest = history.back().cloned().unwrap_or_default();
        let ago = |window: Duration| -> Sample {
            history
                .iter()
                .find(|s| s.at.is_some_and(|at| now.duration_since(at) <= window))
                .cloned()
                .unwrap_or_default()
        };
        let (recent, minute) = (ago(RATE_WINDOW), ago(WINDOW));
        let rate = rate_between(&recent, &latest);
        let requests_in_window = latest.total() - minute.total();
        let errors_in_window = latest.requests[4] - minute.requests[4];
        let error_rate = (requests_in_window > 0.0).then(|| errors_in_window / requests_in_window);
        let store_calls = latest.store_calls - minute.store_calls;
        let store_failures = latest.store_failures - minute.store_failures;
        let delta = |a: &[f64; 17], b: &[f64; 17]| -> [f64; 17] {
            std::array::from_fn(|i| (a[i] - b[i]).max(0.0))
        };
        let request_delta = delta(&latest.request_buckets, &minute.request_buckets);
        let store_delta = delta(&latest.store_buckets, &minute.store_buckets);
        let latency = |buckets: &[f64; 17]| {
            json!({
                "p50_ms": quantile(0.5, buckets).map(|s| s * 1e3),
                "p99_ms": quantile(0.99, buckets).map(|s| s * 1e3),
            })
        };
        // The sparkline: one point per SPARK_STEP samples, oldest first.
        let samples: Vec<&Sample> = history.iter().collect();
        let mut spark = Vec::new();
        let mut end = samples.len();
        while end > SPARK_STEP && spark.len() < SPARK_POINTS {
            spark.push(rate_between(
                samples[end - 1 - SPARK_STEP],
                samples[end - 1],
            ));
            end -= SPARK_STEP;
        }
        spark.reverse();
        drop(history);

        let gateway = self.0.gateway.load_full();
        let servers = |pool: &Upstreams| -> Vec<Value> {
            pool.rotation()
                .into_iter()
                .map(|(url, state)| {
                    json!({
                        "url": url,
                        "state": match state {
                            Rotation::InRotation => "in_rotation",
                            Rotation::Ejected => "ejected",
                            Rotation::FailingHealthChecks => "failing_health_checks",
                        },
                        "in_rotation": state == Rotation::InRotation,
                    })
                })
                .collect()
        };
        let pools: Vec<Value> = gateway
            .pools()
            .iter()
            .map(|pool| json!({ "name": &**pool.name(), "servers": servers(pool) }))
            .collect();
        let store = self.0.store.lock().expect("not poisoned").clone();
        let metrics = gateway.metrics();
        let not_ready = self.not_ready();
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "now": humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            "uptime_s": self.0.started.elapsed().as_secs(),
            "config_loaded": humantime::format_rfc3339_seconds(metrics.config_loaded_at()).to_string(),
            "ready": not_ready.is_none(),
            "not_ready": not_ready,
            "store": {
                "ok": matches!(store, Some(Ok(()))),
                "error": match store { Some(Err(e)) => Some(e), _ => None },
                "calls_per_s": store_calls / WINDOW.as_secs_f64(),
                "failures_last_minute": store_failures,
            },
            "pools": pools,
            "requests": {
                "per_s": rate,
                "error_rate": error_rate,
                "total": latest.total(),
                "by_status": {
                    "1xx": latest.requests[0], "2xx": latest.requests[1], "3xx": latest.requests[2],
                    "4xx": latest.requests[3], "5xx": latest.requests[4],
                },
                "per_s_history": spark,
                "history_step_s": SPARK_STEP as u64 * EVERY.as_secs(),
            },
            "latency": {
                "window_s": WINDOW.as_secs(),
                "request": latency(&request_delta),
                "store": latency(&store_delta),
            },
            "sessions": {
                "created": latest.sessions[0], "rotated": latest.sessions[1],
                "destroyed": latest.sessions[2], "update_rejected": latest.sessions[3],
            },
            "cookies_rejected": {
                "malformed": latest.cookies_rejected[0], "bad_signature": latest.cookies_rejected[1],
            },
            "connections": {
                "http1": latest.connections[0], "h2": latest.connections[1],
                "tunnel": latest.connections[2],
            },
            "access_log_dropped": latest.access_log_dropped,
        })
    }
}

fn rate_between(earlier: &Sample, later: &Sample) -> f64 {
    match (earlier.at, later.at) {
        (Some(a), Some(b)) if b > a => {
            (later.total() - earlier.total()).max(0.0) / b.duration_since(a).as_secs_f64()
        }
        _ => 0.0,
    }
}

/// The `q` quantile, in seconds, of cumulative bucket counts (the last
/// one `+Inf`); None without observations. Linear within a bucket, as
/// Prometheus's `histogram_quantile`; beyond the last bound, that bound.
fn quantile(q: f64, buckets: &[f64; 17]) -> Option<f64> {
    let total = buckets[BUCKETS.len()];
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let index = buckets.iter().position(|&count| count >= rank)?;
    if index == BUCKETS.len() {
        return Some(BUCKETS[BUCKETS.len() - 1]);
    }
    let (lower, below) = match index {
        0 => (0.0, 0.0),
        i => (BUCKETS[i - 1], buckets[i - 1]),
    };
    let in_bucket = buckets[index] - below;
    let fraction = if in_bucket > 0.0 {
        (rank - below) / in_bucket
    } else {
        1.0
    };
    Some(lower + (BUCKETS[index] - lower) * fraction)
}

/// One line of the text format: a name, its labels and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The sample's name (`…_bucket`, `…_sum`, `…_count` for histograms).
    pub name: String,
    /// Its labels, in order.
    pub labels: Vec<(String, String)>,
    /// Its value.
    pub value: f64,
}

impl Series {
    /// The value of a label.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads the Prometheus text format (0.0.4): every sample line; comments
/// and lines that do not parse are skipped.
pub fn parse(text: &str) -> Vec<Series> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(parse_line)
        .collect()
}

fn parse_line(line: &str) -> Option<Series> {
    let (name, rest) = match line.find(['{', ' ']) {
        Some(i) => line.split_at(i),
        None => return None,
    };
    let mut labels = Vec::new();
    let mut rest = rest;
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices();
        let mut key = String::new();
        loop {
            let (i, c) = chars.next()?;
            match c {
                '}' => {
                    rest = &inner[i + 1..];
                    break;
                }
                ',' | ' ' => {}
                '=' => {
                    if chars.next()?.1 != '"' {
                        return None;
                    }
                    let mut value = String::new();
                    loop {
                        match chars.next()?.1 {
                            '"' => break,
                            '\\' => match chars.next()?.1 {
                                'n' => value.push('\n'),
                                c => value.push(c),
                            },
                            c => value.push(c),
                        }
                    }
                    labels.push((std::mem::take(&mut key), value));
                }
                c => key.push(c),
            }
        }
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Series {
        name: name.to_string(),
        labels,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_of_the_text_format_parse() {
        let series = parse(
            "# TYPE x counter\nx_total{a=\"1\",b=\"q\\\"uote\"} 3\nplain 1.5\nh_bucket{le=\"+Inf\"} 7\n",
        );
        assert_eq!(series.len(), 3);
        assert_eq!(series[0].name, "x_total");
        assert_eq!(series[0].label("b"), Some("q\"uote"));
        assert_eq!(series[0].value, 3.0);
        assert_eq!(series[1].labels, vec![]);
        assert_eq!(series[2].label("le"), Some("+Inf"));
    }

    #[test]
    fn the_store_figures_leave_out_the_caches_touches() {
        let text = format!(
            "{STORE_REQUESTS_TOTAL}{{op=\"load\",outcome=\"ok\"}} 5\n\
             {STORE_REQUESTS_TOTAL}{{op=\"touch\",outcome=\"ok\"}} 7\n\
             {STORE_REQUESTS_TOTAL}{{op=\"touch\",outcome=\"error\"}} 2\n\
             {STORE_DURATION}_bucket{{op=\"load\",le=\"+Inf\"}} 5\n\
             {STORE_DURATION}_bucket{{op=\"touch\",le=\"+Inf\"}} 9\n"
        );
        let sample = Sample::read(&text, Instant::now());
        assert_eq!((sample.store_calls, sample.store_failures), (5.0, 0.0));
        assert_eq!(sample.store_buckets[BUCKETS.len()], 5.0);
    }

    #[test]
    fn quantiles_interpolate_within_a_bucket() {
        let mut buckets = [0.0; 17];
        // 100 observations, all between 1 ms and 2.5 ms.
        for count in buckets.iter_mut().skip(4) {
            *count = 100.0;
        }
        let p50 = quantile(0.5, &buckets).unwrap();
        assert!((p50 - 0.00175).abs() < 1e-9, "{p50}");
        assert_eq!(quantile(0.5, &[0.0; 17]), None);
        let mut slow = [0.0; 17];
        slow[16] = 1.0;
        assert_eq!(quantile(0.99, &slow), Some(10.0));
    }
}

//! What metrics add to one proxied request, measured without the noise of
//! a shared machine: the counting a typical request does (a request with a
//! session cookie that stores nothing), with metrics on and off.
//!
//!     cargo bench --bench metrics_cost
//!
//! Per request: `Instant::now` twice around the request and twice around
//! its one store call, one upstream attempt, one request count and
//! duration, one store count and duration. The connection gauge is per
//! connection, not per request, and is left out.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use sessiongate::metrics::{DEFAULT_POOL, Metrics, StoreOp, UpstreamOutcome};
use sessiongate::session::store::StoreError;

fn one_request(metrics: &Metrics, upstreams: &sessiongate::metrics::UpstreamMetrics) {
    let started = Instant::now();
    let store_started = Instant::now();
    let loaded: Result<Option<String>, StoreError> = Ok(None);
    metrics.store_call(StoreOp::Load, store_started.elapsed(), black_box(&loaded));
    upstreams.attempt(black_box(1), UpstreamOutcome::Ok);
    metrics.request(black_box(200), started.elapsed());
}

fn per_request(c: &mut Criterion) {
    let servers = vec![
        "http://127.0.0.1:9001".to_string(),
        "http://127.0.0.1:9002".to_string(),
    ];
    for (name, enabled) in [("metrics off", false), ("metrics on", true)] {
        let metrics = Metrics::new(enabled);
        let upstreams = metrics.upstreams(DEFAULT_POOL, &servers);
        let mut since_render = Instant::now();
        c.bench_function(&format!("one request's counting, {name}"), |b| {
            b.iter(|| {
                one_request(&metrics, &upstreams);
                // As the admin listener's upkeep does: fold the buffered
                // histogram samples in every second.
                if since_render.elapsed() > Duration::from_secs(1) {
                    black_box(metrics.render());
                    since_render = Instant::now();
                }
            })
        });
    }
}

criterion_group!(benches, per_request);
criterion_main!(benches);

//! The cache's tracking connection (SPEC §11): one RESP3 connection of its
//! own to the node that holds the sessions, with `CLIENT TRACKING ON …
//! NOLOOP`, and what travels over it.
//!
//! - Invalidations arrive on it as pushes and drop copies from the
//!   [`SessionCache`]; a `FLUSHALL` (a null invalidation) drops them all.
//! - When it breaks (a `CLIENT KILL`, Redis restarting, a PING unanswered
//!   within the store deadline, a Sentinel failover), the cache goes dark at
//!   once, and comes back, empty, only once tracking is on again.
//! - In `default` mode the misses are read over it, so that Redis tracks
//!   what this process holds, and this process's stores go over it too,
//!   answered with the session they leave (`redis.rs`); in `bcast` mode
//!   Redis announces every change under `key_prefix`, and misses and
//!   stores go over the ordinary connection. A
//!   Cluster has one tracking connection per master, in `bcast` mode; when
//!   its masters change, tracking starts again on the new set.
//! - Touches go over it in batches (one transaction of `PEXPIREAT … GT`
//!   and `PTTL` for every touch waiting), off the requests' path; `NOLOOP`
//!   keeps this process's own touches from invalidating its own copies.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, Cmd, ErrorKind, PushInfo, PushKind, RedisError, RedisResult, Value,
};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::cache::{Entry, SessionCache};
use super::link::Link;
use super::sentinel::AbortOnDrop;
use crate::config::TrackingMode;
use futures_util::FutureExt;

use crate::metrics::{Metrics, StoreOp};
use crate::session::store::StoreError;

/// How often the tracking connection is checked with a PING.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// The most touches sent in one pipeline.
const TOUCH_BATCH: usize = 256;
/// How long the first touch of a batch waits for others to join it. Used
/// sessions fall due one by one, and a batch of one costs its transaction's
/// `MULTI` and `EXEC` for a single touch (four commands, not two). A
/// touch's deadline is fixed when it is queued, so the wait moves no
/// expiry.
const TOUCH_GATHER: Duration = Duration::from_millis(100);

/// A stored expiry to push: `PEXPIREAT <key> <deadline_ms> GT`.
pub struct Touch {
    /// The session's key.
    pub key: String,
    /// ms since the epoch.
    pub deadline_ms: u64,
    /// The copy whose deadline follows the push.
    pub entry: Arc<Entry>,
}

impl Touch {
    /// Its two commands: `PEXPIREAT <key> <deadline_ms> GT`, `PTTL <key>`.
    fn add_to(&self, pipeline: &mut redis::Pipeline) {
        pipeline
            .cmd("PEXPIREAT")
            .arg(&self.key)
            .arg(self.deadline_ms)
            .arg("GT")
            .cmd("PTTL")
            .arg(&self.key);
    }

    /// Their replies, sent at `sent_ms`: the `PTTL` is the copy's new
    /// deadline; none (gone, or no longer expiring: an invalidation is on
    /// its way) and the copy is not used again.
    fn answered(&self, sent_ms: u64, replies: &[Value]) {
        match replies.get(1) {
            Some(Value::Int(ttl)) if *ttl > 0 => self.entry.stored_deadline(sent_ms + *ttl as u64),
            _ => self.entry.stored_deadline(0),
        }
    }
}

/// The tracking connection's tasks, ended when this is dropped.
pub struct Tracker {
    shared: Arc<Shared>,
    touches: mpsc::UnboundedSender<Touch>,
    _tasks: [AbortOnDrop; 2],
}

struct Shared {
    cache: Arc<SessionCache>,
    link: Arc<Link>,
    mode: TrackingMode,
    key_prefix: String,
    deadline: Duration,
    /// The connection while tracking is on.
    connection: Mutex<Option<MultiplexedConnection>>,
    /// Where touches are counted: `op="touch"`, one per batch sent (one
    /// round trip; on a Cluster, one per touch).
    metrics: Arc<Metrics>,
}

impl Shared {
    fn connection(&self) -> Option<MultiplexedConnection> {
        self.connection
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_connection(&self, connection: Option<MultiplexedConnection>) {
        *self.connection.lock().unwrap_or_else(|p| p.into_inner()) = connection;
    }
}

impl Tracker {
    /// Starts tracking for `cache` (it stays dark until tracking is on).
    /// Must run inside the runtime.
    pub fn start(
        cache: Arc<SessionCache>,
        link: Arc<Link>,
        mode: TrackingMode,
        key_prefix: String,
        deadline: Duration,
        metrics: Arc<Metrics>,
    ) -> Tracker {
        let shared = Arc::new(Shared {
            cache,
            link,
            mode,
            key_prefix,
            deadline,
            connection: Mutex::new(None),
            metrics,
        });
        let (touches, waiting) = mpsc::unbounded_channel();
        Tracker {
            _tasks: [
                AbortOnDrop(tokio::spawn(track(shared.clone()))),
                AbortOnDrop(tokio::spawn(push_touches(shared.clone(), waiting))),
            ],
            shared,
            touches,
        }
    }

    /// Sends one command over the tracking connection (a miss or a store,
    /// in `default` mode); an error when tracking is not on.
    pub async fn query(&self, cmd: &Cmd) -> RedisResult<Value> {
        let Some(mut connection) = self.shared.connection() else {
            return Err(RedisError::from((
                ErrorKind::Io,
                "the tracking connection is down",
            )));
        };
        cmd.query_async(&mut connection).await
    }

    /// Whether misses are read over the tracking connection.
    pub fn reads_misses(&self) -> bool {
        self.shared.mode == TrackingMode::Default
    }

    /// Queues a touch; it goes out with the next batch.
    pub fn touch(&self, touch: Touch) {
        let _ = self.touches.send(touch);
    }
}

/// Keeps a tracking connection up for as long as the store lives: connect,
/// turn tracking on, apply pushes; on any failure the cache goes dark and
/// it starts again after a short, growing pause.
async fn track(shared: Arc<Shared>) {
    let mut pause = Duration::from_millis(50);
    loop {
        match tracked(&shared).await {
            Ok(()) => pause = Duration::from_millis(50),
            Err(error) => {
                warn!(%error, "session cache: tracking connection failed; the cache is off until it is back");
                pause = (pause * 2).min(Duration::from_secs(1));
            }
        }
        shared.cache.go_dark();
        shared.set_connection(None);
        tokio::time::sleep(pause).await;
    }
}

/// `call` under the store deadline.
async fn within<T>(
    deadline: Duration,
    call: impl Future<Output = RedisResult<T>>,
) -> RedisResult<T> {
    tokio::time::timeout(deadline, call)
        .await
        .map_err(|_| RedisError::from((ErrorKind::Io, "no answer within the store deadline")))?
}

/// One tracking session, from connecting until a connection breaks: one
/// connection per node that holds sessions (one, or each Cluster master).
async fn tracked(shared: &Shared) -> RedisResult<()> {
    let deadline = shared.deadline;
    let nodes = within(deadline, shared.link.session_nodes()).await?;
    // Pushes are applied where they arrive, in the connection's own task: a
    // broken connection darkens the cache before anything else runs, and an
    // invalidation drops its copy without waiting for this task's turn.
    let (lost, mut lost_seen) = mpsc::unbounded_channel::<()>();
    let current = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let flag = current.clone();
    let (cache, prefix) = (shared.cache.clone(), shared.key_prefix.clone());
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(deadline))
        .set_response_timeout(None)
        .set_push_sender(move |push: PushInfo| {
            // A connection of an earlier round, closing late, darkens nothing.
            if flag.load(std::sync::atomic::Ordering::Acquire) && !apply(&cache, &prefix, &push) {
                cache.go_dark();
                let _ = lost.send(());
            }
            Ok::<(), ()>(())
        });
    let mut on = redis::cmd("CLIENT");
    on.arg("TRACKING").arg("ON");
    if shared.mode == TrackingMode::Bcast {
        on.arg("BCAST").arg("PREFIX").arg(&shared.key_prefix);
    }
    on.arg("NOLOOP");
    let mut connections = Vec::with_capacity(nodes.clients.len());
    // Declared after the connections, so dropped before them.
    let _current = Current(current);
    for client in &nodes.clients {
        let mut connection = within(
            deadline,
            client.get_multiplexed_async_connection_with_config(&config),
        )
        .await?;
        within(deadline, on.query_async::<()>(&mut connection)).await?;
        connections.push(connection);
    }
    // Misses and touches go over it when it is the only one.
    if let [connection] = &connections[..] {
        shared.set_connection(Some(connection.clone()));
    }
    shared.cache.go_live();
    info!(mode = ?shared.mode, nodes = connections.len(), "session cache: tracking on");
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = lost_seen.recv() => {
                warn!("session cache: tracking connection lost; the cache is off until it is back");
                return Ok(());
            }
            _ = heartbeat.tick() => {
                for connection in &mut connections {
                    within(deadline, redis::cmd("PING").query_async::<()>(connection)).await?;
                }
                if !within(deadline, shared.link.still_holds(&nodes)).await? {
                    info!("session cache: the sessions moved to other nodes; tracking those");
                    return Ok(());
                }
            }
        }
    }
}

/// Marks a tracking round over when its connections are dropped.
struct Current(Arc<std::sync::atomic::AtomicBool>);

impl Drop for Current {
    fn drop(&mut self) {
        self.0.store(false, std::sync::atomic::Ordering::Release);
    }
}

/// Applies one push to the cache; false when it says the connection is gone.
fn apply(cache: &SessionCache, key_prefix: &str, push: &PushInfo) -> bool {
    match push.kind {
        PushKind::Disconnection => false,
        PushKind::Invalidate => {
            for value in &push.data {
                match value {
                    Value::Array(keys) => {
                        for key in keys {
                            if let Value::BulkString(key) = key
                                && let Some(sid) = key.strip_prefix(key_prefix.as_bytes())
                                && let Ok(sid) = std::str::from_utf8(sid)
                            {
                                cache.invalidate(sid);
                            }
                        }
                    }
                    // Every key at once: FLUSHALL, FLUSHDB, or the tracking table overflowing.
                    Value::Nil => cache.flush(),
                    other => debug!(?other, "session cache: an invalidation of an unknown shape"),
                }
            }
            true
        }
        _ => true,
    }
}

/// Sends the touches waiting, gathered for [`TOUCH_GATHER`], each batch one
/// `MULTI … EXEC` over the tracking connection: `PEXPIREAT <key> <deadline>
/// GT` then `PTTL <key>` per touch. The `PTTL` matters in `default` mode: a write by the tracking
/// connection itself (`NOLOOP`) is not announced to it, but Redis stops
/// tracking that key for it all the same; the read right behind it, in the
/// same transaction so that no other write falls between, tracks it again.
/// Its answer is the copy's new deadline.
async fn push_touches(shared: Arc<Shared>, mut waiting: mpsc::UnboundedReceiver<Touch>) {
    let mut batch = Vec::with_capacity(TOUCH_BATCH);
    while waiting.recv_many(&mut batch, TOUCH_BATCH).await > 0 {
        if batch.len() < TOUCH_BATCH {
            tokio::time::sleep(TOUCH_GATHER).await;
            while batch.len() < TOUCH_BATCH
                && let Ok(touch) = waiting.try_recv()
            {
                batch.push(touch);
            }
        }
        if shared.link.is_cluster() && shared.cache.is_live() {
            push_cluster_touches(&shared, &batch).await;
        } else if let Some(mut connection) = shared.connection() {
            let mut transaction = redis::pipe();
            transaction.atomic();
            for touch in &batch {
                touch.add_to(&mut transaction);
            }
            let sent_ms = super::epoch_ms();
            let sent = transaction.query_async::<Vec<Value>>(&mut connection);
            match touch_request(&shared, sent).await {
                Ok(replies) => {
                    for (touch, replies) in batch.iter().zip(replies.chunks(2)) {
                        touch.answered(sent_ms, replies);
                    }
                }
                Err(error) => debug!(%error, "session cache: touches failed"),
            }
        }
        // Without tracking the cache is dark: those copies are gone anyway.
        batch.clear();
    }
}

/// One request of touches under the store deadline, counted in
/// `sessiongate_store_requests_total{op="touch"}` with its outcome.
fn touch_request<'a, T: 'a>(
    shared: &'a Shared,
    call: impl Future<Output = RedisResult<T>> + 'a,
) -> impl Future<Output = Result<T, StoreError>> + 'a {
    let call = call.map(|answer| answer.map_err(StoreError::from));
    let call = super::under_deadline("the cache's touches", shared.deadline, call);
    shared.metrics.timed(StoreOp::Touch, call)
}

/// On a Cluster, where every key may live on another master, each touch is
/// its own `PEXPIREAT`, `PTTL` pipeline over the ordinary connection, all at
/// once. (Its invalidation reaches this process too: `NOLOOP` covers only
/// the tracking connections' own writes.)
async fn push_cluster_touches(shared: &Shared, batch: &[Touch]) {
    let touches = batch.iter().map(|touch| async move {
        let mut pipeline = redis::pipe();
        touch.add_to(&mut pipeline);
        let sent_ms = super::epoch_ms();
        match touch_request(shared, shared.link.query_all(&pipeline)).await {
            Ok(replies) => touch.answered(sent_ms, &replies),
            Err(error) => debug!(%error, "session cache: a touch failed"),
        }
    });
    futures_util::future::join_all(touches).await;
}

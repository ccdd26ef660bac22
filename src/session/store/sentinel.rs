//! `kind = "sentinel"` (SPEC §10): the master that Redis Sentinel names,
//! followed across failovers. redis-rs resolves a master once and then keeps
//! talking to that address (its issue #1438), so this module does the
//! following itself:
//!
//! - the master is asked of the sentinels, one after the other, on first
//!   use, and the answer is checked with `ROLE`;
//! - it is asked again after a connection error, a call that never
//!   finished (the store deadline dropped it), a `READONLY` answer (the old
//!   master came back as a replica), or a `+switch-master` event, which a
//!   background task subscribes to on one sentinel at a time;
//! - a call that `READONLY` refused was not run, so it goes once more to
//!   the new master; nothing else is sent twice.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::io::tcp::TcpSettings;
use redis::{
    AsyncConnectionConfig, Cmd, ConnectionInfo, ErrorKind, IntoConnectionInfo, Pipeline,
    RedisError, RedisResult, ServerErrorKind, Value,
};
use tracing::{info, warn};

use super::StoreError;
use super::link::Access;
use crate::config::StoreConfig;

/// The current master of one Sentinel-watched group.
pub(super) struct SentinelLink {
    shared: Arc<Shared>,
}

struct Shared {
    /// The sentinels, with their own credentials (from their URLs).
    sentinels: Vec<ConnectionInfo>,
    /// The master's name, as the sentinels know it.
    name: String,
    db: i64,
    /// Whether the master is reached over TLS.
    tls: bool,
    access: Access,
    /// Bounds connecting to a sentinel or a master.
    deadline: Duration,
    current: Mutex<Option<Master>>,
    /// One resolution at a time; the callers waiting on it share its answer.
    resolving: tokio::sync::Mutex<()>,
    generations: AtomicU64,
    /// The `+switch-master` subscription, started on first use.
    watcher: OnceLock<AbortOnDrop>,
}

#[derive(Clone)]
struct Master {
    generation: u64,
    address: String,
    /// How to reach it, for a connection of another's (the cache's tracking).
    info: ConnectionInfo,
    connection: MultiplexedConnection,
    /// When it last answered anything, in ms of [`clock_ms`].
    last_answer: Arc<AtomicU64>,
}

/// Milliseconds on a monotonic clock that starts with the first call.
fn clock_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

impl SentinelLink {
    pub(super) fn new(
        config: &StoreConfig,
        access: Access,
        deadline: Duration,
    ) -> Result<SentinelLink, StoreError> {
        let sentinels = config
            .sentinels
            .iter()
            .map(|url| {
                let info = url
                    .as_str()
                    .into_connection_info()?
                    .set_tcp_settings(TcpSettings::default().set_nodelay(true));
                Ok(access.with_tls(info))
            })
            .collect::<Result<Vec<_>, RedisError>>()?;
        Ok(SentinelLink {
            shared: Arc::new(Shared {
                sentinels,
                name: config.master.clone(),
                db: config.db,
                tls: access.forces_tls()
                    || config.sentinels.iter().any(|u| u.starts_with("rediss://")),
                access,
                deadline,
                current: Mutex::new(None),
                resolving: tokio::sync::Mutex::new(()),
                generations: AtomicU64::new(0),
                watcher: OnceLock::new(),
            }),
        })
    }

    /// Sends one command to the master.
    pub(super) async fn query(&self, cmd: &Cmd) -> RedisResult<Value> {
        let mut retried = false;
        loop {
            let master = self.shared.master().await?;
            let mut call = Call::new(&self.shared, &master);
            let result = cmd.query_async(&mut master.connection.clone()).await;
            match &result {
                Err(error) if is_read_only(error) => {
                    call.demoted();
                    if !retried {
                        retried = true;
                        continue;
                    }
                }
                Err(error) => call.failed(error),
                Ok(_) => call.answered(),
            }
            return result;
        }
    }

    /// A client for the current master (resolved if need be) and the
    /// generation it belongs to: while [`generation`](Self::generation)
    /// still says the same, it is the master.
    pub(super) async fn master_client(&self) -> RedisResult<(redis::Client, u64)> {
        let master = self.shared.master().await?;
        Ok((self.shared.access.client(master.info)?, master.generation))
    }

    /// The generation of the master in use; `None` once it was left.
    pub(super) fn generation(&self) -> Option<u64> {
        self.shared.current().map(|m| m.generation)
    }

    /// Sends a pipeline to the master in one round trip.
    pub(super) async fn query_all(&self, pipeline: &Pipeline) -> RedisResult<Vec<Value>> {
        let mut retried = false;
        loop {
            let master = self.shared.master().await?;
            let mut call = Call::new(&self.shared, &master);
            let result = master
                .connection
                .clone()
                .req_packed_commands(pipeline, 0, pipeline.len())
                .await;
            match &result {
                Ok(replies) if replies.first().is_some_and(value_is_read_only) => {
                    call.demoted();
                    if !retried {
                        retried = true;
                        continue;
                    }
                }
                Ok(_) => call.answered(),
                Err(error) => call.failed(error),
            }
            return result;
        }
    }
}

/// One call on a master: unless it finishes with an answer from a master,
/// that master is forgotten, so the next call asks the sentinels again.
/// Dropping it unfinished (the store deadline passed) forgets it too, when
/// the master has not answered anything for a whole deadline: a master
/// that answers slowly (calls queued behind a `WAIT`) is kept, one that has
/// gone silent (a network cut) is left.
struct Call<'a> {
    shared: &'a Shared,
    generation: u64,
    last_answer: &'a AtomicU64,
    finished: bool,
}

impl<'a> Call<'a> {
    fn new(shared: &'a Shared, master: &'a Master) -> Call<'a> {
        Call {
            shared,
            generation: master.generation,
            last_answer: &master.last_answer,
            finished: false,
        }
    }

    /// The master answered.
    fn answered(&mut self) {
        self.finished = true;
        self.last_answer.store(clock_ms(), Ordering::Relaxed);
    }

    /// It answered READONLY: it is a replica now.
    fn demoted(&mut self) {
        self.finished = true;
        self.shared.forget(Some(self.generation));
    }

    /// The call failed: the master is left if the error says it is gone or
    /// no longer the master.
    fn failed(&mut self, error: &RedisError) {
        let lost = error.is_io_error()
            || error.is_connection_dropped()
            || error.is_connection_refusal()
            || error.is_timeout()
            || matches!(
                error.kind(),
                ErrorKind::Server(ServerErrorKind::ReadOnly | ServerErrorKind::MasterDown)
            );
        if lost {
            self.demoted();
        } else {
            self.answered();
        }
    }
}

impl Drop for Call<'_> {
    fn drop(&mut self) {
        let silent_for = clock_ms().saturating_sub(self.last_answer.load(Ordering::Relaxed));
        if !self.finished && silent_for >= self.shared.deadline.as_millis() as u64 {
            self.shared.forget(Some(self.generation));
        }
    }
}

fn is_read_only(error: &RedisError) -> bool {
    error.kind() == ErrorKind::Server(ServerErrorKind::ReadOnly)
        || error.to_string().contains("READONLY")
}

fn value_is_read_only(value: &Value) -> bool {
    matches!(value, Value::ServerError(e) if e.kind() == Some(ServerErrorKind::ReadOnly)
        || e.details().is_some_and(|d| d.contains("READONLY")))
}

impl Shared {
    fn current(&self) -> Option<Master> {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Drops the master in use (only if it is still `generation`, when
    /// given), so that the next call resolves it anew.
    fn forget(&self, generation: Option<u64>) {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(master) = &*current
            && generation.is_none_or(|g| g == master.generation)
        {
            warn!(master = %master.address, name = %self.name, "leaving this Redis master; asking the sentinels again");
            *current = None;
        }
    }

    /// The master in use, or a newly resolved one.
    async fn master(self: &Arc<Self>) -> RedisResult<Master> {
        self.watcher
            .get_or_init(|| AbortOnDrop(tokio::spawn(watch(Arc::downgrade(self)))));
        if let Some(master) = self.current() {
            return Ok(master);
        }
        let _resolving = self.resolving.lock().await;
        if let Some(master) = self.current() {
            return Ok(master);
        }
        // Boxed: asking the sentinels and connecting is kilobytes of state
        // that every store call's future would carry, and it is rare.
        let master = Box::pin(self.resolve()).await?;
        info!(master = %master.address, name = %self.name, "using the Redis master the sentinels name");
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(master.clone());
        Ok(master)
    }

    /// Asks each sentinel in turn for the master and connects to the first
    /// answer that `ROLE` confirms.
    async fn resolve(&self) -> RedisResult<Master> {
        let mut last_error = None;
        for sentinel in &self.sentinels {
            match self.resolve_with(sentinel).await {
                Ok(master) => return Ok(master),
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or_else(|| (ErrorKind::InvalidClientConfig, "no sentinels").into()))
    }

    async fn resolve_with(&self, sentinel: &ConnectionInfo) -> RedisResult<Master> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.deadline))
            .set_response_timeout(Some(self.deadline));
        let mut asking = self
            .access
            .client(sentinel.clone())?
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let address: Option<(String, u16)> = redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(&self.name)
            .query_async(&mut asking)
            .await?;
        let Some((host, port)) = address else {
            return Err((
                ErrorKind::InvalidClientConfig,
                "the sentinel knows no master of this name",
                self.name.clone(),
            )
                .into());
        };
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        let scheme = if self.tls { "rediss" } else { "redis" };
        let url = format!("{scheme}://{host}:{port}/{}", self.db);
        let info = self.access.node_info(&url).map_err(|e| {
            RedisError::from((ErrorKind::InvalidClientConfig, "master", e.to_string()))
        })?;
        let mut connection = self
            .access
            .client(info.clone())?
            .get_multiplexed_async_connection_with_config(
                &AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(self.deadline))
                    .set_response_timeout(None),
            )
            .await?;
        let role: Vec<Value> = redis::cmd("ROLE").query_async(&mut connection).await?;
        let is_master = matches!(role.first(), Some(Value::BulkString(r)) if r == b"master")
            || matches!(role.first(), Some(Value::SimpleString(r)) if r == "master");
        if !is_master {
            return Err((
                ErrorKind::Server(ServerErrorKind::ReadOnly),
                "the node the sentinel names is not a master yet",
                format!("{host}:{port}"),
            )
                .into());
        }
        Ok(Master {
            generation: self.generations.fetch_add(1, Ordering::Relaxed),
            address: format!("{host}:{port}"),
            info,
            connection,
            last_answer: Arc::new(AtomicU64::new(clock_ms())),
        })
    }
}

/// Listens for `+switch-master` of this master's name on one sentinel after
/// the other, and forgets the master when it moves. Ends with the store.
async fn watch(shared: Weak<Shared>) {
    let mut turn = 0usize;
    loop {
        let Some((sentinel, name, access, deadline)) = shared.upgrade().map(|s| {
            let sentinel = s.sentinels[turn % s.sentinels.len()].clone();
            (sentinel, s.name.clone(), s.access.clone(), s.deadline)
        }) else {
            return;
        };
        turn += 1;
        let subscribed = async {
            let mut pubsub =
                tokio::time::timeout(deadline, access.client(sentinel)?.get_async_pubsub())
                    .await
                    .map_err(|_| {
                        RedisError::from((ErrorKind::Io, "sentinel connect timed out"))
                    })??;
            pubsub.subscribe("+switch-master").await?;
            Ok::<_, RedisError>(pubsub)
        };
        if let Ok(mut pubsub) = subscribed.await {
            let mut messages = pubsub.on_message();
            while let Some(message) = messages.next().await {
                let payload: String = message.get_payload().unwrap_or_default();
                if payload.split(' ').next() == Some(name.as_str()) {
                    let Some(shared) = shared.upgrade() else {
                        return;
                    };
                    info!(event = %payload, "sentinel: +switch-master");
                    shared.forget(None);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A task that ends when this is dropped.
pub(super) struct AbortOnDrop(pub(super) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

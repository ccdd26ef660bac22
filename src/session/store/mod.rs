//! Session storage (SPEC §5, §6, §10): the four operations sessiongate
//! needs, the TTL policy they share, their two implementations, and the one
//! deadline every Redis call runs under.
//!
//! - `redis.rs`: the session logic in Redis (Lua scripts, `WAIT`), written
//!   once over a [`link::Link`];
//! - `link.rs`: the connection, whatever the topology: one node, a master
//!   found through Sentinel (`sentinel.rs`, which follows failovers), or a
//!   Cluster;
//! - `memory.rs`: the same semantics in this process's memory;
//! - `users.rs`: the per-user index of bound sessions (SPEC §12), which
//!   lists and revokes a user's sessions on either store;
//! - `cache.rs` and `tracking.rs`: with `[store.cache]` (SPEC §11), hot
//!   sessions served from this process's memory, kept coherent by Redis's
//!   `CLIENT TRACKING`.
//!
//! Every operation touches one key, so one Cluster slot: a session, or one
//! user's index.

mod cache;
mod link;
mod memory;
mod redis;
mod sentinel;
mod tracking;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::FutureExt;
use futures_util::future::BoxFuture;

pub use self::memory::MemoryStore;
pub use self::redis::RedisStore;
pub use self::redis::users::{BoundSession, USER_FIELD, valid_user};
use super::codec::Changes;
use super::cookie::Sid;
use crate::config::{StoreConfig, StoreKind};
use crate::metrics::Metrics;

/// How long sessions live and how large they may grow.
#[derive(Debug, Clone, Copy)]
pub struct SessionPolicy {
    /// Sliding expiry: every use pushes it forward.
    pub idle: Duration,
    /// Hard cap from creation, never extended.
    pub absolute: Duration,
    /// The largest session, in bytes of its `X-Session` text.
    pub max_bytes: usize,
}

impl SessionPolicy {
    /// The time to live of a session created at `created_ms`, seen at
    /// `now_ms` (both ms since the epoch): `idle` from now, never past the
    /// absolute deadline. `None` once that deadline has passed.
    pub fn ttl_ms(&self, created_ms: u64, now_ms: u64) -> Option<u64> {
        let deadline = created_ms.saturating_add(self.absolute.as_millis() as u64);
        (deadline > now_ms).then(|| (self.idle.as_millis() as u64).min(deadline - now_ms))
    }
}

/// Milliseconds since the Unix epoch, by the wall clock (what session
/// creation times and expiries are counted in).
pub fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A session as [`SessionStore::load`] finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// Its `X-Session` text.
    pub json: bytes::Bytes,
    /// Its creation time, ms since the epoch (its absolute deadline is
    /// this plus `absolute_timeout`).
    pub created_ms: u64,
    /// The user it is bound to (`__user`, SPEC §12), if any.
    pub user: Option<String>,
    /// It carries `__persist`: its cookie is persistent.
    pub persist: bool,
}

/// The metadata field that makes a session's cookie persistent.
pub const PERSIST_FIELD: &str = "__persist";

/// A session taken out of the store (see [`SessionStore::take`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TakenSession {
    /// Its fields: key and JSON text, metadata left out but `__user`.
    pub fields: BTreeMap<String, String>,
    /// Its creation time, ms since the epoch.
    pub created_ms: u64,
}

/// How [`SessionStore::save`] treats the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveMode {
    /// A new session under a fresh sid; `created_ms` carries a rotated
    /// session's creation time (its absolute deadline does not move).
    Create {
        /// ms since the epoch; `None` means now.
        created_ms: Option<u64>,
    },
    /// Changes to an existing session, applied only if it still exists and
    /// the result fits `max_bytes`.
    Update,
}

/// What [`SessionStore::save`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Saved {
    /// Stored.
    Stored,
    /// The session no longer exists (destroyed, expired, rotated away):
    /// nothing was stored, and it was not brought back.
    Gone,
    /// A create found the key taken; nothing was stored.
    Exists,
    /// The session would grow past `max_bytes`; nothing was stored.
    TooLarge {
        /// The size it would have had.
        size: usize,
    },
}

/// A store call that failed: the store is down, slow or answered nonsense.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No answer within the store deadline.
    #[error(transparent)]
    Timeout(#[from] crate::timeouts::Elapsed),
    /// Redis reported an error, or the connection failed.
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    /// Redis answered something sessiongate's scripts never return.
    #[error("unexpected reply: {0}")]
    Protocol(String),
    /// A write reached the master but not `wait_replicas` replicas in time.
    #[error("the write reached {reached} of the {wanted} replicas wanted in time")]
    Replication {
        /// Replicas that confirmed it.
        reached: u64,
        /// `store.wait_replicas`.
        wanted: u32,
    },
    /// The store could not be set up from its configuration (an unreadable
    /// certificate file, say).
    #[error("{0}")]
    Setup(String),
}

/// The operations sessiongate performs on sessions. Each is one store round
/// trip and touches one key.
pub trait SessionStore {
    /// Loads a session's `X-Session` text (and its creation time and
    /// `__user` and `__persist`) and pushes its expiry forward; `None` when there is no
    /// live session under this sid.
    fn load(&self, sid: &Sid) -> impl Future<Output = Result<Option<Loaded>, StoreError>> + Send;

    /// Stores one response's changes atomically (see [`SaveMode`]).
    fn save(
        &self,
        sid: &Sid,
        mode: SaveMode,
        changes: &Changes,
    ) -> impl Future<Output = Result<Saved, StoreError>> + Send;

    /// Removes a session and returns what it held, atomically.
    fn take(
        &self,
        sid: &Sid,
    ) -> impl Future<Output = Result<Option<TakenSession>, StoreError>> + Send;

    /// Deletes a session.
    fn destroy(&self, sid: &Sid) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// The configured store, with the deadline that bounds every Redis call
/// (the memory store answers at once). Every call is dispatched in one
/// place, [`dispatch!`]; a new backend (a cache in front of Redis, say) is
/// one more [`Backend`] variant.
pub struct Store {
    backend: Backend,
    deadline: Duration,
    /// What it talks to, for logs; never a password.
    target: String,
}

enum Backend {
    Redis(Box<RedisStore>),
    Memory(MemoryStore),
}

/// Runs one call on whichever backend is configured: a Redis call under the
/// store deadline, a memory call as it is.
macro_rules! dispatch {
    ($store:expr, $backend:ident => $call:expr) => {
        match &$store.backend {
            Backend::Redis($backend) => $store.within($call).await,
            Backend::Memory($backend) => $call.await,
        }
    };
}

/// `call` under the store deadline: past it, a [`StoreError::Timeout`]
/// naming `what`.
fn under_deadline<T>(
    what: &'static str,
    deadline: Duration,
    call: impl Future<Output = Result<T, StoreError>>,
) -> impl Future<Output = Result<T, StoreError>> {
    crate::timeouts::within(what, deadline, call)
        .map(|result| result.unwrap_or_else(|elapsed| Err(elapsed.into())))
}

impl Store {
    /// Opens the store the configuration names, every Redis call bounded by
    /// `deadline`. A Redis store connects lazily: sessiongate starts, and
    /// recovers, while Redis is down.
    pub fn open(
        config: &StoreConfig,
        policy: SessionPolicy,
        deadline: Duration,
    ) -> Result<Store, StoreError> {
        let backend = match config.kind {
            StoreKind::Memory => Backend::Memory(MemoryStore::new(policy)),
            _ => Backend::Redis(Box::new(RedisStore::open(config, policy, deadline)?)),
        };
        Ok(Store {
            backend,
            deadline,
            target: config.target(),
        })
    }

    /// What the store talks to: its kind and its nodes, sentinels or URL,
    /// without any password (for the log line when it does not answer).
    pub fn describe(&self) -> String {
        self.target.clone()
    }

    /// Runs one store call under the store deadline: the one place it is
    /// enforced, reconnecting and failover included.
    /// Boxed, so that the futures of the Redis client stay on the heap: a
    /// request's future holds a pointer, and is as small with a Redis store
    /// as with the memory store (hyper moves it whole into its slot).
    fn within<'a, T: 'a>(
        &self,
        call: impl Future<Output = Result<T, StoreError>> + Send + 'a,
    ) -> BoxFuture<'a, Result<T, StoreError>> {
        under_deadline("a session store call", self.deadline, call).boxed()
    }

    /// The session of `sid` from this process's cache (`[store.cache]`),
    /// without a round trip; `None` on a miss, or without a cache.
    pub fn cached(&self, sid: &Sid) -> Option<Loaded> {
        match &self.backend {
            Backend::Redis(r) => r.cached(sid),
            Backend::Memory(_) => None,
        }
    }

    /// Whether `[store.cache]` is on (lookups are counted).
    pub fn caches(&self) -> bool {
        matches!(&self.backend, Backend::Redis(r) if r.caches())
    }

    /// Counts what the store sends of itself, the cache's touches, in
    /// `metrics`.
    pub fn count_in(&self, metrics: &Arc<Metrics>) {
        if let Backend::Redis(r) = &self.backend {
            r.count_in(metrics);
        }
    }

    /// Checks that the store answers (used at start, to warn early).
    pub async fn ping(&self) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Redis(r) => self.within(r.ping()).await,
            Backend::Memory(_) => Ok(()),
        }
    }
}

impl SessionStore for Store {
    async fn load(&self, sid: &Sid) -> Result<Option<Loaded>, StoreError> {
        dispatch!(self, s => s.load(sid))
    }

    async fn save(
        &self,
        sid: &Sid,
        mode: SaveMode,
        changes: &Changes,
    ) -> Result<Saved, StoreError> {
        dispatch!(self, s => s.save(sid, mode, changes))
    }

    async fn take(&self, sid: &Sid) -> Result<Option<TakenSession>, StoreError> {
        dispatch!(self, s => s.take(sid))
    }

    async fn destroy(&self, sid: &Sid) -> Result<(), StoreError> {
        dispatch!(self, s => s.destroy(sid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_is_idle_until_the_absolute_deadline_caps_it() {
        let policy = SessionPolicy {
            idle: Duration::from_secs(30),
            absolute: Duration::from_secs(100),
            max_bytes: 100,
        };
        assert_eq!(policy.ttl_ms(0, 0), Some(30_000));
        assert_eq!(policy.ttl_ms(0, 80_000), Some(20_000));
        assert_eq!(policy.ttl_ms(0, 99_999), Some(1));
        assert_eq!(policy.ttl_ms(0, 100_000), None);
    }
}

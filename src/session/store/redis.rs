//! The Redis store (SPEC §6): one HASH per session at `<key_prefix><sid>`,
//! one field per top-level key holding its JSON text, `__created` metadata,
//! and a TTL on every key. Reads and writes are Lua scripts (sent as EVALSHA)
//! so that the TTL policy lives in one place and "update only if the session
//! still exists" is atomic. Every call is one command on one key, so one
//! Cluster slot, sent through a [`Link`] that hides the topology.
//!
//! With `wait_replicas = N`, each write goes out in one round trip with a
//! `WAIT N <timeout>` behind it (so on a Cluster it reaches the node that
//! holds the key), and counts only once N replicas confirm it.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use redis::{
    Arg, Cmd, ErrorKind, FromRedisValue, RedisError, RedisResult, RedisWrite, Script,
    ServerErrorKind, ToRedisArgs, Value,
};
use tracing::debug;

// The user index (SPEC §12) sits beside this file but is this module's
// child: it runs its scripts through the same `script`/`write` (NOSCRIPT,
// WAIT) without widening their visibility.
#[path = "users.rs"]
pub(super) mod users;

use self::users::USER_FIELD;
use super::cache::{Entry, SessionCache};
use super::link::Link;
use super::tracking::{Touch, Tracker};
use super::{
    Loaded, PERSIST_FIELD, SaveMode, Saved, SessionPolicy, SessionStore, StoreError, TakenSession,
    epoch_ms,
};
use crate::config::{CacheConfig, StoreConfig};
use crate::metrics::Metrics;
use crate::session::codec::{Changes, META_PREFIX, encode_session};
use crate::session::cookie::Sid;

/// Sessions in Redis.
pub struct RedisStore {
    link: Arc<Link>,
    /// With `wait_replicas`: the connection that writes and their `WAIT`s
    /// go over, so that a `WAIT` left waiting (a replica is missing) holds
    /// up other writes only, never a load.
    writes: Option<Link>,
    key_prefix: String,
    policy: SessionPolicy,
    /// `WAIT`'s arguments for every write, when `wait_replicas > 0`.
    wait: Option<Wait>,
    load: Lua,
    save: Lua,
    take: Lua,
    /// The cache's read, which pushes no expiry.
    peek: Lua,
    /// With `[store.cache]`.
    cache: Option<Cached>,
}

/// The session cache and its tracking connection, started on first use
/// (inside the runtime).
struct Cached {
    cache: Arc<SessionCache>,
    config: CacheConfig,
    deadline: Duration,
    tracker: OnceLock<Tracker>,
    /// Where the tracker counts its touches (set by [`RedisStore::count_in`]
    /// before the tracker starts; uncounted otherwise).
    metrics: OnceLock<Arc<Metrics>>,
}

/// `WAIT <replicas> <timeout_ms>`.
#[derive(Debug, Clone, Copy)]
struct Wait {
    replicas: u32,
    timeout_ms: u64,
}

/// A session's key, `<key_prefix><sid>`, written straight into a command.
struct SessionKey<'a>(&'a str, &'a Sid);

impl fmt::Display for SessionKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)?;
        f.write_str(self.1.as_str())
    }
}

impl ToRedisArgs for SessionKey<'_> {
    fn write_redis_args<W: ?Sized + RedisWrite>(&self, out: &mut W) {
        out.write_arg_fmt(self);
    }
}

/// One of the Lua scripts, called as `EVALSHA <sha> 1 <key> <args…>`; when
/// the node answers NOSCRIPT (after a restart, or a replica just promoted),
/// the same call goes again as `EVAL <source> …`, which routes by the same
/// key and leaves the script cached on that node.
struct Lua {
    source: &'static str,
    sha: String,
}

impl Lua {
    fn new(source: &'static str) -> Lua {
        Lua {
            source,
            sha: Script::new(source).get_hash().to_string(),
        }
    }

    /// `EVALSHA` of this script for one key; add the arguments to it.
    fn call(&self, key: SessionKey<'_>) -> Cmd {
        self.call_with_room(key, 4, 0)
    }

    /// [`Lua::call`] with room for `args` more arguments of `bytes` in all,
    /// so that adding them allocates nothing more.
    fn call_with_room(&self, key: SessionKey<'_>, args: usize, bytes: usize) -> Cmd {
        let mut cmd = Cmd::with_capacity(4 + args, 160 + bytes);
        cmd.arg("EVALSHA").arg(&self.sha).arg(1).arg(key);
        cmd
    }

    /// The `EVAL` form of a call made by [`Lua::call`].
    fn eval(&self, call: &Cmd) -> Cmd {
        let mut cmd = Cmd::with_capacity(8, 160 + self.source.len());
        cmd.arg("EVAL").arg(self.source);
        for arg in call.args_iter().skip(2) {
            if let Arg::Simple(bytes) = arg {
                cmd.arg(bytes);
            }
        }
        cmd
    }
}

fn is_noscript(error: &RedisError) -> bool {
    error.kind() == ErrorKind::Server(ServerErrorKind::NoScript)
}

/// `call` of `lua` over the tracking connection, sent again as `EVAL` when
/// the node answers NOSCRIPT.
async fn tracked_script(tracker: &Tracker, lua: &Lua, call: &Cmd) -> RedisResult<Value> {
    match tracker.query(call).await {
        Err(error) if is_noscript(&error) => tracker.query(&lua.eval(call)).await,
        reply => reply,
    }
}

fn decode<T: FromRedisValue>(value: Value) -> Result<T, StoreError> {
    redis::from_redis_value(value).map_err(|e| StoreError::Protocol(e.to_string()))
}

impl RedisStore {
    /// Prepares the connection; it is made on first use and remade after
    /// failures, so sessiongate starts and recovers while Redis is down.
    /// Connecting is bounded by `deadline`; each call is bounded by the
    /// store's own deadline ([`super::Store`]), so redis-rs sets no second
    /// timer per call.
    pub fn open(
        config: &StoreConfig,
        policy: SessionPolicy,
        deadline: Duration,
    ) -> Result<RedisStore, StoreError> {
        Ok(RedisStore {
            link: Arc::new(Link::open(config, deadline)?),
            writes: match config.wait_replicas {
                0 => None,
                _ => Some(Link::open(config, deadline)?),
            },
            key_prefix: config.key_prefix.clone(),
            policy,
            // WAIT answers well before the store deadline drops the call, so
            // a missing replica reads as such, not as a slow store. (A WAIT
            // that waits holds up the calls behind it on that node's
            // multiplexed connection: keep it short.)
            wait: (config.wait_replicas > 0).then(|| Wait {
                replicas: config.wait_replicas,
                timeout_ms: (deadline.as_millis() as u64 / 2).max(1),
            }),
            load: Lua::new(include_str!("scripts/load.lua")),
            save: Lua::new(concat!(
                include_str!("scripts/state.lua"),
                include_str!("scripts/save.lua")
            )),
            take: Lua::new(include_str!("scripts/take.lua")),
            peek: Lua::new(concat!(
                include_str!("scripts/state.lua"),
                include_str!("scripts/peek.lua")
            )),
            cache: config.cache.as_ref().map(|cache| Cached {
                cache: Arc::new(SessionCache::new(
                    cache.max_entries,
                    policy,
                    cache.touch_interval.as_millis() as u64,
                )),
                config: cache.clone(),
                deadline,
                tracker: OnceLock::new(),
                metrics: OnceLock::new(),
            }),
        })
    }

    /// Whether `[store.cache]` is on.
    pub fn caches(&self) -> bool {
        self.cache.is_some()
    }

    /// Counts the cache's touches in `metrics` (the process's; the other
    /// store calls are counted where they are made, in [`crate::session`]).
    pub fn count_in(&self, metrics: &Arc<Metrics>) {
        if let Some(cached) = &self.cache {
            debug_assert!(
                cached.tracker.get().is_none(),
                "counted before the tracker starts"
            );
            let _ = cached.metrics.set(metrics.clone());
        }
    }

    /// The tracker of `cached`, started on first use: the start-up PING,
    /// or the first request that reads or writes a session.
    fn tracker<'a>(&self, cached: &'a Cached) -> &'a Tracker {
        cached.tracker.get_or_init(|| {
            Tracker::start(
                cached.cache.clone(),
                self.link.clone(),
                cached.config.mode,
                self.key_prefix.clone(),
                cached.deadline,
                cached
                    .metrics
                    .get()
                    .cloned()
                    .unwrap_or_else(|| Arc::new(Metrics::new(false))),
            )
        })
    }

    /// The session of `sid` from this process's cache, without a round
    /// trip; its stored expiry is pushed if due (off this call's path).
    pub fn cached(&self, sid: &Sid) -> Option<Loaded> {
        let cached = self.cache.as_ref()?;
        let tracker = self.tracker(cached);
        let (entry, touch) = cached.cache.get(sid.as_str(), epoch_ms())?;
        let loaded = entry.loaded.clone();
        self.touch(tracker, sid, entry, touch);
        Some(loaded)
    }

    fn touch(&self, tracker: &Tracker, sid: &Sid, entry: Arc<Entry>, deadline_ms: Option<u64>) {
        if let Some(deadline_ms) = deadline_ms {
            tracker.touch(Touch {
                key: self.key(sid).to_string(),
                deadline_ms,
                entry,
            });
        }
    }

    /// A write that changes `sid`: this process's copy goes before it is
    /// sent and again once it is answered, so that no read in flight
    /// brings the old session back (read-your-writes on this process).
    async fn changing<T>(&self, sid: &Sid, write: impl Future<Output = T>) -> T {
        let forget = || {
            if let Some(cached) = &self.cache {
                self.tracker(cached);
                cached.cache.invalidate(sid.as_str());
            }
        };
        forget();
        let result = write.await;
        forget();
        result
    }

    /// Where a write can refill this process's copy: with the cache in
    /// `default` mode, on one node (not a Cluster) and without
    /// `wait_replicas`, whose `WAIT`s must not hold up the tracking
    /// connection. (In `bcast` mode Redis 7.0 announces a script's writes
    /// even to the `NOLOOP` connection that ran it, so the refilled copy
    /// would be dropped at once: there a write drops the copy, and the next
    /// read fetches it.)
    fn refills(&self) -> Option<(&Cached, &Tracker)> {
        let cached = self.cache.as_ref()?;
        if self.wait.is_some() || self.link.is_cluster() {
            return None;
        }
        let tracker = self.tracker(cached);
        tracker.reads_misses().then_some((cached, tracker))
    }

    /// A save over the tracking connection (SPEC §11: the writer updates its
    /// own copy first): `NOLOOP` keeps this write from invalidating this
    /// process, the script answers with the session as it left it, and
    /// reading it there tracks the key again. The answer
    /// becomes the copy unless something came between. An error (the
    /// connection broke, or Redis refused) keeps nothing; the caller sends
    /// the write again the ordinary way.
    async fn save_and_refill(
        &self,
        cached: &Cached,
        tracker: &Tracker,
        sid: &Sid,
        ticket: super::cache::Ticket,
        call: &Cmd,
    ) -> Result<Saved, StoreError> {
        let sent_ms = epoch_ms();
        let answered = tracked_script(tracker, &self.save, call)
            .await
            .map_err(StoreError::from)
            .and_then(decode::<Vec<u8>>)
            .and_then(|reply| {
                let (saved, state) = saved(&reply)?;
                let entry = match state.map(|state| peeked(state, self.policy, sent_ms)) {
                    Some(Ok(Peeked::Live(loaded, ttl_ms))) => {
                        Some(Entry::new(loaded, sent_ms, ttl_ms))
                    }
                    _ => None,
                };
                Ok((saved, entry))
            });
        let (saved, entry) = match answered {
            Ok((saved, entry)) => (Ok(saved), entry),
            Err(error) => (Err(error), None),
        };
        cached.cache.finish_write(sid.as_str(), ticket, entry);
        saved
    }

    /// A miss while tracking is on: the session read without pushing its
    /// expiry (in `default` mode over the tracking connection, so that
    /// Redis tracks it), kept unless it changed meanwhile. If the tracking
    /// connection fails under the read, the ordinary load answers.
    async fn load_into_cache(
        &self,
        cached: &Cached,
        tracker: &Tracker,
        sid: &Sid,
        ticket: super::cache::Ticket,
    ) -> Result<Option<Loaded>, StoreError> {
        let read_ms = epoch_ms();
        let call = self.peek.call(self.key(sid));
        let reply = if tracker.reads_misses() {
            match tracked_script(tracker, &self.peek, &call).await {
                Ok(reply) => Ok(reply),
                Err(error) if error.is_unrecoverable_error() || error.is_io_error() => {
                    cached.cache.finish(sid.as_str(), ticket, None, read_ms);
                    return self.load_and_extend(sid).await;
                }
                Err(error) => Err(StoreError::from(error)),
            }
        } else {
            self.script(&self.peek, call).await
        };
        let peeked =
            reply.and_then(|reply| peeked(&decode::<Vec<u8>>(reply)?, self.policy, read_ms));
        let peeked = match peeked {
            Ok(peeked) => peeked,
            Err(error) => {
                cached.cache.finish(sid.as_str(), ticket, None, read_ms);
                return Err(error);
            }
        };
        let (loaded, ttl_ms) = match peeked {
            Peeked::Live(loaded, ttl_ms) => (loaded, ttl_ms),
            Peeked::Missing => {
                cached.cache.finish(sid.as_str(), ticket, None, read_ms);
                return Ok(None);
            }
            // No expiry to trust (someone PERSISTed it): today's load sets one.
            Peeked::Unbounded => {
                cached.cache.finish(sid.as_str(), ticket, None, read_ms);
                return self.load_and_extend(sid).await;
            }
        };
        let entry = Entry::new(loaded, read_ms, ttl_ms);
        let Some((entry, touch)) =
            cached
                .cache
                .finish(sid.as_str(), ticket, Some(entry), epoch_ms())
        else {
            return Ok(None);
        };
        let loaded = entry.loaded.clone();
        self.touch(tracker, sid, entry, touch);
        Ok(Some(loaded))
    }

    /// Today's load, without the cache: the session, its expiry pushed, in
    /// one script call.
    async fn load_and_extend(&self, sid: &Sid) -> Result<Option<Loaded>, StoreError> {
        let mut call = self.load.call(self.key(sid));
        call.arg(self.policy.idle.as_millis() as u64)
            .arg(self.policy.absolute.as_millis() as u64);
        let reply: Vec<u8> = decode(self.script(&self.load, call).await?)?;
        loaded(&reply)
    }

    fn key<'a>(&'a self, sid: &'a Sid) -> SessionKey<'a> {
        SessionKey(&self.key_prefix, sid)
    }

    /// One PING (at start: the cache's tracking starts with it).
    pub async fn ping(&self) -> Result<(), StoreError> {
        if let Some(cached) = &self.cache {
            self.tracker(cached);
        }
        Ok(self.link.ping().await?)
    }

    /// Runs a script call as it is (no `WAIT`).
    async fn script(&self, lua: &Lua, call: Cmd) -> Result<Value, StoreError> {
        match self.link.query(&call).await {
            Err(error) if is_noscript(&error) => Ok(self.link.query(&lua.eval(&call)).await?),
            result => Ok(result?),
        }
    }

    /// Runs a command that changes the store: with `wait_replicas`, in one
    /// round trip with its `WAIT`, and an error unless enough replicas
    /// confirm it. `lua` is the script `call` runs, if it runs one.
    async fn write(&self, lua: Option<&Lua>, call: Cmd) -> Result<Value, StoreError> {
        let Some(wait) = self.wait else {
            return match lua {
                Some(lua) => self.script(lua, call).await,
                None => Ok(self.link.query(&call).await?),
            };
        };
        let mut answered = self.write_and_wait(&call, wait).await?;
        if let (Some(lua), (Err(error), _)) = (lua, &answered)
            && is_noscript(error)
        {
            answered = self.write_and_wait(&lua.eval(&call), wait).await?;
        }
        let (reply, reached) = answered;
        let reply = reply?;
        if reached < u64::from(wait.replicas) {
            return Err(StoreError::Replication {
                reached,
                wanted: wait.replicas,
            });
        }
        Ok(reply)
    }

    /// `call` and `WAIT` in one pipeline: the call's reply, and how many
    /// replicas confirmed it.
    async fn write_and_wait(
        &self,
        call: &Cmd,
        wait: Wait,
    ) -> Result<(Result<Value, RedisError>, u64), StoreError> {
        let mut pipeline = redis::pipe();
        pipeline
            .add_command(call.clone())
            .cmd("WAIT")
            .arg(wait.replicas)
            .arg(wait.timeout_ms);
        let link = self.writes.as_ref().unwrap_or(&self.link);
        let mut replies = link.query_all(&pipeline).await?.into_iter();
        let (Some(reply), Some(reached)) = (replies.next(), replies.next()) else {
            return Err(StoreError::Protocol(
                "a write and WAIT answered short".into(),
            ));
        };
        let reached: u64 = decode(reached.extract_error()?)?;
        Ok((reply.extract_error(), reached))
    }
}

/// The fields and values the load and take scripts return, decoded from
/// their `<length>:<bytes>` encoding as string pairs.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn next_item(&mut self) -> Result<Option<&'a str>, StoreError> {
        if self.0.is_empty() {
            return Ok(None);
        }
        let bad = || StoreError::Protocol("a malformed field list".into());
        let colon = self.0.iter().position(|&b| b == b':').ok_or_else(bad)?;
        let length: usize = std::str::from_utf8(&self.0[..colon])
            .ok()
            .and_then(|n| n.parse().ok())
            .ok_or_else(bad)?;
        let rest = &self.0[colon + 1..];
        let item = rest.get(..length).ok_or_else(bad)?;
        self.0 = &rest[length..];
        std::str::from_utf8(item)
            .map(Some)
            .map_err(|_| StoreError::Protocol("a field that is not UTF-8".into()))
    }

    fn next_pair(&mut self) -> Result<Option<(&'a str, &'a str)>, StoreError> {
        let Some(field) = self.next_item()? else {
            return Ok(None);
        };
        let value = self
            .next_item()?
            .ok_or_else(|| StoreError::Protocol("a field without a value".into()))?;
        Ok(Some((field, value)))
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(&'a str, &'a str), StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_pair().transpose()
    }
}

/// A session from the load script's reply (or the fields part of the peek
/// script's); `None` for the empty reply. One pass over the fields: the
/// metadata is picked out and every value checked while the `X-Session`
/// text is written.
fn loaded(reply: &[u8]) -> Result<Option<Loaded>, StoreError> {
    if reply.is_empty() {
        return Ok(None);
    }
    let (mut created_ms, mut user, mut persist) = (0, None, false);
    let mut failed: Option<StoreError> = None;
    let mut foreign = false;
    let fields = Fields(reply).map_while(|pair| {
        let (field, value) = pair.map_err(|e| failed = Some(e)).ok()?;
        match field {
            "__created" => created_ms = value.parse().unwrap_or(0),
            USER_FIELD => user = Some(value.to_string()),
            PERSIST_FIELD => persist = true,
            _ => {}
        }
        // sessiongate stores printable ASCII only; anything else was written
        // by someone else and must not reach a header.
        foreign |= !value.bytes().all(|b| (0x20..0x7f).contains(&b));
        (!foreign).then_some((field, value))
    });
    let json = encode_session(fields);
    if let Some(error) = failed {
        return Err(error);
    }
    if foreign {
        tracing::error!("a stored session holds a value sessiongate did not write; ignoring it");
        return Ok(None);
    }
    Ok(Some(Loaded {
        json: json.into(),
        created_ms,
        user,
        persist,
    }))
}

/// The save script's reply: what became of the write and, after `peek`,
/// the session as it left it (peek.lua's reply).
fn saved(reply: &[u8]) -> Result<(Saved, Option<&[u8]>), StoreError> {
    let (word, state) = match reply.iter().position(|&b| b == b':') {
        Some(colon) => (&reply[..colon], Some(&reply[colon + 1..])),
        None => (reply, None),
    };
    let saved = match (word, state) {
        (b"ok", state) => return Ok((Saved::Stored, state)),
        (b"gone", None) => Saved::Gone,
        (b"exists", None) => Saved::Exists,
        (b"too_large", Some(size)) => {
            match std::str::from_utf8(size).ok().and_then(|n| n.parse().ok()) {
                Some(size) => Saved::TooLarge { size },
                None => return Err(bad_save(reply)),
            }
        }
        _ => return Err(bad_save(reply)),
    };
    Ok((saved, None))
}

fn bad_save(reply: &[u8]) -> StoreError {
    StoreError::Protocol(format!(
        "save answered {:?}",
        String::from_utf8_lossy(reply)
    ))
}

/// What the peek script found.
enum Peeked {
    /// A live session and its remaining life in ms.
    Live(Loaded, u64),
    /// No live session (the load script's rules: no creation time, or past
    /// the absolute deadline).
    Missing,
    /// A session without an expiry.
    Unbounded,
}

/// The peek script's reply, read at `now_ms`.
fn peeked(reply: &[u8], policy: SessionPolicy, now_ms: u64) -> Result<Peeked, StoreError> {
    if reply.is_empty() {
        return Ok(Peeked::Missing);
    }
    let bad = || StoreError::Protocol("a malformed peek reply".into());
    let colon = reply.iter().position(|&b| b == b':').ok_or_else(bad)?;
    let ttl: i64 = std::str::from_utf8(&reply[..colon])
        .ok()
        .and_then(|n| n.parse().ok())
        .ok_or_else(bad)?;
    let Some(loaded) = loaded(&reply[colon + 1..])? else {
        return Ok(Peeked::Missing);
    };
    if loaded.created_ms == 0 || policy.ttl_ms(loaded.created_ms, now_ms).is_none() {
        return Ok(Peeked::Missing);
    }
    Ok(match u64::try_from(ttl) {
        Ok(ttl) if ttl > 0 => Peeked::Live(loaded, ttl),
        _ => Peeked::Unbounded,
    })
}

impl SessionStore for RedisStore {
    async fn load(&self, sid: &Sid) -> Result<Option<Loaded>, StoreError> {
        if let Some(cached) = &self.cache {
            let tracker = self.tracker(cached);
            if let Some(ticket) = cached.cache.begin(sid.as_str()) {
                return self.load_into_cache(cached, tracker, sid, ticket).await;
            }
        }
        self.load_and_extend(sid).await
    }

    async fn save(
        &self,
        sid: &Sid,
        mode: SaveMode,
        changes: &Changes,
    ) -> Result<Saved, StoreError> {
        // The mode and policy arguments, then a field and a value per change.
        let bytes: usize = changes
            .iter()
            .map(|(field, value)| field.len() + value.map_or(0, str::len))
            .sum();
        let mut call = self
            .save
            .call_with_room(self.key(sid), 6 + 2 * changes.len(), 64 + bytes);
        let created = match mode {
            SaveMode::Create { created_ms } => {
                call.arg("create");
                created_ms
            }
            SaveMode::Update => {
                call.arg("update");
                None
            }
        };
        // Registered before the call is built: the script reads back what it
        // left only for a write whose answer can become the copy.
        let refill = self.refills().and_then(|(cached, tracker)| {
            let ticket = cached.cache.begin_write(sid.as_str())?;
            Some((cached, tracker, ticket))
        });
        call.arg(self.policy.idle.as_millis() as u64)
            .arg(self.policy.absolute.as_millis() as u64)
            .arg(self.policy.max_bytes)
            .arg(created.map(|ms| ms.to_string()).unwrap_or_default())
            .arg(if refill.is_some() { "peek" } else { "" });
        for (field, value) in changes.iter() {
            call.arg(field).arg(value.unwrap_or(""));
        }
        let mut retried = false;
        if let Some((cached, tracker, ticket)) = refill {
            match self
                .save_and_refill(cached, tracker, sid, ticket, &call)
                .await
            {
                Ok(saved) => return Ok(saved),
                Err(error) => {
                    debug!(%error, "session cache: a write over the tracking connection failed; sending it again over the ordinary one");
                    retried = true;
                }
            }
        }
        let reply: Vec<u8> = decode(
            self.changing(sid, self.write(Some(&self.save), call))
                .await?,
        )?;
        match saved(&reply)?.0 {
            // The first try, over the tracking connection, may have stored
            // it before failing (a fresh sid is never taken by chance).
            Saved::Exists if retried && matches!(mode, SaveMode::Create { .. }) => {
                Ok(Saved::Stored)
            }
            saved => Ok(saved),
        }
    }

    async fn take(&self, sid: &Sid) -> Result<Option<TakenSession>, StoreError> {
        let call = self.take.call(self.key(sid));
        let reply: Vec<u8> = decode(
            self.changing(sid, self.write(Some(&self.take), call))
                .await?,
        )?;
        let mut created_ms = None;
        let mut fields = BTreeMap::new();
        for pair in Fields(&reply) {
            let (field, value) = pair?;
            if field == "__created" {
                created_ms = value.parse().ok();
            } else if field == USER_FIELD || !field.starts_with(META_PREFIX) {
                fields.insert(field.to_string(), value.to_string());
            }
        }
        // A hash without its creation time is not a session (the load script agrees).
        Ok(created_ms.map(|created_ms| TakenSession { fields, created_ms }))
    }

    async fn destroy(&self, sid: &Sid) -> Result<(), StoreError> {
        let mut call = redis::cmd("DEL");
        call.arg(self.key(sid));
        self.changing(sid, self.write(None, call)).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{Fields, Lua, SessionKey};
    use crate::session::cookie::Sid;

    #[test]
    fn a_script_call_becomes_the_same_call_as_eval() {
        let lua = Lua::new("return 1");
        let sid = Sid::generate();
        let mut call = lua.call(SessionKey("sg:", &sid));
        call.arg("update").arg(42);
        let args = |cmd: &redis::Cmd| -> Vec<Vec<u8>> {
            cmd.args_iter()
                .map(|a| match a {
                    redis::Arg::Simple(bytes) => bytes.to_vec(),
                    _ => b"<other>".to_vec(),
                })
                .collect()
        };
        let key = format!("sg:{}", sid.as_str()).into_bytes();
        assert_eq!(
            args(&call),
            [
                b"EVALSHA".to_vec(),
                lua.sha.clone().into_bytes(),
                b"1".to_vec(),
                key.clone(),
                b"update".to_vec(),
                b"42".to_vec()
            ]
        );
        assert_eq!(
            args(&lua.eval(&call)),
            [
                b"EVAL".to_vec(),
                b"return 1".to_vec(),
                b"1".to_vec(),
                key,
                b"update".to_vec(),
                b"42".to_vec()
            ]
        );
    }

    fn decode(text: &str) -> Result<Vec<(String, String)>, String> {
        Fields(text.as_bytes())
            .map(|p| {
                p.map(|(k, v)| (k.to_string(), v.to_string()))
                    .map_err(|e| e.to_string())
            })
            .collect()
    }

    #[test]
    fn the_scripts_field_encoding_decodes_to_pairs() {
        assert_eq!(decode("").unwrap(), []);
        let pairs = decode("9:__created13:17637432000004:user5:\"ada\"0:2:{}").unwrap();
        let expected = [
            ("__created", "1763743200000"),
            ("user", "\"ada\""),
            ("", "{}"),
        ];
        assert_eq!(pairs, expected.map(|(k, v)| (k.to_string(), v.to_string())));
        let colons = decode("3:a:b3:c:d").unwrap();
        assert_eq!(colons, [("a:b".to_string(), "c:d".to_string())]);
    }

    #[test]
    fn a_load_reply_becomes_a_session_in_one_pass_and_a_foreign_value_none() {
        let reply = "9:__created13:17637432000006:__user3:ada4:cart3:[1]";
        let session = super::loaded(reply.as_bytes()).unwrap().unwrap();
        assert_eq!(&session.json[..], br#"{"cart":[1]}"#);
        assert_eq!(session.created_ms, 1763743200000);
        assert_eq!(session.user.as_deref(), Some("ada"));
        let foreign = "9:__created13:17637432000004:cart2:\u{7}1";
        assert!(super::loaded(foreign.as_bytes()).unwrap().is_none());
        assert!(super::loaded(b"9:__created").is_err());
        assert!(super::loaded(b"").unwrap().is_none());
    }

    #[test]
    fn a_save_reply_says_what_became_of_the_write_and_after_peek_what_it_left() {
        use super::super::Saved;
        let ok = super::saved(b"ok").unwrap();
        assert!(matches!(ok, (Saved::Stored, None)));
        let peeked = super::saved(b"ok:5000:9:__created1:1").unwrap();
        assert!(matches!(
            peeked,
            (Saved::Stored, Some(b"5000:9:__created1:1"))
        ));
        assert!(matches!(
            super::saved(b"gone").unwrap(),
            (Saved::Gone, None)
        ));
        assert!(matches!(
            super::saved(b"exists").unwrap(),
            (Saved::Exists, None)
        ));
        assert!(matches!(
            super::saved(b"too_large:4097").unwrap(),
            (Saved::TooLarge { size: 4097 }, None)
        ));
        for bad in [&b"too_large:x"[..], b"gone:1", b"", b"what"] {
            assert!(super::saved(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_malformed_field_list_is_an_error_not_a_panic() {
        for bad in [
            "5:abc",
            "x:ab",
            "3:abc",
            "3:abc9:",
            ":",
            "18446744073709551616:a",
        ] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
    }
}

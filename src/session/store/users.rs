//! Users and devices (SPEC §12): which sessions are bound to a user, on
//! either store, so that they can be listed and revoked.
//!
//! A bound session keeps its user in `__user`. In Redis each user also has
//! an index, a ZSET at `<key_prefix>user:<id>` of sids scored by each
//! session's absolute deadline (`user_index.lua`). On a Cluster the index
//! and a session live in different slots, so no script can change both:
//!
//! - binding writes the index first, then the session; ending a session
//!   deletes the session first, then its index entry. A crash between two
//!   writes can leave an entry without a bound session, never a bound
//!   session without its entry, so a revocation always finds every session;
//! - an entry is believed only once its session confirms it (`bound.lua`:
//!   the session exists and its `__user` is this user); the rest are
//!   dropped from the index as they are met, and every entry is pruned by
//!   its deadline whenever the index is read or written;
//! - the index key expires with its longest entry (plus [`GRACE_MS`]), so
//!   nothing in the store lacks a TTL.
//!
//! The memory store needs no index: it searches its sessions for `__user`.

use std::fmt;
use std::sync::LazyLock;

use futures_util::future::join_all;
use redis::{Cmd, RedisWrite, ToRedisArgs};

use super::{Lua, RedisStore, SessionKey, decode};
use crate::session::cookie::Sid;
use crate::session::store::{Backend, SessionStore, Store, StoreError, epoch_ms};

/// The metadata field that holds a bound session's user id, as sent.
pub const USER_FIELD: &str = "__user";

/// The longest user id (SPEC §12).
pub const MAX_USER_LEN: usize = 256;

/// How long past its deadline an index entry is kept, and past its last
/// entry the index key: Cluster nodes' clocks may differ by this much
/// before an entry could be pruned while its session still lives.
pub const GRACE_MS: u64 = 60_000;

/// A user id is 1 to 256 visible ASCII characters (SPEC §12).
pub fn valid_user(id: &str) -> bool {
    (1..=MAX_USER_LEN).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic())
}

/// A live session bound to a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundSession {
    /// Its sid.
    pub sid: Sid,
    /// Its creation time, ms since the epoch.
    pub created_ms: u64,
    /// When it expires unless used again, ms since the epoch.
    pub expires_ms: u64,
}

static INDEX: LazyLock<Lua> = LazyLock::new(|| Lua::new(include_str!("scripts/user_index.lua")));
static BOUND: LazyLock<Lua> = LazyLock::new(|| Lua::new(include_str!("scripts/bound.lua")));

/// A user's index key, `<key_prefix>user:<id>`. A sid never holds a `:`,
/// so no index key is ever a session's key.
struct IndexKey<'a>(&'a str, &'a str);

impl fmt::Display for IndexKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}user:{}", self.0, self.1)
    }
}

impl ToRedisArgs for IndexKey<'_> {
    fn write_redis_args<W: ?Sized + RedisWrite>(&self, out: &mut W) {
        out.write_arg_fmt(self);
    }
}

/// `EVALSHA` of `lua` on one key of any kind.
fn call_on(lua: &Lua, key: impl ToRedisArgs) -> Cmd {
    let mut cmd = Cmd::with_capacity(8, 160);
    cmd.arg("EVALSHA").arg(&lua.sha).arg(1).arg(key);
    cmd
}

impl RedisStore {
    fn index_call(&self, mode: &str, user: &str) -> Cmd {
        let mut call = call_on(&INDEX, IndexKey(&self.key_prefix, user));
        call.arg(mode).arg(GRACE_MS);
        call
    }

    /// Adds a sid to its user's index (a write: with `WAIT` when asked).
    async fn index_add(&self, user: &str, sid: &Sid, deadline_ms: u64) -> Result<(), StoreError> {
        let mut call = self.index_call("add", user);
        call.arg(sid.as_str()).arg(deadline_ms);
        self.write(Some(&INDEX), call).await.map(drop)
    }

    async fn index_remove(&self, user: &str, sids: &[&str]) -> Result<(), StoreError> {
        if sids.is_empty() {
            return Ok(());
        }
        let mut call = self.index_call("remove", user);
        for sid in sids {
            call.arg(*sid);
        }
        self.write(Some(&INDEX), call).await.map(drop)
    }

    /// The sids in a user's index, pruned first.
    async fn index_read(&self, user: &str) -> Result<Vec<String>, StoreError> {
        let reply = self.script(&INDEX, self.index_call("read", user)).await?;
        decode(reply)
    }

    fn bound_call(&self, mode: &str, sid: &Sid, user: &str) -> Cmd {
        let mut call = call_on(&BOUND, SessionKey(&self.key_prefix, sid));
        call.arg(mode).arg(user);
        call
    }

    /// A session's creation time and TTL, if it is bound to `user`.
    async fn peek(&self, sid: &Sid, user: &str) -> Result<Option<(u64, u64)>, StoreError> {
        let reply: String = decode(
            self.script(&BOUND, self.bound_call("peek", sid, user))
                .await?,
        )?;
        if reply.is_empty() {
            return Ok(None);
        }
        let parsed = reply
            .split_once(':')
            .and_then(|(created, ttl)| Some((created.parse().ok()?, ttl.parse::<i64>().ok()?)));
        match parsed {
            // -1 (no TTL) is not a session sessiongate keeps; -2 is gone.
            Some((created, ttl)) if ttl > 0 => Ok(Some((created, ttl as u64))),
            Some(_) => Ok(None),
            None => Err(StoreError::Protocol(format!(
                "bound.lua answered {reply:?}"
            ))),
        }
    }

    /// Deletes a session if it is bound to `user`; true if it was.
    async fn revoke_if_bound(&self, sid: &Sid, user: &str) -> Result<bool, StoreError> {
        let revoke = self.write(Some(&BOUND), self.bound_call("revoke", sid, user));
        let reply = self.changing(sid, revoke).await?;
        Ok(decode::<i64>(reply)? == 1)
    }

    /// The live sessions bound to `user`, oldest first; entries whose
    /// session is gone (or bound to someone else) leave the index.
    async fn bound_to(&self, user: &str) -> Result<Vec<BoundSession>, StoreError> {
        let listed = self.index_read(user).await?;
        let sids: Vec<Option<Sid>> = listed.iter().map(|s| Sid::parse(s)).collect();
        let peeks = join_all(sids.iter().map(|sid| async move {
            match sid {
                Some(sid) => self.peek(sid, user).await,
                None => Ok(None),
            }
        }))
        .await;
        let now = epoch_ms();
        let (mut bound, mut stale) = (Vec::new(), Vec::new());
        for ((text, sid), peek) in listed.iter().zip(sids).zip(peeks) {
            match (sid, peek?) {
                (Some(sid), Some((created_ms, ttl))) => bound.push(BoundSession {
                    sid,
                    created_ms,
                    expires_ms: now + ttl,
                }),
                _ => stale.push(text.as_str()),
            }
        }
        self.index_remove(user, &stale).await?;
        bound.sort_by(|a, b| (a.created_ms, a.sid.as_str()).cmp(&(b.created_ms, b.sid.as_str())));
        Ok(bound)
    }

    /// Deletes every session bound to `user` but `except`, then their
    /// entries (and any stale one); the number deleted.
    async fn revoke_all(&self, user: &str, except: Option<&Sid>) -> Result<usize, StoreError> {
        let listed = self.index_read(user).await?;
        let keep = except.map(Sid::as_str);
        let doomed: Vec<&str> = listed
            .iter()
            .map(String::as_str)
            .filter(|s| Some(*s) != keep)
            .collect();
        let destroyed = self.revoke_each(user, &doomed).await?;
        self.index_remove(user, &doomed).await?;
        Ok(destroyed)
    }

    /// Deletes each of these sessions that is bound to `user`; how many were.
    async fn revoke_each(&self, user: &str, sids: &[&str]) -> Result<usize, StoreError> {
        let revoked = join_all(sids.iter().map(|text| async move {
            match Sid::parse(text) {
                Some(sid) => self.revoke_if_bound(&sid, user).await,
                None => Ok(false),
            }
        }))
        .await;
        let mut count = 0;
        for one in revoked {
            count += usize::from(one?);
        }
        Ok(count)
    }
}

impl Store {
    /// The live sessions bound to `user`, oldest first (SPEC §12); never an
    /// expired or destroyed one.
    pub async fn sessions_of(&self, user: &str) -> Result<Vec<BoundSession>, StoreError> {
        match &self.backend {
            Backend::Redis(redis) => self.within(redis.bound_to(user)).await,
            Backend::Memory(memory) => Ok(memory.bound_to(user)),
        }
    }

    /// Destroys every session bound to `user` but `except`; how many.
    pub async fn revoke_user(&self, user: &str, except: Option<&Sid>) -> Result<usize, StoreError> {
        match &self.backend {
            Backend::Redis(redis) => self.within(redis.revoke_all(user, except)).await,
            Backend::Memory(memory) => {
                let doomed = memory.bound_to(user);
                let doomed = doomed.iter().filter(|b| Some(&b.sid) != except);
                Ok(doomed
                    .filter(|b| memory.destroy_if_bound(&b.sid, user))
                    .count())
            }
        }
    }

    /// Destroys one session, bound or not, and its index entry; false if
    /// there was no such session.
    pub async fn revoke_sid(&self, sid: &Sid) -> Result<bool, StoreError> {
        let Some(taken) = self.take(sid).await? else {
            return Ok(false);
        };
        if let Some(user) = taken.fields.get(USER_FIELD) {
            self.index_remove(user, sid).await?;
        }
        Ok(true)
    }

    /// Puts a sid in its user's index before the session is bound: see the
    /// module's header for why this order. `deadline_ms` is the session's
    /// absolute deadline (its entry is pruned after it).
    pub(crate) async fn index_add(
        &self,
        user: &str,
        sid: &Sid,
        deadline_ms: u64,
    ) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Redis(redis) => self.within(redis.index_add(user, sid, deadline_ms)).await,
            Backend::Memory(_) => Ok(()),
        }
    }

    /// Drops a sid from its user's index once its session has ended (or
    /// moved to another user).
    pub(crate) async fn index_remove(&self, user: &str, sid: &Sid) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Redis(redis) => self.within(redis.index_remove(user, &[sid.as_str()])).await,
            Backend::Memory(_) => Ok(()),
        }
    }

    /// `session.max_per_user`: when `user` has more than `max` sessions,
    /// destroys the oldest of them but `keep` (the one just bound) until
    /// `max` remain; how many went.
    pub(crate) async fn trim_user(
        &self,
        user: &str,
        keep: &Sid,
        max: usize,
    ) -> Result<usize, StoreError> {
        let bound = self.sessions_of(user).await?;
        let excess = bound.len().saturating_sub(max);
        if excess == 0 {
            return Ok(0);
        }
        let oldest: Vec<&Sid> = bound
            .iter()
            .map(|b| &b.sid)
            .filter(|sid| *sid != keep)
            .take(excess)
            .collect();
        match &self.backend {
            Backend::Redis(redis) => {
                let sids: Vec<&str> = oldest.iter().map(|s| s.as_str()).collect();
                self.within(async {
                    let destroyed = redis.revoke_each(user, &sids).await?;
                    redis.index_remove(user, &sids).await?;
                    Ok(destroyed)
                })
                .await
            }
            Backend::Memory(memory) => Ok(oldest
                .into_iter()
                .filter(|sid| memory.destroy_if_bound(sid, user))
                .count()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_id_is_1_to_256_visible_ascii_characters() {
        assert!(valid_user("ada"));
        assert!(valid_user("ada@example.com"));
        assert!(valid_user(&"x".repeat(256)));
        for bad in ["", " ada", "a b", "ad\u{e9}", "a\tb", "a\u{7f}"] {
            assert!(!valid_user(bad), "{bad:?}");
        }
        assert!(!valid_user(&"x".repeat(257)));
    }

    #[test]
    fn an_index_key_never_looks_like_a_session_key() {
        assert_eq!(IndexKey("sg:", "ada").to_string(), "sg:user:ada");
        assert!(Sid::parse(&IndexKey("", "ada").to_string()).is_none());
    }
}

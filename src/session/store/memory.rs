//! The in-process memory store: the same semantics as Redis (expiry, atomic
//! updates, no resurrection) for one sessiongate process, as in `demo`.
//! Sessions live in one map behind a mutex that no `await` ever holds.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use bytes::Bytes;

use super::{
    BoundSession, Loaded, PERSIST_FIELD, SaveMode, Saved, SessionPolicy, SessionStore, StoreError,
    TakenSession, USER_FIELD, epoch_ms,
};
use crate::session::codec::{Changes, encode_session, session_size};
use crate::session::cookie::Sid;

/// Expired sessions are swept out once per this many writes.
const SWEEP_EVERY_WRITES: u64 = 1024;

/// Sessions in this process's memory.
pub struct MemoryStore {
    policy: SessionPolicy,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    sessions: HashMap<Sid, Entry>,
    writes: u64,
}

struct Entry {
    fields: BTreeMap<String, String>,
    /// The `X-Session` text of `fields`, made when they are stored, so that
    /// a load costs no encoding and no allocation (a clone shares it).
    json: Bytes,
    created_ms: u64,
    expires_ms: u64,
}

impl State {
    /// The live entry for a sid; an expired one is removed on the way.
    fn live(&mut self, sid: &Sid, now: u64) -> Option<&mut Entry> {
        if self.sessions.get(sid).is_some_and(|e| e.expires_ms <= now) {
            self.sessions.remove(sid);
        }
        self.sessions.get_mut(sid)
    }

    fn count_write(&mut self, now: u64) {
        self.writes += 1;
        if self.writes.is_multiple_of(SWEEP_EVERY_WRITES) {
            self.sessions.retain(|_, e| e.expires_ms > now);
        }
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new(policy: SessionPolicy) -> MemoryStore {
        MemoryStore {
            policy,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic elsewhere cannot leave an entry half-written: nothing that
        // changes an entry below can panic (map operations, and encoding
        // texts that are already JSON).
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The user index (SPEC §12) in memory: the sessions themselves, searched
/// for their `__user`. One process holds them all, so there is nothing to
/// keep in step and nothing to go stale.
impl MemoryStore {
    /// The live sessions bound to `user`, oldest first.
    pub(super) fn bound_to(&self, user: &str) -> Vec<BoundSession> {
        let now = epoch_ms();
        let state = self.lock();
        let mut bound: Vec<BoundSession> = state
            .sessions
            .iter()
            .filter(|(_, e)| e.expires_ms > now)
            .filter(|(_, e)| e.fields.get(USER_FIELD).is_some_and(|u| u == user))
            .map(|(sid, e)| BoundSession {
                sid: sid.clone(),
                created_ms: e.created_ms,
                expires_ms: e.expires_ms,
            })
            .collect();
        bound.sort_by_key(|b| (b.created_ms, b.sid.as_str().to_string()));
        bound
    }

    /// Deletes a session if it is bound to `user`; true if it was.
    pub(super) fn destroy_if_bound(&self, sid: &Sid, user: &str) -> bool {
        let now = epoch_ms();
        let mut state = self.lock();
        let bound = state
            .live(sid, now)
            .is_some_and(|e| e.fields.get(USER_FIELD).is_some_and(|u| u == user));
        if bound {
            state.sessions.remove(sid);
        }
        bound
    }
}

impl SessionStore for MemoryStore {
    async fn load(&self, sid: &Sid) -> Result<Option<Loaded>, StoreError> {
        let now = epoch_ms();
        let mut state = self.lock();
        let Some(entry) = state.live(sid, now) else {
            return Ok(None);
        };
        let Some(ttl) = self.policy.ttl_ms(entry.created_ms, now) else {
            state.sessions.remove(sid);
            return Ok(None);
        };
        entry.expires_ms = now + ttl;
        Ok(Some(Loaded {
            json: entry.json.clone(),
            created_ms: entry.created_ms,
            user: entry.fields.get(USER_FIELD).cloned(),
            persist: entry.fields.contains_key(PERSIST_FIELD),
        }))
    }

    async fn save(
        &self,
        sid: &Sid,
        mode: SaveMode,
        changes: &Changes,
    ) -> Result<Saved, StoreError> {
        let now = epoch_ms();
        let mut state = self.lock();
        state.count_write(now);
        let created_ms = match (mode, state.live(sid, now)) {
            (SaveMode::Create { .. }, Some(_)) => return Ok(Saved::Exists),
            (SaveMode::Update, None) => return Ok(Saved::Gone),
            (SaveMode::Create { created_ms }, None) => created_ms.unwrap_or(now),
            (SaveMode::Update, Some(entry)) => {
                // Checked on the fields as they would be: nothing is
                // copied, and a refused update leaves them as they are.
                let size = session_size(changes.over(&entry.fields));
                if size > self.policy.max_bytes {
                    return Ok(Saved::TooLarge { size });
                }
                entry.created_ms
            }
        };
        let Some(ttl) = self.policy.ttl_ms(created_ms, now) else {
            state.sessions.remove(sid);
            return Ok(Saved::Gone);
        };
        let entry = state.sessions.entry(sid.clone()).or_insert_with(|| Entry {
            fields: BTreeMap::new(),
            json: Bytes::new(),
            created_ms,
            expires_ms: 0,
        });
        changes.apply_to(&mut entry.fields);
        entry.json =
            encode_session(entry.fields.iter().map(|(k, v)| (k.as_str(), v.as_str()))).into();
        entry.expires_ms = now + ttl;
        Ok(Saved::Stored)
    }

    async fn take(&self, sid: &Sid) -> Result<Option<TakenSession>, StoreError> {
        let now = epoch_ms();
        let mut state = self.lock();
        state.live(sid, now);
        Ok(state.sessions.remove(sid).map(|e| TakenSession {
            fields: e.fields,
            created_ms: e.created_ms,
        }))
    }

    async fn destroy(&self, sid: &Sid) -> Result<(), StoreError> {
        self.lock().sessions.remove(sid);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn expired_sessions_are_swept_out_as_writes_go_on() {
        let store = MemoryStore::new(SessionPolicy {
            idle: Duration::from_millis(1),
            absolute: Duration::from_secs(60),
            max_bytes: 1000,
        });
        let changes = crate::session::codec::parse_updates([br#"{"a":1}"#.as_slice()]).unwrap();
        let create = SaveMode::Create { created_ms: None };
        for _ in 0..SWEEP_EVERY_WRITES {
            store
                .save(&Sid::generate(), create, &changes)
                .await
                .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        // The next round of writes sweeps the expired sessions out.
        for _ in 0..SWEEP_EVERY_WRITES {
            store
                .save(&Sid::generate(), create, &changes)
                .await
                .unwrap();
        }
        let held = store.lock().sessions.len();
        assert!(held <= SWEEP_EVERY_WRITES as usize, "{held} sessions held");
    }
}

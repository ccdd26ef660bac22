//! Sessions (SPEC §3-§6): what a request's cookie resolves to, and what a
//! backend's response does to the session: updates, `rotate`, `destroy`,
//! `persist` (a persistent cookie, kept as `__persist`; actions may be
//! comma-separated, as in `rotate, persist`); binding to a user and
//! revoking a user's sessions are in `users.rs` (SPEC §12).
//!
//! [`Sessions::resolve`] is the load phase of a request, [`Sessions::commit`]
//! the store phase of its response. Neither touches HTTP; the proxy moves
//! their results into headers.

pub mod codec;
pub mod cookie;
pub mod store;
mod users;

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use http::HeaderValue;
use tracing::warn;

use self::codec::{Changes, UpdateError, session_size};
use self::cookie::{CookieCodec, Sid};
use self::store::{
    Loaded, PERSIST_FIELD, SaveMode, Saved, SessionPolicy, SessionStore, Store, StoreError,
};
use crate::config::OnError;
use crate::metrics::{Metrics, SessionEvent, StoreOp};

/// What the backend is told about the session (`X-Session-Status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// No stored session.
    New,
    /// A stored session, loaded.
    Active,
    /// The store is down and `on_error = "fail_open"`.
    Unavailable,
}

impl Status {
    /// The header value.
    pub fn header_value(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Status::New => "new",
            Status::Active => "active",
            Status::Unavailable => "unavailable",
        })
    }
}

/// The session a request runs with.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// Its sid; for a new visitor a fresh one, theirs if the backend stores anything.
    pub sid: Sid,
    /// Whether it was found.
    pub status: Status,
    /// The `X-Session` text: compact ASCII JSON.
    pub json: Bytes,
    /// A stored session's creation time, ms since the epoch.
    pub created_ms: Option<u64>,
    /// The user a stored session is bound to (`__user`, SPEC §12).
    pub user: Option<String>,
    /// A stored session whose cookie is persistent (`__persist`).
    pub persist: bool,
}

impl Resolved {
    fn without_session(sid: Sid, status: Status) -> Resolved {
        Resolved {
            sid,
            status,
            json: Bytes::from_static(b"{}"),
            created_ms: None,
            user: None,
            persist: false,
        }
    }
}

/// `X-Session-Action`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// A new sid for the same data; the old sid stops working.
    Rotate,
    /// The session ends and its cookie is expired.
    Destroy,
}

/// What a backend's response asks of the session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Instructions {
    /// The merged `X-Session-Update` values.
    pub changes: Changes,
    /// The `X-Session-Action`, if any (`destroy` wins over `rotate`).
    pub action: Option<Action>,
    /// `X-Session-User`: bind the session to this user (SPEC §12).
    pub user: Option<String>,
    /// `destroy-others` (or `destroy-all`, which also destroys this one):
    /// every other session of the same user ends.
    pub destroy_others: bool,
    /// `X-Session-Action: persist`: the cookie becomes persistent.
    pub persist: bool,
}

impl Instructions {
    /// Reads a response's update and action header values, in order.
    pub fn parse<'a>(
        updates: impl IntoIterator<Item = &'a [u8]>,
        actions: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Instructions, UpdateError> {
        let changes = codec::parse_updates(updates)?;
        let (mut action, mut destroy_others, mut persist) = (None, false, false);
        // Several actions may share a header, comma-separated: `rotate, persist`.
        for value in actions {
            let text = String::from_utf8_lossy(value);
            for one in text.split(',') {
                match one.trim().to_ascii_lowercase().as_str() {
                    "rotate" => action = action.or(Some(Action::Rotate)),
                    "destroy" => action = Some(Action::Destroy),
                    "destroy-others" => destroy_others = true,
                    "destroy-all" => (action, destroy_others) = (Some(Action::Destroy), true),
                    "persist" => persist = true,
                    _ => return Err(UpdateError::UnknownAction(text.into_owned())),
                }
            }
        }
        Ok(Instructions {
            changes,
            action,
            user: None,
            destroy_others,
            persist,
        })
    }

    /// True when the response asks for nothing.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
            && self.action.is_none()
            && self.user.is_none()
            && !self.destroy_others
            && !self.persist
    }
}

/// What the client's cookie must become after a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CookieChange {
    /// Nothing to send.
    Keep,
    /// Send a cookie for this (new) sid.
    Set(Sid),
    /// Send a persistent cookie for this sid: its `Max-Age` runs to the
    /// session's absolute deadline.
    Persist {
        /// The sid.
        sid: Sid,
        /// The session's absolute deadline, ms since the epoch.
        expires_ms: u64,
    },
    /// Expire the cookie.
    Expire,
}

/// The session machinery: cookie codec, store and the policies.
pub struct Sessions {
    /// Signs and verifies cookies.
    pub cookie: CookieCodec,
    store: Arc<Store>,
    policy: SessionPolicy,
    on_error: OnError,
    /// `session.max_per_user` (0: no limit).
    max_per_user: usize,
    metrics: Arc<Metrics>,
    /// `cookie.persistent`: every session's cookie carries `Max-Age`.
    persistent: bool,
}

impl Sessions {
    /// Assembles the session machinery.
    pub fn new(
        cookie: CookieCodec,
        store: Store,
        policy: SessionPolicy,
        on_error: OnError,
    ) -> Sessions {
        Sessions {
            cookie,
            store: Arc::new(store),
            policy,
            on_error,
            max_per_user: 0,
            metrics: Arc::new(Metrics::new(false)),
            persistent: false,
        }
    }

    /// Every session's cookie persistent (`cookie.persistent`), or not.
    pub fn persistent(self, persistent: bool) -> Sessions {
        Sessions { persistent, ..self }
    }

    /// The same store, policies and counters with another cookie codec (a
    /// reload: new secrets or attributes; sessions and the store connection
    /// stay).
    pub fn with_cookie(&self, cookie: CookieCodec, persistent: bool) -> Sessions {
        Sessions {
            cookie,
            store: self.store.clone(),
            policy: self.policy,
            on_error: self.on_error,
            max_per_user: self.max_per_user,
            metrics: self.metrics.clone(),
            persistent,
        }
    }

    /// At most `max` sessions per user (`session.max_per_user`; 0: no limit).
    pub fn max_per_user(self, max: usize) -> Sessions {
        Sessions {
            max_per_user: max,
            ..self
        }
    }

    /// Counts store calls and session events in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Sessions {
        self.store.count_in(&metrics);
        self.metrics = metrics;
        self
    }

    /// The store (to check it at start).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Counts `n` sessions ended by a revocation outside a response (the
    /// admin API's).
    pub fn revoked(&self, n: usize) {
        self.metrics.sessions_n(SessionEvent::Revoked, n);
    }

    /// The load phase: the session of a verified sid, or a new one. Costs
    /// one store round trip when there is a verified sid, none otherwise.
    /// `Err` only under `fail_closed`.
    pub async fn resolve(&self, presented: Option<Sid>) -> Result<Resolved, StoreError> {
        let Some(sid) = presented else {
            return Ok(Resolved::without_session(Sid::generate(), Status::New));
        };
        let active = |sid, loaded: Loaded| Resolved {
            sid,
            status: Status::Active,
            json: loaded.json,
            created_ms: Some(loaded.created_ms),
            user: loaded.user,
            persist: loaded.persist,
        };
        if let Some(loaded) = self.store.cached(&sid) {
            self.metrics.cache_lookup(true);
            return Ok(active(sid, loaded));
        }
        if self.store.caches() {
            self.metrics.cache_lookup(false);
        }
        match self
            .metrics
            .timed(StoreOp::Load, self.store.load(&sid))
            .await
        {
            Ok(Some(loaded)) => Ok(active(sid, loaded)),
            // Expired or unknown: a new session, never under the presented sid.
            Ok(None) => Ok(Resolved::without_session(Sid::generate(), Status::New)),
            Err(error) if self.on_error == OnError::FailOpen => {
                warn!(%error, "session store unavailable; forwarding without the session (fail_open)");
                Ok(Resolved::without_session(sid, Status::Unavailable))
            }
            Err(error) => Err(error),
        }
    }

    /// The store phase: applies a response's instructions to the session and
    /// says what the client's cookie becomes. A bad update is logged and
    /// changes nothing. `Err` only under `fail_closed`.
    pub async fn commit(
        &self,
        session: &Resolved,
        instructions: Result<Instructions, UpdateError>,
    ) -> Result<CookieChange, StoreError> {
        let instructions = match instructions {
            Ok(instructions) if instructions.is_empty() => return Ok(CookieChange::Keep),
            Ok(instructions) => instructions,
            Err(error) => {
                warn!(%error, "session update rejected; nothing applied");
                self.metrics.session(SessionEvent::UpdateRejected);
                return Ok(CookieChange::Keep);
            }
        };
        // Under fail_open a change that cannot be stored is dropped; a destroy
        // still expires the cookie.
        let destroy = instructions.action == Some(Action::Destroy);
        let dropped = |why: &dyn std::fmt::Display| {
            warn!(error = %why, "session update dropped (fail_open)");
            Ok(match destroy {
                true => CookieChange::Expire,
                false => CookieChange::Keep,
            })
        };
        if session.status == Status::Unavailable {
            return dropped(&"the session store was unavailable when the request began");
        }
        match self.apply_bound(session, instructions).await {
            Err(error) if self.on_error == OnError::FailOpen => dropped(&error),
            result => result,
        }
    }

    async fn apply(
        &self,
        session: &Resolved,
        instructions: Instructions,
    ) -> Result<CookieChange, StoreError> {
        let Instructions {
            mut changes,
            action,
            persist,
            ..
        } = instructions;
        let active = session.status == Status::Active;
        let persist_now = persist && !session.persist;
        match action {
            Some(Action::Destroy) => {
                if active {
                    self.metrics
                        .timed(StoreOp::Destroy, self.store.destroy(&session.sid))
                        .await?;
                    self.metrics.session(SessionEvent::Destroyed);
                }
                Ok(CookieChange::Expire)
            }
            Some(Action::Rotate) if active => {
                self.rotate(&session.sid, &changes, persist || session.persist)
                    .await
            }
            // A rotated session never keeps a sid that the backend has seen.
            Some(Action::Rotate) => self.create(Sid::generate(), &changes, persist).await,
            None if active => {
                if persist_now {
                    changes.set_meta(PERSIST_FIELD, "true");
                }
                let save =
                    self.save_indexed(&session.sid, SaveMode::Update, &changes, session.created_ms);
                match self.metrics.timed(StoreOp::Save, save).await? {
                    // Persistent from now on: the cookie says so at once.
                    Saved::Stored if persist_now => {
                        return Ok(CookieChange::Persist {
                            sid: session.sid.clone(),
                            expires_ms: self.deadline(session.created_ms),
                        });
                    }
                    Saved::Stored => {}
                    Saved::Gone => {
                        warn!("session ended before its update was stored; update dropped")
                    }
                    Saved::TooLarge { size } => {
                        warn!(
                            error = %UpdateError::TooLarge { size, max: self.policy.max_bytes },
                            "session update rejected; nothing applied"
                        );
                        self.metrics.session(SessionEvent::UpdateRejected);
                    }
                    Saved::Exists => {
                        return Err(StoreError::Protocol("update answered exists".into()));
                    }
                }
                Ok(CookieChange::Keep)
            }
            None => self.create(session.sid.clone(), &changes, persist).await,
        }
    }

    /// The absolute deadline of a session created at `created_ms` (now
    /// when unknown), ms since the epoch.
    fn deadline(&self, created_ms: Option<u64>) -> u64 {
        created_ms
            .unwrap_or_else(store::epoch_ms)
            .saturating_add(self.policy.absolute.as_millis() as u64)
    }

    /// Lazy creation: a session comes to exist only when something is set
    /// (`persist` alone creates nothing).
    async fn create(
        &self,
        sid: Sid,
        changes: &Changes,
        persist: bool,
    ) -> Result<CookieChange, StoreError> {
        if !changes.sets_anything() {
            return Ok(CookieChange::Keep);
        }
        let mut fields = BTreeMap::new();
        changes.apply_to(&mut fields);
        if let Err(error) = self.check_size(&fields) {
            warn!(%error, "session update rejected; nothing applied");
            self.metrics.session(SessionEvent::UpdateRejected);
            return Ok(CookieChange::Keep);
        }
        self.store_new(sid, changes, None, persist).await
    }

    /// Moves the session to a fresh sid: the old one is taken out of the
    /// store first (dead from then on), then its data, with this response's
    /// changes, is stored under the new sid with its original creation time.
    async fn rotate(
        &self,
        old: &Sid,
        changes: &Changes,
        persist: bool,
    ) -> Result<CookieChange, StoreError> {
        let Some(taken) = self
            .metrics
            .timed(StoreOp::Rotate, self.store.take(old))
            .await?
        else {
            // The session ended meanwhile: only this response's changes remain.
            return self.create(Sid::generate(), changes, persist).await;
        };
        let mut fields = taken.fields.clone();
        changes.apply_to(&mut fields);
        if let Err(error) = self.check_size(&fields) {
            warn!(%error, "session update rejected; the session is rotated without it");
            self.metrics.session(SessionEvent::UpdateRejected);
            fields = taken.fields;
        }
        self.store_new(
            Sid::generate(),
            &Changes::set_all(fields),
            Some(taken.created_ms),
            persist,
        )
        .await
    }

    /// Stores a new session; `persist` keeps `__persist` in it. Its cookie
    /// is persistent when it persists or `cookie.persistent` is set.
    async fn store_new(
        &self,
        sid: Sid,
        changes: &Changes,
        created_ms: Option<u64>,
        persist: bool,
    ) -> Result<CookieChange, StoreError> {
        let mut with_meta;
        let changes = match persist {
            true => {
                with_meta = changes.clone();
                with_meta.set_meta(PERSIST_FIELD, "true");
                &with_meta
            }
            false => changes,
        };
        let save = self.save_indexed(&sid, SaveMode::Create { created_ms }, changes, None);
        match self.metrics.timed(StoreOp::Save, save).await? {
            Saved::Stored => {
                self.metrics.session(match created_ms {
                    None => SessionEvent::Created,
                    Some(_) => SessionEvent::Rotated,
                });
                Ok(match persist || self.persistent {
                    true => CookieChange::Persist {
                        sid,
                        expires_ms: self.deadline(created_ms),
                    },
                    false => CookieChange::Set(sid),
                })
            }
            // A rotated session already past its absolute deadline.
            Saved::Gone => Ok(CookieChange::Expire),
            Saved::Exists => Err(StoreError::Protocol("a fresh sid already exists".into())),
            Saved::TooLarge { .. } => Err(StoreError::Protocol("create answered too_large".into())),
        }
    }

    fn check_size(&self, fields: &BTreeMap<String, String>) -> Result<(), UpdateError> {
        let size = session_size(fields.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        match size > self.policy.max_bytes {
            true => Err(UpdateError::TooLarge {
                size,
                max: self.policy.max_bytes,
            }),
            false => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::{CookieConfig, Secret, StoreConfig, StoreKind};

    fn sessions(on_error: OnError) -> Sessions {
        in_memory(on_error, 64)
    }

    /// Sessions over a memory store (60 s idle, 1 h absolute) for unit
    /// tests of the session phases.
    pub(super) fn in_memory(on_error: OnError, max_bytes: usize) -> Sessions {
        let policy = SessionPolicy {
            idle: Duration::from_secs(60),
            absolute: Duration::from_secs(3600),
            max_bytes,
        };
        let config = StoreConfig {
            kind: StoreKind::Memory,
            ..StoreConfig::default()
        };
        let secret = Secret::resolve("0123456789abcdef0123456789abcdef").unwrap();
        let store = Store::open(&config, policy, Duration::from_secs(1)).unwrap();
        Sessions::new(
            CookieCodec::new(&CookieConfig::new(vec![secret])),
            store,
            policy,
            on_error,
        )
    }

    fn asks(updates: &[&str], actions: &[&str]) -> Result<Instructions, UpdateError> {
        Instructions::parse(
            updates.iter().map(|u| u.as_bytes()),
            actions.iter().map(|a| a.as_bytes()),
        )
    }

    /// Stores `{"n":1}` for a new visitor and returns its sid.
    async fn created(sessions: &Sessions) -> Sid {
        let new = sessions.resolve(None).await.unwrap();
        match sessions
            .commit(&new, asks(&[r#"{"n":1}"#], &[]))
            .await
            .unwrap()
        {
            CookieChange::Set(sid) => {
                assert_eq!(sid, new.sid, "a new session takes the sid it was offered");
                sid
            }
            other => panic!("no cookie set: {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_visitor_without_a_sid_is_new_and_storing_nothing_creates_nothing() {
        let sessions = sessions(OnError::FailClosed);
        let new = sessions.resolve(None).await.unwrap();
        assert_eq!((new.status, &new.json[..]), (Status::New, &b"{}"[..]));
        let empty = sessions.commit(&new, asks(&[], &[])).await.unwrap();
        assert_eq!(empty, CookieChange::Keep);
        assert_eq!(
            sessions.resolve(Some(new.sid)).await.unwrap().status,
            Status::New
        );
    }

    #[tokio::test]
    async fn a_stored_session_is_loaded_with_its_data() {
        let sessions = sessions(OnError::FailClosed);
        let sid = created(&sessions).await;
        let loaded = sessions.resolve(Some(sid.clone())).await.unwrap();
        assert_eq!(loaded.status, Status::Active);
        assert_eq!(loaded.sid, sid);
        assert_eq!(&loaded.json[..], br#"{"n":1}"#);
    }

    #[tokio::test]
    async fn an_unknown_sid_is_never_adopted() {
        let sessions = sessions(OnError::FailClosed);
        let presented = Sid::generate();
        let resolved = sessions.resolve(Some(presented.clone())).await.unwrap();
        assert_eq!(resolved.status, Status::New);
        assert_ne!(resolved.sid, presented);
    }

    #[tokio::test]
    async fn rotate_moves_the_data_to_a_fresh_sid_and_the_old_one_dies() {
        let sessions = sessions(OnError::FailClosed);
        let old = created(&sessions).await;
        let active = sessions.resolve(Some(old.clone())).await.unwrap();
        let change = sessions
            .commit(&active, asks(&[r#"{"user":"ada"}"#], &["rotate"]))
            .await
            .unwrap();
        let CookieChange::Set(new) = change else {
            panic!("rotate sets a cookie: {change:?}");
        };
        assert_ne!(new, old);
        let moved = sessions.resolve(Some(new)).await.unwrap();
        assert_eq!(&moved.json[..], br#"{"n":1,"user":"ada"}"#);
        assert_eq!(
            sessions.resolve(Some(old)).await.unwrap().status,
            Status::New
        );
    }

    #[tokio::test]
    async fn destroy_ends_the_session_and_expires_the_cookie() {
        let sessions = sessions(OnError::FailClosed);
        let sid = created(&sessions).await;
        let active = sessions.resolve(Some(sid.clone())).await.unwrap();
        let change = sessions
            .commit(&active, asks(&[], &["destroy"]))
            .await
            .unwrap();
        assert_eq!(change, CookieChange::Expire);
        assert_eq!(
            sessions.resolve(Some(sid)).await.unwrap().status,
            Status::New
        );
    }

    #[tokio::test]
    async fn a_bad_or_oversized_update_changes_nothing() {
        let sessions = sessions(OnError::FailClosed);
        let sid = created(&sessions).await;
        let active = sessions.resolve(Some(sid.clone())).await.unwrap();
        let big = format!(r#"{{"blob":"{}"}}"#, "x".repeat(100));
        for bad in [
            asks(&["[1]"], &[]),
            asks(&[r#"{"__user":1}"#], &[]),
            asks(&[&big], &[]),
        ] {
            assert_eq!(
                sessions.commit(&active, bad).await.unwrap(),
                CookieChange::Keep
            );
        }
        let after = sessions.resolve(Some(sid)).await.unwrap();
        assert_eq!(&after.json[..], br#"{"n":1}"#);
    }

    #[tokio::test]
    async fn under_fail_open_a_session_that_was_unavailable_drops_its_changes() {
        let sessions = sessions(OnError::FailOpen);
        let unavailable = Resolved::without_session(Sid::generate(), Status::Unavailable);
        let update = sessions
            .commit(&unavailable, asks(&[r#"{"a":1}"#], &[]))
            .await;
        assert_eq!(update.unwrap(), CookieChange::Keep);
        let destroy = sessions.commit(&unavailable, asks(&[], &["destroy"])).await;
        assert_eq!(
            destroy.unwrap(),
            CookieChange::Expire,
            "a logout still ends the cookie"
        );
        let after = sessions.resolve(Some(unavailable.sid)).await.unwrap();
        assert_eq!(after.status, Status::New, "nothing was stored");
    }
}

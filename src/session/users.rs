//! Users and devices (SPEC §12), the session side: a backend's
//! `X-Session-User` binds the session, `destroy-others` and `destroy-all`
//! end a user's other sessions, `session.max_per_user` ends the oldest.
//! The index these rely on is the store's (`store/users.rs`).
//!
//! [`Sessions::apply_bound`] wraps the store phase: it puts `__user` into
//! the response's changes, lets [`Sessions::apply`] store them as any other
//! change, and then tidies up: the old sid's index entry after a rotate or
//! destroy, the other sessions, the oldest beyond the limit. Every save
//! that binds a session goes through [`Sessions::save_indexed`], which
//! writes the index entry first.

use tracing::warn;

use super::codec::{Changes, UpdateError};
use super::cookie::Sid;
use super::store::{SaveMode, Saved, SessionStore, StoreError, USER_FIELD, epoch_ms, valid_user};
use super::{Action, CookieChange, Instructions, Resolved, Sessions, Status};
use crate::metrics::SessionEvent;

impl Instructions {
    /// Adds the response's `X-Session-User` values: one id of 1 to 256
    /// visible ASCII characters (repeated, the same id), or an error that
    /// rejects the whole response's changes.
    pub fn bind<'a>(
        mut self,
        users: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Instructions, UpdateError> {
        for value in users {
            let id = std::str::from_utf8(value)
                .ok()
                .filter(|id| valid_user(id))
                .ok_or(UpdateError::BadUser(
                    "is not 1 to 256 visible ASCII characters",
                ))?;
            match &self.user {
                Some(user) if user != id => {
                    return Err(UpdateError::BadUser("names two different users"));
                }
                _ => self.user = Some(id.to_string()),
            }
        }
        Ok(self)
    }
}

impl Sessions {
    /// The store phase with users: the binding goes in as `__user`, then
    /// the other sessions go (`destroy-others`, `max_per_user`).
    pub(super) async fn apply_bound(
        &self,
        session: &Resolved,
        mut instructions: Instructions,
    ) -> Result<CookieChange, StoreError> {
        let active = session.status == Status::Active;
        let bound = session.user.as_deref().filter(|_| active);
        // A new binding only: the same user again changes nothing.
        let binds = match instructions.user.take() {
            Some(user) if bound != Some(user.as_str()) => {
                instructions.changes.set_meta(USER_FIELD, &user);
                Some(user)
            }
            _ => None,
        };
        let destroy_others = instructions.destroy_others;
        let destroyed = instructions.action == Some(Action::Destroy);
        let cookie = self.apply(session, instructions).await?;
        let kept = match &cookie {
            CookieChange::Set(sid) | CookieChange::Persist { sid, .. } => Some(sid),
            CookieChange::Keep if active && !destroyed => Some(&session.sid),
            CookieChange::Keep | CookieChange::Expire => None,
        };
        // The old sid's entry goes once its session has (rotated away,
        // destroyed) or has moved to another user.
        if let Some(old) = bound
            && (kept != Some(&session.sid) || binds.is_some())
            && let Err(error) = self.store.index_remove(old, &session.sid).await
        {
            warn!(%error, "a user index entry could not be dropped; it is pruned later");
        }
        let user = binds.as_deref().or(bound);
        if binds.is_some() && kept.is_some() {
            self.metrics.session(SessionEvent::Bound);
        }
        if destroy_others {
            match user {
                Some(user) => {
                    let revoked = self.store.revoke_user(user, kept).await?;
                    self.metrics.sessions_n(SessionEvent::Revoked, revoked);
                }
                None => warn!("destroy-others or destroy-all on a session bound to no user"),
            }
        }
        if let (Some(user), Some(kept), true) = (binds.as_deref(), kept, self.max_per_user > 0) {
            match self.store.trim_user(user, kept, self.max_per_user).await {
                Ok(trimmed) => self.metrics.sessions_n(SessionEvent::Revoked, trimmed),
                Err(error) => {
                    warn!(%error, "session.max_per_user could not be enforced for this login");
                }
            }
        }
        Ok(cookie)
    }

    /// [`SessionStore::save`]; when the changes bind the session to a user,
    /// its index entry is written first, scored by the session's absolute
    /// deadline (`created_ms`: an existing session's creation time).
    pub(super) async fn save_indexed(
        &self,
        sid: &Sid,
        mode: SaveMode,
        changes: &Changes,
        created_ms: Option<u64>,
    ) -> Result<Saved, StoreError> {
        let Some(user) = changes.get(USER_FIELD) else {
            return self.store.save(sid, mode, changes).await;
        };
        // A new session's creation time is fixed here, so that the index
        // entry and the session agree on its deadline.
        let (mode, created) = match mode {
            SaveMode::Create { created_ms } => {
                let created = created_ms.unwrap_or_else(epoch_ms);
                let mode = SaveMode::Create {
                    created_ms: Some(created),
                };
                (mode, created)
            }
            // Unknown, now is later than the truth: the entry outlives the session.
            SaveMode::Update => (mode, created_ms.unwrap_or_else(epoch_ms)),
        };
        let deadline = created.saturating_add(self.policy.absolute.as_millis() as u64);
        self.store.index_add(user, sid, deadline).await?;
        self.store.save(sid, mode, changes).await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::OnError;

    fn sessions(max_per_user: usize) -> Sessions {
        crate::session::tests::in_memory(OnError::FailClosed, 1000).max_per_user(max_per_user)
    }

    fn asks(
        updates: &[&str],
        actions: &[&str],
        user: &[&str],
    ) -> Result<Instructions, UpdateError> {
        Instructions::parse(
            updates.iter().map(|u| u.as_bytes()),
            actions.iter().map(|a| a.as_bytes()),
        )?
        .bind(user.iter().map(|u| u.as_bytes()))
    }

    /// A new visitor logs in as `user` (binding and rotate); the new sid.
    async fn login(sessions: &Sessions, user: &str) -> Sid {
        let new = sessions.resolve(None).await.unwrap();
        match sessions
            .commit(&new, asks(&[r#"{"cart":1}"#], &["rotate"], &[user]))
            .await
            .unwrap()
        {
            CookieChange::Set(sid) => sid,
            other => panic!("login set no cookie: {other:?}"),
        }
    }

    #[test]
    fn actions_combine_comma_separated_and_a_bad_user_is_a_bad_update() {
        let both = asks(&[], &["Rotate, destroy-others"], &[]).unwrap();
        assert_eq!(
            (both.action, both.destroy_others),
            (Some(Action::Rotate), true)
        );
        let all = asks(&[], &["destroy-all"], &[]).unwrap();
        assert_eq!(
            (all.action, all.destroy_others),
            (Some(Action::Destroy), true)
        );
        assert!(asks(&[], &["rotate, fly"], &[]).is_err());
        let bound = asks(&[], &[], &["ada", "ada"]).unwrap();
        assert_eq!(bound.user.as_deref(), Some("ada"));
        assert!(!bound.is_empty());
        for bad in [&["a b"][..], &[""], &["ada", "bob"]] {
            assert!(matches!(asks(&[], &[], bad), Err(UpdateError::BadUser(_))));
        }
    }

    #[tokio::test]
    async fn a_login_binds_the_session_and_every_later_load_says_who() {
        let sessions = sessions(0);
        let sid = login(&sessions, "ada").await;
        let loaded = sessions.resolve(Some(sid.clone())).await.unwrap();
        assert_eq!(loaded.user.as_deref(), Some("ada"));
        assert_eq!(&loaded.json[..], br#"{"cart":1}"#, "__user stays metadata");
        let listed = sessions.store().sessions_of("ada").await.unwrap();
        assert_eq!(listed.iter().map(|b| &b.sid).collect::<Vec<_>>(), [&sid]);
        // A rotate keeps the binding, under the new sid only.
        let rotated = match sessions
            .commit(&loaded, asks(&[], &["rotate"], &[]))
            .await
            .unwrap()
        {
            CookieChange::Set(sid) => sid,
            other => panic!("{other:?}"),
        };
        let listed = sessions.store().sessions_of("ada").await.unwrap();
        assert_eq!(
            listed.iter().map(|b| &b.sid).collect::<Vec<_>>(),
            [&rotated]
        );
    }

    #[tokio::test]
    async fn destroy_others_keeps_this_one_and_destroy_all_ends_every_one() {
        let sessions = sessions(0);
        let mut sids = Vec::new();
        for _ in 0..3 {
            sids.push(login(&sessions, "ada").await);
        }
        let bob = login(&sessions, "bob").await;
        let this = sessions.resolve(Some(sids[1].clone())).await.unwrap();
        let change = sessions
            .commit(&this, asks(&[], &["destroy-others"], &[]))
            .await
            .unwrap();
        assert_eq!(change, CookieChange::Keep);
        let left = sessions.store().sessions_of("ada").await.unwrap();
        assert_eq!(left.iter().map(|b| &b.sid).collect::<Vec<_>>(), [&sids[1]]);
        let this = sessions.resolve(Some(sids[1].clone())).await.unwrap();
        let change = sessions
            .commit(&this, asks(&[], &["destroy-all"], &[]))
            .await
            .unwrap();
        assert_eq!(change, CookieChange::Expire);
        assert!(
            sessions
                .store()
                .sessions_of("ada")
                .await
                .unwrap()
                .is_empty()
        );
        let bobs = sessions.store().sessions_of("bob").await.unwrap();
        assert_eq!(bobs.iter().map(|b| &b.sid).collect::<Vec<_>>(), [&bob]);
    }

    #[tokio::test]
    async fn bindings_and_revocations_are_counted_with_no_user_in_a_label() {
        let metrics = std::sync::Arc::new(crate::metrics::Metrics::new(true));
        let sessions = sessions(2).with_metrics(metrics.clone());
        let mut sids = Vec::new();
        for _ in 0..3 {
            sids.push(login(&sessions, "ada-the-user").await);
        }
        // The third login trimmed one; destroy-others ends the second.
        let this = sessions.resolve(Some(sids[2].clone())).await.unwrap();
        sessions
            .commit(&this, asks(&[], &["destroy-others"], &[]))
            .await
            .unwrap();
        let text = metrics.render();
        let count = |event: &str| {
            text.lines()
                .find(|l| {
                    l.starts_with(&format!("sessiongate_sessions_total{{event=\"{event}\"}}"))
                })
                .and_then(|l| l.rsplit(' ').next())
                .map(str::to_string)
        };
        assert_eq!(count("bound").as_deref(), Some("3"), "{text}");
        assert_eq!(count("revoked").as_deref(), Some("2"), "{text}");
        assert!(
            !text.contains("ada-the-user"),
            "a user id in a label: {text}"
        );
    }

    #[tokio::test]
    async fn max_per_user_keeps_the_newest() {
        let sessions = sessions(2);
        let mut sids = Vec::new();
        for _ in 0..3 {
            sids.push(login(&sessions, "ada").await);
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        let left = sessions.store().sessions_of("ada").await.unwrap();
        assert_eq!(
            left.iter().map(|b| &b.sid).collect::<Vec<_>>(),
            [&sids[1], &sids[2]]
        );
        let first = sessions.resolve(Some(sids[0].clone())).await.unwrap();
        assert_eq!(first.status, Status::New);
    }
}

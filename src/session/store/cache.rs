//! The local session cache (SPEC §11): sessions as this process last read
//! (or wrote) them in Redis, bounded by `max_entries` (the least recently used go
//! first), and the rules that keep a copy no older than Redis's truth:
//!
//! - copies are used only while tracking is live: [`SessionCache::go_dark`]
//!   (the tracking connection broke) drops every copy at once and refuses
//!   new ones until [`SessionCache::go_live`];
//! - an invalidation drops the sid's copy, and withdraws any read of it in
//!   flight: a read registers a [`Ticket`] before it is sent, and its answer
//!   is kept only if that ticket still stands when it arrives, so a change
//!   made while the read was on the wire never hides behind its answer;
//! - this process's own write drops the copy when it is sent and, if its
//!   answer carries the session it left ([`SessionCache::begin_write`]),
//!   that becomes the copy, unless an invalidation or another read or write
//!   of the sid came between;
//! - a copy is used only before the stored deadline it was read with (or
//!   that this process's own touch has since set);
//! - the touch: a hit asks for the stored expiry to be pushed only when it
//!   lags a fresh push by `touch_interval` or more, and only once per
//!   interval. The push itself goes out off the request's path
//!   (`tracking.rs`).
//!
//! The tracking connection itself, and what travels over it, is in
//! `tracking.rs`; this file is only the map and its rules.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::{Loaded, SessionPolicy};

/// A session as the cache holds it.
#[derive(Debug)]
pub struct Entry {
    /// The session, as a request gets it.
    pub loaded: Loaded,
    /// The stored deadline this copy may be used until, ms since the epoch.
    expires_ms: AtomicU64,
    /// When this process last asked for its expiry to be pushed.
    touch_asked_ms: AtomicU64,
}

impl Entry {
    /// A session read at `read_ms` with `ttl_ms` left to live in Redis.
    pub fn new(loaded: Loaded, read_ms: u64, ttl_ms: u64) -> Entry {
        Entry {
            loaded,
            expires_ms: AtomicU64::new(read_ms.saturating_add(ttl_ms)),
            touch_asked_ms: AtomicU64::new(0),
        }
    }

    /// The stored deadline, as a touch just read it back (0: there is none
    /// to trust: the copy is not used again).
    pub fn stored_deadline(&self, deadline_ms: u64) {
        self.expires_ms.store(deadline_ms, Ordering::Relaxed);
    }
}

/// A read in flight, registered before it was sent.
#[derive(Debug, Clone, Copy)]
pub struct Ticket {
    id: u64,
    epoch: u64,
}

/// Sessions read from Redis, kept while Redis has not said they changed.
pub struct SessionCache {
    entries: quick_cache::sync::Cache<String, Arc<Entry>>,
    /// Tracking is established: copies may be used and kept.
    live: AtomicBool,
    reads: Mutex<Reads>,
    policy: SessionPolicy,
    touch_interval_ms: u64,
}

/// The reads in flight, and the tracking epoch they began in.
#[derive(Default)]
struct Reads {
    /// Moves on every flush: a read begun before it keeps nothing.
    epoch: u64,
    next: u64,
    /// The standing ticket of each sid being read.
    pending: HashMap<String, u64>,
}

impl SessionCache {
    /// An empty cache, dark until tracking is established.
    pub fn new(max_entries: usize, policy: SessionPolicy, touch_interval_ms: u64) -> SessionCache {
        SessionCache {
            entries: quick_cache::sync::Cache::new(max_entries),
            live: AtomicBool::new(false),
            reads: Mutex::new(Reads::default()),
            policy,
            touch_interval_ms,
        }
    }

    fn reads(&self) -> std::sync::MutexGuard<'_, Reads> {
        self.reads.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether tracking is live (copies are used and kept).
    pub fn is_live(&self) -> bool {
        self.live.load(Ordering::Acquire)
    }

    /// The copy of `sid` usable at `now_ms`, if any, and whether its
    /// expiry should be pushed now (the caller sends the touch).
    pub fn get(&self, sid: &str, now_ms: u64) -> Option<(Arc<Entry>, Option<u64>)> {
        if !self.is_live() {
            return None;
        }
        let entry = self.entries.get(sid)?;
        if now_ms >= entry.expires_ms.load(Ordering::Relaxed) {
            self.entries.remove(sid);
            return None;
        }
        let touch = self.touch_due(&entry, now_ms);
        Some((entry, touch))
    }

    /// The deadline to push `entry`'s stored expiry to, if a push is due
    /// at `now_ms`: the stored deadline lags a fresh push by the touch
    /// interval or more (or a fresh push would reach the absolute deadline,
    /// and the stored one is short of it), and none was asked for within
    /// the interval.
    fn touch_due(&self, entry: &Entry, now_ms: u64) -> Option<u64> {
        let ttl = self.policy.ttl_ms(entry.loaded.created_ms, now_ms)?;
        let deadline = now_ms + ttl;
        let capped = ttl < self.policy.idle.as_millis() as u64;
        let expires = entry.expires_ms.load(Ordering::Relaxed);
        let lags = match capped {
            true => expires < deadline,
            false => expires.saturating_add(self.touch_interval_ms) <= deadline,
        };
        if !lags {
            return None;
        }
        let asked = entry.touch_asked_ms.load(Ordering::Relaxed);
        if asked.saturating_add(self.touch_interval_ms) > now_ms {
            return None;
        }
        entry
            .touch_asked_ms
            .compare_exchange(asked, now_ms, Ordering::Relaxed, Ordering::Relaxed)
            .ok()
            .map(|_| deadline)
    }

    /// Registers a read of `sid` about to be sent; `None` while tracking is
    /// down (the answer must not be kept).
    pub fn begin(&self, sid: &str) -> Option<Ticket> {
        if !self.is_live() {
            return None;
        }
        let mut reads = self.reads();
        reads.next += 1;
        let id = reads.next;
        reads.pending.insert(sid.to_string(), id);
        Some(Ticket {
            id,
            epoch: reads.epoch,
        })
    }

    /// The answer to a read begun with `ticket`: kept only if nothing
    /// withdrew the ticket meanwhile, and returned either way (with
    /// whether a touch is due). `None` (no session, or the read failed)
    /// just ends the read.
    pub fn finish(
        &self,
        sid: &str,
        ticket: Ticket,
        entry: Option<Entry>,
        now_ms: u64,
    ) -> Option<(Arc<Entry>, Option<u64>)> {
        let entry = entry.map(Arc::new);
        let mut reads = self.reads();
        let standing = reads.pending.get(sid) == Some(&ticket.id);
        if standing {
            reads.pending.remove(sid);
        }
        let entry = entry?;
        self.keep(&reads, standing, sid, ticket, &entry);
        drop(reads);
        let touch = self.touch_due(&entry, now_ms);
        Some((entry, touch))
    }

    /// Keeps the answer to `ticket`'s read or write if its ticket was still
    /// standing and no flush or dark spell came since it began.
    fn keep(&self, reads: &Reads, standing: bool, sid: &str, ticket: Ticket, entry: &Arc<Entry>) {
        if standing && reads.epoch == ticket.epoch && self.is_live() {
            self.entries.insert(sid.to_string(), entry.clone());
        }
    }

    /// Registers a write of `sid` about to be sent over the tracking
    /// connection, whose answer is the session as it left it: the old copy
    /// goes, and every read in flight is withdrawn. `None` while tracking is
    /// down.
    pub fn begin_write(&self, sid: &str) -> Option<Ticket> {
        self.invalidate(sid);
        self.begin(sid)
    }

    /// The answer to a write begun with `ticket`: the session as the write
    /// left it (`None`: the write failed, or left no session to keep). Every
    /// read of `sid` still in flight is withdrawn and any copy dropped, since
    /// a read sent over another connection may have been answered before
    /// the write ran; the write's own answer is kept only if no
    /// invalidation, and no later read or write, came since it began.
    pub fn finish_write(&self, sid: &str, ticket: Ticket, entry: Option<Entry>) {
        let mut reads = self.reads();
        let standing = reads.pending.remove(sid) == Some(ticket.id);
        self.entries.remove(sid);
        if let Some(entry) = entry {
            self.keep(&reads, standing, sid, ticket, &Arc::new(entry));
        }
    }

    /// `sid` changed (or is about to, by this process): drop its copy and
    /// withdraw any read of it in flight.
    pub fn invalidate(&self, sid: &str) {
        let mut reads = self.reads();
        reads.pending.remove(sid);
        self.entries.remove(sid);
    }

    /// Everything may have changed (a `FLUSHALL`, or a new tracking
    /// connection): drop every copy and withdraw every read in flight.
    pub fn flush(&self) {
        let mut reads = self.reads();
        reads.epoch += 1;
        reads.pending.clear();
        self.entries.clear();
    }

    /// Tracking is lost: nothing is used or kept until [`go_live`](Self::go_live).
    pub fn go_dark(&self) {
        self.live.store(false, Ordering::Release);
        self.flush();
    }

    /// Tracking is (re-)established: copies are kept again, from empty.
    pub fn go_live(&self) {
        self.flush();
        self.live.store(true, Ordering::Release);
    }

    /// How many copies it holds.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const IDLE: u64 = 60_000;
    const TOUCH: u64 = 10_000;

    fn cache(max: usize) -> SessionCache {
        let policy = SessionPolicy {
            idle: Duration::from_millis(IDLE),
            absolute: Duration::from_millis(10 * IDLE),
            max_bytes: 4096,
        };
        let cache = SessionCache::new(max, policy, TOUCH);
        cache.go_live();
        cache
    }

    fn entry(text: &str, read_ms: u64, ttl_ms: u64) -> Entry {
        let loaded = Loaded {
            json: bytes::Bytes::from(text.to_string()),
            created_ms: 0,
            user: None,
            persist: false,
        };
        Entry::new(loaded, read_ms, ttl_ms)
    }

    fn read(cache: &SessionCache, sid: &str, text: &str, now: u64) {
        let ticket = cache.begin(sid).unwrap();
        cache.finish(sid, ticket, Some(entry(text, now, IDLE)), now);
    }

    #[test]
    fn a_read_answer_is_kept_and_served_until_its_deadline() {
        let cache = cache(10);
        read(&cache, "a", "{}", 1_000);
        assert_eq!(cache.get("a", 1_000).unwrap().0.loaded.json, "{}");
        assert!(cache.get("a", 1_000 + IDLE - 1).is_some());
        assert!(cache.get("a", 1_000 + IDLE).is_none());
    }

    #[test]
    fn an_invalidation_while_the_read_is_in_flight_keeps_its_answer_out() {
        let cache = cache(10);
        let ticket = cache.begin("a").unwrap();
        cache.invalidate("a");
        let served = cache.finish("a", ticket, Some(entry("old", 0, IDLE)), 0);
        assert!(served.is_some(), "the request still gets what it read");
        assert!(cache.get("a", 0).is_none(), "but it is not kept");
    }

    #[test]
    fn a_flush_or_a_dark_spell_during_a_read_keeps_its_answer_out() {
        let cache = cache(10);
        let ticket = cache.begin("a").unwrap();
        cache.go_dark();
        cache.go_live();
        cache.finish("a", ticket, Some(entry("old", 0, IDLE)), 0);
        assert!(cache.get("a", 0).is_none());
    }

    #[test]
    fn a_dark_cache_serves_nothing_and_registers_no_reads() {
        let cache = cache(10);
        read(&cache, "a", "{}", 0);
        cache.go_dark();
        assert!(cache.get("a", 0).is_none());
        assert!(cache.begin("a").is_none());
        cache.go_live();
        assert!(cache.get("a", 0).is_none(), "copies from before are gone");
    }

    #[test]
    fn the_later_of_two_reads_of_one_sid_is_the_one_kept() {
        let cache = cache(10);
        let first = cache.begin("a").unwrap();
        let second = cache.begin("a").unwrap();
        cache.finish("a", second, Some(entry("new", 0, IDLE)), 0);
        cache.finish("a", first, Some(entry("old", 0, IDLE)), 0);
        assert_eq!(cache.get("a", 0).unwrap().0.loaded.json, "new");
    }

    #[test]
    fn a_touch_is_due_once_the_stored_expiry_lags_by_the_interval_and_once_per_interval() {
        let cache = cache(10);
        read(&cache, "a", "{}", 0);
        assert_eq!(cache.get("a", TOUCH - 1).unwrap().1, None);
        assert_eq!(cache.get("a", TOUCH).unwrap().1, Some(TOUCH + IDLE));
        assert_eq!(cache.get("a", TOUCH + 1).unwrap().1, None, "asked already");
        let (entry, _) = cache.get("a", TOUCH + 2).unwrap();
        entry.stored_deadline(TOUCH + IDLE);
        assert_eq!(cache.get("a", 2 * TOUCH - 1).unwrap().1, None);
        assert_eq!(cache.get("a", 2 * TOUCH).unwrap().1, Some(2 * TOUCH + IDLE));
    }

    #[test]
    fn near_the_absolute_deadline_one_touch_pushes_to_it_and_never_past() {
        let cache = cache(10);
        let absolute = 10 * IDLE;
        // Read with an idle timeout's life left, a touch interval before
        // the push would be capped.
        let read_at = absolute - IDLE - TOUCH / 2;
        let ticket = cache.begin("a").unwrap();
        cache.finish("a", ticket, Some(entry("{}", read_at, IDLE)), read_at);
        let (entry, touch) = cache.get("a", read_at + TOUCH / 2 + 1).unwrap();
        assert_eq!(
            touch,
            Some(absolute),
            "a push short of the interval, to the cap"
        );
        entry.stored_deadline(absolute);
        let later = read_at + 3 * TOUCH;
        assert_eq!(
            cache.get("a", later).unwrap().1,
            None,
            "nothing left to push"
        );
    }

    #[test]
    fn a_write_answer_replaces_the_copy_unless_something_came_between() {
        let cache = cache(10);
        read(&cache, "a", "old", 0);
        let ticket = cache.begin_write("a").unwrap();
        assert!(cache.get("a", 0).is_none(), "the old copy goes at once");
        cache.finish_write("a", ticket, Some(entry("new", 0, IDLE)));
        assert_eq!(cache.get("a", 0).unwrap().0.loaded.json, "new");

        let ticket = cache.begin_write("a").unwrap();
        cache.invalidate("a");
        cache.finish_write("a", ticket, Some(entry("newer", 0, IDLE)));
        assert!(cache.get("a", 0).is_none(), "an invalidation came between");
    }

    #[test]
    fn a_read_begun_before_a_write_was_answered_is_never_kept() {
        let cache = cache(10);
        let write = cache.begin_write("a").unwrap();
        // A read over another connection, answered before the write ran.
        let read = cache.begin("a").unwrap();
        cache.finish("a", read, Some(entry("before the write", 0, IDLE)), 0);
        cache.finish_write("a", write, Some(entry("written", 0, IDLE)));
        assert!(
            cache.get("a", 0).is_none(),
            "neither the read nor the write it overtook is kept"
        );

        let write = cache.begin_write("a").unwrap();
        let read = cache.begin("a").unwrap();
        cache.finish_write("a", write, Some(entry("written", 0, IDLE)));
        cache.finish("a", read, Some(entry("before the write", 0, IDLE)), 0);
        assert!(
            cache.get("a", 0).is_none(),
            "a read still in flight is withdrawn"
        );
    }

    #[test]
    fn a_write_answered_after_a_flush_keeps_nothing() {
        let cache = cache(10);
        let ticket = cache.begin_write("a").unwrap();
        cache.flush();
        cache.finish_write("a", ticket, Some(entry("new", 0, IDLE)));
        assert!(cache.get("a", 0).is_none());
        cache.go_dark();
        assert!(cache.begin_write("a").is_none());
    }

    #[test]
    fn the_cache_holds_at_most_max_entries() {
        let cache = cache(100);
        for i in 0..1_000 {
            read(&cache, &format!("s{i}"), "{}", 0);
        }
        assert!(cache.len() <= 100, "{}", cache.len());
    }
}

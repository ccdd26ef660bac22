//! `[store.cache]`: the local session cache in front of Redis, kept
//! coherent by Redis's server-assisted client-side caching. SPEC §11.

use std::time::Duration;

use serde::Deserialize;

/// `[store.cache]`; off unless the table is present.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Sessions kept in this process; the least recently used go first.
    pub max_entries: usize,
    /// A session's stored expiry is pushed at most this often.
    #[serde(deserialize_with = "super::duration::parse")]
    pub touch_interval: Duration,
    /// How Redis tells this process which sessions changed.
    pub mode: TrackingMode,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            max_entries: 100_000,
            touch_interval: Duration::from_secs(60),
            mode: TrackingMode::Default,
        }
    }
}

/// `store.cache.mode`: which `CLIENT TRACKING` mode the cache uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrackingMode {
    /// Redis remembers which sessions this process read, and tells it when
    /// one of those changes; misses are read over the tracking connection.
    Default,
    /// Redis tells this process of every change to any key under
    /// `key_prefix`, read or not; misses go over the ordinary connection.
    Bcast,
}

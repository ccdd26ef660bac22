//! `[store]`: where sessions are kept, and what happens when it is down.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

/// `[store]`
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Which store keeps the sessions.
    pub kind: StoreKind,
    /// The Redis URL (`redis://[user:password@]host:port/db`).
    pub url: String,
    /// Prepended to every session key.
    pub key_prefix: String,
    /// What a request that needs the store gets when the store is down.
    pub on_error: OnError,
    /// The deadline of one store call, reconnection included.
    #[serde(deserialize_with = "super::duration::parse")]
    pub timeout: Duration,
    /// The `Retry-After` of a 503 answered because the store is down.
    #[serde(deserialize_with = "super::duration::parse")]
    pub retry_after: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            kind: StoreKind::Redis,
            url: "redis://127.0.0.1:6379/0".to_string(),
            key_prefix: "sg:".to_string(),
            on_error: OnError::FailClosed,
            timeout: Duration::from_secs(1),
            retry_after: Duration::from_secs(5),
        }
    }
}

impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreConfig")
            .field("kind", &self.kind)
            .field("url", &redact_url(&self.url))
            .field("key_prefix", &self.key_prefix)
            .field("on_error", &self.on_error)
            .field("timeout", &self.timeout)
            .field("retry_after", &self.retry_after)
            .finish()
    }
}

impl StoreConfig {
    /// What the store talks to, for `check` and the log: the kind and its
    /// URL, nodes or sentinels, never a password.
    pub fn target(&self) -> String {
        match self.kind {
            StoreKind::Memory => "memory".into(),
            StoreKind::Redis => format!("redis {}", redact_url(&self.url)),
        }
    }
}

/// `store.kind`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// Redis, shared by every sessiongate instance.
    Redis,
    /// This process's memory: one instance only, lost at exit.
    Memory,
}

/// `store.on_error`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// Answer 503 with `Retry-After`.
    FailClosed,
    /// Forward with `X-Session-Status: unavailable`; drop updates.
    FailOpen,
}

/// Hides the password of a URL such as `redis://user:password@host/0`.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => {
            let user = rest[..at].split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme_end], &rest[at..])
        }
        None => url.to_string(),
    }
}

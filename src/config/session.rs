//! `[session]`: session lifetime and the header protocol with the backends.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer, de};

use super::is_token_byte;

/// `[session]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    /// Sliding expiry: every use pushes it forward.
    #[serde(deserialize_with = "super::duration::parse")]
    pub idle_timeout: Duration,
    /// Hard cap from creation, never extended.
    #[serde(deserialize_with = "super::duration::parse")]
    pub absolute_timeout: Duration,
    /// The prefix of every session header.
    #[serde(deserialize_with = "header_prefix")]
    pub header_prefix: String,
    /// The largest session, counted as the bytes of its `X-Session` text.
    pub max_bytes: usize,
    /// At most this many sessions per user; binding one more destroys the
    /// oldest (SPEC §12). 0: no limit.
    pub max_per_user: usize,
    /// `[session.expose]`: header name -> session key, sent to the backend
    /// as a plain header (SPEC §12).
    #[serde(deserialize_with = "super::expose::parse")]
    pub expose: BTreeMap<String, String>,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            idle_timeout: Duration::from_secs(30 * 60),
            absolute_timeout: Duration::from_secs(24 * 3600),
            header_prefix: "X-Session".to_string(),
            max_bytes: 8192,
            max_per_user: 0,
            expose: BTreeMap::new(),
        }
    }
}

fn header_prefix<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let prefix = String::deserialize(d)?;
    if prefix.is_empty() || !prefix.bytes().all(is_token_byte) {
        return Err(de::Error::custom(format!(
            "{prefix:?} is not a header name prefix (letters, digits and -)"
        )));
    }
    Ok(prefix)
}

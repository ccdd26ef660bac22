//! Durations as the configuration writes them: `"750ms"`, `"30s"`, `"30m"`,
//! `"24h"`. Fields are plain [`Duration`]s, read with
//! `#[serde(deserialize_with = "duration::parse")]` and shown with [`show`].

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, de};

/// Reads a duration string; zero is refused (no deadline here may be zero).
pub fn parse<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    let duration = humantime::parse_duration(&text).map_err(|e| {
        de::Error::custom(format!(
            "{text:?} is not a duration ({e}); write it as \"750ms\", \"30s\", \"30m\" or \"24h\""
        ))
    })?;
    if duration.is_zero() {
        return Err(de::Error::custom("a duration of zero is not allowed here"));
    }
    Ok(duration)
}

/// A duration as the configuration would write it (`30m`, `1h 30m`).
pub fn show(duration: Duration) -> impl fmt::Display {
    humantime::format_duration(duration)
}

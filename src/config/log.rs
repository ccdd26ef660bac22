//! `[log]`: the access log on stdout and the format of the diagnostic log
//! on stderr (SPEC §9).

use serde::Deserialize;

/// `[log]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// One line per request to stdout, or none.
    pub access: AccessLogFormat,
    /// The access log keeps the query string (off: the path alone).
    pub query: bool,
    /// The diagnostic log on stderr.
    pub format: LogFormat,
}

/// `log.access`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessLogFormat {
    /// No access log.
    #[default]
    Off,
    /// `key=value` pairs on one line.
    Text,
    /// One JSON object per line.
    Json,
}

/// `log.format`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl LogConfig {
    /// Rules of `[log]`: none beyond its values, which serde checks.
    pub(crate) fn check(&self) -> Result<(), (&'static str, String)> {
        Ok(())
    }

    /// `check`'s line.
    pub(crate) fn describe(&self) -> String {
        let access = match self.access {
            AccessLogFormat::Off => "access log off".to_string(),
            format => format!(
                "access log {} on stdout, {}",
                if format == AccessLogFormat::Json {
                    "json"
                } else {
                    "text"
                },
                if self.query {
                    "with query strings"
                } else {
                    "paths without query strings"
                }
            ),
        };
        let format = match self.format {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        };
        format!("log        {access}; diagnostics as {format} on stderr")
    }
}

//! Configuration: the TOML file's types, their defaults and validation, and
//! where a problem is in the file.
//!
//! - one file per section: [`server`] (and `[timeouts]`), [`upstreams`],
//!   [`cookie`], [`session`], [`store`] (and [`cache`], `[store.cache]`);
//! - [`secrets`]: inline, `env:NAME` or `file:/path`, with permission checks;
//! - [`duration`]: `"750ms"`, `"30s"`, `"30m"`, `"24h"`;
//! - `validate.rs`: rules across keys, and warnings;
//! - `locate.rs`: the line, column and dotted key of an error;
//! - `describe.rs`: what `check` prints.
//!
//! Every key is checked while it is read, so an error can name the file, the
//! line and the key; unknown keys are errors (`deny_unknown_fields`).
//! Secrets never appear in an error message or in [`Config::describe`].

pub mod admin;
pub mod cache;
pub mod cookie;
mod describe;
pub mod duration;
mod edge;
mod expose;
mod locate;
pub mod log;
pub mod routes;
pub mod secrets;
pub mod server;
pub mod session;
pub mod store;
pub mod tls;
pub mod upstreams;
mod validate;

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use self::admin::AdminConfig;
pub use self::cache::{CacheConfig, TrackingMode};
pub use self::cookie::{CookieConfig, SameSite};
use self::locate::{key_at, line_col, span_of};
pub use self::log::{AccessLogFormat, LogConfig, LogFormat};
pub use self::secrets::{MIN_SECRET_BYTES, Secret};
pub use self::server::{MIN_HEADER_BYTES, ServerConfig, TimeoutsConfig};
pub use self::session::SessionConfig;
pub use self::store::{OnError, StoreConfig, StoreKind, redact_url};
pub use self::upstreams::{HealthConfig, UpstreamServer, UpstreamUrl, UpstreamsConfig};

/// The whole configuration, as read from one TOML file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where clients connect.
    #[serde(default)]
    pub server: ServerConfig,
    /// The backends that requests are balanced over.
    pub upstreams: UpstreamsConfig,
    /// The session cookie: its name, attributes and signing secrets.
    pub cookie: CookieConfig,
    /// Session lifetime and the header protocol with the backends.
    #[serde(default)]
    pub session: SessionConfig,
    /// Where sessions are kept.
    #[serde(default)]
    pub store: StoreConfig,
    /// The deadline of every network wait (the store's is `store.timeout`).
    #[serde(default)]
    pub timeouts: TimeoutsConfig,
    /// The admin listener: health, metrics, status; off unless present.
    #[serde(default)]
    pub admin: Option<AdminConfig>,
    /// The access log and the diagnostic log's format.
    #[serde(default)]
    pub log: LogConfig,
    /// `[[routes]]`: which pool serves a request, with or without sessions.
    #[serde(default)]
    pub routes: Vec<routes::RouteConfig>,
}

/// RFC 9110 §5.6.2 `tchar`.
pub(crate) fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A configuration that could not be used, located in its file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read. The OS error is the [`source`] only, so
    /// that a chain printed with `{:#}` names it once.
    ///
    /// [`source`]: std::error::Error::source
    #[error("{file}: cannot read the configuration")]
    Read {
        /// The file.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A key is missing, unknown or has a bad value.
    #[error("{file}{location}: {message}")]
    Invalid {
        /// The file.
        file: PathBuf,
        /// `:line:column: key` when known.
        location: Location,
        /// What is wrong.
        message: String,
    },
}

/// Where in the file a problem is: line, column and the dotted key.
#[derive(Debug, Default)]
pub struct Location {
    line_col: Option<(usize, usize)>,
    key: Option<String>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some((line, col)) = self.line_col {
            write!(f, ":{line}:{col}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": {key}")?;
        }
        Ok(())
    }
}

impl Config {
    /// Reads and validates the configuration file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parses and validates configuration text; `file` names it in errors.
    pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
        let invalid = |span: Option<Range<usize>>, key: Option<String>, message: String| {
            let key = key.or_else(|| span.clone().and_then(|s| key_at(text, s.start)));
            ConfigError::Invalid {
                file: file.to_path_buf(),
                location: Location {
                    line_col: span.map(|s| line_col(text, s.start)),
                    key,
                },
                message,
            }
        };
        let mut config: Config = toml::from_str(text)
            .map_err(|e| invalid(e.span(), None, e.message().trim().to_string()))?;
        config.check_combinations().map_err(|(key, message)| {
            invalid(span_of(text, key), Some(key.to_string()), message)
        })?;
        // TLS files, pools and routes (`edge.rs`).
        config
            .check_edge()
            .map_err(|(key, message)| invalid(edge::span_of(text, &key), Some(key), message))?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, Path::new("test.toml")).map_err(|e| e.to_string())
    }

    fn minimal(extra: &str) -> String {
        format!(
            "[upstreams]\nservers = [\"http://127.0.0.1:9001\"]\n\n[cookie]\nsecrets = [\"{SECRET}\"]\n{extra}"
        )
    }

    #[test]
    fn minimal_config_takes_the_spec_defaults() {
        let config = parse(&minimal("")).unwrap();
        assert_eq!(config.server.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.cookie.name, "sg_session");
        assert!(config.cookie.secure && config.cookie.http_only);
        assert_eq!(config.cookie.same_site, SameSite::Lax);
        assert_eq!(config.session.idle_timeout, Duration::from_secs(1800));
        assert_eq!(config.session.absolute_timeout, Duration::from_secs(86400));
        assert_eq!(config.session.header_prefix, "X-Session");
        assert_eq!(config.session.max_bytes, 8192);
        assert_eq!(config.store.kind, StoreKind::Redis);
        assert_eq!(config.store.key_prefix, "sg:");
        assert_eq!(config.store.on_error, OnError::FailClosed);
    }

    #[test]
    fn the_example_config_in_the_repository_is_valid() {
        // The example reads its secret from the environment; give it one inline.
        let text = include_str!("../../config.toml")
            .replace("\"env:SESSIONGATE_SECRET\"", &format!("\"{SECRET}\""));
        assert!(text.contains(SECRET));
        let config = Config::parse(&text, Path::new("config.toml")).unwrap();
        assert_eq!(config.upstreams.servers.len(), 2);
    }

    #[test]
    fn a_touch_interval_not_shorter_than_the_idle_timeout_is_refused() {
        let err = parse(&minimal(
            "[session]\nidle_timeout = \"1m\"\n[store.cache]\ntouch_interval = \"1m\"\n",
        ))
        .unwrap_err();
        assert!(err.contains("store.cache.touch_interval"), "{err}");
        assert!(
            err.contains("shorter than session.idle_timeout (1m)"),
            "{err}"
        );
        let ok = "[session]\nidle_timeout = \"1m\"\n[store.cache]\ntouch_interval = \"59s\"\n";
        assert!(parse(&minimal(ok)).is_ok());
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let err = parse(&minimal(
            "[session]\nidle_timeout = \"5m\"\nidle_timout = \"5m\"\n",
        ))
        .unwrap_err();
        assert!(
            err.starts_with("test.toml:8:1: session.idle_timout:"),
            "{err}"
        );
        assert!(err.contains("unknown field"), "{err}");
    }

    #[test]
    fn bad_duration_names_the_key_and_the_accepted_forms() {
        let err = parse(&minimal("[session]\nidle_timeout = \"30 minuts\"\n")).unwrap_err();
        assert!(
            err.starts_with("test.toml:7:16: session.idle_timeout:"),
            "{err}"
        );
        assert!(err.contains("\"30s\""), "{err}");
    }

    #[test]
    fn durations_accept_the_spec_forms() {
        for (text, ms) in [
            ("750ms", 750),
            ("30s", 30_000),
            ("30m", 1_800_000),
            ("24h", 86_400_000),
        ] {
            let config =
                parse(&minimal(&format!("[session]\nidle_timeout = \"{text}\"\n"))).unwrap();
            assert_eq!(config.session.idle_timeout.as_millis(), ms);
        }
    }

    #[test]
    fn empty_server_list_is_an_error() {
        let err = parse(&format!(
            "[upstreams]\nservers = []\n[cookie]\nsecrets = [\"{SECRET}\"]\n"
        ))
        .unwrap_err();
        assert!(err.contains("upstreams.servers"), "{err}");
        assert!(err.contains("empty"), "{err}");
    }

    #[test]
    fn upstream_urls_must_be_http_with_a_port_and_no_path() {
        for bad in [
            "ftp://127.0.0.1:9001",
            "127.0.0.1:9001",
            "http://127.0.0.1",
            "http://h:1/app",
        ] {
            let text = format!(
                "[upstreams]\nservers = [\"http://127.0.0.1:1\", \"{bad}\"]\n[cookie]\nsecrets = [\"{SECRET}\"]\n"
            );
            let err = parse(&text).unwrap_err();
            assert!(
                err.contains("upstreams.servers:") && err.contains(bad),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn missing_secret_environment_variable_is_named() {
        let text = "[upstreams]\nservers = [\"http://127.0.0.1:9001\"]\n[cookie]\nsecrets = [\"env:SG_TEST_UNSET_VARIABLE\"]\n";
        let err = parse(text).unwrap_err();
        assert!(err.contains("cookie.secrets:"), "{err}");
        assert!(err.contains("SG_TEST_UNSET_VARIABLE is not set"), "{err}");
    }

    #[test]
    fn short_secret_is_refused_without_showing_it() {
        let text = "[upstreams]\nservers = [\"http://127.0.0.1:9001\"]\n[cookie]\nsecrets = [\"hunter2-is-short\"]\n";
        let err = parse(text).unwrap_err();
        assert!(err.contains("at least 32"), "{err}");
        assert!(!err.contains("hunter2"), "the secret leaked: {err}");
    }

    #[test]
    fn file_secret_is_trimmed_and_checked_for_permissions() {
        let dir = std::env::temp_dir().join(format!("sg-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("secret");
        std::fs::write(&path, format!("{SECRET}\n")).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        let secret = Secret::resolve(&format!("file:{}", path.display())).unwrap();
        assert_eq!(secret.bytes, SECRET.as_bytes());
        assert!(secret.readable_by_others);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_secret_written_without_brackets_is_not_repeated_in_the_error() {
        let text = "[upstreams]\nservers = [\"http://127.0.0.1:9001\"]\n[cookie]\nsecrets = \"s3cr3t-s3cr3t-s3cr3t-s3cr3t-s3cr3t\"\n";
        let err = parse(text).unwrap_err();
        assert!(
            err.contains("cookie.secrets") && err.contains("must be a list"),
            "{err}"
        );
        assert!(!err.contains("s3cr3t"), "the secret leaked: {err}");
    }

    #[test]
    fn debug_output_hides_secrets_and_the_redis_password() {
        let config = parse(&minimal(
            "[store]\nurl = \"redis://app:pa55word@127.0.0.1:6379/0\"\n",
        ))
        .unwrap();
        let debug = format!("{config:?}");
        assert!(
            !debug.contains(SECRET) && !debug.contains("pa55word"),
            "{debug}"
        );
    }

    #[test]
    fn a_secret_file_that_never_ends_is_refused_not_read_forever() {
        let err = Secret::resolve("file:/dev/zero").unwrap_err();
        assert!(err.contains("larger than 64 KiB"), "{err}");
    }

    #[test]
    fn same_site_none_needs_secure() {
        let err = parse(&minimal("secure = false\nsame_site = \"none\"\n")).unwrap_err();
        assert!(
            err.starts_with("test.toml:7:13: cookie.same_site:"),
            "{err}"
        );
    }

    #[test]
    fn host_prefixed_cookie_enforces_its_rules() {
        let err = parse(&minimal("name = \"__Host-s\"\npath = \"/app\"\n")).unwrap_err();
        assert!(err.contains("cookie.path"), "{err}");
        let err = parse(&minimal("name = \"__Host-s\"\ndomain = \"example.com\"\n")).unwrap_err();
        assert!(err.contains("cookie.domain"), "{err}");
        assert!(parse(&minimal("name = \"__Host-s\"\n")).is_ok());
    }

    #[test]
    fn bad_enum_value_is_named() {
        let err = parse(&minimal("[store]\non_error = \"fail_sometimes\"\n")).unwrap_err();
        assert!(err.contains("store.on_error"), "{err}");
        assert!(err.contains("fail_closed"), "{err}");
    }

    #[test]
    fn describe_hides_secrets_and_redis_passwords() {
        let config = parse(&minimal(
            "[store]\nurl = \"redis://app:pa55word@127.0.0.1:6379/0\"\n",
        ))
        .unwrap();
        let text = config.describe();
        assert!(
            !text.contains(SECRET) && !text.contains("pa55word"),
            "{text}"
        );
        assert!(text.contains("redis://***@127.0.0.1:6379/0"), "{text}");
        assert!(!text.contains("app:"), "the user name shows: {text}");
    }
}

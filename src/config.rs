//! Configuration: the TOML file's types, their defaults and validation, and
//! the loading of cookie secrets (inline, `env:NAME` or `file:/path`).
//!
//! Every key is checked while it is read, so an error can name the file, the
//! line and the key; unknown keys are errors (`deny_unknown_fields`).
//! Secrets never appear in an error message or in [`Config::describe`].

use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, de};

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
}

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// The address the proxy listens on.
    pub listen: SocketAddr,
    /// The largest request head (request line and headers), in bytes.
    pub max_header_bytes: usize,
    /// The most header fields a request may have.
    pub max_headers: usize,
    /// Threads serving requests; 0 means one per CPU core.
    pub worker_threads: usize,
    /// Peers (a TLS-terminating proxy in front) whose `X-Forwarded-Proto`
    /// and `X-Forwarded-Host` are passed on instead of replaced.
    pub trusted_proxies: Vec<std::net::IpAddr>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            worker_threads: 0,
            trusted_proxies: Vec::new(),
        }
    }
}

/// The least `server.max_header_bytes` may be: hyper's smallest read buffer.
pub const MIN_HEADER_BYTES: usize = 8192;

/// `[timeouts]`: every network wait has one of these deadlines.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimeoutsConfig {
    /// Connecting to an upstream server.
    pub upstream_connect: Dur,
    /// From sending a request upstream until its response head arrives.
    pub upstream_response: Dur,
    /// How long a pooled upstream connection may sit idle before it is closed.
    pub upstream_idle: Dur,
    /// The longest pause within a request or response body, either way.
    pub body_idle: Dur,
    /// A client's whole request head, from its first byte (or from accept).
    pub request_header: Dur,
    /// An idle client keep-alive connection.
    pub keepalive: Dur,
    /// At shutdown, how long in-flight requests get to finish.
    pub drain: Dur,
}

impl Default for TimeoutsConfig {
    fn default() -> Self {
        let secs = |s| Dur(Duration::from_secs(s));
        TimeoutsConfig {
            upstream_connect: secs(2),
            upstream_response: secs(60),
            upstream_idle: secs(60),
            body_idle: secs(60),
            request_header: secs(10),
            keepalive: secs(75),
            drain: secs(30),
        }
    }
}

/// `[upstreams]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamsConfig {
    /// The backend servers, balanced round-robin.
    #[serde(deserialize_with = "non_empty")]
    pub servers: Vec<UpstreamServer>,
    /// Consecutive failures that take a server out of rotation.
    #[serde(default = "default_max_fails")]
    pub max_fails: u32,
    /// How long a server that failed `max_fails` times stays out.
    #[serde(default = "default_fail_timeout")]
    pub fail_timeout: Dur,
    /// Idle pooled connections kept per server.
    #[serde(default = "default_max_idle")]
    pub max_idle_connections: usize,
    /// Active health checks; none by default.
    #[serde(default)]
    pub health: Option<HealthConfig>,
}

fn default_max_fails() -> u32 {
    3
}

fn default_fail_timeout() -> Dur {
    Dur(Duration::from_secs(10))
}

fn default_max_idle() -> usize {
    64
}

/// One entry of `upstreams.servers`: `"http://host:port"`, or
/// `{ url = "http://host:port", weight = 3 }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamServer {
    /// Where it is.
    pub url: UpstreamUrl,
    /// Its share of the requests, relative to the others (1 to 100).
    pub weight: u32,
}

impl<'de> Deserialize<'de> for UpstreamServer {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Weighted {
            url: UpstreamUrl,
            #[serde(default = "one")]
            weight: u32,
        }
        fn one() -> u32 {
            1
        }
        struct Visitor;
        impl<'de> de::Visitor<'de> for Visitor {
            type Value = UpstreamServer;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"http://host:port\" or { url = \"http://host:port\", weight = N }")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<UpstreamServer, E> {
                let url = text.parse().map_err(E::custom)?;
                Ok(UpstreamServer { url, weight: 1 })
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<UpstreamServer, A::Error> {
                let w = Weighted::deserialize(de::value::MapAccessDeserializer::new(map))?;
                if !(1..=100).contains(&w.weight) {
                    return Err(de::Error::custom(format!(
                        "weight {} is not between 1 and 100",
                        w.weight
                    )));
                }
                Ok(UpstreamServer {
                    url: w.url,
                    weight: w.weight,
                })
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// `[upstreams.health]`: active health checks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// The path probed with GET; a 2xx or 3xx answer is healthy.
    pub path: String,
    /// Time between probes of a server.
    pub interval: Dur,
    /// How long a probe may take.
    pub timeout: Dur,
    /// Consecutive good probes that bring a server back.
    pub healthy_threshold: u32,
    /// Consecutive bad probes that take a server out.
    pub unhealthy_threshold: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            path: "/".into(),
            interval: Dur(Duration::from_secs(5)),
            timeout: Dur(Duration::from_secs(1)),
            healthy_threshold: 2,
            unhealthy_threshold: 3,
        }
    }
}

/// An upstream server's address: `http://host:port`, with no path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamUrl {
    /// `host:port` as written, used as the request URI's authority.
    pub authority: http::uri::Authority,
}

impl fmt::Display for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}", self.authority)
    }
}

impl std::str::FromStr for UpstreamUrl {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let uri: http::Uri = text
            .parse()
            .map_err(|e| format!("{text:?} is not a URL: {e}"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(other) => {
                return Err(format!(
                    "{text:?}: scheme {other:?} is not supported (upstreams speak plain http)"
                ));
            }
            None => return Err(format!("{text:?} needs a scheme, as in http://{text}")),
        }
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| format!("{text:?} has no host"))?;
        if authority.port_u16().is_none() {
            return Err(format!(
                "{text:?} needs a port, as in http://{authority}:80"
            ));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(format!(
                "{text:?}: a path is not supported; requests keep their own path"
            ));
        }
        Ok(UpstreamUrl { authority })
    }
}

impl<'de> Deserialize<'de> for UpstreamUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(de::Error::custom)
    }
}

/// `[cookie]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CookieConfig {
    /// The cookie's name.
    #[serde(default = "default_cookie_name", deserialize_with = "cookie_name")]
    pub name: String,
    /// The first secret signs; every secret verifies (key rotation).
    #[serde(deserialize_with = "secret_list")]
    pub secrets: Vec<Secret>,
    /// The `Secure` attribute.
    #[serde(default = "yes")]
    pub secure: bool,
    /// The `HttpOnly` attribute.
    #[serde(default = "yes")]
    pub http_only: bool,
    /// The `SameSite` attribute.
    #[serde(default)]
    pub same_site: SameSite,
    /// The `Path` attribute.
    #[serde(default = "default_cookie_path", deserialize_with = "cookie_path")]
    pub path: String,
    /// The `Domain` attribute; none by default (a host-only cookie).
    #[serde(default)]
    pub domain: Option<String>,
}

impl CookieConfig {
    /// The default cookie (`sg_session`, `Secure`, `HttpOnly`, `SameSite=Lax`,
    /// `Path=/`) signed with these secrets.
    pub fn new(secrets: Vec<Secret>) -> CookieConfig {
        CookieConfig {
            name: default_cookie_name(),
            secrets,
            secure: true,
            http_only: true,
            same_site: SameSite::default(),
            path: default_cookie_path(),
            domain: None,
        }
    }
}

/// The cookie's `SameSite` attribute.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SameSite {
    /// `SameSite=Strict`
    Strict,
    /// `SameSite=Lax`
    #[default]
    Lax,
    /// `SameSite=None` (requires `secure = true`)
    None,
}

/// The least a secret may hold: 256 bits, what `sessiongate keygen` prints.
pub const MIN_SECRET_BYTES: usize = 32;

/// A cookie-signing secret, resolved from where the configuration says it is.
#[derive(Clone)]
pub struct Secret {
    /// Where it came from, for messages: `inline`, `env:NAME` or `file:/path`.
    pub origin: String,
    /// The secret's text, as bytes: the HMAC key.
    pub bytes: Vec<u8>,
    /// Set when a `file:` secret can be read by other users.
    pub readable_by_others: bool,
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({}, {} bytes)", self.origin, self.bytes.len())
    }
}

impl Secret {
    /// Resolves one `cookie.secrets` entry: the secret itself, `env:NAME` or
    /// `file:/path` (surrounding whitespace, such as a final newline, is not
    /// part of the secret). The error never contains the secret.
    pub fn resolve(entry: &str) -> Result<Secret, String> {
        let (origin, text, readable_by_others) = if let Some(name) = entry.strip_prefix("env:") {
            let value = std::env::var(name)
                .map_err(|_| format!("environment variable {name} is not set (or not UTF-8)"))?;
            (entry.to_string(), value.trim().to_string(), false)
        } else if let Some(path) = entry.strip_prefix("file:") {
            let value = read_secret_file(path)
                .map_err(|e| format!("cannot read secret file {path}: {e}"))?;
            (
                entry.to_string(),
                value.trim().to_string(),
                readable_by_others(path),
            )
        } else {
            ("inline".to_string(), entry.to_string(), false)
        };
        if text.len() < MIN_SECRET_BYTES {
            return Err(format!(
                "the secret from {origin} is {} bytes; at least {MIN_SECRET_BYTES} are needed \
                 (`sessiongate keygen` makes one)",
                text.len()
            ));
        }
        Ok(Secret {
            origin,
            bytes: text.into_bytes(),
            readable_by_others,
        })
    }
}

/// The most a secret file may hold: a key, not a disk (nor `/dev/zero`).
const MAX_SECRET_FILE_BYTES: u64 = 64 * 1024;

fn read_secret_file(path: &str) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(MAX_SECRET_FILE_BYTES + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > MAX_SECRET_FILE_BYTES {
        return Err(std::io::Error::other("it is larger than 64 KiB"));
    }
    Ok(text)
}

#[cfg(unix)]
fn readable_by_others(path: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o077 != 0)
}

#[cfg(not(unix))]
fn readable_by_others(_path: &str) -> bool {
    false
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let entry = String::deserialize(d)?;
        Secret::resolve(&entry).map_err(de::Error::custom)
    }
}

/// `[session]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    /// Sliding expiry: every use pushes it forward.
    pub idle_timeout: Dur,
    /// Hard cap from creation, never extended.
    pub absolute_timeout: Dur,
    /// The prefix of every session header.
    #[serde(deserialize_with = "header_prefix")]
    pub header_prefix: String,
    /// The largest session, counted as the bytes of its `X-Session` text.
    pub max_bytes: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            idle_timeout: Dur(Duration::from_secs(30 * 60)),
            absolute_timeout: Dur(Duration::from_secs(24 * 3600)),
            header_prefix: "X-Session".to_string(),
            max_bytes: 8192,
        }
    }
}

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
    pub timeout: Dur,
    /// The `Retry-After` of a 503 answered because the store is down.
    pub retry_after: Dur,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            kind: StoreKind::Redis,
            url: "redis://127.0.0.1:6379/0".to_string(),
            key_prefix: "sg:".to_string(),
            on_error: OnError::FailClosed,
            timeout: Dur(Duration::from_secs(1)),
            retry_after: Dur(Duration::from_secs(5)),
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

/// A duration written as a string: `"750ms"`, `"30s"`, `"30m"`, `"24h"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let duration = humantime::parse_duration(&text).map_err(|e| {
            de::Error::custom(format!(
                "{text:?} is not a duration ({e}); write it as \"750ms\", \"30s\", \"30m\" or \"24h\""
            ))
        })?;
        if duration.is_zero() {
            return Err(de::Error::custom("a duration of zero is not allowed here"));
        }
        Ok(Dur(duration))
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

fn yes() -> bool {
    true
}

fn default_cookie_name() -> String {
    "sg_session".to_string()
}

fn default_cookie_path() -> String {
    "/".to_string()
}

fn non_empty<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    let items = Vec::<T>::deserialize(d)?;
    if items.is_empty() {
        return Err(de::Error::custom(
            "the list is empty; give at least one entry",
        ));
    }
    Ok(items)
}

/// `cookie.secrets`: a non-empty list. Whatever else was written is not
/// repeated in the error: it may be a secret without its brackets.
fn secret_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Secret>, D::Error> {
    struct Visitor;
    impl<'de> de::Visitor<'de> for Visitor {
        type Value = Vec<Secret>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of secrets, as in secrets = [\"env:SESSIONGATE_SECRET\"]")
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Secret>, A::Error> {
            let mut secrets = Vec::new();
            while let Some(secret) = seq.next_element()? {
                secrets.push(secret);
            }
            if secrets.is_empty() {
                return Err(de::Error::custom(
                    "the list is empty; give at least one secret",
                ));
            }
            Ok(secrets)
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Vec<Secret>, E> {
            Err(E::custom(
                "must be a list, as in secrets = [\"env:SESSIONGATE_SECRET\"] (the value is not shown)",
            ))
        }
    }
    d.deserialize_any(Visitor)
}

/// RFC 6265 §4.1.1: a cookie name is an RFC 9110 token.
fn cookie_name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let name = String::deserialize(d)?;
    if name.is_empty() || !name.bytes().all(is_token_byte) {
        return Err(de::Error::custom(format!(
            "{name:?} is not a cookie name (letters, digits and !#$%&'*+-.^_`|~ only)"
        )));
    }
    Ok(name)
}

fn cookie_path<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let path = String::deserialize(d)?;
    if !path.starts_with('/')
        || path
            .bytes()
            .any(|b| b == b';' || !(0x20..0x7f).contains(&b))
    {
        return Err(de::Error::custom(format!(
            "{path:?} is not a cookie path (it starts with / and holds no ';' or control characters)"
        )));
    }
    Ok(path)
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

/// RFC 9110 §5.6.2 `tchar`.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A configuration that could not be used, located in its file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read the configuration: {source}")]
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
        let config: Config = toml::from_str(text)
            .map_err(|e| invalid(e.span(), None, e.message().trim().to_string()))?;
        config.check_combinations().map_err(|(key, message)| {
            invalid(span_of(text, key), Some(key.to_string()), message)
        })?;
        Ok(config)
    }

    /// Rules that involve more than one key; the error names the key to change.
    fn check_combinations(&self) -> Result<(), (&'static str, String)> {
        let cookie = &self.cookie;
        if cookie.same_site == SameSite::None && !cookie.secure {
            return Err((
                "cookie.same_site",
                "\"none\" needs cookie.secure = true (browsers drop such cookies otherwise)".into(),
            ));
        }
        // RFC 6265bis §4.1.3: cookie name prefixes.
        if cookie.name.starts_with("__Secure-") && !cookie.secure {
            return Err((
                "cookie.secure",
                "a cookie named __Secure-… must be secure".into(),
            ));
        }
        if cookie.name.starts_with("__Host-") {
            if !cookie.secure {
                return Err((
                    "cookie.secure",
                    "a cookie named __Host-… must be secure".into(),
                ));
            }
            if cookie.path != "/" {
                return Err((
                    "cookie.path",
                    "a cookie named __Host-… must have path \"/\"".into(),
                ));
            }
            if cookie.domain.is_some() {
                return Err((
                    "cookie.domain",
                    "a cookie named __Host-… must not have a domain".into(),
                ));
            }
        }
        if self.server.max_header_bytes < MIN_HEADER_BYTES {
            return Err((
                "server.max_header_bytes",
                format!("must be at least {MIN_HEADER_BYTES}"),
            ));
        }
        if let Some(health) = &self.upstreams.health {
            if !health.path.starts_with('/')
                || health.path.parse::<http::uri::PathAndQuery>().is_err()
            {
                return Err((
                    "upstreams.health.path",
                    format!("{:?} is not a path", health.path),
                ));
            }
            if health.healthy_threshold == 0 || health.unhealthy_threshold == 0 {
                return Err((
                    "upstreams.health",
                    "healthy_threshold and unhealthy_threshold must be at least 1".into(),
                ));
            }
        }
        if self.upstreams.max_fails == 0 {
            return Err(("upstreams.max_fails", "must be at least 1".into()));
        }
        if self.session.max_bytes < 2 {
            return Err((
                "session.max_bytes",
                "must be at least 2 (the empty session {} is 2 bytes)".into(),
            ));
        }
        if self.store.kind == StoreKind::Redis {
            use redis::IntoConnectionInfo;
            self.store
                .url
                .as_str()
                .into_connection_info()
                .map_err(|e| ("store.url", format!("not a usable Redis URL: {e}")))?;
        }
        Ok(())
    }

    /// Warnings worth printing at start and by `check`; none contains a secret.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        for secret in &self.cookie.secrets {
            if secret.readable_by_others {
                warnings.push(format!(
                    "{} can be read by other users of this machine (chmod 600 it)",
                    secret.origin
                ));
            }
        }
        if !self.cookie.secure {
            warnings.push(
                "cookie.secure = false: the session cookie will also travel over plain http".into(),
            );
        }
        warnings
    }

    /// What the proxy would do with this configuration, for `check`.
    pub fn describe(&self) -> String {
        let c = &self.cookie;
        let s = &self.session;
        let servers: Vec<String> = self
            .upstreams
            .servers
            .iter()
            .map(|s| match s.weight {
                1 => s.url.to_string(),
                w => format!("{} (weight {w})", s.url),
            })
            .collect();
        let health = match &self.upstreams.health {
            Some(h) => format!(
                "GET {} every {}, out after {} failures, back after {} successes",
                h.path, h.interval, h.unhealthy_threshold, h.healthy_threshold
            ),
            None => "passive only".into(),
        };
        let t = &self.timeouts;
        let mut attributes = vec![format!("Path={}", c.path)];
        if let Some(domain) = &c.domain {
            attributes.push(format!("Domain={domain}"));
        }
        if c.secure {
            attributes.push("Secure".into());
        }
        if c.http_only {
            attributes.push("HttpOnly".into());
        }
        attributes.push(format!("SameSite={:?}", c.same_site));
        let store = match self.store.kind {
            StoreKind::Memory => "memory (this process only; sessions end when it exits)".into(),
            StoreKind::Redis => format!(
                "redis {} (keys {}<sid>), {}, call deadline {}",
                redact_url(&self.store.url),
                self.store.key_prefix,
                match self.store.on_error {
                    OnError::FailClosed => "fail_closed (503 when down)",
                    OnError::FailOpen => "fail_open (forward as unavailable when down)",
                },
                self.store.timeout,
            ),
        };
        format!(
            "listen     {listen} (HTTP/1.1 and h2c), {threads}\n\
             upstreams  {servers} (round-robin)\n\
             health     {health}; out for {fail_timeout} after {max_fails} failed requests\n\
             timeouts   connect {connect}, response {response}, body idle {body}, request head {head}, \
             keep-alive {keepalive}, drain {drain}\n\
             cookie     {name}; {attributes}\n\
             secrets    {n} (signing with {signer}; all verify)\n\
             session    idle {idle}, absolute {absolute}, headers {prefix}*, at most {max} bytes\n\
             store      {store}\n",
            listen = self.server.listen,
            threads = match self.server.worker_threads {
                0 => "one worker thread per CPU core".to_string(),
                n => format!("{n} worker thread(s)"),
            },
            servers = servers.join(", "),
            fail_timeout = self.upstreams.fail_timeout,
            max_fails = self.upstreams.max_fails,
            connect = t.upstream_connect,
            response = t.upstream_response,
            body = t.body_idle,
            head = t.request_header,
            keepalive = t.keepalive,
            drain = t.drain,
            name = c.name,
            attributes = attributes.join("; "),
            n = c.secrets.len(),
            signer = c.secrets[0].origin,
            idle = s.idle_timeout,
            absolute = s.absolute_timeout,
            prefix = s.header_prefix,
            max = s.max_bytes,
        )
    }
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

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, col)
}

/// The dotted key (`cookie.secrets[1]`) whose key or value covers `offset`.
fn key_at(text: &str, offset: usize) -> Option<String> {
    use toml::de::DeValue;
    // A table's span covers only its `[header]`, so every table is searched.
    fn walk(value: &DeValue<'_>, offset: usize, path: &mut Vec<String>) -> bool {
        match value {
            DeValue::Table(table) => table.iter().any(|(key, value)| {
                path.push(key.get_ref().to_string());
                let found = key.span().contains(&offset)
                    || value.span().contains(&offset)
                        && !matches!(value.get_ref(), DeValue::Table(_))
                    || walk(value.get_ref(), offset, path);
                if !found {
                    path.pop();
                }
                found
            }),
            DeValue::Array(items) => items.iter().enumerate().any(|(i, item)| {
                let inside = item.span().contains(&offset);
                if inside || walk(item.get_ref(), offset, path) {
                    if let Some(last) = path.last_mut() {
                        last.insert_str(last.len(), &format!("[{i}]"));
                    }
                    return true;
                }
                false
            }),
            _ => false,
        }
    }
    let root = toml::de::DeTable::parse(text).ok()?;
    let mut path = Vec::new();
    walk(&DeValue::Table(root.into_inner()), offset, &mut path);
    (!path.is_empty()).then(|| path.join("."))
}

/// The span of the value at a dotted key, or of its table when the key is absent.
fn span_of(text: &str, dotted: &str) -> Option<Range<usize>> {
    let root = toml::de::DeTable::parse(text).ok()?;
    let mut span = None;
    let mut table = root.get_ref();
    for part in dotted.split('.') {
        let (_, value) = table.iter().find(|(k, _)| k.get_ref() == part)?;
        span = Some(value.span());
        match value.get_ref() {
            toml::de::DeValue::Table(inner) => table = inner,
            _ => break,
        }
    }
    span
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(config.session.idle_timeout.0, Duration::from_secs(1800));
        assert_eq!(
            config.session.absolute_timeout.0,
            Duration::from_secs(86400)
        );
        assert_eq!(config.session.header_prefix, "X-Session");
        assert_eq!(config.session.max_bytes, 8192);
        assert_eq!(config.store.kind, StoreKind::Redis);
        assert_eq!(config.store.key_prefix, "sg:");
        assert_eq!(config.store.on_error, OnError::FailClosed);
    }

    #[test]
    fn the_example_config_in_the_repository_is_valid() {
        // The example reads its secret from the environment; give it one inline.
        let text = include_str!("../config.toml")
            .replace("\"env:SESSIONGATE_SECRET\"", &format!("\"{SECRET}\""));
        assert!(text.contains(SECRET));
        let config = Config::parse(&text, Path::new("config.toml")).unwrap();
        assert_eq!(config.upstreams.servers.len(), 2);
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
            assert_eq!(config.session.idle_timeout.0.as_millis(), ms);
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
            "https://127.0.0.1:9001",
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
        assert!(text.contains("redis://app:***@127.0.0.1:6379/0"), "{text}");
    }
}

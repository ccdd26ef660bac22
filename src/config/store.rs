//! `[store]`: where sessions are kept (one Redis, a Sentinel-watched master,
//! a Cluster, or this process's memory), how to reach it (ACL user,
//! password, TLS), and what happens when it is down. SPEC §2, §10.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer, de};

use super::cache::{CacheConfig, TrackingMode};

/// `[store]`
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Which store keeps the sessions.
    pub kind: StoreKind,
    /// `kind = "redis"`: the URL (`redis://[user:password@]host:port/db`,
    /// `rediss://` for TLS).
    pub url: String,
    /// `kind = "sentinel"`: the sentinels' URLs (any credentials in them are
    /// the sentinels' own).
    pub sentinels: Vec<String>,
    /// `kind = "sentinel"`: the master's name, as the sentinels know it.
    pub master: String,
    /// `kind = "sentinel"`: the database number on the master.
    pub db: i64,
    /// `kind = "cluster"`: seed nodes' URLs; the rest is discovered.
    pub nodes: Vec<String>,
    /// The ACL user (with `password`); none: the default user.
    pub username: Option<String>,
    /// The password: inline, `env:NAME` or `file:/path`, as cookie secrets.
    pub password: Option<Password>,
    /// A write counts only once `WAIT` confirms it on this many replicas.
    pub wait_replicas: u32,
    /// `[store.tls]`: TLS to Redis, for every kind (also `rediss://` URLs).
    pub tls: Option<StoreTls>,
    /// `[store.cache]`: a local cache of hot sessions (SPEC §11).
    pub cache: Option<CacheConfig>,
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
            sentinels: Vec::new(),
            master: String::new(),
            db: 0,
            nodes: Vec::new(),
            username: None,
            password: None,
            wait_replicas: 0,
            tls: None,
            cache: None,
            key_prefix: "sg:".to_string(),
            on_error: OnError::FailClosed,
            timeout: Duration::from_secs(1),
            retry_after: Duration::from_secs(5),
        }
    }
}

impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |urls: &[String]| urls.iter().map(|u| redact_url(u)).collect::<Vec<_>>();
        f.debug_struct("StoreConfig")
            .field("kind", &self.kind)
            .field("url", &redact_url(&self.url))
            .field("sentinels", &redacted(&self.sentinels))
            .field("master", &self.master)
            .field("db", &self.db)
            .field("nodes", &redacted(&self.nodes))
            .field("username", &self.username.as_ref().map(|_| "***"))
            .field("password", &self.password)
            .field("wait_replicas", &self.wait_replicas)
            .field("tls", &self.tls)
            .field("cache", &self.cache)
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
    /// One Redis, shared by every sessiongate instance.
    Redis,
    /// The master that Redis Sentinel names, followed across failovers.
    Sentinel,
    /// A Redis Cluster.
    Cluster,
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

/// `[store.tls]`: the files are read when the store is opened.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreTls {
    /// PEM CA certificates that Redis's certificate must chain to; none:
    /// the system's roots.
    pub ca: Option<PathBuf>,
    /// PEM client certificate chain, for Redis's `tls-auth-clients`.
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`.
    pub key: Option<PathBuf>,
}

/// `store.password`, resolved from where the configuration says it is. Its
/// text never appears in `Debug` output or an error.
#[derive(Clone)]
pub struct Password {
    /// `inline`, `env:NAME` or `file:/path`, for messages.
    pub origin: String,
    /// The password.
    pub text: String,
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Password({}, ***)", self.origin)
    }
}

impl Password {
    /// Resolves `store.password` as cookie secrets are resolved (inline,
    /// `env:NAME`, `file:/path`, trimmed), but with no length rule: a Redis
    /// password is whatever the server was given.
    pub fn resolve(entry: &str) -> Result<Password, String> {
        let resolved = super::secrets::resolve(entry, "password")?;
        if resolved.text.is_empty() {
            return Err(format!("the password from {} is empty", resolved.origin));
        }
        Ok(Password {
            origin: resolved.origin,
            text: resolved.text,
        })
    }
}

impl<'de> Deserialize<'de> for Password {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let entry = String::deserialize(d)?;
        Password::resolve(&entry).map_err(de::Error::custom)
    }
}

impl StoreConfig {
    /// The rules of the `[store]` section; the error names the key to
    /// change. Connects to nothing.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        let only = |key: &'static str, set: bool, kind: &str| {
            if set {
                Err((key, format!("is only used with kind = \"{kind}\"")))
            } else {
                Ok(())
            }
        };
        match self.kind {
            StoreKind::Redis => {
                check_url(&self.url).map_err(|m| ("store.url", m))?;
            }
            StoreKind::Sentinel => {
                if self.sentinels.is_empty() {
                    return Err((
                        "store.sentinels",
                        "kind = \"sentinel\" needs at least one sentinel URL".into(),
                    ));
                }
                for url in &self.sentinels {
                    check_url(url).map_err(|m| ("store.sentinels", m))?;
                }
                if self.master.is_empty() {
                    return Err((
                        "store.master",
                        "kind = \"sentinel\" needs the master's name (as in `sentinel monitor <name> …`)"
                            .into(),
                    ));
                }
                if self.db < 0 {
                    return Err(("store.db", "must be 0 or more".into()));
                }
            }
            StoreKind::Cluster => {
                if self.nodes.is_empty() {
                    return Err((
                        "store.nodes",
                        "kind = \"cluster\" needs at least one node URL".into(),
                    ));
                }
                for url in &self.nodes {
                    check_url(url).map_err(|m| ("store.nodes", m))?;
                    if url.starts_with("unix:") || url.starts_with("redis+unix:") {
                        return Err(("store.nodes", "a Cluster is reached over TCP".into()));
                    }
                }
            }
            StoreKind::Memory => {
                only(
                    "store.wait_replicas",
                    self.wait_replicas > 0,
                    "redis, sentinel or cluster",
                )?;
                only(
                    "store.tls",
                    self.tls.is_some(),
                    "redis, sentinel or cluster",
                )?;
                only(
                    "store.password",
                    self.password.is_some(),
                    "redis, sentinel or cluster",
                )?;
            }
        }
        if self.kind != StoreKind::Sentinel {
            only("store.sentinels", !self.sentinels.is_empty(), "sentinel")?;
            only("store.master", !self.master.is_empty(), "sentinel")?;
            only("store.db", self.db != 0, "sentinel")?;
        }
        if self.kind != StoreKind::Cluster {
            only("store.nodes", !self.nodes.is_empty(), "cluster")?;
        }
        if let Some(cache) = &self.cache {
            self.check_cache(cache)?;
        }
        if self.username.is_some() && self.password.is_none() {
            return Err((
                "store.username",
                "an ACL user needs store.password too".into(),
            ));
        }
        if let Some(tls) = &self.tls {
            if tls.cert.is_some() != tls.key.is_some() {
                return Err((
                    "store.tls",
                    "a client certificate needs both cert and key".into(),
                ));
            }
            for (key, path) in [
                ("store.tls.ca", &tls.ca),
                ("store.tls.cert", &tls.cert),
                ("store.tls.key", &tls.key),
            ] {
                if let Some(path) = path {
                    std::fs::metadata(path)
                        .map_err(|e| (key, format!("cannot read {}: {e}", path.display())))?;
                }
            }
        }
        Ok(())
    }

    /// The rules of `[store.cache]`: a Redis it can track, over RESP3 (a
    /// Cluster in `bcast` mode).
    fn check_cache(&self, cache: &CacheConfig) -> Result<(), (&'static str, String)> {
        match self.kind {
            StoreKind::Memory => {
                return Err((
                    "store.cache",
                    "is only used with kind = \"redis\", \"sentinel\" or \"cluster\" (the memory store needs no cache)"
                        .into(),
                ));
            }
            StoreKind::Cluster if cache.mode != TrackingMode::Bcast => {
                return Err((
                    "store.cache.mode",
                    "kind = \"cluster\" needs mode = \"bcast\" (each master announces every change \
                     under key_prefix to its own tracking connection)"
                        .into(),
                ));
            }
            StoreKind::Redis | StoreKind::Sentinel | StoreKind::Cluster => {}
        }
        if cache.max_entries == 0 {
            return Err(("store.cache.max_entries", "must be at least 1".into()));
        }
        if self.url.contains("protocol=resp2") || self.url.contains("protocol=2") {
            return Err((
                "store.cache",
                "needs RESP3 (CLIENT TRACKING pushes); drop protocol= from store.url".into(),
            ));
        }
        Ok(())
    }

    /// Whether the connections to Redis use TLS.
    pub fn uses_tls(&self) -> bool {
        let urls: &[String] = match self.kind {
            StoreKind::Redis => std::slice::from_ref(&self.url),
            StoreKind::Sentinel => &self.sentinels,
            StoreKind::Cluster => &self.nodes,
            StoreKind::Memory => return false,
        };
        self.tls.is_some() || urls.iter().any(|u| u.starts_with("rediss://"))
    }

    /// What the store talks to, for `check` and the log: the kind and its
    /// URL, nodes or sentinels, and TLS; never a user or a password.
    pub fn target(&self) -> String {
        let list = |urls: &[String]| {
            urls.iter()
                .map(|u| redact_url(u))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let tls = if self.uses_tls() { "TLS on" } else { "TLS off" };
        let acl = if self.username.is_some() {
            ", ACL user"
        } else if self.password.is_some() {
            ", password"
        } else {
            ""
        };
        match self.kind {
            StoreKind::Memory => "memory".into(),
            StoreKind::Redis => format!("redis {} ({tls}{acl})", redact_url(&self.url)),
            StoreKind::Sentinel => format!(
                "sentinel master {:?} db {} via {} ({tls}{acl})",
                self.master,
                self.db,
                list(&self.sentinels)
            ),
            StoreKind::Cluster => format!("cluster seeds {} ({tls}{acl})", list(&self.nodes)),
        }
    }
}

/// A Redis URL that redis-rs can use, or why not (never echoing a password).
fn check_url(url: &str) -> Result<(), String> {
    let shown = redact_url(url);
    let Some((scheme, _)) = url.split_once("://") else {
        // Without a scheme the URL cannot be redacted as it stands: only
        // the corrected, redacted spelling is shown.
        return Err(format!(
            "the URL needs redis:// or rediss:// in front: write {:?}",
            redact_url(&format!("redis://{url}"))
        ));
    };
    if !matches!(scheme, "redis" | "rediss" | "unix" | "redis+unix") {
        return Err(format!(
            "{shown:?}: the scheme {scheme}:// is not Redis's; use redis:// or rediss://"
        ));
    }
    use redis::IntoConnectionInfo;
    url.into_connection_info()
        .map(drop)
        .map_err(|e| format!("{shown:?} is not a usable Redis URL: {e}"))
}

/// Hides the user and password of a URL such as `redis://user:password@host/0`.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}***@{}", &url[..scheme_end], &rest[at + 1..]),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(text: &str) -> StoreConfig {
        toml::from_str(text).unwrap()
    }

    fn rejected(text: &str) -> (&'static str, String) {
        store(text).check().unwrap_err()
    }

    #[test]
    fn a_url_without_a_scheme_says_which_schemes_work() {
        let (key, message) = rejected("url = \"127.0.0.1:6379\"");
        assert_eq!(key, "store.url");
        assert!(message.contains("needs redis:// or rediss://"), "{message}");
        let (_, message) = rejected("url = \"http://127.0.0.1:6379\"");
        assert!(message.contains("not Redis's"), "{message}");
        assert!(store("url = \"rediss://r.example:6380/1\"").check().is_ok());
    }

    #[test]
    fn each_kind_needs_its_own_keys_and_refuses_the_others() {
        let (key, _) = rejected("kind = \"sentinel\"\nmaster = \"m\"");
        assert_eq!(key, "store.sentinels");
        let (key, _) = rejected("kind = \"sentinel\"\nsentinels = [\"redis://h:26379\"]");
        assert_eq!(key, "store.master");
        let (key, _) = rejected("kind = \"cluster\"");
        assert_eq!(key, "store.nodes");
        let (key, _) = rejected("nodes = [\"redis://h:7000\"]");
        assert_eq!(key, "store.nodes");
        let (key, _) = rejected("kind = \"memory\"\nwait_replicas = 1");
        assert_eq!(key, "store.wait_replicas");
        let (key, _) = rejected("username = \"app\"");
        assert_eq!(key, "store.username");
        let (key, _) = rejected("[tls]\ncert = \"/etc/hostname\"");
        assert_eq!(key, "store.tls");
        let (key, message) = rejected("[tls]\nca = \"/nonexistent/ca.pem\"");
        assert_eq!(key, "store.tls.ca");
        assert!(message.contains("/nonexistent/ca.pem"), "{message}");
        let sentinel =
            "kind = \"sentinel\"\nsentinels = [\"redis://h:26379\"]\nmaster = \"m\"\ndb = 2";
        assert!(store(sentinel).check().is_ok());
        assert!(
            store("kind = \"cluster\"\nnodes = [\"redis://a:7000\", \"redis://b:7000\"]")
                .check()
                .is_ok()
        );
    }

    #[test]
    fn the_target_names_kind_nodes_and_tls_never_the_password() {
        let dir = std::env::temp_dir().join(format!("sg-store-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("password");
        std::fs::write(&file, "pa55-from-file\n").unwrap();
        let cases = [
            (
                "url = \"redis://app:pa55word@127.0.0.1:6379/0\"",
                "redis redis://***@127.0.0.1:6379/0 (TLS off)",
            ),
            (
                "kind = \"sentinel\"\nsentinels = [\"redis://:pa55word@a:26379\", \"redis://b:26379\"]\nmaster = \"sessions\"\nusername = \"sg\"\npassword = \"file:{}\"",
                "sentinel master \"sessions\" db 0 via redis://***@a:26379, redis://b:26379 (TLS off, ACL user)",
            ),
            (
                "kind = \"cluster\"\nnodes = [\"rediss://a:7000\"]\npassword = \"pa55word\"",
                "cluster seeds rediss://a:7000 (TLS on, password)",
            ),
            (
                "kind = \"cluster\"\nnodes = [\"redis://a:7000\"]\n[tls]\n",
                "cluster seeds redis://a:7000 (TLS on)",
            ),
        ];
        for (text, expected) in cases {
            let config = store(&text.replace("{}", &file.display().to_string()));
            assert_eq!(config.target(), expected);
            let debug = format!("{config:?}");
            for shown in [config.target(), debug] {
                assert!(
                    !shown.contains("pa55") && !shown.contains("\"sg\""),
                    "{shown}"
                );
            }
        }
        assert_eq!(
            store(&format!("password = \"file:{}\"", file.display()))
                .password
                .unwrap()
                .text,
            "pa55-from-file"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_password_resolves_like_a_secret_and_hides_its_text() {
        let missing = Password::resolve("env:SG_STORE_TEST_UNSET").unwrap_err();
        assert!(
            missing.contains("SG_STORE_TEST_UNSET is not set"),
            "{missing}"
        );
        let inline = Password::resolve("short").unwrap();
        assert_eq!(inline.text, "short");
        assert_eq!(format!("{inline:?}"), "Password(inline, ***)");
        let err = toml::from_str::<StoreConfig>("password = \"file:/nonexistent/pw\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot read password file"), "{err}");
    }
}

#[cfg(test)]
mod cache_tests {
    use std::time::Duration;

    use super::*;
    use crate::config::TrackingMode;

    fn store(text: &str) -> StoreConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn a_cache_table_turns_the_cache_on_with_its_defaults() {
        assert!(store("").cache.is_none(), "off unless present");
        let cache = store("[cache]").cache.unwrap();
        assert_eq!(cache.max_entries, 100_000);
        assert_eq!(cache.touch_interval, Duration::from_secs(60));
        assert_eq!(cache.mode, TrackingMode::Default);
        let cache = store("[cache]\nmax_entries = 10\ntouch_interval = \"5s\"\nmode = \"bcast\"")
            .cache
            .unwrap();
        assert_eq!(
            (cache.max_entries, cache.touch_interval, cache.mode),
            (10, Duration::from_secs(5), TrackingMode::Bcast)
        );
    }

    #[test]
    fn a_cache_needs_a_redis_it_can_track() {
        for text in [
            "kind = \"memory\"\n[cache]",
            "kind = \"cluster\"\nnodes = [\"redis://127.0.0.1:7000\"]\n[cache]",
            "kind = \"cluster\"\nnodes = [\"redis://127.0.0.1:7000\"]\n[cache]\nmode = \"default\"",
            "url = \"redis://127.0.0.1:6379/0?protocol=resp2\"\n[cache]",
            "[cache]\nmax_entries = 0",
        ] {
            let (key, _) = store(text).check().unwrap_err();
            assert!(key.starts_with("store.cache"), "{text}: {key}");
        }
        assert!(store("[cache]").check().is_ok());
        let cluster =
            "kind = \"cluster\"\nnodes = [\"redis://127.0.0.1:7000\"]\n[cache]\nmode = \"bcast\"";
        assert!(store(cluster).check().is_ok());
    }
}

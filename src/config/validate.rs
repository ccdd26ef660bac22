//! Rules that involve more than one key, and the warnings that `run` logs
//! and `check` prints.

use super::duration::show;
use super::{Config, MIN_HEADER_BYTES, SameSite};

impl Config {
    /// Rules that involve more than one key; the error names the key to change.
    pub(super) fn check_combinations(&self) -> Result<(), (&'static str, String)> {
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
        self.store.check()?;
        if let Some(cache) = &self.store.cache
            && cache.touch_interval >= self.session.idle_timeout
        {
            return Err((
                "store.cache.touch_interval",
                format!(
                    "must be shorter than session.idle_timeout ({}): a session in use would expire",
                    super::duration::show(self.session.idle_timeout)
                ),
            ));
        }
        if let Some(admin) = &self.admin {
            admin.check(self.server.listen)?;
        }
        self.log.check()?;
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
        let secrets = &self.cookie.secrets;
        for (i, later) in secrets.iter().enumerate() {
            if let Some(j) = secrets[..i].iter().position(|s| s.bytes == later.bytes) {
                warnings.push(format!(
                    "cookie.secrets: entry {} ({}) is the same secret as entry {} ({}); \
                     list each secret once",
                    i + 1,
                    later.origin,
                    j + 1,
                    secrets[j].origin
                ));
            }
        }
        let session = &self.session;
        if session.absolute_timeout <= session.idle_timeout {
            warnings.push(format!(
                "session.absolute_timeout ({}) is not longer than session.idle_timeout ({}): \
                 every session ends {} after its creation, however often it is used",
                show(session.absolute_timeout),
                show(session.idle_timeout),
                show(session.absolute_timeout)
            ));
        }
        warnings.extend(self.edge_warnings());
        if !self.cookie.secure {
            warnings.push(
                "cookie.secure = false: the session cookie will also travel over plain http".into(),
            );
        }
        warnings.extend(self.admin.iter().flat_map(|admin| admin.warnings()));
        warnings
    }
}

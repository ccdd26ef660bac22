//! Validation of the edge keys (SPEC §8): TLS certificates and keys read
//! and matched, upstream CA files, pools and the routes that name them; the
//! warnings and the part of `check`'s description they add.

use std::ops::Range;
use std::sync::Arc;

use super::{Config, UpstreamsConfig, routes};

impl Config {
    /// Reads the TLS files (kept in the configuration, so what is served is
    /// what was checked) and checks pools and routes. The error names the
    /// dotted key, with list indices (`routes[1].pool`).
    pub(super) fn check_edge(&mut self) -> Result<(), (String, String)> {
        if let Some(tls) = &mut self.server.tls {
            let loaded = tls.load()?;
            tls.loaded = Some(Arc::new(loaded));
            if tls.redirect_listen == Some(self.server.listen) {
                return Err((
                    "server.tls.redirect_listen".into(),
                    "is the same address as server.listen".into(),
                ));
            }
        }
        check_pool("upstreams", &self.upstreams)?;
        for (name, pool) in &self.upstreams.pools {
            let key = format!("upstreams.pools.{name}");
            if name == "default"
                || name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err((
                    key,
                    format!(
                        "{name:?} cannot name a pool (letters, digits, _ and -; \
                         \"default\" is the [upstreams] pool)"
                    ),
                ));
            }
            if !pool.pools.is_empty() {
                return Err((
                    format!("{key}.pools"),
                    "pools do not nest: put every pool under [upstreams.pools]".into(),
                ));
            }
            check_pool(&key, pool)?;
        }
        let pools = &self.upstreams.pools;
        routes::check(&self.routes, |name| pools.contains_key(name))
    }

    /// Warnings about the edge keys: routes that can never match.
    pub fn edge_warnings(&self) -> Vec<String> {
        routes::shadowed(&self.routes)
            .into_iter()
            .map(|(later, earlier)| {
                format!(
                    "routes[{later}] ({}) can never match: routes[{earlier}] ({}) takes every request it would",
                    self.routes[later].describe(),
                    self.routes[earlier].describe()
                )
            })
            .collect()
    }

    /// What `check` prints of the edge keys: TLS, pools, the routing table.
    pub fn describe_edge(&self) -> String {
        let mut text = String::new();
        if let Some(tls) = &self.server.tls {
            text += &tls.describe();
        }
        if let Some(tls) = &self.upstreams.tls {
            text += &format!("upstreams  {}", tls.describe());
        }
        for (name, pool) in &self.upstreams.pools {
            let servers: Vec<String> = pool.servers.iter().map(|s| s.url.to_string()).collect();
            text += &format!("pool {name}: {} (round-robin)\n", servers.join(", "));
        }
        text += &routes::describe(&self.routes);
        if self.cookie.persistent {
            text += "cookie     persistent: Max-Age = the session's remaining absolute lifetime\n";
        }
        text
    }
}

/// The rules of one pool's keys.
fn check_pool(key: &str, pool: &UpstreamsConfig) -> Result<(), (String, String)> {
    if pool.max_fails == 0 {
        return Err((format!("{key}.max_fails"), "must be at least 1".into()));
    }
    if let Some(health) = &pool.health {
        if !health.path.starts_with('/') || health.path.parse::<http::uri::PathAndQuery>().is_err()
        {
            return Err((
                format!("{key}.health.path"),
                format!("{:?} is not a path", health.path),
            ));
        }
        if health.healthy_threshold == 0 || health.unhealthy_threshold == 0 {
            return Err((
                format!("{key}.health"),
                "healthy_threshold and unhealthy_threshold must be at least 1".into(),
            ));
        }
    }
    if let Some(ca) = pool.tls.as_ref().and_then(|t| t.ca.as_ref()) {
        super::tls::read_certs(ca).map_err(|m| (format!("{key}.tls.ca"), m))?;
    }
    Ok(())
}

/// The span of a dotted key whose parts may carry a list index
/// (`routes[1].pool`, `server.tls.sni[0]`); the deepest part found.
pub(super) fn span_of(text: &str, dotted: &str) -> Option<Range<usize>> {
    use toml::de::DeValue;
    let root = toml::de::DeTable::parse(text).ok()?;
    let mut span = None;
    let mut value: Option<&DeValue<'_>> = None;
    let mut table = root.get_ref();
    for part in dotted.split('.') {
        let (name, index) = match part.split_once('[') {
            Some((name, rest)) => (name, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        if let Some(DeValue::Table(inner)) = value {
            table = inner;
        }
        let Some((_, found)) = table.iter().find(|(k, _)| k.get_ref() == name) else {
            break;
        };
        span = Some(found.span());
        value = Some(found.get_ref());
        if let (Some(i), Some(DeValue::Array(items))) = (index, value) {
            let Some(item) = items.get(i) else { break };
            span = Some(item.span());
            value = Some(item.get_ref());
        }
        if !matches!(value, Some(DeValue::Table(_))) {
            break;
        }
    }
    span
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn parse(extra: &str) -> Result<Config, String> {
        let text = format!(
            "[upstreams]\nservers = [\"http://127.0.0.1:9001\"]\n{extra}\n[cookie]\nsecrets = [\"{SECRET}\"]\n"
        );
        Config::parse(&text, Path::new("test.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn a_route_to_a_missing_pool_is_named_with_its_line() {
        let err = parse(
            "[upstreams.pools.assets]\nservers = [\"https://127.0.0.1:9100\"]\n\
             [[routes]]\npath_prefix = \"/a/\"\npool = \"assets\"\n\
             [[routes]]\npath_prefix = \"/b/\"\npool = \"asets\"\n",
        )
        .unwrap_err();
        assert!(err.starts_with("test.toml:10:8: routes[1].pool:"), "{err}");
    }

    #[test]
    fn pools_do_not_nest_and_default_is_taken() {
        let err =
            parse("[upstreams.pools.default]\nservers = [\"http://127.0.0.1:1\"]\n").unwrap_err();
        assert!(err.contains("upstreams.pools.default"), "{err}");
    }

    #[test]
    fn a_missing_certificate_file_is_named() {
        let err = parse("").and_then(|_| {
            Config::parse(
                &format!(
                    "[server]\n[server.tls]\ncert = \"/nonexistent/cert.pem\"\nkey = \"/nonexistent/key.pem\"\n\
                     [upstreams]\nservers = [\"http://127.0.0.1:9001\"]\n[cookie]\nsecrets = [\"{SECRET}\"]\n"
                ),
                Path::new("test.toml"),
            )
            .map_err(|e| e.to_string())
        });
        let err = err.unwrap_err();
        assert!(
            err.contains("server.tls.cert") && err.contains("/nonexistent/cert.pem"),
            "{err}"
        );
    }

    #[test]
    fn a_shadowed_route_is_warned_of() {
        let config = parse(
            "[[routes]]\npath_prefix = \"/assets/\"\nsessions = false\n\
             [[routes]]\nhost = \"static.example.com\"\npath_prefix = \"/assets/img/\"\n",
        )
        .unwrap();
        let warnings = config.edge_warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].starts_with("routes[1]"), "{warnings:?}");
        assert!(
            config
                .describe_edge()
                .contains("routes[1]  host static.example.com")
        );
    }
}

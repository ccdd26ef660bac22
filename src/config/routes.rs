//! `[[routes]]`: which pool serves a request, and whether it has sessions.
//! Tried in order, the first match wins; a request no route matches goes
//! to the default pool (`[upstreams]`) with sessions.

use std::fmt;

use serde::{Deserialize, Deserializer, de};

/// One `[[routes]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// The request's host: exact, or `*.example.com` (any subdomain, not
    /// `example.com` itself); any host when absent.
    #[serde(default)]
    pub host: Option<HostPattern>,
    /// The start of the request's path; any path when absent.
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// A pool of `[upstreams.pools]`; the default pool when absent.
    #[serde(default)]
    pub pool: Option<String>,
    /// False: no cookie check, no store call, no session headers.
    #[serde(default = "yes")]
    pub sessions: bool,
}

fn yes() -> bool {
    true
}

/// A route's `host`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// One host name, lower case.
    Exact(String),
    /// `*.example.com`, kept as `.example.com`.
    Subdomains(String),
}

impl HostPattern {
    /// True when `host` (lower case, without its port) matches.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(name) => name == host,
            HostPattern::Subdomains(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
        }
    }

    /// True when every host this pattern matches, `other` matches too.
    fn covered_by(&self, other: &HostPattern) -> bool {
        match (self, other) {
            (_, HostPattern::Exact(name)) => self == &HostPattern::Exact(name.clone()),
            (HostPattern::Exact(name), HostPattern::Subdomains(_)) => other.matches(name),
            (HostPattern::Subdomains(mine), HostPattern::Subdomains(theirs)) => {
                mine.ends_with(theirs.as_str())
            }
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(name) => f.write_str(name),
            HostPattern::Subdomains(suffix) => write!(f, "*{suffix}"),
        }
    }
}

impl<'de> Deserialize<'de> for HostPattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?.to_ascii_lowercase();
        let valid = |name: &str| {
            !name.is_empty()
                && name.split('.').all(|label| {
                    !label.is_empty()
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                })
        };
        match text.strip_prefix("*.") {
            Some(rest) if valid(rest) => Ok(HostPattern::Subdomains(format!(".{rest}"))),
            None if valid(&text) => Ok(HostPattern::Exact(text)),
            _ => Err(de::Error::custom(format!(
                "{text:?} is not a host name (without a port) or *.example.com"
            ))),
        }
    }
}

impl RouteConfig {
    /// True when every request this route matches is taken by `earlier`.
    pub fn shadowed_by(&self, earlier: &RouteConfig) -> bool {
        let host = match (&earlier.host, &self.host) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(theirs), Some(mine)) => mine.covered_by(theirs),
        };
        let path = match (&earlier.path_prefix, &self.path_prefix) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(theirs), Some(mine)) => mine.starts_with(theirs.as_str()),
        };
        host && path
    }

    /// One line of the routing table `check` prints.
    pub fn describe(&self) -> String {
        format!(
            "host {} path {} -> pool {}{}",
            self.host
                .as_ref()
                .map_or("*".to_string(), |h| h.to_string()),
            self.path_prefix.as_deref().map_or("/*", |p| p),
            self.pool.as_deref().unwrap_or("default"),
            if self.sessions { "" } else { ", no sessions" },
        )
    }
}

/// Checks routes against the pools that exist; the error names the key.
pub fn check(
    routes: &[RouteConfig],
    pool_exists: impl Fn(&str) -> bool,
) -> Result<(), (String, String)> {
    for (i, route) in routes.iter().enumerate() {
        if let Some(pool) = &route.pool
            && pool != "default"
            && !pool_exists(pool)
        {
            return Err((
                format!("routes[{i}].pool"),
                format!("no pool {pool:?}: add [upstreams.pools.{pool}] or name an existing one"),
            ));
        }
        if let Some(prefix) = &route.path_prefix
            && (!prefix.starts_with('/')
                || prefix.parse::<http::uri::PathAndQuery>().is_err()
                || prefix.contains('?'))
        {
            return Err((
                format!("routes[{i}].path_prefix"),
                format!("{prefix:?} is not a path (it starts with /)"),
            ));
        }
    }
    Ok(())
}

/// Routes that can never match, each with the earlier route that takes its
/// requests: (later, earlier), 0-based.
pub fn shadowed(routes: &[RouteConfig]) -> Vec<(usize, usize)> {
    routes
        .iter()
        .enumerate()
        .filter_map(|(j, later)| {
            routes[..j]
                .iter()
                .position(|earlier| later.shadowed_by(earlier))
                .map(|i| (j, i))
        })
        .collect()
}

/// The routing table as `check` prints it.
pub fn describe(routes: &[RouteConfig]) -> String {
    let mut text = String::new();
    for (i, route) in routes.iter().enumerate() {
        text += &format!("routes[{i}]  {}\n", route.describe());
    }
    text += "otherwise  host * path /* -> pool default\n";
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(host: Option<&str>, path: Option<&str>) -> RouteConfig {
        let host = host.map(|h| match h.strip_prefix('*') {
            Some(suffix) => HostPattern::Subdomains(suffix.into()),
            None => HostPattern::Exact(h.into()),
        });
        RouteConfig {
            host,
            path_prefix: path.map(Into::into),
            pool: None,
            sessions: true,
        }
    }

    #[test]
    fn wildcards_match_subdomains_only() {
        let p = HostPattern::Subdomains(".example.com".into());
        assert!(p.matches("a.example.com") && p.matches("a.b.example.com"));
        assert!(!p.matches("example.com") && !p.matches("badexample.com"));
    }

    #[test]
    fn a_route_behind_a_broader_one_is_found() {
        let routes = [
            route(None, Some("/assets/")),
            route(Some("static.example.com"), Some("/assets/img/")),
            route(Some("*.example.com"), None),
            route(Some("a.example.com"), Some("/x")),
            route(Some("other.org"), None),
        ];
        assert_eq!(shadowed(&routes), [(1, 0), (3, 2)]);
    }
}

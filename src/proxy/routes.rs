//! The routing table: `[[routes]]` tried in order, the first match wins;
//! no match sends the request to the default pool, with sessions. A route
//! is decided once, when the request is admitted.

use std::sync::Arc;

use http::HeaderValue;

use crate::config::routes::{HostPattern, RouteConfig};

/// What a request's route decided.
#[derive(Debug, Clone)]
pub struct Route {
    /// The pool's index in the gateway (0: the default pool).
    pub pool: usize,
    /// The pool's name, `default` for `[upstreams]` (the metrics' label).
    pub pool_name: Arc<str>,
    /// False: no cookie check, no store call, no session headers.
    pub sessions: bool,
}

/// The routes, with their pools resolved to indices.
#[derive(Debug, Clone)]
pub struct Routes {
    table: Vec<(Option<HostPattern>, Option<String>, Route)>,
    default: Route,
}

impl Default for Routes {
    /// No route: every request to the default pool, with sessions.
    fn default() -> Routes {
        Routes {
            table: Vec::new(),
            default: Route {
                pool: 0,
                pool_name: Arc::from("default"),
                sessions: true,
            },
        }
    }
}

impl Routes {
    /// The table of `routes`; `pools` are the pool names in index order
    /// (the default pool first). Validation has checked every name.
    pub fn new(routes: &[RouteConfig], pools: &[Arc<str>]) -> Routes {
        let mut built = Routes::default();
        built.default.pool_name = pools[0].clone();
        for route in routes {
            let pool = match route.pool.as_deref() {
                None | Some("default") => 0,
                Some(name) => pools
                    .iter()
                    .position(|p| &**p == name)
                    .expect("validated: every route names an existing pool"),
            };
            built.table.push((
                route.host.clone(),
                route.path_prefix.clone(),
                Route {
                    pool,
                    pool_name: pools[pool].clone(),
                    sessions: route.sessions,
                },
            ));
        }
        built
    }

    /// The route of a request for `host` (as decided, maybe with a port)
    /// and `path`.
    pub fn pick(&self, host: Option<&HeaderValue>, path: &str) -> Route {
        if self.table.is_empty() {
            return self.default.clone();
        }
        let host = host.and_then(|h| h.to_str().ok()).map(|h| {
            // host[:port], or [v6]:port
            let name = match h.rfind(':') {
                Some(colon) if !h[colon..].contains(']') => &h[..colon],
                _ => h,
            };
            name.to_ascii_lowercase()
        });
        self.table
            .iter()
            .find(|(pattern, prefix, _)| {
                pattern
                    .as_ref()
                    .is_none_or(|p| host.as_deref().is_some_and(|h| p.matches(h)))
                    && prefix.as_deref().is_none_or(|p| path.starts_with(p))
            })
            .map_or_else(|| self.default.clone(), |(_, _, route)| route.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes(text: &str) -> Routes {
        #[derive(serde::Deserialize)]
        struct Doc {
            routes: Vec<RouteConfig>,
        }
        let doc: Doc = toml::from_str(text).unwrap();
        let pools = [Arc::from("default"), Arc::from("assets")];
        Routes::new(&doc.routes, &pools)
    }

    #[test]
    fn the_first_matching_route_wins_and_no_match_is_the_default_pool() {
        let table = routes(
            "[[routes]]\nhost = \"static.example.com\"\npool = \"assets\"\nsessions = false\n\
             [[routes]]\npath_prefix = \"/assets/\"\npool = \"assets\"\n\
             [[routes]]\nhost = \"*.example.com\"\nsessions = false\n",
        );
        let host = |h: &'static str| Some(HeaderValue::from_static(h));
        let r = table.pick(host("Static.Example.com:8443").as_ref(), "/x");
        assert_eq!((r.pool, &*r.pool_name, r.sessions), (1, "assets", false));
        let r = table.pick(host("shop.test").as_ref(), "/assets/a.css");
        assert_eq!((r.pool, r.sessions), (1, true));
        let r = table.pick(host("a.example.com").as_ref(), "/");
        assert_eq!((r.pool, r.sessions), (0, false));
        let r = table.pick(host("example.com").as_ref(), "/");
        assert_eq!((r.pool, &*r.pool_name, r.sessions), (0, "default", true));
        let r = table.pick(None, "/assets/x");
        assert_eq!(r.pool, 1);
    }
}

//! `[upstreams]`: the backend servers, their weights, passive ejection and
//! active health checks.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, de};

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
    #[serde(deserialize_with = "super::duration::parse")]
    pub fail_timeout: Duration,
    /// Idle pooled connections kept per server.
    #[serde(default = "default_max_idle")]
    pub max_idle_connections: usize,
    /// Active health checks; none by default.
    #[serde(default)]
    pub health: Option<HealthConfig>,
    /// `[upstreams.tls]`: the roots https servers are verified against
    /// (a pool without its own takes the default pool's).
    #[serde(default)]
    pub tls: Option<super::tls::UpstreamTlsConfig>,
    /// `[upstreams.pools.NAME]`: more pools, with these same keys (only in
    /// `[upstreams]` itself).
    #[serde(default)]
    pub pools: std::collections::BTreeMap<String, UpstreamsConfig>,
}

fn default_max_fails() -> u32 {
    3
}

fn default_fail_timeout() -> Duration {
    Duration::from_secs(10)
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
    #[serde(deserialize_with = "super::duration::parse")]
    pub interval: Duration,
    /// How long a probe may take.
    #[serde(deserialize_with = "super::duration::parse")]
    pub timeout: Duration,
    /// Consecutive good probes that bring a server back.
    pub healthy_threshold: u32,
    /// Consecutive bad probes that take a server out.
    pub unhealthy_threshold: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            path: "/".into(),
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(1),
            healthy_threshold: 2,
            unhealthy_threshold: 3,
        }
    }
}

/// An upstream server's address: `http://host:port` or `https://host:port`,
/// with no path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UpstreamUrl {
    /// `host:port` as written, used as the request URI's authority.
    pub authority: http::uri::Authority,
    /// `https://`: TLS to the server, its host as SNI, verified.
    pub https: bool,
}

impl fmt::Display for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        write!(f, "{scheme}://{}", self.authority)
    }
}

impl std::str::FromStr for UpstreamUrl {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let uri: http::Uri = text
            .parse()
            .map_err(|e| format!("{text:?} is not a URL: {e}"))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            Some(other) => {
                return Err(format!(
                    "{text:?}: scheme {other:?} is not supported (http or https)"
                ));
            }
            None => return Err(format!("{text:?} needs a scheme, as in http://{text}")),
        };
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| format!("{text:?} has no host"))?;
        if authority.port_u16().is_none() {
            return Err(format!(
                "{text:?} needs a port, as in {}://{authority}:{}",
                if https { "https" } else { "http" },
                if https { 443 } else { 80 }
            ));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(format!(
                "{text:?}: a path is not supported; requests keep their own path"
            ));
        }
        Ok(UpstreamUrl { authority, https })
    }
}

impl<'de> Deserialize<'de> for UpstreamUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(de::Error::custom)
    }
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

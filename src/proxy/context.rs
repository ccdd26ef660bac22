//! What is decided once per request and read by every later phase: the
//! client, the `Host`, whether it asks to switch protocols, the verified
//! sid and then the resolved session, and the server that answered.
//! [`RequestContext::admit`] makes it, and refuses a request whose target
//! breaks RFC 9112 §3.2.

use std::sync::Arc;

use http::header::HOST;
use http::request::Parts;
use http::uri::{Authority, PathAndQuery};
use http::{HeaderMap, HeaderValue, Version};

use super::headers::{self, Client};
use super::routes::{Route, Routes};
use crate::config::UpstreamUrl;
use crate::error::ProxyError;
use crate::session::Resolved;
use crate::session::cookie::Sid;

/// One request's state, as the phases fill it in.
#[derive(Debug)]
pub struct RequestContext {
    /// Who sent it.
    pub client: Arc<Client>,
    /// The host it is for: the target's authority when it has one
    /// (absolute form, or HTTP/2's `:authority`), else its one `Host`
    /// header; `None` only for an HTTP/1.0 request that named none.
    pub host: Option<HeaderValue>,
    /// The path and query the backend gets (origin form).
    pub path: PathAndQuery,
    /// It asks to switch protocols (HTTP/1.1 `Upgrade`, RFC 9110 §7.8).
    pub upgrade: bool,
    /// Its route: the pool that serves it (and its name, for metrics), and
    /// whether it has a session at all.
    pub route: Route,
    /// The session cookie's sid, once its tag is verified.
    pub presented: Option<Sid>,
    /// The session the request runs with, once loaded; its JSON text
    /// moves into the upstream request's `X-Session` (phase 4).
    pub session: Option<Resolved>,
    /// The server that answered, once one has (for the access log).
    pub upstream: Option<UpstreamUrl>,
}

impl RequestContext {
    /// Reads what the request says of itself, once. A request with more
    /// than one `Host`, an invalid one, or (HTTP/1.1) none is refused: RFC
    /// 9112 §3.2 asks for a 400. When the target carries an authority, it
    /// wins over `Host` (RFC 9112 §3.2.2).
    /// Its route is decided here, once, from the decided host and the path.
    pub fn admit(
        parts: &Parts,
        client: Arc<Client>,
        routes: &Routes,
    ) -> Result<RequestContext, ProxyError> {
        let host = match parts.uri.authority() {
            Some(authority) => Some(authority_value(authority)),
            None => single_host(&parts.headers, &client)?,
        };
        if host.is_none() && parts.version == Version::HTTP_11 {
            return Err(ProxyError::bad_request("an HTTP/1.1 request without Host"));
        }
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let route = routes.pick(host.as_ref(), path.path());
        Ok(RequestContext {
            client,
            route,
            host,
            path,
            upgrade: parts.version == Version::HTTP_11 && headers::wants_upgrade(&parts.headers),
            presented: None,
            session: None,
            upstream: None,
        })
    }

    /// The name of the pool that serves it (`default` for `[upstreams]`).
    pub fn pool_name(&self) -> &str {
        &self.route.pool_name
    }

    /// The resolved session; the load phase has run.
    pub fn session(&self) -> &Resolved {
        self.session
            .as_ref()
            .expect("the load phase runs before the session is read")
    }
}

/// The request's one `Host` header, checked to be a valid `host[:port]`.
fn single_host(headers: &HeaderMap, client: &Client) -> Result<Option<HeaderValue>, ProxyError> {
    let mut hosts = headers.get_all(HOST).iter();
    let Some(host) = hosts.next() else {
        return Ok(None);
    };
    if hosts.next().is_some() {
        return Err(ProxyError::bad_request("more than one Host header"));
    }
    let is_authority = |host: &HeaderValue| {
        Authority::try_from(host.as_bytes())
            .is_ok_and(|authority| authority.as_str() == host && !authority.as_str().contains('@'))
    };
    match client.host_passes(host, is_authority) {
        true => Ok(Some(host.clone())),
        false => Err(ProxyError::bad_request(
            "a Host header that is not host[:port]",
        )),
    }
}

fn authority_value(authority: &Authority) -> HeaderValue {
    HeaderValue::from_str(authority.as_str()).expect("an authority is a header value")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Kind;

    fn parts(version: Version, uri: &str, hosts: &[&str]) -> Parts {
        let mut builder = http::Request::builder().version(version).uri(uri);
        for host in hosts {
            builder = builder.header(HOST, *host);
        }
        builder.body(()).unwrap().into_parts().0
    }

    fn admit(version: Version, uri: &str, hosts: &[&str]) -> Result<RequestContext, ProxyError> {
        let client = Arc::new(Client::new("127.0.0.1:5000".parse().unwrap(), false));
        RequestContext::admit(&parts(version, uri, hosts), client, &Routes::default())
    }

    fn host_of(result: Result<RequestContext, ProxyError>) -> Option<String> {
        let context = result.expect("admitted");
        context.host.map(|h| h.to_str().unwrap().to_string())
    }

    fn refused(result: Result<RequestContext, ProxyError>) -> bool {
        matches!(result, Err(error) if error.kind() == Kind::BadRequest)
    }

    #[test]
    fn one_host_header_is_the_host() {
        let host = host_of(admit(Version::HTTP_11, "/x", &["shop.example:8080"]));
        assert_eq!(host.as_deref(), Some("shop.example:8080"));
    }

    #[test]
    fn two_host_headers_are_refused_even_when_equal() {
        assert!(refused(admit(
            Version::HTTP_11,
            "/",
            &["a.example", "b.example"]
        )));
        assert!(refused(admit(
            Version::HTTP_11,
            "/",
            &["a.example", "a.example"]
        )));
    }

    #[test]
    fn an_http11_request_without_host_is_refused_but_http10_may_lack_it() {
        assert!(refused(admit(Version::HTTP_11, "/", &[])));
        assert_eq!(host_of(admit(Version::HTTP_10, "/", &[])), None);
    }

    #[test]
    fn a_host_that_is_not_an_authority_is_refused() {
        for bad in ["a b", "user@a.example", "a.example/path", ""] {
            assert!(refused(admit(Version::HTTP_11, "/", &[bad])), "{bad:?}");
        }
    }

    #[test]
    fn a_connection_that_sent_a_valid_host_is_still_refused_a_bad_one() {
        let client = Arc::new(Client::new("127.0.0.1:5000".parse().unwrap(), false));
        let on_it = |host: &str| {
            let parts = parts(Version::HTTP_11, "/", &[host]);
            RequestContext::admit(&parts, client.clone(), &Routes::default())
        };
        assert_eq!(host_of(on_it("a.example")).as_deref(), Some("a.example"));
        assert_eq!(host_of(on_it("a.example")).as_deref(), Some("a.example"));
        for bad in ["a b", "user@a.example", "a.example/path"] {
            assert!(refused(on_it(bad)), "{bad:?}");
        }
        assert_eq!(host_of(on_it("b.example")).as_deref(), Some("b.example"));
        assert!(refused(on_it("a.example/path")));
    }

    #[test]
    fn an_absolute_target_wins_over_host_and_leaves_origin_form() {
        let context = admit(
            Version::HTTP_11,
            "http://other.example/x?q=1",
            &["a.example"],
        )
        .unwrap();
        assert_eq!(context.host.unwrap(), "other.example");
        assert_eq!(context.path.as_str(), "/x?q=1");
    }

    #[test]
    fn only_an_http11_request_can_ask_to_upgrade() {
        let mut upgrade = parts(Version::HTTP_11, "/ws", &["a.example"]);
        upgrade
            .headers
            .insert("connection", HeaderValue::from_static("Upgrade"));
        upgrade
            .headers
            .insert("upgrade", HeaderValue::from_static("websocket"));
        let client = Arc::new(Client::new("127.0.0.1:5000".parse().unwrap(), false));
        assert!(
            RequestContext::admit(&upgrade, client.clone(), &Routes::default())
                .unwrap()
                .upgrade
        );
        upgrade.version = Version::HTTP_2;
        assert!(
            !RequestContext::admit(&upgrade, client, &Routes::default())
                .unwrap()
                .upgrade
        );
    }
}

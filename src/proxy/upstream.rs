//! The upstream servers (SPEC §7): round-robin balancing with no stickiness,
//! the pooled HTTP/1.1 client, and the retry of a request whose connection
//! failed before anything was sent.

use std::sync::atomic::{AtomicUsize, Ordering};

use http::uri::{PathAndQuery, Scheme};
use http::{HeaderMap, Method, Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tracing::warn;

use super::body::RequestBody;
use crate::config::{UpstreamUrl, UpstreamsConfig};
use crate::error::ProxyError;

/// The upstream pool.
pub struct Upstreams {
    servers: Vec<UpstreamUrl>,
    next: AtomicUsize,
    client: Client<HttpConnector, RequestBody>,
}

/// A request on its way upstream, without its URI's scheme and authority,
/// which each attempt fills in for its server.
pub struct Outbound {
    /// The method.
    pub method: Method,
    /// The path and query, as the client sent them.
    pub path: PathAndQuery,
    /// The headers, already filtered.
    pub headers: HeaderMap,
    /// The client's body.
    pub body: Incoming,
}

impl Upstreams {
    /// Prepares the pool and its client.
    pub fn new(config: &UpstreamsConfig) -> Upstreams {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .build(connector);
        Upstreams {
            servers: config.servers.clone(),
            next: AtomicUsize::new(0),
            client,
        }
    }

    /// Sends a request to the next server in turn. If connecting fails before
    /// anything was sent, the same request goes to the following server, each
    /// server being tried at most once.
    pub async fn forward(&self, outbound: Outbound) -> Result<Response<Incoming>, ProxyError> {
        let Outbound {
            method,
            path,
            headers,
            body,
        } = outbound;
        let count = self.servers.len();
        let first = self.next.fetch_add(1, Ordering::Relaxed);
        let (mut body, mut reclaim) = RequestBody::new(body);
        let mut headers = Some(headers);
        for attempt in 0..count {
            let server = &self.servers[(first + attempt) % count];
            let last = attempt + 1 == count;
            // A later attempt needs the headers again; the last one takes them.
            let attempt_headers = match last {
                true => headers.take().unwrap_or_default(),
                false => headers.clone().unwrap_or_default(),
            };
            let request = build_request(&method, server, &path, attempt_headers, body);
            let error = match self.client.request(request).await {
                Ok(response) => return Ok(response),
                Err(error) => error,
            };
            let retry = match error.is_connect() && !last {
                true => reclaim.reclaim(),
                false => None,
            };
            let Some((next_body, next_reclaim)) = retry else {
                return Err(ProxyError::Upstream {
                    server: server.to_string(),
                    source: error,
                });
            };
            warn!(%server, %error, "upstream connection failed; retrying on the next server");
            (body, reclaim) = (next_body, next_reclaim);
        }
        Err(ProxyError::NoUpstream)
    }
}

fn build_request(
    method: &Method,
    server: &UpstreamUrl,
    path: &PathAndQuery,
    headers: HeaderMap,
    body: RequestBody,
) -> Request<RequestBody> {
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(Scheme::HTTP);
    uri.authority = Some(server.authority.clone());
    uri.path_and_query = Some(path.clone());
    let mut request = Request::new(body);
    *request.method_mut() = method.clone();
    *request.uri_mut() = Uri::from_parts(uri).expect("scheme, authority and path are each valid");
    // Upstreams speak HTTP/1.1 whatever the client spoke.
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = headers;
    request
}

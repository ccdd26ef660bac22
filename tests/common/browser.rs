//! [`Browser`]: an HTTP/1.1 client that keeps the session cookie; [`Reply`]:
//! a response read whole, with the backend's echo of what it received.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// A response, read whole (tests only: the proxy never does this).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// The backend's echo of what it received.
    pub fn echo(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not an echo: {:?}", self.body))
    }

    /// Which backend answered.
    pub fn backend(&self) -> String {
        self.echo()["backend"].as_str().unwrap().to_string()
    }

    /// The values of a header the backend received, in order.
    pub fn seen_header(&self, name: &str) -> Vec<String> {
        self.echo()["headers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|pair| pair[0].as_str().unwrap().eq_ignore_ascii_case(name))
            .map(|pair| pair[1].as_str().unwrap().to_string())
            .collect()
    }

    /// The one value of a header the backend received.
    pub fn seen_one(&self, name: &str) -> Option<String> {
        let values = self.seen_header(name);
        assert!(values.len() <= 1, "{name} arrived {} times", values.len());
        values.into_iter().next()
    }

    /// The session the backend received, parsed.
    pub fn session(&self) -> Value {
        serde_json::from_str(&self.seen_one("x-session").expect("X-Session arrived")).unwrap()
    }

    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    }
}

/// An HTTP/1.1 client that keeps the `sg_session` cookie as a browser would.
#[derive(Clone)]
pub struct Browser {
    addr: SocketAddr,
    client: Client<HttpConnector, Full<Bytes>>,
    pub cookie: Arc<Mutex<Option<String>>>,
}

impl Browser {
    pub fn new(addr: SocketAddr) -> Browser {
        Browser {
            addr,
            client: Client::builder(TokioExecutor::new()).build_http(),
            cookie: Arc::new(Mutex::new(None)),
        }
    }

    /// The session cookie's value (`<sid>.<tag>`), if any.
    pub fn cookie(&self) -> Option<String> {
        self.cookie.lock().unwrap().clone()
    }

    pub fn set_cookie(&self, value: Option<String>) {
        *self.cookie.lock().unwrap() = value;
    }

    /// The sid part of the cookie.
    pub fn sid(&self) -> Option<String> {
        self.cookie()
            .map(|c| c.split('.').next().unwrap().to_string())
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send("GET", path, &[], Bytes::new()).await
    }

    /// A GET with extra request headers.
    pub async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        self.send("GET", path, headers, Bytes::new()).await
    }

    pub async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Reply {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("http://{}{}", self.addr, path));
        if let Some(cookie) = self.cookie() {
            request = request.header("cookie", format!("sg_session={cookie}"));
        }
        for (k, v) in headers {
            // Raw bytes: a header may carry UTF-8 as obs-text (RFC 9110 §5.5).
            request = request.header(*k, http::HeaderValue::from_bytes(v.as_bytes()).unwrap());
        }
        let response = self
            .client
            .request(request.body(Full::new(body)).unwrap())
            .await
            .expect("the proxy answers");
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("the body arrives").to_bytes();
        let reply = Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        };
        for set in reply.set_cookies() {
            let parsed = cookie::Cookie::parse(set).unwrap();
            if parsed.name() == "sg_session" {
                let expired = parsed.max_age() == Some(cookie::time::Duration::ZERO);
                self.set_cookie((!expired).then(|| parsed.value().to_string()));
            }
        }
        reply
    }
}

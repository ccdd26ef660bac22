//! What a hostile or broken client can and cannot do to the proxy and its
//! backends: a client's own bad body is answered 400 and never counted
//! against a server; a request whose `Host` breaks RFC 9112 §3.2 is refused;
//! an absolute-form target's authority wins; a retried request names its
//! new server; and once every server was ejected, service comes back as
//! soon as one answers. Raw sockets on the client side, so nothing cleans
//! the bytes up before the proxy sees them.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use sessiongate::{Config, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const SECRET: &str = "hostile-clients-secret-0123456789abcdef";

/// A backend that reads each request's body to its end (as an app does)
/// and records the head it saw.
struct Backend {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<(String, HeaderMap)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Backend {
    async fn start() -> Backend {
        Backend::on(TcpListener::bind("127.0.0.1:0").await.unwrap())
    }

    fn on(listener: TcpListener) -> Backend {
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let record = record.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<Incoming>| {
                        let record = record.clone();
                        async move {
                            let (parts, body) = request.into_parts();
                            record
                                .lock()
                                .unwrap()
                                .push((parts.uri.to_string(), parts.headers));
                            let status = match body.collect().await {
                                Ok(_) => 200,
                                Err(_) => 599,
                            };
                            let response = Response::builder()
                                .status(status)
                                .body(Full::new(Bytes::from_static(b"ok")))
                                .unwrap();
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Backend { addr, seen, task }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn seen(&self) -> Vec<(String, HeaderMap)> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// sessiongate on a free port in front of `servers`, memory store.
async fn proxy(servers: &[String], upstreams: &str) -> SocketAddr {
    proxy_with(servers, upstreams, "").await
}

/// The same, with extra `[timeouts]` lines.
async fn proxy_with(servers: &[String], upstreams: &str, timeouts: &str) -> SocketAddr {
    let servers: Vec<String> = servers.iter().map(|s| format!("{s:?}")).collect();
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\
         [upstreams]\nservers = [{}]\n{upstreams}\n\
         [cookie]\nsecrets = [\"{SECRET}\"]\n\
         [store]\nkind = \"memory\"\n\
         [timeouts]\nupstream_connect = \"500ms\"\nbody_idle = \"2s\"\n{timeouts}\n",
        servers.join(", ")
    );
    let config = Config::parse(&text, Path::new("hostile.toml")).unwrap();
    let server = Server::bind(&config).await.unwrap();
    let addr = server.local_addr();
    tokio::spawn(server.run(std::future::pending()));
    addr
}

/// Sends raw bytes, optionally closes the write side, and returns the
/// response's status (None if the connection closed without one).
async fn raw(addr: SocketAddr, bytes: &[u8], close_after: bool) -> Option<u16> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    if close_after {
        stream.shutdown().await.unwrap();
    }
    let mut reply = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => reply.extend_from_slice(&buf[..n]),
            }
            if reply.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the proxy neither answered nor closed");
    let text = String::from_utf8_lossy(&reply);
    text.strip_prefix("HTTP/1.1 ")
        .or_else(|| text.strip_prefix("HTTP/1.0 "))
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
}

async fn get(addr: SocketAddr) -> u16 {
    raw(
        addr,
        b"GET / HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n",
        false,
    )
    .await
    .expect("a response")
}

const MALFORMED_CHUNK: &[u8] = b"POST /upload HTTP/1.1\r\nHost: shop.example\r\n\
    Transfer-Encoding: chunked\r\n\r\n5zz\r\nhello\r\n0\r\n\r\n";

const CUT_SHORT: &[u8] =
    b"POST /upload HTTP/1.1\r\nHost: shop.example\r\nContent-Length: 100000\r\n\r\n0123456789";

#[tokio::test]
async fn malformed_client_bodies_answer_400_and_never_eject_a_backend() {
    let (one, two) = (Backend::start().await, Backend::start().await);
    let addr = proxy(&[one.url(), two.url()], "max_fails = 3").await;
    for _ in 0..6 {
        assert_eq!(raw(addr, MALFORMED_CHUNK, false).await, Some(400));
    }
    for _ in 0..4 {
        assert_eq!(get(addr).await, 200, "a backend was taken out of rotation");
    }
}

#[tokio::test]
async fn uploads_cut_short_never_eject_a_backend() {
    let (one, two) = (Backend::start().await, Backend::start().await);
    let addr = proxy(&[one.url(), two.url()], "max_fails = 3").await;
    for _ in 0..6 {
        // The client is gone: whatever the proxy does, it is not a 502.
        assert_ne!(raw(addr, CUT_SHORT, true).await, Some(502));
    }
    for _ in 0..4 {
        assert_eq!(get(addr).await, 200, "a backend was taken out of rotation");
    }
    let gets = |backend: &Backend| backend.seen().iter().filter(|(p, _)| p == "/").count();
    assert_eq!((gets(&one), gets(&two)), (2, 2), "both stay in rotation");
}

#[tokio::test]
async fn two_host_headers_are_refused_before_any_backend_sees_them() {
    let backend = Backend::start().await;
    let addr = proxy(&[backend.url()], "").await;
    let request = b"GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n";
    assert_eq!(raw(addr, request, false).await, Some(400));
    assert!(backend.seen().is_empty());
}

#[tokio::test]
async fn an_http11_request_without_host_is_refused_and_an_http10_one_is_not() {
    let backend = Backend::start().await;
    let addr = proxy(&[backend.url()], "").await;
    assert_eq!(raw(addr, b"GET / HTTP/1.1\r\n\r\n", false).await, Some(400));
    assert!(backend.seen().is_empty());
    assert_eq!(raw(addr, b"GET / HTTP/1.0\r\n\r\n", false).await, Some(200));
    let seen = backend.seen();
    assert_eq!(seen[0].1["host"], backend.addr.to_string());
}

#[tokio::test]
async fn an_absolute_form_target_names_the_host_the_backend_sees() {
    let backend = Backend::start().await;
    let addr = proxy(&[backend.url()], "").await;
    let request = b"GET http://other.example/x?q=1 HTTP/1.1\r\nHost: a.example\r\n\r\n";
    assert_eq!(raw(addr, request, false).await, Some(200));
    let (path, headers) = &backend.seen()[0];
    assert_eq!(path, "/x?q=1");
    assert_eq!(headers.get_all("host").iter().count(), 1);
    assert_eq!(headers["host"], "other.example");
    assert_eq!(headers["x-forwarded-host"], "other.example");
}

#[tokio::test]
async fn a_request_retried_on_the_next_server_names_that_server() {
    // The first server in the rotation refuses connections; the request,
    // which named no Host (HTTP/1.0), goes on to the second.
    let refused = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = format!("http://{}", refused.local_addr().unwrap());
    drop(refused);
    let backend = Backend::start().await;
    let addr = proxy(&[dead, backend.url()], "").await;
    assert_eq!(raw(addr, b"GET / HTTP/1.0\r\n\r\n", false).await, Some(200));
    let seen = backend.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].1.get_all("host").iter().count(), 1);
    assert_eq!(seen[0].1["host"], backend.addr.to_string());
}

#[tokio::test]
async fn once_every_server_was_ejected_service_returns_when_one_answers() {
    let ports: Vec<SocketAddr> = {
        let listeners = [
            TcpListener::bind("127.0.0.1:0").await.unwrap(),
            TcpListener::bind("127.0.0.1:0").await.unwrap(),
        ];
        listeners.iter().map(|l| l.local_addr().unwrap()).collect()
    };
    let urls: Vec<String> = ports.iter().map(|a| format!("http://{a}")).collect();
    let addr = proxy(&urls, "max_fails = 1\nfail_timeout = \"60s\"").await;
    // Both servers down: each request fails on both, and both are ejected.
    for _ in 0..3 {
        assert_eq!(get(addr).await, 502);
    }
    // One comes back; within its 60 s ejection, it is tried and serves.
    let backend = Backend::on(TcpListener::bind(ports[1]).await.unwrap());
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(get(addr).await);
    }
    assert_eq!(statuses, [200; 4], "service came back at once");
    assert!(!backend.seen().is_empty());
}

#[tokio::test]
async fn a_slow_upload_is_not_a_slow_upstream() {
    // The upload takes longer than the response deadline; each pause is
    // within body_idle. The deadline starts once the body is sent.
    let backend = Backend::start().await;
    let addr = proxy_with(&[backend.url()], "", "upstream_response = \"400ms\"").await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"POST /upload HTTP/1.1\r\nHost: a.example\r\nContent-Length: 30\r\n\r\n")
        .await
        .unwrap();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        stream.write_all(b"0123456789").await.unwrap();
    }
    let mut reply = vec![0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut reply))
        .await
        .unwrap()
        .unwrap();
    let head = String::from_utf8_lossy(&reply[..n]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}

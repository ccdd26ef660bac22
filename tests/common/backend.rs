//! [`Backend`]: an HTTP upstream on loopback whose answers the test steers
//! through request headers and paths, and which records every request it
//! receives.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// A request as a backend received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: HeaderMap,
}

/// An upstream HTTP server on loopback, steered by request headers:
///
/// - `x-test-update: <json>` (repeatable) comes back as `X-Session-Update`;
/// - `x-test-action: <a>` comes back as `X-Session-Action`;
/// - `x-test-delay-ms: <n>` waits before answering;
/// - `x-test-reply-header: <name>: <value>` (repeatable) adds a response header.
///
/// The body is JSON: the backend's name and the request it saw.
pub struct Backend {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    stop: Option<oneshot::Sender<()>>,
}

impl Backend {
    pub async fn start(name: &str) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Backend::serve(name, listener)
    }

    /// Serves on a given listener (to come back on the same port).
    pub fn serve(name: &str, listener: TcpListener) -> Backend {
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (stop, mut stopped) = oneshot::channel::<()>();
        let backend_name = name.to_string();
        let record = seen.clone();
        tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let name = backend_name.clone();
                        let record = record.clone();
                        let service = service_fn(move |request| {
                            let name = name.clone();
                            let record = record.clone();
                            async move { Ok::<_, Infallible>(answer(&name, request, &record).await) }
                        });
                        connections.spawn(async move {
                            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                                .await;
                        });
                    }
                }
            }
            connections.abort_all();
        });
        Backend {
            addr,
            seen,
            stop: Some(stop),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Stops listening and drops its open connections.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The size of the chunks `/download` sends.
pub const CHUNK: usize = 64 * 1024;

type TestBody = BoxBody<Bytes, Infallible>;

fn full(bytes: impl Into<Bytes>) -> TestBody {
    Full::new(bytes.into()).boxed()
}

/// `n` bytes in `CHUNK`-sized chunks, made as they are sent.
pub fn stream_of(n: u64) -> TestBody {
    let chunks = futures_util::stream::unfold(n, |left| async move {
        (left > 0).then(|| {
            let size = left.min(CHUNK as u64);
            (
                Ok::<_, Infallible>(Frame::data(Bytes::from(vec![b'x'; size as usize]))),
                left - size,
            )
        })
    });
    BodyExt::boxed(StreamBody::new(chunks))
}

fn query(path: &str, key: &str) -> Option<String> {
    let (_, query) = path.split_once('?')?;
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

async fn answer(
    name: &str,
    mut request: Request<Incoming>,
    seen: &Mutex<Vec<Seen>>,
) -> Response<TestBody> {
    let headers = request.headers().clone();
    let path = request.uri().to_string();
    seen.lock().unwrap().push(Seen {
        method: request.method().to_string(),
        path: path.clone(),
        headers: headers.clone(),
    });
    if let Some(ms) = headers
        .get("x-test-delay-ms")
        .and_then(|v| v.to_str().ok()?.parse().ok())
    {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let mut response = Response::builder();
    for update in headers.get_all("x-test-update") {
        response = response.header("X-Session-Update", update.clone());
    }
    for action in headers.get_all("x-test-action") {
        response = response.header("X-Session-Action", action.clone());
    }
    for extra in headers.get_all("x-test-reply-header") {
        let (k, v) = extra.to_str().unwrap().split_once(": ").unwrap();
        response = response.header(k, v);
    }
    if path.starts_with("/ws") {
        // A WebSocket echo whose first message is the session it saw.
        let key = headers
            .get("sec-websocket-key")
            .expect("a websocket handshake")
            .as_bytes();
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key);
        let handshake = serde_json::json!({
            "backend": name,
            "x-session": headers.get("x-session").map(|v| v.to_str().unwrap()),
            "x-session-status": headers.get("x-session-status").map(|v| v.to_str().unwrap()),
        });
        let upgrade = hyper::upgrade::on(&mut request);
        tokio::spawn(async move {
            let Ok(upgraded) = upgrade.await else { return };
            let role = tokio_tungstenite::tungstenite::protocol::Role::Server;
            let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                TokioIo::new(upgraded),
                role,
                None,
            )
            .await;
            let _ = ws.send(handshake.to_string().into()).await;
            while let Some(Ok(message)) = ws.next().await {
                if message.is_close() || ws.send(message).await.is_err() {
                    break;
                }
            }
        });
        return response
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("upgrade", "websocket")
            .header("connection", "upgrade")
            .header("sec-websocket-accept", accept)
            .body(full(Bytes::new()))
            .unwrap();
    }
    if path.starts_with("/download") {
        let n: u64 = query(&path, "bytes").unwrap().parse().unwrap();
        if query(&path, "chunked").is_none() {
            response = response.header("content-length", n);
        }
        return response.body(stream_of(n)).unwrap();
    }
    if path.starts_with("/big-update") {
        // One update header of about `bytes` bytes.
        let n: usize = query(&path, "bytes").unwrap().parse().unwrap();
        let update = format!("{{\"pad\":\"{}\"}}", "x".repeat(n));
        return response
            .header("X-Session-Update", update)
            .body(full("big"))
            .unwrap();
    }
    if path.starts_with("/many-updates") {
        let n: usize = query(&path, "count").unwrap().parse().unwrap();
        for i in 0..n {
            response = response.header("X-Session-Update", format!("{{\"k{i}\":{i}}}"));
        }
        return response.body(full("many")).unwrap();
    }
    if path.starts_with("/stall") {
        // A first chunk, then nothing, ever.
        let first = futures_util::stream::once(async {
            Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"first")))
        });
        let never = futures_util::stream::pending();
        return response
            .body(BodyExt::boxed(StreamBody::new(first.chain(never))))
            .unwrap();
    }
    // Count the body as it streams, without holding it.
    let mut body_bytes = 0usize;
    let mut body = request.into_body();
    while let Some(Ok(frame)) = body.frame().await {
        body_bytes += frame.data_ref().map_or(0, Bytes::len);
    }
    let echo = serde_json::json!({
        "backend": name,
        "path": path,
        "body_bytes": body_bytes,
        "headers": headers.iter().map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned())).collect::<Vec<_>>(),
    });
    response
        .header("content-type", "application/json")
        .body(full(echo.to_string()))
        .unwrap()
}

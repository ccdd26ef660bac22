//! The test harness: real processes and real sockets.
//!
//! - [`Redis`]: a private `redis-server` on a free loopback port, stopped when
//!   dropped; never a shared instance.
//! - [`Backend`]: an HTTP upstream on loopback whose answers the test steers
//!   through request headers (`x-test-update`, `x-test-action`,
//!   `x-test-delay-ms`, `x-test-reply-header`) and paths (`/download`,
//!   `/stall`, `/ws`, `/big-update`, `/many-updates`), and which records
//!   every request it receives.
//! - [`Binary`]: the built `sessiongate` binary as its own process, for what
//!   only a process shows: memory, signals, exit codes.
//! - [`Harness`]: sessiongate (the library's server, on a real socket) in
//!   front of two backends, with the Redis or the memory store.
//! - [`Browser`]: an HTTP client that keeps the session cookie.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use sessiongate::{Config, Server};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// Secrets of 32+ bytes for tests.
pub const SECRET_A: &str = "test-secret-A-0123456789abcdef0123456789";
pub const SECRET_B: &str = "test-secret-B-0123456789abcdef0123456789";

/// The store a harness runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    Redis,
    Memory,
}

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

// ---------------------------------------------------------------- Redis

/// A private redis-server, killed when dropped.
pub struct Redis {
    pub port: u16,
    child: Option<Child>,
}

impl Redis {
    /// Starts redis-server on a free port and waits until it answers.
    pub fn start() -> Redis {
        for _ in 0..5 {
            let port = free_port();
            let mut redis = Redis { port, child: None };
            if redis.spawn() {
                return redis;
            }
        }
        panic!("could not start redis-server (is it installed? .ci/run installs it)");
    }

    fn spawn(&mut self) -> bool {
        let binary = std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
        let child = Command::new(binary)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .args(["--dir", &std::env::temp_dir().to_string_lossy()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server could not be run");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(mut c) = self.try_connection()
                && redis::cmd("PING").query::<String>(&mut c).is_ok()
            {
                return true;
            }
            if let Some(Ok(Some(_))) = self.child.as_mut().map(Child::try_wait) {
                return false; // exited: the port was taken meanwhile
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill();
        false
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn try_connection(&self) -> redis::RedisResult<redis::Connection> {
        redis::Client::open(self.url())?.get_connection_with_timeout(Duration::from_secs(1))
    }

    /// A plain connection for inspecting what sessiongate stored.
    pub fn connection(&self) -> redis::Connection {
        self.try_connection()
            .expect("the test's redis-server answers")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Kills the server (as a crash would).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port (after [`kill`](Self::kill)).
    pub fn restart(&mut self) {
        self.kill();
        assert!(
            self.spawn(),
            "redis-server did not come back on port {}",
            self.port
        );
    }

    /// Every key in the server.
    pub fn keys(&self) -> Vec<String> {
        redis::cmd("KEYS")
            .arg("*")
            .query(&mut self.connection())
            .unwrap()
    }

    /// A session hash as stored.
    pub fn hash(&self, key: &str) -> BTreeMap<String, String> {
        redis::cmd("HGETALL")
            .arg(key)
            .query(&mut self.connection())
            .unwrap()
    }

    /// A key's TTL in ms (-1: none, -2: no key).
    pub fn pttl(&self, key: &str) -> i64 {
        redis::cmd("PTTL")
            .arg(key)
            .query(&mut self.connection())
            .unwrap()
    }

    /// Calls per command name from INFO commandstats.
    pub fn command_stats(&self) -> BTreeMap<String, u64> {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query(&mut self.connection())
            .unwrap();
        info.lines()
            .filter_map(|line| line.strip_prefix("cmdstat_"))
            .filter_map(|line| {
                let (name, rest) = line.split_once(':')?;
                let calls = rest
                    .strip_prefix("calls=")?
                    .split(',')
                    .next()?
                    .parse()
                    .ok()?;
                Some((name.to_string(), calls))
            })
            .collect()
    }

    /// The commands sent to Redis between two [`command_stats`] readings,
    /// by name, without the INFO calls that read them.
    ///
    /// INFO commandstats also counts the commands that sessiongate's Lua
    /// scripts run inside Redis; [`round_trips`] leaves those out.
    pub fn commands_between(
        before: &BTreeMap<String, u64>,
        after: &BTreeMap<String, u64>,
    ) -> BTreeMap<String, u64> {
        after
            .iter()
            .filter(|(name, _)| name.as_str() != "info")
            .map(|(name, calls)| (name.clone(), calls - before.get(name).copied().unwrap_or(0)))
            .filter(|(_, delta)| *delta > 0)
            .collect()
    }

    /// Commands a client sent (round trips): every command counted, except
    /// those that only sessiongate's scripts run inside Redis.
    pub fn round_trips(commands: &BTreeMap<String, u64>) -> u64 {
        const INSIDE_SCRIPTS: [&str; 6] = ["hgetall", "hset", "hdel", "pexpire", "exists", "time"];
        commands
            .iter()
            .filter(|(name, _)| !INSIDE_SCRIPTS.contains(&name.as_str()))
            .map(|(_, calls)| calls)
            .sum()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------- Backend

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
    pub name: String,
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
            name: name.to_string(),
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

// ---------------------------------------------------------------- Proxy

/// A running sessiongate, stopped when dropped.
pub struct Proxy {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<()>>,
}

impl Proxy {
    /// Starts sessiongate with this configuration text on a free port.
    pub async fn start(config: &str) -> Proxy {
        let config = Config::parse(config, Path::new("test.toml")).expect("test config is valid");
        let server = Server::bind(&config).await.expect("sessiongate binds");
        let addr = server.local_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let done = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        Proxy {
            addr,
            stop: Some(stop),
            done: Some(done),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Asks it to shut down and waits until it has.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(done) = self.done.take() {
            done.await.unwrap();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// What a test may change in the configuration.
#[derive(Debug, Clone)]
pub struct Setup {
    pub store: StoreKind,
    pub secrets: Vec<String>,
    /// Extra lines for `[session]`.
    pub session: String,
    /// Extra lines for `[cookie]`.
    pub cookie: String,
    /// Extra lines for `[store]`.
    pub store_extra: String,
    /// Extra lines for `[server]`.
    pub server: String,
    /// Extra lines for `[upstreams]`.
    pub upstreams: String,
    /// Extra lines for `[timeouts]`.
    pub timeouts: String,
}

impl Setup {
    pub fn new(store: StoreKind) -> Setup {
        Setup {
            store,
            secrets: vec![SECRET_A.into()],
            session: String::new(),
            cookie: String::new(),
            store_extra: String::new(),
            server: String::new(),
            upstreams: String::new(),
            timeouts: String::new(),
        }
    }

    /// The configuration text for these backends and this Redis.
    pub fn config(&self, backends: &[String], redis_url: Option<&str>) -> String {
        let servers: Vec<String> = backends.iter().map(|b| format!("{b:?}")).collect();
        let secrets: Vec<String> = self.secrets.iter().map(|s| format!("{s:?}")).collect();
        let store = match (self.store, redis_url) {
            (StoreKind::Redis, Some(url)) => format!("kind = \"redis\"\nurl = \"{url}\""),
            _ => "kind = \"memory\"".into(),
        };
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n{}\n\
             [upstreams]\nservers = [{}]\n{}\n\
             [cookie]\nsecrets = [{}]\n{}\n\
             [session]\n{}\n\
             [store]\n{}\n{}\n\
             [timeouts]\n{}\n",
            self.server,
            servers.join(", "),
            self.upstreams,
            secrets.join(", "),
            self.cookie,
            self.session,
            store,
            self.store_extra,
            self.timeouts,
        )
    }

    pub async fn start(self) -> Harness {
        let redis = (self.store == StoreKind::Redis).then(Redis::start);
        let backends = vec![Backend::start("one").await, Backend::start("two").await];
        let urls: Vec<String> = backends.iter().map(Backend::url).collect();
        let config = self.config(&urls, redis.as_ref().map(|r| r.url()).as_deref());
        let proxy = Proxy::start(&config).await;
        Harness {
            setup: self,
            redis,
            backends,
            proxy,
        }
    }
}

/// sessiongate in front of two backends, with its store.
pub struct Harness {
    pub setup: Setup,
    pub redis: Option<Redis>,
    pub backends: Vec<Backend>,
    pub proxy: Proxy,
}

impl Harness {
    pub async fn start(store: StoreKind) -> Harness {
        Setup::new(store).start().await
    }

    pub fn redis(&self) -> &Redis {
        self.redis.as_ref().expect("this harness runs with Redis")
    }

    /// A new browser talking to this proxy.
    pub fn browser(&self) -> Browser {
        Browser::new(self.proxy.addr)
    }

    /// Another sessiongate on the same store and backends, configured by `setup`.
    pub async fn another_proxy(&self, setup: &Setup) -> Proxy {
        let urls: Vec<String> = self.backends.iter().map(Backend::url).collect();
        let config = setup.config(&urls, self.redis.as_ref().map(|r| r.url()).as_deref());
        Proxy::start(&config).await
    }

    /// Every request the backends received, in no particular order.
    pub fn seen(&self) -> Vec<Seen> {
        self.backends.iter().flat_map(Backend::seen).collect()
    }

    /// Every Redis key holds a TTL.
    pub fn assert_every_key_has_a_ttl(&self) {
        if let Some(redis) = &self.redis {
            for key in redis.keys() {
                let ttl = redis.pttl(&key);
                assert!(ttl > 0, "{key} has no TTL ({ttl})");
            }
        }
    }
}

// ---------------------------------------------------------------- Browser

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

/// Runs a behaviour test against both stores: `behaviours!(name, ...)` makes
/// `redis_store::name` and `memory_store::name` from `async fn name(Harness)`.
#[macro_export]
macro_rules! behaviours {
    ($($name:ident),* $(,)?) => {
        mod redis_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Setup::new($crate::common::StoreKind::Redis)).await
                }
            )*
        }
        mod memory_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Setup::new($crate::common::StoreKind::Memory)).await
                }
            )*
        }
    };
}

// ---------------------------------------------------------------- Binary

/// The built `sessiongate` binary running `run` with a configuration file,
/// killed when dropped if still running.
pub struct Binary {
    pub addr: SocketAddr,
    pub child: Child,
    _dir: TempDir,
}

/// A directory removed when dropped.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static COUNT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("sessiongate-{name}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Binary {
    /// Runs the binary on `config` (whose `[server]` must not set `listen`:
    /// a free port is chosen) and waits until it accepts connections.
    pub fn start(config: &str) -> Binary {
        let port = free_port();
        let config = config.replacen(
            "[server]\n",
            &format!("[server]\nlisten = \"127.0.0.1:{port}\"\n"),
            1,
        );
        let config = config.replace("listen = \"127.0.0.1:0\"\n", "");
        let dir = TempDir::new("binary");
        let path = dir.0.join("config.toml");
        std::fs::write(&path, config).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_sessiongate"))
            .arg("run")
            .arg("--config")
            .arg(&path)
            .env("SESSIONGATE_LOG", "warn")
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        wait_until_listening(addr);
        Binary {
            addr,
            child,
            _dir: dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        signal(self.pid(), "TERM");
    }

    /// Peak resident memory so far, in KiB (VmHWM from /proc).
    pub fn peak_rss_kib(&self) -> u64 {
        self.status_kib("VmHWM:")
    }

    /// Resident memory now, in KiB (VmRSS from /proc).
    pub fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS:")
    }

    fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{field} in /proc/PID/status"))
    }

    /// Waits for the process to exit, at most `limit`.
    pub fn wait(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Waits (up to 10 s) until something accepts connections on `addr`.
pub fn wait_until_listening(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs the sessiongate binary to its end with these arguments and
/// environment; returns its exit code and everything it printed.
pub fn sessiongate(args: &[&std::ffi::OsStr], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_sessiongate"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    (output.status.code(), format!("{stdout}{stderr}"))
}

/// Sends a signal (`TERM`, `STOP`, `CONT`, …) to a process this test started.
pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name} {pid} failed");
}

//! Real Redis topologies for `tests/topologies.rs`: every process on a free
//! 127.0.0.1 port (or inside a network namespace the test made), each in
//! its own temporary directory, killed when dropped.
//!
//! - [`Node`]: one `redis-server` with the arguments a test gives it;
//! - [`Cluster`]: six nodes joined by `redis-cli --cluster create` (3
//!   masters, 3 replicas);
//! - [`SentinelGroup`]: a master, a replica and three sentinels;
//! - [`Backend`]: an HTTP server that echoes the `X-Session` it receives and
//!   stores what `x-test-update` asks for;
//! - [`Gate`]: sessiongate (the library's server) on a free port;
//! - [`Client`]: an HTTP client that keeps one session cookie;
//! - [`Workload`]: clients that each update their own session in a loop,
//!   bounded in count and time, recording what was acknowledged.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use sessiongate::{Config, Server};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// A cookie secret of 32+ bytes.
pub const SECRET: &str = "topology-secret-0123456789abcdef0123456789";

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A temporary directory, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!(
            "sg-topology-{name}-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------- Redis

/// One redis-server (or sentinel), killed when dropped.
pub struct Node {
    pub port: u16,
    pub host: String,
    pub dir: TempDir,
    args: Vec<String>,
    /// Runs it inside this network namespace.
    netns: Option<String>,
    child: Option<Child>,
}

impl Node {
    /// Starts `redis-server` on `port` with `args` (after the defaults:
    /// loopback, no persistence, its own dir) and waits until the port
    /// accepts connections.
    pub fn start(name: &str, port: u16, args: &[&str]) -> Node {
        Node::start_in(name, None, "127.0.0.1", port, args)
    }

    pub fn start_in(name: &str, netns: Option<&str>, host: &str, port: u16, args: &[&str]) -> Node {
        let dir = TempDir::new(name);
        let mut node = Node {
            port,
            host: host.to_string(),
            dir,
            args: args.iter().map(|a| a.to_string()).collect(),
            netns: netns.map(str::to_string),
            child: None,
        };
        node.spawn();
        node
    }

    fn spawn(&mut self) {
        let mut command = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "redis-server"]);
                c
            }
            None => Command::new("redis-server"),
        };
        let dir = self.dir.0.to_string_lossy().to_string();
        let sentinel = self.args.iter().any(|a| a == "--sentinel");
        if !sentinel {
            command.args(["--port", &self.port.to_string(), "--bind", &self.host]);
            command.args(["--save", "", "--appendonly", "no", "--protected-mode", "no"]);
            command.args(["--dir", &dir]);
        }
        command.args(&self.args);
        let log = std::fs::File::create(self.dir.path("redis.log")).unwrap();
        let child = command
            .current_dir(&self.dir.0)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("redis-server could not be run");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        let addr: SocketAddr = format!("{}:{}", self.host, self.port).parse().unwrap();
        while Instant::now() < deadline {
            if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server on {addr} did not start");
    }

    pub fn url(&self) -> String {
        format!("redis://{}:{}", self.host, self.port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and dir, with the same arguments.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// A plain connection (no TLS, the default user).
    pub fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .unwrap()
            .get_connection_with_timeout(Duration::from_secs(2))
            .expect("the test's redis-server answers")
    }

    /// One command, its reply as text.
    pub fn cmd(&self, args: &[&str]) -> redis::RedisResult<redis::Value> {
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query(&mut self.connection())
    }

    /// `INFO <section>` as key/value pairs.
    pub fn info(&self, section: &str) -> BTreeMap<String, String> {
        let text: String = redis::cmd("INFO")
            .arg(section)
            .query(&mut self.connection())
            .unwrap_or_default();
        text.lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.to_string(), v.trim().to_string()))
            .collect()
    }

    /// The session keys this node holds.
    pub fn session_keys(&self) -> Vec<String> {
        redis::cmd("KEYS")
            .arg("sg:*")
            .query(&mut self.connection())
            .unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits until `check` holds, polling; false if `limit` passes first.
pub fn wait_for(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Six cluster nodes, joined as 3 masters with one replica each.
pub struct Cluster {
    pub nodes: Vec<Node>,
}

impl Cluster {
    pub fn start() -> Cluster {
        let nodes: Vec<Node> = (0..6)
            .map(|i| {
                Node::start(
                    &format!("cluster{i}"),
                    free_port(),
                    &[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        "1000",
                        "--cluster-replica-validity-factor",
                        "0",
                        "--cluster-require-full-coverage",
                        "no",
                    ],
                )
            })
            .collect();
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for node in &nodes {
            create.arg(format!("127.0.0.1:{}", node.port));
        }
        let out = create
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("redis-cli runs");
        assert!(
            out.status.success(),
            "cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let cluster = Cluster { nodes };
        let ok = wait_for(Duration::from_secs(20), || {
            cluster.nodes.iter().all(|n| {
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query(&mut n.connection())
                    .unwrap_or_default();
                info.contains("cluster_state:ok") && info.contains("cluster_known_nodes:6")
            }) && cluster.masters().len() == 3
                && cluster
                    .nodes
                    .iter()
                    .filter(|n| {
                        n.info("replication").get("role").map(String::as_str) == Some("slave")
                    })
                    .all(|n| {
                        n.info("replication")
                            .get("master_link_status")
                            .map(String::as_str)
                            == Some("up")
                    })
        });
        assert!(ok, "the cluster did not come up");
        cluster
    }

    /// The indexes of the nodes that are masters now (and alive).
    pub fn masters(&self) -> Vec<usize> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.child.is_some())
            .filter(|(_, n)| {
                n.info("replication").get("role").map(String::as_str) == Some("master")
            })
            .map(|(i, _)| i)
            .collect()
    }

    /// The replica of master `index` (by `INFO replication` of the master).
    pub fn replica_of(&self, index: usize) -> Option<usize> {
        let info = self.nodes[index].info("replication");
        let slave = info.get("slave0")?;
        let port: u16 = slave
            .split(',')
            .find_map(|kv| kv.strip_prefix("port="))?
            .parse()
            .ok()?;
        self.nodes.iter().position(|n| n.port == port)
    }

    pub fn seeds(&self) -> String {
        self.nodes
            .iter()
            .take(3)
            .map(|n| format!("\"{}\"", n.url()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A master, one replica and three sentinels watching them as `sessions`.
pub struct SentinelGroup {
    pub redis: Vec<Node>,
    pub sentinels: Vec<Node>,
    /// The sentinels' configuration files, which they rewrite.
    configs: Vec<TempDir>,
}

impl SentinelGroup {
    pub fn start() -> SentinelGroup {
        let master = Node::start("sentinel-master", free_port(), &[]);
        let replica_port = free_port();
        let master_port = master.port.to_string();
        let replica = Node::start(
            "sentinel-replica",
            replica_port,
            &["--replicaof", "127.0.0.1", &master_port],
        );
        assert!(wait_for(Duration::from_secs(10), || {
            replica
                .info("replication")
                .get("master_link_status")
                .map(String::as_str)
                == Some("up")
        }));
        let mut configs = Vec::new();
        let sentinels = (0..3)
            .map(|i| {
                let port = free_port();
                let dir = TempDir::new(&format!("sentinel{i}-conf"));
                let file = dir.path("sentinel.conf");
                std::fs::write(
                    &file,
                    format!(
                        "port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {dir}\n\
                         sentinel monitor sessions 127.0.0.1 {master_port} 2\n\
                         sentinel down-after-milliseconds sessions 1000\n\
                         sentinel failover-timeout sessions 4000\n\
                         sentinel parallel-syncs sessions 1\n",
                        dir = dir.0.display()
                    ),
                )
                .unwrap();
                let file = file.to_string_lossy().to_string();
                let node = Node::start(&format!("sentinel{i}"), port, &[&file, "--sentinel"]);
                configs.push(dir);
                node
            })
            .collect::<Vec<_>>();
        let group = SentinelGroup {
            redis: vec![master, replica],
            sentinels,
            configs,
        };
        assert!(
            wait_for(Duration::from_secs(15), || group.sentinels.iter().all(
                |s| {
                    let info = s.info("sentinel");
                    info.get("master0").is_some_and(|m| {
                        m.contains("status=ok")
                            && m.contains("slaves=1")
                            && m.contains("sentinels=3")
                    })
                }
            )),
            "the sentinels did not agree"
        );
        group
    }

    pub fn sentinel_urls(&self) -> String {
        self.sentinels
            .iter()
            .map(|n| format!("\"{}\"", n.url()))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The port of the master that the first live sentinel names.
    pub fn master_port(&self) -> Option<u16> {
        self.sentinels
            .iter()
            .filter(|s| s.child.is_some())
            .find_map(|s| {
                let reply: Vec<String> = redis::cmd("SENTINEL")
                    .arg("get-master-addr-by-name")
                    .arg("sessions")
                    .query(&mut s.connection())
                    .ok()?;
                reply.get(1)?.parse().ok()
            })
    }

    /// The index in `redis` of the node on `port`.
    pub fn index_of(&self, port: u16) -> usize {
        self.redis.iter().position(|n| n.port == port).unwrap()
    }
}

// ---------------------------------------------------------------- HTTP

/// An upstream that answers every request with the `X-Session` it received
/// (the body) and `X-Session-Status` (a header `x-seen-status`), and stores
/// the JSON of the request header `x-test-update` as `X-Session-Update`.
pub struct Backend {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
}

impl Backend {
    pub async fn start() -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, mut stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        connections.spawn(async move {
                            let service = service_fn(|request| async move { Ok::<_, Infallible>(answer(request)) });
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        });
                    }
                }
            }
            connections.abort_all();
        });
        Backend {
            addr,
            stop: Some(stop),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn answer(request: Request<Incoming>) -> Response<Full<Bytes>> {
    let headers = request.headers();
    let get = |name: &str| headers.get(name).map(|v| v.as_bytes().to_vec());
    let mut response =
        Response::builder().header("x-seen-status", get("x-session-status").unwrap_or_default());
    if let Some(update) = get("x-test-update") {
        response = response.header("x-session-update", update);
    }
    if let Some(action) = get("x-test-action") {
        response = response.header("x-session-action", action);
    }
    response
        .body(Full::new(Bytes::from(get("x-session").unwrap_or_default())))
        .unwrap()
}

/// sessiongate in this process, on a free port, in front of `backend`, with
/// these `[store]` lines (the test's own keys; `key_prefix = "sg:"`).
pub struct Gate {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
}

/// The configuration text of a gate in front of `backend` with `store`.
pub fn gate_config(backend: &str, store: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[upstreams]\nservers = [\"{backend}\"]\n\n\
         [cookie]\nsecrets = [\"{SECRET}\"]\nsecure = false\n\n[store]\n{store}\n"
    )
}

impl Gate {
    pub async fn start(backend: &Backend, store: &str) -> Gate {
        // SESSIONGATE_LOG=warn (say) shows the gate's log while a test runs.
        if let Ok(filter) = std::env::var("SESSIONGATE_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        }
        let text = gate_config(&backend.url(), store);
        let config =
            Config::parse(&text, Path::new("topology.toml")).expect("the test config is valid");
        config.store.check().expect("the store section is valid");
        let server = Server::bind(&config).await.expect("sessiongate binds");
        let addr = server.local_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        Gate {
            addr,
            stop: Some(stop),
        }
    }

    pub fn client(&self) -> Client {
        Client::new(self.addr)
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// What one request got.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    /// The `X-Session` the backend received (empty when it was not reached).
    pub session: String,
    /// The `X-Session-Status` the backend received.
    pub seen_status: String,
    pub elapsed: Duration,
}

impl Reply {
    /// The session as JSON (`null` when the backend was not reached).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.session).unwrap_or(serde_json::Value::Null)
    }
}

/// An HTTP client with one session cookie.
#[derive(Clone)]
pub struct Client {
    addr: SocketAddr,
    http: HttpClient<HttpConnector, Full<Bytes>>,
    cookie: Arc<Mutex<Option<String>>>,
}

impl Client {
    pub fn new(addr: SocketAddr) -> Client {
        Client {
            addr,
            http: HttpClient::builder(TokioExecutor::new()).build_http(),
            cookie: Arc::new(Mutex::new(None)),
        }
    }

    pub fn cookie(&self) -> Option<String> {
        self.cookie.lock().unwrap().clone()
    }

    /// A GET with these headers, bounded by 10 s.
    pub async fn get(&self, headers: &[(&str, &str)]) -> Reply {
        let started = Instant::now();
        let mut request = Request::builder().uri(format!("http://{}/", self.addr));
        if let Some(cookie) = self.cookie() {
            request = request.header("cookie", format!("sg_session={cookie}"));
        }
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let sent = self.http.request(request.body(Full::default()).unwrap());
        let response = tokio::time::timeout(Duration::from_secs(10), sent)
            .await
            .expect("the gate answers within 10 s")
            .expect("the gate answers");
        let status = response.status();
        for set in response.headers().get_all("set-cookie") {
            let text = set.to_str().unwrap();
            if let Some(value) = text.strip_prefix("sg_session=") {
                let value = value.split(';').next().unwrap_or("");
                let expired = text.contains("Max-Age=0");
                *self.cookie.lock().unwrap() =
                    (!expired && !value.is_empty()).then(|| value.to_string());
            }
        }
        let seen_status = response
            .headers()
            .get("x-seen-status")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            session: if status == StatusCode::OK {
                String::from_utf8_lossy(&body).to_string()
            } else {
                String::new()
            },
            seen_status,
            elapsed: started.elapsed(),
        }
    }

    /// Stores `{"n": n}`.
    pub async fn update(&self, n: u64) -> Reply {
        self.get(&[("x-test-update", &format!("{{\"n\":{n}}}"))])
            .await
    }

    /// A client of `gate` with this one's cookie (the same session through
    /// another instance).
    pub fn through(&self, gate: &Gate) -> Client {
        let other = Client::new(gate.addr);
        *other.cookie.lock().unwrap() = self.cookie();
        other
    }

    /// The sid of its cookie.
    pub fn sid(&self) -> Option<String> {
        self.cookie()
            .map(|c| c.split('.').next().unwrap().to_string())
    }
}

// ---------------------------------------------------------------- load

/// One request of the workload, as it went.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub client: usize,
    pub n: u64,
    pub status: StatusCode,
    pub at: Instant,
    pub elapsed: Duration,
}

/// Clients that each create a session and then update it with `n = 1, 2,
/// …` until stopped (at most `max_requests` each, and `limit` in all).
pub struct Workload {
    pub clients: Vec<Client>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Vec<Outcome>>>,
}

impl Workload {
    /// `count` clients with a session each (created before this returns).
    pub async fn start(
        gate: &Gate,
        count: usize,
        pause: Duration,
        max_requests: u64,
        limit: Duration,
    ) -> Workload {
        let mut clients = Vec::new();
        for _ in 0..count {
            let client = gate.client();
            let created = client.update(0).await;
            assert_eq!(created.status, StatusCode::OK, "creating a session");
            assert!(client.cookie().is_some());
            clients.push(client);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let tasks = clients
            .iter()
            .cloned()
            .enumerate()
            .map(|(index, client)| {
                let stop = stop.clone();
                tokio::spawn(async move {
                    let mut outcomes = Vec::new();
                    for n in 1..=max_requests {
                        if stop.load(Ordering::Relaxed) || started.elapsed() > limit {
                            break;
                        }
                        let reply = client.update(n).await;
                        outcomes.push(Outcome {
                            client: index,
                            n,
                            status: reply.status,
                            at: Instant::now(),
                            elapsed: reply.elapsed,
                        });
                        tokio::time::sleep(pause).await;
                    }
                    outcomes
                })
            })
            .collect();
        Workload {
            clients,
            stop,
            tasks,
        }
    }

    /// Stops the clients and returns every outcome, in time order.
    pub async fn finish(self) -> (Vec<Client>, Vec<Outcome>) {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for task in self.tasks {
            all.extend(task.await.unwrap());
        }
        all.sort_by_key(|o| o.at);
        (self.clients, all)
    }
}

/// The highest `n` acknowledged (200) per client.
pub fn acknowledged(outcomes: &[Outcome], clients: usize) -> Vec<u64> {
    let mut last = vec![0; clients];
    for o in outcomes.iter().filter(|o| o.status == StatusCode::OK) {
        last[o.client] = last[o.client].max(o.n);
    }
    last
}

/// Reads every client's session until it answers (bounded) and counts the
/// clients whose stored `n` is below the last acknowledged one: lost
/// acknowledged updates.
pub async fn lost_updates(
    clients: &[Client],
    acked: &[u64],
    limit: Duration,
) -> (usize, Vec<String>) {
    let mut lost = 0;
    let mut notes = Vec::new();
    let deadline = Instant::now() + limit;
    for (index, client) in clients.iter().enumerate() {
        let reply = loop {
            let reply = client.get(&[]).await;
            if reply.status == StatusCode::OK || Instant::now() > deadline {
                break reply;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let stored = reply.json().get("n").and_then(|n| n.as_u64());
        if reply.status != StatusCode::OK || stored.is_none_or(|n| n < acked[index]) {
            lost += 1;
            notes.push(format!(
                "client {index}: acknowledged n={}, read {} {:?} ({})",
                acked[index], reply.status, stored, reply.seen_status
            ));
        }
    }
    (lost, notes)
}

/// Counts statuses.
pub fn statuses(outcomes: &[Outcome]) -> BTreeMap<u16, usize> {
    let mut counts = BTreeMap::new();
    for o in outcomes {
        *counts.entry(o.status.as_u16()).or_insert(0) += 1;
    }
    counts
}

/// Runs a command (for at most 60 s), panicking with its output if it fails.
pub fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new("timeout")
        .arg("60")
        .arg(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

// ---------------------------------------------------------------- TLS

/// A CA, a server certificate for 127.0.0.1 and a client certificate, made
/// with the openssl command line; and a second CA that signed neither.
pub struct Certificates {
    pub dir: TempDir,
}

impl Certificates {
    pub fn make() -> Certificates {
        let dir = TempDir::new("tls");
        let at = |f: &str| dir.path(f).to_string_lossy().to_string();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        for ca in ["ca", "other-ca"] {
            let mut args = vec!["req", "-x509"];
            args.extend(ec);
            let (key, pem, subject) = (
                at(&format!("{ca}.key")),
                at(&format!("{ca}.pem")),
                format!("/CN=sessiongate test {ca}"),
            );
            args.extend([
                "-keyout", &key, "-out", &pem, "-days", "2", "-subj", &subject,
            ]);
            run("openssl", &args);
        }
        for (name, extension) in [
            (
                "server",
                "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
            ),
            ("client", "extendedKeyUsage=clientAuth\n"),
        ] {
            let (key, csr, pem, ext) = (
                at(&format!("{name}.key")),
                at(&format!("{name}.csr")),
                at(&format!("{name}.pem")),
                at(&format!("{name}.ext")),
            );
            std::fs::write(&ext, extension).unwrap();
            let mut args = vec!["req"];
            args.extend(ec);
            args.extend(["-keyout", &key, "-out", &csr, "-subj", "/CN=127.0.0.1"]);
            run("openssl", &args);
            let (ca, ca_key) = (at("ca.pem"), at("ca.key"));
            run(
                "openssl",
                &[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    &ca,
                    "-CAkey",
                    &ca_key,
                    "-CAcreateserial",
                    "-out",
                    &pem,
                    "-days",
                    "2",
                    "-extfile",
                    &ext,
                ],
            );
        }
        Certificates { dir }
    }

    pub fn path(&self, file: &str) -> String {
        self.dir.path(file).to_string_lossy().to_string()
    }

    /// A redis-server that speaks TLS only, and wants a client certificate.
    pub fn redis(&self) -> Node {
        let port = free_port();
        let port_text = port.to_string();
        let (cert, key, ca) = (
            self.path("server.pem"),
            self.path("server.key"),
            self.path("ca.pem"),
        );
        Node::start(
            "tls",
            port,
            &[
                "--port",
                "0",
                "--tls-port",
                &port_text,
                "--tls-cert-file",
                &cert,
                "--tls-key-file",
                &key,
                "--tls-ca-cert-file",
                &ca,
                "--tls-auth-clients",
                "yes",
            ],
        )
    }
}

/// Opens the store of this `[store]` text as the gate would, and pings it.
pub async fn ping_store(store: &str) -> Result<(), String> {
    use sessiongate::session::store::{SessionPolicy, Store};
    let text = gate_config("http://127.0.0.1:9", store);
    let config = Config::parse(&text, Path::new("topology.toml")).map_err(|e| e.to_string())?;
    let policy = SessionPolicy {
        idle: Duration::from_secs(60),
        absolute: Duration::from_secs(600),
        max_bytes: 8192,
    };
    let store =
        Store::open(&config.store, policy, config.store.timeout).map_err(|e| e.to_string())?;
    store.ping().await.map_err(|e| e.to_string())
}

/// The smallest ACL sessiongate needs (kind = "redis"; a Sentinel-found
/// master also needs `+role`, a Cluster `+cluster|slots`), for `user` on
/// the key prefix `sg:`. docs-store-section.md documents the same line.
pub fn minimal_acl(user: &str, password: &str) -> String {
    format!(
        "{user} on >{password} resetkeys ~sg:* resetchannels -@all \
         +ping +evalsha +eval +del +wait +hgetall +exists +hset +hdel +pexpire +time"
    )
}

/// Runs the built binary with `args` for at most `limit` (killed then),
/// and returns everything it printed.
pub fn binary_output(args: &[&str], limit: Duration) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sessiongate"))
        .args(args)
        .env("SESSIONGATE_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the sessiongate binary runs");
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

// ---------------------------------------------------------------- netns

/// A network namespace joined to this one by a veth pair, with addresses
/// this test chose in 10.213.x.0/30 on both ends: nothing else is ever
/// addressed. Deleted (with its veth pair) when dropped.
pub struct Netns {
    pub name: String,
    /// The host's end of the pair.
    pub host_link: String,
    /// The address inside the namespace.
    pub inner: String,
}

impl Netns {
    /// Makes the namespace, or says why it cannot be made here (no
    /// privileges): `Err` only for that.
    pub fn create() -> Result<Netns, String> {
        let id = std::process::id() % 50_000 + free_port() as u32 % 7;
        let name = format!("sgtest{id}");
        let out = Command::new("ip").args(["netns", "add", &name]).output();
        let out = match out {
            Ok(out) => out,
            Err(e) => return Err(format!("the ip command cannot be run: {e}")),
        };
        if !out.status.success() {
            let why = String::from_utf8_lossy(&out.stderr).to_string();
            if why.contains("not permitted") || why.contains("Permission denied") {
                return Err(why);
            }
            panic!("ip netns add failed for another reason: {why}");
        }
        let subnet = id % 250 + 1;
        let netns = Netns {
            host_link: format!("sgh{id}"),
            inner: format!("10.213.{subnet}.2"),
            name,
        };
        let peer = format!("sgr{id}");
        let outer = format!("10.213.{subnet}.1/30");
        let inner = format!("{}/30", netns.inner);
        run(
            "ip",
            &[
                "link",
                "add",
                &netns.host_link,
                "type",
                "veth",
                "peer",
                "name",
                &peer,
            ],
        );
        run("ip", &["link", "set", &peer, "netns", &netns.name]);
        run("ip", &["addr", "add", &outer, "dev", &netns.host_link]);
        run("ip", &["link", "set", &netns.host_link, "up"]);
        run(
            "ip",
            &[
                "netns",
                "exec",
                &netns.name,
                "ip",
                "addr",
                "add",
                &inner,
                "dev",
                &peer,
            ],
        );
        run(
            "ip",
            &[
                "netns",
                "exec",
                &netns.name,
                "ip",
                "link",
                "set",
                &peer,
                "up",
            ],
        );
        run(
            "ip",
            &[
                "netns",
                "exec",
                &netns.name,
                "ip",
                "link",
                "set",
                "lo",
                "up",
            ],
        );
        Ok(netns)
    }

    /// Takes the host's end of the link down (`up = false`) or up.
    pub fn link(&self, up: bool) {
        run(
            "ip",
            &[
                "link",
                "set",
                &self.host_link,
                if up { "up" } else { "down" },
            ],
        );
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_link])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

impl Cluster {
    /// `CLUSTER MYID` of node `index`.
    pub fn id(&self, index: usize) -> String {
        redis::cmd("CLUSTER")
            .arg("MYID")
            .query(&mut self.nodes[index].connection())
            .unwrap()
    }

    /// Moves `slot` from master `from` to master `to` as `redis-cli
    /// --cluster reshard` does, key by key, pausing `pause` after the keys
    /// have moved and before the slot's owner changes: requests for its keys
    /// meanwhile get `ASK`, and `MOVED` afterwards.
    ///
    /// redis-cli then tells the masters of the new owner one by one, in its
    /// own order; here the old owner hears first and the new one `handover`
    /// later. In between the two send each request for the slot back and
    /// forth with `MOVED`, each sure that the other owns it.
    pub fn move_slot(
        &self,
        slot: u16,
        from: usize,
        to: usize,
        pause: Duration,
        handover: Duration,
    ) {
        let (from_id, to_id) = (self.id(from), self.id(to));
        let setslot = |node: usize, args: &[&str]| {
            let mut cmd = redis::cmd("CLUSTER");
            cmd.arg("SETSLOT").arg(slot);
            for a in args {
                cmd.arg(*a);
            }
            cmd.query::<()>(&mut self.nodes[node].connection()).unwrap();
        };
        setslot(to, &["IMPORTING", &from_id]);
        setslot(from, &["MIGRATING", &to_id]);
        loop {
            let keys: Vec<String> = redis::cmd("CLUSTER")
                .arg("GETKEYSINSLOT")
                .arg(slot)
                .arg(100)
                .query(&mut self.nodes[from].connection())
                .unwrap();
            if keys.is_empty() {
                break;
            }
            redis::cmd("MIGRATE")
                .arg("127.0.0.1")
                .arg(self.nodes[to].port)
                .arg("")
                .arg(0)
                .arg(5000)
                .arg("KEYS")
                .arg(&keys)
                .query::<()>(&mut self.nodes[from].connection())
                .unwrap();
        }
        std::thread::sleep(pause);
        setslot(from, &["NODE", &to_id]);
        std::thread::sleep(handover);
        for node in self.masters() {
            setslot(node, &["NODE", &to_id]);
        }
    }

    /// The slot of `key`.
    pub fn slot_of(&self, key: &str) -> u16 {
        redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut self.nodes[0].connection())
            .unwrap()
    }

    /// How many `error` replies (`MOVED`, say) node `index` has sent (from
    /// `INFO errorstats`).
    pub fn errors(&self, index: usize, error: &str) -> u64 {
        self.stat(index, "errorstats", &format!("errorstat_{error}"), "count")
    }

    /// How often node `index` has been sent `command` (from `INFO commandstats`).
    pub fn calls(&self, index: usize, command: &str) -> u64 {
        self.stat(
            index,
            "commandstats",
            &format!("cmdstat_{command}"),
            "calls",
        )
    }

    /// The number `field=N` in the `line:…,field=N,…` of node `index`'s
    /// `INFO section`; 0 when the line is not there (nothing counted yet).
    fn stat(&self, index: usize, section: &str, line: &str, field: &str) -> u64 {
        self.nodes[index]
            .info(section)
            .get(line)
            .and_then(|v| {
                v.split(',')
                    .find_map(|kv| kv.strip_prefix(field)?.strip_prefix('='))
            })
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }
}

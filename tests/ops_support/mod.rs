//! Helpers of the operations tests (metrics, admin, access log, status
//! page): the built binary as its own process with its stdout and stderr
//! captured, a private redis-server, small blocking backends and a
//! blocking HTTP client. Copied in spirit from tests/common, kept apart so
//! that these tests own their helpers.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const SECRET: &str = "ops-test-secret-0123456789abcdef0123456789";
pub const TOKEN: &str = "ops-test-admin-token-0123456789abcdef0123";

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until `cond` holds, at most `limit`; panics with `what` otherwise.
pub fn eventually(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------- Redis

/// A private redis-server on a free port, killed (by PID) when dropped.
pub struct Redis {
    pub port: u16,
    child: Option<Child>,
}

impl Redis {
    pub fn start() -> Redis {
        for _ in 0..5 {
            let mut redis = Redis {
                port: free_port(),
                child: None,
            };
            if redis.spawn() {
                return redis;
            }
        }
        panic!("could not start redis-server (scripts/prerequisites.sh installs it)");
    }

    fn spawn(&mut self) -> bool {
        let child = Command::new("redis-server")
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
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = s.write_all(b"PING\r\n");
                let mut buf = [0u8; 7];
                if s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n" {
                    return true;
                }
            }
            if let Some(Ok(Some(_))) = self.child.as_mut().map(Child::try_wait) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill();
        false
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Kills the server by its PID, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.spawn() {
            assert!(Instant::now() < deadline, "redis-server did not restart");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------- Backend

/// A blocking HTTP/1.1 backend on loopback, one thread per connection,
/// each answer closing its connection. Paths: `/set` stores `{"n":1}`,
/// `/login` stores a user and rotates, `/logout` destroys, `/bad` sends an
/// update that is not an object; anything else answers `hello from NAME`.
pub struct Backend {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Backend {
    pub fn start(name: &'static str) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        std::thread::spawn(move || answer(name, stream));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Backend {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Closes its listening socket: connecting to it fails from now on.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop();
    }
}

fn answer(name: &str, stream: TcpStream) {
    stream.set_nonblocking(false).unwrap();
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut length = 0usize;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
            break;
        }
        if let Some((k, v)) = header.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; length];
    let _ = reader.read_exact(&mut body);
    let route = path.split('?').next().unwrap_or("/");
    let extra = match route {
        "/set" => "X-Session-Update: {\"n\":1}\r\n",
        "/login" => "X-Session-Update: {\"user\":\"ada\"}\r\nX-Session-Action: rotate\r\n",
        "/logout" => "X-Session-Action: destroy\r\n",
        "/bad" => "X-Session-Update: [1]\r\n",
        _ => "",
    };
    let text = format!("hello from {name}\n");
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
         Connection: close\r\n{extra}\r\n{text}",
        text.len()
    );
    let mut stream = stream;
    let _ = stream.write_all(response.as_bytes());
}

// ---------------------------------------------------------------- HTTP

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The value of the session cookie this response sets, if any.
    pub fn session_cookie(&self) -> Option<String> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
            .filter_map(|(_, v)| v.split(';').next())
            .filter_map(|pair| pair.strip_prefix("sg_session="))
            .find(|value| !value.is_empty())
            .map(str::to_string)
    }
}

/// One request on a fresh connection (`Connection: close`).
pub fn http(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    let body = if chunked {
        unchunk(body)
    } else {
        body.to_string()
    };
    Reply {
        status,
        headers,
        body,
    }
}

fn unchunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

pub fn get(addr: SocketAddr, path: &str) -> Reply {
    http(addr, "GET", path, &[])
}

// ---------------------------------------------------------------- Metrics

/// One sample of the text format.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// Parses the Prometheus text format 0.0.4 strictly enough for a test:
/// every line is a `# HELP`, a `# TYPE`, blank, or `name{labels} value`;
/// panics on anything else.
pub fn parse_exposition(text: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix("# ") {
            let mut words = comment.splitn(3, ' ');
            let kind = words.next().unwrap();
            assert!(kind == "HELP" || kind == "TYPE", "bad comment: {line}");
            if kind == "TYPE" {
                let _name = words.next().expect("a TYPE names a metric");
                let kind = words.next().expect("a TYPE has a type");
                assert!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                    "bad type: {line}"
                );
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("a sample has a value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value: {line}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series.to_string(), vec![]),
            Some((name, rest)) => {
                let rest = rest.strip_suffix('}').expect("labels end with }");
                let labels = rest
                    .split("\",")
                    .filter(|p| !p.is_empty())
                    .map(|pair| {
                        let (k, v) = pair.split_once("=\"").expect("label=\"value\"");
                        (k.to_string(), v.trim_end_matches('"').to_string())
                    })
                    .collect();
                (name.to_string(), labels)
            }
        };
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name: {line}"
        );
        samples.push(Sample {
            name,
            labels,
            value,
        });
    }
    samples
}

/// The value of the sample `name` whose labels include every one of `labels`.
pub fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
        })
        .map(|s| s.value)
}

// ---------------------------------------------------------------- sessiongate

/// What a test's sessiongate is configured with.
pub struct Setup {
    pub servers: Vec<String>,
    /// Lines of `[upstreams]` beyond `servers`.
    pub upstreams: String,
    /// The `[store]` table's lines.
    pub store: String,
    /// The `[admin]` table's lines beyond `listen`; None: no `[admin]`.
    pub admin: Option<String>,
    /// The `[log]` table's lines.
    pub log: String,
}

impl Setup {
    pub fn new(servers: &[&Backend], redis: Option<&Redis>) -> Setup {
        Setup {
            servers: servers.iter().map(|b| b.url()).collect(),
            upstreams: "max_fails = 1\nfail_timeout = \"30s\"\n".into(),
            store: match redis {
                Some(redis) => format!(
                    "kind = \"redis\"\nurl = \"{}\"\ntimeout = \"300ms\"\n",
                    redis.url()
                ),
                None => "kind = \"memory\"\n".into(),
            },
            admin: Some(format!("token = \"{TOKEN}\"\n")),
            log: "access = \"json\"\n".into(),
        }
    }
}

/// The built binary, running; its stdout and stderr are kept.
pub struct Sessiongate {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    dir: std::path::PathBuf,
}

impl Sessiongate {
    pub fn start(setup: &Setup) -> Sessiongate {
        Self::start_with_env(setup, &[])
    }

    pub fn start_with_env(setup: &Setup, env: &[(&str, &str)]) -> Sessiongate {
        let (port, admin_port) = (free_port(), free_port());
        let servers: Vec<String> = setup.servers.iter().map(|s| format!("\"{s}\"")).collect();
        let admin = match &setup.admin {
            Some(lines) => format!("[admin]\nlisten = \"127.0.0.1:{admin_port}\"\n{lines}"),
            None => String::new(),
        };
        let config = format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n\
             [upstreams]\nservers = [{}]\n{}\
             [cookie]\nsecrets = [\"{SECRET}\"]\nsecure = false\n\
             [store]\n{}\
             {admin}\
             [log]\n{}",
            servers.join(", "),
            setup.upstreams,
            setup.store,
            setup.log,
        );
        static COUNT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("sessiongate-ops-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.toml");
        std::fs::write(&path, config).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_sessiongate"))
            .arg("run")
            .arg("--config")
            .arg(&path)
            .env("SESSIONGATE_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = capture(child.stdout.take().unwrap());
        let stderr = capture(child.stderr.take().unwrap());
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();
        let mut sessiongate = Sessiongate {
            addr,
            admin,
            child,
            stdout,
            stderr,
            dir,
        };
        let mut waits = vec![addr];
        if setup.admin.is_some() {
            waits.push(admin);
        }
        for wait in waits {
            let deadline = Instant::now() + Duration::from_secs(10);
            while TcpStream::connect(wait).is_err() {
                if let Ok(Some(status)) = sessiongate.child.try_wait() {
                    panic!(
                        "sessiongate exited ({status}): {}",
                        sessiongate.stderr.lock().unwrap()
                    );
                }
                assert!(Instant::now() < deadline, "nothing listens on {wait}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        sessiongate
    }

    pub fn get(&self, path: &str) -> Reply {
        get(self.addr, path)
    }

    pub fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        http(self.addr, "GET", path, headers)
    }

    pub fn admin_get(&self, path: &str) -> Reply {
        get(self.admin, path)
    }

    /// The metrics, scraped and parsed.
    pub fn scrape(&self) -> (String, Vec<Sample>) {
        let reply = self.admin_get("/metrics");
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_eq!(
            reply.header("content-type"),
            Some("text/plain; version=0.0.4; charset=utf-8")
        );
        let samples = parse_exposition(&reply.body);
        (reply.body, samples)
    }

    /// What it wrote to stdout so far.
    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    /// What it wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Its access log lines so far, each parsed as JSON.
    pub fn access_log(&self) -> Vec<serde_json::Value> {
        self.stdout()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    /// Sends SIGTERM and waits for it to exit.
    pub fn stop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Sessiongate {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn capture(stream: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    let into = text.clone();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap_or(0) > 0 {
            into.lock().unwrap().push_str(&line);
            line.clear();
        }
    });
    text
}

//! The access log (SPEC §9): one line per request on stdout, `text` or
//! `json`, with exactly the fields of the contract.
//!
//! A request never waits for the log. Its response body is wrapped in
//! [`Logged`], which, when the body has been sent (or dropped), hands the
//! request's [`Entry`] to a bounded queue; a writer thread of its own
//! formats and writes the lines. When the queue is full the line is dropped
//! and counted (`sessiongate_access_log_dropped_total`).
//!
//! No line holds a sid, a cookie, a secret or a token: the session appears
//! as `sid_hash`, the first 12 hex digits of the SHA-256 of its sid; the
//! query string is left out unless `log.query` is set.

use std::fmt::Write as _;
use std::io::Write;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError, sync_channel};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Buf;
use http::uri::PathAndQuery;
use http::{HeaderValue, Method, Version};
use http_body::{Body, Frame, SizeHint};
use sha2::{Digest, Sha256};

use crate::config::{AccessLogFormat, LogConfig};
use crate::metrics::Metrics;

/// Lines waiting to be written (one batch: [`FLUSH_AFTER`] of requests);
/// more are dropped, and counted.
const QUEUE: usize = 16 * 1024;

/// The access log: the queue to its writer thread.
#[derive(Clone)]
pub struct AccessLog {
    queue: SyncSender<Entry>,
    metrics: Arc<Metrics>,
}

impl AccessLog {
    /// The access log `config` asks for, if any, written to stdout.
    pub fn start(config: &LogConfig, metrics: Arc<Metrics>) -> Option<AccessLog> {
        Self::start_to(config, metrics, Box::new(std::io::stdout()))
    }

    /// As [`start`](Self::start), written to `out`.
    pub fn start_to(
        config: &LogConfig,
        metrics: Arc<Metrics>,
        out: Box<dyn Write + Send>,
    ) -> Option<AccessLog> {
        let json = match config.access {
            AccessLogFormat::Off => return None,
            AccessLogFormat::Text => false,
            AccessLogFormat::Json => true,
        };
        let (queue, lines) = sync_channel(QUEUE);
        let query = config.query;
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_lines(lines, out, json, query))
            .expect("a thread for the access log");
        Some(AccessLog { queue, metrics })
    }

    fn send(&self, entry: Entry) {
        match self.queue.try_send(entry) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => self.metrics.access_log_dropped(),
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

/// What the log says of one request; the rest is filled in when its
/// response is known and its body sent.
pub struct Entry {
    /// When the request arrived.
    pub ts: SystemTime,
    /// The client's address.
    pub client: IpAddr,
    /// The method.
    pub method: Method,
    /// The `Host` the request was for.
    pub host: Option<HeaderValue>,
    /// The path and query; the query is written only with `log.query`.
    pub path: Option<PathAndQuery>,
    /// The HTTP version the client spoke.
    pub proto: Version,
    /// The status sent.
    pub status: u16,
    /// The response body's bytes sent.
    pub bytes: u64,
    /// From arrival to the end of the response body.
    pub duration: Duration,
    /// The pool.
    pub pool: Arc<str>,
    /// The server that answered, as configured.
    pub upstream: Option<String>,
    /// `new`, `active`, `unavailable` or `none`.
    pub session: &'static str,
    /// The first 6 bytes of the SHA-256 of the sid.
    pub sid_hash: Option<[u8; 6]>,
    /// The user the session is bound to (SPEC §12).
    pub user: Option<String>,
    /// The `User-Agent`.
    pub ua: Option<HeaderValue>,
}

/// The first 6 bytes (12 hex digits) of the SHA-256 of a sid's text.
pub fn sid_hash(sid: &str) -> [u8; 6] {
    let digest = Sha256::digest(sid.as_bytes());
    let mut short = [0u8; 6];
    short.copy_from_slice(&digest[..6]);
    short
}

/// A response body that logs its request once it has been sent, or
/// dropped (the client went away): then `bytes` is what was sent so far.
pub struct Logged<B> {
    inner: B,
    pending: Option<Pending>,
}

struct Pending {
    log: AccessLog,
    entry: Entry,
    started: Instant,
}

impl<B> Logged<B> {
    /// A body that is not logged.
    pub fn plain(inner: B) -> Logged<B> {
        Logged {
            inner,
            pending: None,
        }
    }

    /// A body whose request `entry` goes to `log` when it is done;
    /// `started` is when the request arrived.
    pub fn new(inner: B, log: AccessLog, entry: Entry, started: Instant) -> Logged<B> {
        Logged {
            inner,
            pending: Some(Pending {
                log,
                entry,
                started,
            }),
        }
    }

    fn finish(&mut self) {
        if let Some(Pending {
            log,
            mut entry,
            started,
        }) = self.pending.take()
        {
            entry.duration = started.elapsed();
            log.send(entry);
        }
    }
}

impl<B> Drop for Logged<B> {
    fn drop(&mut self) {
        self.finish();
    }
}

impl<B: Body + Unpin> Body for Logged<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(pending)) = (frame.data_ref(), self.pending.as_mut()) {
                    pending.entry.bytes += data.remaining() as u64;
                }
                if self.inner.is_end_stream() {
                    self.finish();
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => self.finish(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The writer thread: every [`FLUSH_AFTER`] it takes every queued line,
/// writes them and flushes, until every sender is gone. It never blocks on
/// the queue, so a request's hand-off never has to wake it: a line costs
/// the request one push, and the log one write per batch.
fn write_lines(lines: Receiver<Entry>, out: Box<dyn Write + Send>, json: bool, query: bool) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    let mut line = String::with_capacity(512);
    loop {
        std::thread::sleep(FLUSH_AFTER);
        let mut wrote = false;
        let done = loop {
            match lines.try_recv() {
                Ok(entry) => {
                    line.clear();
                    match json {
                        true => format_json(&entry, query, &mut line),
                        false => format_text(&entry, query, &mut line),
                    }
                    line.push('\n');
                    if out.write_all(line.as_bytes()).is_err() {
                        return;
                    }
                    wrote = true;
                }
                Err(TryRecvError::Empty) => break false,
                Err(TryRecvError::Disconnected) => break true,
            }
        };
        if wrote && out.flush().is_err() {
            return;
        }
        if done {
            return;
        }
    }
}

fn ts(entry: &Entry) -> String {
    humantime::format_rfc3339_millis(entry.ts).to_string()
}

/// How often the writer takes the queued lines and flushes them.
const FLUSH_AFTER: Duration = Duration::from_millis(100);

fn path(entry: &Entry, query: bool) -> Option<&str> {
    entry.path.as_ref().map(|p| match query {
        true => p.as_str(),
        false => p.path(),
    })
}

fn proto(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/?",
    }
}

fn hex(bytes: &[u8; 6]) -> String {
    bytes.iter().fold(String::with_capacity(12), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn lossy(value: &Option<HeaderValue>) -> Option<String> {
    value
        .as_ref()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

/// One JSON object with exactly the contract's keys, in the contract's
/// order, written straight into `out`.
pub fn format_json(entry: &Entry, query: bool, out: &mut String) {
    let string = |out: &mut String, value: Option<&str>| match value {
        None => out.push_str("null"),
        Some(value) => json_string(out, value),
    };
    out.push_str("{\"ts\":\"");
    let _ = write!(out, "{}", humantime::format_rfc3339_millis(entry.ts));
    let _ = write!(out, "\",\"client\":\"{}\",\"method\":", entry.client);
    json_string(out, entry.method.as_str());
    out.push_str(",\"host\":");
    string(out, lossy(&entry.host).as_deref());
    out.push_str(",\"path\":");
    string(out, path(entry, query));
    let _ = write!(
        out,
        ",\"proto\":\"{}\",\"status\":{},\"bytes\":{},\"duration_ms\":{:.3},\"pool\":",
        proto(entry.proto),
        entry.status,
        entry.bytes,
        entry.duration.as_secs_f64() * 1e3
    );
    json_string(out, &entry.pool);
    out.push_str(",\"upstream\":");
    string(out, entry.upstream.as_deref());
    out.push_str(",\"session\":");
    json_string(out, entry.session);
    out.push_str(",\"sid_hash\":");
    string(out, entry.sid_hash.as_ref().map(hex).as_deref());
    out.push_str(",\"user\":");
    string(out, entry.user.as_deref());
    out.push_str(",\"ua\":");
    string(out, lossy(&entry.ua).as_deref());
    out.push('}');
}

/// A JSON string (RFC 8259 §7): quotes, backslashes and control
/// characters escaped.
fn json_string(out: &mut String, value: &str) {
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The contract's keys, in the order lines carry them.
pub const KEYS: [&str; 15] = [
    "ts",
    "client",
    "method",
    "host",
    "path",
    "proto",
    "status",
    "bytes",
    "duration_ms",
    "pool",
    "upstream",
    "session",
    "sid_hash",
    "user",
    "ua",
];

/// The same fields as `key=value` pairs on one line (logfmt): a value with
/// a space, a quote, `=` or a control character is quoted and escaped; a
/// missing one is `-`.
pub fn format_text(entry: &Entry, query: bool, out: &mut String) {
    let mut field = |key: &str, value: Option<&str>| {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(key);
        out.push('=');
        match value {
            None => out.push('-'),
            Some(v) if v.is_empty() || v.chars().any(needs_quotes) => {
                out.push('"');
                for c in v.chars() {
                    match c {
                        '"' => out.push_str("\\\""),
                        '\\' => out.push_str("\\\\"),
                        c if c.is_control() => {
                            let _ = write!(out, "\\u{{{:x}}}", c as u32);
                        }
                        c => out.push(c),
                    }
                }
                out.push('"');
            }
            Some(v) => out.push_str(v),
        }
    };
    field("ts", Some(&ts(entry)));
    field("client", Some(&entry.client.to_string()));
    field("method", Some(entry.method.as_str()));
    field("host", lossy(&entry.host).as_deref());
    field("path", path(entry, query));
    field("proto", Some(proto(entry.proto)));
    field("status", Some(&entry.status.to_string()));
    field("bytes", Some(&entry.bytes.to_string()));
    field(
        "duration_ms",
        Some(&format!("{:.3}", entry.duration.as_secs_f64() * 1e3)),
    );
    field("pool", Some(&entry.pool));
    field("upstream", entry.upstream.as_deref());
    field("session", Some(entry.session));
    field("sid_hash", entry.sid_hash.as_ref().map(hex).as_deref());
    field("user", entry.user.as_deref());
    field("ua", lossy(&entry.ua).as_deref());
}

fn needs_quotes(c: char) -> bool {
    c == ' ' || c == '"' || c == '=' || c == '\\' || c.is_control()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            ts: SystemTime::UNIX_EPOCH + Duration::from_millis(1_780_000_000_123),
            client: "192.0.2.7".parse().unwrap(),
            method: Method::POST,
            host: Some(HeaderValue::from_static("shop.example")),
            path: Some(PathAndQuery::from_static("/cart?token=abc")),
            proto: Version::HTTP_11,
            status: 201,
            bytes: 42,
            duration: Duration::from_micros(1500),
            pool: Arc::from("default"),
            upstream: Some("http://127.0.0.1:9001".into()),
            session: "active",
            sid_hash: Some(sid_hash("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")),
            user: None,
            ua: Some(HeaderValue::from_static("curl/8 \"x\"")),
        }
    }

    #[test]
    fn json_lines_carry_exactly_the_contract_keys_in_order() {
        let mut line = String::new();
        format_json(&entry(), false, &mut line);
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        let keys: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        let mut expected = KEYS.to_vec();
        expected.sort();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(sorted, expected);
        assert!(line.starts_with("{\"ts\":\"2026-05-28T"), "{line}");
        assert_eq!(value["path"], "/cart");
        assert_eq!(value["duration_ms"], 1.5);
        assert_eq!(value["user"], serde_json::Value::Null);
        assert_eq!(value["sid_hash"].as_str().unwrap().len(), 12);
        assert!(value["ts"].as_str().unwrap().ends_with(".123Z"));
    }

    #[test]
    fn the_query_is_kept_only_when_asked() {
        let mut line = String::new();
        format_json(&entry(), true, &mut line);
        assert!(line.contains("\"path\":\"/cart?token=abc\""), "{line}");
        line.clear();
        format_text(&entry(), false, &mut line);
        assert!(!line.contains("token"), "{line}");
    }

    #[test]
    fn text_lines_quote_what_needs_it() {
        let mut line = String::new();
        format_text(&entry(), false, &mut line);
        assert!(line.starts_with("ts=2026-05-28T"), "{line}");
        assert!(line.contains(" path=/cart "), "{line}");
        assert!(line.contains(" user=- "), "{line}");
        assert!(line.ends_with(" ua=\"curl/8 \\\"x\\\"\""), "{line}");
        assert!(line.contains(" duration_ms=1.500 "), "{line}");
    }
}

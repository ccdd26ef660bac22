//! Idle HTTP/1.1 keep-alive connections are parked between requests: hyper's
//! connection and its buffers are let go and the socket alone waits for the
//! next request. A client must see no difference: requests after pauses,
//! a head split by a pause, pipelined requests whose read-ahead is handed
//! on, a large response to a slow reader. And an idle connection holds
//! little memory. (A parked connection's keep-alive deadline is shown in
//! `deadlines.rs`.)

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::{Backend, Binary, Harness, Setup, StoreKind};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Long enough for a connection to be idle, and parked (after 50 ms), in
/// between.
const PAUSE: Duration = Duration::from_millis(150);

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: idle\r\n\r\n")
}

/// Reads one response with a `Content-Length` body from `stream`; bytes
/// after it stay in `pending` for the next call.
async fn read_response(stream: &mut TcpStream, pending: &mut Vec<u8>) -> (u16, Vec<u8>) {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(head) = response.parse(pending).unwrap() {
            let length: usize = response
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .map(|h| std::str::from_utf8(h.value).unwrap().parse().unwrap())
                .expect("a content-length");
            let status = response.code.unwrap();
            while pending.len() < head + length {
                read_more(stream, pending).await;
            }
            let body = pending[head..head + length].to_vec();
            pending.drain(..head + length);
            return (status, body);
        }
        read_more(stream, pending).await;
    }
}

async fn read_more(stream: &mut TcpStream, pending: &mut Vec<u8>) {
    let mut chunk = [0u8; 64 * 1024];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
        .await
        .expect("a response within 10 s")
        .unwrap();
    assert!(n > 0, "the proxy closed the connection");
    pending.extend_from_slice(&chunk[..n]);
}

fn path_of(body: &[u8]) -> String {
    let echo: Value = serde_json::from_slice(body).unwrap();
    echo["path"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn requests_after_pauses_are_served_on_the_same_connection() {
    let h = Harness::start(StoreKind::Memory).await;
    let mut stream = TcpStream::connect(h.proxy.addr).await.unwrap();
    let mut pending = Vec::new();
    for n in 0..4 {
        let path = format!("/after-pause/{n}");
        stream.write_all(get(&path).as_bytes()).await.unwrap();
        let (status, body) = read_response(&mut stream, &mut pending).await;
        assert_eq!((status, path_of(&body)), (200, path));
        tokio::time::sleep(PAUSE).await;
    }
}

#[tokio::test]
async fn a_request_head_split_by_a_pause_is_served() {
    let h = Harness::start(StoreKind::Memory).await;
    let mut stream = TcpStream::connect(h.proxy.addr).await.unwrap();
    let mut pending = Vec::new();
    stream.write_all(get("/first").as_bytes()).await.unwrap();
    assert_eq!(read_response(&mut stream, &mut pending).await.0, 200);
    tokio::time::sleep(PAUSE).await;
    stream
        .write_all(b"GET /split HTTP/1.1\r\nHo")
        .await
        .unwrap();
    tokio::time::sleep(PAUSE).await;
    stream.write_all(b"st: idle\r\n\r\n").await.unwrap();
    let (status, body) = read_response(&mut stream, &mut pending).await;
    assert_eq!((status, path_of(&body).as_str()), (200, "/split"));
}

#[tokio::test]
async fn pipelined_requests_and_a_partial_one_are_all_answered_in_order() {
    let h = Harness::start(StoreKind::Memory).await;
    let mut stream = TcpStream::connect(h.proxy.addr).await.unwrap();
    let mut pending = Vec::new();
    // Three whole requests and the start of a fourth in one write: what
    // hyper read ahead when the connection went idle must not be lost.
    let burst = format!(
        "{}{}{}GET /p4 HTTP/1.1\r\nHost",
        get("/p1"),
        get("/p2"),
        get("/p3")
    );
    stream.write_all(burst.as_bytes()).await.unwrap();
    for path in ["/p1", "/p2", "/p3"] {
        let (status, body) = read_response(&mut stream, &mut pending).await;
        assert_eq!((status, path_of(&body).as_str()), (200, path));
    }
    tokio::time::sleep(PAUSE).await;
    stream.write_all(b": idle\r\n\r\n").await.unwrap();
    let (status, body) = read_response(&mut stream, &mut pending).await;
    assert_eq!((status, path_of(&body).as_str()), (200, "/p4"));
}

#[tokio::test]
async fn responses_the_client_is_slow_to_read_arrive_whole_and_the_connection_stays() {
    let h = Harness::start(StoreKind::Memory).await;
    // A small receive window, so that the proxy's writes must wait.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(h.proxy.addr).await.unwrap();
    let mut pending = Vec::new();
    // Pipelined, unread: small responses pile up behind the waiting writes,
    // and a large one streams through them.
    let sizes = [1000, 30_000, 1000, 4 * 1024 * 1024, 1000, 1000, 1000, 1000];
    let burst: String = sizes
        .iter()
        .map(|size| get(&format!("/download?bytes={size}")))
        .collect();
    stream.write_all(burst.as_bytes()).await.unwrap();
    tokio::time::sleep(PAUSE * 2).await;
    for size in sizes {
        let (status, body) = read_response(&mut stream, &mut pending).await;
        assert_eq!((status, body.len()), (200, size));
        assert!(body.iter().all(|&b| b == b'x'));
    }
    stream.write_all(get("/next").as_bytes()).await.unwrap();
    let (status, body) = read_response(&mut stream, &mut pending).await;
    assert_eq!((status, path_of(&body).as_str()), (200, "/next"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_idle_keepalive_connections_hold_under_10_kib_each() {
    const CONNECTIONS: usize = 1000;
    let backend = Backend::start("idle").await;
    let binary = Binary::start(&Setup::new(StoreKind::Memory).config(&[backend.url()], None));
    let addr = binary.addr;
    // A first request warms up the pool and the runtime.
    let (_warm, _) = tokio::task::spawn_blocking(move || one_request(addr))
        .await
        .unwrap();
    tokio::time::sleep(PAUSE).await;
    let before = binary.rss_kib();
    let open = tokio::task::spawn_blocking(move || {
        // In batches, as clients arrive, each connection serving one request.
        let mut open = Vec::new();
        for _ in 0..CONNECTIONS / 100 {
            let batch: Vec<_> = (0..100).map(|_| one_request(addr).0).collect();
            open.extend(batch);
            std::thread::sleep(PAUSE);
        }
        open
    })
    .await
    .unwrap();
    tokio::time::sleep(PAUSE * 3).await;
    let per_connection = (binary.rss_kib().saturating_sub(before)) as f64 / CONNECTIONS as f64;
    assert!(
        per_connection < 10.0,
        "{per_connection:.1} KiB per idle connection"
    );
    drop(open);
}

/// Opens a connection, makes one request on it, and keeps it open.
fn one_request(addr: std::net::SocketAddr) -> (std::net::TcpStream, Vec<u8>) {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.write_all(get("/").as_bytes()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut seen = Vec::new();
    let mut chunk = [0u8; 4096];
    while !seen.ends_with(b"}") {
        let n = stream.read(&mut chunk).unwrap();
        assert!(n > 0, "the proxy closed the connection");
        seen.extend_from_slice(&chunk[..n]);
    }
    (stream, seen)
}

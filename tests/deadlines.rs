//! Every network wait has a deadline (`[timeouts]`, `store.timeout`): a slow
//! request head, an idle keep-alive connection, a backend that does not
//! connect, answer or finish its body, a client that stalls its upload, a
//! hung or restarted Redis; and the request head limits.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Browser, Harness, Proxy, Setup, StoreKind, signal};
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the peer closes; returns how long that took.
async fn time_until_closed(stream: &mut TcpStream, limit: Duration) -> Duration {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(limit, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return started.elapsed(),
            Ok(Ok(_)) => continue,
            Err(_) => panic!("the connection was still open after {limit:?}"),
        }
    }
}

#[tokio::test]
async fn a_request_head_sent_too_slowly_is_cut_off() {
    let mut setup = Setup::new(StoreKind::Memory);
    setup.timeouts = "request_header = \"400ms\"\n".into();
    let h = setup.start().await;
    let mut stream = TcpStream::connect(h.proxy.addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: slow\r\nX-A: 1\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stream.write_all(b"X-B: 2\r\n").await.unwrap(); // still trickling, never finishing
    let closed_after = time_until_closed(&mut stream, Duration::from_secs(3)).await;
    assert!(
        closed_after < Duration::from_millis(1000),
        "{closed_after:?}"
    );
    assert!(
        h.seen().is_empty(),
        "the incomplete request never reached a backend"
    );
}

#[tokio::test]
async fn keepalive_outlives_the_head_deadline_and_then_closes() {
    let mut setup = Setup::new(StoreKind::Memory);
    setup.timeouts = "request_header = \"300ms\"\nkeepalive = \"1500ms\"\n".into();
    let h = setup.start().await;
    let stream = TcpStream::connect(h.proxy.addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let connection = tokio::spawn(connection);
    let get = || {
        http::Request::get("/")
            .header("host", "keepalive")
            .body(Full::<Bytes>::default())
            .unwrap()
    };
    assert_eq!(sender.send_request(get()).await.unwrap().status(), 200);
    // Idle for longer than the head deadline, but within keep-alive.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(sender.send_request(get()).await.unwrap().status(), 200);
    // Idle past keep-alive: the proxy closes the connection.
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(4), connection)
        .await
        .expect("closed by the proxy")
        .unwrap()
        .unwrap();
    let idle = started.elapsed();
    assert!(
        idle > Duration::from_millis(1000) && idle < Duration::from_millis(2500),
        "{idle:?}"
    );
}

#[tokio::test]
async fn a_backend_that_does_not_accept_is_given_up_after_the_connect_deadline() {
    // A full accept queue: connecting hangs.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let black_hole = socket.listen(0).unwrap();
    let _filler = TcpStream::connect(black_hole.local_addr().unwrap())
        .await
        .unwrap();
    let good = common::Backend::start("good").await;
    let mut setup = Setup::new(StoreKind::Memory);
    setup.timeouts = "upstream_connect = \"300ms\"\n".into();
    let servers = [
        format!("http://{}", black_hole.local_addr().unwrap()),
        good.url(),
    ];
    let proxy = Proxy::start(&setup.config(&servers, None)).await;
    let started = Instant::now();
    // The first request goes to the black hole first, then on to the good one.
    let reply = Browser::new(proxy.addr)
        .send("POST", "/", &[], Bytes::from_static(b"body"))
        .await;
    assert_eq!(
        (reply.status.as_u16(), reply.backend()),
        (200, "good".into())
    );
    assert_eq!(reply.echo()["body_bytes"], 4);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_millis(2000),
        "{took:?}"
    );
}

#[tokio::test]
async fn a_backend_that_does_not_answer_in_time_gets_504() {
    let mut setup = Setup::new(StoreKind::Memory);
    setup.timeouts = "upstream_response = \"300ms\"\n".into();
    let h = setup.start().await;
    let started = Instant::now();
    let reply = h
        .browser()
        .send(
            "POST",
            "/",
            &[("x-test-delay-ms", "3000")],
            Bytes::from_static(b"x"),
        )
        .await;
    assert_eq!(reply.status, 504);
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(h.seen().len(), 1, "a request with a body is not sent twice");
}

#[tokio::test]
async fn a_response_body_that_stalls_is_cut_off() {
    let mut setup = Setup::new(StoreKind::Memory);
    setup.timeouts = "body_idle = \"300ms\"\n".into();
    let h = setup.start().await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let response = client
        .get(h.proxy.url("/stall").parse().unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert_eq!(first.data_ref().unwrap().as_ref(), b"first");
    let started = Instant::now();
    let end = tokio::time::timeout(Duration::from_secs(3), body.frame())
        .await
        .expect("the body ends");
    assert!(
        matches!(end, Some(Err(_)) | None),
        "the stalled body must not look complete: {end:?}"
    );
    assert!(started.elapsed() < Duration::from_millis(1500));
}

#[tokio::test]
async fn an_upload_that_stalls_is_cut_off() {
    let mut setup = Setup::new(StoreKind::Memory);
    setup.timeouts = "body_idle = \"300ms\"\n".into();
    let h = setup.start().await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>>(
    );
    let chunks = futures_util::stream::once(async { Ok(Frame::data(Bytes::from_static(b"part"))) })
        .chain(futures_util::stream::pending());
    let request = http::Request::post(h.proxy.url("/upload"))
        .header("content-length", "1000")
        .body(BodyExt::boxed(StreamBody::new(chunks)))
        .unwrap();
    let started = Instant::now();
    let outcome = tokio::time::timeout(Duration::from_secs(3), client.request(request))
        .await
        .expect("the proxy gives up");
    match outcome {
        Ok(response) => assert_eq!(response.status(), 408, "the client stalled: its fault"),
        Err(error) => assert!(!error.is_connect(), "{error}"),
    }
    assert!(started.elapsed() < Duration::from_millis(1500));
}

#[tokio::test]
async fn an_oversized_request_head_gets_431() {
    let mut setup = Setup::new(StoreKind::Memory);
    setup.server = "max_header_bytes = 8192\nmax_headers = 20\n".into();
    let h = setup.start().await;
    let big = "v".repeat(10_000);
    let reply = h.browser().get_with("/", &[("x-big", &big)]).await;
    assert_eq!(reply.status, 431);
    let names: Vec<String> = (0..30).map(|i| format!("x-h{i}")).collect();
    let many: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "1")).collect();
    let reply = h.browser().get_with("/", &many).await;
    assert_eq!(reply.status, 431);
    assert!(h.seen().is_empty());
    let fine = h.browser().get_with("/", &many[..10]).await;
    assert_eq!(fine.status, 200);
}

async fn logged_in_with_redis(store: &str) -> (Harness, Browser) {
    let mut setup = Setup::new(StoreKind::Redis);
    setup.store_extra = format!("timeout = \"300ms\"\n{store}");
    let h = setup.start().await;
    let browser = h.browser();
    browser
        .get_with("/", &[("x-test-update", r#"{"user":"ada"}"#)])
        .await;
    (h, browser)
}

#[tokio::test]
async fn a_hung_redis_does_not_hang_requests_under_fail_closed() {
    let (h, browser) = logged_in_with_redis("").await;
    signal(h.redis().pid(), "STOP");
    let started = Instant::now();
    let reply = browser.get("/").await;
    let took = started.elapsed();
    let anonymous = h.browser().get("/").await;
    signal(h.redis().pid(), "CONT");
    assert_eq!(reply.status, 503);
    assert!(reply.headers.contains_key("retry-after"));
    assert!(
        took < Duration::from_millis(1000),
        "answered after {took:?} with a 300ms store deadline"
    );
    assert_eq!(
        anonymous.status, 200,
        "a request that needs no store is not held up"
    );
    assert_eq!(browser.get("/").await.session(), json!({"user": "ada"}));
}

#[tokio::test]
async fn a_hung_redis_does_not_hang_requests_under_fail_open() {
    let (h, browser) = logged_in_with_redis("on_error = \"fail_open\"\n").await;
    signal(h.redis().pid(), "STOP");
    let started = Instant::now();
    let reply = browser
        .get_with("/", &[("x-test-update", r#"{"dropped":1}"#)])
        .await;
    let took = started.elapsed();
    signal(h.redis().pid(), "CONT");
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.seen_one("x-session-status").as_deref(),
        Some("unavailable")
    );
    assert!(took < Duration::from_millis(1000), "{took:?}");
    let session = browser.get("/").await.session();
    assert_eq!(
        session,
        json!({"user": "ada"}),
        "the update was dropped, the session kept"
    );
}

#[tokio::test]
async fn after_a_redis_restart_requests_succeed_again_within_5s() {
    let (mut h, browser) = logged_in_with_redis("").await;
    h.redis.as_mut().unwrap().kill();
    assert_eq!(browser.get("/").await.status, 503);
    h.redis.as_mut().unwrap().restart();
    let restarted = Instant::now();
    let anonymous = h.browser();
    loop {
        let reply = anonymous
            .get_with("/", &[("x-test-update", r#"{"back":true}"#)])
            .await;
        if reply.status == 200 {
            break;
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(5),
            "still {} after 5s",
            reply.status
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("recovered {:?} after Redis came back", restarted.elapsed());
    assert_eq!(anonymous.get("/").await.session(), json!({"back": true}));
    // The old session lived in the Redis that was killed: it is a new visitor now.
    assert_eq!(
        browser
            .get("/")
            .await
            .seen_one("x-session-status")
            .as_deref(),
        Some("new")
    );
}

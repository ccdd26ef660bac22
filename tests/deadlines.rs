//! Every network wait has a deadline (`[timeouts]`): a slow request head, an
//! idle (parked) keep-alive connection, a backend that does not connect,
//! answer or finish its body, a client that stalls its upload. The store's
//! own deadline is shown in `store_outages.rs`.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Browser, Proxy, Setup, StoreKind};
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
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
    // Idle past keep-alive (parked after 50 ms idle): the proxy closes it.
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

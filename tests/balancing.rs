//! Balancing (SPEC §7): round-robin and weights; a connection that fails
//! before anything was sent is retried on the next server, and a GET that
//! got no answer is sent again there, every header with it; a backend killed
//! while traffic flows, active health checks taking a server out and
//! bringing it back, passive ejection, a backend closing idle pooled
//! connections; and 502 when no server answers.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Backend, Browser, Proxy, Setup, StoreKind, free_port};
use tokio::net::TcpListener;

fn config(servers: &[String]) -> String {
    Setup::new(StoreKind::Memory).config(servers, None)
}

#[tokio::test]
async fn requests_alternate_between_backends() {
    let h = Setup::new(StoreKind::Memory).start().await;
    let browser = h.browser();
    let order: Vec<String> = {
        let mut order = Vec::new();
        for _ in 0..6 {
            order.push(browser.get("/").await.backend());
        }
        order
    };
    assert_eq!(order.iter().filter(|b| *b == "one").count(), 3, "{order:?}");
    for pair in order.windows(2) {
        assert_ne!(pair[0], pair[1], "{order:?}");
    }
}

#[tokio::test]
async fn a_failed_connection_is_retried_on_the_next_server() {
    let alive = Backend::start("alive").await;
    let dead = format!("http://127.0.0.1:{}", free_port());
    let proxy = Proxy::start(&config(&[dead, alive.url()])).await;
    let browser = Browser::new(proxy.addr);
    for _ in 0..4 {
        let reply = browser.get("/").await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.backend(), "alive");
    }
    // A body is not lost on the way: it is sent again to the next server.
    for _ in 0..2 {
        let body = Bytes::from(vec![b'x'; 100_000]);
        let reply = browser.send("POST", "/upload", &[], body).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.echo()["body_bytes"], 100_000);
    }
}

/// A server that reads each request head and closes without answering;
/// how many heads it read.
fn closes_without_answering(listener: TcpListener) -> Arc<AtomicUsize> {
    let heads = Arc::new(AtomicUsize::new(0));
    let counted = heads.clone();
    tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut head = Vec::new();
            let mut buffer = [0; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buffer).await {
                    Ok(0) | Err(_) => break,
                    Ok(read) => head.extend_from_slice(&buffer[..read]),
                }
            }
            counted.fetch_add(1, Ordering::SeqCst);
        }
    });
    heads
}

#[tokio::test]
async fn a_get_sent_to_a_server_that_closed_unanswered_is_replayed_with_every_header() {
    // The request reached the first server, which gave no response head: an
    // idempotent request without a body goes on to the next server, from
    // the copy kept of its headers (RFC 9110 §9.2.2), every value in order.
    let closer = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closer_url = format!("http://{}", closer.local_addr().unwrap());
    let heads = closes_without_answering(closer);
    let alive = Backend::start("alive").await;
    let proxy = Proxy::start(&config(&[closer_url, alive.url()])).await;
    let browser = Browser::new(proxy.addr);
    let sent = [("x-multi", "first"), ("x-multi", "second"), ("x-one", "1")];
    for _ in 0..4 {
        let reply = browser.get_with("/", &sent).await;
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_eq!(reply.backend(), "alive");
    }
    assert!(
        heads.load(Ordering::SeqCst) >= 1,
        "no request reached the server that closes unanswered"
    );
    let seen = alive.seen();
    assert_eq!(seen.len(), 4, "each request answered once");
    for request in &seen {
        let multi: Vec<_> = request.headers.get_all("x-multi").iter().collect();
        assert_eq!(multi, ["first", "second"]);
        assert_eq!(request.headers["x-one"], "1");
        assert_eq!(request.headers.get_all("host").iter().count(), 1);
        assert!(request.headers.contains_key("x-session"));
    }
}

#[tokio::test]
async fn unreachable_upstreams_answer_502_with_a_short_body() {
    let dead: Vec<String> = (0..2)
        .map(|_| format!("http://127.0.0.1:{}", free_port()))
        .collect();
    let proxy = Proxy::start(&config(&dead)).await;
    let started = Instant::now();
    let reply = Browser::new(proxy.addr).get("/").await;
    assert_eq!(reply.status, 502);
    assert!(reply.body.len() < 100, "{:?}", reply.body);
    assert!(
        !String::from_utf8_lossy(&reply.body).contains("127.0.0.1"),
        "no internal detail leaks"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

/// Brings a stopped backend back on its old address.
async fn restart(name: &str, addr: std::net::SocketAddr) -> Backend {
    for _ in 0..100 {
        if let Ok(listener) = TcpListener::bind(addr).await {
            return Backend::serve(name, listener);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{addr} could not be bound again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_killed_mid_run_leaves_every_get_answered() {
    let mut h = Setup::new(StoreKind::Memory).start().await;
    let browser = h.browser();
    browser
        .get_with("/", &[("x-test-update", r#"{"user":"ada"}"#)])
        .await;
    let answered = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let (browser, answered) = (browser.clone(), answered.clone());
        workers.spawn(async move {
            let mut statuses = Vec::new();
            for _ in 0..60 {
                // Some requests are on the backend when it dies.
                let reply = browser.get_with("/", &[("x-test-delay-ms", "5")]).await;
                statuses.push((reply.status, reply.session()["user"].clone()));
                answered.fetch_add(1, Ordering::Relaxed);
            }
            statuses
        });
    }
    while answered.load(Ordering::Relaxed) < 60 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    h.backends[1].stop();
    while let Some(statuses) = workers.join_next().await {
        for (status, user) in statuses.unwrap() {
            assert_eq!(status, 200);
            assert_eq!(user, "ada");
        }
    }
    let after = browser.get("/").await;
    assert_eq!(after.backend(), "one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_check_takes_a_dead_backend_out_and_brings_it_back() {
    let mut setup = Setup::new(StoreKind::Memory);
    // Passive ejection would keep the server out for an hour: only the
    // health check can bring it back.
    setup.upstreams = "max_fails = 1\nfail_timeout = \"1h\"\n\
        [upstreams.health]\npath = \"/healthz\"\ninterval = \"100ms\"\ntimeout = \"200ms\"\n\
        healthy_threshold = 2\nunhealthy_threshold = 2\n"
        .into();
    let mut h = setup.start().await;
    let browser = h.browser();
    let addr = h.backends[1].addr;
    h.backends[1].stop();
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..6 {
        let reply = browser.get("/").await;
        assert_eq!(
            (reply.status.as_u16(), reply.backend()),
            (200, "one".into())
        );
    }
    h.backends[1] = restart("two", addr).await;
    let started = Instant::now();
    let mut back = false;
    while started.elapsed() < Duration::from_secs(5) && !back {
        back = browser.get("/").await.backend() == "two";
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(back, "the health check did not bring the backend back");
    let probes = h.backends[1]
        .seen()
        .iter()
        .filter(|s| s.path == "/healthz")
        .count();
    assert!(probes >= 2, "health checks probe /healthz ({probes} seen)");
}

#[tokio::test]
async fn a_server_that_keeps_failing_is_taken_out_of_rotation() {
    // A server that accepts connections and closes them at once.
    let failing = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let failing_url = format!("http://{}", failing.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = failing.accept().await {
            count.fetch_add(1, Ordering::Relaxed);
            drop(stream);
        }
    });
    let good = Backend::start("good").await;
    let mut setup = Setup::new(StoreKind::Memory);
    setup.upstreams = "max_fails = 2\nfail_timeout = \"1h\"\n".into();
    let proxy = Proxy::start(&setup.config(&[failing_url, good.url()], None)).await;
    let browser = Browser::new(proxy.addr);
    for _ in 0..12 {
        let reply = browser.get("/").await;
        assert_eq!(
            (reply.status.as_u16(), reply.backend()),
            (200, "good".into())
        );
    }
    let tried = accepted.load(Ordering::Relaxed);
    assert!(
        tried <= 2,
        "the failing server was tried {tried} times after max_fails = 2"
    );
}

#[tokio::test]
async fn weights_share_the_requests() {
    let (a, b) = (Backend::start("heavy").await, Backend::start("light").await);
    let servers = format!("{{ url = \"{}\", weight = 3 }}", a.url());
    let config = Setup::new(StoreKind::Memory)
        .config(&[b.url()], None)
        .replace("servers = [", &format!("servers = [{servers}, "));
    let proxy = Proxy::start(&config).await;
    let browser = Browser::new(proxy.addr);
    let mut heavy = 0;
    for _ in 0..40 {
        if browser.get("/").await.backend() == "heavy" {
            heavy += 1;
        }
    }
    assert_eq!(heavy, 30);
}

/// A listener whose accept queue is full: connecting to it hangs.
async fn black_hole() -> (tokio::net::TcpListener, tokio::net::TcpStream, String) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let filler = tokio::net::TcpStream::connect(addr).await.unwrap();
    (listener, filler, format!("http://{addr}"))
}

#[tokio::test]
async fn with_every_server_down_the_answer_is_an_immediate_502() {
    let (_l1, _f1, one) = black_hole().await;
    let (_l2, _f2, two) = black_hole().await;
    let mut setup = Setup::new(StoreKind::Memory);
    setup.upstreams =
        "[upstreams.health]\ninterval = \"100ms\"\ntimeout = \"100ms\"\nunhealthy_threshold = 1\n"
            .into();
    setup.timeouts = "upstream_connect = \"5s\"\n".into();
    let proxy = Proxy::start(&setup.config(&[one, two], None)).await;
    // Until the health checks have run, a request waits for the connect deadline.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let browser = Browser::new(proxy.addr);
    for _ in 0..5 {
        let started = Instant::now();
        let reply = browser.get("/").await;
        assert_eq!(reply.status, 502);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "no connection is attempted: {:?}",
            started.elapsed()
        );
    }
}

#[tokio::test]
async fn a_backend_that_closes_idle_connections_causes_no_failed_request() {
    // An app server with a short keep-alive: it closes every connection
    // that has been idle for 100 ms, without a word.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = Arc::new(AtomicUsize::new(0));
    let count = served.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_request| {
                    count.fetch_add(1, Ordering::Relaxed);
                    async {
                        Ok::<_, std::convert::Infallible>(http::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from_static(b"ok")),
                        ))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(Duration::from_millis(100))
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    let proxy =
        Proxy::start(&Setup::new(StoreKind::Memory).config(&[format!("http://{addr}")], None))
            .await;
    let browser = Browser::new(proxy.addr);
    for round in 0..8 {
        // Bursts keep several pooled connections; the pauses let the server close them.
        for _ in 0..4 {
            assert_eq!(
                browser
                    .send("POST", "/", &[], bytes::Bytes::from_static(b"x"))
                    .await
                    .status,
                200,
                "round {round}"
            );
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert_eq!(served.load(Ordering::Relaxed), 32);
}

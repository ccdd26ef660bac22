//! Graceful shutdown (SPEC §1) of the sessiongate binary: on SIGTERM it stops
//! accepting, lets in-flight requests finish within the drain deadline, and
//! exits 0.

mod common;

use std::time::{Duration, Instant};

use common::{Backend, Binary, Browser, Setup, StoreKind};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_request_completes_across_sigterm_and_the_process_exits_0() {
    let backend = Backend::start("slow").await;
    let mut binary = Binary::start(&Setup::new(StoreKind::Memory).config(&[backend.url()], None));
    let browser = Browser::new(binary.addr);
    let in_flight = {
        let browser = browser.clone();
        tokio::spawn(async move { browser.get_with("/", &[("x-test-delay-ms", "1500")]).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    binary.terminate();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        tokio::net::TcpStream::connect(binary.addr).await.is_err(),
        "new connections are refused once shutdown began"
    );
    let reply = in_flight.await.unwrap();
    assert_eq!(reply.status, 200, "the in-flight request finished");
    let status = tokio::task::spawn_blocking(move || binary.wait(Duration::from_secs(5)))
        .await
        .unwrap()
        .expect("the process exited");
    assert_eq!(status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_deadline_bounds_how_long_shutdown_waits() {
    let backend = Backend::start("stuck").await;
    let mut setup = Setup::new(StoreKind::Memory);
    setup.timeouts = "drain = \"500ms\"\n".into();
    let mut binary = Binary::start(&setup.config(&[backend.url()], None));
    let browser = Browser::new(binary.addr);
    let stuck = {
        let browser = browser.clone();
        tokio::spawn(async move {
            let request = browser.get_with("/", &[("x-test-delay-ms", "20000")]);
            tokio::time::timeout(Duration::from_secs(10), request).await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    binary.terminate();
    let status = tokio::task::spawn_blocking(move || binary.wait(Duration::from_secs(5)))
        .await
        .unwrap()
        .expect("the process exited within the drain deadline and a margin");
    assert_eq!(status.code(), Some(0));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(3),
        "{took:?}"
    );
    stuck.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keepalive_connections_do_not_hold_up_shutdown() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let backend = Backend::start("idle").await;
    let mut setup = Setup::new(StoreKind::Memory);
    setup.timeouts = "drain = \"20s\"\n".into();
    let mut binary = Binary::start(&setup.config(&[backend.url()], None));
    // One connection idle after a request, one that never sent a byte.
    let mut idle = tokio::net::TcpStream::connect(binary.addr).await.unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nHost: idle\r\n\r\n")
        .await
        .unwrap();
    let mut response = vec![0u8; 64 * 1024];
    assert!(idle.read(&mut response).await.unwrap() > 0);
    let mut silent = tokio::net::TcpStream::connect(binary.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    binary.terminate();
    let status = tokio::task::spawn_blocking(move || binary.wait(Duration::from_secs(5)))
        .await
        .unwrap()
        .expect("the process exited long before the drain deadline");
    assert_eq!(status.code(), Some(0));
    for stream in [&mut idle, &mut silent] {
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(1), stream.read_to_end(&mut rest));
        assert!(closed.await.is_ok(), "closed by the proxy");
    }
}

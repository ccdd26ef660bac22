//! Limits and bounded resources: a request head beyond the configured size or
//! count gets 431; huge request heads, huge and numerous updates, many
//! sessions and sprayed cookies leave the sessiongate process with bounded
//! memory (its VmHWM from /proc) and Redis untouched by invalid cookies.

mod common;

use std::time::Duration;

use common::{
    Backend, Binary, Browser, Redis, Setup, StoreKind, oversized_head, send_all_then_read,
};
use serde_json::json;
use tokio::net::TcpStream;

const PEAK_LIMIT_KIB: u64 = 64 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abuse_of_every_kind_leaves_memory_bounded_and_redis_untouched() {
    let redis = Redis::start();
    let backend = Backend::start("target").await;
    let setup = Setup::new(StoreKind::Redis);
    let binary = Binary::start(&setup.config(&[backend.url()], Some(&redis.url())));
    let browser = Browser::new(binary.addr);
    browser
        .get_with("/", &[("x-test-update", r#"{"user":"ada"}"#)])
        .await;
    browser.get("/").await;

    // Request heads far beyond the limit are refused, not buffered.
    let huge = "h".repeat(1_000_000);
    for _ in 0..20 {
        assert_eq!(
            Browser::new(binary.addr)
                .get_with("/", &[("x-big", &huge)])
                .await
                .status,
            431
        );
    }

    // An update far beyond max_bytes, again and again: refused, logged, the
    // response still arrives.
    for _ in 0..50 {
        let reply = browser.get("/big-update?bytes=300000").await;
        assert_eq!(reply.status, 200);
    }
    assert_eq!(browser.get("/").await.session(), json!({"user": "ada"}));

    // A backend head larger than the proxy accepts from a backend: 502.
    let reply = browser.get("/big-update?bytes=2000000").await;
    assert_eq!(reply.status, 502);

    // Many updates in one response: merged within the header-count limit...
    let reply = browser.get("/many-updates?count=90").await;
    assert_eq!(reply.status, 200);
    assert_eq!(browser.get("/").await.session()["k89"], 89);
    // ...and beyond it, the backend's response is refused as malformed.
    assert_eq!(browser.get("/many-updates?count=500").await.status, 502);

    // Many sessions: they live in Redis, not in the proxy.
    let mut creators = tokio::task::JoinSet::new();
    for worker in 0..20 {
        let addr = binary.addr;
        creators.spawn(async move {
            for i in 0..100 {
                let visitor = Browser::new(addr);
                let update =
                    json!({ "visitor": worker * 100 + i, "pad": "p".repeat(2000) }).to_string();
                assert_eq!(
                    visitor
                        .get_with("/", &[("x-test-update", &update)])
                        .await
                        .status,
                    200
                );
            }
        });
    }
    while let Some(done) = creators.join_next().await {
        done.unwrap();
    }
    assert!(redis.keys().len() >= 2000);

    // Sprayed cookies: not one Redis command.
    let before = redis.command_stats();
    let mut sprayers = tokio::task::JoinSet::new();
    for worker in 0..10 {
        let addr = binary.addr;
        sprayers.spawn(async move {
            for i in 0..100 {
                let sprayer = Browser::new(addr);
                sprayer.set_cookie(Some(format!("{:0>43}.{:0>43}", worker * 1000 + i, i)));
                assert_eq!(
                    sprayer
                        .get("/")
                        .await
                        .seen_one("x-session-status")
                        .as_deref(),
                    Some("new")
                );
            }
        });
    }
    while let Some(done) = sprayers.join_next().await {
        done.unwrap();
    }
    let commands = Redis::commands_between(&before, &redis.command_stats());
    assert!(
        commands.is_empty(),
        "sprayed cookies reached Redis: {commands:?}"
    );

    tokio::time::sleep(Duration::from_millis(200)).await;
    let peak = binary.peak_rss_kib();
    eprintln!("sessiongate peak RSS after the abuse: {peak} KiB");
    assert!(peak < PEAK_LIMIT_KIB, "peak RSS {peak} KiB");
}

#[tokio::test]
async fn a_client_still_sending_a_refused_head_reads_its_431() {
    let mut setup = Setup::new(StoreKind::Memory);
    setup.server = "max_header_bytes = 8192\n".into();
    let h = setup.start().await;
    for _ in 0..5 {
        let socket = TcpStream::connect(h.proxy.addr).await.unwrap();
        let head = oversized_head("x", 16_000_000);
        let response = send_all_then_read(socket, &[head.as_bytes()]).await;
        assert!(
            response.starts_with("HTTP/1.1 431"),
            "the client read: {response:.200}"
        );
    }
    assert!(h.seen().is_empty());
}

#[tokio::test]
async fn a_client_still_uploading_reads_the_answer_that_did_not_wait_for_its_body() {
    let mut h = Setup::new(StoreKind::Memory).start().await;
    for backend in &mut h.backends {
        backend.stop();
    }
    for _ in 0..5 {
        // No backend to send it to: the proxy answers without reading it.
        let body = vec![b'b'; 16_000_000];
        let head = format!(
            "POST / HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        let socket = TcpStream::connect(h.proxy.addr).await.unwrap();
        let response = send_all_then_read(socket, &[head.as_bytes(), &body]).await;
        assert!(
            response.starts_with("HTTP/1.1 502"),
            "the client read: {response:.200}"
        );
    }
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

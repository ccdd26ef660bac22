//! SPEC §7 as a client and the backends see it: round-robin, the retry of a
//! failed connection, 502 when no backend answers, hop-by-hop fields and
//! `X-Forwarded-*`, bodies in both directions.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Backend, Browser, Proxy, Setup, StoreKind, free_port};

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

#[tokio::test]
async fn hop_by_hop_fields_stop_at_the_proxy() {
    let h = Setup::new(StoreKind::Memory).start().await;
    let reply = h
        .browser()
        .get_with(
            "/",
            &[
                ("connection", "keep-alive, x-private"),
                ("x-private", "hop"),
                ("keep-alive", "timeout=5"),
                ("te", "trailers"),
                ("proxy-connection", "keep-alive"),
                ("x-end-to-end", "kept"),
                ("x-test-reply-header", "keep-alive: timeout=99"),
                ("x-test-reply-header", "proxy-connection: close"),
            ],
        )
        .await;
    for name in ["x-private", "keep-alive", "te", "proxy-connection"] {
        assert!(reply.seen_header(name).is_empty(), "{name} was forwarded");
    }
    assert_eq!(reply.seen_header("x-end-to-end"), ["kept"]);
    assert!(!reply.headers.contains_key("keep-alive"));
    assert!(!reply.headers.contains_key("proxy-connection"));
}

#[tokio::test]
async fn forwarded_headers_name_the_client_and_its_host() {
    let h = Setup::new(StoreKind::Memory).start().await;
    let reply = h
        .browser()
        .get_with(
            "/",
            &[("host", "shop.example"), ("x-forwarded-for", "203.0.113.9")],
        )
        .await;
    assert_eq!(
        reply.seen_header("x-forwarded-for"),
        ["203.0.113.9, 127.0.0.1"]
    );
    assert_eq!(reply.seen_header("x-forwarded-proto"), ["http"]);
    assert_eq!(reply.seen_header("x-forwarded-host"), ["shop.example"]);
    assert_eq!(
        reply.seen_header("host"),
        ["shop.example"],
        "the Host is kept"
    );
}

#[tokio::test]
async fn method_path_and_query_reach_the_backend_unchanged() {
    let h = Setup::new(StoreKind::Memory).start().await;
    let reply = h
        .browser()
        .send("DELETE", "/a/b%20c?x=1&y=%C3%A9", &[], Bytes::new())
        .await;
    assert_eq!(reply.status, 200);
    let seen = h.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "DELETE");
    assert_eq!(seen[0].path, "/a/b%20c?x=1&y=%C3%A9");
}

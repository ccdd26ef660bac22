//! What passes through the proxy as sent (SPEC §7): method, path and query;
//! end-to-end headers, but not hop-by-hop ones (RFC 9110 §7.6.1); the
//! client's address and Host in `X-Forwarded-*`; HTTP/2 from clients (h2c)
//! with its session.

mod common;

use bytes::Bytes;
use common::{Setup, StoreKind};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};

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

#[tokio::test]
async fn http2_cleartext_requests_are_served_with_their_session() {
    let h = Setup::new(StoreKind::Memory).start().await;
    let browser = h.browser();
    browser
        .get_with("/", &[("x-test-update", r#"{"user":"ada"}"#)])
        .await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    // HTTP/2 clients may send each cookie in its own field (RFC 9113 §8.2.3).
    let request = http::Request::get(h.proxy.url("/h2"))
        .header("cookie", "theme=dark")
        .header(
            "cookie",
            format!("sg_session={}", browser.cookie().unwrap()),
        )
        .header("x-test-update", r#"{"h2":true}"#)
        .body(Full::default())
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    let echo: Value =
        serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    let seen = |name: &str| -> Vec<String> {
        echo["headers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p[0] == name)
            .map(|p| p[1].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(seen("x-session-status"), ["active"]);
    assert_eq!(seen("cookie"), ["theme=dark"]);
    assert_eq!(seen("host").len(), 1, "the backend gets a Host header");
    assert_eq!(
        browser.get("/").await.session(),
        json!({"user": "ada", "h2": true})
    );
}

//! Spoofing: no client header with the session prefix reaches a backend,
//! whatever its case or surrounding whitespace; no backend header with the
//! prefix reaches a client; the session cookie never reaches a backend.
//! Requests are written as raw bytes, so odd spellings arrive as sent.

mod common;

use bytes::Bytes;
use common::{Harness, Setup, StoreKind};
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const FORGED: &str = "forged-by-the-client";

/// Writes raw request bytes and returns the response's status code.
async fn raw(h: &Harness, request: &str) -> u16 {
    let mut stream = TcpStream::connect(h.proxy.addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    let text = String::from_utf8_lossy(&response);
    text.split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

fn assert_no_backend_saw(h: &Harness, needle: &str) {
    for seen in h.seen() {
        for (name, value) in &seen.headers {
            let value = String::from_utf8_lossy(value.as_bytes());
            assert!(!value.contains(needle), "the backend got {name}: {value}");
        }
    }
}

#[tokio::test]
async fn prefixed_headers_in_any_case_or_spacing_never_reach_a_backend() {
    let h = Setup::new(StoreKind::Redis).start().await;
    let variants = [
        "X-Session",
        "x-session",
        "X-SESSION",
        "x-SeSsIoN",
        "X-Session-Id",
        "x-session-id",
        "X-SESSION-STATUS",
        "X-Session-Update",
        "X-Session-Action",
        "X-Session-Anything-Else",
        "X-Sessionless",
    ];
    for name in variants {
        for spacing in [": ", ":", ":\t", ":  \t "] {
            let request = format!(
                "GET / HTTP/1.1\r\nHost: spoof\r\n{name}{spacing}{FORGED}\r\nConnection: close\r\n\r\n"
            );
            let status = raw(&h, &request).await;
            assert!(status == 200 || status == 400, "{name:?}: {status}");
        }
    }
    // Spellings an HTTP/1.1 parser must refuse outright (RFC 9112 §5.1, §5.2).
    for bad in [
        format!("X-Session-Id : {FORGED}\r\n"),
        format!("X-Session-Id\t: {FORGED}\r\n"),
        format!("X-Other: a\r\n X-Session-Id: {FORGED}\r\n"),
        format!("X-Other: a\r\n\tX-Session: {FORGED}\r\n"),
        format!("X-Session\x0b-Id: {FORGED}\r\n"),
    ] {
        let request = format!("GET / HTTP/1.1\r\nHost: spoof\r\n{bad}Connection: close\r\n\r\n");
        assert_eq!(raw(&h, &request).await, 400, "{bad:?}");
    }
    assert!(
        !h.seen().is_empty(),
        "the well-formed requests reached a backend"
    );
    assert_no_backend_saw(&h, FORGED);
}

#[tokio::test]
async fn prefixed_headers_sent_over_http2_never_reach_a_backend() {
    let h = Setup::new(StoreKind::Memory).start().await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let request = http::Request::get(h.proxy.url("/"))
        .header("x-session", FORGED)
        .header("x-session-id", FORGED)
        .header("x-session-status", FORGED)
        .header("x-session-update", FORGED)
        .body(Full::default())
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    response.into_body().collect().await.unwrap();
    assert_no_backend_saw(&h, FORGED);
}

#[tokio::test]
async fn backend_session_headers_in_any_case_never_reach_the_client() {
    let h = Setup::new(StoreKind::Memory).start().await;
    let reply = h
        .browser()
        .get_with(
            "/",
            &[
                ("x-test-reply-header", "X-SESSION-ID: leaked"),
                ("x-test-reply-header", "x-session: leaked"),
                ("x-test-reply-header", "X-Session-Internal-Debug: leaked"),
                ("x-test-reply-header", "X-SeSsIoN-uPdAtE: {\"a\":1}"),
            ],
        )
        .await;
    assert_eq!(reply.status, 200);
    for (name, value) in &reply.headers {
        assert!(
            !name.as_str().starts_with("x-session"),
            "{name} reached the client"
        );
        assert_ne!(value, "leaked");
    }
}

#[tokio::test]
async fn the_session_cookie_never_reaches_a_backend_however_it_is_sent() {
    let h = Setup::new(StoreKind::Redis).start().await;
    let browser = h.browser();
    browser
        .get_with("/", &[("x-test-update", r#"{"user":"ada"}"#)])
        .await;
    let cookie = browser.cookie().unwrap();
    let tag = cookie.split_once('.').unwrap().1.to_string();
    let spellings = [
        format!("Cookie: sg_session={cookie}\r\n"),
        format!("Cookie: a=1; sg_session={cookie}; b=2\r\n"),
        format!("Cookie: a=1;sg_session={cookie};b=2\r\n"),
        format!("Cookie:  sg_session={cookie} \r\n"),
        format!("Cookie: sg_session = {cookie}\r\n"),
        format!("Cookie: a=1\r\nCookie: sg_session={cookie}\r\nCookie: b=2\r\n"),
        format!("Cookie: sg_session={cookie}; sg_session={cookie}\r\n"),
        format!("Cookie: sg_session=garbage; sg_session={cookie}\r\n"),
    ];
    for spelling in &spellings {
        let request = format!("GET / HTTP/1.1\r\nHost: c\r\n{spelling}Connection: close\r\n\r\n");
        assert_eq!(raw(&h, &request).await, 200, "{spelling:?}");
    }
    assert_no_backend_saw(&h, &tag);
    assert_no_backend_saw(&h, "garbage");
    let kept: Vec<String> = h
        .seen()
        .iter()
        .flat_map(|s| {
            s.headers
                .get_all("cookie")
                .iter()
                .map(|v| v.to_str().unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        kept.iter().any(|c| c.contains("a=1")) && kept.iter().any(|c| c.contains("b=2")),
        "{kept:?}"
    );
}

#[tokio::test]
async fn the_session_cookie_next_to_a_cookie_that_is_not_utf8_never_reaches_a_backend() {
    let h = Setup::new(StoreKind::Redis).start().await;
    let browser = h.browser();
    browser
        .get_with("/", &[("x-test-update", r#"{"user":"ada"}"#)])
        .await;
    let cookie = browser.cookie().unwrap();
    let mut request =
        b"GET / HTTP/1.1\r\nHost: c\r\nConnection: close\r\nCookie: legacy=caf\xe9; sg_session="
            .to_vec();
    request.extend_from_slice(cookie.as_bytes());
    request.extend_from_slice(b"\r\n\r\n");
    let mut stream = TcpStream::connect(h.proxy.addr).await.unwrap();
    stream.write_all(&request).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    assert!(response.starts_with(b"HTTP/1.1 200"));
    let tag = cookie.split_once('.').unwrap().1;
    assert_no_backend_saw(&h, tag);
    let seen = h.seen();
    let forwarded = seen.last().unwrap().headers.get("cookie").unwrap();
    assert_eq!(
        forwarded.as_bytes(),
        b"legacy=caf\xe9",
        "the other cookie passes as sent"
    );
    let status = seen
        .last()
        .unwrap()
        .headers
        .get("x-session-status")
        .unwrap()
        .clone();
    assert_eq!(status, "active", "and the session cookie was used");
}

//! The headers between sessiongate and the backend (SPEC §3-§4): no header
//! with the session prefix crosses from a client to a backend or from a
//! backend to a client, whatever its case, spacing or HTTP version; the
//! session cookie never reaches a backend while other cookies do; whatever a
//! session holds reaches the backend only as one printable ASCII JSON
//! header; a backend that sends bytes invalid in a header gets a 502.
//! Some requests are written as raw bytes, so odd spellings arrive as sent.

mod common;

use bytes::Bytes;
use common::{Browser, Harness, Setup, StoreKind};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

behaviours!(
    client_session_headers_never_reach_the_backend_however_they_are_spelled,
    backend_session_headers_in_any_case_never_reach_the_client,
    the_session_cookie_never_reaches_a_backend_but_other_cookies_do,
    session_text_in_any_unicode_arrives_as_printable_ascii_json_that_decodes_to_the_same_text,
    keys_that_look_like_headers_stay_inside_the_json,
);

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

async fn client_session_headers_never_reach_the_backend_however_they_are_spelled(setup: Setup) {
    let h = setup.start().await;
    // The backend gets sessiongate's values in place of the client's, and a
    // client's own update header stores nothing.
    let forged = [
        ("X-Session", r#"{"admin":true}"#),
        (
            "x-session-id",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ),
        ("X-SESSION-STATUS", "active"),
        ("x-Session-Update", r#"{"admin":true}"#),
        ("X-Session-Anything", "1"),
    ];
    let reply = h.browser().get_with("/", &forged).await;
    assert_eq!(reply.session(), json!({}));
    assert_eq!(reply.seen_one("x-session-status").as_deref(), Some("new"));
    assert_ne!(reply.seen_one("x-session-id").as_deref(), Some(forged[1].1));
    assert!(reply.seen_header("x-session-update").is_empty());
    assert!(reply.seen_header("x-session-anything").is_empty());
    assert!(
        reply.set_cookies().is_empty(),
        "a client's own update header stores nothing"
    );

    // Any case, any spacing the parser accepts.
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

async fn backend_session_headers_in_any_case_never_reach_the_client(setup: Setup) {
    let h = setup.start().await;
    let reply = h
        .browser()
        .get_with(
            "/",
            &[
                ("x-test-update", r#"{"a":1}"#),
                ("x-test-reply-header", "X-Session-Debug: leaked"),
                ("x-test-reply-header", "x-session: {}"),
                ("x-test-reply-header", "X-SESSION-ID: leaked"),
                ("x-test-reply-header", "x-session: leaked"),
                ("x-test-reply-header", "X-Session-Internal-Debug: leaked"),
                ("x-test-reply-header", "X-SeSsIoN-uPdAtE: {\"b\":1}"),
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

async fn the_session_cookie_never_reaches_a_backend_but_other_cookies_do(setup: Setup) {
    let h = setup.start().await;
    let browser = h.browser();
    browser
        .get_with("/", &[("x-test-update", r#"{"user":"ada"}"#)])
        .await;
    let cookie = browser.cookie().unwrap();

    // Other cookies pass in their order; no cookie left, no Cookie header.
    let plain = Browser::new(h.proxy.addr);
    let around = format!("theme=dark; sg_session={cookie}; lang=en");
    let reply = plain.get_with("/", &[("cookie", &around)]).await;
    assert_eq!(
        reply.seen_one("x-session-status").as_deref(),
        Some("active")
    );
    assert_eq!(reply.seen_header("cookie"), ["theme=dark; lang=en"]);
    let only = format!("sg_session={cookie}");
    let reply = plain.get_with("/", &[("cookie", &only)]).await;
    assert!(reply.seen_header("cookie").is_empty());

    // However the session cookie is spelled or repeated.
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

/// Strings from every range that matters: ASCII controls, quotes and
/// backslashes, DEL, the first and last code points of each UTF-8 length,
/// the BMP's top, and the astral planes.
fn hostile_strings() -> Vec<String> {
    let mut strings = vec![
        "\r\nSet-Cookie: evil=1\r\n".to_string(),
        "\0nul\0".to_string(),
        "\"quoted\" and \\backslash\\ and 'single'".to_string(),
        "\u{7f}del".to_string(),
        "\t\u{b}\u{c}\u{1b}[31m".to_string(),
    ];
    for range in [
        0x80..0x100u32,
        0x7f0..0x810,
        0xd7f0..0xd800,
        0xe000..0xe010,
        0xfff0..0x10000,
        0x10000..0x10010,
        0x10fff0..0x110000,
    ] {
        strings.push(range.filter_map(char::from_u32).collect());
    }
    strings
}

/// JSON text with every character that is not printable ASCII escaped.
fn to_ascii(value: &Value) -> String {
    let text = value.to_string();
    let mut ascii = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii() && c != '\u{7f}' {
            ascii.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                ascii.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    ascii
}

async fn session_text_in_any_unicode_arrives_as_printable_ascii_json_that_decodes_to_the_same_text(
    setup: Setup,
) {
    let h = setup.start().await;
    let browser = h.browser();
    // A backend that sends UTF-8 as is (DEL, never valid in a header,
    // JSON-escaped), in values and in keys...
    let text = "Zoë 日本語 🎉 \u{7f} \"quoted\" back\\slash\ttab";
    let update = json!({ "name": text, "ключ": "значение" })
        .to_string()
        .replace('\u{7f}', "\\u007f");
    browser.get_with("/", &[("x-test-update", &update)]).await;
    // ...and one that escapes every character of every range.
    let values: Vec<String> = hostile_strings();
    let mut update = serde_json::Map::new();
    for (i, value) in values.iter().enumerate() {
        update.insert(format!("v{i}"), Value::String(value.clone()));
    }
    let update = to_ascii(&Value::Object(update));
    browser.get_with("/", &[("x-test-update", &update)]).await;

    let reply = browser.get("/").await;
    let sessions = reply.seen_header("x-session");
    assert_eq!(sessions.len(), 1);
    let raw = &sessions[0];
    assert!(
        raw.bytes().all(|b| (0x20..0x7f).contains(&b)),
        "not printable ASCII: {raw:?}"
    );
    let session: Value = serde_json::from_str(raw).unwrap();
    assert_eq!(session["name"], text);
    assert_eq!(session["ключ"], "значение");
    for (i, value) in values.iter().enumerate() {
        assert_eq!(
            session[format!("v{i}")],
            Value::String(value.clone()),
            "value {i}"
        );
    }
    assert!(reply.seen_header("set-cookie").is_empty());
    assert!(!reply.headers.contains_key("set-cookie"));
}

async fn keys_that_look_like_headers_stay_inside_the_json(setup: Setup) {
    let h = setup.start().await;
    let browser = h.browser();
    let keys = [
        "X-Injected: 1\r\nX-Admin: yes",
        "\r\n\r\nGET /admin HTTP/1.1",
        "X-Session-Id",
        "Set-Cookie",
        "\u{0}",
    ];
    let mut update = serde_json::Map::new();
    for key in keys {
        update.insert(key.to_string(), json!(true));
    }
    browser
        .get_with("/", &[("x-test-update", &to_ascii(&Value::Object(update)))])
        .await;
    let reply = browser.get("/").await;
    let session = reply.session();
    for key in keys {
        assert_eq!(session[key], true, "{key:?}");
    }
    for name in ["x-injected", "x-admin", "set-cookie"] {
        assert!(
            reply.seen_header(name).is_empty(),
            "{name} reached the backend"
        );
    }
    assert_eq!(reply.seen_header("x-session-id").len(), 1);
}

#[tokio::test]
async fn a_backend_sending_bytes_invalid_in_a_header_gets_a_502_and_the_proxy_carries_on() {
    // A raw backend that answers with a NUL inside a header value.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\nX-Session-Update: {\"a\":\"\0\"}\r\nContent-Length: 2\r\n\r\nok")
                    .await;
            });
        }
    });
    let good = common::Backend::start("good").await;
    let config =
        Setup::new(StoreKind::Memory).config(&[format!("http://{addr}"), good.url()], None);
    let proxy = common::Proxy::start(&config).await;
    let browser = Browser::new(proxy.addr);
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(
            browser
                .send("POST", "/", &[], Bytes::from_static(b"x"))
                .await
                .status
                .as_u16(),
        );
    }
    assert!(statuses.contains(&502), "{statuses:?}");
    assert!(
        statuses.contains(&200),
        "the proxy still serves: {statuses:?}"
    );
}

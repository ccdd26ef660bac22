//! Injection: whatever a session holds (CR, LF, NUL, quotes, any Unicode
//! range, in values or in keys) reaches a backend only as one valid ASCII
//! JSON header; no header is ever built from session data; a backend that
//! sends malformed bytes gets a 502, not a confused proxy.

mod common;

use common::{Setup, StoreKind};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

behaviours!(
    control_characters_quotes_and_every_unicode_range_arrive_as_valid_ascii_json,
    keys_that_look_like_headers_stay_inside_the_json,
    an_update_that_is_not_utf8_is_not_applied,
);

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

async fn control_characters_quotes_and_every_unicode_range_arrive_as_valid_ascii_json(
    setup: Setup,
) {
    let h = setup.start().await;
    let browser = h.browser();
    let values: Vec<String> = hostile_strings();
    let mut update = serde_json::Map::new();
    for (i, value) in values.iter().enumerate() {
        update.insert(format!("v{i}"), Value::String(value.clone()));
    }
    // The backend sends JSON with every non-ASCII character escaped.
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

async fn an_update_that_is_not_utf8_is_not_applied(setup: Setup) {
    // A backend that writes Latin-1 (obs-text) into an update: the test
    // backend echoes the request's x-test-update, sent here as raw bytes.
    let h = setup.start().await;
    let browser = h.browser();
    browser
        .get_with("/", &[("x-test-update", r#"{"user":"ada"}"#)])
        .await;
    let mut request = format!(
        "GET / HTTP/1.1\r\nHost: l\r\nCookie: sg_session={}\r\nConnection: close\r\nx-test-update: ",
        browser.cookie().unwrap()
    )
    .into_bytes();
    request.extend_from_slice(b"{\"name\":\"Zo\xeb\"}\r\n\r\n");
    let mut stream = tokio::net::TcpStream::connect(h.proxy.addr).await.unwrap();
    stream.write_all(&request).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    assert!(
        response.starts_with(b"HTTP/1.1 200"),
        "the response still reaches the client"
    );
    assert_eq!(browser.get("/").await.session(), json!({"user": "ada"}));
}

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
    let browser = common::Browser::new(proxy.addr);
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(
            browser
                .send("POST", "/", &[], bytes::Bytes::from_static(b"x"))
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

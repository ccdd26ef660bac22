//! `Upgrade` requests (SPEC §7): a WebSocket carried through both ways, with
//! its session resolved at the handshake, a session update on the 101 stored,
//! and open tunnels closed at shutdown.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Harness, StoreKind};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Opens a WebSocket through the proxy, with the browser's cookie and extra headers.
async fn open(
    h: &Harness,
    cookie: Option<String>,
    headers: &[(&str, &str)],
) -> (Socket, http::HeaderMap) {
    let mut request = format!("ws://{}/ws", h.proxy.addr)
        .into_client_request()
        .unwrap();
    if let Some(cookie) = cookie {
        request
            .headers_mut()
            .insert("cookie", format!("sg_session={cookie}").parse().unwrap());
    }
    for (k, v) in headers {
        request.headers_mut().insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    let stream = TcpStream::connect(h.proxy.addr).await.unwrap();
    let (socket, response) =
        tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream))
            .await
            .expect("the handshake succeeds through the proxy");
    (socket, response.headers().clone())
}

async fn next_text(socket: &mut Socket) -> String {
    let message = tokio::time::timeout(Duration::from_secs(5), socket.next())
        .await
        .expect("a message arrives")
        .expect("the socket is open")
        .unwrap();
    message.into_text().unwrap().to_string()
}

#[tokio::test]
async fn websocket_echoes_both_ways_with_the_session_seen_at_the_handshake() {
    let h = Harness::start(StoreKind::Redis).await;
    let browser = h.browser();
    browser
        .get_with("/", &[("x-test-update", r#"{"user":"ada"}"#)])
        .await;
    let (mut socket, _) = open(&h, browser.cookie(), &[("x-session", r#"{"forged":1}"#)]).await;
    let handshake: Value = serde_json::from_str(&next_text(&mut socket).await).unwrap();
    assert_eq!(handshake["x-session-status"], "active");
    let session: Value = serde_json::from_str(handshake["x-session"].as_str().unwrap()).unwrap();
    assert_eq!(
        session,
        json!({"user": "ada"}),
        "the backend saw the session, not the forged header"
    );

    socket.send(Message::text("hello")).await.unwrap();
    assert_eq!(next_text(&mut socket).await, "hello");
    let big = Bytes::from(vec![7u8; 300_000]);
    socket.send(Message::binary(big.clone())).await.unwrap();
    let echoed = tokio::time::timeout(Duration::from_secs(5), socket.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(echoed.into_data(), big);
    socket.close(None).await.unwrap();
}

#[tokio::test]
async fn a_session_update_on_the_101_answer_is_stored() {
    let h = Harness::start(StoreKind::Redis).await;
    let (mut socket, headers) =
        open(&h, None, &[("x-test-update", r#"{"via":"websocket"}"#)]).await;
    next_text(&mut socket).await;
    assert!(headers.keys().all(|k| !k.as_str().starts_with("x-session")));
    let set_cookie = headers
        .get("set-cookie")
        .expect("the 101 created a session")
        .to_str()
        .unwrap();
    let cookie = cookie::Cookie::parse(set_cookie.to_string()).unwrap();
    let browser = h.browser();
    browser.set_cookie(Some(cookie.value().to_string()));
    assert_eq!(
        browser.get("/").await.session(),
        json!({"via": "websocket"})
    );
}

#[tokio::test]
async fn open_tunnels_are_closed_at_shutdown() {
    let h = Harness::start(StoreKind::Memory).await;
    let (mut socket, _) = open(&h, None, &[]).await;
    next_text(&mut socket).await;
    let Harness { proxy, .. } = h;
    tokio::time::timeout(Duration::from_secs(5), proxy.shutdown())
        .await
        .expect("shutdown does not wait for the tunnel to end by itself");
    let end = tokio::time::timeout(Duration::from_secs(5), socket.next())
        .await
        .unwrap();
    assert!(
        matches!(end, None | Some(Err(_)) | Some(Ok(Message::Close(_)))),
        "{end:?}"
    );
}

//! The store unavailable (SPEC §5): Redis killed or hung, under
//! `fail_closed` (503 with `Retry-After`, only for a request that needs the
//! store) and `fail_open` (forwarded as `unavailable`, updates dropped);
//! `store.timeout` bounds every wait; sessiongate recovers by itself when
//! Redis comes back.

mod common;

use std::time::{Duration, Instant};

use common::{Browser, Harness, Setup, StoreKind, signal};
use serde_json::json;

#[tokio::test]
async fn store_down_under_fail_closed_answers_503_only_when_needed_and_recovers_by_itself() {
    let mut setup = Setup::new(StoreKind::Redis);
    setup.store_extra = "timeout = \"300ms\"\nretry_after = \"7s\"\n".into();
    let mut h = setup.start().await;
    let browser = h.browser();
    browser
        .get_with("/", &[("x-test-update", r#"{"user":"ada"}"#)])
        .await;
    h.redis.as_mut().unwrap().kill();

    let reply = browser.get("/").await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.headers["retry-after"], "7");
    assert!(reply.body.len() < 200);

    let anonymous = h.browser();
    assert_eq!(
        anonymous.get("/").await.status,
        200,
        "no cookie, nothing stored: no store needed"
    );
    let storing = anonymous
        .get_with("/", &[("x-test-update", r#"{"a":1}"#)])
        .await;
    assert_eq!(storing.status, 503);
    assert!(storing.set_cookies().is_empty());

    // When Redis comes back, sessiongate recovers by itself, within 5 s.
    h.redis.as_mut().unwrap().restart();
    let restarted = Instant::now();
    loop {
        let reply = anonymous
            .get_with("/", &[("x-test-update", r#"{"back":true}"#)])
            .await;
        if reply.status == 200 {
            break;
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(5),
            "still {} after 5s",
            reply.status
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("recovered {:?} after Redis came back", restarted.elapsed());
    assert_eq!(anonymous.get("/").await.session(), json!({"back": true}));
    // The old session lived in the Redis that was killed: it is a new visitor now.
    assert_eq!(
        browser
            .get("/")
            .await
            .seen_one("x-session-status")
            .as_deref(),
        Some("new")
    );
}

#[tokio::test]
async fn store_down_under_fail_open_forwards_as_unavailable_and_drops_updates() {
    let mut setup = Setup::new(StoreKind::Redis);
    setup.store_extra = "on_error = \"fail_open\"\ntimeout = \"300ms\"\n".into();
    let mut h = setup.start().await;
    let browser = h.browser();
    browser
        .get_with("/", &[("x-test-update", r#"{"user":"ada"}"#)])
        .await;
    let sid = browser.sid().unwrap();
    h.redis.as_mut().unwrap().kill();

    let reply = browser
        .get_with("/", &[("x-test-update", r#"{"lost":1}"#)])
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.seen_one("x-session-status").as_deref(),
        Some("unavailable")
    );
    assert_eq!(
        reply.seen_one("x-session-id").as_deref(),
        Some(sid.as_str())
    );
    assert_eq!(reply.session(), json!({}));
    assert!(reply.set_cookies().is_empty());
    let anonymous = h
        .browser()
        .get_with("/", &[("x-test-update", r#"{"a":1}"#)])
        .await;
    assert_eq!(anonymous.status, 200);
    assert!(
        anonymous.set_cookies().is_empty(),
        "no session could be stored"
    );
}

async fn logged_in_with_redis(store: &str) -> (Harness, Browser) {
    let mut setup = Setup::new(StoreKind::Redis);
    setup.store_extra = format!("timeout = \"300ms\"\n{store}");
    let h = setup.start().await;
    let browser = h.browser();
    browser
        .get_with("/", &[("x-test-update", r#"{"user":"ada"}"#)])
        .await;
    (h, browser)
}

#[tokio::test]
async fn a_hung_redis_does_not_hang_requests_under_fail_closed() {
    let (h, browser) = logged_in_with_redis("").await;
    signal(h.redis().pid(), "STOP");
    let started = Instant::now();
    let reply = browser.get("/").await;
    let took = started.elapsed();
    let anonymous = h.browser().get("/").await;
    signal(h.redis().pid(), "CONT");
    assert_eq!(reply.status, 503);
    assert!(reply.headers.contains_key("retry-after"));
    assert!(
        took < Duration::from_millis(1000),
        "answered after {took:?} with a 300ms store deadline"
    );
    assert_eq!(
        anonymous.status, 200,
        "a request that needs no store is not held up"
    );
    assert_eq!(browser.get("/").await.session(), json!({"user": "ada"}));
}

#[tokio::test]
async fn a_hung_redis_does_not_hang_requests_under_fail_open() {
    let (h, browser) = logged_in_with_redis("on_error = \"fail_open\"\n").await;
    signal(h.redis().pid(), "STOP");
    let started = Instant::now();
    let reply = browser
        .get_with("/", &[("x-test-update", r#"{"dropped":1}"#)])
        .await;
    let took = started.elapsed();
    signal(h.redis().pid(), "CONT");
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.seen_one("x-session-status").as_deref(),
        Some("unavailable")
    );
    assert!(took < Duration::from_millis(1000), "{took:?}");
    let session = browser.get("/").await.session();
    assert_eq!(
        session,
        json!({"user": "ada"}),
        "the update was dropped, the session kept"
    );
}

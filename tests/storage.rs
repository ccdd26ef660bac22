//! What a session is and costs in Redis (SPEC §5-§6): one round trip to read
//! a session, one more to store an update, none for a visitor who stores
//! nothing (read from `INFO commandstats` of a private redis-server); one
//! hash of JSON fields per session; a TTL on every key, never past the
//! absolute deadline, which a rotation does not move.

mod common;

use std::time::Duration;

use common::{Browser, Harness, Redis, Setup, StoreKind};
use serde_json::json;

async fn harness() -> Harness {
    Harness::start(StoreKind::Redis).await
}

/// A browser with a session, and the connection and scripts warmed up, so
/// that later counts hold only what a request costs.
async fn warmed_up(h: &Harness) -> Browser {
    let browser = h.browser();
    browser
        .get_with("/", &[("x-test-update", r#"{"user":"ada"}"#)])
        .await;
    browser
        .get_with("/", &[("x-test-update", r#"{"n":1}"#)])
        .await;
    browser.get("/").await;
    browser
}

#[tokio::test]
async fn visitor_without_session_and_without_update_costs_no_redis_command() {
    let h = harness().await;
    warmed_up(&h).await;
    let before = h.redis().command_stats();
    for _ in 0..5 {
        h.browser().get("/").await;
    }
    let commands = Redis::commands_between(&before, &h.redis().command_stats());
    assert!(commands.is_empty(), "{commands:?}");
}

#[tokio::test]
async fn reading_a_session_is_one_round_trip() {
    let h = harness().await;
    let browser = warmed_up(&h).await;
    let before = h.redis().command_stats();
    let reply = browser.get("/").await;
    assert_eq!(
        reply.seen_one("x-session-status").as_deref(),
        Some("active")
    );
    let commands = Redis::commands_between(&before, &h.redis().command_stats());
    assert_eq!(commands.get("evalsha"), Some(&1), "{commands:?}");
    assert_eq!(Redis::round_trips(&commands), 1, "{commands:?}");
}

#[tokio::test]
async fn reading_and_updating_a_session_is_two_round_trips() {
    let h = harness().await;
    let browser = warmed_up(&h).await;
    let before = h.redis().command_stats();
    browser
        .get_with(
            "/",
            &[
                ("x-test-update", r#"{"n":2}"#),
                ("x-test-update", r#"{"m":3}"#),
            ],
        )
        .await;
    let commands = Redis::commands_between(&before, &h.redis().command_stats());
    assert_eq!(commands.get("evalsha"), Some(&2), "{commands:?}");
    assert_eq!(Redis::round_trips(&commands), 2, "{commands:?}");
}

#[tokio::test]
async fn session_is_one_hash_of_json_fields_with_its_creation_time() {
    let h = harness().await;
    let browser = h.browser();
    let before_ms = now_ms();
    browser
        .get_with(
            "/",
            &[(
                "x-test-update",
                r#"{"user":"Zoë","cart":[1,{"q":2}],"n":null,"ok":true}"#,
            )],
        )
        .await;
    let keys = h.redis().keys();
    assert_eq!(keys, [format!("sg:{}", browser.sid().unwrap())]);
    let hash = h.redis().hash(&keys[0]);
    assert_eq!(hash["user"], r#""Zo\u00eb""#);
    assert_eq!(hash["cart"], r#"[1,{"q":2}]"#);
    assert_eq!(hash["ok"], "true");
    assert!(!hash.contains_key("n"), "null deletes, even on creation");
    let created: u64 = hash["__created"].parse().unwrap();
    assert!(
        created >= before_ms - 1000 && created <= now_ms() + 1000,
        "{created}"
    );
    assert_eq!(hash.len(), 4);
    // Backends never see the metadata.
    assert_eq!(
        browser.get("/").await.session(),
        json!({"user": "Zoë", "cart": [1, {"q": 2}], "ok": true})
    );
}

#[tokio::test]
async fn every_key_has_a_ttl_after_a_run() {
    let h = harness().await;
    for i in 0..10 {
        let browser = h.browser();
        browser
            .get_with("/", &[("x-test-update", &json!({ "i": i }).to_string())])
            .await;
        browser
            .get_with("/", &[("x-test-update", r#"{"more":1}"#)])
            .await;
        if i % 3 == 0 {
            browser.get_with("/", &[("x-test-action", "rotate")]).await;
        }
        if i % 4 == 0 {
            browser
                .get_with("/", &[("x-test-update", r#"{"i":null}"#)])
                .await;
        }
        if i == 5 {
            browser.get_with("/", &[("x-test-action", "destroy")]).await;
        }
    }
    assert_eq!(h.redis().keys().len(), 9);
    h.assert_every_key_has_a_ttl();
}

#[tokio::test]
async fn ttl_is_the_idle_timeout_but_never_past_the_absolute_deadline() {
    let mut setup = Setup::new(StoreKind::Redis);
    setup.session = "idle_timeout = \"30m\"\nabsolute_timeout = \"10s\"\n".into();
    let h = setup.start().await;
    let browser = h.browser();
    browser
        .get_with("/", &[("x-test-update", r#"{"a":1}"#)])
        .await;
    let key = format!("sg:{}", browser.sid().unwrap());
    let ttl = h.redis().pttl(&key);
    assert!(ttl > 8_000 && ttl <= 10_000, "{ttl}");
    browser.get("/").await;
    assert!(h.redis().pttl(&key) <= 10_000);

    let mut setup = Setup::new(StoreKind::Redis);
    setup.session = "idle_timeout = \"5s\"\n".into();
    let h = setup.start().await;
    let browser = h.browser();
    browser
        .get_with("/", &[("x-test-update", r#"{"a":1}"#)])
        .await;
    let key = format!("sg:{}", browser.sid().unwrap());
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let before = h.redis().pttl(&key);
    browser.get("/").await;
    let after = h.redis().pttl(&key);
    assert!(
        before < 4_000 && after > 4_500,
        "reading pushes the expiry: {before} -> {after}"
    );
}

#[tokio::test]
async fn rotate_keeps_the_creation_time_and_removes_the_old_key() {
    let h = harness().await;
    let browser = h.browser();
    browser
        .get_with("/", &[("x-test-update", r#"{"a":1}"#)])
        .await;
    let old_key = format!("sg:{}", browser.sid().unwrap());
    let created = h.redis().hash(&old_key)["__created"].clone();
    browser.get_with("/", &[("x-test-action", "rotate")]).await;
    let new_key = format!("sg:{}", browser.sid().unwrap());
    assert_ne!(new_key, old_key);
    assert_eq!(h.redis().keys(), std::slice::from_ref(&new_key));
    assert_eq!(
        h.redis().hash(&new_key)["__created"],
        created,
        "the absolute deadline does not move"
    );
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

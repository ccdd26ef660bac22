//! A session's life (SPEC §4-§5), each behaviour run against the Redis store
//! and the memory store: created lazily under the sid offered to the
//! backend, updated by merging, rotated, destroyed, expired; never adopted
//! from a sid a client presents (no fixation), and never brought back or
//! partly changed by concurrent or invalid updates.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Browser, Harness, Setup, StoreKind};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

behaviours!(
    visitor_without_cookie_is_new_and_gets_no_cookie,
    storing_something_creates_the_session_under_the_offered_sid,
    next_request_sees_the_update_on_the_other_backend,
    updates_merge_at_top_level_in_order_and_null_deletes,
    deleting_every_key_keeps_the_session,
    an_invalid_update_applies_nothing_and_the_response_still_arrives,
    unknown_action_applies_nothing,
    update_beyond_max_bytes_applies_nothing,
    rotate_gives_a_fresh_sid_keeps_the_data_and_kills_the_old_sid,
    rotate_of_a_new_visitor_never_uses_the_offered_sid,
    requests_racing_a_rotation_never_see_the_rotated_data_under_the_old_sid,
    destroy_ends_the_session_for_good_and_expires_the_cookie,
    fifty_concurrent_updates_of_different_keys_all_survive,
    destroy_racing_slow_updates_is_never_undone,
    an_idle_session_expires_and_its_sid_is_never_adopted,
    use_pushes_the_idle_expiry_forward,
    absolute_timeout_ends_a_session_in_use,
);

/// A browser with a session holding `{"user": "ada"}`.
async fn logged_in(browser: &Browser) {
    let reply = browser
        .get_with("/", &[("x-test-update", r#"{"user":"ada"}"#)])
        .await;
    assert_eq!(reply.status, 200);
    assert!(browser.cookie().is_some(), "no session cookie was set");
}

async fn visitor_without_cookie_is_new_and_gets_no_cookie(setup: Setup) {
    let h = setup.start().await;
    let browser = h.browser();
    let reply = browser.get("/").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.seen_one("x-session-status").as_deref(), Some("new"));
    assert_eq!(reply.seen_one("x-session").as_deref(), Some("{}"));
    assert_eq!(reply.seen_one("x-session-id").unwrap().len(), 43);
    assert!(
        reply.set_cookies().is_empty(),
        "lazy creation: no cookie for nothing stored"
    );
    if let Some(redis) = &h.redis {
        assert!(redis.keys().is_empty(), "lazy creation: nothing written");
    }
}

async fn storing_something_creates_the_session_under_the_offered_sid(setup: Setup) {
    let h = setup.start().await;
    let browser = h.browser();
    let reply = browser
        .get_with("/", &[("x-test-update", r#"{"cart":[1]}"#)])
        .await;
    let offered = reply.seen_one("x-session-id").unwrap();
    assert_eq!(browser.sid().as_deref(), Some(offered.as_str()));
    let reply = browser.get("/").await;
    assert_eq!(
        reply.seen_one("x-session-status").as_deref(),
        Some("active")
    );
    assert_eq!(reply.seen_one("x-session-id"), Some(offered));
    assert_eq!(reply.session(), json!({"cart": [1]}));
    assert!(
        reply.set_cookies().is_empty(),
        "an active session is not re-sent"
    );
}

async fn next_request_sees_the_update_on_the_other_backend(setup: Setup) {
    let h = setup.start().await;
    let browser = h.browser();
    let mut previous = String::new();
    for n in 1..=6 {
        let update = json!({ "n": n }).to_string();
        let reply = browser.get_with("/", &[("x-test-update", &update)]).await;
        let backend = reply.backend();
        assert_ne!(backend, previous, "round-robin alternates backends");
        if n > 1 {
            // The update of the previous response, stored by the other backend.
            assert_eq!(reply.session(), json!({ "n": n - 1 }));
        }
        previous = backend;
    }
}

/// Read your writes across instances: a second sessiongate on the same
/// Redis serves the same session and sees its updates.
#[tokio::test]
async fn a_second_instance_sharing_redis_serves_the_same_session() {
    let h = Harness::start(StoreKind::Redis).await;
    let browser = h.browser();
    logged_in(&browser).await;
    let other = h.another_proxy(&h.setup).await;
    let elsewhere = Browser::new(other.addr);
    elsewhere.set_cookie(browser.cookie());
    let reply = elsewhere
        .get_with("/", &[("x-test-update", r#"{"via":"second"}"#)])
        .await;
    assert_eq!(reply.session(), json!({"user": "ada"}));
    assert_eq!(
        browser.get("/").await.session(),
        json!({"user": "ada", "via": "second"})
    );
}

async fn updates_merge_at_top_level_in_order_and_null_deletes(setup: Setup) {
    let h = setup.start().await;
    let browser = h.browser();
    browser
        .get_with(
            "/",
            &[(
                "x-test-update",
                r#"{"cart":{"a":1,"b":2},"keep":true,"drop":1}"#,
            )],
        )
        .await;
    browser
        .get_with(
            "/",
            &[
                ("x-test-update", r#"{"cart":{"c":3},"n":1}"#),
                ("x-test-update", r#"{"n":2,"drop":null}"#),
            ],
        )
        .await;
    let reply = browser.get("/").await;
    assert_eq!(
        reply.session(),
        json!({"cart": {"c": 3}, "keep": true, "n": 2})
    );
}

async fn deleting_every_key_keeps_the_session(setup: Setup) {
    let h = setup.start().await;
    let browser = h.browser();
    logged_in(&browser).await;
    browser
        .get_with("/", &[("x-test-update", r#"{"user":null}"#)])
        .await;
    let reply = browser.get("/").await;
    assert_eq!(
        reply.seen_one("x-session-status").as_deref(),
        Some("active")
    );
    assert_eq!(reply.session(), json!({}));
}

/// An update that is not a JSON object, is not UTF-8 or names a reserved
/// `__` key: none of the response's updates is applied, and the response
/// still reaches the client.
async fn an_invalid_update_applies_nothing_and_the_response_still_arrives(setup: Setup) {
    let h = setup.start().await;
    let browser = h.browser();
    logged_in(&browser).await;
    for bad in [
        "[1,2]",
        "not json",
        "\"text\"",
        "{\"unterminated\":",
        r#"{"ok":1,"__created":0}"#,
    ] {
        let reply = browser
            .get_with(
                "/",
                &[("x-test-update", r#"{"good":1}"#), ("x-test-update", bad)],
            )
            .await;
        assert_eq!(reply.status, 200, "{bad}");
        assert!(!reply.backend().is_empty());
    }
    let reply = browser
        .get_with("/", &[("x-test-update", r#"{"ok":1,"__created":0}"#)])
        .await;
    assert_eq!(reply.status, 200);

    // A backend that writes Latin-1 (obs-text) into an update: the test
    // backend echoes the request's x-test-update, sent here as raw bytes.
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

    let reply = browser.get("/").await;
    assert_eq!(
        reply.session(),
        json!({"user": "ada"}),
        "nothing partial was applied"
    );
}

async fn unknown_action_applies_nothing(setup: Setup) {
    let h = setup.start().await;
    let browser = h.browser();
    logged_in(&browser).await;
    let sid = browser.sid();
    let reply = browser
        .get_with(
            "/",
            &[
                ("x-test-update", r#"{"n":1}"#),
                ("x-test-action", "explode"),
            ],
        )
        .await;
    assert_eq!(reply.status, 200);
    assert!(reply.set_cookies().is_empty());
    assert_eq!(browser.sid(), sid);
    assert_eq!(browser.get("/").await.session(), json!({"user": "ada"}));
}

async fn update_beyond_max_bytes_applies_nothing(mut setup: Setup) {
    setup.session = "max_bytes = 64\n".into();
    let h = setup.start().await;
    let browser = h.browser();
    logged_in(&browser).await; // {"user":"ada"} is 14 bytes
    let fits = json!({ "pad": "x".repeat(64 - 14 - 9) }).to_string(); // ,"pad":"…" is 9 + n
    browser.get_with("/", &[("x-test-update", &fits)]).await;
    let session = browser.get("/").await.seen_one("x-session").unwrap();
    assert_eq!(session.len(), 64, "exactly max_bytes is allowed: {session}");
    let one_more = json!({ "z": 1 }).to_string();
    let reply = browser.get_with("/", &[("x-test-update", &one_more)]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        browser.get("/").await.seen_one("x-session").unwrap(),
        session
    );
    // A new visitor's too-large first update creates no session at all.
    let fresh = h.browser();
    let big = json!({ "pad": "x".repeat(100) }).to_string();
    let reply = fresh.get_with("/", &[("x-test-update", &big)]).await;
    assert!(reply.set_cookies().is_empty());
}

/// Login: the session moves to a fresh sid with its data and the old sid
/// names nothing, so a cookie an attacker planted before the login gives
/// them nothing after it.
async fn rotate_gives_a_fresh_sid_keeps_the_data_and_kills_the_old_sid(setup: Setup) {
    let h = setup.start().await;
    // The attacker gets a genuine session cookie of their own...
    let attacker = h.browser();
    attacker
        .get_with("/", &[("x-test-update", r#"{"visits":1}"#)])
        .await;
    let planted = attacker.cookie().unwrap();
    // ...and plants it in the victim's browser, who then logs in.
    let victim = h.browser();
    victim.set_cookie(Some(planted.clone()));
    let reply = victim
        .get_with(
            "/login",
            &[
                ("x-test-update", r#"{"uid":42}"#),
                ("x-test-action", "rotate"),
            ],
        )
        .await;
    assert_eq!(reply.set_cookies().len(), 1);
    assert_ne!(
        victim.cookie().unwrap(),
        planted,
        "login gave the victim a fresh sid"
    );
    assert_eq!(
        victim.get("/").await.session(),
        json!({"visits": 1, "uid": 42})
    );
    // The attacker's cookie now names no session at all.
    let reply = attacker.get("/").await;
    assert_eq!(reply.seen_one("x-session-status").as_deref(), Some("new"));
    assert_eq!(reply.session(), json!({}));
}

async fn rotate_of_a_new_visitor_never_uses_the_offered_sid(setup: Setup) {
    let h = setup.start().await;
    let browser = h.browser();
    let reply = browser
        .get_with(
            "/login",
            &[
                ("x-test-update", r#"{"uid":7}"#),
                ("x-test-action", "rotate"),
            ],
        )
        .await;
    let offered = reply.seen_one("x-session-id").unwrap();
    let sid = browser.sid().expect("the login stored a session");
    assert_ne!(sid, offered);
    assert_eq!(browser.get("/").await.session(), json!({"uid": 7}));
}

async fn requests_racing_a_rotation_never_see_the_rotated_data_under_the_old_sid(setup: Setup) {
    let h = setup.start().await;
    let browser = h.browser();
    logged_in(&browser).await;
    let old = browser.cookie().unwrap();
    let rotated = Arc::new(AtomicBool::new(false));
    let mut racers = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let (racer, rotated) = (h.browser(), rotated.clone());
        racer.set_cookie(Some(old.clone()));
        racers.spawn(async move {
            for _ in 0..40 {
                let started_after_rotation = rotated.load(Ordering::SeqCst);
                let reply = racer.get("/").await;
                let session = reply.session();
                assert_ne!(
                    session["uid"], 7,
                    "the old sid served data stored after the rotation"
                );
                if started_after_rotation {
                    assert_eq!(reply.seen_one("x-session-status").as_deref(), Some("new"));
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    browser
        .get_with(
            "/login",
            &[
                ("x-test-update", r#"{"uid":7}"#),
                ("x-test-action", "rotate"),
            ],
        )
        .await;
    rotated.store(true, Ordering::SeqCst);
    while let Some(result) = racers.join_next().await {
        result.unwrap();
    }
    assert_eq!(
        browser.get("/").await.session(),
        json!({"user": "ada", "uid": 7})
    );
}

async fn destroy_ends_the_session_for_good_and_expires_the_cookie(setup: Setup) {
    let h = setup.start().await;
    let browser = h.browser();
    logged_in(&browser).await;
    let cookie = browser.cookie().unwrap();
    let old_sid = browser.sid().unwrap();
    let reply = browser
        .get_with("/logout", &[("x-test-action", "destroy")])
        .await;
    let set = reply.set_cookies();
    assert_eq!(set.len(), 1);
    let expired = cookie::Cookie::parse(set[0].clone()).unwrap();
    assert_eq!(expired.value(), "");
    assert_eq!(expired.max_age(), Some(cookie::time::Duration::ZERO));
    assert_eq!(browser.cookie(), None);
    if let Some(redis) = &h.redis {
        assert!(redis.keys().is_empty());
    }
    // The old cookie, still correctly signed, comes back and stores data:
    // a new session under a fresh sid, never the old one.
    let replay = h.browser();
    replay.set_cookie(Some(cookie));
    let reply = replay
        .get_with("/", &[("x-test-update", r#"{"again":true}"#)])
        .await;
    assert_eq!(reply.seen_one("x-session-status").as_deref(), Some("new"));
    assert_ne!(reply.seen_one("x-session-id").unwrap(), old_sid);
    let new_sid = replay.sid().expect("a new session was created");
    assert_ne!(new_sid, old_sid, "the presented sid was not adopted");
}

async fn fifty_concurrent_updates_of_different_keys_all_survive(setup: Setup) {
    let h = setup.start().await;
    let browser = h.browser();
    logged_in(&browser).await;
    let mut requests = tokio::task::JoinSet::new();
    for i in 0..50 {
        let browser = browser.clone();
        requests.spawn(async move {
            let update = json!({ format!("k{i}"): i }).to_string();
            browser
                .get_with("/", &[("x-test-update", &update)])
                .await
                .status
        });
    }
    while let Some(status) = requests.join_next().await {
        assert_eq!(status.unwrap(), 200);
    }
    let session = browser.get("/").await.session();
    for i in 0..50 {
        assert_eq!(session[format!("k{i}")], i, "k{i} was lost");
    }
    assert_eq!(session["user"], "ada");
    h.assert_every_key_has_a_ttl();
}

async fn destroy_racing_slow_updates_is_never_undone(setup: Setup) {
    let h = setup.start().await;
    let browser = h.browser();
    logged_in(&browser).await;
    let cookie = browser.cookie().unwrap();
    let mut slow = tokio::task::JoinSet::new();
    for i in 0..10 {
        // Each loads the session now and stores its update after the destroy.
        let browser = browser.clone();
        slow.spawn(async move {
            let update = json!({ format!("late{i}"): i }).to_string();
            browser
                .get_with(
                    "/",
                    &[("x-test-update", &update), ("x-test-delay-ms", "400")],
                )
                .await
                .status
        });
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    let logout = h.browser();
    logout.set_cookie(Some(cookie.clone()));
    logout
        .get_with("/logout", &[("x-test-action", "destroy")])
        .await;
    while let Some(status) = slow.join_next().await {
        assert_eq!(status.unwrap(), 200);
    }
    let replay = h.browser();
    replay.set_cookie(Some(cookie));
    let reply = replay.get("/").await;
    assert_eq!(reply.seen_one("x-session-status").as_deref(), Some("new"));
    assert_eq!(reply.session(), json!({}));
    if let Some(redis) = &h.redis {
        assert!(
            redis.keys().is_empty(),
            "a late update brought the session back: {:?}",
            redis.keys()
        );
    }
}

/// An unused session ends at `idle_timeout`; its sid, still correctly
/// signed, is treated as new and a new session gets a fresh sid.
async fn an_idle_session_expires_and_its_sid_is_never_adopted(mut setup: Setup) {
    setup.session = "idle_timeout = \"1s\"\n".into();
    let h = setup.start().await;
    let browser = h.browser();
    logged_in(&browser).await;
    let old_sid = browser.sid().unwrap();
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let reply = browser
        .get_with("/", &[("x-test-update", r#"{"again":1}"#)])
        .await;
    assert_eq!(reply.seen_one("x-session-status").as_deref(), Some("new"));
    assert_eq!(reply.session(), json!({}));
    assert_ne!(reply.seen_one("x-session-id").unwrap(), old_sid);
    assert_ne!(
        browser.sid().unwrap(),
        old_sid,
        "the new session got a fresh sid"
    );
}

async fn use_pushes_the_idle_expiry_forward(mut setup: Setup) {
    setup.session = "idle_timeout = \"1s\"\n".into();
    let h = setup.start().await;
    let browser = h.browser();
    logged_in(&browser).await;
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let reply = browser.get("/").await;
        assert_eq!(
            reply.seen_one("x-session-status").as_deref(),
            Some("active")
        );
    }
}

async fn absolute_timeout_ends_a_session_in_use(mut setup: Setup) {
    setup.session = "idle_timeout = \"1s\"\nabsolute_timeout = \"2s\"\n".into();
    let h = setup.start().await;
    let browser = h.browser();
    logged_in(&browser).await;
    let started = std::time::Instant::now();
    let mut statuses = Vec::new();
    while started.elapsed() < Duration::from_millis(2600) {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let status = browser.get("/").await.seen_one("x-session-status").unwrap();
        statuses.push((started.elapsed().as_millis(), status));
    }
    let late: Vec<_> = statuses.iter().filter(|(ms, _)| *ms > 2200).collect();
    assert!(
        !late.is_empty() && late.iter().all(|(_, s)| s == "new"),
        "{statuses:?}"
    );
    assert!(
        statuses.iter().any(|(ms, s)| *ms < 1700 && s == "active"),
        "{statuses:?}"
    );
}

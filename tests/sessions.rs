//! SPEC §3-§5 behaviours, each run against the Redis store and the memory
//! store: sessiongate on a real socket, in front of two real backends.

mod common;

use std::time::Duration;

use common::{Browser, Setup};
use serde_json::json;

behaviours!(
    visitor_without_cookie_is_new_and_gets_no_cookie,
    storing_something_creates_the_session_under_the_offered_sid,
    next_request_sees_the_update_on_the_other_backend,
    forged_cookie_is_a_new_visitor,
    session_cookie_never_reaches_the_backend_but_other_cookies_do,
    set_cookie_carries_the_configured_attributes,
    client_sent_session_headers_never_reach_the_backend,
    backend_session_headers_never_reach_the_client,
    non_ascii_values_arrive_as_ascii_json_that_decodes_to_the_same_text,
    updates_merge_at_top_level_in_order_and_null_deletes,
    bad_update_applies_nothing_and_the_response_still_arrives,
    reserved_key_update_applies_nothing,
    unknown_action_applies_nothing,
    update_beyond_max_bytes_applies_nothing,
    rotate_gives_a_new_sid_keeps_the_data_and_kills_the_old_sid,
    rotate_of_a_new_visitor_never_uses_the_offered_sid,
    destroy_ends_the_session_and_expires_the_cookie,
    fifty_concurrent_updates_of_different_keys_all_survive,
    destroy_racing_slow_updates_is_never_undone,
    idle_timeout_ends_an_unused_session,
    use_pushes_the_idle_expiry_forward,
    absolute_timeout_ends_a_session_in_use,
    expired_sid_with_a_valid_tag_is_never_adopted,
    deleting_every_key_keeps_the_session,
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

async fn forged_cookie_is_a_new_visitor(setup: Setup) {
    let h = setup.start().await;
    let browser = h.browser();
    logged_in(&browser).await;
    let good = browser.cookie().unwrap();
    let (sid, tag) = good.split_once('.').unwrap();
    let flip = |s: &str| format!("{}{}", if s.starts_with('A') { 'B' } else { 'A' }, &s[1..]);
    for forged in [
        format!("{sid}.{}", flip(tag)),
        format!("{}.{tag}", flip(sid)),
        sid.to_string(),
        "garbage".to_string(),
        String::new(),
    ] {
        browser.set_cookie(Some(forged.clone()));
        let reply = browser.get("/").await;
        assert_eq!(
            reply.seen_one("x-session-status").as_deref(),
            Some("new"),
            "{forged:?}"
        );
        assert_eq!(reply.seen_one("x-session").as_deref(), Some("{}"));
        assert_ne!(reply.seen_one("x-session-id").as_deref(), Some(sid));
    }
}

async fn session_cookie_never_reaches_the_backend_but_other_cookies_do(setup: Setup) {
    let h = setup.start().await;
    let browser = h.browser();
    logged_in(&browser).await;
    let cookie = format!(
        "theme=dark; sg_session={}; lang=en",
        browser.cookie().unwrap()
    );
    let plain = Browser::new(h.proxy.addr);
    let reply = plain.get_with("/", &[("cookie", &cookie)]).await;
    assert_eq!(
        reply.seen_one("x-session-status").as_deref(),
        Some("active")
    );
    assert_eq!(reply.seen_header("cookie"), ["theme=dark; lang=en"]);
    let only = format!("sg_session={}", browser.cookie().unwrap());
    let reply = plain.get_with("/", &[("cookie", &only)]).await;
    assert!(reply.seen_header("cookie").is_empty());
}

async fn set_cookie_carries_the_configured_attributes(mut setup: Setup) {
    setup.cookie = "same_site = \"strict\"\npath = \"/app\"\ndomain = \"example.test\"\n".into();
    let h = setup.start().await;
    let browser = h.browser();
    let reply = browser
        .get_with("/app", &[("x-test-update", r#"{"a":1}"#)])
        .await;
    let set = reply.set_cookies();
    assert_eq!(set.len(), 1);
    let cookie = cookie::Cookie::parse(set[0].clone()).unwrap();
    assert_eq!(cookie.name(), "sg_session");
    assert_eq!(cookie.path(), Some("/app"));
    assert_eq!(cookie.domain(), Some("example.test"));
    assert_eq!(cookie.secure(), Some(true));
    assert_eq!(cookie.http_only(), Some(true));
    assert_eq!(cookie.same_site(), Some(cookie::SameSite::Strict));
}

async fn client_sent_session_headers_never_reach_the_backend(setup: Setup) {
    let h = setup.start().await;
    let browser = h.browser();
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
    let reply = browser.get_with("/", &forged).await;
    assert_eq!(reply.session(), json!({}));
    assert_eq!(reply.seen_one("x-session-status").as_deref(), Some("new"));
    assert_ne!(reply.seen_one("x-session-id").as_deref(), Some(forged[1].1));
    assert!(reply.seen_header("x-session-update").is_empty());
    assert!(reply.seen_header("x-session-anything").is_empty());
    assert!(
        reply.set_cookies().is_empty(),
        "a client's own update header stores nothing"
    );
}

async fn backend_session_headers_never_reach_the_client(setup: Setup) {
    let h = setup.start().await;
    let browser = h.browser();
    let reply = browser
        .get_with(
            "/",
            &[
                ("x-test-update", r#"{"a":1}"#),
                ("x-test-reply-header", "X-Session-Debug: secret"),
                ("x-test-reply-header", "x-session: {}"),
            ],
        )
        .await;
    for name in reply.headers.keys() {
        assert!(
            !name.as_str().starts_with("x-session"),
            "{name} reached the client"
        );
    }
}

async fn non_ascii_values_arrive_as_ascii_json_that_decodes_to_the_same_text(setup: Setup) {
    let h = setup.start().await;
    let browser = h.browser();
    let text = "Zoë 日本語 🎉 \u{7f} \"quoted\" back\\slash\ttab";
    // The backend sends UTF-8 as is; DEL, never valid in a header, JSON-escaped.
    let update = json!({ "name": text, "ключ": "значение" })
        .to_string()
        .replace('\u{7f}', "\\u007f");
    browser.get_with("/", &[("x-test-update", &update)]).await;
    let reply = browser.get("/").await;
    let raw = reply.seen_one("x-session").unwrap();
    assert!(
        raw.bytes().all(|b| (0x20..0x7f).contains(&b)),
        "not printable ASCII: {raw}"
    );
    let session = reply.session();
    assert_eq!(session["name"], text);
    assert_eq!(session["ключ"], "значение");
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

async fn bad_update_applies_nothing_and_the_response_still_arrives(setup: Setup) {
    let h = setup.start().await;
    let browser = h.browser();
    logged_in(&browser).await;
    for bad in ["[1,2]", "not json", "\"text\"", "{\"unterminated\":"] {
        let reply = browser
            .get_with(
                "/",
                &[("x-test-update", r#"{"good":1}"#), ("x-test-update", bad)],
            )
            .await;
        assert_eq!(reply.status, 200, "{bad}");
        assert!(!reply.backend().is_empty());
    }
    let reply = browser.get("/").await;
    assert_eq!(
        reply.session(),
        json!({"user": "ada"}),
        "nothing partial was applied"
    );
}

async fn reserved_key_update_applies_nothing(setup: Setup) {
    let h = setup.start().await;
    let browser = h.browser();
    logged_in(&browser).await;
    let reply = browser
        .get_with("/", &[("x-test-update", r#"{"ok":1,"__created":0}"#)])
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(browser.get("/").await.session(), json!({"user": "ada"}));
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

async fn rotate_gives_a_new_sid_keeps_the_data_and_kills_the_old_sid(setup: Setup) {
    let h = setup.start().await;
    let browser = h.browser();
    logged_in(&browser).await;
    let old_cookie = browser.cookie().unwrap();
    let reply = browser
        .get_with(
            "/login",
            &[
                ("x-test-update", r#"{"uid":7}"#),
                ("x-test-action", "rotate"),
            ],
        )
        .await;
    assert_eq!(reply.set_cookies().len(), 1);
    let new_cookie = browser.cookie().unwrap();
    assert_ne!(new_cookie, old_cookie);
    let reply = browser.get("/").await;
    assert_eq!(reply.session(), json!({"user": "ada", "uid": 7}));
    let thief = h.browser();
    thief.set_cookie(Some(old_cookie));
    let reply = thief.get("/").await;
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

async fn destroy_ends_the_session_and_expires_the_cookie(setup: Setup) {
    let h = setup.start().await;
    let browser = h.browser();
    logged_in(&browser).await;
    let cookie = browser.cookie().unwrap();
    let reply = browser
        .get_with("/logout", &[("x-test-action", "destroy")])
        .await;
    let set = reply.set_cookies();
    assert_eq!(set.len(), 1);
    let expired = cookie::Cookie::parse(set[0].clone()).unwrap();
    assert_eq!(expired.value(), "");
    assert_eq!(expired.max_age(), Some(cookie::time::Duration::ZERO));
    assert_eq!(browser.cookie(), None);
    let replay = h.browser();
    replay.set_cookie(Some(cookie));
    assert_eq!(
        replay
            .get("/")
            .await
            .seen_one("x-session-status")
            .as_deref(),
        Some("new")
    );
    if let Some(redis) = &h.redis {
        assert!(redis.keys().is_empty());
    }
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

async fn idle_timeout_ends_an_unused_session(mut setup: Setup) {
    setup.session = "idle_timeout = \"1s\"\n".into();
    let h = setup.start().await;
    let browser = h.browser();
    logged_in(&browser).await;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let reply = browser.get("/").await;
    assert_eq!(reply.seen_one("x-session-status").as_deref(), Some("new"));
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

async fn expired_sid_with_a_valid_tag_is_never_adopted(mut setup: Setup) {
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
    assert_ne!(reply.seen_one("x-session-id").unwrap(), old_sid);
    assert_ne!(
        browser.sid().unwrap(),
        old_sid,
        "the new session got a fresh sid"
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

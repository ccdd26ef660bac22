//! SPEC §12, users and devices, on a real redis-server (and the memory
//! store where a proxy alone shows it): logins bind sessions, the index
//! lists and revokes them, `destroy-others`, `max_per_user`, the CLI,
//! expiry, forged headers, and the admin API's handler and token check.

mod common;
mod users_support;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Browser, Harness, Setup, StoreKind};
use http::StatusCode;
use users_support::{admin, cli, login, sessions_on};

/// The sids the admin API lists for a user, in its order.
async fn listed(sessions: &sessiongate::session::Sessions, user: &str) -> Vec<String> {
    let (status, body) = admin(sessions, "GET", &format!("/sessions?user={user}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user"], user);
    body["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["sid"].as_str().unwrap().to_string())
        .collect()
}

fn sids(browsers: &[&Browser]) -> BTreeSet<String> {
    browsers
        .iter()
        .map(|b| b.sid().expect("logged in"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_browsers_of_one_user_are_listed_then_revoked_together_while_another_user_lives_on() {
    let harness = Harness::start(StoreKind::Redis).await;
    let sessions = sessions_on(&harness.redis().url(), "");
    let devices: Vec<Browser> = (0..3).map(|_| harness.browser()).collect();
    for device in &devices {
        login(device, "ada").await;
    }
    let other = harness.browser();
    login(&other, "bob").await;
    // Every later request of a bound session tells the backend who it is.
    let seen = devices[0].get("/").await;
    assert_eq!(seen.seen_one("x-session-user").as_deref(), Some("ada"));
    assert_eq!(seen.seen_one("x-session-status").as_deref(), Some("active"));
    assert!(!seen.session().as_object().unwrap().contains_key("__user"));

    let ada = listed(&sessions, "ada").await;
    assert_eq!(ada.len(), 3);
    assert_eq!(
        ada.iter().cloned().collect::<BTreeSet<_>>(),
        sids(&[&devices[0], &devices[1], &devices[2]])
    );
    let (_, body) = admin(&sessions, "GET", "/sessions?user=ada").await;
    for session in body["sessions"].as_array().unwrap() {
        for key in ["created", "expires"] {
            let text = session[key].as_str().unwrap();
            assert!(humantime::parse_rfc3339(text).is_ok(), "{key}: {text}");
        }
    }
    harness.assert_every_key_has_a_ttl();

    let (status, body) = admin(&sessions, "DELETE", "/sessions?user=ada").await;
    assert_eq!(
        (status, &body),
        (StatusCode::OK, &serde_json::json!({"destroyed": 3}))
    );
    for device in &devices {
        let reply = device.get("/").await;
        assert_eq!(reply.seen_one("x-session-status").as_deref(), Some("new"));
        assert_eq!(reply.seen_one("x-session-user"), None);
    }
    assert!(listed(&sessions, "ada").await.is_empty());
    let bob = other.get("/").await;
    assert_eq!(bob.seen_one("x-session-status").as_deref(), Some("active"));
    assert_eq!(bob.seen_one("x-session-user").as_deref(), Some("bob"));
    assert_eq!(listed(&sessions, "bob").await, [other.sid().unwrap()]);
    harness.assert_every_key_has_a_ttl();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroy_others_leaves_exactly_one_and_destroy_all_none() {
    let harness = Harness::start(StoreKind::Redis).await;
    let sessions = sessions_on(&harness.redis().url(), "");
    let devices: Vec<Browser> = (0..3).map(|_| harness.browser()).collect();
    for device in &devices {
        login(device, "ada").await;
    }
    let before = devices[1].sid().unwrap();
    // After a password change: a fresh sid here, every other device out.
    let reply = devices[1]
        .get_with("/password", &[("x-test-action", "rotate, destroy-others")])
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let kept = devices[1].sid().unwrap();
    assert_ne!(kept, before);
    assert_eq!(listed(&sessions, "ada").await, [kept]);
    for gone in [&devices[0], &devices[2]] {
        let reply = gone.get("/").await;
        assert_eq!(reply.seen_one("x-session-status").as_deref(), Some("new"));
    }
    let reply = devices[1].get("/").await;
    assert_eq!(reply.seen_one("x-session-user").as_deref(), Some("ada"));

    login(&devices[0], "ada").await;
    devices[1]
        .get_with("/logout-everywhere", &[("x-test-action", "destroy-all")])
        .await;
    assert_eq!(
        devices[1].cookie(),
        None,
        "destroy-all expires this cookie too"
    );
    assert!(listed(&sessions, "ada").await.is_empty());
    harness.assert_every_key_has_a_ttl();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_per_user_2_keeps_the_two_newest() {
    let mut setup = Setup::new(StoreKind::Redis);
    setup.session = "max_per_user = 2".into();
    let harness = setup.start().await;
    let sessions = sessions_on(&harness.redis().url(), "");
    let devices: Vec<Browser> = (0..3).map(|_| harness.browser()).collect();
    for device in &devices {
        login(device, "ada").await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        listed(&sessions, "ada").await,
        [devices[1].sid().unwrap(), devices[2].sid().unwrap()],
        "oldest first, the oldest one gone"
    );
    let first = devices[0].get("/").await;
    assert_eq!(first.seen_one("x-session-status").as_deref(), Some("new"));
    harness.assert_every_key_has_a_ttl();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_lists_and_revokes_in_the_same_redis() {
    let harness = Harness::start(StoreKind::Redis).await;
    let devices: Vec<Browser> = (0..3).map(|_| harness.browser()).collect();
    for device in &devices {
        login(device, "ada").await;
    }
    let bob = harness.browser();
    login(&bob, "bob").await;
    let config = cli::config(&harness.redis().url());

    let (code, out) = cli::run(&config, &["list", "--user", "ada", "--json"]);
    assert_eq!(code, Some(0), "{out}");
    let listing: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let listed: BTreeSet<String> = listing["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["sid"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed, sids(&[&devices[0], &devices[1], &devices[2]]));
    let (code, table) = cli::run(&config, &["list", "--user", "ada"]);
    assert_eq!(code, Some(0), "{table}");
    assert!(
        table.contains("SID") && table.contains("3 session(s)"),
        "{table}"
    );
    for sid in &listed {
        assert!(table.contains(sid.as_str()), "{table}");
    }

    let one = devices[0].sid().unwrap();
    let (code, out) = cli::run(&config, &["revoke", "--sid", &one]);
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = cli::run(&config, &["revoke", "--sid", &one]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("no such session"), "{out}");

    let (code, out) = cli::run(&config, &["revoke", "--user", "ada", "--json"]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(out.trim(), r#"{"destroyed":2}"#);
    let (code, out) = cli::run(&config, &["list", "--user", "ada"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("no live sessions"), "{out}");
    for device in &devices {
        let reply = device.get("/").await;
        assert_eq!(reply.seen_one("x-session-status").as_deref(), Some("new"));
    }
    let reply = bob.get("/").await;
    assert_eq!(reply.seen_one("x-session-user").as_deref(), Some("bob"));

    let (code, out) = cli::run(&config, &["list", "--user", "not an id"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("visible ASCII"), "{out}");
    let (code, out) = cli::run(&config, &["revoke", "--sid", "short"]);
    assert_eq!(code, Some(1), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_sessions_leave_the_list_and_no_key_lacks_a_ttl() {
    let mut setup = Setup::new(StoreKind::Redis);
    setup.session = "idle_timeout = \"1s\"\nabsolute_timeout = \"3s\"".into();
    let harness = setup.start().await;
    let sessions = sessions_on(
        &harness.redis().url(),
        "idle_timeout = \"1s\"\nabsolute_timeout = \"3s\"",
    );
    let idle = harness.browser();
    let busy = harness.browser();
    login(&idle, "ada").await;
    login(&busy, "ada").await;
    assert_eq!(listed(&sessions, "ada").await.len(), 2);
    let index = "sg:user:ada";
    let ttl = harness.redis().pttl(index);
    assert!(
        ttl > 0 && ttl <= 3_000 + 60_000,
        "the index's TTL follows its longest entry: {ttl}"
    );
    harness.assert_every_key_has_a_ttl();

    // One is used every 400 ms, the other not: only the used one is listed.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        busy.get("/").await;
    }
    assert_eq!(listed(&sessions, "ada").await, [busy.sid().unwrap()]);
    harness.assert_every_key_has_a_ttl();

    // Past the absolute deadline: nothing is listed, and the index is gone.
    tokio::time::sleep(Duration::from_millis(1_800)).await;
    assert!(listed(&sessions, "ada").await.is_empty());
    assert!(
        !harness.redis().keys().iter().any(|k| k == index),
        "an empty index is no key"
    );
    harness.assert_every_key_has_a_ttl();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_user_id_is_a_rejected_update() {
    let harness = Harness::start(StoreKind::Redis).await;
    let browser = harness.browser();
    let long = format!("X-Session-User: {}", "x".repeat(257));
    for bad in ["X-Session-User: two words", long.as_str()] {
        let reply = browser
            .get_with(
                "/login",
                &[
                    ("x-test-update", r#"{"cart":1}"#),
                    ("x-test-action", "rotate"),
                    ("x-test-reply-header", bad),
                ],
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "the response still goes on");
        assert!(reply.set_cookies().is_empty(), "nothing applied: {bad}");
        assert!(!reply.headers.contains_key("x-session-user"), "stripped");
    }
    assert!(harness.redis().keys().is_empty());
}

/// A client forges the binding and an exposed header: neither reaches the
/// backend, before or after a real login.
async fn forged_user_and_exposed_headers_never_reach_the_backend(mut setup: Setup) {
    setup.session = "[session.expose]\n\"X-User\" = \"user\"\n\"X-Roles\" = \"roles\"".into();
    let harness = setup.start().await;
    let browser = harness.browser();
    let forged = [
        ("X-Session-User", "mallory"),
        ("X-User", "mallory"),
        ("x-roles", "[\"admin\"]"),
    ];
    let reply = browser.get_with("/", &forged).await;
    assert_eq!(reply.seen_one("x-session-user"), None);
    assert_eq!(reply.seen_one("x-user"), None);
    assert_eq!(reply.seen_one("x-roles"), None);

    let reply = browser
        .get_with(
            "/login",
            &[
                ("x-test-update", r#"{"user":"ada","roles":["reader",2]}"#),
                ("x-test-action", "rotate"),
                ("x-test-reply-header", "X-Session-User: ada"),
            ],
        )
        .await;
    assert!(!reply.headers.contains_key("x-session-user"));
    assert!(browser.sid().is_some());
    let mut headers = forged.to_vec();
    headers.push(("x-session-user", "root"));
    let reply = browser.get_with("/", &headers).await;
    assert_eq!(reply.seen_header("x-session-user"), ["ada"]);
    assert_eq!(reply.seen_header("x-user"), ["ada"]);
    assert_eq!(reply.seen_header("x-roles"), [r#"["reader",2]"#]);
    harness.assert_every_key_has_a_ttl();
}

behaviours!(forged_user_and_exposed_headers_never_reach_the_backend);

/// The admin API's handler, on both stores, without a listener: the token
/// check, then each call as SPEC §12 answers it.
async fn the_admin_api_needs_the_token_and_answers_as_the_spec_says(kind: StoreKind) {
    let redis = (kind == StoreKind::Redis).then(common::Redis::start);
    let sessions = match &redis {
        Some(redis) => sessions_on(&redis.url(), ""),
        None => users_support::memory_sessions(),
    };
    let token = b"an-admin-token-of-32-bytes-or-more!";
    let mut headers = http::HeaderMap::new();
    assert!(!sessiongate::users_api::authorised(&headers, token));
    headers.insert("authorization", "Bearer wrong-token".parse().unwrap());
    assert!(
        !sessiongate::users_api::authorised(&headers, token),
        "a wrong token gets 401"
    );
    headers.insert(
        "authorization",
        "Bearer an-admin-token-of-32-bytes-or-more!"
            .parse()
            .unwrap(),
    );
    assert!(sessiongate::users_api::authorised(&headers, token));

    let first = users_support::bind(&sessions, "ada").await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let second = users_support::bind(&sessions, "ada").await;
    let (status, body) = admin(&sessions, "GET", "/sessions?user=ada").await;
    assert_eq!(status, StatusCode::OK);
    let order: Vec<&str> = body["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["sid"].as_str().unwrap())
        .collect();
    assert_eq!(order, [first.as_str(), second.as_str()], "oldest first");

    assert_eq!(
        admin(&sessions, "GET", "/sessions").await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        admin(&sessions, "POST", "/sessions?user=ada").await.0,
        StatusCode::METHOD_NOT_ALLOWED
    );
    let path = format!("/sessions/{}", first.as_str());
    assert_eq!(
        admin(&sessions, "DELETE", &path).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        admin(&sessions, "DELETE", &path).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        admin(&sessions, "DELETE", "/sessions/nonsense").await.0,
        StatusCode::NOT_FOUND
    );
    let (status, body) = admin(&sessions, "DELETE", "/sessions?user=ada").await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, serde_json::json!({"destroyed": 1}))
    );
    let request = http::Request::get("/healthz").body(()).unwrap();
    assert!(
        sessiongate::users_api::handle(&sessions, &request)
            .await
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_on_redis() {
    the_admin_api_needs_the_token_and_answers_as_the_spec_says(StoreKind::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_on_the_memory_store() {
    the_admin_api_needs_the_token_and_answers_as_the_spec_says(StoreKind::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bound_sessions_load_is_still_one_round_trip() {
    let harness = Harness::start(StoreKind::Redis).await;
    let browser = harness.browser();
    login(&browser, "ada").await;
    browser.get("/").await; // load.lua is cached in Redis from here on
    let before = harness.redis().command_stats();
    let reply = browser.get("/").await;
    let after = harness.redis().command_stats();
    assert_eq!(reply.seen_one("x-session-user").as_deref(), Some("ada"));
    let commands = common::Redis::commands_between(&before, &after);
    assert_eq!(common::Redis::round_trips(&commands), 1, "{commands:?}");
}

/// What a crash between the index write and the session write leaves (an
/// entry whose session is missing, or is not bound to that user) is never
/// listed, never revoked, and leaves the index when met.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_index_entry_is_never_listed_nor_revokes_another_users_session() {
    let harness = Harness::start(StoreKind::Redis).await;
    let sessions = sessions_on(&harness.redis().url(), "");
    let ada = harness.browser();
    let bob = harness.browser();
    login(&ada, "ada").await;
    login(&bob, "bob").await;
    let ghost = sessiongate::session::cookie::Sid::generate();
    let later = sessiongate::session::store::epoch_ms() + 3_600_000;
    let mut redis = harness.redis().connection();
    for sid in [ghost.as_str().to_string(), bob.sid().unwrap()] {
        let _: i64 = redis::cmd("ZADD")
            .arg("sg:user:ada")
            .arg(later)
            .arg(sid)
            .query(&mut redis)
            .unwrap();
    }
    assert_eq!(listed(&sessions, "ada").await, [ada.sid().unwrap()]);
    let left: Vec<String> = redis::cmd("ZRANGE")
        .arg("sg:user:ada")
        .arg(0)
        .arg(-1)
        .query(&mut redis)
        .unwrap();
    assert_eq!(left, [ada.sid().unwrap()], "stale entries leave when met");

    // Bound again to someone else: the old user's list drops it.
    let _: i64 = redis::cmd("ZADD")
        .arg("sg:user:ada")
        .arg(later)
        .arg(bob.sid().unwrap())
        .query(&mut redis)
        .unwrap();
    let (_, body) = admin(&sessions, "DELETE", "/sessions?user=ada").await;
    assert_eq!(body, serde_json::json!({"destroyed": 1}));
    let reply = bob.get("/").await;
    assert_eq!(reply.seen_one("x-session-user").as_deref(), Some("bob"));
    let bind = "X-Session-User: carol";
    bob.get_with("/", &[("x-test-reply-header", bind)]).await;
    assert!(listed(&sessions, "bob").await.is_empty());
    assert_eq!(listed(&sessions, "carol").await, [bob.sid().unwrap()]);
    let reply = bob.get("/").await;
    assert_eq!(reply.seen_one("x-session-user").as_deref(), Some("carol"));
    harness.assert_every_key_has_a_ttl();
}

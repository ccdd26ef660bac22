//! Fixation: a sid a client presents is never adopted for a new session, and
//! `rotate` gives a fresh sid while the old one dies at once.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::Setup;
use serde_json::json;

behaviours!(
    a_planted_cookie_does_not_carry_the_victims_login_to_the_attacker,
    a_destroyed_sessions_cookie_never_becomes_a_session_again,
    requests_racing_a_rotation_never_see_the_rotated_data_under_the_old_sid,
);

async fn a_planted_cookie_does_not_carry_the_victims_login_to_the_attacker(setup: Setup) {
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
    victim
        .get_with(
            "/login",
            &[
                ("x-test-update", r#"{"uid":42}"#),
                ("x-test-action", "rotate"),
            ],
        )
        .await;
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

async fn a_destroyed_sessions_cookie_never_becomes_a_session_again(setup: Setup) {
    let h = setup.start().await;
    let browser = h.browser();
    browser
        .get_with("/", &[("x-test-update", r#"{"user":"ada"}"#)])
        .await;
    let old = browser.cookie().unwrap();
    let old_sid = browser.sid().unwrap();
    browser
        .get_with("/logout", &[("x-test-action", "destroy")])
        .await;
    // The old cookie, still correctly signed, comes back and stores data.
    let replay = h.browser();
    replay.set_cookie(Some(old));
    let reply = replay
        .get_with("/", &[("x-test-update", r#"{"again":true}"#)])
        .await;
    assert_eq!(reply.seen_one("x-session-status").as_deref(), Some("new"));
    assert_ne!(reply.seen_one("x-session-id").unwrap(), old_sid);
    let new_sid = replay.sid().expect("a new session was created");
    assert_ne!(new_sid, old_sid, "the presented sid was not adopted");
}

async fn requests_racing_a_rotation_never_see_the_rotated_data_under_the_old_sid(setup: Setup) {
    let h = setup.start().await;
    let browser = h.browser();
    browser
        .get_with("/", &[("x-test-update", r#"{"user":"ada"}"#)])
        .await;
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

//! Persistent cookies: `X-Session-Action: persist` makes one session's
//! cookie carry `Max-Age` (its remaining absolute lifetime) at once and from
//! then on, kept in `__persist` in the store; actions combine
//! (`rotate, persist`); `cookie.persistent = true` does it for every session.

mod common;

use common::{Browser, Setup, StoreKind};

fn max_age(set_cookie: &str) -> Option<u64> {
    set_cookie
        .split(';')
        .map(str::trim)
        .find_map(|a| a.strip_prefix("Max-Age="))
        .map(|v| v.parse().unwrap())
}

async fn persist_then_rotate_keeps_max_age(setup: Setup) {
    let store = setup.store;
    let mut setup = setup;
    setup.session = "absolute_timeout = \"2h\"\n".into();
    let h = setup.start().await;
    let browser = h.browser();
    let first = browser
        .get_with("/", &[("x-test-update", "{\"cart\":1}")])
        .await;
    let plain = first.set_cookies();
    assert_eq!(plain.len(), 1);
    assert_eq!(
        max_age(&plain[0]),
        None,
        "a session cookie by default: {plain:?}"
    );
    // "Remember me" at login: rotate and persist in one header.
    let login = browser
        .get_with(
            "/login",
            &[
                ("x-test-update", "{\"user\":\"ada\"}"),
                ("x-test-action", "rotate, persist"),
            ],
        )
        .await;
    let set = login.set_cookies();
    assert_eq!(set.len(), 1, "{set:?}");
    let age = max_age(&set[0]).expect("a persistent cookie");
    assert!((7100..=7200).contains(&age), "Max-Age {age}");
    if store == StoreKind::Redis {
        let key = format!("sg:{}", browser.sid().unwrap());
        let hash = h.redis().hash(&key);
        assert_eq!(
            hash.get("__persist").map(String::as_str),
            Some("true"),
            "{hash:?}"
        );
    }
    // The backend never sees __persist, and a later rotate stays persistent.
    let seen = browser.get("/").await;
    assert_eq!(
        seen.seen_one("x-session").as_deref(),
        Some("{\"cart\":1,\"user\":\"ada\"}")
    );
    let again = browser.get_with("/", &[("x-test-action", "rotate")]).await;
    let set = again.set_cookies();
    assert!(max_age(&set[0]).is_some(), "{set:?}");
}

async fn persist_on_an_active_session_sets_the_cookie_at_once(setup: Setup) {
    let h = setup.start().await;
    let browser = h.browser();
    browser
        .get_with("/", &[("x-test-update", "{\"a\":1}")])
        .await;
    let sid = browser.sid();
    let reply = browser.get_with("/", &[("x-test-action", "persist")]).await;
    let set = reply.set_cookies();
    assert_eq!(set.len(), 1, "{set:?}");
    assert!(max_age(&set[0]).is_some_and(|a| a > 86_000), "{set:?}");
    assert_eq!(browser.sid(), sid, "persist keeps the sid");
    // Asked again: already persistent, nothing to send.
    let reply = browser.get_with("/", &[("x-test-action", "persist")]).await;
    assert!(reply.set_cookies().is_empty());
}

async fn cookie_persistent_gives_every_session_max_age(setup: Setup) {
    let mut setup = setup;
    setup.cookie = "persistent = true\n".into();
    let h = setup.start().await;
    let browser: Browser = h.browser();
    let reply = browser
        .get_with("/", &[("x-test-update", "{\"a\":1}")])
        .await;
    let set = reply.set_cookies();
    assert!(max_age(&set[0]).is_some_and(|a| a > 86_000), "{set:?}");
}

behaviours!(
    persist_then_rotate_keeps_max_age,
    persist_on_an_active_session_sets_the_cookie_at_once,
    cookie_persistent_gives_every_session_max_age,
);

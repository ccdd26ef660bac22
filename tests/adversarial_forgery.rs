//! Forgery: no cookie that sessiongate did not sign is ever accepted, and
//! trying costs Redis nothing. Every case runs against the real proxy and a
//! real Redis, whose INFO commandstats must not move.

mod common;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{Browser, Harness, Redis, SECRET_A, SECRET_B, Setup, StoreKind};

/// A harness with one stored session; returns its cookie value.
async fn with_session(setup: Setup) -> (Harness, String) {
    let h = setup.start().await;
    let browser = h.browser();
    browser
        .get_with("/", &[("x-test-update", r#"{"user":"ada"}"#)])
        .await;
    // Warm up: the connection and the script are loaded before counting.
    browser.get("/").await;
    let cookie = browser.cookie().unwrap();
    (h, cookie)
}

/// Sends each cookie value; every one must be a new visitor, and Redis must
/// see no command at all.
async fn assert_all_rejected_without_redis(h: &Harness, values: &[String]) {
    let before = h.redis().command_stats();
    let attacker = h.browser();
    for value in values {
        attacker.set_cookie(Some(value.clone()));
        let reply = attacker.get("/").await;
        let status = reply.seen_one("x-session-status");
        assert_eq!(status.as_deref(), Some("new"), "accepted: {value:?}");
        assert_eq!(reply.session(), serde_json::json!({}));
    }
    let commands = Redis::commands_between(&before, &h.redis().command_stats());
    assert!(
        commands.is_empty(),
        "forged cookies cost Redis commands: {commands:?}"
    );
}

fn flip_bit(text: &str, bit: usize) -> String {
    let mut bytes = URL_SAFE_NO_PAD.decode(text).unwrap();
    bytes[bit / 8] ^= 1 << (bit % 8);
    URL_SAFE_NO_PAD.encode(bytes)
}

fn set_unused_bits(text: &str, bits: u8) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let last = ALPHABET
        .iter()
        .position(|&c| c == *text.as_bytes().last().unwrap())
        .unwrap();
    let changed = ALPHABET[(last & !0b11) | bits as usize] as char;
    format!("{}{changed}", &text[..text.len() - 1])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_flipped_bit_in_sid_or_tag_is_rejected() {
    let (h, cookie) = with_session(Setup::new(StoreKind::Redis)).await;
    let (sid, tag) = cookie.split_once('.').unwrap();
    let mut forged = Vec::new();
    for bit in 0..256 {
        forged.push(format!("{}.{tag}", flip_bit(sid, bit)));
        forged.push(format!("{sid}.{}", flip_bit(tag, bit)));
    }
    assert_all_rejected_without_redis(&h, &forged).await;
}

#[tokio::test]
async fn malformed_and_borrowed_tags_are_rejected() {
    let (h, cookie) = with_session(Setup::new(StoreKind::Redis)).await;
    let (sid, tag) = cookie.split_once('.').unwrap();
    let other = h.browser();
    other
        .get_with("/", &[("x-test-update", r#"{"other":1}"#)])
        .await;
    let other_cookie = other.cookie().unwrap();
    let (other_sid, other_tag) = other_cookie.split_once('.').unwrap();
    let mut forged = vec![
        format!("{sid}.{other_tag}"),
        format!("{other_sid}.{tag}"),
        format!("{sid}.{tag}="),
        format!("{sid}=.{tag}"),
        format!(
            "{}.{}",
            sid.replace('-', "+").replace('_', "/"),
            tag.replace('-', "+").replace('_', "/")
        ),
        format!("{sid}.{}", tag.to_ascii_lowercase()),
        format!("{sid}{tag}"),
        format!("{sid}..{tag}"),
        format!("{sid}.{tag}.{tag}"),
        format!(".{tag}"),
        format!("{sid}."),
        ".".to_string(),
        String::new(),
        format!("{sid}.{}", "A".repeat(43)),
    ];
    for length in 0..43 {
        forged.push(format!("{sid}.{}", &tag[..length]));
    }
    // 43 base64url characters carry 258 bits for 256: the last character's
    // two low bits are unused. Setting them spells the same bytes another
    // way; only the canonical spelling is accepted.
    for unused in 1..4 {
        forged.push(format!("{}.{tag}", set_unused_bits(sid, unused)));
        forged.push(format!("{sid}.{}", set_unused_bits(tag, unused)));
    }
    forged.retain(|f| f != &cookie);
    assert_all_rejected_without_redis(&h, &forged).await;
    // The genuine cookie still works.
    let owner = h.browser();
    owner.set_cookie(Some(cookie));
    assert_eq!(
        owner.get("/").await.seen_one("x-session-status").as_deref(),
        Some("active")
    );
}

#[tokio::test]
async fn a_cookie_signed_with_a_removed_secret_is_rejected() {
    let mut setup = Setup::new(StoreKind::Redis);
    setup.secrets = vec![SECRET_A.into()];
    let (h, signed_with_a) = with_session(setup).await;
    let mut rotated = h.setup.clone();
    rotated.secrets = vec![SECRET_B.into()];
    let proxy = h.another_proxy(&rotated).await;
    let before = h.redis().command_stats();
    let browser = Browser::new(proxy.addr);
    browser.set_cookie(Some(signed_with_a));
    assert_eq!(
        browser
            .get("/")
            .await
            .seen_one("x-session-status")
            .as_deref(),
        Some("new")
    );
    assert!(Redis::commands_between(&before, &h.redis().command_stats()).is_empty());
}

#[tokio::test]
async fn a_100_kb_cookie_is_rejected_without_a_store_call() {
    let mut setup = Setup::new(StoreKind::Redis);
    setup.server = "max_header_bytes = 262144\n".into();
    let (h, cookie) = with_session(setup).await;
    let (sid, _) = cookie.split_once('.').unwrap();
    let huge = [
        format!("{sid}.{}", "A".repeat(100_000)),
        "x".repeat(100_000),
    ];
    assert_all_rejected_without_redis(&h, &huge).await;
}

#[tokio::test]
async fn many_cookie_headers_of_forgeries_cost_nothing_and_one_genuine_among_them_counts() {
    let (h, cookie) = with_session(Setup::new(StoreKind::Redis)).await;
    let (sid, tag) = cookie.split_once('.').unwrap();
    let forged: Vec<String> = (0..50)
        .map(|bit| format!("sg_session={sid}.{}", flip_bit(tag, bit)))
        .collect();
    let headers: Vec<(&str, &str)> = forged.iter().map(|c| ("cookie", c.as_str())).collect();
    let before = h.redis().command_stats();
    let reply = Browser::new(h.proxy.addr).get_with("/", &headers).await;
    assert_eq!(reply.seen_one("x-session-status").as_deref(), Some("new"));
    assert!(Redis::commands_between(&before, &h.redis().command_stats()).is_empty());
    assert!(
        reply.seen_header("cookie").is_empty(),
        "no session cookie reaches the backend"
    );

    let genuine = format!("sg_session={cookie}");
    let mut with_genuine = headers.clone();
    with_genuine.insert(25, ("cookie", genuine.as_str()));
    let reply = Browser::new(h.proxy.addr)
        .get_with("/", &with_genuine)
        .await;
    assert_eq!(
        reply.seen_one("x-session-status").as_deref(),
        Some("active"),
        "forgeries are ignored"
    );
}

#[tokio::test]
async fn two_genuine_session_cookies_that_disagree_give_no_session() {
    // The rule: cookies that verify must all name the same sid. A cookie
    // planted by a sibling subdomain cannot pick which session is used.
    let (h, mine) = with_session(Setup::new(StoreKind::Redis)).await;
    let attacker = h.browser();
    attacker
        .get_with("/", &[("x-test-update", r#"{"user":"mallory"}"#)])
        .await;
    let theirs = attacker.cookie().unwrap();
    for order in [[&mine, &theirs], [&theirs, &mine]] {
        let header = format!("sg_session={}; sg_session={}", order[0], order[1]);
        let reply = Browser::new(h.proxy.addr)
            .get_with("/", &[("cookie", &header)])
            .await;
        assert_eq!(reply.seen_one("x-session-status").as_deref(), Some("new"));
        assert_eq!(reply.session(), serde_json::json!({}));
    }
    let same = format!("sg_session={mine}; sg_session={mine}");
    let reply = Browser::new(h.proxy.addr)
        .get_with("/", &[("cookie", &same)])
        .await;
    assert_eq!(reply.session(), serde_json::json!({"user": "ada"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sprayed_random_cookies_never_reach_redis() {
    let (h, _) = with_session(Setup::new(StoreKind::Redis)).await;
    let sprayed: Vec<String> = (0..300)
        .map(|i| {
            let sid = URL_SAFE_NO_PAD.encode(sessiongate::session::cookie::random_bytes());
            let tag = URL_SAFE_NO_PAD.encode(sessiongate::session::cookie::random_bytes());
            if i % 2 == 0 {
                format!("{sid}.{tag}")
            } else {
                sid
            }
        })
        .collect();
    assert_all_rejected_without_redis(&h, &sprayed).await;
}

//! The session cookie (SPEC §3): only a cookie that sessiongate signed names
//! a session, and trying any other costs Redis nothing (its INFO
//! commandstats must not move); every secret verifies and the first signs;
//! `Set-Cookie` carries the configured attributes, `Secure`, `HttpOnly` and
//! `SameSite=Lax` unless told otherwise, and the `__Host-` and `__Secure-`
//! name prefixes' rules (RFC 6265bis §4.1.3) are enforced.

mod common;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{Browser, Harness, Redis, SECRET_A, SECRET_B, Setup, StoreKind, TempDir};
use cookie::{Cookie, SameSite};

behaviours!(set_cookie_carries_the_configured_attributes);

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

/// Sends each cookie value; every one must be a new visitor under a fresh
/// sid, and Redis must see no command at all.
async fn assert_all_rejected_without_redis(h: &Harness, values: &[String]) {
    let before = h.redis().command_stats();
    let attacker = h.browser();
    for value in values {
        attacker.set_cookie(Some(value.clone()));
        let reply = attacker.get("/").await;
        let status = reply.seen_one("x-session-status");
        assert_eq!(status.as_deref(), Some("new"), "accepted: {value:?}");
        assert_eq!(reply.session(), serde_json::json!({}));
        let presented = value.split('.').next().unwrap();
        assert_ne!(
            reply.seen_one("x-session-id").as_deref(),
            Some(presented),
            "the presented sid was offered: {value:?}"
        );
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
        sid.to_string(),
        ".".to_string(),
        "garbage".to_string(),
        "x".repeat(4000),
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

#[tokio::test]
async fn key_rotation_verifies_with_every_secret_and_signs_with_the_first() {
    let (h, signed_with_a) = with_session(Setup::new(StoreKind::Redis)).await; // secrets = [A]

    let mut rotated = h.setup.clone();
    rotated.secrets = vec![SECRET_B.into(), SECRET_A.into()];
    let new_proxy = h.another_proxy(&rotated).await;
    let after_rotation = Browser::new(new_proxy.addr);
    after_rotation.set_cookie(Some(signed_with_a.clone()));
    let reply = after_rotation.get("/").await;
    assert_eq!(
        reply.session(),
        serde_json::json!({"user": "ada"}),
        "the old secret still verifies"
    );

    let fresh = Browser::new(new_proxy.addr);
    fresh
        .get_with("/", &[("x-test-update", r#"{"user":"bob"}"#)])
        .await;
    let signed_with_b = fresh.cookie().unwrap();
    let old_only = h.browser();
    old_only.set_cookie(Some(signed_with_b));
    let reply = old_only.get("/").await;
    assert_eq!(
        reply.seen_one("x-session-status").as_deref(),
        Some("new"),
        "signed with B, not A"
    );

    // A removed secret verifies nothing, and trying costs Redis nothing.
    let mut retired = h.setup.clone();
    retired.secrets = vec![SECRET_B.into()];
    let retired_proxy = h.another_proxy(&retired).await;
    let before = h.redis().command_stats();
    let late = Browser::new(retired_proxy.addr);
    late.set_cookie(Some(signed_with_a));
    assert_eq!(
        late.get("/").await.seen_one("x-session-status").as_deref(),
        Some("new")
    );
    let commands = Redis::commands_between(&before, &h.redis().command_stats());
    assert!(commands.is_empty(), "{commands:?}");
}

fn parse(set_cookie: &str) -> Cookie<'static> {
    Cookie::parse(set_cookie.to_string()).unwrap()
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
    let cookie = parse(&set[0]);
    assert_eq!(cookie.name(), "sg_session");
    assert_eq!(cookie.path(), Some("/app"));
    assert_eq!(cookie.domain(), Some("example.test"));
    assert_eq!(cookie.secure(), Some(true));
    assert_eq!(cookie.http_only(), Some(true));
    assert_eq!(cookie.same_site(), Some(SameSite::Strict));
}

#[tokio::test]
async fn every_cookie_set_is_secure_httponly_and_samesite_lax_by_default() {
    let h = Setup::new(StoreKind::Memory).start().await;
    let browser = h.browser();
    let created = browser
        .get_with("/", &[("x-test-update", r#"{"a":1}"#)])
        .await;
    let rotated = browser.get_with("/", &[("x-test-action", "rotate")]).await;
    let expired = browser.get_with("/", &[("x-test-action", "destroy")]).await;
    for (what, reply) in [
        ("created", created),
        ("rotated", rotated),
        ("expired", expired),
    ] {
        let set = reply.set_cookies();
        assert_eq!(set.len(), 1, "{what}");
        let cookie = parse(&set[0]);
        assert_eq!(cookie.secure(), Some(true), "{what}: {}", set[0]);
        assert_eq!(cookie.http_only(), Some(true), "{what}: {}", set[0]);
        assert_eq!(
            cookie.same_site(),
            Some(SameSite::Lax),
            "{what}: {}",
            set[0]
        );
        assert_eq!(cookie.path(), Some("/"), "{what}: {}", set[0]);
        assert_eq!(cookie.domain(), None, "{what}: {}", set[0]);
    }
}

#[tokio::test]
async fn a_host_prefixed_cookie_is_set_as_its_rules_require() {
    let mut setup = Setup::new(StoreKind::Memory);
    setup.cookie = "name = \"__Host-session\"\n".into();
    let h = setup.start().await;
    let reply = h
        .browser()
        .get_with("/", &[("x-test-update", r#"{"a":1}"#)])
        .await;
    let set = reply.set_cookies();
    let cookie = parse(&set[0]);
    assert_eq!(cookie.name(), "__Host-session");
    assert_eq!(
        (cookie.secure(), cookie.path(), cookie.domain()),
        (Some(true), Some("/"), None),
        "{}",
        set[0]
    );
    // The cookie comes back under its own name and is verified.
    let again = Browser::new(h.proxy.addr)
        .get_with(
            "/",
            &[("cookie", &format!("__Host-session={}", cookie.value()))],
        )
        .await;
    assert_eq!(
        again.seen_one("x-session-status").as_deref(),
        Some("active")
    );
    assert!(again.seen_header("cookie").is_empty());
}

#[test]
fn configurations_that_break_the_cookie_rules_are_refused_with_the_key_named() {
    let dir = TempDir::new("cookie-rules");
    let cases = [
        ("same_site = \"none\"\nsecure = false\n", "cookie.same_site"),
        ("name = \"__Host-s\"\nsecure = false\n", "cookie.secure"),
        ("name = \"__Host-s\"\npath = \"/app\"\n", "cookie.path"),
        (
            "name = \"__Host-s\"\ndomain = \"example.com\"\n",
            "cookie.domain",
        ),
        ("name = \"__Secure-s\"\nsecure = false\n", "cookie.secure"),
        ("name = \"bad name\"\n", "cookie.name"),
        ("name = \"a;b\"\n", "cookie.name"),
        ("path = \"/app; Domain=evil.com\"\n", "cookie.path"),
    ];
    for (i, (extra, key)) in cases.iter().enumerate() {
        let text = format!(
            "[upstreams]\nservers = [\"http://127.0.0.1:1\"]\n[cookie]\nsecrets = [\"{SECRET_A}\"]\n{extra}"
        );
        let path = dir.0.join(format!("case{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_sessiongate"))
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{extra}: {stderr}");
        assert!(stderr.contains(key), "{extra}: expected {key} in {stderr}");
    }
}

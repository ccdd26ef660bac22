//! Cookie attributes: `Secure`, `HttpOnly` and `SameSite=Lax` unless told
//! otherwise, on every cookie sessiongate sets (created, rotated, expired);
//! `SameSite=None` without `Secure` is refused; the `__Host-` and
//! `__Secure-` name prefixes are supported and their rules enforced
//! (RFC 6265bis §4.1.3).

mod common;

use common::{Setup, StoreKind, TempDir};
use cookie::{Cookie, SameSite};

const BIN: &str = env!("CARGO_BIN_EXE_sessiongate");

fn parse(set_cookie: &str) -> Cookie<'static> {
    Cookie::parse(set_cookie.to_string()).unwrap()
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
    let again = common::Browser::new(h.proxy.addr)
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
            "[upstreams]\nservers = [\"http://127.0.0.1:1\"]\n[cookie]\nsecrets = [\"{}\"]\n{extra}",
            common::SECRET_A
        );
        let path = dir.0.join(format!("case{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let output = std::process::Command::new(BIN)
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{extra}: {stderr}");
        assert!(stderr.contains(key), "{extra}: expected {key} in {stderr}");
    }
}

//! The access log (SPEC §9): one line per request on stdout, with exactly
//! the contract's fields, right; `text` carries the same; neither log ever
//! holds a sid, a cookie value, a secret or a token; `log.format = "json"`
//! makes the diagnostic log JSON.

mod ops_support;

use std::time::Duration;

use ops_support::*;
use serde_json::Value;
use sha2::{Digest, Sha256};

const KEYS: [&str; 15] = [
    "ts",
    "client",
    "method",
    "host",
    "path",
    "proto",
    "status",
    "bytes",
    "duration_ms",
    "pool",
    "upstream",
    "session",
    "sid_hash",
    "user",
    "ua",
];

fn sid_hash(sid: &str) -> String {
    Sha256::digest(sid.as_bytes())[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn lines_until(sg: &Sessiongate, count: usize) -> Vec<Value> {
    eventually(Duration::from_secs(5), "the access log lines", || {
        sg.stdout().lines().count() >= count
    });
    sg.access_log()
}

#[test]
fn json_lines_carry_exactly_the_contract_fields() {
    let redis = Redis::start();
    let backend = Backend::start("A");
    let sg = Sessiongate::start(&Setup::new(&[&backend], Some(&redis)));
    let first = sg.get_with(
        "/shop/cart?coupon=SPRING-SECRET",
        &[("user-agent", "ops-test/1.0 (with spaces)")],
    );
    assert_eq!(first.status, 200);
    let created = sg.get("/set");
    let cookie = created.session_cookie().unwrap();
    let sid = cookie.split('.').next().unwrap().to_string();
    sg.get_with("/again", &[("cookie", &format!("sg_session={cookie}"))]);

    let lines = lines_until(&sg, 3);
    assert_eq!(lines.len(), 3, "{lines:?}");
    for line in &lines {
        let mut keys: Vec<&str> = line
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        keys.sort();
        let mut expected = KEYS.to_vec();
        expected.sort();
        assert_eq!(keys, expected, "{line}");
        let ts = line["ts"].as_str().unwrap();
        // RFC 3339, milliseconds, UTC: 2026-12-01T23:06:02.587Z
        assert_eq!(ts.len(), 24, "{ts}");
        assert!(ts.ends_with('Z') && ts.as_bytes()[10] == b'T' && ts.as_bytes()[19] == b'.');
        assert_eq!(line["client"], "127.0.0.1");
        assert_eq!(line["method"], "GET");
        assert_eq!(line["host"], sg.addr.to_string());
        assert_eq!(line["proto"], "HTTP/1.1");
        assert_eq!(line["status"], 200);
        assert_eq!(line["bytes"], "hello from A\n".len());
        assert!(line["duration_ms"].as_f64().unwrap() >= 0.0);
        assert_eq!(line["pool"], "default");
        assert_eq!(line["upstream"], backend.url());
        assert_eq!(line["user"], Value::Null);
    }
    assert_eq!(lines[0]["path"], "/shop/cart", "no query without log.query");
    assert_eq!(lines[0]["ua"], "ops-test/1.0 (with spaces)");
    assert_eq!(lines[0]["session"], "new");
    assert_eq!(lines[0]["sid_hash"], Value::Null);
    assert_eq!(lines[1]["path"], "/set");
    assert_eq!(lines[2]["session"], "active");
    assert_eq!(lines[2]["sid_hash"], sid_hash(&sid));
    assert_eq!(lines[2]["ua"], Value::Null);

    let out = format!("{}{}", sg.stdout(), sg.stderr());
    for secret in [
        sid.as_str(),
        cookie.as_str(),
        "SPRING-SECRET",
        SECRET,
        TOKEN,
    ] {
        assert!(!out.contains(secret), "the logs hold {secret:?}:\n{out}");
    }
}

#[test]
fn the_query_is_kept_only_with_log_query() {
    let backend = Backend::start("A");
    let mut setup = Setup::new(&[&backend], None);
    setup.log = "access = \"json\"\nquery = true\n".into();
    let sg = Sessiongate::start(&setup);
    sg.get("/search?q=shoes");
    let lines = lines_until(&sg, 1);
    assert_eq!(lines[0]["path"], "/search?q=shoes");
}

#[test]
fn a_store_outage_and_an_upstream_failure_are_logged_with_what_is_known() {
    let mut redis = Redis::start();
    let (a, mut b) = (Backend::start("A"), Backend::start("B"));
    let mut setup = Setup::new(&[&a, &b], Some(&redis));
    setup.upstreams = String::new();
    let sg = Sessiongate::start(&setup);
    let cookie = sg.get("/set").session_cookie().unwrap();
    let sid = cookie.split('.').next().unwrap().to_string();
    redis.kill();
    let down = sg.get_with("/", &[("cookie", &format!("sg_session={cookie}"))]);
    assert_eq!(down.status, 503);
    b.stop();
    drop(a);
    // Every server gone: 502.
    let bad = sg.get("/gone");
    assert_eq!(bad.status, 502);
    let lines = lines_until(&sg, 3);
    assert_eq!(lines[1]["status"], 503);
    assert_eq!(lines[1]["session"], "unavailable");
    assert_eq!(lines[1]["upstream"], Value::Null);
    assert_eq!(lines[1]["bytes"], down.body.len());
    assert_eq!(lines[2]["status"], 502);
    assert_eq!(lines[2]["path"], "/gone");
    assert!(
        lines[2]["upstream"]
            .as_str()
            .unwrap()
            .starts_with("http://127.0.0.1:")
    );
    let out = format!("{}{}", sg.stdout(), sg.stderr());
    assert!(!out.contains(&sid) && !out.contains(&cookie));
}

#[test]
fn text_lines_carry_the_same_fields_on_one_line() {
    let backend = Backend::start("A");
    let mut setup = Setup::new(&[&backend], None);
    setup.log = "access = \"text\"\n".into();
    let sg = Sessiongate::start(&setup);
    sg.get_with("/plain?x=1", &[("user-agent", "curl/8 \"quoted\"")]);
    eventually(Duration::from_secs(5), "a line", || !sg.stdout().is_empty());
    let out = sg.stdout();
    let line = out.lines().next().unwrap();
    let keys: Vec<&str> = line
        .split(' ')
        .filter_map(|pair| pair.split_once('=').map(|(k, _)| k))
        .filter(|k| KEYS.contains(k))
        .collect();
    assert_eq!(keys, KEYS, "{line}");
    assert!(line.contains(" path=/plain "), "{line}");
    assert!(line.contains(" status=200 "), "{line}");
    assert!(line.contains(" session=new sid_hash=- user=- "), "{line}");
    assert!(line.ends_with(" ua=\"curl/8 \\\"quoted\\\"\""), "{line}");
    assert!(!line.contains("x=1"), "{line}");
}

#[test]
fn log_format_json_makes_the_diagnostic_log_json() {
    let backend = Backend::start("A");
    let mut setup = Setup::new(&[&backend], None);
    setup.log = "access = \"off\"\nformat = \"json\"\n".into();
    let sg = Sessiongate::start(&setup);
    assert_eq!(sg.get("/").status, 200);
    eventually(Duration::from_secs(5), "a diagnostic line", || {
        sg.stderr().contains("sessiongate is serving")
    });
    for line in sg.stderr().lines() {
        let value: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: not JSON: {line}"));
        assert!(value["level"].is_string(), "{line}");
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(sg.stdout(), "", "access = \"off\" writes no access log");
}

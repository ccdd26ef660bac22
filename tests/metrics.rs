//! `/metrics` (SPEC §9): every metric of the contract from the start, in
//! the Prometheus text format; counters that move as requests, sessions,
//! forged cookies, store errors and upstream failures happen; and nothing
//! in the output that names a sid, a cookie or a path.

mod ops_support;

use std::time::Duration;

use ops_support::*;

#[test]
fn every_metric_of_the_contract_is_there_from_the_start_at_zero() {
    let redis = Redis::start();
    let (a, b) = (Backend::start("A"), Backend::start("B"));
    let sg = Sessiongate::start(&Setup::new(&[&a, &b], Some(&redis)));
    let (text, samples) = sg.scrape();
    for (name, kind) in [
        ("sessiongate_requests_total", "counter"),
        ("sessiongate_request_duration_seconds", "histogram"),
        ("sessiongate_upstream_requests_total", "counter"),
        ("sessiongate_upstream_in_rotation", "gauge"),
        ("sessiongate_store_requests_total", "counter"),
        ("sessiongate_store_duration_seconds", "histogram"),
        ("sessiongate_sessions_total", "counter"),
        ("sessiongate_cookies_rejected_total", "counter"),
        ("sessiongate_connections", "gauge"),
        ("sessiongate_cache_lookups_total", "counter"),
        ("sessiongate_config_reloads_total", "counter"),
        ("sessiongate_build_info", "gauge"),
    ] {
        assert!(
            text.contains(&format!("# TYPE {name} {kind}\n")),
            "no `# TYPE {name} {kind}` in:\n{text}"
        );
    }
    let zero = |name: &str, labels: &[(&str, &str)]| {
        assert_eq!(
            value(&samples, name, labels),
            Some(0.0),
            "{name}{labels:?} in:\n{text}"
        );
    };
    for status in ["1xx", "2xx", "3xx", "4xx", "5xx"] {
        zero(
            "sessiongate_requests_total",
            &[("pool", "default"), ("status", status)],
        );
    }
    zero(
        "sessiongate_request_duration_seconds_count",
        &[("pool", "default")],
    );
    for (le, _) in [("0.0001", 0), ("10", 0), ("+Inf", 0)] {
        zero(
            "sessiongate_request_duration_seconds_bucket",
            &[("pool", "default"), ("le", le)],
        );
    }
    for server in [a.url(), b.url()] {
        for outcome in ["ok", "connect_error", "timeout", "error"] {
            zero(
                "sessiongate_upstream_requests_total",
                &[
                    ("pool", "default"),
                    ("server", &server),
                    ("outcome", outcome),
                ],
            );
        }
        assert_eq!(
            value(
                &samples,
                "sessiongate_upstream_in_rotation",
                &[("pool", "default"), ("server", &server)]
            ),
            Some(1.0)
        );
    }
    for op in ["load", "save", "rotate", "destroy", "touch"] {
        for outcome in ["ok", "error", "timeout"] {
            zero(
                "sessiongate_store_requests_total",
                &[("op", op), ("outcome", outcome)],
            );
        }
        zero("sessiongate_store_duration_seconds_count", &[("op", op)]);
    }
    for event in [
        "created",
        "rotated",
        "destroyed",
        "update_rejected",
        "bound",
        "revoked",
    ] {
        zero("sessiongate_sessions_total", &[("event", event)]);
    }
    for reason in ["malformed", "bad_signature"] {
        zero("sessiongate_cookies_rejected_total", &[("reason", reason)]);
    }
    for protocol in ["http1", "h2", "tunnel"] {
        zero("sessiongate_connections", &[("protocol", protocol)]);
    }
    for result in ["hit", "miss"] {
        zero("sessiongate_cache_lookups_total", &[("result", result)]);
    }
    for result in ["ok", "error"] {
        zero("sessiongate_config_reloads_total", &[("result", result)]);
    }
    zero("sessiongate_access_log_dropped_total", &[]);
    assert_eq!(
        value(
            &samples,
            "sessiongate_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );
    // Buckets from 100 µs to 10 s, and +Inf.
    let les: Vec<&str> = samples
        .iter()
        .filter(|s| s.name == "sessiongate_store_duration_seconds_bucket")
        .filter(|s| s.labels.contains(&("op".into(), "load".into())))
        .flat_map(|s| {
            s.labels
                .iter()
                .filter(|(k, _)| k == "le")
                .map(|(_, v)| v.as_str())
        })
        .collect();
    assert_eq!(les.len(), 17, "{les:?}");
    assert!(les.contains(&"0.0001") && les.contains(&"10") && les.contains(&"+Inf"));
}

#[test]
fn counters_move_with_requests_sessions_forged_cookies_and_store_errors() {
    let mut redis = Redis::start();
    let (a, b) = (Backend::start("A"), Backend::start("B"));
    let sg = Sessiongate::start(&Setup::new(&[&a, &b], Some(&redis)));
    let distinctive = "/very-distinctive-path-4711?query-secret=hunter2";

    // A visitor without a session, then one who gets a session.
    assert_eq!(sg.get(distinctive).status, 200);
    let created = sg.get("/set");
    let cookie = created.session_cookie().expect("a session was created");
    let sid = cookie.split('.').next().unwrap().to_string();
    let with_cookie = format!("sg_session={cookie}");
    assert_eq!(
        sg.get_with("/", &[("cookie", &with_cookie)]).status,
        200,
        "an active session"
    );
    // A rejected update, a login (rotate), a logout (destroy).
    sg.get_with("/bad", &[("cookie", &with_cookie)]);
    let login = sg.get_with("/login", &[("cookie", &with_cookie)]);
    let rotated = login.session_cookie().expect("rotate sets a cookie");
    let rotated_cookie = format!("sg_session={rotated}");
    sg.get_with("/logout", &[("cookie", &rotated_cookie)]);
    // Forged cookies: one well-formed with a wrong tag, one garbage.
    let forged_tag = format!("{sid}.{}", "A".repeat(43));
    sg.get_with("/", &[("cookie", &format!("sg_session={forged_tag}"))]);
    sg.get_with("/", &[("cookie", "sg_session=garbage")]);

    let (_, samples) = sg.scrape();
    let v = |name: &str, labels: &[(&str, &str)]| value(&samples, name, labels).unwrap_or(-1.0);
    assert_eq!(
        v(
            "sessiongate_requests_total",
            &[("pool", "default"), ("status", "2xx")]
        ),
        8.0
    );
    assert_eq!(
        v(
            "sessiongate_request_duration_seconds_count",
            &[("pool", "default")]
        ),
        8.0
    );
    assert_eq!(
        v("sessiongate_sessions_total", &[("event", "created")]),
        1.0
    );
    assert_eq!(
        v("sessiongate_sessions_total", &[("event", "rotated")]),
        1.0
    );
    assert_eq!(
        v("sessiongate_sessions_total", &[("event", "destroyed")]),
        1.0
    );
    assert_eq!(
        v(
            "sessiongate_sessions_total",
            &[("event", "update_rejected")]
        ),
        1.0
    );
    assert_eq!(
        v(
            "sessiongate_cookies_rejected_total",
            &[("reason", "bad_signature")]
        ),
        1.0
    );
    assert_eq!(
        v(
            "sessiongate_cookies_rejected_total",
            &[("reason", "malformed")]
        ),
        1.0
    );
    // Loads: `/`, `/bad`, `/login` with the first cookie, `/logout` with the rotated one.
    assert_eq!(
        v(
            "sessiongate_store_requests_total",
            &[("op", "load"), ("outcome", "ok")]
        ),
        4.0
    );
    assert_eq!(
        v(
            "sessiongate_store_requests_total",
            &[("op", "rotate"), ("outcome", "ok")]
        ),
        1.0
    );
    assert_eq!(
        v(
            "sessiongate_store_requests_total",
            &[("op", "destroy"), ("outcome", "ok")]
        ),
        1.0
    );
    // Saves: the new session, the rotated one.
    assert_eq!(
        v(
            "sessiongate_store_requests_total",
            &[("op", "save"), ("outcome", "ok")]
        ),
        2.0
    );
    assert_eq!(
        v(
            "sessiongate_store_duration_seconds_count",
            &[("op", "load")]
        ),
        4.0
    );
    let upstream_ok: f64 = [a.url(), b.url()]
        .iter()
        .map(|s| {
            v(
                "sessiongate_upstream_requests_total",
                &[("pool", "default"), ("server", s), ("outcome", "ok")],
            )
        })
        .sum();
    assert_eq!(upstream_ok, 8.0);

    // The store goes away: a request with a session gets 503, counted.
    redis.kill();
    let down = sg.get_with("/", &[("cookie", &with_cookie)]);
    assert_eq!(down.status, 503);
    let (text, samples) = sg.scrape();
    let v = |name: &str, labels: &[(&str, &str)]| value(&samples, name, labels).unwrap_or(-1.0);
    let failed = v(
        "sessiongate_store_requests_total",
        &[("op", "load"), ("outcome", "error")],
    ) + v(
        "sessiongate_store_requests_total",
        &[("op", "load"), ("outcome", "timeout")],
    );
    assert_eq!(failed, 1.0, "{text}");
    assert_eq!(
        v(
            "sessiongate_requests_total",
            &[("pool", "default"), ("status", "5xx")]
        ),
        1.0
    );

    // Nothing in the whole output names a sid, a cookie or a path.
    for secret in [
        sid.as_str(),
        cookie.as_str(),
        rotated.as_str(),
        rotated.split('.').next().unwrap(),
        "very-distinctive-path",
        "hunter2",
        "query-secret",
        "/set",
        "/login",
        SECRET,
        TOKEN,
    ] {
        assert!(!text.contains(secret), "/metrics holds {secret:?}:\n{text}");
    }
}

#[test]
fn upstream_outcomes_and_rotation_follow_a_server_that_goes_away() {
    let (a, mut b) = (Backend::start("A"), Backend::start("B"));
    let sg = Sessiongate::start(&Setup::new(&[&a, &b], None));
    let gone = b.url();
    b.stop();
    // Round-robin reaches the stopped server within two requests; the
    // request is retried on the other one, and the server ejected.
    for _ in 0..4 {
        assert_eq!(sg.get("/").status, 200);
    }
    let (_, samples) = sg.scrape();
    let v = |name: &str, labels: &[(&str, &str)]| value(&samples, name, labels).unwrap_or(-1.0);
    assert!(
        v(
            "sessiongate_upstream_requests_total",
            &[
                ("pool", "default"),
                ("server", &gone),
                ("outcome", "connect_error")
            ]
        ) >= 1.0
    );
    assert_eq!(
        v(
            "sessiongate_upstream_in_rotation",
            &[("pool", "default"), ("server", &gone)]
        ),
        0.0
    );
    assert_eq!(
        v(
            "sessiongate_upstream_in_rotation",
            &[("pool", "default"), ("server", &a.url())]
        ),
        1.0
    );
    assert_eq!(
        v(
            "sessiongate_upstream_requests_total",
            &[("pool", "default"), ("server", &a.url()), ("outcome", "ok")]
        ),
        4.0
    );
    // The connections gauge counts open client connections.
    let held = std::net::TcpStream::connect(sg.addr).unwrap();
    use std::io::Write;
    (&held)
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    eventually(Duration::from_secs(5), "an open connection counted", || {
        let (_, samples) = sg.scrape();
        value(
            &samples,
            "sessiongate_connections",
            &[("protocol", "http1")],
        ) == Some(1.0)
    });
    drop(held);
    eventually(
        Duration::from_secs(5),
        "the closed connection uncounted",
        || {
            let (_, samples) = sg.scrape();
            value(
                &samples,
                "sessiongate_connections",
                &[("protocol", "http1")],
            ) == Some(0.0)
        },
    );
}

//! The admin listener (SPEC §9): `/healthz`, `/readyz` following the store
//! and the servers' rotation, and `/sessions…` behind the bearer token.

mod ops_support;

use std::time::Duration;

use ops_support::*;

#[test]
fn healthz_answers_while_the_process_serves() {
    let backend = Backend::start("A");
    let sg = Sessiongate::start(&Setup::new(&[&backend], None));
    let reply = sg.admin_get("/healthz");
    assert_eq!((reply.status, reply.body.as_str()), (200, "ok\n"));
    assert_eq!(sg.admin_get("/nothing-here").status, 404);
    assert_eq!(http(sg.admin, "POST", "/healthz", &[]).status, 405);
}

#[test]
fn readyz_turns_503_while_the_store_is_down_and_200_when_it_is_back() {
    let mut redis = Redis::start();
    let backend = Backend::start("A");
    let sg = Sessiongate::start(&Setup::new(&[&backend], Some(&redis)));
    eventually(Duration::from_secs(5), "ready", || {
        sg.admin_get("/readyz").status == 200
    });
    assert_eq!(sg.admin_get("/readyz").body, "ready\n");
    redis.kill();
    eventually(Duration::from_secs(5), "not ready without Redis", || {
        sg.admin_get("/readyz").status == 503
    });
    let reply = sg.admin_get("/readyz");
    assert!(reply.body.contains("session store"), "{reply:?}");
    assert_eq!(reply.body.lines().count(), 1, "one line: {reply:?}");
    // /healthz is about the process, not its dependencies.
    assert_eq!(sg.admin_get("/healthz").status, 200);
    redis.restart();
    eventually(
        Duration::from_secs(10),
        "ready again with Redis back",
        || sg.admin_get("/readyz").status == 200,
    );
}

#[test]
fn readyz_turns_503_when_a_pool_has_no_server_in_rotation() {
    let mut backend = Backend::start("A");
    let mut setup = Setup::new(&[&backend], None);
    setup.upstreams = "[upstreams.health]\npath = \"/healthz\"\ninterval = \"100ms\"\n\
                       timeout = \"100ms\"\nunhealthy_threshold = 1\n"
        .into();
    let sg = Sessiongate::start(&setup);
    eventually(Duration::from_secs(5), "ready", || {
        sg.admin_get("/readyz").status == 200
    });
    backend.stop();
    eventually(Duration::from_secs(5), "not ready", || {
        sg.admin_get("/readyz").status == 503
    });
    let reply = sg.admin_get("/readyz");
    assert!(reply.body.contains("no server in rotation"), "{reply:?}");
}

#[test]
fn the_sessions_api_refuses_a_missing_or_wrong_token() {
    let backend = Backend::start("A");
    let sg = Sessiongate::start(&Setup::new(&[&backend], None));
    let wrong_same_length = format!("Bearer {}", "x".repeat(TOKEN.len()));
    let right = format!("Bearer {TOKEN}");
    for (path, headers) in [
        ("/sessions?user=ada", vec![]),
        ("/sessions/abc", vec![]),
        ("/sessions?user=ada", vec![("authorization", "Bearer ")]),
        (
            "/sessions?user=ada",
            vec![("authorization", wrong_same_length.as_str())],
        ),
        (
            "/sessions?user=ada",
            vec![("authorization", &right[..right.len() - 1])],
        ),
        ("/sessions?user=ada", vec![("authorization", TOKEN)]),
        (
            "/sessions?user=ada",
            vec![("authorization", &format!("Basic {TOKEN}"))],
        ),
    ] {
        let reply = http(sg.admin, "GET", path, &headers);
        assert_eq!(reply.status, 401, "{path} {headers:?}: {reply:?}");
        assert!(
            reply
                .header("www-authenticate")
                .is_some_and(|v| v.starts_with("Bearer")),
            "{reply:?}"
        );
    }
    for method in ["GET", "DELETE"] {
        let reply = http(
            sg.admin,
            method,
            "/sessions?user=ada",
            &[("authorization", &right)],
        );
        assert_ne!(reply.status, 401, "{method} with the token: {reply:?}");
    }
    // The token never appears in what the process prints.
    assert!(!sg.stdout().contains(TOKEN) && !sg.stderr().contains(TOKEN));
}

#[test]
fn without_a_token_every_sessions_call_is_refused() {
    let backend = Backend::start("A");
    let mut setup = Setup::new(&[&backend], None);
    setup.admin = Some(String::new());
    let sg = Sessiongate::start(&setup);
    let reply = http(
        sg.admin,
        "GET",
        "/sessions?user=ada",
        &[("authorization", &format!("Bearer {TOKEN}"))],
    );
    assert_eq!(reply.status, 401);
}

#[test]
fn without_admin_nothing_listens_and_the_proxy_still_serves() {
    let backend = Backend::start("A");
    let mut setup = Setup::new(&[&backend], None);
    setup.admin = None;
    let sg = Sessiongate::start(&setup);
    assert_eq!(sg.get("/").status, 200);
    assert!(std::net::TcpStream::connect(sg.admin).is_err());
}

//! Routes and pools: `[[routes]]` send requests to a second pool by host or
//! path, first match wins, no match goes to the default pool; a route with
//! `sessions = false` costs zero Redis commands and sends no session header,
//! while prefixed headers are still stripped both ways and the session
//! cookie still never reaches the backend.

mod common;

use common::{Backend, Browser, Proxy, Redis, Setup, StoreKind};

struct Routed {
    redis: Redis,
    default: Vec<Backend>,
    assets: Backend,
    proxy: Proxy,
}

async fn routed() -> Routed {
    let redis = Redis::start();
    let default = vec![Backend::start("one").await, Backend::start("two").await];
    let assets = Backend::start("assets").await;
    let mut setup = Setup::new(StoreKind::Redis);
    setup.upstreams = format!("[upstreams.pools.assets]\nservers = [{:?}]\n", assets.url());
    setup.timeouts = "\n[[routes]]\nhost = \"static.test\"\npool = \"assets\"\nsessions = false\n\
         [[routes]]\npath_prefix = \"/assets/\"\npool = \"assets\"\nsessions = false\n\
         [[routes]]\nhost = \"*.files.test\"\npool = \"assets\"\n"
        .to_string();
    let urls: Vec<String> = default.iter().map(Backend::url).collect();
    let proxy = Proxy::start(&setup.config(&urls, Some(&redis.url()))).await;
    Routed {
        redis,
        default,
        assets,
        proxy,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_pick_the_pool_by_host_and_path_and_the_rest_goes_to_the_default_pool() {
    let r = routed().await;
    let browser = Browser::new(r.proxy.addr);
    assert_eq!(browser.get("/assets/app.css").await.backend(), "assets");
    assert_eq!(
        browser
            .get_with("/x", &[("host", "static.test")])
            .await
            .backend(),
        "assets"
    );
    let sub = browser
        .get_with("/y", &[("host", "a.files.test:8080")])
        .await;
    assert_eq!(sub.backend(), "assets");
    // The third route keeps sessions: the backend hears them.
    assert_eq!(sub.seen_one("x-session-status").as_deref(), Some("new"));
    let mut others = Vec::new();
    for path in ["/", "/cart", "/assetsX", "/files.test"] {
        others.push(browser.get(path).await.backend());
    }
    assert!(
        others.iter().all(|b| b == "one" || b == "two"),
        "{others:?}"
    );
    assert!(r.assets.seen().iter().all(|s| !s.path.starts_with("/cart")));
    let _ = &r.default;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_without_sessions_costs_no_redis_command_and_sends_no_session_header() {
    let r = routed().await;
    let browser = Browser::new(r.proxy.addr);
    // A real session first, through the default pool.
    browser
        .get_with("/login", &[("x-test-update", "{\"user\":\"ada\"}")])
        .await;
    let cookie = browser.cookie().expect("a session cookie");
    let before = r.redis.command_stats();
    for _ in 0..5 {
        let reply = browser
            .get_with(
                "/assets/logo.png",
                &[
                    ("cookie", "theme=dark"),
                    ("x-session-id", "forged"),
                    ("x-session", "{\"admin\":true}"),
                    // The backend answers with an update, an action and a
                    // prefixed header of its own: none may do anything.
                    ("x-test-update", "{\"user\":\"eve\"}"),
                    ("x-test-action", "destroy"),
                    ("x-test-reply-header", "x-session-secret: 1"),
                ],
            )
            .await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.backend(), "assets");
        let seen: Vec<String> = reply.echo()["headers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|pair| pair[0].as_str().unwrap().to_string())
            .collect();
        assert!(
            !seen.iter().any(|name| name.starts_with("x-session")),
            "session headers reached a sessions = false backend: {seen:?}"
        );
        let cookies = reply.seen_header("cookie").join("; ");
        assert!(cookies.contains("theme=dark"), "{cookies}");
        assert!(!cookies.contains("sg_session"), "{cookies}");
        assert!(reply.set_cookies().is_empty());
        assert!(
            !reply
                .headers
                .keys()
                .any(|name| name.as_str().starts_with("x-session")),
            "{:?}",
            reply.headers
        );
    }
    let after = r.redis.command_stats();
    let commands = Redis::commands_between(&before, &after);
    assert_eq!(Redis::round_trips(&commands), 0, "{commands:?}");
    // The session is untouched: neither the update nor the destroy applied.
    browser.set_cookie(Some(cookie));
    let back = browser.get("/").await;
    assert_eq!(
        back.seen_one("x-session").as_deref(),
        Some("{\"user\":\"ada\"}")
    );
}

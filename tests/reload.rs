//! Reload: a new configuration serves every request that starts after it,
//! while a request in flight finishes under the old one; a broken
//! configuration keeps the old one and names file, line and key; a new
//! certificate is seen by the next handshake while an open TLS connection
//! goes on; a new secret put first still verifies old cookies. And SIGHUP
//! does it in the real binary.

mod common;
mod edge_support;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Backend, Browser, SECRET_A, SECRET_B, TempDir};
use edge_support::{EdgeProxy, Pki, TlsClient, backend_of, config, leaf_der, tls_table};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_finishes_on_the_old_servers_and_new_ones_go_to_the_new() {
    let old = Backend::start("old").await;
    let new = Backend::start("new").await;
    let proxy = EdgeProxy::start(&config("", &[old.url()], "", "")).await;
    let browser = Browser::new(proxy.addr);
    let slow = {
        let browser = browser.clone();
        tokio::spawn(async move {
            browser
                .get_with("/slow", &[("x-test-delay-ms", "1500")])
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.reload(&config("", &[new.url()], "", "")).unwrap();
    for _ in 0..3 {
        assert_eq!(browser.get("/after").await.backend(), "new");
    }
    let slow = slow.await.unwrap();
    assert_eq!(
        (slow.status.as_u16(), slow.backend()),
        (200, "old".to_string())
    );
    assert!(old.seen().iter().all(|s| s.path == "/slow"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_configuration_keeps_the_old_one_serving() {
    let backend = Backend::start("one").await;
    let good = config("", &[backend.url()], "", "");
    let proxy = EdgeProxy::start(&good).await;
    let broken = good.replace("[store]\n", "[store]\nkindd = \"memory\"\n");
    let error = proxy.reload(&broken).unwrap_err();
    assert!(
        error.contains("config.toml:") && error.contains("store.kindd"),
        "{error}"
    );
    let missing_pool = format!("{good}\n[[routes]]\npath_prefix = \"/x\"\npool = \"nope\"\n");
    let error = proxy.reload(&missing_pool).unwrap_err();
    assert!(error.contains("routes[0].pool"), "{error}");
    let browser = Browser::new(proxy.addr);
    assert_eq!(browser.get("/still").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_certificate_is_seen_by_the_next_handshake_and_open_connections_go_on() {
    let pki = Pki::new();
    let (cert, key) = pki.leaf("first", &["shop.test"], "ec");
    let (second_cert, second_key) = pki.leaf("second", &["shop.test"], "ec");
    let backend = Backend::start("one").await;
    let proxy = EdgeProxy::start(&config(&tls_table(&cert, &key), &[backend.url()], "", "")).await;
    let ca = pki.ca();
    let mut open = TlsClient::connect(proxy.addr, "shop.test", &ca).await;
    let served = |addr| {
        let ca = ca.clone();
        async move {
            let tls =
                edge_support::connect_tls(addr, "shop.test", edge_support::client_config(&ca, &[]))
                    .await
                    .unwrap();
            tls.get_ref().1.peer_certificates().unwrap()[0].clone()
        }
    };
    assert_eq!(served(proxy.addr).await, leaf_der(&cert));
    proxy
        .reload(&config(
            &tls_table(&second_cert, &second_key),
            &[backend.url()],
            "",
            "",
        ))
        .unwrap();
    assert_eq!(served(proxy.addr).await, leaf_der(&second_cert));
    let (response, _) = open.get("shop.test", "/", &[]).await;
    assert_eq!(
        response.status(),
        200,
        "the connection opened before goes on"
    );
    // A key that does not match its certificate is refused, naming the files.
    let error = proxy
        .reload(&config(
            &tls_table(&cert, &second_key),
            &[backend.url()],
            "",
            "",
        ))
        .unwrap_err();
    assert!(
        error.contains("server.tls.cert") && error.contains("do not go together"),
        "{error}"
    );
    assert_eq!(served(proxy.addr).await, leaf_der(&second_cert));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_secret_put_first_still_verifies_old_cookies() {
    let backend = Backend::start("one").await;
    let first = config("", &[backend.url()], "", "");
    let proxy = EdgeProxy::start(&first).await;
    let browser = Browser::new(proxy.addr);
    browser
        .get_with("/login", &[("x-test-update", "{\"user\":\"ada\"}")])
        .await;
    let rotated = first.replace(
        &format!("secrets = [{SECRET_A:?}]"),
        &format!("secrets = [{SECRET_B:?}, {SECRET_A:?}]"),
    );
    assert_ne!(rotated, first);
    proxy.reload(&rotated).unwrap();
    let reply = browser.get("/").await;
    assert_eq!(
        reply.seen_one("x-session-status").as_deref(),
        Some("active")
    );
    assert_eq!(
        reply.seen_one("x-session").as_deref(),
        Some("{\"user\":\"ada\"}")
    );
    // Dropping the old secret ends its cookies.
    proxy
        .reload(&first.replace(&format!("{SECRET_A:?}"), &format!("{SECRET_B:?}")))
        .unwrap();
    let reply = browser.get("/").await;
    assert_eq!(reply.seen_one("x-session-status").as_deref(), Some("new"));
}

/// The binary: SIGHUP reloads (upstreams swapped), a broken file is logged
/// as `config reload failed` with its line and key, and it keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_running_binary_and_logs_one_line_each_time() {
    let old = Backend::start("old").await;
    let new = Backend::start("new").await;
    let port = common::free_port();
    let dir = TempDir::new("sighup");
    let file = dir.0.join("config.toml");
    let text = |url: &str| {
        config("", &[url.to_string()], "", "").replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{port}\""),
        )
    };
    std::fs::write(&file, text(&old.url())).unwrap();
    let log = dir.0.join("stderr");
    let mut child = Command::new(env!("CARGO_BIN_EXE_sessiongate"))
        .args(["run", "--config"])
        .arg(&file)
        .env("SESSIONGATE_LOG", "info")
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
        .spawn()
        .unwrap();
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    common::wait_until_listening(addr);
    let browser = Browser::new(addr);
    assert_eq!(browser.get("/").await.backend(), "old");
    std::fs::write(&file, text(&new.url())).unwrap();
    common::signal(child.id(), "HUP");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(browser.get("/").await.backend(), "new");
    std::fs::write(
        &file,
        text(&old.url()).replace("[cookie]\n", "[cookie]\nnmae = \"x\"\n"),
    )
    .unwrap();
    common::signal(child.id(), "HUP");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(browser.get("/").await.backend(), "new");
    common::signal(child.id(), "TERM");
    let status = child.wait().unwrap();
    assert!(status.success());
    let logged = std::fs::read_to_string(&log).unwrap();
    assert_eq!(logged.matches("config reloaded").count(), 1, "{logged}");
    assert_eq!(
        logged.matches("config reload failed").count(),
        1,
        "{logged}"
    );
    assert!(logged.contains("cookie.nmae"), "{logged}");
    let _ = backend_of;
}

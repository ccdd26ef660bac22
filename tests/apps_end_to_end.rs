//! The example apps of examples/, run with the real frameworks behind the
//! sessiongate binary and a real Redis: two gunicorn Flask processes and two
//! Tornado processes share one session, round-robin, with no session code of
//! their own but the ~30-line helpers. Also the Odoo-style flow.
//!
//! Needs the Python environment that `scripts/prerequisites.sh` makes at
//! .venv (Flask, Tornado, gunicorn); `scripts/test.sh` runs these tests.

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::{Binary, Browser, Redis, Reply, Setup, StoreKind, free_port, wait_until_listening};
use futures_util::StreamExt;
use serde_json::{Value, json};

const NEEDS_VENV: &str = "needs .venv with Flask, Tornado and gunicorn: scripts/test.sh makes it";

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// A Python process of the example apps, killed when dropped.
struct App {
    child: Child,
    url: String,
}

impl App {
    fn start(dir: &str, program: &str, args: &[String]) -> (App, u16) {
        let port = free_port();
        let venv = repo(".venv/bin");
        assert!(venv.join("python").exists(), "{NEEDS_VENV}");
        let args: Vec<String> = args
            .iter()
            .map(|a| a.replace("{port}", &port.to_string()))
            .collect();
        let child = Command::new(venv.join(program))
            .args(&args)
            .current_dir(repo(dir))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let addr = format!("127.0.0.1:{port}").parse().unwrap();
        wait_until_listening(addr);
        (
            App {
                child,
                url: format!("http://{addr}"),
            },
            port,
        )
    }

    fn flask() -> App {
        let args = ["-w", "1", "-b", "127.0.0.1:{port}", "app:app"].map(String::from);
        App::start("examples/flask", "gunicorn", &args).0
    }

    fn tornado() -> App {
        let args = ["app.py", "--port", "{port}"].map(String::from);
        App::start("examples/tornado", "python", &args).0
    }

    fn odoo() -> App {
        let args = ["-w", "1", "-b", "127.0.0.1:{port}", "app:application"].map(String::from);
        App::start("examples/odoo", "gunicorn", &args).0
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn json_of(reply: &Reply) -> Value {
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    serde_json::from_slice(&reply.body).unwrap()
}

async fn form(browser: &Browser, path: &str, body: &str) -> Value {
    let headers = [("content-type", "application/x-www-form-urlencoded")];
    json_of(
        &browser
            .send("POST", path, &headers, body.to_string().into())
            .await,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs .venv with Flask, Tornado and gunicorn: scripts/test.sh makes it"]
async fn flask_and_tornado_share_one_session_round_robin_behind_sessiongate() {
    let redis = Redis::start();
    let apps = [App::flask(), App::flask(), App::tornado(), App::tornado()];
    let urls: Vec<String> = apps.iter().map(|a| a.url.clone()).collect();
    let setup = Setup::new(StoreKind::Redis);
    let gate = Binary::start(&setup.config(&urls, Some(&redis.url())));
    let browser = Browser::new(gate.addr);

    // An anonymous visitor puts something in the cart, then logs in.
    let first = form(&browser, "/cart/add", "item=anonymous-apple").await;
    assert_eq!(first["cart"], json!(["anonymous-apple"]));
    let anonymous_cookie = browser.cookie().expect("storing created a session");
    let login = form(&browser, "/login", "login=ada").await;
    assert_eq!(login["user"], "ada");
    let logged_in_cookie = browser.cookie().unwrap();
    assert_ne!(logged_in_cookie, anonymous_cookie, "login rotated the sid");
    let old = Browser::new(gate.addr);
    old.set_cookie(Some(anonymous_cookie));
    assert_eq!(
        json_of(&old.get("/whoami").await)["cart"],
        json!([]),
        "the pre-login sid is dead"
    );

    // Twenty round-robin requests reach all four processes; the cart is whole.
    let mut served_by = HashSet::new();
    for i in 0..20 {
        let state = form(&browser, "/cart/add", &format!("item=item-{i}")).await;
        served_by.insert(state["app"].as_str().unwrap().to_string());
        assert_eq!(state["user"], "ada");
        assert_eq!(
            state["cart"].as_array().unwrap().len(),
            i + 2,
            "the cart lost an item"
        );
    }
    assert_eq!(
        served_by.len(),
        4,
        "all four processes served: {served_by:?}"
    );
    assert!(
        served_by.iter().any(|a| a.starts_with("flask"))
            && served_by.iter().any(|a| a.starts_with("tornado"))
    );
    let mut expected = vec![json!("anonymous-apple")];
    expected.extend((0..20).map(|i| json!(format!("item-{i}"))));
    let whoami = json_of(&browser.get("/whoami").await);
    assert_eq!(whoami["cart"], Value::Array(expected.clone()));

    // A second sessiongate sharing Redis (in front of the Tornado processes,
    // which also serve the WebSocket) serves the same session.
    let second = Binary::start(&setup.config(&urls[2..], Some(&redis.url())));
    let elsewhere = Browser::new(second.addr);
    elsewhere.set_cookie(Some(logged_in_cookie.clone()));
    let there = json_of(&elsewhere.get("/whoami").await);
    assert_eq!(
        (there["user"].clone(), there["cart"].clone()),
        (json!("ada"), Value::Array(expected))
    );

    // A WebSocket from the Tornado app sees the logged-in user at the handshake.
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!(
            "ws://{}/ws",
            second.addr
        ))
        .unwrap();
    request.headers_mut().insert(
        "cookie",
        format!("sg_session={logged_in_cookie}").parse().unwrap(),
    );
    let stream = tokio::net::TcpStream::connect(second.addr).await.unwrap();
    let (mut socket, _) = tokio_tungstenite::client_async(request, stream)
        .await
        .unwrap();
    let greeting = socket.next().await.unwrap().unwrap().into_text().unwrap();
    let greeting: Value = serde_json::from_str(&greeting).unwrap();
    assert_eq!(greeting["user"], "ada");
    drop(socket);

    // Logout ends the session everywhere.
    let bye = form(&browser, "/logout", "").await;
    assert_eq!(bye["user"], Value::Null);
    assert_eq!(browser.cookie(), None, "the cookie was expired");
    for addr in [gate.addr, second.addr] {
        let replay = Browser::new(addr);
        replay.set_cookie(Some(logged_in_cookie.clone()));
        let state = json_of(&replay.get("/whoami").await);
        assert_eq!(
            (state["user"].clone(), state["cart"].clone()),
            (Value::Null, json!([])),
            "{addr}"
        );
    }
    assert!(
        redis
            .keys()
            .iter()
            .all(|k| !k.contains(logged_in_cookie.split('.').next().unwrap()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs .venv with Flask, Tornado and gunicorn: scripts/test.sh makes it"]
async fn the_odoo_style_flow_logs_in_reads_and_logs_out_through_sessiongate() {
    let redis = Redis::start();
    let apps = [App::odoo(), App::odoo()];
    let urls: Vec<String> = apps.iter().map(|a| a.url.clone()).collect();
    let gate = Binary::start(&Setup::new(StoreKind::Redis).config(&urls, Some(&redis.url())));
    let browser = Browser::new(gate.addr);
    let rpc = |params: Value| {
        bytes::Bytes::from(json!({ "jsonrpc": "2.0", "params": params }).to_string())
    };
    let json_headers = [("content-type", "application/json")];

    let denied = browser
        .send(
            "POST",
            "/web/session/authenticate",
            &json_headers,
            rpc(json!({"login": "admin", "password": "wrong"})),
        )
        .await;
    assert_eq!(json_of(&denied)["error"]["message"], "Access Denied");
    assert_eq!(browser.cookie(), None);

    let ok = browser
        .send(
            "POST",
            "/web/session/authenticate",
            &json_headers,
            rpc(json!({"db": "shop", "login": "admin", "password": "admin"})),
        )
        .await;
    assert_eq!(json_of(&ok)["result"]["uid"], 2);
    assert!(browser.cookie().is_some());
    for _ in 0..4 {
        let info = json_of(
            &browser
                .send(
                    "POST",
                    "/web/session/get_session_info",
                    &json_headers,
                    rpc(json!({})),
                )
                .await,
        );
        assert_eq!(info["result"]["login"], "admin");
        assert_eq!(info["result"]["db"], "shop");
        assert_eq!(info["result"]["context"]["uid"], 2);
    }
    browser
        .send(
            "POST",
            "/web/session/destroy",
            &json_headers,
            rpc(json!({})),
        )
        .await;
    let after = json_of(
        &browser
            .send(
                "POST",
                "/web/session/get_session_info",
                &json_headers,
                rpc(json!({})),
            )
            .await,
    );
    assert_eq!(after["result"]["uid"], Value::Null);
    assert!(redis.keys().is_empty());
}

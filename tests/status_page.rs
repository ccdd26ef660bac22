//! The status page in a real browser: Debian's chromium, headless, driven
//! over the DevTools protocol (a small client on tokio-tungstenite). The
//! page lists the servers, and a backend killed mid-test turns "out of
//! rotation" on the page without a reload; it loads nothing from elsewhere
//! and fits a phone's width. Screenshots go to target/status-page*.png.
//!
//! chromium is installed by scripts/prerequisites.sh; without it this test
//! fails and says so.

mod ops_support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use ops_support::*;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// chromium, headless, with a DevTools port; killed by its PID when dropped.
struct Chromium {
    child: Child,
    profile: PathBuf,
    port: u16,
}

impl Chromium {
    fn start() -> Chromium {
        let binary = ["chromium", "chromium-browser"]
            .into_iter()
            .find(|b| {
                Command::new("sh")
                    .args(["-c", &format!("command -v {b}")])
                    .output()
                    .is_ok_and(|o| o.status.success())
            })
            .unwrap_or_else(|| {
                panic!(
                    "chromium is not installed: run scripts/prerequisites.sh \
                     (apt-get install chromium); the status page test needs a real browser"
                )
            });
        let profile =
            std::env::temp_dir().join(format!("sessiongate-chromium-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&profile);
        std::fs::create_dir_all(&profile).unwrap();
        let child = Command::new(binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--hide-scrollbars",
                "--window-size=1000,1100",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromium could not be run");
        let active = profile.join("DevToolsActivePort");
        let deadline = Instant::now() + Duration::from_secs(30);
        let port = loop {
            if let Some(port) = std::fs::read_to_string(&active)
                .ok()
                .and_then(|t| t.lines().next().and_then(|l| l.parse::<u16>().ok()))
            {
                break port;
            }
            assert!(
                Instant::now() < deadline,
                "chromium opened no DevTools port"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        Chromium {
            child,
            profile,
            port,
        }
    }

    /// The DevTools WebSocket URL of the open page.
    fn page_socket(&self) -> String {
        let addr = format!("127.0.0.1:{}", self.port).parse().unwrap();
        let mut found = None;
        eventually(Duration::from_secs(10), "a chromium page", || {
            let reply = get(addr, "/json/list");
            let pages: Value = serde_json::from_str(&reply.body).unwrap_or(Value::Null);
            found = pages.as_array().and_then(|pages| {
                pages
                    .iter()
                    .find(|p| p["type"] == "page")
                    .and_then(|p| p["webSocketDebuggerUrl"].as_str().map(str::to_string))
            });
            found.is_some()
        });
        found.unwrap()
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A DevTools protocol client: one command at a time.
struct Cdp {
    runtime: tokio::runtime::Runtime,
    socket: Socket,
    next: u64,
}

impl Cdp {
    fn connect(url: &str) -> Cdp {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (socket, _) = runtime
            .block_on(tokio_tungstenite::connect_async(url))
            .expect("the DevTools WebSocket");
        Cdp {
            runtime,
            socket,
            next: 0,
        }
    }

    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        let message = json!({ "id": id, "method": method, "params": params }).to_string();
        let socket = &mut self.socket;
        self.runtime.block_on(async {
            socket.send(Message::text(message)).await.unwrap();
            let answer = tokio::time::timeout(Duration::from_secs(30), async {
                while let Some(message) = socket.next().await {
                    let Ok(Message::Text(text)) = message else {
                        continue;
                    };
                    let value: Value = serde_json::from_str(&text).unwrap();
                    if value["id"] == id {
                        return value;
                    }
                }
                panic!("the DevTools socket closed");
            })
            .await
            .unwrap_or_else(|_| panic!("no answer to {method}"));
            if let Some(error) = answer.get("error") {
                panic!("{method}: {error}");
            }
            answer["result"].clone()
        })
    }

    /// Evaluates a JavaScript expression in the page; its value.
    fn eval(&mut self, expression: &str) -> Value {
        let result = self.call(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true }),
        );
        result["result"]["value"].clone()
    }

    fn wait_for(&mut self, limit: Duration, what: &str, expression: &str) {
        let deadline = Instant::now() + limit;
        loop {
            if self.eval(expression) == Value::Bool(true) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what} ({expression})"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn screenshot(&mut self, path: &Path) {
        let shot = self.call("Page.captureScreenshot", json!({ "format": "png" }));
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        std::fs::write(path, png).unwrap();
    }
}

/// Requests in the background, at a rate that rises and falls, so that the
/// sparkline has something to draw; sessions are created and rotated too.
fn traffic(addr: std::net::SocketAddr, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let started = Instant::now();
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            n += 1;
            let path = match n % 10 {
                0 => "/set",
                5 => "/login",
                _ => "/",
            };
            let _ = std::panic::catch_unwind(|| get(addr, path));
            let phase = started.elapsed().as_secs_f64() / 6.0;
            let pause = 20.0 + 60.0 * (1.0 + phase.sin()) / 2.0;
            std::thread::sleep(Duration::from_millis(pause as u64));
        }
    })
}

#[test]
fn the_status_page_lists_the_servers_and_shows_one_leaving_rotation_without_a_reload() {
    let redis = Redis::start();
    let (a, mut b) = (Backend::start("A"), Backend::start("B"));
    let mut setup = Setup::new(&[&a, &b], Some(&redis));
    setup.upstreams = "[upstreams.health]\npath = \"/healthz\"\ninterval = \"200ms\"\n\
                       timeout = \"200ms\"\nunhealthy_threshold = 1\n"
        .into();
    setup.log = "access = \"off\"\n".into();
    let sg = Sessiongate::start(&setup);
    let stop = Arc::new(AtomicBool::new(false));
    let load = traffic(sg.addr, stop.clone());

    let chromium = Chromium::start();
    let mut page = Cdp::connect(&chromium.page_socket());
    page.call("Page.enable", json!({}));
    let url = format!("http://{}/status", sg.admin);
    page.call("Page.navigate", json!({ "url": url }));
    page.wait_for(
        Duration::from_secs(15),
        "both servers listed",
        "document.querySelectorAll('#servers tbody tr').length === 2",
    );
    let rows = page.eval(
        "[...document.querySelectorAll('#servers tbody tr')].map(r => [r.dataset.server, r.innerText])",
    );
    for backend in [&a.url(), &b.url()] {
        let row = rows
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r[0] == backend.as_str())
            .unwrap_or_else(|| panic!("{backend} is not listed: {rows}"));
        assert!(
            row[1].as_str().unwrap().contains("in rotation"),
            "{backend}: {row}"
        );
    }
    // A mark that a reload would wipe out.
    page.eval("window.__notReloaded = true");

    // The sparkline draws once there are a few samples.
    page.wait_for(
        Duration::from_secs(30),
        "the sparkline",
        "document.querySelector('#spark .line').getAttribute('d').length > 20",
    );

    // For a screenshot with a longer history (docs/status.png):
    // STATUS_PAGE_HISTORY_SECONDS=180 cargo test --test status_page
    if let Some(seconds) = std::env::var("STATUS_PAGE_HISTORY_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        std::thread::sleep(Duration::from_secs(seconds));
    }
    let gone = b.url();
    b.stop();
    page.wait_for(
        Duration::from_secs(15),
        "the stopped backend out of rotation",
        &format!(
            "[...document.querySelectorAll('#servers tbody tr')].some(r => \
             r.dataset.server === {gone:?} && r.innerText.includes('out of rotation'))"
        ),
    );
    assert_eq!(
        page.eval("window.__notReloaded === true"),
        Value::Bool(true),
        "the page changed without a reload"
    );
    let other = page.eval(&format!(
        "[...document.querySelectorAll('#servers tbody tr')].find(r => r.dataset.server === {:?}).innerText",
        a.url()
    ));
    assert!(
        !other.as_str().unwrap().contains("out of rotation"),
        "{other}"
    );
    // Nothing loaded from anywhere but the admin listener.
    let foreign = page.eval(&format!(
        "performance.getEntriesByType('resource').map(e => e.name).filter(n => !n.startsWith('http://{}/'))",
        sg.admin
    ));
    assert_eq!(foreign, json!([]), "the page loaded from elsewhere");
    let rate = page.eval("document.getElementById('rate').textContent");
    assert_ne!(rate, json!("–"), "a request rate is shown");

    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    std::fs::create_dir_all(&target).unwrap();
    page.screenshot(&target.join("status-page.png"));

    // At a phone's width nothing sticks out sideways.
    page.call(
        "Emulation.setDeviceMetricsOverride",
        json!({ "width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": true }),
    );
    std::thread::sleep(Duration::from_millis(500));
    page.screenshot(&target.join("status-page-phone.png"));
    let width = page.eval("document.documentElement.scrollWidth");
    assert!(
        width.as_u64().unwrap() <= 390,
        "scrollWidth {width} at 390 px"
    );

    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
}

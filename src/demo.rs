//! `sessiongate demo`: two small backends on loopback and the proxy in front
//! of them with the memory store, so that a browser shows one session
//! surviving round-robin: a visit counter, a login (rotate) and a logout
//! (destroy). The backends know nothing of Redis or cookies: they read
//! `X-Session` and answer `X-Session-Update` / `X-Session-Action`, as any
//! backend behind sessiongate does.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, LOCATION};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::config::Config;
use crate::error::StartError;
use crate::server::Server;
use crate::session::cookie::keygen;

/// The demo, bound and ready to run.
pub struct Demo {
    /// The proxy, in front of the backends.
    pub server: Server,
    /// The backends: name and address.
    pub backends: Vec<(&'static str, SocketAddr)>,
}

/// Starts the two backends on free loopback ports and binds the proxy on `listen`.
pub async fn start(listen: SocketAddr) -> Result<Demo, StartError> {
    let mut backends = Vec::new();
    for name in ["A", "B"] {
        let addr = SocketAddr::from(([127, 0, 0, 1], 0));
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })?;
        backends.push((name, listener.local_addr().expect("bound")));
        tokio::spawn(serve_backend(name, listener));
    }
    // The demo's configuration is an ordinary one: a fresh secret, the memory
    // store, and a cookie that also works over plain http on loopback.
    let text = format!(
        "[server]\nlisten = \"{listen}\"\n\
         [upstreams]\nservers = [\"http://{}\", \"http://{}\"]\n\
         [cookie]\nsecrets = [\"{}\"]\nsecure = false\n\
         [store]\nkind = \"memory\"\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n\
         [log]\naccess = \"text\"\n",
        backends[0].1,
        backends[1].1,
        keygen()
    );
    let config =
        Config::parse(&text, Path::new("<demo>")).expect("the demo configuration is valid");
    let server = Server::bind(&config).await?;
    Ok(Demo { server, backends })
}

async fn serve_backend(name: &'static str, listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let service =
            service_fn(
                move |request| async move { Ok::<_, Infallible>(backend(name, request).await) },
            );
        tokio::spawn(async move {
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// One demo backend: the page, login and logout.
async fn backend(name: &'static str, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let session: Value = request
        .headers()
        .get("x-session")
        .and_then(|v| serde_json::from_slice(v.as_bytes()).ok())
        .unwrap_or_else(|| json!({}));
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let status = header("x-session-status");
    let sid = header("x-session-id");
    match (request.method(), request.uri().path()) {
        (&Method::GET, "/") => {
            let visits = session["visits"].as_u64().unwrap_or(0) + 1;
            let seen = Seen {
                backend: name,
                status: &status,
                sid: &sid,
                raw_session: &header("x-session"),
            };
            Response::builder()
                .header(CONTENT_TYPE, "text/html; charset=utf-8")
                .header("x-session-update", json!({ "visits": visits }).to_string())
                .body(Full::from(page(&seen, visits, &session)))
        }
        (&Method::POST, "/login") => {
            let form = Limited::new(request.into_body(), 4096).collect().await;
            let form = form.map(|b| b.to_bytes()).unwrap_or_default();
            let who = form_urlencoded::parse(&form)
                .find(|(k, _)| k == "name")
                .map(|(_, v)| v.trim().chars().take(40).collect::<String>())
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| "anonymous".into());
            // Login: store the name and move the session to a fresh sid. The
            // start of the old sid is kept, so that the page can show the change.
            let update = json!({ "name": who, "sid_before_login": short(&sid) });
            Response::builder()
                .status(StatusCode::SEE_OTHER)
                .header(LOCATION, "/")
                .header("x-session-update", update.to_string())
                .header("x-session-action", "rotate")
                .body(Full::default())
        }
        (&Method::POST, "/logout") => Response::builder()
            .status(StatusCode::SEE_OTHER)
            .header(LOCATION, "/")
            .header("x-session-action", "destroy")
            .body(Full::default()),
        _ => Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Full::from("not found\n")),
    }
    .expect("static parts are valid")
}

/// What a demo backend was told about the request it serves.
struct Seen<'a> {
    backend: &'a str,
    status: &'a str,
    sid: &'a str,
    /// The `X-Session` header's value, exactly as received.
    raw_session: &'a str,
}

/// The first characters of a sid: enough to tell two apart on the page.
fn short(sid: &str) -> &str {
    sid.get(..8).unwrap_or(sid)
}

fn page(seen: &Seen<'_>, visits: u64, session: &Value) -> String {
    let user = match session["name"].as_str() {
        Some(name) => {
            let rotated = match session["sid_before_login"].as_str() {
                Some(before) if before != short(seen.sid) => format!(
                    "<p>Your session id changed at login, from <code>{}…</code> to \
                     <code>{}…</code>: this is session fixation protection.</p>",
                    escape(before),
                    escape(short(seen.sid))
                ),
                _ => String::new(),
            };
            format!(
                "<p>Logged in as <b>{}</b>.</p>{rotated}\
                 <form method=post action=/logout><button>Log out (destroy)</button></form>",
                escape(name)
            )
        }
        None => "<form method=post action=/login>\
                 <input name=name placeholder='your name' autofocus> \
                 <button>Log in (rotate)</button></form>"
            .to_string(),
    };
    // The inline icon keeps the browser from asking for /favicon.ico: that
    // request would take a turn of the round-robin, and the first reload
    // would then land on the same backend again.
    format!(
        "<!doctype html><html><head><meta charset=utf-8>\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <link rel=\"icon\" href=\"data:,\"><title>sessiongate demo</title>\
         <style>body{{font:16px system-ui;max-width:36em;margin:3em auto;padding:0 1em}}\
         .b{{font-size:2em;color:{color}}}code{{background:#eee;padding:0 .3em;overflow-wrap:anywhere}}</style></head><body>\
         <h1>sessiongate demo</h1>\
         <p class=b>Served by backend {backend}</p>\
         <p>Visits in this session: <b>{visits}</b></p>{user}\
         <p>Session <code>{sid}…</code>, status <code>{status}</code> when this request arrived.</p>\
         <p>The <code>X-Session</code> header this backend received: <code>{raw}</code></p>\
         <p>Reload: the backends alternate (round-robin, no stickiness) while the counter \
         and the name persist. The backends keep no state; sessiongate passes the session \
         to them as the <code>X-Session</code> header and stores what they send back.</p>\
         </body></html>",
        color = if seen.backend == "A" {
            "#1565c0"
        } else {
            "#2e7d32"
        },
        backend = seen.backend,
        sid = escape(short(seen.sid)),
        status = escape(seen.status),
        raw = escape(seen.raw_session),
    )
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

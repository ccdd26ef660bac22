//! What `tests/users.rs` (and `tests/users_cluster.rs`) share: a login
//! through the proxy, the session machinery on the test's own store (to
//! call the admin API's handler without a listener), and the CLI.

#![allow(dead_code)]

use std::path::Path;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::BodyExt;
use sessiongate::Config;
use sessiongate::session::store::Store;
use sessiongate::session::{CookieChange, Instructions, Sessions};
use sessiongate::settings::Settings;

use crate::common::{Browser, SECRET_A};

/// Logs a browser in as `user`, as a backend does: an update, `rotate`,
/// and `X-Session-User`.
pub async fn login(browser: &Browser, user: &str) {
    let bind = format!("X-Session-User: {user}");
    let reply = browser
        .get_with(
            "/login",
            &[
                ("x-test-update", r#"{"cart":1}"#),
                ("x-test-action", "rotate"),
                ("x-test-reply-header", &bind),
            ],
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        !reply.headers.contains_key("x-session-user"),
        "the binding never reaches the client"
    );
    assert!(browser.sid().is_some(), "a login sets a cookie");
}

/// The configuration text of a proxy on this store (`store` is the
/// `[store]` body) with these extra `[session]` lines.
pub fn config_text(store: &str, session: &str) -> String {
    format!(
        "[upstreams]\nservers = [\"http://127.0.0.1:9\"]\n\
         [cookie]\nsecrets = [\"{SECRET_A}\"]\n\
         [session]\n{session}\n\
         [store]\n{store}\n"
    )
}

/// The session machinery for a configuration, as a proxy builds it.
pub fn sessions_for(text: &str) -> Sessions {
    let config = Config::parse(text, Path::new("test.toml")).expect("a valid test config");
    let settings = Settings::new(config);
    let config = &settings.config;
    let store = Store::open(&config.store, settings.policy, settings.timeouts.store).unwrap();
    Sessions::new(
        sessiongate::session::cookie::CookieCodec::new(&config.cookie),
        store,
        settings.policy,
        config.store.on_error,
    )
    .max_per_user(config.session.max_per_user)
}

/// The session machinery on the Redis at `url`.
pub fn sessions_on(url: &str, session: &str) -> Sessions {
    sessions_for(&config_text(
        &format!("kind = \"redis\"\nurl = \"{url}\""),
        session,
    ))
}

/// The session machinery on a memory store of its own.
pub fn memory_sessions() -> Sessions {
    sessions_for(&config_text("kind = \"memory\"", ""))
}

/// A new session, bound to `user` at once (a login without a proxy); its sid.
pub async fn bind(sessions: &Sessions, user: &str) -> String {
    let new = sessions.resolve(None).await.unwrap();
    let asks = Instructions::parse([br#"{"n":1}"#.as_slice()], [b"rotate".as_slice()])
        .and_then(|i| i.bind([user.as_bytes()]));
    match sessions.commit(&new, asks).await.unwrap() {
        CookieChange::Set(sid) => sid.as_str().to_string(),
        other => panic!("no session stored: {other:?}"),
    }
}

/// One admin API call, answered by the handler; its status and JSON body
/// (`null` when empty).
pub async fn admin(
    sessions: &Sessions,
    method: &str,
    path: &str,
) -> (StatusCode, serde_json::Value) {
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .body(())
        .unwrap();
    let response = sessiongate::users_api::handle(sessions, &request)
        .await
        .expect("a /sessions path is answered");
    let status = response.status();
    let body: Bytes = response.into_body().collect().await.unwrap().to_bytes();
    let json = match body.is_empty() {
        true => serde_json::Value::Null,
        false => serde_json::from_slice(&body).unwrap(),
    };
    (status, json)
}

/// `sessiongate sessions …` against a configuration file.
pub mod cli {
    use crate::common::TempDir;

    /// A configuration file naming this Redis, in a directory removed when
    /// the result is dropped.
    pub fn config(url: &str) -> (TempDir, std::path::PathBuf) {
        let dir = TempDir::new("users-cli");
        let path = dir.0.join("config.toml");
        let text = super::config_text(&format!("kind = \"redis\"\nurl = \"{url}\""), "");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    /// Runs `sessiongate sessions <args> --config <file>`.
    pub fn run(config: &(TempDir, std::path::PathBuf), args: &[&str]) -> (Option<i32>, String) {
        let mut all: Vec<&std::ffi::OsStr> = vec!["sessions".as_ref()];
        all.extend(args.iter().map(|a| std::ffi::OsStr::new(*a)));
        all.push("--config".as_ref());
        all.push(config.1.as_os_str());
        crate::common::sessiongate(&all, &[("SESSIONGATE_LOG", "error")])
    }
}

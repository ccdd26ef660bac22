//! SPEC §1: the `sessiongate` binary itself: `check`, `keygen`, `run` and
//! `demo`, with their exit codes.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use base64::Engine;
use common::{Backend, Browser, SECRET_A};

const BIN: &str = env!("CARGO_BIN_EXE_sessiongate");

fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("sessiongate-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn check_accepts_the_example_config_and_says_what_it_would_do() {
    let output = Command::new(BIN)
        .args([
            "check",
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml"),
        ])
        .env("SESSIONGATE_SECRET", SECRET_A)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("http://127.0.0.1:9001, http://127.0.0.1:9002"),
        "{stdout}"
    );
    assert!(stdout.contains("sg_session"), "{stdout}");
    assert!(!stdout.contains(SECRET_A), "check printed the secret");
}

#[test]
fn check_names_the_file_line_and_key_of_a_bad_value_and_exits_1() {
    let path = temp_file(
        "bad",
        &format!(
            "[upstreams]\nservers = [\"http://127.0.0.1:1\"]\n[cookie]\nsecrets = [\"{SECRET_A}\"]\n[session]\nidle_timeout = \"soon\"\n"
        ),
    );
    let (code, output) = common::sessiongate(
        &["check".as_ref(), "--config".as_ref(), path.as_os_str()],
        &[],
    );
    assert_eq!(code, Some(1));
    assert!(
        output.contains(&format!("{}:6:16: session.idle_timeout:", path.display())),
        "{output}"
    );
}

#[test]
fn run_with_a_bad_config_exits_1_with_the_reason() {
    let path = temp_file(
        "unknown",
        "[upstreams]\nservers = [\"http://127.0.0.1:1\"]\nbogus = 1\n",
    );
    let (code, output) = common::sessiongate(
        &["run".as_ref(), "--config".as_ref(), path.as_os_str()],
        &[],
    );
    assert_eq!(code, Some(1));
    assert!(
        output.contains("upstreams.bogus") && output.contains("unknown field"),
        "{output}"
    );
    let (code, output) =
        common::sessiongate(&["--config".as_ref(), "/nonexistent/sg.toml".as_ref()], &[]);
    assert_eq!(code, Some(1));
    assert!(output.contains("/nonexistent/sg.toml"), "{output}");
}

/// `sessiongate check` of this configuration text: exit code and output.
fn check(name: &str, text: &str, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let path = temp_file(name, text);
    common::sessiongate(
        &["check".as_ref(), "--config".as_ref(), path.as_os_str()],
        env,
    )
}

fn with_upstream_and_secret(extra: &str) -> String {
    format!(
        "[upstreams]\nservers = [\"http://127.0.0.1:1\"]\n[cookie]\nsecrets = [\"{SECRET_A}\"]\n{extra}"
    )
}

#[test]
fn a_missing_config_file_names_its_os_error_once() {
    for args in [&["check", "--config"][..], &["--config"]] {
        let mut args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
        args.push("/nonexistent/sg.toml".as_ref());
        let (code, output) = common::sessiongate(&args, &[]);
        assert_eq!(code, Some(1), "{output}");
        assert!(
            output.contains("/nonexistent/sg.toml: cannot read the configuration"),
            "{output}"
        );
        assert_eq!(output.matches("os error 2").count(), 1, "{output}");
    }
}

#[test]
fn a_busy_port_names_its_os_error_once() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let text = format!(
        "[server]\nlisten = \"{addr}\"\n{}[store]\nkind = \"memory\"\n",
        with_upstream_and_secret("")
    );
    let path = temp_file("busy-port", &text);
    let (code, output) =
        common::sessiongate(&["run".as_ref(), "--config".as_ref(), path.as_ref()], &[]);
    assert_eq!(code, Some(1), "{output}");
    assert!(
        output.contains(&format!("cannot listen on {addr}")),
        "{output}"
    );
    assert_eq!(output.matches("os error 98").count(), 1, "{output}");
}

#[tokio::test]
async fn run_names_the_store_it_cannot_reach_without_its_password() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let listen = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let text = format!(
        "[server]\nlisten = \"{listen}\"\n{}[store]\nurl = \"redis://app:pa55word@127.0.0.1:{port}/0\"\ntimeout = \"200ms\"\n",
        with_upstream_and_secret("")
    );
    let path = temp_file("unreachable-store", &text);
    let mut child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let mut said = String::new();
    for line in lines.by_ref().take(20) {
        let line = line.unwrap();
        said.push_str(&line);
        said.push('\n');
        if line.contains("serving") {
            break;
        }
    }
    common::signal(child.id(), "TERM");
    let _ = child.wait();
    assert!(said.contains(&format!("127.0.0.1:{port}")), "{said}");
    assert!(said.contains("does not answer"), "{said}");
    assert!(!said.contains("pa55word"), "the password leaked: {said}");
}

#[test]
fn a_listen_address_with_a_host_name_asks_for_an_ip_address() {
    let text = format!(
        "[server]\nlisten = \"localhost:8080\"\n{}",
        with_upstream_and_secret("")
    );
    let (code, output) = check("listen-host", &text, &[]);
    assert_eq!(code, Some(1), "{output}");
    assert!(
        output.contains("server.listen: \"localhost:8080\" is not an IP address and port")
            && output.contains("\"127.0.0.1:8080\""),
        "{output}"
    );
}

#[test]
fn a_redis_url_without_a_scheme_asks_for_redis_and_hides_the_password() {
    let (code, output) = check(
        "redis-scheme",
        &with_upstream_and_secret("[store]\nurl = \"127.0.0.1:6379\"\n"),
        &[],
    );
    assert_eq!(code, Some(1), "{output}");
    assert!(
        output.contains("store.url: the URL needs redis:// or rediss://")
            && output.contains("\"redis://127.0.0.1:6379\""),
        "{output}"
    );
    assert!(!output.contains("InvalidClientConfig"), "{output}");
    let (code, output) = check(
        "redis-scheme-password",
        &with_upstream_and_secret("[store]\nurl = \"app:pa55word@127.0.0.1:6379/0\"\n"),
        &[],
    );
    assert_eq!(code, Some(1), "{output}");
    assert!(output.contains("redis://***@127.0.0.1:6379/0"), "{output}");
    assert!(
        !output.contains("pa55word"),
        "the password leaked: {output}"
    );
}

#[test]
fn check_warns_of_an_absolute_timeout_shorter_than_the_idle_timeout() {
    let (code, output) = check(
        "timeouts",
        &with_upstream_and_secret("[session]\nidle_timeout = \"2h\"\nabsolute_timeout = \"1h\"\n"),
        &[],
    );
    assert_eq!(code, Some(0), "{output}");
    assert!(
        output.contains(
            "warning: session.absolute_timeout (1h) is not longer than session.idle_timeout (2h)"
        ),
        "{output}"
    );
    let (_, output) = check("timeouts-default", &with_upstream_and_secret(""), &[]);
    assert!(!output.contains("absolute_timeout"), "{output}");
}

#[test]
fn check_warns_of_a_secret_listed_twice_naming_it_by_origin_only() {
    let text = format!(
        "[upstreams]\nservers = [\"http://127.0.0.1:1\"]\n[cookie]\n\
         secrets = [\"{SECRET_A}\", \"env:SG_TEST_SAME_SECRET\"]\n"
    );
    let (code, output) = check("same-secret", &text, &[("SG_TEST_SAME_SECRET", SECRET_A)]);
    assert_eq!(code, Some(0), "{output}");
    assert!(
        output.contains(
            "warning: cookie.secrets: entry 2 (env:SG_TEST_SAME_SECRET) is the same secret as entry 1 (inline)"
        ),
        "{output}"
    );
    assert!(!output.contains(SECRET_A), "the secret leaked: {output}");
}

#[test]
fn help_names_the_environment_variables_sessiongate_reads() {
    let (code, output) = common::sessiongate(&["--help".as_ref()], &[]);
    assert_eq!(code, Some(0), "{output}");
    for name in [
        "SESSIONGATE_SECRET",
        "SESSIONGATE_LOG",
        "SESSIONGATE_CONFIG",
    ] {
        assert!(
            output.contains(name),
            "{name} missing from --help: {output}"
        );
    }
    assert!(
        output.contains("env:SESSIONGATE_SECRET"),
        "how config.toml reads the secret: {output}"
    );
}

#[test]
fn only_the_commands_that_read_the_config_take_config() {
    for (command, reads_config) in [
        ("run", true),
        ("check", true),
        ("keygen", false),
        ("demo", false),
    ] {
        let (code, output) = common::sessiongate(&[command.as_ref(), "--help".as_ref()], &[]);
        assert_eq!(code, Some(0), "{command}: {output}");
        assert_eq!(
            output.contains("--config"),
            reads_config,
            "{command}: {output}"
        );
    }
    let (code, output) = common::sessiongate(
        &["keygen".as_ref(), "--config".as_ref(), "x.toml".as_ref()],
        &[],
    );
    assert_eq!(code, Some(2), "{output}");
}

#[test]
fn keygen_prints_32_bytes_of_base64_and_never_the_same_twice() {
    let run = || {
        let output = Command::new(BIN).arg("keygen").output().unwrap();
        assert!(output.status.success());
        String::from_utf8(output.stdout).unwrap().trim().to_string()
    };
    let (a, b) = (run(), run());
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(&a)
        .unwrap();
    assert_eq!(bytes.len(), 32);
    assert_ne!(a, b);
}

#[tokio::test]
async fn run_serves_until_sigterm_then_exits_0() {
    let backend = Backend::start("one").await;
    let port = common::free_port();
    let path = temp_file(
        "run",
        &format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[upstreams]\nservers = [\"{}\"]\n[cookie]\nsecrets = [\"env:SG_TEST_SECRET\"]\n[store]\nkind = \"memory\"\n",
            backend.url()
        ),
    );
    // The config is found through $SESSIONGATE_CONFIG, and `run` is the default.
    let mut child = Command::new(BIN)
        .env("SESSIONGATE_CONFIG", &path)
        .env("SG_TEST_SECRET", SECRET_A)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let browser = Browser::new(addr);
    common::wait_until_listening(addr);
    assert_eq!(browser.get("/").await.backend(), "one");
    common::signal(child.id(), "TERM");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn demo_shows_a_session_surviving_round_robin() {
    let mut child = Command::new(BIN)
        .args(["demo", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first_line = String::new();
    stdout.read_line(&mut first_line).unwrap();
    // Keep reading, so that the demo's later lines do not meet a closed pipe.
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    let url = first_line.trim().rsplit(' ').next().unwrap().to_string();
    let addr = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .unwrap();
    let browser = Browser::new(addr);

    let page = |reply: &common::Reply| String::from_utf8_lossy(&reply.body).into_owned();
    let first = page(&browser.get("/").await);
    let second = page(&browser.get("/").await);
    // An inline icon: a browser's /favicon.ico request would take a turn of
    // the round-robin, and the first reload would show the same backend.
    assert!(
        first.contains(r#"<link rel="icon" href="data:,">"#),
        "{first}"
    );
    assert!(
        first.contains(r#"<meta name="viewport" content="width=device-width, initial-scale=1">"#),
        "{first}"
    );
    // The raw X-Session header the backend received, escaped for HTML.
    assert!(first.contains("<code>{}</code>"), "{first}");
    assert!(
        second.contains("<code>{&quot;visits&quot;:1}</code>"),
        "{second}"
    );
    let sid_before_login = browser.sid().unwrap();
    assert!(
        first.contains("backend A") && second.contains("backend B")
            || first.contains("backend B") && second.contains("backend A")
    );
    assert!(
        first.contains("<b>1</b>") && second.contains("<b>2</b>"),
        "the counter persists"
    );

    let login = browser
        .send(
            "POST",
            "/login",
            &[("content-type", "application/x-www-form-urlencoded")],
            "name=Ada+%3Cb%3E".into(),
        )
        .await;
    assert_eq!(login.status, 303);
    let third = page(&browser.get("/").await);
    assert!(
        third.contains("Logged in as <b>Ada &lt;b&gt;</b>"),
        "{third}"
    );
    assert!(third.contains("<b>3</b>"));
    let sid_after_login = browser.sid().unwrap();
    assert_ne!(sid_before_login, sid_after_login);
    assert!(
        third.contains(&format!(
            "session id changed at login, from <code>{}…</code> to <code>{}…</code>",
            &sid_before_login[..8],
            &sid_after_login[..8]
        )),
        "{third}"
    );

    browser
        .send("POST", "/logout", &[], Default::default())
        .await;
    let after = page(&browser.get("/").await);
    assert!(
        after.contains("<b>1</b>") && !after.contains("Logged in"),
        "{after}"
    );

    common::signal(child.id(), "TERM");
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

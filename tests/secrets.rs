//! Secrets: never in a log line (even at trace level), an error or `check`'s
//! output; a `file:` secret others can read is warned about; a short secret
//! is refused by `check` and at start; `keygen` gives 256 random bits.

mod common;

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine;
use common::{Backend, Browser, Redis, TempDir};

const BIN: &str = env!("CARGO_BIN_EXE_sessiongate");
const SECRET: &str = "SeCrEt-never-to-be-seen-0123456789abcdef";
const REDIS_PASSWORD: &str = "pA55w0rd-never-to-be-seen";

fn write(dir: &TempDir, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.0.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn output_of(args: &[&str], path: &std::path::Path) -> (Option<i32>, String) {
    let mut args: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
    args.extend(["--config".as_ref(), path.as_os_str()]);
    common::sessiongate(&args, &[])
}

#[test]
fn check_never_shows_a_secret_or_a_redis_password() {
    let dir = TempDir::new("secrets-check");
    let good = format!(
        "[upstreams]\nservers = [\"http://127.0.0.1:1\"]\n[cookie]\nsecrets = [\"{SECRET}\"]\n\
         [store]\nurl = \"redis://app:{REDIS_PASSWORD}@127.0.0.1:6379/0\"\n"
    );
    let (code, text) = output_of(&["check"], &write(&dir, "good.toml", &good));
    assert_eq!(code, Some(0), "{text}");
    assert!(
        !text.contains(SECRET) && !text.contains(REDIS_PASSWORD),
        "{text}"
    );

    let broken = [
        good.replace("[\"http://127.0.0.1:1\"]", "[]"),
        good.replace(&format!("[\"{SECRET}\"]"), &format!("\"{SECRET}\"")),
        good.replace("/0\"", "/notadb\""),
        good.replace(
            &format!("[\"{SECRET}\"]"),
            &format!("[\"{}\"]", &SECRET[..20]),
        ),
    ];
    for (i, text) in broken.iter().enumerate() {
        let (code, output) = output_of(&["check"], &write(&dir, &format!("broken{i}.toml"), text));
        assert_eq!(code, Some(1), "{output}");
        assert!(!output.contains(REDIS_PASSWORD), "case {i}: {output}");
        assert!(!output.contains(&SECRET[..20]), "case {i}: {output}");
    }
}

#[test]
fn a_secret_shorter_than_32_bytes_is_refused_by_check_and_at_start() {
    let dir = TempDir::new("secrets-short");
    let text = "[upstreams]\nservers = [\"http://127.0.0.1:1\"]\n[cookie]\nsecrets = [\"only-31-bytes-long-0123456789ab\"]\n";
    let path = write(&dir, "short.toml", text);
    for command in ["check", "run"] {
        let (code, output) = output_of(&[command], &path);
        assert_eq!(code, Some(1), "{command}: {output}");
        assert!(output.contains("at least 32"), "{command}: {output}");
        assert!(!output.contains("only-31-bytes"), "{command}: {output}");
    }
}

#[test]
fn a_file_secret_others_can_read_is_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("secrets-file");
    let secret = write(&dir, "secret", &format!("{SECRET}\n"));
    let config = format!(
        "[upstreams]\nservers = [\"http://127.0.0.1:1\"]\n[cookie]\nsecrets = [\"file:{}\"]\n",
        secret.display()
    );
    let path = write(&dir, "config.toml", &config);
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, output) = output_of(&["check"], &path);
    assert_eq!(code, Some(0));
    assert!(
        output.contains("warning:") && output.contains("can be read by other users"),
        "{output}"
    );
    assert!(!output.contains(SECRET));
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (_, output) = output_of(&["check"], &path);
    assert!(!output.contains("can be read by other users"), "{output}");
}

#[test]
fn keygen_gives_256_bits_never_repeated() {
    let mut seen = HashSet::new();
    for _ in 0..50 {
        let output = Command::new(BIN).arg("keygen").output().unwrap();
        let key = String::from_utf8(output.stdout).unwrap().trim().to_string();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&key)
            .unwrap();
        assert_eq!(bytes.len(), 32, "256 bits");
        assert!(seen.insert(bytes), "a key came twice");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_at_trace_level_hold_no_secret_no_redis_password_and_no_session_cookie() {
    let redis = Redis::start();
    let backend = Backend::start("logged").await;
    let dir = TempDir::new("secrets-logs");
    let port = common::free_port();
    // The Redis URL carries a password Redis does not ask for, then one for a
    // server that is not there: both may show up in errors.
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n[upstreams]\nservers = [\"{}\"]\n\
         [cookie]\nsecrets = [\"{SECRET}\"]\n[store]\nurl = \"redis://:{REDIS_PASSWORD}@127.0.0.1:{}/0\"\ntimeout = \"300ms\"\n",
        backend.url(),
        redis.port
    );
    let path = write(&dir, "config.toml", &config);
    let log = dir.0.join("log");
    let mut child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&path)
        .env("SESSIONGATE_LOG", "trace")
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
        .spawn()
        .unwrap();
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    common::wait_until_listening(addr);
    let browser = Browser::new(addr);
    browser
        .get_with("/", &[("x-test-update", r#"{"user":"ada"}"#)])
        .await;
    let first_cookie = browser.cookie();
    browser
        .get_with("/login", &[("x-test-action", "rotate")])
        .await;
    let second_cookie = browser.cookie();
    browser
        .get_with("/", &[("x-test-update", "[not an object]")])
        .await;
    browser
        .get_with("/logout", &[("x-test-action", "destroy")])
        .await;
    drop(redis); // the store goes away: errors get logged
    let stranger = Browser::new(addr);
    stranger.set_cookie(second_cookie.clone());
    stranger.get("/").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    common::signal(child.id(), "TERM");
    child.wait().unwrap();

    let text = std::fs::read_to_string(&log).unwrap();
    eprintln!("{text}");
    assert!(
        text.contains("TRACE") || text.contains("DEBUG"),
        "logging at trace level"
    );
    assert!(
        text.contains("session update rejected"),
        "the bad update was logged"
    );
    assert!(!text.contains(SECRET), "the cookie secret was logged");
    assert!(
        !text.contains(REDIS_PASSWORD),
        "the Redis password was logged"
    );
    for cookie in [first_cookie, second_cookie].into_iter().flatten() {
        let tag = cookie.split_once('.').unwrap().1;
        assert!(!text.contains(tag), "a session cookie was logged");
    }
}

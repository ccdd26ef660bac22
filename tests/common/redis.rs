//! [`Redis`]: a private `redis-server` on a free loopback port, stopped when
//! dropped; never a shared instance. Also reads what sessiongate stored and
//! the commands it sent (`INFO commandstats`).

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

/// A private redis-server, killed when dropped.
pub struct Redis {
    pub port: u16,
    child: Option<Child>,
}

impl Redis {
    /// Starts redis-server on a free port and waits until it answers.
    pub fn start() -> Redis {
        for _ in 0..5 {
            let port = free_port();
            let mut redis = Redis { port, child: None };
            if redis.spawn() {
                return redis;
            }
        }
        panic!("could not start redis-server (is it installed? .ci/run installs it)");
    }

    fn spawn(&mut self) -> bool {
        let binary = std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
        let child = Command::new(binary)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .args(["--dir", &std::env::temp_dir().to_string_lossy()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server could not be run");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(mut c) = self.try_connection()
                && redis::cmd("PING").query::<String>(&mut c).is_ok()
            {
                return true;
            }
            if let Some(Ok(Some(_))) = self.child.as_mut().map(Child::try_wait) {
                return false; // exited: the port was taken meanwhile
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill();
        false
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn try_connection(&self) -> redis::RedisResult<redis::Connection> {
        redis::Client::open(self.url())?.get_connection_with_timeout(Duration::from_secs(1))
    }

    /// A plain connection for inspecting what sessiongate stored.
    pub fn connection(&self) -> redis::Connection {
        self.try_connection()
            .expect("the test's redis-server answers")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Kills the server (as a crash would).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port (after [`kill`](Self::kill)).
    pub fn restart(&mut self) {
        self.kill();
        assert!(
            self.spawn(),
            "redis-server did not come back on port {}",
            self.port
        );
    }

    /// Every key in the server.
    pub fn keys(&self) -> Vec<String> {
        redis::cmd("KEYS")
            .arg("*")
            .query(&mut self.connection())
            .unwrap()
    }

    /// A session hash as stored.
    pub fn hash(&self, key: &str) -> BTreeMap<String, String> {
        redis::cmd("HGETALL")
            .arg(key)
            .query(&mut self.connection())
            .unwrap()
    }

    /// A key's TTL in ms (-1: none, -2: no key).
    pub fn pttl(&self, key: &str) -> i64 {
        redis::cmd("PTTL")
            .arg(key)
            .query(&mut self.connection())
            .unwrap()
    }

    /// Runs one command whose answer is OK (`CONFIG SET`, `ACL SETUSER`):
    /// its name first, then its arguments.
    pub fn command_ok(&self, command: &[&str]) {
        let mut cmd = redis::cmd(command[0]);
        cmd.arg(&command[1..]);
        let () = cmd.query(&mut self.connection()).unwrap();
    }

    /// Calls per command name from INFO commandstats.
    pub fn command_stats(&self) -> BTreeMap<String, u64> {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query(&mut self.connection())
            .unwrap();
        info.lines()
            .filter_map(|line| line.strip_prefix("cmdstat_"))
            .filter_map(|line| {
                let (name, rest) = line.split_once(':')?;
                let calls = rest
                    .strip_prefix("calls=")?
                    .split(',')
                    .next()?
                    .parse()
                    .ok()?;
                Some((name.to_string(), calls))
            })
            .collect()
    }

    /// The commands sent to Redis between two [`command_stats`] readings,
    /// by name, without the INFO calls that read them.
    ///
    /// INFO commandstats also counts the commands that sessiongate's Lua
    /// scripts run inside Redis; [`round_trips`] leaves those out.
    pub fn commands_between(
        before: &BTreeMap<String, u64>,
        after: &BTreeMap<String, u64>,
    ) -> BTreeMap<String, u64> {
        after
            .iter()
            .filter(|(name, _)| name.as_str() != "info")
            .map(|(name, calls)| (name.clone(), calls - before.get(name).copied().unwrap_or(0)))
            .filter(|(_, delta)| *delta > 0)
            .collect()
    }

    /// Commands a client sent (round trips): every command counted, except
    /// those that only sessiongate's scripts run inside Redis.
    pub fn round_trips(commands: &BTreeMap<String, u64>) -> u64 {
        const INSIDE_SCRIPTS: [&str; 6] = ["hgetall", "hset", "hdel", "pexpire", "exists", "time"];
        commands
            .iter()
            .filter(|(name, _)| !INSIDE_SCRIPTS.contains(&name.as_str()))
            .map(|(_, calls)| calls)
            .sum()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

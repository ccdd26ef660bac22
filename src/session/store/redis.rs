//! The Redis store (SPEC §6): one HASH per session at `<key_prefix><sid>`,
//! one field per top-level key holding its JSON text, `__created` metadata,
//! and a TTL on every key. Reads and writes are Lua scripts (sent as EVALSHA)
//! so that the TTL policy lives in one place and "update only if the session
//! still exists" is atomic. One multiplexed connection serves every request.

use std::collections::BTreeMap;
use std::time::Duration;

use std::fmt;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::io::tcp::TcpSettings;
use redis::{
    Cmd, ErrorKind, FromRedisValue, IntoConnectionInfo, ProtocolVersion, RedisResult, RedisWrite,
    Script, ServerErrorKind, ToRedisArgs,
};

use super::{
    Loaded, PERSIST_FIELD, SaveMode, Saved, SessionPolicy, SessionStore, StoreError, TakenSession,
};
use crate::config::StoreConfig;
use crate::session::codec::{Changes, META_PREFIX, encode_session};
use crate::session::cookie::Sid;

/// Sessions in Redis.
pub struct RedisStore {
    connection: ConnectionManager,
    key_prefix: String,
    policy: SessionPolicy,
    load: Lua,
    save: Lua,
    take: Lua,
}

/// A session's key, `<key_prefix><sid>`, written straight into a command.
struct SessionKey<'a>(&'a str, &'a Sid);

impl fmt::Display for SessionKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)?;
        f.write_str(self.1.as_str())
    }
}

impl ToRedisArgs for SessionKey<'_> {
    fn write_redis_args<W: ?Sized + RedisWrite>(&self, out: &mut W) {
        out.write_arg_fmt(self);
    }
}

/// One of the Lua scripts, called as `EVALSHA <sha> 1 <key> <args…>` and
/// loaded again when Redis answers NOSCRIPT (after a restart, say).
struct Lua(Script);

impl Lua {
    fn new(source: &str) -> Lua {
        Lua(Script::new(source))
    }

    /// `EVALSHA` of this script for one key; add the arguments to it.
    fn call(&self, key: SessionKey<'_>) -> Cmd {
        let mut cmd = Cmd::with_capacity(8, 160);
        cmd.arg("EVALSHA").arg(self.0.get_hash()).arg(1).arg(key);
        cmd
    }

    async fn run<T: FromRedisValue>(
        &self,
        cmd: &Cmd,
        connection: &mut ConnectionManager,
    ) -> RedisResult<T> {
        match cmd.query_async(connection).await {
            Err(error) if error.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                self.0.load_async(connection).await?;
                cmd.query_async(connection).await
            }
            result => result,
        }
    }
}

impl RedisStore {
    /// Prepares the connection; it is made on first use and remade after
    /// failures, so sessiongate starts and recovers while Redis is down.
    /// Connecting is bounded by `deadline`; each call is bounded by the
    /// store's own deadline ([`super::Store`]), so redis-rs sets no second
    /// timer per call.
    pub fn open(
        config: &StoreConfig,
        policy: SessionPolicy,
        deadline: Duration,
    ) -> Result<RedisStore, StoreError> {
        let mut info = config.url.as_str().into_connection_info()?;
        info = info.set_tcp_settings(TcpSettings::default().set_nodelay(true));
        if !config.url.contains("protocol=") {
            // RESP3 notices a dropped connection sooner.
            let settings = info
                .redis_settings()
                .clone()
                .set_protocol(ProtocolVersion::RESP3);
            info = info.set_redis_settings(settings);
        }
        let client = redis::Client::open(info)?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(deadline))
            .set_response_timeout(None)
            // Short, bounded reconnection bursts; the next call starts another.
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500))
            .set_number_of_retries(3);
        let connection = ConnectionManager::new_lazy_with_config(client, manager_config)?;
        Ok(RedisStore {
            connection,
            key_prefix: config.key_prefix.clone(),
            policy,
            load: Lua::new(include_str!("scripts/load.lua")),
            save: Lua::new(include_str!("scripts/save.lua")),
            take: Lua::new(include_str!("scripts/take.lua")),
        })
    }

    fn key<'a>(&'a self, sid: &'a Sid) -> SessionKey<'a> {
        SessionKey(&self.key_prefix, sid)
    }

    /// One PING.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut connection = self.connection.clone();
        redis::cmd("PING")
            .query_async::<()>(&mut connection)
            .await?;
        Ok(())
    }
}

/// The fields and values the load and take scripts return, decoded from
/// their `<length>:<bytes>` encoding as string pairs.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn next_item(&mut self) -> Result<Option<&'a str>, StoreError> {
        if self.0.is_empty() {
            return Ok(None);
        }
        let bad = || StoreError::Protocol("a malformed field list".into());
        let colon = self.0.iter().position(|&b| b == b':').ok_or_else(bad)?;
        let length: usize = std::str::from_utf8(&self.0[..colon])
            .ok()
            .and_then(|n| n.parse().ok())
            .ok_or_else(bad)?;
        let rest = &self.0[colon + 1..];
        let item = rest.get(..length).ok_or_else(bad)?;
        self.0 = &rest[length..];
        std::str::from_utf8(item)
            .map(Some)
            .map_err(|_| StoreError::Protocol("a field that is not UTF-8".into()))
    }

    fn next_pair(&mut self) -> Result<Option<(&'a str, &'a str)>, StoreError> {
        let Some(field) = self.next_item()? else {
            return Ok(None);
        };
        let value = self
            .next_item()?
            .ok_or_else(|| StoreError::Protocol("a field without a value".into()))?;
        Ok(Some((field, value)))
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(&'a str, &'a str), StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_pair().transpose()
    }
}

impl SessionStore for RedisStore {
    async fn load(&self, sid: &Sid) -> Result<Option<Loaded>, StoreError> {
        let mut connection = self.connection.clone();
        let mut call = self.load.call(self.key(sid));
        call.arg(self.policy.idle.as_millis() as u64)
            .arg(self.policy.absolute.as_millis() as u64);
        let reply: Vec<u8> = self.load.run(&call, &mut connection).await?;
        if reply.is_empty() {
            return Ok(None);
        }
        // sessiongate stores printable ASCII only; anything else was written by
        // someone else and must not reach a header.
        let (mut created_ms, mut persist) = (0, false);
        for pair in Fields(&reply) {
            let (field, value) = pair?;
            match field {
                "__created" => created_ms = value.parse().unwrap_or(0),
                PERSIST_FIELD => persist = true,
                _ => {}
            }
            if !value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
                tracing::error!(
                    "a stored session holds a value sessiongate did not write; ignoring it"
                );
                return Ok(None);
            }
        }
        let fields = Fields(&reply).map(|pair| pair.expect("decoded once already"));
        Ok(Some(Loaded {
            json: encode_session(fields),
            created_ms,
            persist,
        }))
    }

    async fn save(
        &self,
        sid: &Sid,
        mode: SaveMode,
        changes: &Changes,
    ) -> Result<Saved, StoreError> {
        let mut connection = self.connection.clone();
        let mut call = self.save.call(self.key(sid));
        let created = match mode {
            SaveMode::Create { created_ms } => {
                call.arg("create");
                created_ms
            }
            SaveMode::Update => {
                call.arg("update");
                None
            }
        };
        call.arg(self.policy.idle.as_millis() as u64)
            .arg(self.policy.absolute.as_millis() as u64)
            .arg(self.policy.max_bytes)
            .arg(created.map(|ms| ms.to_string()).unwrap_or_default());
        for (field, value) in changes.iter() {
            call.arg(field).arg(value.unwrap_or(""));
        }
        let reply: String = self.save.run(&call, &mut connection).await?;
        match reply.as_str() {
            "ok" => Ok(Saved::Stored),
            "gone" => Ok(Saved::Gone),
            "exists" => Ok(Saved::Exists),
            other => match other
                .strip_prefix("too_large:")
                .and_then(|n| n.parse().ok())
            {
                Some(size) => Ok(Saved::TooLarge { size }),
                None => Err(StoreError::Protocol(format!("save answered {other:?}"))),
            },
        }
    }

    async fn take(&self, sid: &Sid) -> Result<Option<TakenSession>, StoreError> {
        let mut connection = self.connection.clone();
        let call = self.take.call(self.key(sid));
        let reply: Vec<u8> = self.take.run(&call, &mut connection).await?;
        let mut created_ms = None;
        let mut fields = BTreeMap::new();
        for pair in Fields(&reply) {
            let (field, value) = pair?;
            if field == "__created" {
                created_ms = value.parse().ok();
            } else if !field.starts_with(META_PREFIX) {
                fields.insert(field.to_string(), value.to_string());
            }
        }
        // A hash without its creation time is not a session (the load script agrees).
        Ok(created_ms.map(|created_ms| TakenSession { fields, created_ms }))
    }

    async fn destroy(&self, sid: &Sid) -> Result<(), StoreError> {
        let mut connection = self.connection.clone();
        redis::cmd("DEL")
            .arg(self.key(sid))
            .query_async::<()>(&mut connection)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Fields;

    fn decode(text: &str) -> Result<Vec<(String, String)>, String> {
        Fields(text.as_bytes())
            .map(|p| {
                p.map(|(k, v)| (k.to_string(), v.to_string()))
                    .map_err(|e| e.to_string())
            })
            .collect()
    }

    #[test]
    fn the_scripts_field_encoding_decodes_to_pairs() {
        assert_eq!(decode("").unwrap(), []);
        let pairs = decode("9:__created13:17637432000004:user5:\"ada\"0:2:{}").unwrap();
        let expected = [
            ("__created", "1763743200000"),
            ("user", "\"ada\""),
            ("", "{}"),
        ];
        assert_eq!(pairs, expected.map(|(k, v)| (k.to_string(), v.to_string())));
        let colons = decode("3:a:b3:c:d").unwrap();
        assert_eq!(colons, [("a:b".to_string(), "c:d".to_string())]);
    }

    #[test]
    fn a_malformed_field_list_is_an_error_not_a_panic() {
        for bad in [
            "5:abc",
            "x:ab",
            "3:abc",
            "3:abc9:",
            ":",
            "18446744073709551616:a",
        ] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
    }
}

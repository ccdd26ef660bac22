//! The Redis store (SPEC §6): one HASH per session at `<key_prefix><sid>`,
//! one field per top-level key holding its JSON text, `__created` metadata,
//! and a TTL on every key. Reads and writes are Lua scripts (sent as EVALSHA)
//! so that the TTL policy lives in one place and "update only if the session
//! still exists" is atomic. One multiplexed connection serves every request.

use std::collections::BTreeMap;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::io::tcp::TcpSettings;
use redis::{IntoConnectionInfo, ProtocolVersion, Script, Value};

use super::{SaveMode, Saved, SessionPolicy, SessionStore, StoreError, TakenSession};
use crate::config::StoreConfig;
use crate::session::codec::{Changes, META_PREFIX, encode_session};
use crate::session::cookie::Sid;

/// Sessions in Redis.
pub struct RedisStore {
    connection: ConnectionManager,
    key_prefix: String,
    policy: SessionPolicy,
    load: Script,
    save: Script,
    take: Script,
}

impl RedisStore {
    /// Prepares the connection; it is made on first use and remade after
    /// failures, so sessiongate starts and recovers while Redis is down.
    pub fn open(config: &StoreConfig, policy: SessionPolicy) -> Result<RedisStore, StoreError> {
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
            .set_connection_timeout(Some(config.timeout.0))
            .set_response_timeout(Some(config.timeout.0))
            // Short, bounded reconnection bursts; the next call starts another.
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500))
            .set_number_of_retries(3);
        let connection = ConnectionManager::new_lazy_with_config(client, manager_config)?;
        Ok(RedisStore {
            connection,
            key_prefix: config.key_prefix.clone(),
            policy,
            load: Script::new(include_str!("scripts/load.lua")),
            save: Script::new(include_str!("scripts/save.lua")),
            take: Script::new(include_str!("scripts/take.lua")),
        })
    }

    fn key(&self, sid: &Sid) -> String {
        let mut key = String::with_capacity(self.key_prefix.len() + sid.as_str().len());
        key.push_str(&self.key_prefix);
        key.push_str(sid.as_str());
        key
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

/// The flat `[field, value, …]` array the scripts return, as string pairs.
fn field_pairs(reply: &Value) -> Result<Vec<(&str, &str)>, StoreError> {
    let Value::Array(items) = reply else {
        return Err(StoreError::Protocol(format!(
            "expected an array, got {reply:?}"
        )));
    };
    fn text(v: &Value) -> Result<&str, StoreError> {
        match v {
            Value::BulkString(bytes) => std::str::from_utf8(bytes)
                .map_err(|_| StoreError::Protocol("a field that is not UTF-8".into())),
            other => Err(StoreError::Protocol(format!(
                "expected a string, got {other:?}"
            ))),
        }
    }
    items
        .chunks(2)
        .map(|pair| match pair {
            [field, value] => Ok((text(field)?, text(value)?)),
            _ => Err(StoreError::Protocol("an odd number of items".into())),
        })
        .collect()
}

impl SessionStore for RedisStore {
    async fn load(&self, sid: &Sid) -> Result<Option<String>, StoreError> {
        let mut connection = self.connection.clone();
        let reply: Value = self
            .load
            .key(self.key(sid))
            .arg(self.policy.idle.as_millis() as u64)
            .arg(self.policy.absolute.as_millis() as u64)
            .invoke_async(&mut connection)
            .await?;
        let fields = field_pairs(&reply)?;
        if fields.is_empty() {
            return Ok(None);
        }
        // sessiongate stores printable ASCII only; anything else was written by
        // someone else and must not reach a header.
        if !fields
            .iter()
            .all(|(_, v)| v.bytes().all(|b| (0x20..0x7f).contains(&b)))
        {
            tracing::error!(
                "a stored session holds a value sessiongate did not write; ignoring it"
            );
            return Ok(None);
        }
        Ok(Some(encode_session(fields)))
    }

    async fn save(
        &self,
        sid: &Sid,
        mode: SaveMode,
        changes: &Changes,
    ) -> Result<Saved, StoreError> {
        let mut connection = self.connection.clone();
        let mut invocation = self.save.key(self.key(sid));
        let created = match mode {
            SaveMode::Create { created_ms } => {
                invocation.arg("create");
                created_ms
            }
            SaveMode::Update => {
                invocation.arg("update");
                None
            }
        };
        invocation
            .arg(self.policy.idle.as_millis() as u64)
            .arg(self.policy.absolute.as_millis() as u64)
            .arg(self.policy.max_bytes)
            .arg(created.map(|ms| ms.to_string()).unwrap_or_default());
        for (field, value) in changes.iter() {
            invocation.arg(field).arg(value.unwrap_or(""));
        }
        let reply: String = invocation.invoke_async(&mut connection).await?;
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
        let reply: Value = self
            .take
            .key(self.key(sid))
            .invoke_async(&mut connection)
            .await?;
        let pairs = field_pairs(&reply)?;
        if pairs.is_empty() {
            return Ok(None);
        }
        let mut created_ms = None;
        let mut fields = BTreeMap::new();
        for (field, value) in pairs {
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

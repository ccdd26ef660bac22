//! The connection to Redis, whatever the topology (SPEC §10): the session
//! logic in `redis.rs` sends commands through a [`Link`] and never asks
//! which kind it is.
//!
//! - `Node`: one Redis; redis-rs' `ConnectionManager` reconnects by itself.
//! - `Sentinel`: the master the sentinels name, followed across failovers
//!   (`sentinel.rs`; redis-rs does not do that, its issue #1438).
//! - `Cluster`: redis-rs' cluster client, which routes each command by its
//!   key's slot, follows `MOVED` and `ASK`, and refreshes its slot map when a
//!   replica is promoted.
//!
//! No deadline is set here: the caller's, `Store::within`, bounds each call.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::io::tcp::TcpSettings;
use redis::{
    Cmd, ConnectionInfo, IntoConnectionInfo, Pipeline, ProtocolVersion, RedisResult, Value,
};

use super::StoreError;
use crate::config::StoreConfig;

/// A connection to the Redis that holds the sessions.
pub(super) enum Link {
    /// One node (`kind = "redis"`).
    Node(ConnectionManager),
}

impl Link {
    /// Prepares the connection for the configured topology; nothing connects
    /// before the first call. Connecting is bounded by `deadline`.
    pub(super) fn open(config: &StoreConfig, deadline: Duration) -> Result<Link, StoreError> {
        let client = redis::Client::open(node_info(&config.url)?)?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(deadline))
            .set_response_timeout(None)
            // Short, bounded reconnection bursts; the next call starts another.
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500))
            .set_number_of_retries(3);
        let connection = ConnectionManager::new_lazy_with_config(client, manager_config)?;
        Ok(Link::Node(connection))
    }

    /// Sends one command; a Redis error reply is an `Err`.
    pub(super) async fn query(&self, cmd: &Cmd) -> RedisResult<Value> {
        match self {
            Link::Node(connection) => cmd.query_async(&mut connection.clone()).await,
        }
    }

    /// Sends the commands of `pipeline` in one round trip (on a Cluster, to
    /// the node that holds their key) and returns each reply as it came,
    /// error replies included as `Value::ServerError`.
    pub(super) async fn query_all(&self, pipeline: &Pipeline) -> RedisResult<Vec<Value>> {
        match self {
            Link::Node(connection) => {
                let mut connection = connection.clone();
                connection
                    .req_packed_commands(pipeline, 0, pipeline.len())
                    .await
            }
        }
    }
}

/// The connection details of one node's URL: TCP_NODELAY, and RESP3 unless
/// the URL asks for another protocol (RESP3 notices a dropped connection
/// sooner).
fn node_info(url: &str) -> Result<ConnectionInfo, StoreError> {
    let mut info = url.into_connection_info()?;
    info = info.set_tcp_settings(TcpSettings::default().set_nodelay(true));
    if !url.contains("protocol=") {
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        info = info.set_redis_settings(settings);
    }
    Ok(info)
}

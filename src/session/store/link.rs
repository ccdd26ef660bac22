//! The connection to Redis, whatever the topology (SPEC §10): the session
//! logic in `redis.rs` sends commands through a [`Link`] and never asks
//! which kind it is.
//!
//! - `Node`: one Redis; redis-rs' `ConnectionManager` reconnects by itself.
//! - `Sentinel`: the master the sentinels name, followed across failovers
//!   (`sentinel.rs`; redis-rs does not do that, its issue #1438).
//! - `Cluster`: redis-rs' cluster client, which routes each command by its
//!   key's slot, follows `MOVED` and `ASK`, and refreshes its slot map when a
//!   replica is promoted; a command caught between two nodes while its slot
//!   moves is sent again within the store deadline.
//!
//! [`Access`] is what every connection of every kind shares: the ACL user,
//! the password and the TLS certificates. No call deadline is set here: the
//! caller's, `Store::within`, bounds each call.

use std::sync::Mutex;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::io::tcp::TcpSettings;
use redis::{
    ClientTlsConfig, Cmd, ConnectionAddr, ConnectionInfo, ErrorKind, IntoConnectionInfo, Pipeline,
    ProtocolVersion, RedisError, RedisResult, ServerErrorKind, TlsCertificates, Value,
};

use super::StoreError;
use super::sentinel::SentinelLink;
use crate::config::{StoreConfig, StoreKind};

/// A connection to the Redis that holds the sessions.
pub(super) enum Link {
    /// One node (`kind = "redis"`), and its client for [`Link::ping`].
    Node(ConnectionManager, Box<redis::Client>),
    /// The master that the sentinels name (`kind = "sentinel"`).
    Sentinel(SentinelLink),
    /// A Redis Cluster (`kind = "cluster"`).
    Cluster(Box<Cluster>),
}

impl Link {
    /// Prepares the connection for the configured topology; nothing connects
    /// before the first call. Connecting is bounded by `deadline`.
    pub(super) fn open(config: &StoreConfig, deadline: Duration) -> Result<Link, StoreError> {
        let access = Access::from_config(config)?;
        Ok(match config.kind {
            StoreKind::Redis | StoreKind::Memory => {
                let client = access.client(access.node_info(&config.url)?)?;
                let pinger = client.clone();
                let manager_config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(deadline))
                    .set_response_timeout(None)
                    // Short, bounded reconnection bursts; the next call starts another.
                    .set_min_delay(Duration::from_millis(50))
                    .set_max_delay(Duration::from_millis(500))
                    .set_number_of_retries(3);
                Link::Node(
                    ConnectionManager::new_lazy_with_config(client, manager_config)?,
                    Box::new(pinger),
                )
            }
            StoreKind::Sentinel => Link::Sentinel(SentinelLink::new(config, access, deadline)?),
            StoreKind::Cluster => Link::Cluster(Box::new(Cluster::new(config, &access, deadline)?)),
        })
    }

    /// Sends one command; a Redis error reply is an `Err`.
    pub(super) async fn query(&self, cmd: &Cmd) -> RedisResult<Value> {
        match self {
            Link::Node(connection, _) => cmd.query_async(&mut connection.clone()).await,
            Link::Sentinel(sentinel) => sentinel.query(cmd).await,
            Link::Cluster(cluster) => {
                cluster
                    .placed(|mut connection| async move { cmd.query_async(&mut connection).await })
                    .await
            }
        }
    }

    /// One PING. On one node it goes over a connection of its own, so that
    /// a failure says why (a refused connection, a certificate, a password)
    /// instead of vanishing into the connection manager's retries.
    pub(super) async fn ping(&self) -> RedisResult<()> {
        let ping = redis::cmd("PING");
        match self {
            Link::Node(_, client) => {
                let mut connection = client.get_multiplexed_async_connection().await?;
                ping.query_async(&mut connection).await
            }
            _ => self.query(&ping).await.map(drop),
        }
    }

    /// The nodes that hold the sessions, for connections of the caller's
    /// own (the cache's tracking): one node, the master the sentinels name,
    /// or every master of a Cluster. [`Link::still_holds`] says when they
    /// no longer are.
    pub(super) async fn session_nodes(&self) -> RedisResult<SessionNodes> {
        Ok(match self {
            Link::Node(_, client) => SessionNodes {
                clients: vec![client.as_ref().clone()],
                generation: None,
                masters: Vec::new(),
            },
            Link::Sentinel(sentinel) => {
                let (client, generation) = sentinel.master_client().await?;
                SessionNodes {
                    clients: vec![client],
                    generation: Some(generation),
                    masters: Vec::new(),
                }
            }
            Link::Cluster(cluster) => {
                let masters = cluster.masters().await?;
                let clients = masters
                    .iter()
                    .map(|address| {
                        let info = cluster
                            .access
                            .node_info(&format!("{}://{address}", cluster.scheme));
                        let info = info.map_err(|e| {
                            redis::RedisError::from((
                                redis::ErrorKind::InvalidClientConfig,
                                "a cluster master",
                                e.to_string(),
                            ))
                        })?;
                        cluster.access.client(info)
                    })
                    .collect::<RedisResult<Vec<_>>>()?;
                SessionNodes {
                    clients,
                    generation: None,
                    masters,
                }
            }
        })
    }

    /// Whether this is a Cluster (its keys live on several masters).
    pub(super) fn is_cluster(&self) -> bool {
        matches!(self, Link::Cluster(_))
    }

    /// Whether `nodes` still are the nodes that hold the sessions: the same
    /// Sentinel master, the same Cluster masters (one round trip).
    pub(super) async fn still_holds(&self, nodes: &SessionNodes) -> RedisResult<bool> {
        Ok(match self {
            Link::Node(..) => true,
            Link::Sentinel(sentinel) => sentinel.generation() == nodes.generation,
            Link::Cluster(cluster) => cluster.masters().await? == nodes.masters,
        })
    }

    /// Sends the commands of `pipeline` in one round trip (on a Cluster, to
    /// the node that holds their key) and returns each reply as it came,
    /// error replies included as `Value::ServerError`.
    pub(super) async fn query_all(&self, pipeline: &Pipeline) -> RedisResult<Vec<Value>> {
        let count = pipeline.len();
        match self {
            Link::Node(connection, _) => {
                let mut connection = connection.clone();
                connection.req_packed_commands(pipeline, 0, count).await
            }
            Link::Sentinel(sentinel) => sentinel.query_all(pipeline).await,
            Link::Cluster(cluster) => {
                cluster
                    .placed(|mut connection| async move {
                        connection.req_packed_commands(pipeline, 0, count).await
                    })
                    .await
            }
        }
    }
}

/// The nodes that hold the sessions (see [`Link::session_nodes`]).
pub(super) struct SessionNodes {
    /// A client for each.
    pub(super) clients: Vec<redis::Client>,
    /// A Sentinel master's generation.
    generation: Option<u64>,
    /// A Cluster's masters, `host:port`, sorted.
    masters: Vec<String>,
}

/// A Cluster connection, made on first use (and again while the cluster
/// cannot be reached at all): redis-rs keeps it in step with the cluster
/// from then on.
pub(super) struct Cluster {
    client: redis::cluster::ClusterClient,
    /// For connections to single nodes (the cache's tracking).
    access: Access,
    /// `rediss` when the seed nodes are reached over TLS, else `redis`.
    scheme: &'static str,
    connection: Mutex<Option<ClusterConnection>>,
    connecting: tokio::sync::Mutex<()>,
    /// The store deadline: how long a command is sent again while its slot
    /// is between two nodes (see [`Cluster::placed`]).
    deadline: Duration,
}

/// The first wait before a command whose slot is between two nodes is sent
/// again, and the longest; the waits double in between.
const IN_TRANSIT_WAIT: (Duration, Duration) =
    (Duration::from_millis(10), Duration::from_millis(100));

impl Cluster {
    fn new(
        config: &StoreConfig,
        access: &Access,
        deadline: Duration,
    ) -> Result<Cluster, StoreError> {
        let nodes = config
            .nodes
            .iter()
            .map(|url| access.node_info(url))
            .collect::<Result<Vec<_>, _>>()?;
        let mut builder = ClusterClientBuilder::new(nodes)
            .use_protocol(ProtocolVersion::RESP3)
            .tcp_settings(TcpSettings::default().set_nodelay(true))
            .connection_timeout(deadline)
            // A node that stops answering is noticed (and its slots asked for
            // again) after twice the store deadline: the call itself has
            // been answered per on_error by then, and a slow answer does not
            // cost the node's connection.
            .response_timeout(deadline * 2)
            .retries(6)
            .min_retry_wait(20)
            .max_retry_wait(250);
        if let Some(certificates) = &access.tls {
            builder = builder.certs(certificates.clone());
        }
        Ok(Cluster {
            client: builder.build()?,
            access: access.clone(),
            scheme: match config.nodes.iter().any(|u| u.starts_with("rediss://")) {
                true => "rediss",
                false => "redis",
            },
            connection: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
            deadline,
        })
    }

    async fn connection(&self) -> RedisResult<ClusterConnection> {
        if let Some(connection) = self.made() {
            return Ok(connection);
        }
        let _connecting = self.connecting.lock().await;
        if let Some(connection) = self.made() {
            return Ok(connection);
        }
        // Boxed, as it is rare: connecting to the Cluster would otherwise
        // make every store call's future larger by its state.
        let connection = Box::pin(self.client.get_async_connection()).await?;
        *self.connection.lock().unwrap_or_else(|p| p.into_inner()) = Some(connection.clone());
        Ok(connection)
    }

    /// Sends a command or a pipeline (`send` over the connection) until a
    /// node runs it. redis-rs follows `MOVED` and `ASK` itself, at once and
    /// a few times; but while a reshard hands a slot over, the nodes are
    /// told one by one (`redis-cli --cluster reshard` tells every master in
    /// turn, the old owner possibly first), and for that moment the old
    /// owner and the new one send it back and forth until redis-rs gives up.
    /// A redirection or `TRYAGAIN` means it was not run, so it is sent again
    /// after a short wait, for as long as the store deadline: the reshard is
    /// waited out, not answered with a 503. Scripts, writes with their
    /// `WAIT` and touches all come this way.
    async fn placed<T, F, Fut>(&self, send: F) -> RedisResult<T>
    where
        F: Fn(ClusterConnection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let started = tokio::time::Instant::now();
        let (mut wait, longest) = IN_TRANSIT_WAIT;
        loop {
            match send(self.connection().await?).await {
                Err(error) if in_transit(&error) && started.elapsed() + wait < self.deadline => {
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(longest);
                }
                reply => return reply,
            }
        }
    }

    /// Every master's `host:port`, sorted, from `CLUSTER SLOTS`.
    async fn masters(&self) -> RedisResult<Vec<String>> {
        let slots: Vec<Value> = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(&mut self.connection().await?)
            .await?;
        let mut masters: Vec<String> = slots
            .iter()
            .filter_map(|range| match range {
                Value::Array(range) => match range.get(2) {
                    Some(Value::Array(master)) => {
                        let host = match master.first()? {
                            Value::BulkString(host) => String::from_utf8_lossy(host).into_owned(),
                            Value::SimpleString(host) => host.clone(),
                            _ => return None,
                        };
                        let Value::Int(port) = master.get(1)? else {
                            return None;
                        };
                        Some(match host.contains(':') {
                            true => format!("[{host}]:{port}"),
                            false => format!("{host}:{port}"),
                        })
                    }
                    _ => None,
                },
                _ => None,
            })
            .collect();
        masters.sort();
        masters.dedup();
        Ok(masters)
    }

    fn made(&self) -> Option<ClusterConnection> {
        self.connection
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Whether a Cluster refused a command because its slot is moving: the
/// command was not run, and can be sent again.
fn in_transit(error: &RedisError) -> bool {
    matches!(
        error.kind(),
        ErrorKind::Server(
            ServerErrorKind::Moved | ServerErrorKind::Ask | ServerErrorKind::TryAgain
        )
    )
}

/// What every connection to Redis carries: the ACL user and password from
/// `[store]` (else whatever the URL holds), and the TLS certificates of
/// `[store.tls]`.
#[derive(Clone)]
pub(super) struct Access {
    username: Option<String>,
    password: Option<String>,
    /// Set with `[store.tls]`: every connection is TLS, verified with these.
    tls: Option<TlsCertificates>,
}

impl Access {
    fn from_config(config: &StoreConfig) -> Result<Access, StoreError> {
        let tls = match &config.tls {
            None => None,
            Some(tls) => {
                let read = |path: &std::path::PathBuf| {
                    std::fs::read(path).map_err(|e| {
                        StoreError::Setup(format!("cannot read {}: {e}", path.display()))
                    })
                };
                let client_tls = match (&tls.cert, &tls.key) {
                    (Some(cert), Some(key)) => Some(ClientTlsConfig {
                        client_cert: read(cert)?,
                        client_key: read(key)?,
                    }),
                    _ => None,
                };
                let root_cert = tls.ca.as_ref().map(read).transpose()?;
                Some(TlsCertificates {
                    client_tls,
                    root_cert,
                })
            }
        };
        if config.uses_tls() {
            // redis-rs brings rustls without a crypto provider; ring is ours.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        Ok(Access {
            username: config.username.clone(),
            password: config.password.as_ref().map(|p| p.text.clone()),
            tls,
        })
    }

    /// Whether connections use TLS although their URLs say `redis://`.
    pub(super) fn forces_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The connection details of a Redis node's URL with this access:
    /// TCP_NODELAY, RESP3 unless the URL asks for another protocol (it
    /// notices a dropped connection sooner), the configured user and
    /// password, TLS with `[store.tls]`.
    pub(super) fn node_info(&self, url: &str) -> Result<ConnectionInfo, StoreError> {
        let mut info = url.into_connection_info()?;
        info = info.set_tcp_settings(TcpSettings::default().set_nodelay(true));
        let mut settings = info.redis_settings().clone();
        if !url.contains("protocol=") {
            settings = settings.set_protocol(ProtocolVersion::RESP3);
        }
        if let Some(username) = &self.username {
            settings = settings.set_username(username);
        }
        if let Some(password) = &self.password {
            settings = settings.set_password(password);
        }
        info = info.set_redis_settings(settings);
        Ok(self.with_tls(info))
    }

    /// `info` over TLS when `[store.tls]` asks for it.
    pub(super) fn with_tls(&self, info: ConnectionInfo) -> ConnectionInfo {
        match info.addr().clone() {
            ConnectionAddr::Tcp(host, port) if self.tls.is_some() => {
                info.set_addr(ConnectionAddr::TcpTls {
                    host,
                    port,
                    insecure: false,
                    tls_params: None,
                })
            }
            _ => info,
        }
    }

    /// A client for `info`, with the `[store.tls]` certificates when the
    /// address is TLS.
    pub(super) fn client(&self, info: ConnectionInfo) -> RedisResult<redis::Client> {
        match (&self.tls, info.addr()) {
            (Some(certificates), ConnectionAddr::TcpTls { .. }) => {
                redis::Client::build_with_tls(info, certificates.clone())
            }
            _ => redis::Client::open(info),
        }
    }
}

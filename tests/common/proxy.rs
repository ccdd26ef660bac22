//! [`Proxy`]: sessiongate (the library's server) on a real socket;
//! [`Setup`]: the configuration a test may change; [`Harness`]: a proxy in
//! front of two [`Backend`]s, with the Redis or the memory store.

use std::net::SocketAddr;
use std::path::Path;

use sessiongate::{Config, Server};
use tokio::sync::oneshot;

use super::{Backend, Browser, Redis, SECRET_A, Seen, StoreKind};

/// A running sessiongate, stopped when dropped.
pub struct Proxy {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<()>>,
}

impl Proxy {
    /// Starts sessiongate with this configuration text on a free port.
    pub async fn start(config: &str) -> Proxy {
        let config = Config::parse(config, Path::new("test.toml")).expect("test config is valid");
        let server = Server::bind(&config).await.expect("sessiongate binds");
        let addr = server.local_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let done = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        Proxy {
            addr,
            stop: Some(stop),
            done: Some(done),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Asks it to shut down and waits until it has.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(done) = self.done.take() {
            done.await.unwrap();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// What a test may change in the configuration.
#[derive(Debug, Clone)]
pub struct Setup {
    pub store: StoreKind,
    pub secrets: Vec<String>,
    /// Extra lines for `[session]`.
    pub session: String,
    /// Extra lines for `[cookie]`.
    pub cookie: String,
    /// Extra lines for `[store]`.
    pub store_extra: String,
    /// Extra lines for `[server]`.
    pub server: String,
    /// Extra lines for `[upstreams]`.
    pub upstreams: String,
    /// Extra lines for `[timeouts]`.
    pub timeouts: String,
}

impl Setup {
    pub fn new(store: StoreKind) -> Setup {
        Setup {
            store,
            secrets: vec![SECRET_A.into()],
            session: String::new(),
            cookie: String::new(),
            store_extra: String::new(),
            server: String::new(),
            upstreams: String::new(),
            timeouts: String::new(),
        }
    }

    /// The configuration text for these backends and this Redis.
    pub fn config(&self, backends: &[String], redis_url: Option<&str>) -> String {
        let servers: Vec<String> = backends.iter().map(|b| format!("{b:?}")).collect();
        let secrets: Vec<String> = self.secrets.iter().map(|s| format!("{s:?}")).collect();
        let store = match (self.store, redis_url) {
            (StoreKind::Redis, Some(url)) => format!("kind = \"redis\"\nurl = \"{url}\""),
            _ => "kind = \"memory\"".into(),
        };
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n{}\n\
             [upstreams]\nservers = [{}]\n{}\n\
             [cookie]\nsecrets = [{}]\n{}\n\
             [session]\n{}\n\
             [store]\n{}\n{}\n\
             [timeouts]\n{}\n",
            self.server,
            servers.join(", "),
            self.upstreams,
            secrets.join(", "),
            self.cookie,
            self.session,
            store,
            self.store_extra,
            self.timeouts,
        )
    }

    pub async fn start(self) -> Harness {
        let redis = (self.store == StoreKind::Redis).then(Redis::start);
        let backends = vec![Backend::start("one").await, Backend::start("two").await];
        let urls: Vec<String> = backends.iter().map(Backend::url).collect();
        let config = self.config(&urls, redis.as_ref().map(|r| r.url()).as_deref());
        let proxy = Proxy::start(&config).await;
        Harness {
            setup: self,
            redis,
            backends,
            proxy,
        }
    }
}

/// sessiongate in front of two backends, with its store.
pub struct Harness {
    pub setup: Setup,
    pub redis: Option<Redis>,
    pub backends: Vec<Backend>,
    pub proxy: Proxy,
}

impl Harness {
    pub async fn start(store: StoreKind) -> Harness {
        Setup::new(store).start().await
    }

    pub fn redis(&self) -> &Redis {
        self.redis.as_ref().expect("this harness runs with Redis")
    }

    /// A new browser talking to this proxy.
    pub fn browser(&self) -> Browser {
        Browser::new(self.proxy.addr)
    }

    /// Another sessiongate on the same store and backends, configured by `setup`.
    pub async fn another_proxy(&self, setup: &Setup) -> Proxy {
        let urls: Vec<String> = self.backends.iter().map(Backend::url).collect();
        let config = setup.config(&urls, self.redis.as_ref().map(|r| r.url()).as_deref());
        Proxy::start(&config).await
    }

    /// Every request the backends received, in no particular order.
    pub fn seen(&self) -> Vec<Seen> {
        self.backends.iter().flat_map(Backend::seen).collect()
    }

    /// Every Redis key holds a TTL.
    pub fn assert_every_key_has_a_ttl(&self) {
        if let Some(redis) = &self.redis {
            for key in redis.keys() {
                let ttl = redis.pttl(&key);
                assert!(ttl > 0, "{key} has no TTL ({ttl})");
            }
        }
    }
}

//! The test harness: real processes and real sockets, one file per piece.
//!
//! - [`Redis`] (`redis.rs`): a private `redis-server` on a free loopback
//!   port, stopped when dropped; never a shared instance.
//! - [`Backend`] (`backend.rs`): an HTTP upstream on loopback whose answers
//!   the test steers through request headers (`x-test-update`,
//!   `x-test-action`, `x-test-delay-ms`, `x-test-reply-header`) and paths
//!   (`/download`, `/stall`, `/ws`, `/big-update`, `/many-updates`), and
//!   which records every request it receives.
//! - [`Harness`] (`proxy.rs`): sessiongate (the library's server, on a real
//!   socket) in front of two backends, with the Redis or the memory store,
//!   as a [`Setup`] configures it.
//! - [`Browser`] (`browser.rs`): an HTTP client that keeps the session
//!   cookie.
//! - [`Binary`] (`binary.rs`): the built `sessiongate` binary as its own
//!   process, for what only a process shows: memory, signals, exit codes.
//! - [`behaviours!`]: runs a test once against Redis, once against the
//!   memory store.
//!
//! Each test binary uses its own part of the harness, hence
//! `allow(dead_code)`; every item here is used by at least one of them.

#![allow(dead_code)]

mod backend;
mod binary;
mod browser;
mod proxy;
mod redis;

// Each test binary takes a different part of these.
#[allow(unused_imports)]
pub use backend::{Backend, CHUNK, Seen, stream_of};
#[allow(unused_imports)]
pub use binary::{Binary, TempDir, sessiongate, signal, wait_until_listening};
#[allow(unused_imports)]
pub use browser::{Browser, Reply};
#[allow(unused_imports)]
pub use proxy::{Harness, Proxy, Setup};
#[allow(unused_imports)]
pub use redis::Redis;

/// Secrets of 32+ bytes for tests.
pub const SECRET_A: &str = "test-secret-A-0123456789abcdef0123456789";
pub const SECRET_B: &str = "test-secret-B-0123456789abcdef0123456789";

/// The store a harness runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    Redis,
    Memory,
}

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs a behaviour test against both stores: `behaviours!(name, ...)` makes
/// `redis_store::name` and `memory_store::name` from `async fn name(Setup)`.
#[macro_export]
macro_rules! behaviours {
    ($($name:ident),* $(,)?) => {
        mod redis_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Setup::new($crate::common::StoreKind::Redis)).await
                }
            )*
        }
        mod memory_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Setup::new($crate::common::StoreKind::Memory)).await
                }
            )*
        }
    };
}

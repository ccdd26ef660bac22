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
//! - [`send_all_then_read`]: a client that writes its whole request before
//!   it reads, over any stream (TCP, TLS), and [`oversized_head`] for it.
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

/// A GET head for `host` with one header field of `bytes` bytes, far beyond
/// any limit.
pub fn oversized_head(host: &str, bytes: usize) -> String {
    format!(
        "GET / HTTP/1.1\r\nhost: {host}\r\nx-big: {}\r\n\r\n",
        "h".repeat(bytes)
    )
}

/// Writes every one of `parts` to `stream`, as curl would, then reads the
/// response to the end: the text read. Panics if writing or reading fails
/// (the proxy reset the connection) or takes over 20 s.
pub async fn send_all_then_read<S>(mut stream: S, parts: &[&[u8]]) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        for part in parts {
            let written = stream.write_all(part).await;
            assert!(written.is_ok(), "the request was cut off: {written:?}");
        }
        let mut response = Vec::new();
        let read = stream.read_to_end(&mut response).await;
        let text = String::from_utf8_lossy(&response).into_owned();
        assert!(
            read.is_ok(),
            "the response was cut off: {read:?} after {text:.200}"
        );
        text
    };
    tokio::time::timeout(std::time::Duration::from_secs(20), exchange)
        .await
        .expect("the exchange ended within 20 s")
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

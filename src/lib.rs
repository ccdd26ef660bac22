//! sessiongate: a reverse proxy that owns HTTP sessions, so that the web
//! applications behind it don't have to.
//!
//! # A tour
//!
//! A request's path through the code:
//!
//! - [`server`] accepts the connection; [`connection`] serves it (HTTP/1.1
//!   or HTTP/2, its deadlines, parked while idle) and hands each request to
//!   the [`proxy::Gateway`], which runs it through named phases over one
//!   [`proxy::RequestContext`] (see [`proxy`]):
//! - [`proxy::context`] decides the `Host` once and refuses a request that
//!   breaks RFC 9112 §3.2;
//! - [`session::cookie`] finds and verifies the signed session cookie; a bad
//!   one costs nothing more.
//! - [`session::Sessions::resolve`] loads the session from the
//!   [`session::store`] in one round trip: Redis (one node, Sentinel or
//!   Cluster, through `store/link.rs`) or memory.
//! - [`proxy::headers`] gives the backend `X-Session*` and `X-Forwarded-*`
//!   headers; [`proxy::upstream`] picks a server round-robin and forwards it
//!   over a keep-alive connection from [`proxy::pool`].
//! - [`session::codec`] reads the backend's `X-Session-Update` headers, and
//!   [`session::Sessions::commit`] stores the change before the response
//!   goes on to the client.
//!
//! At the edge: [`tls`] terminates TLS (certificates by SNI, swapped on
//! reload) and speaks it to https upstreams; [`redirect`] is the plain
//! listener's 308; [`proxy::routes`] sends a request to its pool, with or
//! without sessions; [`reload`] swaps the whole configuration on SIGHUP.
//!
//! Around it: [`config`] reads and validates the TOML file, and
//! [`settings`] turns it once into what the process runs with;
//! [`timeouts`] holds every deadline and enforces them; [`error`] says where
//! a failure came from (client, upstream, store) and maps it to a status in
//! one place; [`demo`] is the newcomer's first run; [`users_api`] answers
//! the admin API's `/sessions…` (users and devices, SPEC §12).
//!
//! Watching it: [`metrics`] names every metric and counts lock-free;
//! [`access_log`] writes one line per request off the request path;
//! [`admin`] is the separate listener with `/healthz`, `/readyz`,
//! `/metrics` and the status page.
//! `main.rs` is only the command line, logging and signals.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod access_log;
pub mod admin;
pub mod config;
pub mod connection;
pub mod demo;
pub mod error;
pub mod metrics;
pub mod proxy;
pub mod redirect;
pub mod reload;
pub mod server;
pub mod session;
pub mod settings;
pub mod timeouts;
pub mod tls;
pub mod users_api;

pub use config::Config;
pub use server::Server;
pub use session::cookie::keygen;

//! The command line (SPEC §1): `run` (the default), `check`, `keygen`, `demo`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// A reverse proxy that owns HTTP sessions.
#[derive(Debug, Parser)]
#[command(name = "sessiongate", version, about)]
pub struct Cli {
    /// The configuration file.
    #[arg(
        long,
        global = true,
        env = "SESSIONGATE_CONFIG",
        default_value = "config.toml"
    )]
    pub config: PathBuf,

    /// What to do (default: run).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy.
    Run,
    /// Validate the configuration and print what it would do.
    Check,
    /// Print a new secret for cookie.secrets (32 random bytes, base64).
    Keygen,
    /// Run the proxy in front of two built-in demo backends, memory store.
    Demo {
        /// Where the demo listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
    },
}

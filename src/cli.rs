//! The command line (SPEC §1): `run` (the default), `check`, `keygen`, `demo`.
//! Only the commands that read the configuration take `--config`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// The environment variables sessiongate reads, shown after `--help`.
const ENVIRONMENT: &str = "\
Environment:
  SESSIONGATE_CONFIG  the configuration file when --config is not given
  SESSIONGATE_SECRET  the conventional place for the cookie secret: the example
                      config.toml reads it with secrets = [\"env:SESSIONGATE_SECRET\"]
                      (`sessiongate keygen` prints a new one)
  SESSIONGATE_LOG     the log filter, e.g. debug or sessiongate=debug (default: info;
                      RUST_LOG is read when it is unset)";

/// A reverse proxy that owns HTTP sessions.
#[derive(Debug, Parser)]
#[command(
    name = "sessiongate",
    version,
    about,
    after_help = ENVIRONMENT,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// `run`'s arguments, for `sessiongate --config PATH` with no command.
    #[command(flatten, next_help_heading = "Options of run, the default command")]
    pub run: ConfigArgs,

    /// What to do (default: run).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The argument of every command that reads the configuration.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// The configuration file.
    #[arg(long, env = "SESSIONGATE_CONFIG", default_value = "config.toml")]
    pub config: PathBuf,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy (the default command).
    #[command(after_help = ENVIRONMENT)]
    Run(ConfigArgs),
    /// Validate the configuration and print what it would do.
    #[command(after_help = ENVIRONMENT)]
    Check(ConfigArgs),
    /// Print a new secret for cookie.secrets (32 random bytes, base64).
    Keygen,
    /// Run the proxy in front of two built-in demo backends, memory store.
    Demo {
        /// Where the demo listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
    },
}

impl Cli {
    /// The command to run, `run` with the top-level arguments when none is given.
    pub fn into_command(self) -> Command {
        self.command.unwrap_or(Command::Run(self.run))
    }
}

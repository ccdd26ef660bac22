//! The command line (SPEC §1): `run` (the default), `check`, `keygen`, `demo`,
//! and `sessions` (SPEC §12).
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
    /// List or revoke a user's sessions in the configured store.
    #[command(subcommand)]
    Sessions(SessionsCommand),
    /// Run the proxy in front of two built-in demo backends, memory store.
    Demo {
        /// Where the demo listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
    },
}

/// `sessiongate sessions …` (SPEC §12): against the configured store, so
/// the same Redis the proxies use.
#[derive(Debug, Subcommand)]
pub enum SessionsCommand {
    /// List a user's live sessions, oldest first.
    List {
        #[command(flatten)]
        config: ConfigArgs,
        /// The user id (as the backend sent it in X-Session-User).
        #[arg(long)]
        user: String,
        /// Print JSON (as the admin API answers) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Destroy every session of a user, or one session by its sid.
    Revoke {
        #[command(flatten)]
        config: ConfigArgs,
        /// Destroy every session bound to this user.
        #[arg(long, required_unless_present = "sid", conflicts_with = "sid")]
        user: Option<String>,
        /// Destroy this one session.
        #[arg(long)]
        sid: Option<String>,
        /// Print JSON instead of a sentence.
        #[arg(long)]
        json: bool,
    },
}

impl Cli {
    /// The command to run, `run` with the top-level arguments when none is given.
    pub fn into_command(self) -> Command {
        self.command.unwrap_or(Command::Run(self.run))
    }
}

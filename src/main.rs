//! The `sessiongate` binary: command line, logging, runtime and signals
//! (and, with the `count-allocations` feature, the allocation counter).
//! Everything else is the library.

#[cfg(feature = "count-allocations")]
mod alloc_count;
mod cli;
mod sessions;

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use sessiongate::config::LogFormat;
use sessiongate::{Config, Server};
use tracing::warn;

use crate::cli::{Cli, Command};

/// With `count-allocations`, every allocation is counted (see
/// `alloc_count.rs`).
#[cfg(feature = "count-allocations")]
#[global_allocator]
static ALLOCATOR: alloc_count::Counting = alloc_count::Counting;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.into_command();
    // `run` sets up logging once its config says in which format.
    if !matches!(command, Command::Run(_)) {
        init_logging(LogFormat::Text);
    }
    let outcome = match command {
        Command::Run(args) => run(&args.config),
        Command::Check(args) => check(&args.config),
        Command::Keygen => {
            println!("{}", sessiongate::keygen());
            Ok(())
        }
        Command::Sessions(command) => sessions::run(command),
        Command::Demo { listen } => demo(listen),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("sessiongate: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr, as text or JSON (`log.format`); `SESSIONGATE_LOG`
/// (or `RUST_LOG`) filters them.
fn init_logging(format: LogFormat) {
    let filter = std::env::var("SESSIONGATE_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => logs.json().init(),
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
}

fn check(path: &Path) -> Result<()> {
    let config = Config::load(path)?;
    println!("{}: OK", path.display());
    print!("{}", config.describe());
    for warning in config.warnings() {
        println!("warning: {warning}");
    }
    Ok(())
}

fn run(path: &Path) -> Result<()> {
    let config = Config::load(path)?;
    init_logging(config.log.format);
    for warning in config.warnings() {
        warn!("{warning}");
    }
    runtime(config.server.worker_threads)?.block_on(async {
        let server = Server::bind(&config).await?;
        #[cfg(unix)]
        {
            let reloader =
                sessiongate::reload::Reloader::new(server.live().clone(), path.to_path_buf());
            tokio::spawn(reloader.on_sighup());
        }
        #[cfg(all(unix, feature = "count-allocations"))]
        tokio::spawn(report_allocations_on_sigusr1());
        server.run(shutdown_signal()).await;
        #[cfg(feature = "count-allocations")]
        eprintln!("{}", alloc_count::report());
        Ok(())
    })
}

fn demo(listen: std::net::SocketAddr) -> Result<()> {
    runtime(0)?.block_on(async {
        let demo = sessiongate::demo::start(listen).await?;
        let url = format!("http://{}/", demo.server.local_addr());
        println!("sessiongate demo: open {url}");
        for (name, addr) in &demo.backends {
            println!("  backend {name} on {addr}");
        }
        if let Some(admin) = demo.server.admin_addr() {
            println!("  status page: http://{admin}/status; the access log follows");
        }
        println!("  sessions in memory; press Ctrl-C to stop");
        demo.server.run(shutdown_signal()).await;
        Ok(())
    })
}

/// The async runtime, with `worker_threads` threads (0: one per core).
pub(crate) fn runtime(worker_threads: usize) -> Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    // Woken tasks wait their turn, so the Redis writer batches the commands
    // of every ready request (see .cargo/config.toml).
    #[cfg(tokio_unstable)]
    builder.disable_lifo_slot();
    if worker_threads > 0 {
        builder.worker_threads(worker_threads);
    }
    builder
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// With `count-allocations`: the totals so far on stderr at each SIGUSR1.
#[cfg(all(unix, feature = "count-allocations"))]
async fn report_allocations_on_sigusr1() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut usr1) = signal(SignalKind::user_defined1()) else {
        return;
    };
    while usr1.recv().await.is_some() {
        eprintln!("{}", alloc_count::report());
    }
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}

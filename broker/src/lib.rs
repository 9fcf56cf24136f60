//! # strata-broker
//!
//! The Kafka protocol server of Strata: accepts connections, decodes requests with the
//! `kafka-protocol` crate, serves them from the durable log in `strata-storage`, and
//! encodes responses. One file per Kafka API lives in [`handler`].

pub mod acl;
pub mod archive;
pub mod archive_tool;
pub mod archive_upload;
pub mod auth;
pub mod broker_configs;
pub mod cleaner;
pub mod codec;
pub mod config;
mod connection;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod group;
pub mod handler;
pub mod metrics;
pub mod protocol;
pub mod quota;
pub mod ratelog;
pub mod retention;
pub mod sasl;
pub mod scram;
mod server;
pub mod tier;
pub mod tls;
pub mod topic_config;
pub mod topic_policy;

pub use config::Config;
pub use server::Broker;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Command-line flags of `strata-broker`; each overrides the file and the environment.
#[derive(Debug, Parser)]
#[command(
    name = "strata-broker",
    version,
    about = "Strata: a Kafka-compatible durable log broker"
)]
struct Cli {
    /// TOML configuration file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to listen on (host:port). Env: STRATA_LISTEN.
    #[arg(long)]
    listen: Option<String>,
    /// host:port advertised to clients. Env: STRATA_ADVERTISE.
    #[arg(long)]
    advertise: Option<String>,
    /// Data directory. Env: STRATA_DATA_DIR.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Admin HTTP address (/metrics, /health, /ready); "" for none. Env: STRATA_ADMIN_LISTEN.
    #[arg(long)]
    admin_listen: Option<String>,
    /// Without a command, the broker runs.
    #[command(subcommand)]
    command: Option<Command>,
}

/// Tools that work on a stopped broker's data rather than run it.
#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Inspect the archive, or restore topics from it.
    #[command(subcommand)]
    Archive(archive_tool::ArchiveCommand),
}

fn load_config(cli: Cli) -> anyhow::Result<Config> {
    let mut config =
        Config::from_file(cli.config.as_deref())?.apply_env(|k| std::env::var(k).ok())?;
    if let Some(v) = cli.listen {
        config.listen = v;
    }
    if let Some(v) = cli.advertise {
        config.advertise = Some(v);
    }
    if let Some(v) = cli.data_dir {
        config.data_dir = v;
    }
    if let Some(v) = cli.admin_listen {
        config.admin_listen = v;
    }
    config.validate()?;
    Ok(config)
}

/// Threads for blocking storage calls (RocksDB reads, synced metadata writes). More than
/// this cannot make the machine faster, and a burst of such calls (a thousand new groups
/// recording themselves at once) then queues instead of starting hundreds of threads
/// (tokio's default allows 512).
const MAX_BLOCKING_THREADS: usize = 32;

/// The `strata-broker` program: parse flags, environment and file, run until SIGTERM or
/// SIGINT, then shut down gracefully.
pub fn cli_main() -> ExitCode {
    let mut cli = Cli::parse();
    if let Some(Command::Archive(cmd)) = cli.command.take() {
        return tool_main(cmd);
    }
    // object_store logs every retried request at info: while an archive store is down that
    // floods the log; the archive connector warns (rate-limited) instead.
    init_logging("info,object_store=warn");
    let config = match load_config(cli) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("{e:#}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run_until_signal(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr, filtered by `STRATA_LOG` (tracing's filter syntax), else at `default`.
fn init_logging(default: &str) {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("STRATA_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default)),
        )
        .init();
}

/// `strata-broker archive ...`: output on stdout, warnings and errors on stderr; exit code
/// 1 on failure.
fn tool_main(cmd: archive_tool::ArchiveCommand) -> ExitCode {
    init_logging("warn");
    match archive_tool::run(cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run_until_signal(config: Config) -> anyhow::Result<()> {
    let broker = Broker::start(config).await?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received, shutting down"),
    }
    broker.shutdown().await
}

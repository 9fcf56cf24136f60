//! The command line: argument definitions, dispatch, and the exit codes scripts rely on.

mod consume;
mod group;
mod output;
mod perf;
mod produce;
mod time;
mod topic;
mod user;

use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use strata_client::{Client, ClientConfig, Error};

/// Exit codes (documented in the README and in `strata --help`).
pub mod exit {
    pub const OK: i32 = 0;
    /// Anything else that failed.
    pub const ERROR: i32 = 1;
    /// Bad arguments (clap's own code).
    pub const USAGE: i32 = 2;
    /// The broker could not be reached or did not answer in time.
    pub const UNREACHABLE: i32 = 3;
    /// The topic, partition or group does not exist.
    pub const NOT_FOUND: i32 = 4;
    /// Authentication or authorization failed.
    pub const DENIED: i32 = 5;
    /// The thing exists already, or is in use (a group with active members).
    pub const CONFLICT: i32 = 6;
}

const AFTER_HELP: &str = "\
Exit codes: 0 success, 1 error, 2 bad arguments, 3 broker unreachable or timed out,
4 topic/partition/group not found, 5 authentication or authorization failed,
6 already exists or in use.";

#[derive(Parser, Debug)]
#[command(name = "strata", version, about = "Topics, produce, consume, consumer groups, replay and perf tests against any Kafka-compatible broker", after_help = AFTER_HELP)]
pub struct Cli {
    /// Broker address(es), host:port[,host:port...].
    #[arg(
        short = 'b',
        long = "bootstrap-server",
        env = "STRATA_BOOTSTRAP",
        default_value = "127.0.0.1:9092",
        global = true
    )]
    bootstrap: String,
    /// How listings are printed.
    #[arg(short = 'o', long, value_enum, default_value_t = Format::Table, global = true)]
    output: Format,
    /// Client id sent to the broker.
    #[arg(long, default_value = "strata-cli", global = true)]
    client_id: String,
    /// Seconds an operation may take (retries included) before it fails.
    #[arg(long, default_value_t = 30, global = true)]
    timeout: u64,
    /// Connect with TLS (a broker's SSL listener), trusting the CA certificates in this PEM file.
    #[arg(long, env = "STRATA_TLS_CA", global = true, value_name = "PEM")]
    tls_ca: Option<std::path::PathBuf>,
    /// With --tls-ca: present this client certificate (PEM) for mTLS.
    #[arg(
        long,
        env = "STRATA_TLS_CERT",
        global = true,
        value_name = "PEM",
        requires = "tls_key"
    )]
    tls_cert: Option<std::path::PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(
        long,
        env = "STRATA_TLS_KEY",
        global = true,
        value_name = "PEM",
        requires = "tls_cert"
    )]
    tls_key: Option<std::path::PathBuf>,
    /// Log in with SASL as this user (a broker's SASL_PLAINTEXT or SASL_SSL listener).
    #[arg(
        long,
        env = "STRATA_SASL_USER",
        global = true,
        requires = "sasl_password"
    )]
    sasl_user: Option<String>,
    /// The SASL password (prefer the STRATA_SASL_PASSWORD variable: arguments are visible
    /// to other users of the machine).
    #[arg(
        long,
        env = "STRATA_SASL_PASSWORD",
        global = true,
        hide_env_values = true,
        requires = "sasl_user"
    )]
    sasl_password: Option<String>,
    /// The SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.
    #[arg(
        long,
        env = "STRATA_SASL_MECHANISM",
        global = true,
        default_value = "PLAIN",
        value_parser = sasl_mechanism
    )]
    sasl_mechanism: strata_client::sasl::Mechanism,
    #[command(subcommand)]
    command: Command,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create, list, describe, alter and delete topics.
    #[command(subcommand)]
    Topic(topic::TopicCmd),
    /// Produce records from stdin or a file, one per line.
    Produce(produce::ProduceArgs),
    /// Print records from a topic.
    Consume(consume::ConsumeArgs),
    /// List, describe, delete consumer groups and reset their offsets.
    #[command(subcommand)]
    Group(group::GroupCmd),
    /// Reset a group to a point in time and report how much it will re-read.
    Replay(group::ReplayArgs),
    /// Producer and consumer performance tests.
    #[command(subcommand)]
    Perf(perf::PerfCmd),
    /// What a broker's archive holds; rebuild topics from it.
    #[cfg(feature = "archive")]
    #[command(subcommand)]
    Archive(ArchiveCmd),
    /// SCRAM users: list, set a password, delete.
    #[command(subcommand)]
    User(user::UserCmd),
    /// Print a shell completion script.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[cfg(feature = "archive")]
#[derive(Subcommand, Debug)]
enum ArchiveCmd {
    /// Per topic and partition: offset range, timestamps, bytes and segments archived.
    Ls {
        /// The archive: file:///path or s3://bucket/prefix (with the AWS_* variables).
        #[arg(long, env = "STRATA_ARCHIVE_URL")]
        archive_url: String,
        /// Only this topic.
        #[arg(long)]
        topic: Option<String>,
    },
    /// Recreate topics from the archive in a broker's data dir (the broker must be stopped).
    Restore {
        #[arg(long, env = "STRATA_DATA_DIR")]
        data_dir: std::path::PathBuf,
        #[arg(long, env = "STRATA_ARCHIVE_URL")]
        archive_url: String,
        /// A topic to restore (repeat for more); default: every archived topic.
        #[arg(long = "topic")]
        topics: Vec<String>,
    },
}

/// What every command gets: the connection settings and the output format.
pub struct Ctx {
    pub config: ClientConfig,
    pub format: Format,
}

impl Ctx {
    pub async fn client(&self) -> Result<Client, Error> {
        Client::connect(self.config.clone()).await
    }
}

fn sasl_mechanism(s: &str) -> Result<strata_client::sasl::Mechanism, String> {
    strata_client::sasl::Mechanism::from_name(s)
        .ok_or_else(|| format!("{s:?} is not PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"))
}

/// Runs the CLI; returns the exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
            let _ = e.print();
            return code;
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("STRATA_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut config = ClientConfig::new(cli.bootstrap.clone());
    config.client_id = cli.client_id.clone();
    config.retry_timeout = Duration::from_secs(cli.timeout.max(1));
    config.request_timeout = Duration::from_secs(cli.timeout.max(1));
    config.sasl = cli
        .sasl_user
        .clone()
        .zip(cli.sasl_password.clone())
        .map(|(user, password)| strata_client::sasl::Credentials {
            mechanism: cli.sasl_mechanism,
            user,
            password,
        });
    if let Some(ca) = &cli.tls_ca {
        let client = cli.tls_cert.as_deref().zip(cli.tls_key.as_deref());
        match strata_client::cluster::tls_config(ca, client) {
            Ok(tls) => config.tls = Some(tls),
            Err(e) => {
                eprintln!("error: {e}");
                return exit::USAGE;
            }
        }
    } else if cli.tls_cert.is_some() {
        eprintln!(
            "error: --tls-cert needs --tls-ca (the CA the broker's certificate is checked against)"
        );
        return exit::USAGE;
    }
    let ctx = Ctx {
        config,
        format: cli.output,
    };
    let result: anyhow::Result<i32> = match cli.command {
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "strata", &mut std::io::stdout());
            Ok(exit::OK)
        }
        #[cfg(feature = "archive")]
        Command::Archive(cmd) => archive(cmd, ctx.format).map(|()| exit::OK),
        command => {
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start the runtime: {e}");
                    return exit::ERROR;
                }
            };
            rt.block_on(async move {
                match command {
                    Command::Topic(cmd) => topic::run(&ctx, cmd).await,
                    Command::Produce(args) => produce::run(&ctx, args).await,
                    Command::Consume(args) => consume::run(&ctx, args).await,
                    Command::Group(cmd) => group::run(&ctx, cmd).await,
                    Command::Replay(args) => group::replay(&ctx, args).await,
                    Command::Perf(cmd) => perf::run(&ctx, cmd).await,
                    Command::User(cmd) => user::run(&ctx, cmd).await,
                    Command::Completions { .. } => unreachable!("handled above"),
                    #[cfg(feature = "archive")]
                    Command::Archive(_) => unreachable!("handled above"),
                }
            })
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            exit_code(&e)
        }
    }
}

/// The exit code an error maps to.
pub fn exit_code(e: &anyhow::Error) -> i32 {
    let Some(err) = e.chain().find_map(|c| c.downcast_ref::<Error>()) else {
        return exit::ERROR;
    };
    code_of(err)
}

pub fn code_of(err: &Error) -> i32 {
    match err {
        Error::Connect { .. } | Error::Disconnected { .. } | Error::Timeout(_) => exit::UNREACHABLE,
        Error::Kafka { error, .. } => match error.code() {
            3 | 100 | 69 | 91 => exit::NOT_FOUND,
            29 | 30 | 31 | 58 => exit::DENIED,
            36 | 68 | 92 => exit::CONFLICT,
            7 => exit::UNREACHABLE,
            _ => exit::ERROR,
        },
        _ => exit::ERROR,
    }
}

#[cfg(feature = "archive")]
fn archive(cmd: ArchiveCmd, format: Format) -> anyhow::Result<()> {
    use strata_broker::archive_tool;
    match cmd {
        ArchiveCmd::Ls { archive_url, topic } => {
            let topics = archive_tool::list(&archive_url, topic.as_deref())?;
            match format {
                Format::Table => println!("{}", archive_tool::table(&topics)),
                Format::Json => println!("{}", archive_tool::json(&topics)),
            }
        }
        ArchiveCmd::Restore {
            data_dir,
            archive_url,
            topics,
        } => {
            let restored = archive_tool::restore(&data_dir, &archive_url, &topics)?;
            let rows: Vec<serde_json::Value> = restored
                .iter()
                .map(|r| {
                    serde_json::json!({
                        "topic": r.name,
                        "id": r.id.to_string(),
                        "partitions": r.start_offsets.len(),
                        "start_offsets": r.start_offsets,
                    })
                })
                .collect();
            output::print_rows(
                format,
                &["topic", "id", "partitions", "start_offsets"],
                &rows,
            );
        }
    }
    Ok(())
}

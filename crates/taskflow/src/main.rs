//! `taskflow`: the one binary. `main` only parses the command line, loads settings and wires.

mod app;
mod bench;
mod bench_api;
mod bench_fanout;
mod bench_reminders;
mod portability;
mod settings;
mod telemetry;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use settings::{CliOverrides, DatabaseOverride, LogOverride, Settings};

/// jemalloc rather than glibc's malloc: the async workers allocate and free many small buffers
/// per event, and glibc's free lists cost a sixth of their time; measured against glibc and
/// mimalloc in README, "Event throughput".
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// TaskFlow: an event-driven task platform.
#[derive(Parser)]
#[command(name = "taskflow", version, about)]
struct Cli {
    /// Config file (TOML). Default: ./taskflow.toml when it exists.
    #[arg(long, global = true, env = "TASKFLOW_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on, e.g. 127.0.0.1:8080.
    #[arg(long, global = true)]
    listen: Option<String>,
    /// Database URL, e.g. sqlite://./taskflow-data/taskflow.db.
    #[arg(long, global = true)]
    database_url: Option<String>,
    /// Folder for the embedded database and generated secrets.
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// Log format: pretty (or text) or json.
    #[arg(long, global = true)]
    log_format: Option<String>,
    /// Roles to run, comma-separated: api, relay, audit (default: all).
    #[arg(long, global = true, value_delimiter = ',')]
    roles: Option<Vec<String>>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the configured roles; all by default) until SIGTERM or SIGINT.
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Print the effective configuration with secrets redacted.
    Config,
    /// Grant or revoke the admin role (dead-letter list and replay) of an account.
    Admin {
        /// What to do.
        #[command(subcommand)]
        action: AdminAction,
    },
    /// Manage the broker's topics.
    Topics {
        /// What to do.
        #[command(subcommand)]
        action: TopicsAction,
    },
    /// Run a benchmark and write its result file.
    Bench {
        /// Which benchmark.
        #[arg(value_enum)]
        which: bench::Benchmark,
        #[command(flatten)]
        options: Box<bench::BenchOptions>,
    },
    /// Write the whole database (users, tokens, tasks, audit log, dead letters) as JSON Lines.
    Export {
        /// File to write (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Load a `taskflow export` file into the configured database, which must be empty
    /// (migrates it first).
    Import {
        /// The JSON Lines file to load.
        file: PathBuf,
    },
    /// Serve the MCP tools over standard input/output for a desktop assistant, acting as the
    /// user whose personal access token is `mcp.token` (`TASKFLOW_MCP__TOKEN`). Opens the
    /// configured database directly; logs go to standard error.
    Mcp,
    /// Exit 0 when the server at --url answers /healthz (for container health checks).
    Healthcheck {
        /// Base URL of the server.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
    },
}

#[derive(Subcommand)]
enum AdminAction {
    /// Give the account with this e-mail the admin role.
    Grant {
        /// The account's e-mail address.
        email: String,
    },
    /// Take the admin role away.
    Revoke {
        /// The account's e-mail address.
        email: String,
    },
}

#[derive(Subcommand)]
enum TopicsAction {
    /// Create every topic and dead-letter topic on the configured broker (idempotent).
    Create,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let overrides = CliOverrides {
        listen: cli.listen.clone(),
        data_dir: cli.data_dir.clone(),
        database: cli.database_url.clone().map(|url| DatabaseOverride { url }),
        log: cli.log_format.clone().map(|format| LogOverride { format }),
        roles: cli.roles.clone(),
    };
    let settings = match Settings::load(cli.config.as_deref(), &overrides) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("taskflow: {error}");
            return ExitCode::from(2);
        }
    };
    if let Command::Config = cli.command {
        print!("{}", settings.to_redacted_toml());
        return ExitCode::SUCCESS;
    }
    let telemetry = match telemetry::init(&settings.log, &settings.telemetry) {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("taskflow: {error}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("taskflow: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve => {
                let shutdown = CancellationToken::new();
                app::cancel_on_signal(shutdown.clone());
                app::serve(settings, shutdown).await
            }
            Command::Migrate => app::migrate(&settings).await,
            Command::Mcp => app::mcp_stdio(settings).await,
            Command::Export { out } => portability::export(&settings, out.as_deref()).await,
            Command::Import { file } => portability::import(&settings, &file).await,
            Command::Healthcheck { url } => healthcheck(&url).await,
            Command::Bench { which, options } => bench::run(which, *options).await,
            Command::Admin { action } => match action {
                AdminAction::Grant { email } => app::set_admin(&settings, &email, true).await,
                AdminAction::Revoke { email } => app::set_admin(&settings, &email, false).await,
            },
            Command::Topics {
                action: TopicsAction::Create,
            } => app::create_topics(&settings).await,
            Command::Config => Ok(()),
        }
    });
    // Outside `block_on`: the exporter's HTTP client blocks while it flushes.
    telemetry.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("taskflow: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn healthcheck(base: &str) -> anyhow::Result<()> {
    let url = format!("{}/healthz", base.trim_end_matches('/'));
    let response = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(5))
        .build()?
        .get(&url)
        .send()
        .await?;
    anyhow::ensure!(
        response.status().is_success(),
        "{url} answered {}",
        response.status()
    );
    Ok(())
}

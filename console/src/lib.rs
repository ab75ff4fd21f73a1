//! tasknode-console: the control plane. `serve` runs the HTTP API and the web console over the
//! store (SQLite, or a PostgreSQL several consoles share); `migrate` moves a stopped console's
//! SQLite state into PostgreSQL; the other commands are an admin client of a running console.

pub mod app;
pub mod auth;
pub mod cli;
pub mod client;
pub mod clock;
pub mod commands;
pub mod dispatch;
pub mod env;
pub mod http;
pub mod keys;
pub mod lease;
pub mod liveness;
pub mod metrics;
pub mod proxy_protocol;
pub mod removed;
pub mod rollout;
pub mod server;
pub mod service;
pub mod status;
pub mod store;
pub mod tasks;
pub mod throttle;
pub mod tls;
pub mod web;

use clap::CommandFactory;
use std::process::ExitCode;

use cli::{Cli, Command};

/// Exit statuses of `tasknode-console`, documented in the README.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Anything not covered below.
    Failure = 1,
    /// The console answered and refused the request (a 4xx).
    Refused = 3,
    /// The console could not be reached.
    Unreachable = 4,
}

/// Routes the parsed command line to its command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Serve(args) => runtime.block_on(commands::serve::run(&cli.global, *args)),
        Command::Project(cmd) => runtime.block_on(commands::admin::project(&cli.global, cmd)),
        Command::User(cmd) => runtime.block_on(commands::admin::user(&cli.global, cmd)),
        Command::Group(cmd) => runtime.block_on(commands::admin::group(&cli.global, cmd)),
        Command::Server(cmd) => runtime.block_on(commands::admin::server(&cli.global, cmd)),
        Command::InstallCommand(args) => {
            runtime.block_on(commands::admin::install_command(&cli.global, args))
        }
        Command::InstallLink(cmd) => runtime.block_on(commands::access::links(&cli.global, cmd)),
        Command::Audit(args) => runtime.block_on(commands::access::audit(&cli.global, args)),
        Command::YumCommand(args) => runtime.block_on(commands::yum::run(&cli.global, args)),
        Command::Task(cmd) => runtime.block_on(commands::tasks::run(&cli.global, cmd)),
        Command::Release(cmd) => runtime.block_on(commands::releases::run(&cli.global, cmd)),
        Command::Migrate(args) => runtime.block_on(commands::migrate::run(&cli.global, args)),
        Command::Completions(args) => Ok(tasknode_clidocs::run_completions(Cli::command(), &args)?),
        Command::Man(args) => Ok(tasknode_clidocs::run_man(Cli::command(), &args)?),
    }
}

/// Logs to stderr; `RUST_LOG` (or `TASKNODE_LOG`) sets the filter, `info` by default.
pub fn init_tracing() {
    let filter = std::env::var(env::LOG)
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".to_owned());
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

/// Prints an error with its causes and picks the exit status.
pub fn report(err: &anyhow::Error) -> ExitCode {
    let code = match err.downcast_ref::<client::ClientError>() {
        Some(client::ClientError::Refused { .. }) => Exit::Refused,
        Some(client::ClientError::Unreachable { .. } | client::ClientError::Tls { .. }) => {
            Exit::Unreachable
        }
        _ => Exit::Failure,
    };
    eprintln!("error: {err}");
    for cause in err.chain().skip(1) {
        eprintln!("  caused by: {cause}");
    }
    ExitCode::from(code as u8)
}

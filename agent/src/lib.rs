//! tasknode: the agent that makes a server an execution node of a tasknode console. `enroll`
//! trades a user's access key or a one-time token for node credentials, `run` heartbeats, runs
//! tasks and updates itself, `status` and `doctor` tell an operator where things stand.

pub mod backoff;
pub mod cli;
pub mod client;
pub mod commands;
pub mod config;
pub mod consoles;
pub mod env;
pub mod facts;
pub mod identity;
pub mod logfile;
pub mod logserver;
pub mod metrics;
pub mod passwd;
pub mod probation;
pub mod service;
pub mod tasks;
pub mod trust;
pub mod update;

use clap::CommandFactory;
use std::process::ExitCode;

/// This binary's version between [`tasknode_protocol::AGENT_VERSION_MARKER`] and a NUL: the
/// console and `tasknode-dist` read it from the file, whatever its architecture.
static VERSION_MARKER: &str = concat!(
    "\0tasknode-agent-version=",
    env!("TASKNODE_AGENT_VERSION"),
    "\0"
);

/// The agent's version, read from the marker so that the marker stays in the binary.
pub fn version() -> &'static str {
    let marker = std::hint::black_box(VERSION_MARKER);
    marker
        .get(tasknode_protocol::AGENT_VERSION_MARKER.len()..marker.len() - 1)
        .unwrap_or(env!("TASKNODE_AGENT_VERSION"))
}

use cli::{Cli, Command};

/// Exit statuses of `tasknode`, documented in the README.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Success = 0,
    /// Anything not covered below; for `status`, "not healthy".
    Failure = 1,
    /// The console answered and refused the request.
    Refused = 3,
    /// The console could not be reached.
    Unreachable = 4,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e as u8)
    }
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let exit = match cli.command {
        Command::Enroll(args) => runtime()?.block_on(commands::enroll::run(args))?,
        Command::Run(args) => runtime()?.block_on(commands::run::run(args))?,
        Command::Status(args) => runtime()?.block_on(commands::status::run(args))?,
        Command::Doctor(args) => runtime()?.block_on(commands::doctor::run(args))?,
        Command::Update(args) => runtime()?.block_on(commands::update::run(args))?,
        Command::Leave(args) => runtime()?.block_on(commands::leave::run(args))?,
        // LSB codes rather than the ones above: status exits 0 running, 1 dead, 3 stopped.
        Command::Serverctl(args) => return commands::serverctl::run(args),
        Command::Completions(args) => {
            tasknode_clidocs::run_completions(Cli::command(), &args)?;
            Exit::Success
        }
        Command::Man(args) => {
            tasknode_clidocs::run_man(Cli::command(), &args)?;
            Exit::Success
        }
    };
    Ok(exit.into())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// Prints an error with its causes and picks the exit status.
pub fn report(err: &anyhow::Error) -> ExitCode {
    let code = match err.downcast_ref::<client::ClientError>() {
        Some(client::ClientError::Refused { .. }) => Exit::Refused,
        Some(client::ClientError::Unreachable { .. }) => Exit::Unreachable,
        _ => Exit::Failure,
    };
    eprintln!("error: {err}");
    for cause in err.chain().skip(1) {
        eprintln!("  caused by: {cause}");
    }
    code.into()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_version_marker_is_the_one_tools_look_for() {
        assert_eq!(
            tasknode_protocol::agent_version_in(super::VERSION_MARKER.as_bytes()),
            Some(env!("TASKNODE_AGENT_VERSION"))
        );
        assert_eq!(super::version(), env!("TASKNODE_AGENT_VERSION"));
    }
}

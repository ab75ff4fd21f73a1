//! Command-line interface of the agent.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::env;

#[derive(Debug, Parser)]
#[command(
    name = "tasknode",
    version = crate::version(),
    about = "The tasknode agent: enroll this server with a console, heartbeat, run tasks",
    long_about = "The tasknode agent.\n\n\
        `tasknode enroll` registers this server with a console using a user's access key; \
        `tasknode run` keeps it available there; `tasknode status` says where things stand.\n\n\
        Exit status: 0 success, 1 failure (for status: not healthy), 2 bad command line, \
        3 refused by the console, 4 console unreachable."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Enroll this server with a console and write the agent config.
    Enroll(EnrollArgs),
    /// Run the agent: heartbeat until stopped (SIGTERM tells the console it is stopping).
    Run(RunArgs),
    /// Show enrollment, console reachability, last heartbeat and clock offset.
    Status(StatusArgs),
    /// Start, stop, restart or query the agent service (systemd, SysV script, or a pid file).
    Serverctl(ServerctlArgs),
    /// Check what operators trip on (config, hostname resolution, console and TLS, clock, log
    /// port, directories, disk, service) and say how to fix each failure; changes nothing.
    Doctor(DoctorArgs),
    /// Update this agent to the version the console asks for (or --version), from a signed
    /// release; --check only says whether it would. Script installs update themselves while
    /// running; this is for a stopped agent.
    Update(UpdateArgs),
    /// Ask the console to remove this server from its resource group (install.sh
    /// --uninstall offers it). Refused while the console sees it holding tasks, unless
    /// --mode says to drain or force.
    Leave(LeaveArgs),
    /// Print a completion script for bash, zsh or fish (packages install them).
    Completions(tasknode_clidocs::CompletionsArgs),
    /// Print the man page, or write every page (one per subcommand too) with --out DIR.
    Man(tasknode_clidocs::ManArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ServerctlAction {
    /// Start the agent (nothing to do when it runs).
    Start,
    /// Stop the agent; it tells the console it is stopping.
    Stop,
    /// Stop, then start.
    Restart,
    /// Exit 0 when running, 1 when dead, 3 when stopped.
    Status,
}

#[derive(Debug, Args)]
pub struct ServerctlArgs {
    #[arg(value_enum)]
    pub action: ServerctlAction,
    #[command(flatten)]
    pub config: ConfigArg,
}

#[derive(Debug, Clone, Args)]
pub struct ConfigArg {
    /// Agent config file.
    #[arg(long, env = env::CONFIG, default_value = env::DEFAULT_CONFIG, value_name = "PATH")]
    pub config: PathBuf,
}

/// How the agent was installed (script, rpm, deb or manual), as tasknode-protocol's layout
/// names it.
pub use tasknode_protocol::layout::InstallMethod;

/// `--install-method`: one of the layout's install methods.
fn install_method() -> impl clap::builder::TypedValueParser<Value = InstallMethod> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(InstallMethod::ALL.map(InstallMethod::as_str))
        .try_map(|s| s.parse::<InstallMethod>())
}

#[derive(Debug, Args)]
pub struct EnrollArgs {
    /// Console URL, e.g. http://console.example.com:8080. Repeat it for several consoles (or
    /// name one load balancer): the agent talks to the first and moves on to the next when one
    /// cannot be reached or answers 5xx. [default: the consoles of an existing config, as the
    /// installer writes it]
    #[arg(long, value_name = "URL")]
    pub console: Vec<String>,
    /// Trust only this CA certificate (PEM) for the console's HTTPS, as install scripts do with
    /// the console's own CA; recorded in the config. [default: the existing config's, else the
    /// system's CAs]
    #[arg(long, value_name = "FILE")]
    pub console_ca: Option<PathBuf>,
    /// User name of the access key (from `tasknode-console user create`); the password comes
    /// from --password-stdin or --password-file.
    #[arg(long, value_name = "NAME", requires = "password_source")]
    pub user_name: Option<String>,
    /// Read the password from standard input (first line).
    #[arg(long, group = "password_source")]
    pub password_stdin: bool,
    /// Read the password from the first line of FILE (keep it mode 0600).
    #[arg(long, value_name = "FILE", group = "password_source")]
    pub password_file: Option<PathBuf>,
    /// Enroll with a one-time enrollment token (from an install command) read from standard
    /// input, instead of an access key.
    #[arg(long, conflicts_with_all = ["user_name", "password_source"], group = "token_source")]
    pub token_stdin: bool,
    /// Enroll with a one-time enrollment token read from the first line of FILE.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["user_name", "password_source"], group = "token_source")]
    pub token_file: Option<PathBuf>,
    /// Identify this server by its DMI product UUID (true, for VPC groups) or by its hostname
    /// (false, for classic groups).
    #[arg(long, value_name = "true|false", value_parser = clap::builder::BoolValueParser::new(), action = clap::ArgAction::Set)]
    pub enable_uuid: bool,
    /// Directory for heartbeat.log, agent.log and task logs. [default: the existing config's,
    /// else the install method's layout's; for a manual install ../logs beside a `conf` config
    /// directory, else logs/ beside the config]
    #[arg(long, value_name = "DIR")]
    pub log_dir: Option<PathBuf>,
    /// How the agent was installed, recorded in the config. [default: the existing config's,
    /// else manual]
    #[arg(long, value_parser = install_method())]
    pub install_method: Option<InstallMethod>,
    /// Refused: a password on the command line is visible to every user of the host.
    #[arg(long, hide = true, value_name = "PASSWORD")]
    pub password: Option<String>,
    #[command(flatten)]
    pub config: ConfigArg,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Trial of a new version during a self-update: heartbeat until N are answered, then exit
    /// 0. Runs no tasks; ends when the agent that started it ends.
    #[arg(long, value_name = "N", hide = true)]
    pub trial: Option<u32>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub config: ConfigArg,
}

#[derive(Debug, Args)]
pub struct LeaveArgs {
    /// What the console does with tasks it still sees on this server: refuse, drain (no new
    /// tasks; removed when they finish) or force (cancel them).
    #[arg(long, value_enum, default_value = "refuse")]
    pub mode: LeaveMode,
    #[command(flatten)]
    pub config: ConfigArg,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LeaveMode {
    Refuse,
    Drain,
    Force,
}

impl From<LeaveMode> for tasknode_protocol::wire::RemoveMode {
    fn from(m: LeaveMode) -> Self {
        use tasknode_protocol::wire::RemoveMode;
        match m {
            LeaveMode::Refuse => RemoveMode::Refuse,
            LeaveMode::Drain => RemoveMode::Drain,
            LeaveMode::Force => RemoveMode::Force,
        }
    }
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// Only fetch and verify the manifest and say what would happen; change nothing.
    #[arg(long)]
    pub check: bool,
    /// The version to move to, instead of the one the console asks for.
    #[arg(long, value_name = "VERSION")]
    pub version: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub config: ConfigArg,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub config: ConfigArg,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn enable_uuid_needs_an_explicit_value() {
        let base = [
            "tasknode",
            "enroll",
            "--console",
            "http://x",
            "--user-name",
            "u",
            "--password-stdin",
        ];
        assert!(Cli::try_parse_from(base.iter().chain(&["--enable-uuid"])).is_err());
        assert!(Cli::try_parse_from(base.iter().chain(&["--enable-uuid", "maybe"])).is_err());
        let cli = Cli::try_parse_from(base.iter().chain(&["--enable-uuid", "true"])).unwrap();
        assert!(matches!(
            cli.command,
            Command::Enroll(EnrollArgs {
                enable_uuid: true,
                ..
            })
        ));
    }
}

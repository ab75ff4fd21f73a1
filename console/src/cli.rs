//! Command-line interface of tasknode-console.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::env;

#[derive(Debug, Parser)]
#[command(
    name = "tasknode-console",
    version,
    about = "The tasknode control plane: serve the API, and administer projects, users, resource groups, servers, tasks and releases",
    long_about = "The tasknode control plane.\n\n\
        `tasknode-console serve` runs the HTTP API over an embedded SQLite store in its data directory. \
        The other commands are clients of a running console: they find it through --console \
        (or TASKNODE_CONSOLE, else the URL a local console recorded in its data directory) and \
        authenticate with the admin token in --token-file (or TASKNODE_TOKEN_FILE, else \
        DATA/admin.token).\n\n\
        Exit status: 0 success, 1 failure, 2 bad command line, 3 refused by the console, 4 console unreachable."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// Data directory of the console (database, admin.token, console.url).
    /// [default: /var/lib/tasknode-console as root, else ~/.local/share/tasknode-console]
    #[arg(long, global = true, env = env::DATA, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// URL of the console the admin commands talk to.
    /// [default: the URL recorded in DATA/console.url, else http://127.0.0.1:8080]
    #[arg(long, global = true, env = env::CONSOLE, value_name = "URL")]
    pub console: Option<String>,
    /// File holding the admin token. [default: DATA/admin.token]
    #[arg(long, global = true, env = env::TOKEN_FILE, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the console: HTTP API and embedded store.
    Serve(Box<ServeArgs>),
    /// Create and list projects.
    #[command(subcommand)]
    Project(ProjectCmd),
    /// Create and list users (access keys agents enroll with).
    #[command(subcommand)]
    User(UserCmd),
    /// Create, list, rename and delete resource groups.
    #[command(subcommand)]
    Group(GroupCmd),
    /// Add servers to resource groups and list them with their state.
    #[command(subcommand)]
    Server(ServerCmd),
    /// Print a one-time install command for a group: run it as root on the server.
    InstallCommand(InstallCommandArgs),
    /// List and revoke the install links not used yet.
    #[command(subcommand)]
    InstallLink(InstallLinkCmd),
    /// Show the audit log: who changed what, newest first.
    Audit(AuditArgs),
    /// Print the command that points a host's yum at this console's signed repository (with
    /// `serve --dist`); for a console with its own CA it also fetches and checks that CA.
    YumCommand(YumCommandArgs),
    /// Submit shell-script tasks to a group, follow them, read their logs, cancel them.
    #[command(subcommand)]
    Task(TaskCmd),
    /// Publish signed agent releases and roll them out to groups: pinned at once, or in
    /// batches that halt when agents fail to update.
    #[command(subcommand)]
    Release(ReleaseCmd),
    /// Move this console's state from its SQLite database into an empty PostgreSQL database,
    /// checking every table's rows and checksum before committing.
    #[command(long_about = MIGRATE_ABOUT)]
    Migrate(MigrateArgs),
    /// Print a completion script for bash, zsh or fish (packages install them).
    Completions(tasknode_clidocs::CompletionsArgs),
    /// Print the man page, or write every page (one per subcommand too) with --out DIR.
    Man(tasknode_clidocs::ManArgs),
}

const MIGRATE_ABOUT: &str =
    "Move this console's state from its SQLite database (DATA/tasknode.db) into an empty \
PostgreSQL database, so consoles started with --database share it.

Stop the console first: migrate takes the data directory's lock as serve does and refuses while a \
console holds it. The SQLite database is first brought to the newest schema; the PostgreSQL \
schema is created, and the target must hold no state yet (nothing beside its empty default \
project): a target with projects, users, servers, tasks, releases, sessions or secrets is \
refused, naming what it holds, and nothing is changed.

What moves, with its ids, in one PostgreSQL transaction: projects, users, resource groups, \
servers with their enrollments and liveness, install-command tokens, tasks with their scripts \
and results, releases with their manifests, rollouts and their members, update reports, web \
sessions (no one is signed out), the console's secrets (the admin token, the log-token key, \
the TLS CA and certificates), and the task logs VPC servers pushed (DATA/task-logs, read into \
the database, so every console shows them). The id sequences are set past the highest ids ever given out, so \
no task id is handed out again. Before committing, every table's row count and SHA-256 \
checksum (its rows in key order, rendered canonically) are computed on both sides and printed; \
any difference rolls everything back and exits non-zero, naming the table. The task logs are \
checked the same way: how many, and a SHA-256 over each log's task, size and bytes.

What does not move: --dist trees stay where they are; files in DATA/task-logs that are not the \
log of a task (a deleted task's) are counted and left; the SQLite file and the log files are \
left as they were (start no console on them again: their state would drift from the \
database's).

Next: start each console with --database URL (and the same password option); keep DATA/admin.token \
for the admin commands. Classic servers' task logs are read from the servers and need nothing.";

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The PostgreSQL database to move into: `postgres://USER@HOST:PORT/DATABASE`, without a
    /// password (give it with --database-password-file or TASKNODE_DATABASE_PASSWORD).
    #[arg(long, value_name = "URL")]
    pub to: String,
    /// A file whose first line is the PostgreSQL password; it must not be readable or writable
    /// by group or others (chmod 600). Without it the password, if the server asks for one,
    /// comes from the environment variable TASKNODE_DATABASE_PASSWORD.
    #[arg(long, value_name = "FILE")]
    pub database_password_file: Option<PathBuf>,
    /// With TLS to the database (the URL's sslmode=require or prefer): the CA certificates
    /// (PEM) that may sign the database server's certificate, instead of the system's roots.
    /// The certificate is always verified and must name the URL's host (sslmode=require here
    /// is libpq's verify-full).
    #[arg(long, value_name = "FILE")]
    pub database_ca: Option<PathBuf>,
    #[command(flatten)]
    pub out: Output,
}

#[derive(Debug, Subcommand)]
pub enum ReleaseCmd {
    /// List the published releases, then each group's rollout: its state, how many servers
    /// were offered the version, updated and failed, and why.
    List {
        /// Only rollouts of this project.
        #[arg(long)]
        project: Option<String>,
        #[command(flatten)]
        out: Output,
    },
    /// Publish a signed update manifest: the manifest.CHANNEL.json (or rollback.CHANNEL.json)
    /// that `tasknode-dist build` (or `tasknode-dist rollback`) wrote under releases/VERSION/.
    /// A console serving that build (--dist) checks its signature against the release key and
    /// that the binaries it lists are there.
    Publish {
        /// The manifest file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        #[command(flatten)]
        out: Output,
    },
    /// Pin a group to a version: every server of the group is offered it at once, also servers
    /// added later. Moving back to an older version needs its rollback manifest published.
    Pin {
        /// The resource group.
        #[arg(long)]
        group: String,
        /// A published version.
        #[arg(long, value_name = "VERSION")]
        version: String,
        /// The group's project.
        #[arg(long, default_value = "default")]
        project: String,
        #[command(flatten)]
        out: Output,
    },
    /// Roll a version out to a group in batches: the next batch is offered the version once
    /// every server of the one before updated (and passed its health check), failed, or
    /// stopped; the rollout halts when more agents fail than --max-failures. When every server
    /// was offered it, the group is pinned to it. Setting a rollout again starts it over.
    Rollout {
        /// The resource group.
        #[arg(long)]
        group: String,
        /// A published version.
        #[arg(long, value_name = "VERSION")]
        version: String,
        /// Servers per batch: a count (5), a percentage of the group (25%, rounded up), or all.
        #[arg(long, value_name = "SIZE")]
        batch: String,
        /// How many agents may fail to update before the rollout halts.
        #[arg(long, default_value_t = 0, value_name = "N")]
        max_failures: u32,
        /// The group's project.
        #[arg(long, default_value = "default")]
        project: String,
        #[command(flatten)]
        out: Output,
    },
}

#[derive(Debug, Subcommand)]
pub enum TaskCmd {
    /// Queue a shell script to run once on a server of a group (as the task user, in its own
    /// working directory, killed with its whole process tree at the timeout).
    Submit {
        #[arg(long)]
        group: String,
        /// The script (run by /bin/sh); `-` reads it from standard input.
        #[arg(long, value_name = "FILE")]
        script: PathBuf,
        /// Kill the task after this long (at most 7 days). [default: 1h]
        #[arg(long, value_parser = duration, value_name = "DURATION")]
        timeout: Option<Duration>,
        #[arg(long, default_value = "default")]
        project: String,
        /// Names this submit within the group: submitting again with the same key (a
        /// scheduler's retry of one run, say) answers the task the first submit made instead of
        /// queuing another. 1 to 128 of A-Z a-z 0-9 . _ : -. When the console does not answer,
        /// the command itself sends the submit again, with this key, for about 10 s.
        /// [default: a random key of this command's own]
        #[arg(long, value_name = "KEY")]
        idempotency_key: Option<String>,
        #[command(flatten)]
        out: Output,
    },
    /// List tasks, newest first.
    List {
        #[arg(long)]
        group: Option<String>,
        #[arg(long)]
        project: Option<String>,
        /// Only tasks in this state: queued, assigned, running, succeeded, failed, timed_out,
        /// cancelled or lost.
        #[arg(long)]
        state: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[command(flatten)]
        out: Output,
    },
    /// Show one task: its state and why, its server, exit code and times.
    Show {
        id: i64,
        #[command(flatten)]
        out: Output,
    },
    /// Cancel a task: a queued one never runs; a running one is killed with its process tree.
    Cancel {
        id: i64,
        #[command(flatten)]
        out: Output,
    },
    /// Print a task's log (stdout and stderr as the script wrote them).
    Log {
        id: i64,
        /// Keep printing as the log grows, until the task is done and its whole log is shown.
        #[arg(long, short)]
        follow: bool,
    },
}

#[derive(Debug, Args)]
pub struct InstallCommandArgs {
    /// The resource group the server joins.
    #[arg(long)]
    pub group: String,
    /// The user the install script is made for.
    #[arg(long, value_name = "NAME")]
    pub user: String,
    #[arg(long, default_value = "default")]
    pub project: String,
    /// How long the command works (at most 7 days).
    #[arg(long, default_value = "24h", value_parser = duration, value_name = "DURATION")]
    pub ttl: Duration,
    #[command(flatten)]
    pub out: Output,
}

#[derive(Debug, Args)]
pub struct YumCommandArgs {
    /// The host's dist: el6 (CentOS 6), el7 (CentOS 7), al7 (Alibaba Cloud Linux 2) or al8
    /// (Alibaba Cloud Linux 3).
    #[arg(long, default_value = "el7")]
    pub dist: String,
    #[command(flatten)]
    pub out: Output,
}

fn duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 500ms, 10s, 10m)"))?;
    if d.is_zero() {
        return Err("must be above zero".to_owned());
    }
    Ok(d)
}

/// A size in bytes: a number, optionally followed by K, M, G or T (powers of 1024).
fn byte_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (digits, shift) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => {
                    return Err(format!(
                        "{t:?}: use a number of bytes, or one with K, M, G or T"
                    ));
                }
            };
            (&t[..i], shift)
        }
        _ => (t, 0),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{t:?}: use a number of bytes, or one with K, M, G or T"))?;
    match n.checked_mul(1 << shift) {
        Some(0) => Err("must be above zero".to_owned()),
        Some(v) => Ok(v),
        None => Err(format!("{t:?} is too large")),
    }
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on; port 0 picks a free port (the chosen URL is printed and written
    /// to DATA/console.url).
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// The database: `postgres://USER@HOST:PORT/DATABASE` for a PostgreSQL that several
    /// consoles share (the schema is created or migrated on start). The URL carries no
    /// password: give it with --database-password-file or TASKNODE_DATABASE_PASSWORD.
    /// [default: SQLite in the data directory, DATA/tasknode.db]
    #[arg(long, env = env::DATABASE, value_name = "URL")]
    pub database: Option<String>,
    /// A file whose first line is the PostgreSQL password for --database; it must not be
    /// readable or writable by group or others (chmod 600). Without it the password, if the
    /// server asks for one, comes from the environment variable TASKNODE_DATABASE_PASSWORD.
    #[arg(long, value_name = "FILE", requires = "database")]
    pub database_password_file: Option<PathBuf>,
    /// With TLS to the database (the URL's sslmode=require or prefer): the CA certificates
    /// (PEM) that may sign the database server's certificate, instead of the system's roots.
    /// The certificate is always verified and must name the URL's host (sslmode=require here
    /// is libpq's verify-full).
    #[arg(long, value_name = "FILE", requires = "database")]
    pub database_ca: Option<PathBuf>,
    /// How often agents are asked to heartbeat.
    #[arg(long, default_value = "10s", value_parser = duration, value_name = "DURATION")]
    pub heartbeat_interval: Duration,
    /// A server without a heartbeat for this long is degraded (still schedulable).
    /// [default: 3 × --heartbeat-interval]
    #[arg(long, value_parser = duration, value_name = "DURATION")]
    pub degraded_after: Option<Duration>,
    /// A server without a heartbeat for this long is stopped.
    #[arg(long, default_value = "10m", value_parser = duration, value_name = "DURATION")]
    pub stopped_after: Duration,
    /// How often heartbeat data held in memory is written to the database.
    #[arg(long, default_value = "1s", value_parser = duration, value_name = "DURATION")]
    pub persist_interval: Duration,
    /// The URL servers reach this console at, carried by install commands and scripts.
    /// [default: the URL it listens on]
    #[arg(long, value_name = "URL")]
    pub public_url: Option<String>,
    /// A URL agents talk to this control plane at: a load balancer in front of the consoles,
    /// or each console itself. Repeatable; install scripts and commands write them all into
    /// the agent config, and an agent moves on to the next when the one it uses cannot be
    /// reached or answers 5xx. Each is http:// or https:// like --public-url (https:// with
    /// --tls, its CA pinned for every one), without credentials or a query. Give every
    /// console of one control plane the same list. [default: --public-url]
    #[arg(long = "agent-url", value_name = "URL")]
    pub agent_urls: Vec<String>,
    /// The address of a load balancer in front of this console. Requests from it are taken to
    /// come from the last address in their X-Forwarded-For header (HAProxy's `option
    /// forwardfor`): the client address the password throttle, enrollment and a classic
    /// server's log service go by. Anyone else's X-Forwarded-For is ignored. Repeatable.
    #[arg(long = "trusted-proxy", value_name = "IP")]
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Connections from the --trusted-proxy addresses begin with a PROXY protocol header (v1
    /// or v2: HAProxy's `send-proxy-v2` in TCP mode, as in front of --tls consoles passing TLS
    /// through), and the client address is the one it names. Such a connection without a
    /// header is closed; anyone else's connections carry none.
    #[arg(long, requires = "trusted_proxies")]
    pub proxy_protocol: bool,
    /// Directory of agent binaries to serve to install scripts (tasknode-x86_64,
    /// tasknode-aarch64). Without it the console hands out no install commands.
    /// [default: DIST/agents with --dist]
    #[arg(long, value_name = "DIR")]
    pub agent_dir: Option<PathBuf>,
    /// A `tasknode-dist build` output directory to serve: the yum repositories under /repo/,
    /// the package key at /RPM-GPG-KEY-tasknode, release files under /releases/, and a .repo
    /// file per dist at /yum/DIST/tasknode.repo.
    #[arg(long, value_name = "DIR")]
    pub dist: Option<PathBuf>,
    /// Serve HTTPS with the console's own CA (created in the database on first start, its
    /// certificate written to DATA/tls/ca.pem). Install scripts and agents pin that CA and
    /// trust nothing else.
    #[arg(long)]
    pub tls: bool,
    /// With --tls: another name (DNS name or IP address) servers reach the console by, beside
    /// localhost, the loopback addresses, this host's name, the --listen address and the
    /// --public-url host. Repeatable.
    #[arg(long = "tls-name", value_name = "NAME", requires = "tls")]
    pub tls_names: Vec<String>,
    /// Most connections served at once; more wait, unread, in the listen queue until one
    /// closes. An agent holds up to three (its long poll, its heartbeats, a log push): the
    /// default serves several thousand servers. Lowered to fit the open-file limit.
    #[arg(long, default_value_t = crate::server::DEFAULT_MAX_CONNECTIONS, value_parser = clap::value_parser!(u32).range(1..), value_name = "N")]
    pub max_connections: u32,
    /// Longest a client may take to send a request body; after it the console answers 408
    /// and closes the connection.
    #[arg(long, default_value = "60s", value_parser = duration, value_name = "DURATION")]
    pub body_timeout: Duration,
    /// Largest task log the console keeps for one task pushed by a VPC server (bytes, or with
    /// a K, M, G or T suffix); pushes past it are refused with 413.
    #[arg(long, default_value = "1G", value_parser = byte_size, value_name = "SIZE")]
    pub max_task_log: u64,
    /// Most task log the console keeps for one VPC server, all its tasks together (logs go
    /// with their group); pushes past it are refused with 413.
    #[arg(long, default_value = "50G", value_parser = byte_size, value_name = "SIZE")]
    pub max_server_logs: u64,
    /// Make a new admin token before serving: written to DATA/admin.token (mode 0600), it
    /// replaces the old one in the database, which then stops working (other consoles of the
    /// database take the new one when they restart).
    #[arg(long)]
    pub new_admin_token: bool,
    /// Shift the console's clock by this many seconds (tests of clock skew).
    #[arg(long, hide = true, default_value_t = 0, allow_negative_numbers = true)]
    pub clock_offset: i64,
}

#[derive(Debug, Args)]
pub struct Output {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum ProjectCmd {
    /// Create a project.
    Create {
        name: String,
        #[command(flatten)]
        out: Output,
    },
    /// List projects.
    List {
        #[command(flatten)]
        out: Output,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCmd {
    /// Create a user and print its access key (user name and password) once.
    Create {
        name: String,
        /// Project the user belongs to.
        #[arg(long, default_value = "default")]
        project: String,
        #[command(flatten)]
        out: Output,
    },
    /// List users.
    List {
        #[arg(long)]
        project: Option<String>,
        #[command(flatten)]
        out: Output,
    },
    /// Delete a user, its install links and its web sessions. Servers it enrolled keep
    /// running: their credentials are their own.
    Delete {
        name: String,
        #[command(flatten)]
        out: Output,
    },
    /// Give a user a new password and print it once. The old one stops working at once, on
    /// every console, and the user's web sessions end.
    Password {
        name: String,
        #[command(flatten)]
        out: Output,
    },
}

#[derive(Debug, Subcommand)]
pub enum InstallLinkCmd {
    /// List the install links that still work (not used, not expired).
    List {
        #[arg(long)]
        project: Option<String>,
        #[command(flatten)]
        out: Output,
    },
    /// Revoke an install link by its id (from `list`): its script is refused from then on.
    Revoke {
        id: i64,
        #[command(flatten)]
        out: Output,
    },
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Entries older than this id (the `next_before` a page ends with).
    #[arg(long, value_name = "ID")]
    pub before: Option<i64>,
    /// Entries per page (1 to 500).
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
    #[command(flatten)]
    pub out: Output,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Network {
    /// Servers identified by hostname.
    Classic,
    /// Servers identified by DMI product UUID.
    Vpc,
}

#[derive(Debug, Subcommand)]
pub enum GroupCmd {
    /// Create a resource group.
    Create {
        name: String,
        /// How servers in this group are identified: classic (hostname) or vpc (DMI UUID).
        #[arg(long)]
        network: Network,
        #[arg(long, default_value = "default")]
        project: String,
        #[command(flatten)]
        out: Output,
    },
    /// List resource groups.
    List {
        #[arg(long)]
        project: Option<String>,
        #[command(flatten)]
        out: Output,
    },
    /// Rename a resource group. Its servers, tasks, rollout and install commands stay with it.
    Rename {
        /// The group to rename.
        #[arg(long)]
        group: String,
        /// Its new name, unique within the project.
        #[arg(long, value_name = "NEW")]
        to: String,
        #[arg(long, default_value = "default")]
        project: String,
        #[command(flatten)]
        out: Output,
    },
    /// Delete an empty resource group (no servers, no queued, assigned or running tasks) with
    /// its finished tasks and their logs, its install commands and its rollout.
    Delete {
        #[arg(long)]
        group: String,
        #[arg(long, default_value = "default")]
        project: String,
        #[command(flatten)]
        out: Output,
    },
}

#[derive(Debug, Subcommand)]
pub enum ServerCmd {
    /// Add a server to a resource group: by hostname (classic group) or DMI UUID (vpc group).
    Add {
        #[arg(long)]
        group: String,
        /// Hostname (classic group) or DMI product UUID (vpc group).
        #[arg(long, value_name = "HOSTNAME_OR_UUID")]
        name: String,
        /// Tasks the server runs at once. [default: computed from the CPU cores and memory the
        /// agent reports: min(2 × cores, memory GiB)]
        #[arg(long, value_name = "N")]
        max_concurrency: Option<u32>,
        #[arg(long, default_value = "default")]
        project: String,
        #[command(flatten)]
        out: Output,
    },
    /// Remove a server from its resource group. Refused while it holds tasks (or is the
    /// last server of a group with queued tasks) unless --drain or --force says what to do
    /// with them. Its agent is told at its next call, logs how to enroll again and stops
    /// asking for work.
    Remove {
        /// Hostname or UUID, as `server list` shows it.
        #[arg(long, value_name = "HOSTNAME_OR_UUID")]
        name: String,
        #[arg(long, default_value = "default")]
        project: String,
        /// Give it no new tasks and remove it when the ones it holds have finished (waits for
        /// that unless --no-wait).
        #[arg(long, conflicts_with = "force")]
        drain: bool,
        /// With --drain: return at once; the server is removed when its tasks finish.
        #[arg(long, requires = "drain")]
        no_wait: bool,
        /// Remove it now: its running tasks are cancelled, tasks it has not started are
        /// queued again for its group.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        out: Output,
    },
    /// Move a server to another resource group of its project (of the same network type). It
    /// keeps its enrollment and history; its new group's tasks go to it.
    Move {
        /// Hostname or UUID, as `server list` shows it.
        #[arg(long, value_name = "HOSTNAME_OR_UUID")]
        name: String,
        /// The group it moves to.
        #[arg(long, value_name = "GROUP")]
        to: String,
        #[arg(long, default_value = "default")]
        project: String,
        #[command(flatten)]
        out: Output,
    },
    /// List servers with their state and the reason for it.
    List {
        #[arg(long)]
        group: Option<String>,
        #[arg(long)]
        project: Option<String>,
        #[command(flatten)]
        out: Output,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }
}

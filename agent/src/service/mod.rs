//! `serverctl`: start, stop, restart and query the agent through whatever manages it on this
//! host. systemd when it is PID 1 and the tasknode unit is installed, the SysV script when
//! /etc/init.d/tasknode exists, and otherwise a pid file beside the config. The three share one
//! interface and are chosen in [`detect`].

mod pidfile;
mod systemd;
mod sysv;

use std::path::{Path, PathBuf};

pub use pidfile::{Pidfile, agent_user};
pub use systemd::Systemd;
pub use sysv::Sysv;

/// The unit name and init script name of the agent, and the user it runs as.
pub use tasknode_protocol::layout::{AGENT_USER, SERVICE};
use tasknode_protocol::layout::{DEB_UNIT, PACKAGE_UNIT, ROOT_SERVERCTL, SCRIPT_INIT, SCRIPT_UNIT};

/// What `status` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Running {
        pid: Option<u32>,
    },
    Stopped,
    /// A pid file names a process that is gone.
    Dead,
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{manager}: `{command}` failed ({}): {output}", code.map_or("killed by a signal".to_owned(), |c| format!("exit status {c}")))]
    Command {
        manager: &'static str,
        command: String,
        code: Option<i32>,
        output: String,
    },
    #[error("{manager}: running `{command}`: {source}")]
    Spawn {
        manager: &'static str,
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "refusing to run the agent as root and there is no user {user} to run it as: create it (useradd {user}) or run serverctl as that user"
    )]
    NoAgentUser { user: &'static str },
    #[error(
        "refusing to touch {path} as root: the agent user can change it; run serverctl as that user, or as root through the root-owned {root_serverctl}",
        root_serverctl = ROOT_SERVERCTL
    )]
    NotAsRoot { path: PathBuf },
    #[error(
        "refusing to run as root from {exe}: {path} can be changed by uid {uid}, so this binary is not root's to run; as root use {root_serverctl} (script installs) or the service manager",
        root_serverctl = ROOT_SERVERCTL
    )]
    NotRootsBinary {
        exe: PathBuf,
        path: PathBuf,
        uid: u32,
    },
    #[error("{path}: {source}")]
    PidFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the agent (pid {pid}) did not start: it exited at once; see {log}")]
    DidNotStart { pid: u32, log: PathBuf },
    #[error("the agent (pid {pid}) did not stop within {secs} s; it was killed")]
    DidNotStop { pid: u32, secs: u64 },
}

/// One way of managing the agent.
pub trait Manager {
    /// `systemd`, `sysv` or `pidfile`.
    fn name(&self) -> &'static str;
    fn start(&self) -> Result<(), ServiceError>;
    fn stop(&self) -> Result<(), ServiceError>;
    fn restart(&self) -> Result<(), ServiceError> {
        self.stop()?;
        self.start()
    }
    fn status(&self) -> Result<State, ServiceError>;
}

/// Where the host's service files are, under a root prefix (tests use a throwaway one).
#[derive(Debug, Clone)]
pub struct Host {
    pub root: PathBuf,
}

impl Host {
    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel.trim_start_matches('/'))
    }

    /// PID 1 is systemd when /run/systemd/system exists (sd_booted(3)).
    pub fn systemd_booted(&self) -> bool {
        self.path("/run/systemd/system").is_dir()
    }

    pub fn systemd_unit(&self) -> Option<PathBuf> {
        [SCRIPT_UNIT, PACKAGE_UNIT, DEB_UNIT]
            .iter()
            .map(|u| self.path(u))
            .find(|p| p.is_file())
    }

    pub fn init_script(&self) -> Option<PathBuf> {
        Some(self.path(SCRIPT_INIT)).filter(|p| p.is_file())
    }
}

/// Picks the manager of the agent with `config` on this host; without a service manager, the
/// agent's pid file is `pid_file` (from the config).
pub fn detect(host: &Host, config: &Path, pid_file: &Path, log_dir: &Path) -> Box<dyn Manager> {
    if host.systemd_booted() && host.systemd_unit().is_some() {
        return Box::new(Systemd);
    }
    if let Some(script) = host.init_script() {
        return Box::new(Sysv { script });
    }
    Box::new(Pidfile::new(&host.root, config, pid_file, log_dir))
}

/// Runs a command, turning a failure into an error carrying its output.
fn run(manager: &'static str, program: &str, args: &[&str]) -> Result<String, ServiceError> {
    let command = format!("{program} {}", args.join(" "));
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .map_err(|source| ServiceError::Spawn {
            manager,
            command: command.clone(),
            source,
        })?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(ServiceError::Command {
            manager,
            command,
            code: out.status.code(),
            output: text.trim().to_owned(),
        })
    }
}

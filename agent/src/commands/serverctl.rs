//! `tasknode serverctl start|stop|restart|status`: the agent through systemd, its SysV script,
//! or a pid file, whichever manages it on this host. As root it runs only from a binary that is
//! root's alone, and the pid-file manager runs as the agent user (its pid file and logs are
//! that user's): see docs/architecture.md, Privilege model.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};

use anyhow::Context;

use crate::cli::{ServerctlAction, ServerctlArgs};
use crate::config::Config;
use crate::env;
use crate::service::{self, Host, ServiceError, State};

pub fn run(args: ServerctlArgs) -> anyhow::Result<ExitCode> {
    let path = &args.config.config;
    let root = rustix::process::geteuid().is_root();
    if root {
        let exe = std::env::current_exe().context("finding this binary")?;
        if let Some((path, uid)) = crate::trust::changeable_by_others(&exe) {
            return Err(ServiceError::NotRootsBinary { exe, path, uid }.into());
        }
    }
    let config = Config::load(path)?;
    let host = Host { root: env::root() };
    let manager = service::detect(&host, path, &config.pid_file(path), &config.log_dir);
    if root && manager.name() == "pidfile" {
        let (uid, gid) = service::agent_user(&host.root)?;
        if uid != 0 {
            return as_agent_user(uid, gid, args.action, path);
        }
    }
    match args.action {
        ServerctlAction::Start => manager.start()?,
        ServerctlAction::Stop => {
            say_what_a_stop_waits_for(&config, &*manager);
            manager.stop()?
        }
        ServerctlAction::Restart => {
            say_what_a_stop_waits_for(&config, &*manager);
            manager.restart()?
        }
        ServerctlAction::Status => {
            let state = manager.status()?;
            let how = manager.name();
            return Ok(match state {
                State::Running { pid } => {
                    let pid = pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
                    println!("tasknode is running{pid}, managed by {how}");
                    ExitCode::SUCCESS
                }
                State::Dead => {
                    println!(
                        "tasknode is dead (managed by {how}); see agent.log in {}",
                        config.log_dir.display()
                    );
                    ExitCode::from(1)
                }
                State::Stopped => {
                    println!(
                        "tasknode is stopped (managed by {how}); start it with `serverctl start`"
                    );
                    ExitCode::from(3)
                }
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A stopping agent drains: it lets running tasks finish first. Say which, and for how long.
fn say_what_a_stop_waits_for(config: &Config, manager: &dyn service::Manager) {
    if !matches!(manager.status(), Ok(State::Running { .. })) {
        return;
    }
    let running = crate::tasks::recorded_running(&config.work_dir());
    if running.is_empty() {
        return;
    }
    let ids: Vec<String> = running.iter().map(i64::to_string).collect();
    println!(
        "the agent takes no new tasks and waits up to {} s for {} running task{} ({}) to finish; it kills what is still running then",
        config.drain_timeout().as_secs(),
        running.len(),
        if running.len() == 1 { "" } else { "s" },
        ids.join(", ")
    );
}

/// This same command, run as the agent user (uid, gid) in a session of its own (setsid, when
/// the host has it: no terminal to push input into); its exit status is this one's.
fn as_agent_user(
    uid: u32,
    gid: u32,
    action: ServerctlAction,
    config: &Path,
) -> anyhow::Result<ExitCode> {
    let exe = std::env::current_exe().context("finding this binary")?;
    let action = match action {
        ServerctlAction::Start => "start",
        ServerctlAction::Stop => "stop",
        ServerctlAction::Restart => "restart",
        ServerctlAction::Status => "status",
    };
    let command = |program: &Path, setsid: bool| {
        let mut c = Command::new(program);
        if setsid {
            c.arg(&exe);
        }
        c.args(["serverctl", action, "--config"])
            .arg(config)
            .uid(uid)
            .gid(gid)
            .current_dir("/")
            .stdin(Stdio::null());
        c
    };
    let status = match command(Path::new("setsid"), true).status() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => command(&exe, false).status(),
        other => other,
    }
    .with_context(|| format!("running {} serverctl {action} as uid {uid}", exe.display()))?;
    Ok(ExitCode::from(
        status
            .code()
            .and_then(|c| u8::try_from(c).ok())
            .unwrap_or(1),
    ))
}

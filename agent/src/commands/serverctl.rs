//! `tasknode serverctl start|stop|restart|status`: the agent through systemd, its SysV script,
//! or a pid file, whichever manages it on this host.

use crate::cli::{ServerctlAction, ServerctlArgs};
use crate::config::Config;
use crate::service::{self, Host, State};
use std::process::ExitCode;

use crate::env;

pub fn run(args: ServerctlArgs) -> anyhow::Result<ExitCode> {
    let path = &args.config.config;
    let config = Config::load(path)?;
    let host = Host { root: env::root() };
    let manager = service::detect(&host, path, &config.log_dir);
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

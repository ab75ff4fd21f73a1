//! Where the agent's files live on a host, for each way it is installed: one source of truth
//! for the paths the templates, the install script and the packages use.

use serde::Serialize;

/// The unprivileged user (and group) the agent runs as.
pub const AGENT_USER: &str = "admin";
/// The systemd unit and SysV service name.
pub const SERVICE: &str = "tasknode";
/// root's entry point to start, stop and query a script install (root-owned, outside the
/// agent user's reach; see docs/architecture.md, Privilege model).
pub const ROOT_SERVERCTL: &str = "/usr/sbin/tasknode-serverctl";

/// Paths of one installation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Layout {
    /// The agent binary.
    pub bin: String,
    /// The agent config (0600, owned by the agent user).
    pub config: String,
    /// heartbeat.log, agent.log, tasks/.
    pub log_dir: String,
    /// The tasks' working directories (owned by the agent user; made by the agent).
    pub work_dir: String,
    /// The pid file the SysV script and serverctl keep (directory owned by the agent user).
    pub pid_file: String,
    /// Where the SysV script is installed (root-owned).
    pub init_script: String,
    /// The user the agent runs as ([`AGENT_USER`]).
    pub user: String,
}

impl Layout {
    /// A script install (install.sh): everything under /home/admin/tasknode; self-updating.
    pub fn script() -> Layout {
        let home = "/home/admin/tasknode";
        Layout {
            bin: format!("{home}/bin/tasknode"),
            config: format!("{home}/conf/tasknode.conf"),
            log_dir: format!("{home}/logs"),
            work_dir: format!("{home}/work"),
            pid_file: format!("{home}/run/tasknode.pid"),
            init_script: "/etc/init.d/tasknode".to_owned(),
            user: AGENT_USER.to_owned(),
        }
    }

    /// A package install (RPM, .deb): FHS paths; updated by the package manager.
    pub fn package() -> Layout {
        Layout {
            bin: "/usr/bin/tasknode".to_owned(),
            config: "/etc/tasknode/tasknode.conf".to_owned(),
            log_dir: "/var/log/tasknode".to_owned(),
            work_dir: "/var/lib/tasknode/work".to_owned(),
            pid_file: "/var/run/tasknode/tasknode.pid".to_owned(),
            init_script: crate::rpm_package::INIT_SCRIPT.to_owned(),
            user: AGENT_USER.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_layout_is_the_one_operators_know() {
        let l = Layout::script();
        assert_eq!(l.bin, "/home/admin/tasknode/bin/tasknode");
        assert_eq!(l.config, "/home/admin/tasknode/conf/tasknode.conf");
        assert_eq!(l.log_dir, "/home/admin/tasknode/logs");
        // What the agent takes when its config names no work_dir: beside the logs.
        assert_eq!(l.work_dir, "/home/admin/tasknode/work");
    }

    #[test]
    fn package_layout_keeps_state_under_var_lib() {
        let l = Layout::package();
        assert_eq!(l.work_dir, "/var/lib/tasknode/work");
        assert!(l.work_dir.starts_with(crate::rpm_package::STATE_DIR));
    }
}

//! Where the agent lives on a host, for each way it is installed: the one home of the host
//! layout. The installer renders the templates, install.sh and the packages from it, the agent
//! takes its defaults and service names from it, and the privilege model (docs/architecture.md)
//! is stated over these paths.

use serde::Serialize;

/// The unprivileged user (and group) the agent and every task run as.
pub const AGENT_USER: &str = "admin";
/// The systemd unit and SysV service name.
pub const SERVICE: &str = "tasknode";
/// A script install's directory: the agent user's, self-updating.
pub const SCRIPT_HOME: &str = "/home/admin/tasknode";
/// A script install's config, the agent's default `--config`.
pub const SCRIPT_CONFIG: &str = "/home/admin/tasknode/conf/tasknode.conf";
/// root's entry point to start, stop and query a script install: root-owned, outside the
/// agent user's reach.
pub const ROOT_SERVERCTL: &str = "/usr/sbin/tasknode-serverctl";
/// Where install.sh puts the systemd unit.
pub const SCRIPT_UNIT: &str = "/etc/systemd/system/tasknode.service";
/// Where install.sh puts the SysV script.
pub const SCRIPT_INIT: &str = "/etc/init.d/tasknode";
/// install.sh's own root-owned records (whether it created the user).
pub const INSTALL_STATE_DIR: &str = "/var/lib/tasknode-install";
/// Where the el6 package puts the SysV script (/etc/init.d is a link to /etc/rc.d/init.d
/// there).
pub const PACKAGE_INIT: &str = "/etc/rc.d/init.d/tasknode";
/// Where the packages put the systemd unit.
pub const PACKAGE_UNIT: &str = "/usr/lib/systemd/system/tasknode.service";
/// A package install's state (the agent user's home when a package creates it).
pub const PACKAGE_STATE_DIR: &str = "/var/lib/tasknode";
/// A package install's config directory: root:admin 0750, so the config in it cannot be
/// swapped for a link by the agent user.
pub const PACKAGE_CONFIG_DIR: &str = "/etc/tasknode";

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
    /// A script install (install.sh): everything under [`SCRIPT_HOME`]; self-updating.
    pub fn script() -> Layout {
        let home = SCRIPT_HOME;
        Layout {
            bin: format!("{home}/bin/tasknode"),
            config: SCRIPT_CONFIG.to_owned(),
            log_dir: format!("{home}/logs"),
            work_dir: format!("{home}/work"),
            pid_file: format!("{home}/run/tasknode.pid"),
            init_script: SCRIPT_INIT.to_owned(),
            user: AGENT_USER.to_owned(),
        }
    }

    /// A package install (RPM, .deb): FHS paths; updated by the package manager.
    pub fn package() -> Layout {
        Layout {
            bin: "/usr/bin/tasknode".to_owned(),
            config: format!("{PACKAGE_CONFIG_DIR}/tasknode.conf"),
            log_dir: "/var/log/tasknode".to_owned(),
            work_dir: format!("{PACKAGE_STATE_DIR}/work"),
            pid_file: "/var/run/tasknode/tasknode.pid".to_owned(),
            init_script: PACKAGE_INIT.to_owned(),
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
        assert!(SCRIPT_HOME.starts_with(&format!("/home/{AGENT_USER}/")));
    }

    #[test]
    fn package_layout_keeps_state_under_var_lib() {
        let l = Layout::package();
        assert_eq!(l.work_dir, "/var/lib/tasknode/work");
        assert!(l.config.starts_with(PACKAGE_CONFIG_DIR));
    }
}

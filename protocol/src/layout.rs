//! Where the agent lives on a host, for each way it is installed: the one home of the host
//! layout. The installer renders the templates, install.sh and the packages from it, the agent
//! takes its defaults and service names from it, and the privilege model (docs/architecture.md)
//! is stated over these paths.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The unprivileged user (and group) the agent and every task run as.
pub const AGENT_USER: &str = "admin";
/// The systemd unit and SysV service name.
pub const SERVICE: &str = "tasknode";
/// The RPM and .deb package name.
pub const PACKAGE_NAME: &str = "tasknode";
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
/// Where the .deb puts the systemd unit.
pub const DEB_UNIT: &str = "/lib/systemd/system/tasknode.service";
/// A package install's state (the agent user's home when a package creates it).
pub const PACKAGE_STATE_DIR: &str = "/var/lib/tasknode";
/// A package install's config directory: root:admin 0750, so the config in it cannot be
/// swapped for a link by the agent user.
pub const PACKAGE_CONFIG_DIR: &str = "/etc/tasknode";

/// How the agent was installed, recorded in its config: script installs update themselves,
/// packages are updated by their package manager.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InstallMethod {
    /// install.sh, into [`Layout::script`]; updates itself.
    Script,
    /// An RPM, into [`Layout::package`]; updated by yum.
    Rpm,
    /// A .deb, into [`Layout::package`]; updated by apt.
    Deb,
    /// Placed by hand: no fixed layout; the config says where everything is.
    Manual,
}

impl InstallMethod {
    /// Every method, in the order the config and the command line list them.
    pub const ALL: [InstallMethod; 4] = [
        InstallMethod::Script,
        InstallMethod::Rpm,
        InstallMethod::Deb,
        InstallMethod::Manual,
    ];

    /// The name the config and `--install-method` use.
    pub fn as_str(self) -> &'static str {
        match self {
            InstallMethod::Script => "script",
            InstallMethod::Rpm => "rpm",
            InstallMethod::Deb => "deb",
            InstallMethod::Manual => "manual",
        }
    }

    /// Where this method puts the agent; `None` for a manual install, which has no fixed
    /// place.
    pub fn layout(self) -> Option<Layout> {
        match self {
            InstallMethod::Script => Some(Layout::script()),
            InstallMethod::Rpm | InstallMethod::Deb => Some(Layout::package()),
            InstallMethod::Manual => None,
        }
    }

    /// Whether a package manager, not the agent, replaces the agent's binary.
    pub fn is_package(self) -> bool {
        matches!(self, InstallMethod::Rpm | InstallMethod::Deb)
    }
}

impl fmt::Display for InstallMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An install method name that is none of script, rpm, deb, manual.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} is not an install method: use one of script, rpm, deb, manual", crate::validate::show(.0))]
pub struct UnknownInstallMethod(pub String);

impl FromStr for InstallMethod {
    type Err = UnknownInstallMethod;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        InstallMethod::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| UnknownInstallMethod(s.to_owned()))
    }
}

/// The command root runs on a server to `action` (start, stop, status) the agent, as the
/// console words it when it cannot know how the server was installed.
pub fn control_command(action: &str) -> String {
    format!("`{ROOT_SERVERCTL} {action}`, or `service {SERVICE} {action}` for a package")
}

/// The command that updates a package install of `method`; `None` for script and manual
/// installs, which update themselves.
pub fn package_update_command(method: InstallMethod) -> Option<String> {
    match method {
        InstallMethod::Rpm => Some(format!("yum update {PACKAGE_NAME}")),
        InstallMethod::Deb => Some(format!("apt-get install --only-upgrade {PACKAGE_NAME}")),
        InstallMethod::Script | InstallMethod::Manual => None,
    }
}

/// Where the yum instructions put the console's .repo file.
pub const YUM_REPO_FILE: &str = "/etc/yum.repos.d/tasknode.repo";
/// Where the yum instructions of a console with its own CA (`serve --tls`) put that CA, and
/// where its .repo's `sslcacert` points: yum trusts it for that repository alone. Root-owned,
/// outside every directory the agent user can write.
pub const YUM_CA_FILE: &str = "/etc/pki/tasknode/console-ca.pem";

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
    fn each_method_names_its_layout_and_parses_back() {
        assert_eq!(InstallMethod::Script.layout(), Some(Layout::script()));
        assert_eq!(InstallMethod::Rpm.layout(), Some(Layout::package()));
        assert_eq!(InstallMethod::Deb.layout(), Some(Layout::package()));
        assert_eq!(InstallMethod::Manual.layout(), None);
        for m in InstallMethod::ALL {
            assert_eq!(m.as_str().parse::<InstallMethod>(), Ok(m));
            assert_eq!(
                serde_json::to_string(&m).unwrap(),
                format!("\"{}\"", m.as_str())
            );
        }
        let err = "yum".parse::<InstallMethod>().unwrap_err().to_string();
        assert!(err.contains("script, rpm, deb, manual"), "{err}");
    }

    #[test]
    fn package_layout_keeps_state_under_var_lib() {
        let l = Layout::package();
        assert_eq!(l.work_dir, "/var/lib/tasknode/work");
        assert!(l.config.starts_with(PACKAGE_CONFIG_DIR));
    }
}

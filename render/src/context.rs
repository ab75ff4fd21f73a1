//! The data each template is rendered with. Kept apart from configuration types: a context is
//! exactly what its template may print, each field documented.

use serde::Serialize;

use crate::dist::Dist;
use crate::layout::{InstallMethod, Layout};

/// The systemd unit and the SysV init script: both start the same agent the same way, so they
/// share one context.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceContext {
    /// Absolute path of the agent binary.
    pub bin: String,
    /// Absolute path of the agent config.
    pub config: String,
    /// Directory of the agent's logs; the SysV script sends the agent's own output there.
    pub log_dir: String,
    /// Pid file the SysV script keeps.
    pub pid_file: String,
    /// Where the SysV script itself is installed: it runs itself again as the agent user.
    pub init_path: String,
    /// The user the agent runs as.
    pub user: String,
    /// The unit and service name.
    pub service: String,
    /// root's entry point (script installs), which bin/serverctl hands over to under root.
    pub root_serverctl: String,
    /// Where a systemd unit of the agent can be: install.sh's, the RPM's, the .deb's.
    pub unit_paths: [String; 3],
}

impl From<&Layout> for ServiceContext {
    fn from(l: &Layout) -> Self {
        ServiceContext {
            bin: l.bin.clone(),
            config: l.config.clone(),
            log_dir: l.log_dir.clone(),
            pid_file: l.pid_file.clone(),
            init_path: l.init_script.clone(),
            user: l.user.clone(),
            service: crate::layout::SERVICE.to_owned(),
            root_serverctl: crate::layout::ROOT_SERVERCTL.to_owned(),
            unit_paths: [
                crate::layout::SCRIPT_UNIT,
                crate::layout::PACKAGE_UNIT,
                crate::layout::DEB_UNIT,
            ]
            .map(str::to_owned),
        }
    }
}

/// The agent config as written before enrollment; `tasknode enroll` adds the node credentials.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigContext {
    /// URL of the console the agent enrolls with.
    pub console_url: String,
    /// `script`, `rpm`, `deb` or `manual`: whether the agent updates itself.
    pub install_method: String,
    /// Where the agent writes heartbeat.log, agent.log and task logs.
    pub log_dir: String,
    /// The pid file kept when no service manager runs the agent.
    pub pid_file: String,
    /// Where the tasks' working directories go.
    pub work_dir: String,
}

impl ConfigContext {
    /// The config of an agent installed by `method` into `layout`, enrolling with
    /// `console_url` (empty: not known yet).
    pub fn new(console_url: String, method: InstallMethod, layout: &Layout) -> ConfigContext {
        ConfigContext {
            console_url,
            install_method: method.as_str().to_owned(),
            log_dir: layout.log_dir.clone(),
            pid_file: layout.pid_file.clone(),
            work_dir: layout.work_dir.clone(),
        }
    }
}

/// The yum .repo file pointing at the console's repository for one dist.
#[derive(Debug, Clone, Serialize)]
pub struct RepoContext {
    /// The console URL the repository is served under.
    pub base_url: String,
    pub dist: Dist,
    /// Where the host keeps the CA yum trusts for this repository (`sslcacert`); empty: the
    /// system's CAs.
    pub ca_file: String,
}

/// install.sh: everything the script needs, as strings (it prints them into a shell variables
/// block, quoted). Empty strings stand for "not given".
#[derive(Debug, Clone, Serialize)]
pub struct InstallContext {
    /// Console URL the script checks and downloads from.
    pub console_url: String,
    /// The URLs the agent talks to, in order, separated by spaces (console URLs hold none):
    /// each becomes a `--console` of `tasknode enroll`, and so a line of the agent config.
    pub console_urls: String,
    /// The console's CA (PEM) the script and agent trust alone; empty for the system's CAs.
    pub console_ca: String,
    /// One-time enrollment token; empty when the script carries an access key instead.
    pub enrollment_token: String,
    /// Access key user name; empty with a token.
    pub user_name: String,
    /// Access key password; empty with a token.
    pub password: String,
    /// `true` to enroll by DMI UUID (VPC group), `false` by hostname (classic group).
    pub enable_uuid: String,
    /// The resource group the server joins.
    pub group: String,
    /// Version of the agent binaries below.
    pub agent_version: String,
    /// Download URL and SHA-256 of the x86_64 agent; empty when there is none.
    pub agent_x86_64_url: String,
    pub agent_x86_64_sha256: String,
    /// Download URL and SHA-256 of the aarch64 agent; empty when there is none.
    pub agent_aarch64_url: String,
    pub agent_aarch64_sha256: String,
    /// Why the console refused the link this script was asked for; the script then only
    /// uninstalls. Empty for a working link.
    pub refused: String,
    /// Where the script puts the agent and what it writes there: the same in every install.sh.
    #[serde(flatten)]
    pub layout: InstallLayoutContext,
}

/// install.sh's layout half: the files it installs and where they go. The same for every
/// script the console hands out, a refused link's included (its `--uninstall` removes what a
/// working one installed), so it is built in one place for both.
#[derive(Debug, Clone, Serialize)]
pub struct InstallLayoutContext {
    /// Where the agent's files go (the script layout).
    pub bin: String,
    pub config: String,
    pub log_dir: String,
    pub work_dir: String,
    pub pid_file: String,
    /// The rendered systemd unit, SysV init script and bin/serverctl, written as they are.
    pub unit_file: String,
    pub init_script: String,
    pub serverctl_script: String,
    /// root's entry point, rendered, and where it goes (root-owned, outside the agent's tree).
    pub root_serverctl_script: String,
    pub root_serverctl: String,
    /// The user the agent runs as.
    pub agent_user: String,
    /// Where the systemd unit and the SysV script go (root-owned).
    pub unit_path: String,
    pub init_path: String,
    /// install.sh's own records (root-owned).
    pub install_state_dir: String,
}

//! The agent config: where the console is and the node credentials it issued. It holds the
//! node secret, so it is written atomically with mode 0600 and the agent warns when it finds it
//! readable by others.

use std::fmt;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tasknode_protocol::NetworkType;

use crate::cli::InstallMethod;

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// URL of the console.
    pub console_url: String,
    /// The CA certificate (PEM) the console's HTTPS certificate must chain to; when set, it is
    /// the only CA trusted. Without it, the system's CAs are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console_ca: Option<PathBuf>,
    /// How the agent was installed: script installs update themselves, packages do not.
    #[serde(default = "manual")]
    pub install_method: InstallMethod,
    /// Where heartbeat.log, agent.log and task logs go.
    pub log_dir: PathBuf,
    /// How tasks run; every setting has a default.
    #[serde(default, skip_serializing_if = "TaskSettings::is_default")]
    pub tasks: TaskSettings,
    /// The log service of classic servers.
    #[serde(default, skip_serializing_if = "LogSettings::is_default")]
    pub logs: LogSettings,
    /// Self-update; every setting has a default.
    #[serde(default, skip_serializing_if = "UpdateSettings::is_default")]
    pub update: UpdateSettings,
    /// The node credentials, added by `tasknode enroll`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<Node>,
}

/// The `[tasks]` table of the config.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSettings {
    /// Where tasks run, one directory per task. [default: `work` beside the log directory]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub work_dir: Option<PathBuf>,
    /// The user tasks run as when the agent runs as root. [default: admin]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Most bytes of log kept per task; output beyond is discarded. [default: 64 MiB]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_max_bytes: Option<u64>,
    /// Task logs older than this many days are deleted. [default: 7]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_retention_days: Option<u32>,
    /// How long a stop or restart waits for running tasks before killing them; the service
    /// managers give a stop 90 s, so keep it below 75. [default: 60]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_timeout_secs: Option<u64>,
}

impl TaskSettings {
    fn is_default(&self) -> bool {
        self == &TaskSettings::default()
    }
}

/// The `[logs]` table: where a classic server serves its logs to the console.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// Address the log service listens on. [default: 0.0.0.0:8000]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// Addresses (IPs or CIDR blocks) that may read logs. [default: the addresses the console
    /// URL's host resolves to]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow: Option<Vec<String>>,
}

impl LogSettings {
    fn is_default(&self) -> bool {
        self == &LogSettings::default()
    }
}

/// The `[update]` table: how a script-installed agent updates itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateSettings {
    /// Update when the console asks (a release pin or rollout). [default: true]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto: Option<bool>,
    /// The release channel followed. [default: stable]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// Update-manifest public keys (hex) trusted beside the ones built into the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trusted_keys: Option<Vec<String>>,
    /// Answered heartbeats a new version must send before it is kept. [default: 3]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_heartbeats: Option<u32>,
    /// Seconds the new version has for them; past that the previous version is put back.
    /// [default: 120]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_timeout_secs: Option<u64>,
    /// Seconds an update waits for running tasks to end (taking no new ones) before it gives
    /// up for now and takes tasks again. [default: 3600]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_wait_secs: Option<u64>,
    /// Seconds before a version that failed is tried again. [default: 3600]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_secs: Option<u64>,
}

impl UpdateSettings {
    fn is_default(&self) -> bool {
        self == &UpdateSettings::default()
    }
}

impl Config {
    /// Where task working directories go.
    pub fn work_dir(&self) -> PathBuf {
        self.tasks.work_dir.clone().unwrap_or_else(|| {
            self.log_dir
                .parent()
                .map_or_else(|| self.log_dir.join("work"), |p| p.join("work"))
        })
    }

    pub fn task_log_dir(&self) -> PathBuf {
        self.log_dir.join("tasks")
    }

    pub fn task_user(&self) -> &str {
        self.tasks.user.as_deref().unwrap_or("admin")
    }

    pub fn task_log_max_bytes(&self) -> u64 {
        self.tasks.log_max_bytes.unwrap_or(64 << 20)
    }

    pub fn task_log_retention(&self) -> std::time::Duration {
        std::time::Duration::from_secs(
            u64::from(self.tasks.log_retention_days.unwrap_or(7)) * 86_400,
        )
    }

    pub fn drain_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.tasks.drain_timeout_secs.unwrap_or(60))
    }
}

fn manual() -> InstallMethod {
    InstallMethod::Manual
}

/// What the console issued at enrollment.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    /// Node id.
    pub id: String,
    /// Node secret (the console keeps only a hash of it).
    pub secret: String,
    /// Name the server has in the console: its hostname or DMI UUID.
    pub server_name: String,
    pub group: String,
    pub project: String,
    pub network: NetworkType,
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .field("server_name", &self.server_name)
            .field("group", &self.group)
            .field("project", &self.project)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("console_url", &self.console_url)
            .field("console_ca", &self.console_ca)
            .field("install_method", &self.install_method)
            .field("log_dir", &self.log_dir)
            .field("tasks", &self.tasks)
            .field("logs", &self.logs)
            .field("node", &self.node)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "{path} does not exist: this server is not enrolled; run `tasknode enroll` (or the install command from the console)"
    )]
    Missing { path: PathBuf },
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} has no node credentials: this server is not enrolled yet; run `tasknode enroll --config {path}`"
    )]
    NotEnrolled { path: PathBuf },
    #[error("{path} is not a valid agent config: {source}; enroll again to rewrite it")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Config {
    /// Loads a config that must hold node credentials, for commands that talk to the console.
    pub fn load_enrolled(path: &Path) -> Result<(Config, Node), ConfigError> {
        let config = Config::load(path)?;
        match config.node.clone() {
            Some(node) => Ok((config, node)),
            None => Err(ConfigError::NotEnrolled {
                path: path.to_owned(),
            }),
        }
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = fs::read_to_string(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                ConfigError::Missing {
                    path: path.to_owned(),
                }
            } else {
                ConfigError::Read {
                    path: path.to_owned(),
                    source,
                }
            }
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })
    }

    /// Writes the config atomically: a 0600 temporary file beside it, fsync, rename, fsync of
    /// the directory. The config's own directory is created 0700 when missing. A config that
    /// exists keeps its owner and group: root enrolling for a packaged agent must leave the
    /// file readable by the user the service runs as.
    pub fn save(&self, path: &Path) -> Result<(), ConfigError> {
        let err = |p: &Path| {
            let p = p.to_owned();
            move |source| ConfigError::Write { path: p, source }
        };
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).map_err(err(parent))?;
        }
        if !dir.is_dir() {
            fs::DirBuilder::new()
                .mode(0o700)
                .create(dir)
                .map_err(err(dir))?;
        }
        let text = toml::to_string_pretty(self).map_err(|e| ConfigError::Write {
            path: path.to_owned(),
            source: std::io::Error::other(e),
        })?;
        let tmp = dir.join(format!(
            ".{}.tmp",
            path.file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("tasknode.conf")
        ));
        let _ = fs::remove_file(&tmp);
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(err(&tmp))?;
        // The old file's own owner, never a link's target's.
        if let Some(old) = fs::symlink_metadata(path).ok().filter(|m| m.is_file()) {
            let new = f.metadata().map_err(err(&tmp))?;
            if (old.uid(), old.gid()) != (new.uid(), new.gid()) {
                std::os::unix::fs::fchown(&f, Some(old.uid()), Some(old.gid())).map_err(|e| {
                    let _ = fs::remove_file(&tmp);
                    ConfigError::Write {
                        path: path.to_owned(),
                        source: std::io::Error::new(
                            e.kind(),
                            format!(
                                "cannot give the new config the owner of the old one (uid {}, gid {}): {e}; run as root or as that user",
                                old.uid(),
                                old.gid()
                            ),
                        ),
                    }
                })?;
            }
        }
        let header = "# tasknode agent config, written by `tasknode enroll`. Holds the node secret: keep it 0600.\n";
        f.write_all(header.as_bytes())
            .and_then(|()| f.write_all(text.as_bytes()))
            .and_then(|()| f.sync_all())
            .map_err(err(&tmp))?;
        drop(f);
        fs::rename(&tmp, path).map_err(err(path))?;
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(err(dir))?;
        Ok(())
    }
}

/// Says so when the config can be read by anyone but its owner.
pub fn permission_warning(path: &Path) -> Option<String> {
    let mode = fs::metadata(path).ok()?.permissions().mode();
    (mode & 0o077 != 0).then(|| {
        format!(
            "{} is mode {:o} and holds the node secret; fix with: chmod 600 {}",
            path.display(),
            mode & 0o777,
            path.display()
        )
    })
}

/// The default log directory for a config path: `../logs` when the config sits in a `conf`
/// directory (the script layout, /home/admin/tasknode/conf), else `logs` beside the config.
pub fn default_log_dir(config: &Path) -> PathBuf {
    let dir = config.parent().unwrap_or(Path::new("."));
    match (dir.file_name(), dir.parent()) {
        (Some(name), Some(parent)) if name == "conf" => parent.join("logs"),
        _ => dir.join("logs"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(log_dir: PathBuf) -> Config {
        Config {
            console_url: "http://127.0.0.1:8080".into(),
            console_ca: None,
            install_method: InstallMethod::Script,
            log_dir,
            tasks: TaskSettings::default(),
            logs: LogSettings::default(),
            update: UpdateSettings::default(),
            node: Some(Node {
                id: "n1".into(),
                secret: "s3cr3t-value".into(),
                server_name: "db-1".into(),
                group: "etl".into(),
                project: "default".into(),
                network: NetworkType::Classic,
            }),
        }
    }

    #[test]
    fn saved_config_is_private_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("conf/tasknode.conf");
        let cfg = sample(dir.path().join("logs"));
        cfg.save(&path).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            fs::metadata(path.parent().unwrap())
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o700
        );
        assert!(permission_warning(&path).is_none());
        let (back, node) = Config::load_enrolled(&path).unwrap();
        assert_eq!(node.secret, "s3cr3t-value");
        assert!(!format!("{back:?}").contains("s3cr3t"));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(permission_warning(&path).unwrap().contains("chmod 600"));
        // Saving again replaces the file and restores the mode.
        cfg.save(&path).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn saving_as_root_keeps_the_owner_of_the_config() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("conf/tasknode.conf");
        let cfg = sample(dir.path().join("logs"));
        cfg.save(&path).unwrap();
        if fs::metadata(&path).unwrap().uid() != 0 {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must run the tests as root"
            );
            return;
        }
        // A packaged agent's config belongs to the service's user; root enrolls it.
        std::os::unix::fs::chown(&path, Some(65534), Some(65534)).unwrap();
        cfg.save(&path).unwrap();
        let meta = fs::metadata(&path).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (65534, 65534));
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(
            fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1,
            "no temporary file left"
        );
    }

    #[test]
    fn missing_and_malformed_configs_say_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasknode.conf");
        assert!(
            Config::load(&path)
                .unwrap_err()
                .to_string()
                .contains("tasknode enroll")
        );
        fs::write(&path, "console_url = 1").unwrap();
        assert!(matches!(
            Config::load(&path),
            Err(ConfigError::Parse { .. })
        ));
    }

    #[test]
    fn log_dir_follows_the_script_layout() {
        assert_eq!(
            default_log_dir(Path::new("/home/admin/tasknode/conf/tasknode.conf")),
            Path::new("/home/admin/tasknode/logs")
        );
        assert_eq!(
            default_log_dir(Path::new("/tmp/x/agent.conf")),
            Path::new("/tmp/x/logs")
        );
    }
}

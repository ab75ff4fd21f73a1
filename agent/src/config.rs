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
use tasknode_protocol::layout;

use crate::cli::InstallMethod;

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// URL of the console: the first one the agent talks to.
    pub console_url: String,
    /// Consoles the agent moves on to, round-robin after `console_url`, when the one in use
    /// cannot be reached or answers 5xx. A key of its own (not a list in `console_url`):
    /// older agents refuse a config with it by name at load, and a config without it is
    /// exactly what they wrote.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub more_console_urls: Vec<String>,
    /// The CA certificate (PEM) the console's HTTPS certificate must chain to; when set, it is
    /// the only CA trusted. Without it, the system's CAs are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console_ca: Option<PathBuf>,
    /// How the agent was installed: script installs update themselves, packages do not.
    #[serde(default = "manual")]
    pub install_method: InstallMethod,
    /// Where heartbeat.log, agent.log and task logs go.
    pub log_dir: PathBuf,
    /// The pid file kept when no service manager runs the agent (`serverctl` alone). [default,
    /// for configs written before it was recorded: the install method's layout's]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_file: Option<PathBuf>,
    /// How tasks run; every setting has a default.
    #[serde(default, skip_serializing_if = "TaskSettings::is_default")]
    pub tasks: TaskSettings,
    /// The log service of classic servers.
    #[serde(default, skip_serializing_if = "LogSettings::is_default")]
    pub logs: LogSettings,
    /// Self-update; every setting has a default.
    #[serde(default, skip_serializing_if = "UpdateSettings::is_default")]
    pub update: UpdateSettings,
    /// The metrics endpoint: off unless `listen` is set.
    #[serde(default, skip_serializing_if = "MetricsSettings::is_default")]
    pub metrics: MetricsSettings,
    /// The node credentials, added by `tasknode enroll`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<Node>,
}

/// The `[tasks]` table of the config.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSettings {
    /// Where tasks run, one directory per task. [default, for configs written before it was
    /// recorded: the install method's layout's; `work` beside the log directory for a manual
    /// install]
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

/// The `[metrics]` table: an endpoint Prometheus scrapes, off by default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSettings {
    /// Address `GET /metrics` is served on, e.g. 127.0.0.1:9465. [default: none, off]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// Addresses (IPs or CIDR blocks) that may scrape. [default: 127.0.0.1 and ::1]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow: Option<Vec<String>>,
}

impl MetricsSettings {
    fn is_default(&self) -> bool {
        self == &MetricsSettings::default()
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
    /// Every console, `console_url` first.
    pub fn console_urls(&self) -> Vec<String> {
        std::iter::once(&self.console_url)
            .chain(&self.more_console_urls)
            .cloned()
            .collect()
    }

    /// Records `urls` (at least one), the first in `console_url`.
    pub fn set_console_urls(&mut self, urls: &[String]) {
        if let Some((first, rest)) = urls.split_first() {
            self.console_url.clone_from(first);
            self.more_console_urls = rest.to_vec();
        }
    }

    /// Where task working directories go: `[tasks] work_dir` (enroll and the installers record
    /// it), else the install method's layout's, else for a manual install `work` beside the
    /// log directory.
    pub fn work_dir(&self) -> PathBuf {
        self.tasks
            .work_dir
            .clone()
            .unwrap_or_else(|| default_work_dir(self.install_method, &self.log_dir))
    }

    /// The pid file kept without a service manager: `pid_file` (enroll and the installers
    /// record it), else the install method's layout's, else for a manual install the one
    /// beside the config at `config_path`.
    pub fn pid_file(&self, config_path: &Path) -> PathBuf {
        self.pid_file
            .clone()
            .unwrap_or_else(|| default_pid_file(self.install_method, config_path))
    }

    pub fn task_log_dir(&self) -> PathBuf {
        self.log_dir.join("tasks")
    }

    pub fn task_user(&self) -> &str {
        self.tasks.user.as_deref().unwrap_or(layout::AGENT_USER)
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
            .field("more_console_urls", &self.more_console_urls)
            .field("console_ca", &self.console_ca)
            .field("install_method", &self.install_method)
            .field("log_dir", &self.log_dir)
            .field("pid_file", &self.pid_file)
            .field("tasks", &self.tasks)
            .field("logs", &self.logs)
            .field("metrics", &self.metrics)
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

/// Where a config that names no log directory has it: the install method's layout's, else (a
/// manual install) `../logs` when the config sits in a `conf` directory, else `logs` beside
/// the config.
pub fn default_log_dir(method: InstallMethod, config: &Path) -> PathBuf {
    match method.layout() {
        Some(l) => PathBuf::from(l.log_dir),
        None => beside_config(config, "logs", "logs"),
    }
}

/// Where a config that names no work directory has it: the install method's layout's, else
/// `work` beside the log directory.
pub fn default_work_dir(method: InstallMethod, log_dir: &Path) -> PathBuf {
    match method.layout() {
        Some(l) => PathBuf::from(l.work_dir),
        None => log_dir
            .parent()
            .map_or_else(|| log_dir.join("work"), |p| p.join("work")),
    }
}

/// Where a config that names no pid file has it: the install method's layout's, else
/// `../run/tasknode.pid` when the config sits in a `conf` directory, else `tasknode.pid`
/// beside the config.
pub fn default_pid_file(method: InstallMethod, config: &Path) -> PathBuf {
    match method.layout() {
        Some(l) => PathBuf::from(l.pid_file),
        None => beside_config(config, "run/tasknode.pid", "tasknode.pid"),
    }
}

/// A manual install's place for `in_home` (below the directory holding a `conf` directory)
/// or `flat` (beside a config elsewhere).
fn beside_config(config: &Path, in_home: &str, flat: &str) -> PathBuf {
    let dir = config.parent().unwrap_or(Path::new("."));
    match (dir.file_name(), dir.parent()) {
        (Some(name), Some(parent)) if name == "conf" => parent.join(in_home),
        _ => dir.join(flat),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(log_dir: PathBuf) -> Config {
        Config {
            console_url: "http://127.0.0.1:8080".into(),
            more_console_urls: Vec::new(),
            console_ca: None,
            install_method: InstallMethod::Script,
            log_dir,
            pid_file: None,
            tasks: TaskSettings::default(),
            logs: LogSettings::default(),
            update: UpdateSettings::default(),
            metrics: MetricsSettings::default(),
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
    fn manual_installs_keep_their_files_beside_the_config() {
        let m = InstallMethod::Manual;
        assert_eq!(
            default_log_dir(m, Path::new("/opt/tn/conf/tasknode.conf")),
            Path::new("/opt/tn/logs")
        );
        assert_eq!(
            default_log_dir(m, Path::new("/tmp/x/agent.conf")),
            Path::new("/tmp/x/logs")
        );
        assert_eq!(
            default_pid_file(m, Path::new("/opt/tn/conf/tasknode.conf")),
            Path::new("/opt/tn/run/tasknode.pid")
        );
        assert_eq!(
            default_pid_file(m, Path::new("/tmp/x/agent.conf")),
            Path::new("/tmp/x/tasknode.pid")
        );
        assert_eq!(
            default_work_dir(m, Path::new("/tmp/x/logs")),
            Path::new("/tmp/x/work")
        );
    }

    /// Configs written before the pid file and the work directory were recorded: installs of
    /// every method keep the paths they had.
    #[test]
    fn an_old_config_takes_the_paths_of_its_install_method() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasknode.conf");
        let old = |method: &str, log_dir: &str| {
            format!(
                "console_url = \"http://127.0.0.1:8080\"\ninstall_method = \"{method}\"\nlog_dir = \"{log_dir}\"\n"
            )
        };
        fs::write(&path, old("script", "/home/admin/tasknode/logs")).unwrap();
        let c = Config::load(&path).unwrap();
        assert_eq!(
            c.pid_file(&path),
            Path::new("/home/admin/tasknode/run/tasknode.pid")
        );
        assert_eq!(c.work_dir(), Path::new("/home/admin/tasknode/work"));
        for method in ["rpm", "deb"] {
            fs::write(&path, old(method, "/var/log/tasknode")).unwrap();
            let c = Config::load(&path).unwrap();
            assert_eq!(
                c.pid_file(&path),
                Path::new("/var/run/tasknode/tasknode.pid")
            );
            assert_eq!(c.work_dir(), Path::new("/var/lib/tasknode/work"));
        }
        // A config without install_method was placed by hand: beside the config.
        fs::write(
            &path,
            "console_url = \"http://127.0.0.1:8080\"\nlog_dir = \"/srv/tn/logs\"\n",
        )
        .unwrap();
        let c = Config::load(&path).unwrap();
        assert_eq!(c.install_method, InstallMethod::Manual);
        assert_eq!(c.pid_file(&path), dir.path().join("tasknode.pid"));
        assert_eq!(c.work_dir(), Path::new("/srv/tn/work"));
        // What the config records wins over any layout.
        let mut c = sample(dir.path().join("logs"));
        c.pid_file = Some(dir.path().join("p.pid"));
        c.tasks.work_dir = Some(dir.path().join("w"));
        c.save(&path).unwrap();
        let back = Config::load(&path).unwrap();
        assert_eq!(back.pid_file(&path), dir.path().join("p.pid"));
        assert_eq!(back.work_dir(), dir.path().join("w"));
    }

    /// A config with one console is what agents before `more_console_urls` wrote, byte for
    /// byte in that key; one with several keeps the first where they look for it.
    #[test]
    fn several_consoles_keep_the_first_in_the_old_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasknode.conf");
        let mut c = sample(dir.path().join("logs"));
        c.save(&path).unwrap();
        assert!(
            !fs::read_to_string(&path)
                .unwrap()
                .contains("more_console_urls")
        );
        c.set_console_urls(&["http://a:1".to_owned(), "http://b:2".to_owned()]);
        c.save(&path).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains("console_url = \"http://a:1\""), "{text}");
        assert!(
            text.contains("more_console_urls = [\"http://b:2\"]"),
            "{text}"
        );
        let back = Config::load(&path).unwrap();
        assert_eq!(back.console_urls(), ["http://a:1", "http://b:2"]);
    }
}

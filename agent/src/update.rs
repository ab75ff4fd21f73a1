//! Self-update of script installs, gated on health and safe against a kill at any moment.
//!
//! When a heartbeat answer names a version other than the running one, the agent:
//!
//! 1. fetches that version's signed manifest from the console and checks the signature (against
//!    the keys built in and those in `[update] trusted_keys`), the channel, its own target, and
//!    that the version moves forward unless the manifest is an unexpired signed rollback;
//! 2. downloads the binary beside itself as `.tasknode.new`, checking size and sha256 as it
//!    goes and the version the binary carries, then fsyncs it;
//! 3. takes no new tasks and waits for the running ones to end (an update never kills a task);
//! 4. runs the new binary on trial (`run --trial N`): it must get N heartbeats answered within
//!    the health timeout, as the server's own agent, while this process sends none;
//! 5. keeps the running binary as `tasknode.prev`, renames the new one over `tasknode`, fsyncs
//!    the directory, and execs it (same pid, so systemd, the SysV script and the pid file
//!    all still point at the agent);
//! 6. the new process is on probation until N heartbeats are answered; then it reports
//!    `updated`. If the health timeout passes first, it puts `tasknode.prev` back, records why,
//!    and execs it; the previous version reports the failure.
//!
//! Probation outlives the process: the record counts the new version's starts and holds when
//! probation began and how long it may last. At every start, before anything else runs,
//! [`crate::probation::check_at_start`] puts `tasknode.prev` back when the new version has
//! already started three times without finishing probation (it keeps dying, and
//! systemd's `Restart=always` would start it forever) or when its deadline has passed across
//! restarts; the previous version then runs and reports the failure.
//!
//! `.tasknode.update` beside the binary records an update in progress or the last failure.
//! At every start [`recover`] reads it: until the rename of step 5, `tasknode` is the old
//! binary untouched; after it, it is the new one, which passed its trial, and probation goes
//! on. A failed version is not tried again for `[update] retry_after_secs`.
//!
//! Agents installed from an RPM or a .deb never replace their files: they report that their
//! package manager updates them.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tasknode_protocol::manifest::{self, ManifestError};
use tasknode_protocol::updates::{UpdateOutcome, UpdateReport};

use crate::cli::InstallMethod;
use crate::client::{ConsoleClient, now_ms};
use crate::config::{Config, Node};
use crate::tasks::Runner;

/// The Rust target this agent was built for: the artifact it takes from a manifest.
pub const TARGET: &str = env!("TASKNODE_TARGET");

/// Update-manifest keys built into the binary (`tasknode-dist build` sets them).
const BUILT_IN_KEYS: &str = env!("TASKNODE_BUILT_IN_KEYS");

/// A whole download may take this long.
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(600);

/// How a running agent updates, from its config.
#[derive(Debug, Clone)]
pub struct Settings {
    pub auto: bool,
    pub channel: String,
    pub trusted: Vec<VerifyingKey>,
    pub health_heartbeats: u32,
    pub health_timeout: Duration,
    pub task_wait: Duration,
    pub retry_after: Duration,
    pub method: InstallMethod,
}

impl Settings {
    pub fn from_config(config: &Config) -> anyhow::Result<Settings> {
        let u = &config.update;
        Ok(Settings {
            auto: u.auto.unwrap_or(true),
            channel: u
                .channel
                .clone()
                .unwrap_or_else(|| manifest::DEFAULT_CHANNEL.to_owned()),
            trusted: trusted_keys(u.trusted_keys.as_deref().unwrap_or_default())?,
            health_heartbeats: u.health_heartbeats.unwrap_or(3).max(1),
            health_timeout: Duration::from_secs(u.health_timeout_secs.unwrap_or(120).max(1)),
            task_wait: Duration::from_secs(u.task_wait_secs.unwrap_or(3600)),
            retry_after: Duration::from_secs(u.retry_after_secs.unwrap_or(3600)),
            method: config.install_method,
        })
    }
}

/// The keys built in, then the ones the config adds.
pub fn trusted_keys(extra: &[String]) -> anyhow::Result<Vec<VerifyingKey>> {
    let mut keys = Vec::new();
    for hex in BUILT_IN_KEYS.split(',').filter(|k| !k.is_empty()) {
        keys.extend(manifest::decode_key(hex));
    }
    for hex in extra {
        let key = manifest::decode_key(hex).with_context(|| {
            format!(
                "[update] trusted_keys: {hex:?} is not an ed25519 public key in hex (64 digits, as `tasknode-dist keygen` prints it)"
            )
        })?;
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    Ok(keys)
}

/// The files beside the agent binary.
#[derive(Debug, Clone)]
pub struct Paths {
    /// The binary itself (`bin/tasknode`).
    pub exe: PathBuf,
    pub dir: PathBuf,
    /// A download in progress or on trial.
    pub new: PathBuf,
    /// The binary that ran before the last update.
    pub prev: PathBuf,
    /// `.tasknode.update`: an update in progress, or the last failure.
    pub state: PathBuf,
}

impl Paths {
    pub fn beside(exe: &Path) -> Paths {
        let dir = exe.parent().unwrap_or(Path::new(".")).to_owned();
        let name = exe.file_name().map_or_else(
            || "tasknode".to_owned(),
            |n| n.to_string_lossy().into_owned(),
        );
        Paths {
            new: dir.join(format!(".{name}.new")),
            prev: dir.join(format!("{name}.prev")),
            state: dir.join(format!(".{name}.update")),
            exe: exe.to_owned(),
            dir,
        }
    }

    /// The paths of the running binary.
    pub fn current() -> io::Result<Paths> {
        let exe = std::env::current_exe()?;
        // Once the file was renamed over, the kernel names the old one "... (deleted)".
        let text = exe.to_string_lossy();
        let exe = match text.strip_suffix(" (deleted)") {
            Some(t) => PathBuf::from(t),
            None => exe,
        };
        Ok(Paths::beside(&exe))
    }

    pub fn read_state(&self) -> Option<State> {
        let text = fs::read(&self.state).ok()?;
        match serde_json::from_slice(&text) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(path = %self.state.display(), error = %e, "ignoring an unreadable update record");
                None
            }
        }
    }

    /// Writes the record atomically and durably.
    pub fn write_state(&self, state: &State) -> io::Result<()> {
        let tmp = self.dir.join(".tasknode.update.tmp");
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&serde_json::to_vec(state).map_err(io::Error::other)?)?;
        f.sync_all()?;
        fs::rename(&tmp, &self.state)?;
        sync_dir(&self.dir)
    }

    pub fn clear_state(&self) -> io::Result<()> {
        match fs::remove_file(&self.state) {
            Ok(()) => sync_dir(&self.dir),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Putting the new binary in place.
    Swapping,
    /// The new binary is in place, on probation.
    Swapped,
    /// The update to `to` failed; the previous version runs.
    Failed,
}

/// The record in `.tasknode.update`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub phase: Phase,
    pub from: String,
    pub to: String,
    #[serde(default)]
    pub sha256: String,
    pub at_ms: i64,
    #[serde(default)]
    pub reason: String,
    /// Whether the console was told of the failure.
    #[serde(default)]
    pub reported: bool,
    /// How long probation may last, in seconds (the health timeout when it was swapped in).
    #[serde(default)]
    pub probation_secs: u64,
    /// When the new version first started on probation (ms since the epoch; 0: not yet).
    #[serde(default)]
    pub first_start_ms: i64,
    /// How many times the new version has started on probation.
    #[serde(default)]
    pub starts: u32,
}

impl State {
    /// When probation ends in failure (ms since the epoch), once the new version has started.
    pub fn probation_deadline_ms(&self) -> Option<i64> {
        (self.first_start_ms > 0 && self.probation_secs > 0).then(|| {
            self.first_start_ms.saturating_add(
                i64::try_from(self.probation_secs.saturating_mul(1000)).unwrap_or(i64::MAX),
            )
        })
    }
}

/// What a start finds beside the binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovery {
    Clean,
    /// This process is the new version of an unfinished update.
    Probation(State),
    /// The last update failed.
    Failed(State),
}

/// Clears what an interrupted update left and says where the last one stands.
pub fn recover(paths: &Paths, running: &str) -> Recovery {
    for leftover in [
        paths.new.clone(),
        paths.dir.join(".tasknode.update.tmp"),
        paths.dir.join(".tasknode.prev.tmp"),
        paths.dir.join(".tasknode.rollback.tmp"),
    ] {
        if fs::remove_file(&leftover).is_ok() {
            tracing::info!(path = %leftover.display(), "removed what an interrupted update left");
        }
    }
    let Some(mut state) = paths.read_state() else {
        return Recovery::Clean;
    };
    match state.phase {
        Phase::Failed => Recovery::Failed(state),
        Phase::Swapping | Phase::Swapped if state.to == running => {
            state.phase = Phase::Swapped;
            if let Err(e) = paths.write_state(&state) {
                tracing::warn!(error = %e, "cannot record the update's probation");
            }
            Recovery::Probation(state)
        }
        Phase::Swapping | Phase::Swapped => {
            // Stopped before the new binary was renamed into place: nothing changed.
            tracing::info!(to = %state.to, "an update was interrupted before it swapped binaries; the running version stays");
            let _ = paths.clear_state();
            Recovery::Clean
        }
    }
}

/// A verified binary at `Paths::new`, ready for its trial.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub to: String,
    pub sha256: String,
}

/// Fetches and checks the manifest of `version`, downloads its binary for this target to
/// `paths.new` and checks it. Nothing is left behind on failure.
pub async fn prepare(
    client: &ConsoleClient,
    node: &Node,
    settings: &Settings,
    paths: &Paths,
    version: &str,
) -> anyhow::Result<Prepared> {
    let file = client
        .manifest(&node.id, &node.secret, version)
        .await
        .with_context(|| format!("fetching the manifest of {version}"))?;
    let manifest = manifest::verify(&file, &settings.trusted)?;
    if manifest.version != version {
        return Err(ManifestError::WrongVersion {
            expected: version.to_owned(),
            found: manifest.version,
        }
        .into());
    }
    let artifact = manifest
        .offer_for(crate::version(), TARGET, &settings.channel, now_ms())?
        .clone();
    tracing::info!(
        version,
        size = artifact.size,
        url = %artifact.url,
        rollback = manifest.rollback,
        "downloading the new version"
    );
    download(client, &artifact, &paths.new).await?;
    let carried = fs::read(&paths.new)
        .ok()
        .and_then(|b| tasknode_protocol::agent_version_in(&b).map(str::to_owned));
    if carried.as_deref() != Some(version) {
        let _ = fs::remove_file(&paths.new);
        bail!(
            "the downloaded binary carries version {}, not {version}: the release was built wrong",
            carried.as_deref().unwrap_or("none")
        );
    }
    Ok(Prepared {
        to: version.to_owned(),
        sha256: artifact.sha256,
    })
}

async fn download(
    client: &ConsoleClient,
    artifact: &manifest::Artifact,
    dest: &Path,
) -> anyhow::Result<()> {
    let _ = fs::remove_file(dest);
    let dir = dest.parent().unwrap_or(Path::new("."));
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o755)
        .open(dest)
        .with_context(|| {
            format!(
                "creating {}: the agent's user must be able to write {}",
                dest.display(),
                dir.display()
            )
        })?;
    let result = async {
        let mut res = client
            .download(&artifact.url, DOWNLOAD_TIMEOUT)
            .await
            .with_context(|| format!("downloading {}", artifact.url))?;
        let mut hasher = Sha256::new();
        let mut got = 0u64;
        while let Some(chunk) = res.chunk().await.with_context(|| {
            format!(
                "downloading {}: the transfer broke after {got} of {} bytes",
                artifact.url, artifact.size
            )
        })? {
            got += chunk.len() as u64;
            if got > artifact.size {
                bail!(
                    "the download is larger than the {} bytes the manifest says",
                    artifact.size
                );
            }
            hasher.update(&chunk);
            file.write_all(&chunk).with_context(|| {
                format!(
                    "writing {}: make room on the file system of {}",
                    dest.display(),
                    dir.display()
                )
            })?;
        }
        if got < artifact.size {
            bail!(
                "the download ended after {got} of the {} bytes the manifest says",
                artifact.size
            );
        }
        let sha = hex::encode(hasher.finalize());
        if sha != artifact.sha256 {
            bail!(
                "the download's sha256 is {sha}, the signed manifest says {}: the file was changed or damaged",
                artifact.sha256
            );
        }
        file.sync_all()
            .with_context(|| format!("writing {}", dest.display()))?;
        sync_dir(dir).with_context(|| format!("syncing {}", dir.display()))
    }
    .await;
    if result.is_err() {
        let _ = fs::remove_file(dest);
    }
    result
}

/// Runs the new binary on trial as this server's agent: it must get `n` heartbeats answered
/// within the health timeout. This process sends none meanwhile.
pub async fn trial(paths: &Paths, config: &Path, settings: &Settings) -> anyhow::Result<()> {
    let n = settings.health_heartbeats;
    tracing::info!(
        heartbeats = n,
        timeout_secs = settings.health_timeout.as_secs(),
        "trying the new version"
    );
    let mut cmd = tokio::process::Command::new(&paths.new);
    cmd.arg("run")
        .arg("--trial")
        .arg(n.to_string())
        .arg("--config")
        .arg(config)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    // A child of the agent's own: task containment leaves it alone.
    let child = crate::tasks::contain::spawn_own(false, || cmd.spawn(), tokio::process::Child::id)
        .with_context(|| format!("starting {}", paths.new.display()))?;
    let pid = child.id();
    let waited = tokio::time::timeout(settings.health_timeout, child.wait_with_output()).await;
    if let Some(pid) = pid {
        crate::tasks::contain::own_ended(pid);
    }
    match waited {
        Err(_) => bail!(
            "the new version did not get {n} heartbeats answered within {} s",
            settings.health_timeout.as_secs()
        ),
        Ok(Err(e)) => bail!("waiting for the new version: {e}"),
        Ok(Ok(out)) if out.status.success() => Ok(()),
        Ok(Ok(out)) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let last = stderr
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("no message");
            bail!(
                "the new version failed its trial ({}): {}",
                out.status,
                last.chars().take(300).collect::<String>()
            )
        }
    }
}

/// Keeps the running binary as `prev` and renames the new one over it, durably.
/// Probation, counted from the new version's first start, lasts `probation`.
pub fn swap(paths: &Paths, prepared: &Prepared, probation: Duration) -> anyhow::Result<()> {
    let mut state = State {
        phase: Phase::Swapping,
        from: crate::version().to_owned(),
        to: prepared.to.clone(),
        sha256: prepared.sha256.clone(),
        at_ms: now_ms(),
        reason: String::new(),
        reported: false,
        probation_secs: probation.as_secs().max(1),
        first_start_ms: 0,
        starts: 0,
    };
    paths
        .write_state(&state)
        .with_context(|| format!("writing {}", paths.state.display()))?;
    let tmp = paths.dir.join(".tasknode.prev.tmp");
    let _ = fs::remove_file(&tmp);
    fs::hard_link(&paths.exe, &tmp)
        .or_else(|_| fs::copy(&paths.exe, &tmp).map(|_| ()))
        .and_then(|()| fs::rename(&tmp, &paths.prev))
        .with_context(|| format!("keeping the running binary as {}", paths.prev.display()))?;
    fs::rename(&paths.new, &paths.exe).with_context(|| {
        format!(
            "renaming {} to {}",
            paths.new.display(),
            paths.exe.display()
        )
    })?;
    sync_dir(&paths.dir).with_context(|| format!("syncing {}", paths.dir.display()))?;
    state.phase = Phase::Swapped;
    paths
        .write_state(&state)
        .with_context(|| format!("writing {}", paths.state.display()))
}

/// Puts `prev` back as the binary and records why.
pub fn roll_back(paths: &Paths, state: &State, reason: &str) -> anyhow::Result<()> {
    let tmp = paths.dir.join(".tasknode.rollback.tmp");
    let _ = fs::remove_file(&tmp);
    fs::hard_link(&paths.prev, &tmp)
        .or_else(|_| fs::copy(&paths.prev, &tmp).map(|_| ()))
        .and_then(|()| fs::rename(&tmp, &paths.exe))
        .with_context(|| format!("putting {} back", paths.prev.display()))?;
    sync_dir(&paths.dir)?;
    record_failure(paths, &state.from, &state.to, reason)
}

/// Records that the update to `to` failed, so it is not tried again at once.
pub fn record_failure(paths: &Paths, from: &str, to: &str, reason: &str) -> anyhow::Result<()> {
    paths
        .write_state(&State {
            phase: Phase::Failed,
            from: from.to_owned(),
            to: to.to_owned(),
            sha256: String::new(),
            at_ms: now_ms(),
            reason: reason.to_owned(),
            reported: false,
            probation_secs: 0,
            first_start_ms: 0,
            starts: 0,
        })
        .with_context(|| format!("writing {}", paths.state.display()))
}

/// Takes the lock beside `config` that a running agent holds; `None` when another process
/// holds it. The lock ends with the process (and with an exec, whose new image takes it again).
pub fn lock(config: &Path) -> anyhow::Result<Option<fs::File>> {
    let mut name = config.as_os_str().to_owned();
    name.push(".lock");
    let path = PathBuf::from(name);
    let file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(Some(file)),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
        Err(e) => Err(io::Error::from(e)).with_context(|| format!("locking {}", path.display())),
    }
}

/// Replaces this process with the binary at `paths.exe`, with the same arguments. Returns
/// only on failure.
pub fn exec(paths: &Paths) -> io::Error {
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    std::process::Command::new(&paths.exe).args(args).exec()
}

/// Tells the console, retrying with backoff for up to 10 minutes (as long as the console may
/// be in trouble); `false` when it could not be told.
pub async fn report(
    client: &ConsoleClient,
    node: &Node,
    version: &str,
    outcome: UpdateOutcome,
    reason: &str,
) -> bool {
    let report = UpdateReport {
        version: version.to_owned(),
        outcome,
        reason: reason.chars().take(2000).collect(),
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    let mut backoff = crate::backoff::Backoff::default();
    loop {
        match client.report_update(&node.id, &node.secret, &report).await {
            Ok(()) => return true,
            Err(e) => {
                let delay = backoff.next_delay();
                if tokio::time::Instant::now() + delay > deadline {
                    tracing::warn!(error = %e, outcome = outcome.as_str(), "could not report the update to the console");
                    return false;
                }
                tracing::debug!(error = %e, outcome = outcome.as_str(), "cannot report the update yet");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// The update side of `tasknode run`: decides when to update and carries probation.
pub struct Updater {
    pub client: Arc<ConsoleClient>,
    pub node: Node,
    pub settings: Settings,
    /// `None` when the binary's own path is unknown: no self-update then.
    pub paths: Option<Paths>,
    pub config: PathBuf,
    probation: Option<Probation>,
    /// The last failed version and when it failed.
    failed: Option<(String, i64)>,
    /// The version last reported as not updatable here (managed, or updates off).
    declined: Option<String>,
}

#[derive(Debug)]
struct Probation {
    state: State,
    deadline: tokio::time::Instant,
    answered: u32,
}

impl Updater {
    pub fn new(
        client: Arc<ConsoleClient>,
        node: Node,
        settings: Settings,
        config: PathBuf,
    ) -> Updater {
        let paths = match Paths::current() {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::warn!(error = %e, "cannot tell where this binary is; it will not update itself");
                None
            }
        };
        Updater {
            client,
            node,
            settings,
            paths,
            config,
            probation: None,
            failed: None,
            declined: None,
        }
    }

    /// Reads what an earlier run left (see [`recover`]) and reports a failure not yet told.
    pub fn start(&mut self) {
        let Some(paths) = &self.paths else { return };
        match recover(paths, crate::version()) {
            Recovery::Clean => {}
            Recovery::Probation(state) => {
                tracing::info!(
                    from = %state.from,
                    to = %state.to,
                    heartbeats = self.settings.health_heartbeats,
                    timeout_secs = self.settings.health_timeout.as_secs(),
                    "running the new version on probation"
                );
                // The deadline holds across restarts: what is left of it, never more than a
                // whole health timeout.
                let left = state.probation_deadline_ms().map_or(
                    self.settings.health_timeout,
                    |deadline| {
                        Duration::from_millis(u64::try_from(deadline - now_ms()).unwrap_or(0))
                            .min(self.settings.health_timeout)
                    },
                );
                self.probation = Some(Probation {
                    state,
                    deadline: tokio::time::Instant::now() + left,
                    answered: 0,
                });
            }
            Recovery::Failed(state) => {
                self.failed = Some((state.to.clone(), state.at_ms));
                if !state.reported {
                    tracing::error!(
                        version = %state.to,
                        reason = %state.reason,
                        "the update failed; this is the version that ran before"
                    );
                    self.tell(&state.to, UpdateOutcome::Failed, &state.reason);
                }
            }
        }
    }

    /// When probation ends in failure, if it is on.
    pub fn probation_deadline(&self) -> Option<tokio::time::Instant> {
        self.probation.as_ref().map(|p| p.deadline)
    }

    /// Takes one heartbeat's result; returns the version to prepare, if the agent should
    /// update now.
    pub fn on_heartbeat(&mut self, answered: bool, desired: Option<&str>) -> Option<String> {
        if answered && let Some(p) = &mut self.probation {
            p.answered += 1;
            if p.answered >= self.settings.health_heartbeats {
                let state = p.state.clone();
                self.probation = None;
                tracing::info!(from = %state.from, to = %state.to, "the new version is healthy; update done");
                if let Some(paths) = &self.paths
                    && let Err(e) = paths.clear_state()
                {
                    tracing::warn!(error = %e, "cannot clear the update record");
                }
                self.tell(&state.to, UpdateOutcome::Updated, "");
            }
        }
        let desired = desired?;
        if desired == crate::version() || self.probation.is_some() {
            return None;
        }
        let decline = match self.settings.method {
            m if m.is_package() => Some((UpdateOutcome::Managed, m.as_str().to_owned())),
            _ if !self.settings.auto => Some((
                UpdateOutcome::Failed,
                "automatic updates are off ([update] auto = false in the agent config); run `tasknode update` on the server".to_owned(),
            )),
            _ if self.paths.is_none() => Some((
                UpdateOutcome::Failed,
                "the agent cannot tell where its binary is".to_owned(),
            )),
            _ => None,
        };
        if let Some((outcome, reason)) = decline {
            if self.declined.as_deref() != Some(desired) {
                self.declined = Some(desired.to_owned());
                tracing::info!(version = desired, reason = %reason, "the console asks for another version; not updating here");
                self.tell(desired, outcome, &reason);
            }
            return None;
        }
        if let Some((version, at_ms)) = &self.failed
            && version == desired
            && now_ms() < at_ms + self.settings.retry_after.as_millis() as i64
        {
            return None;
        }
        Some(desired.to_owned())
    }

    /// Remembers a failed or postponed attempt at `version` and tells the console of a
    /// failure.
    pub fn failed(&mut self, version: &str, reason: &str, tell: bool) {
        self.failed = Some((version.to_owned(), now_ms()));
        let Some(paths) = &self.paths else { return };
        let _ = fs::remove_file(&paths.new);
        if !tell {
            return;
        }
        tracing::error!(
            version,
            reason,
            "the update failed; this version keeps running"
        );
        if let Err(e) = record_failure(paths, crate::version(), version, reason) {
            tracing::warn!(error = %format!("{e:#}"), "cannot record the failed update");
        }
        self.tell(version, UpdateOutcome::Failed, reason);
    }

    /// Reports to the console in the background. Once a failure is told, its record beside
    /// the binary is marked so the next start does not tell it again.
    fn tell(&self, version: &str, outcome: UpdateOutcome, reason: &str) {
        let (client, node, paths) = (
            Arc::clone(&self.client),
            self.node.clone(),
            self.paths.clone(),
        );
        let (version, reason) = (version.to_owned(), reason.to_owned());
        tokio::spawn(async move {
            if report(&client, &node, &version, outcome, &reason).await
                && outcome == UpdateOutcome::Failed
                && let Some(paths) = paths
                && let Some(mut state) = paths.read_state()
                && state.phase == Phase::Failed
                && state.to == version
            {
                state.reported = true;
                let _ = paths.write_state(&state);
            }
        });
    }

    /// Probation ran out: puts the previous binary back and runs it. Returns only when that
    /// could not be done (this version then keeps running).
    pub fn roll_back_and_exec(&mut self) {
        let Some(p) = self.probation.take() else {
            return;
        };
        let Some(paths) = &self.paths else { return };
        let reason = format!(
            "version {} got {} of {} heartbeats answered within {} s; version {} was put back",
            p.state.to,
            p.answered,
            self.settings.health_heartbeats,
            self.settings.health_timeout.as_secs(),
            p.state.from
        );
        tracing::error!("{reason}");
        if let Err(e) = roll_back(paths, &p.state, &reason) {
            tracing::error!(error = %format!("{e:#}"), "cannot put the previous version back; this one keeps running");
            return;
        }
        let e = exec(paths);
        tracing::error!(error = %e, path = %paths.exe.display(), "cannot start the previous version");
    }
}

/// A preparation under way: the prepared binary, or why there is none and whether to tell the
/// console (an update merely put off is not a failure).
pub type Preparing = tokio::task::JoinHandle<Result<Prepared, (String, bool)>>;

/// Spawns the preparation of an update: report, fetch, verify, download, then wait for the
/// running tasks to end. `Err((reason, tell))`: `tell` is false for an update merely put off.
pub fn spawn_prepare(updater: &Updater, runner: Arc<Runner>, version: String) -> Preparing {
    let client = Arc::clone(&updater.client);
    let node = updater.node.clone();
    let settings = updater.settings.clone();
    let paths = updater.paths.clone();
    tokio::spawn(async move {
        let Some(paths) = paths else {
            return Err(("the agent cannot tell where its binary is".to_owned(), true));
        };
        tracing::info!(from = crate::version(), to = %version, "updating");
        report(&client, &node, &version, UpdateOutcome::Started, "").await;
        let prepared = prepare(&client, &node, &settings, &paths, &version)
            .await
            .map_err(|e| (format!("{e:#}"), true))?;
        runner.set_paused(true);
        if runner.running() > 0 {
            tracing::info!(
                running = runner.running(),
                "the update waits for running tasks to end, taking no new ones"
            );
        }
        if !runner.wait_idle(settings.task_wait).await {
            runner.set_paused(false);
            let _ = fs::remove_file(&paths.new);
            return Err((
                format!(
                    "tasks still ran after {} s; the update is put off",
                    settings.task_wait.as_secs()
                ),
                false,
            ));
        }
        Ok(prepared)
    })
}

#[cfg(test)]
#[path = "update_tests.rs"]
pub(crate) mod tests;

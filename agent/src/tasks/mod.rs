//! The agent's side of tasks. One long poll at a time asks the console for work and says which
//! tasks the agent holds; each assigned task then lives in its own tokio task:
//!
//! 1. ask the console to start it under its lease, and run nothing unless it agrees;
//! 2. run it ([`process`]) while its log is pushed to the console every second;
//! 3. write the result to the spool (work/.results/ID.json), push the rest of the log, and
//!    report the result until the console has it; then forget the task.
//!
//! A result in the spool survives an agent restart and is delivered by the next agent. While
//! the console cannot be reached, tasks run on and results wait. When the agent stops, it
//! drains: it takes no new work and waits for running tasks (up to the drain timeout) before
//! killing what is left.

pub mod contain;
pub mod process;
mod spool;

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tasknode_protocol::tasks::{
    FinishTask, HeldTask, MAX_LOG_CHUNK_BYTES, PollRequest, StartTask, TaskAssignment,
};
use tokio::sync::{Notify, watch};

use crate::backoff::Backoff;
use crate::client::{ClientError, ConsoleClient};
use crate::config::{Config, Node};
use process::{RunAs, Spec, Stop};

/// How long one poll waits for work at the console.
const POLL_WAIT_SECS: u64 = 25;
/// How often a running task's log is pushed.
const PUSH_EVERY: Duration = Duration::from_secs(1);

/// Where each held task is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Starting,
    Running,
    /// Done; the result is in the spool until the console has it.
    Delivering,
}

struct Held {
    lease: i64,
    phase: Phase,
    stop: watch::Sender<Option<Stop>>,
}

/// Settings a task run needs, taken from the config once.
#[derive(Debug, Clone)]
pub struct Settings {
    pub work_dir: PathBuf,
    pub log_dir: PathBuf,
    pub log_max_bytes: u64,
    pub log_retention: Duration,
    pub run_as: Result<RunAs, String>,
    /// Push task logs to the console (VPC). Classic servers serve them on their log service.
    pub push_logs: bool,
}

impl Settings {
    pub fn from_config(config: &Config) -> Settings {
        Settings {
            work_dir: config.work_dir(),
            log_dir: config.task_log_dir(),
            log_max_bytes: config.task_log_max_bytes(),
            log_retention: config.task_log_retention(),
            run_as: run_as(config.task_user()),
            push_logs: config
                .node
                .as_ref()
                .is_some_and(|n| n.network == tasknode_protocol::NetworkType::Vpc),
        }
    }

    fn log_path(&self, id: i64) -> PathBuf {
        self.log_dir.join(format!("{id}.log"))
    }

    fn spool_dir(&self) -> PathBuf {
        self.work_dir.join(".results")
    }
}

/// Whom tasks run as: the agent's own user, or `user` when the agent is root (tasks never run
/// as root).
fn run_as(user: &str) -> Result<RunAs, String> {
    let me = rustix::process::geteuid();
    if !me.is_root() {
        let entry = crate::passwd::by_uid(Path::new("/"), me.as_raw());
        return Ok(RunAs {
            name: entry
                .as_ref()
                .map_or_else(|| me.as_raw().to_string(), |e| e.name.clone()),
            ids: None,
            home: entry
                .map(|e| e.home)
                .or_else(|| std::env::var_os("HOME").map(PathBuf::from))
                .unwrap_or_else(|| PathBuf::from("/")),
        });
    }
    match crate::passwd::by_name(Path::new("/"), user) {
        Some(e) if e.uid != 0 => Ok(RunAs {
            name: e.name,
            ids: Some((e.uid, e.gid)),
            home: e.home,
        }),
        Some(_) => Err(format!(
            "task user {user} is root; tasks never run as root: set [tasks] user in the agent config to an unprivileged user"
        )),
        None => Err(format!(
            "the agent runs as root and the task user {user} does not exist; create it (useradd {user}) or set [tasks] user in the agent config"
        )),
    }
}

pub struct Runner {
    client: Arc<ConsoleClient>,
    node: Node,
    settings: Settings,
    held: Mutex<HashMap<i64, Held>>,
    /// Clock skew: no new work.
    skewed: AtomicBool,
    /// Stopping: no new work, and the poll loop ends.
    draining: AtomicBool,
    /// An update waits for running tasks to end: no new work for now.
    paused: AtomicBool,
    /// Signalled whenever a task leaves `held`.
    changed: Notify,
    /// Signalled when `skewed` or `paused` changes: the poll in flight asked with the old
    /// answer to "accepting", and a new one must ask with the new.
    accepting_changed: Notify,
}

impl Runner {
    pub fn new(client: Arc<ConsoleClient>, node: Node, settings: Settings) -> Arc<Runner> {
        Arc::new(Runner {
            client,
            node,
            settings,
            held: Mutex::new(HashMap::new()),
            skewed: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            paused: AtomicBool::new(false),
            changed: Notify::new(),
            accepting_changed: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<i64, Held>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_skewed(&self, skewed: bool) {
        self.set_flag(&self.skewed, skewed);
    }

    /// Tasks started and not yet ended.
    pub fn running(&self) -> u32 {
        self.lock()
            .values()
            .filter(|h| h.phase == Phase::Running)
            .count() as u32
    }

    /// Whether task `id` is held and its run has not ended.
    pub fn is_unfinished(&self, id: i64) -> bool {
        self.lock()
            .get(&id)
            .is_some_and(|h| h.phase != Phase::Delivering)
    }

    /// Tasks given to this agent whose run has not ended.
    fn unfinished(&self) -> Vec<i64> {
        self.lock()
            .iter()
            .filter(|(_, h)| h.phase != Phase::Delivering)
            .map(|(id, _)| *id)
            .collect()
    }

    fn accepting(&self) -> bool {
        !self.skewed.load(Ordering::SeqCst)
            && !self.draining.load(Ordering::SeqCst)
            && !self.paused.load(Ordering::SeqCst)
    }

    /// Takes no new tasks while `paused` (an update waits for the running ones to end).
    pub fn set_paused(&self, paused: bool) {
        self.set_flag(&self.paused, paused);
    }

    fn set_flag(&self, flag: &AtomicBool, value: bool) {
        if flag.swap(value, Ordering::SeqCst) != value {
            self.accepting_changed.notify_waiters();
        }
    }

    /// Waits until no task is running or about to run, for at most `timeout`; returns whether
    /// that happened.
    pub async fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.changed.notified();
            if self.unfinished().is_empty() {
                return true;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return self.unfinished().is_empty();
            }
        }
    }

    fn held_list(&self) -> Vec<HeldTask> {
        self.lock()
            .iter()
            .map(|(&id, h)| HeldTask { id, lease: h.lease })
            .collect()
    }

    fn forget(&self, id: i64) {
        self.lock().remove(&id);
        self.record_running();
        self.changed.notify_waiters();
    }

    fn set_phase(&self, id: i64, phase: Phase) {
        if let Some(h) = self.lock().get_mut(&id) {
            h.phase = phase;
        }
        self.record_running();
    }

    /// Writes the ids of the tasks whose run has not ended to `work/.running`, where
    /// `serverctl stop` reads what a stopping agent waits for.
    fn record_running(&self) {
        let mut ids = self.unfinished();
        ids.sort_unstable();
        let text: String = ids.iter().map(|id| format!("{id}\n")).collect();
        let path = running_file(&self.settings.work_dir);
        let tmp = self.settings.work_dir.join(".running.tmp");
        if let Err(e) = fs::write(&tmp, text).and_then(|()| fs::rename(&tmp, &path)) {
            tracing::warn!(path = %path.display(), error = %e, "cannot record the running tasks");
        }
    }

    fn stop_task(&self, id: i64, why: Stop) {
        if let Some(h) = self.lock().get(&id) {
            h.stop.send_replace(Some(why));
        }
    }

    /// Prepares the directories, deletes expired task logs, and picks up the results an
    /// earlier agent left undelivered.
    pub fn start(self: &Arc<Self>) -> anyhow::Result<()> {
        use anyhow::Context;
        for dir in [&self.settings.log_dir, &self.settings.spool_dir()] {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        self.expire_logs();
        self.record_running();
        for (id, result) in spool::load(&self.settings.spool_dir()) {
            tracing::info!(
                task = id,
                "delivering a result an earlier run of the agent left"
            );
            let (stop, _) = watch::channel(None);
            self.lock().insert(
                id,
                Held {
                    lease: result.lease,
                    phase: Phase::Delivering,
                    stop,
                },
            );
            let me = Arc::clone(self);
            tokio::spawn(async move { me.deliver(id, result).await });
        }
        Ok(())
    }

    /// Deletes task logs older than the retention.
    pub fn expire_logs(&self) {
        let Ok(entries) = fs::read_dir(&self.settings.log_dir) else {
            return;
        };
        let now = SystemTime::now();
        let mut removed = 0;
        for e in entries.flatten() {
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .is_some_and(|age| age > self.settings.log_retention);
            if old
                && e.path().extension().is_some_and(|x| x == "log")
                && fs::remove_file(e.path()).is_ok()
            {
                removed += 1;
            }
        }
        if removed > 0 {
            tracing::info!(removed, "deleted task logs past their retention");
        }
    }

    /// Polls for work until the agent drains.
    pub async fn poll_loop(self: Arc<Self>) {
        let mut backoff = Backoff::default();
        let mut expired_at = std::time::Instant::now();
        while !self.draining.load(Ordering::SeqCst) {
            // Registered before "accepting" is read, so no change after the read is missed.
            let accepting_changed = self.accepting_changed.notified();
            tokio::pin!(accepting_changed);
            accepting_changed.as_mut().enable();
            let req = PollRequest {
                held: self.held_list(),
                accepting: self.accepting(),
                wait_secs: POLL_WAIT_SECS,
            };
            // A change drops the poll in flight: the new one supersedes it at the console, and
            // whatever the dropped one may have been given is not held, so it is queued again.
            let answer = tokio::select! {
                answer = self.client.poll(&self.node.id, &self.node.secret, &req) => answer,
                () = &mut accepting_changed => continue,
            };
            match answer {
                Ok(answer) => {
                    if backoff.failures() > 0 {
                        tracing::info!("polling for tasks again");
                    }
                    backoff.reset();
                    for id in answer.body.cancel {
                        tracing::info!(task = id, "the console cancelled this task");
                        self.stop_task(id, Stop::Cancel);
                    }
                    for a in answer.body.assign {
                        self.take(a);
                    }
                }
                Err(e) => {
                    let delay = backoff.next_delay();
                    if backoff.failures() == 1 || backoff.failures().is_multiple_of(10) {
                        tracing::warn!(error = %e, failures = backoff.failures(), "polling for tasks failed; running tasks go on");
                    }
                    tokio::time::sleep(delay).await;
                }
            }
            if expired_at.elapsed() > Duration::from_secs(3600) {
                self.expire_logs();
                expired_at = std::time::Instant::now();
            }
        }
    }

    fn take(self: &Arc<Self>, a: TaskAssignment) {
        {
            let mut held = self.lock();
            if let Some(h) = held.get(&a.id)
                && h.lease >= a.lease
            {
                return;
            }
            let (stop, _) = watch::channel(None);
            held.insert(
                a.id,
                Held {
                    lease: a.lease,
                    phase: Phase::Starting,
                    stop,
                },
            );
        }
        tracing::info!(task = a.id, lease = a.lease, "task assigned");
        self.record_running();
        let me = Arc::clone(self);
        tokio::spawn(async move { me.life(a).await });
    }

    /// One task from its start request to its delivered result.
    async fn life(self: Arc<Self>, a: TaskAssignment) {
        let Some(mut stop) = self.lock().get(&a.id).map(|h| h.stop.subscribe()) else {
            return;
        };
        // 1. Start only what the console agrees to.
        let mut backoff = Backoff::default();
        loop {
            if stop.borrow().is_some() {
                tracing::info!(task = a.id, "stopped before it started");
                self.forget(a.id);
                return;
            }
            // An assignment that arrives while the agent drains is not started; the console
            // queues it again once it sees the agent no longer holds it.
            if self.draining.load(Ordering::SeqCst) || self.paused.load(Ordering::SeqCst) {
                tracing::info!(
                    task = a.id,
                    "not starting a task while draining or updating"
                );
                self.forget(a.id);
                return;
            }
            let req = StartTask {
                lease: a.lease,
                at_ms: crate::client::now_ms(),
            };
            match self
                .client
                .start_task(&self.node.id, &self.node.secret, a.id, &req)
                .await
            {
                Ok(()) => break,
                Err(e) if e.is_final() => {
                    tracing::warn!(task = a.id, error = %e, "the console refused to start this task; not running it");
                    self.forget(a.id);
                    return;
                }
                Err(e) => {
                    tracing::warn!(task = a.id, error = %e, "asking to start a task failed; asking again");
                    tokio::select! {
                        () = tokio::time::sleep(backoff.next_delay()) => {}
                        _ = stop.changed() => {}
                    }
                }
            }
        }
        self.set_phase(a.id, Phase::Running);
        tracing::info!(task = a.id, "task started");

        // 2. Run it, pushing its log as it grows.
        let spec = Spec {
            id: a.id,
            script: a.script,
            timeout: Duration::from_secs(a.timeout_secs),
            work_dir: self.settings.work_dir.clone(),
            log_path: self.settings.log_path(a.id),
            log_max_bytes: self.settings.log_max_bytes,
            run_as: self.settings.run_as.clone(),
        };
        let pushed = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let pusher = self.settings.push_logs.then(|| {
            let me = Arc::clone(&self);
            let pushed = Arc::clone(&pushed);
            let (id, lease) = (a.id, a.lease);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(PUSH_EVERY).await;
                    let from = pushed.load(Ordering::SeqCst);
                    match me.push_log(id, lease, from, u64::MAX).await {
                        Ok(to) => pushed.store(to, Ordering::SeqCst),
                        Err(e) if e.is_final() => {
                            tracing::warn!(task = id, error = %e, "the console takes no more of this task's log; the rest stays on this server");
                            break;
                        }
                        Err(_) => {}
                    }
                }
            })
        });
        let ran = process::run(spec, stop).await;
        if let Some(p) = pusher {
            p.abort();
        }
        tracing::info!(task = a.id, outcome = ?ran.outcome, log_bytes = ran.log_bytes, "task ended");

        // 3. Keep the result, then deliver it.
        let result = FinishTask {
            lease: a.lease,
            outcome: ran.outcome,
            started_ms: ran.started_ms,
            finished_ms: ran.finished_ms,
            log_bytes: ran.log_bytes,
        };
        if let Err(e) = spool::save(&self.settings.spool_dir(), a.id, &result) {
            tracing::error!(task = a.id, error = %e, "cannot keep the result on disk; it is lost if the agent stops before delivering it");
        }
        self.set_phase(a.id, Phase::Delivering);
        self.changed.notify_waiters();
        self.deliver(a.id, result).await;
    }

    /// Pushes the rest of the log and reports the result, until the console has both.
    async fn deliver(self: Arc<Self>, id: i64, result: FinishTask) {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        let mut pushed = 0;
        let mut push = self.settings.push_logs;
        loop {
            let attempt = async {
                if push {
                    match self
                        .push_log(id, result.lease, pushed, result.log_bytes)
                        .await
                    {
                        Ok(to) => pushed = to,
                        // The console keeps what it has of the log (a limit reached, say);
                        // the result still goes.
                        Err(e) if e.is_final() => {
                            tracing::warn!(task = id, error = %e, "the console takes no more of this task's log; the rest stays on this server");
                            push = false;
                        }
                        Err(e) => return Err(e),
                    }
                }
                self.client
                    .finish_task(&self.node.id, &self.node.secret, id, &result)
                    .await
            };
            match attempt.await {
                Ok(()) => {
                    tracing::info!(task = id, "result delivered");
                    break;
                }
                Err(e) if e.is_final() => {
                    tracing::warn!(task = id, error = %e, "the console refused this task's result; dropping it");
                    break;
                }
                Err(e) => {
                    let delay = backoff.next_delay();
                    if backoff.failures() == 1 || backoff.failures().is_multiple_of(10) {
                        tracing::warn!(task = id, error = %e, failures = backoff.failures(), "delivering a result failed; it is kept and retried");
                    }
                    tokio::time::sleep(delay).await;
                }
            }
        }
        spool::remove(&self.settings.spool_dir(), id);
        self.forget(id);
    }

    /// Sends the log of task `id` from `at` up to `until` (or its current end); returns how
    /// much of it the console holds. The console answers with its size, so a resend skips
    /// what it has and a gap is filled from where its copy ends.
    async fn push_log(
        &self,
        id: i64,
        lease: i64,
        mut at: u64,
        until: u64,
    ) -> Result<u64, ClientError> {
        let path = self.settings.log_path(id);
        loop {
            let chunk = read_chunk(&path, at, until).unwrap_or_default();
            if chunk.is_empty() {
                return Ok(at);
            }
            let answer = self
                .client
                .push_log(&self.node.id, &self.node.secret, id, lease, at, chunk)
                .await?;
            if answer.body.size == at {
                return Ok(at);
            }
            at = answer.body.size;
        }
    }

    /// Stops taking work, waits up to `timeout` for running tasks, kills the rest, and gives
    /// their results `deliver_for` to reach the console (what does not stays in the spool).
    pub async fn drain(&self, timeout: Duration, deliver_for: Duration) {
        self.draining.store(true, Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + timeout;
        let mut said = None;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let waiting = self.unfinished();
            if waiting.is_empty() {
                break;
            }
            if said.as_ref() != Some(&waiting) {
                tracing::info!(tasks = ?waiting, "draining: waiting for running tasks to finish");
                said = Some(waiting.clone());
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(tasks = ?waiting, "drain timeout passed; killing the tasks still running");
                for id in waiting {
                    self.stop_task(
                        id,
                        Stop::Shutdown(format!(
                            "the agent stopped and the drain timeout ({} s) passed",
                            timeout.as_secs()
                        )),
                    );
                }
                // Their runs end within the kill grace; wait for that, not for the deadline.
                let until = tokio::time::Instant::now() + Duration::from_secs(10);
                while !self.unfinished().is_empty() && tokio::time::Instant::now() < until {
                    let changed = self.changed.notified();
                    tokio::select! {
                        () = changed => {}
                        () = tokio::time::sleep_until(until) => {}
                    }
                }
                break;
            }
            tokio::select! {
                () = &mut changed => {}
                () = tokio::time::sleep_until(deadline) => {}
            }
        }
        let until = tokio::time::Instant::now() + deliver_for;
        while !self.held_list().is_empty() && tokio::time::Instant::now() < until {
            let changed = self.changed.notified();
            tokio::select! {
                () = changed => {}
                () = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
        let left = self.held_list();
        if !left.is_empty() {
            tracing::warn!(tasks = ?left.iter().map(|h| h.id).collect::<Vec<_>>(), "results not delivered yet; the next start of the agent delivers them");
        }
    }
}

/// The file listing the tasks a running agent has not finished.
pub fn running_file(work_dir: &Path) -> PathBuf {
    work_dir.join(".running")
}

/// The tasks the agent using `work_dir` has not finished, as it last recorded them.
pub fn recorded_running(work_dir: &Path) -> Vec<i64> {
    fs::read_to_string(running_file(work_dir))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Up to one chunk of `path` from `at`, not past `until`.
fn read_chunk(path: &Path, at: u64, until: u64) -> std::io::Result<Vec<u8>> {
    let mut f = fs::File::open(path)?;
    let len = f.metadata()?.len().min(until);
    if at >= len {
        return Ok(Vec::new());
    }
    f.seek(SeekFrom::Start(at))?;
    let want = (len - at).min(MAX_LOG_CHUNK_BYTES as u64);
    let mut buf = Vec::with_capacity(want as usize);
    f.take(want).read_to_end(&mut buf)?;
    Ok(buf)
}

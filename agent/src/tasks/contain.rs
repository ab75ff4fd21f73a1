//! Keeps a task from outliving itself: what a task starts ends with it, even a process that
//! left the task's process group (`setsid`, a double fork).
//!
//! - Under systemd, when the unit delegates its cgroup to the agent (`Delegate=yes`, cgroup
//!   v2, the unified hierarchy of a hybrid host included), the agent moves itself into the
//!   leaf `agent/` of that cgroup and each task into `task-ID/` beside it, from inside the
//!   forked child before it runs anything. When the task ends the whole `task-ID/` cgroup is
//!   emptied (`cgroup.kill` where the kernel has it, 5.14 and later; else SIGKILL to every pid in
//!   the `cgroup.procs` of it and every cgroup below until none is left) and removed. A task
//!   runs as the agent's user, who owns the delegated subtree, so it could move itself out of
//!   `task-ID/`: into `agent/`, a new cgroup beside it, or the unit's own. A sweep at every task
//!   end, at start and every 30 s kills whatever sits anywhere in the subtree outside the
//!   cgroups of running tasks but the agent and the children it started itself, and removes
//!   every other cgroup, so such an escape lasts at most until the next sweep. Only moving into
//!   the cgroup of another running task outlives its own, until that task ends.
//! - Elsewhere (no systemd, no delegation, cgroup v1 only, SysV) the agent is a child
//!   subreaper: processes that outlive their parent within a task are re-parented to the agent
//!   rather than to init. When a task ends, its process group is killed as before, and every
//!   such orphan that carries the task's `TASKNODE_TASK_ID` (or any orphan, when no other task
//!   runs) is killed and reaped. An orphan that also cleared its environment while another
//!   task runs escapes until a task ends with none running beside it.

use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use rustix::process::{Pid, Signal, WaitOptions};

/// `statfs` type of a cgroup v2 file system.
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
/// How long emptying a task's cgroup or killing its orphans may take.
const EMPTY_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the delegated subtree is swept outside task ends.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// How this agent contains its tasks, decided once at start.
#[derive(Debug)]
pub enum Containment {
    /// Each task in a cgroup of its own under this delegated cgroup.
    Cgroups { base: PathBuf },
    /// The agent is a child subreaper; orphans of tasks are found among its children.
    Reaper,
    /// Only the task's process group is killed.
    GroupOnly,
}

static CONTAINMENT: OnceLock<Containment> = OnceLock::new();

/// The children the agent started and waits for itself (task shells: `true`; an update's
/// trial: `false`); never orphans, never swept. Held while such a child is spawned, so no sweep
/// sees it before it is here.
static OWN: Mutex<Option<HashMap<i32, bool>>> = Mutex::new(None);

/// The cgroups (`task-ID`) of tasks that run, named before they are made.
static LIVE: Mutex<Option<HashSet<String>>> = Mutex::new(None);

fn own() -> std::sync::MutexGuard<'static, Option<HashMap<i32, bool>>> {
    OWN.lock().unwrap_or_else(|e| e.into_inner())
}

fn live() -> std::sync::MutexGuard<'static, Option<HashSet<String>>> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Decides, and sets up, how tasks are contained. Call once, early in `tasknode run`.
pub fn init() -> &'static Containment {
    CONTAINMENT.get_or_init(|| {
        let why = match delegated_cgroup() {
            Ok(base) => match enter(&base) {
                Ok(()) => {
                    tracing::info!(cgroup = %base.display(), "each task runs in a cgroup of its own under this agent's delegated cgroup");
                    if tokio::runtime::Handle::try_current().is_ok() {
                        tokio::spawn(async {
                            loop {
                                tokio::time::sleep(SWEEP_EVERY).await;
                                sweep().await;
                            }
                        });
                    }
                    return Containment::Cgroups { base };
                }
                Err(e) => format!("cannot use {}: {e}", base.display()),
            },
            Err(why) => why,
        };
        match rustix::process::set_child_subreaper(Some(rustix::process::getpid())) {
            Ok(()) => {
                tracing::info!(why = %why, "no delegated cgroup v2 (systemd with Delegate=yes): tasks are contained by process group, and their orphans are re-parented to the agent and killed");
                Containment::Reaper
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot become a child subreaper: a process that leaves its task's process group can outlive the task");
                Containment::GroupOnly
            }
        }
    })
}

/// How tasks are contained; [`Containment::GroupOnly`] before [`init`].
pub fn get() -> &'static Containment {
    CONTAINMENT.get().unwrap_or(&Containment::GroupOnly)
}

/// The agent's own cgroup v2 directory when systemd delegated it to this user: started by
/// systemd, on a cgroup2 hierarchy, not the root, and writable. Else why not.
fn delegated_cgroup() -> Result<PathBuf, String> {
    if std::env::var_os(crate::env::INVOCATION_ID).is_none() {
        return Err("not started by systemd".to_owned());
    }
    let text = fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| format!("reading /proc/self/cgroup: {e}"))?;
    let rel = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or("no cgroup v2 hierarchy (cgroup v1 only)")?
        .trim();
    let mount = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .into_iter()
        .find(|m| {
            rustix::fs::statfs(*m).is_ok_and(|s| {
                // The field's type differs between libcs (i64 with glibc, u64 with musl).
                #[allow(clippy::unnecessary_cast)]
                let kind = s.f_type as i64;
                kind == CGROUP2_SUPER_MAGIC
            })
        })
        .ok_or("no cgroup2 file system at /sys/fs/cgroup or /sys/fs/cgroup/unified")?;
    let rel = rel.trim_start_matches('/');
    if rel.is_empty() {
        return Err("the agent runs in the root cgroup".to_owned());
    }
    let mut dir = Path::new(mount).join(rel);
    // An earlier image of this process (before a self-update's exec) moved it to `agent/`.
    if dir.file_name().is_some_and(|n| n == "agent")
        && let Some(parent) = dir.parent()
    {
        dir = parent.to_owned();
    }
    let writable = |p: &Path| rustix::fs::access(p, rustix::fs::Access::WRITE_OK).is_ok();
    if writable(&dir) && writable(&dir.join("cgroup.procs")) {
        Ok(dir)
    } else {
        Err(format!(
            "{} is not writable by the agent's user (the unit needs Delegate=yes)",
            dir.display()
        ))
    }
}

/// Moves the agent into `base/agent/` and removes what tasks of an earlier run left.
fn enter(base: &Path) -> io::Result<()> {
    let leaf = base.join("agent");
    match fs::create_dir(&leaf) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    fs::write(leaf.join("cgroup.procs"), b"0")?;
    // What tasks of an earlier run left.
    sweep_blocking(base);
    Ok(())
}

/// Kills what sits in the delegated subtree outside the cgroups of running tasks, but the
/// agent and its own children, and removes every cgroup but `agent/` and theirs.
pub async fn sweep() {
    if let Containment::Cgroups { base } = get() {
        let base = base.clone();
        let _ = tokio::task::spawn_blocking(move || sweep_blocking(&base)).await;
    }
}

fn sweep_blocking(base: &Path) {
    let me = rustix::process::getpid();
    for pid in pids_in(base) {
        if pid != me {
            tracing::warn!(pid = pid.as_raw_nonzero().get(), cgroup = %base.display(), "killing a process that left its task's cgroup");
            let _ = rustix::process::kill_process(pid, Signal::Kill);
        }
    }
    {
        let own = own();
        for pid in pids_in(&base.join("agent")) {
            let known = own
                .as_ref()
                .is_some_and(|o| o.contains_key(&pid.as_raw_nonzero().get()));
            if pid != me && !known {
                tracing::warn!(
                    pid = pid.as_raw_nonzero().get(),
                    "killing a process that moved itself into the agent's cgroup"
                );
                let _ = rustix::process::kill_process(pid, Signal::Kill);
            }
        }
    }
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == "agent" || !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        if live().as_ref().is_some_and(|l| l.contains(&name)) {
            continue;
        }
        tracing::info!(cgroup = %entry.path().display(), "emptying a cgroup no running task owns");
        empty_blocking(&entry.path());
    }
}

/// A task's own cgroup.
#[derive(Debug)]
pub struct TaskCgroup {
    dir: PathBuf,
    /// `cgroup.procs`, ready for the forked child (which must not allocate).
    pub procs: CString,
}

/// Creates the cgroup of task `id`, when tasks get one.
pub fn task_cgroup(id: i64) -> io::Result<Option<TaskCgroup>> {
    let Containment::Cgroups { base } = get() else {
        return Ok(None);
    };
    let name = format!("task-{id}");
    let dir = base.join(&name);
    if dir.exists() {
        empty_blocking(&dir);
    }
    live().get_or_insert_with(HashSet::new).insert(name.clone());
    if let Err(e) = fs::create_dir(&dir) {
        if let Some(l) = live().as_mut() {
            l.remove(&name);
        }
        return Err(e);
    }
    let procs = CString::new(
        dir.join("cgroup.procs")
            .into_os_string()
            .into_encoded_bytes(),
    )
    .map_err(io::Error::other)?;
    Ok(Some(TaskCgroup { dir, procs }))
}

impl TaskCgroup {
    /// Kills every process in the cgroup and removes it, then sweeps the subtree.
    pub async fn empty_and_remove(self) {
        let dir = self.dir;
        let _ = tokio::task::spawn_blocking(move || {
            empty_blocking(&dir);
            if let (Some(l), Some(name)) = (live().as_mut(), dir.file_name()) {
                l.remove(&*name.to_string_lossy());
            }
        })
        .await;
        sweep().await;
    }
}

fn pids_in(dir: &Path) -> Vec<Pid> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse::<i32>().ok())
        .filter_map(Pid::from_raw)
        .collect()
}

/// `dir` and every cgroup below it, deepest last.
fn subtree(dir: &Path) -> Vec<PathBuf> {
    let mut all = vec![dir.to_owned()];
    let mut i = 0;
    while i < all.len() {
        if let Ok(entries) = fs::read_dir(&all[i]) {
            all.extend(
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
        i += 1;
    }
    all
}

/// Kills every process in `dir` and below, then removes those cgroups.
fn empty_blocking(dir: &Path) {
    let deadline = std::time::Instant::now() + EMPTY_TIMEOUT;
    let has_kill = dir.join("cgroup.kill").exists();
    loop {
        let cgroups = subtree(dir);
        let pids: Vec<Pid> = cgroups.iter().flat_map(|d| pids_in(d)).collect();
        if pids.is_empty() {
            break;
        }
        if std::time::Instant::now() > deadline {
            tracing::warn!(cgroup = %dir.display(), left = pids.len(), "processes of a task's cgroup survived 5 s of SIGKILL");
            return;
        }
        // cgroup.kill takes the whole subtree, and processes forking meanwhile.
        if !(has_kill && fs::write(dir.join("cgroup.kill"), b"1").is_ok()) {
            for pid in pids {
                let _ = rustix::process::kill_process(pid, Signal::Kill);
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // The kernel may report the last exit a moment after cgroup.procs is empty.
    for cgroup in subtree(dir).iter().rev() {
        let mut removed = false;
        for _ in 0..100 {
            match fs::remove_dir(cgroup) {
                Ok(()) => removed = true,
                Err(e) if e.kind() == io::ErrorKind::NotFound => removed = true,
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
            if removed {
                break;
            }
        }
        if !removed {
            tracing::warn!(cgroup = %cgroup.display(), "cannot remove a task's cgroup");
            return;
        }
    }
}

/// Spawns a child the agent waits for itself (`shell`: a task's shell), noting its pid before
/// any sweep or orphan hunt can see it.
pub fn spawn_own<T>(
    shell: bool,
    spawn: impl FnOnce() -> io::Result<T>,
    pid_of: impl Fn(&T) -> Option<u32>,
) -> io::Result<T> {
    let mut own = own();
    let child = spawn()?;
    if let Some(pid) = pid_of(&child).and_then(|p| i32::try_from(p).ok()) {
        own.get_or_insert_with(HashMap::new).insert(pid, shell);
    }
    Ok(child)
}

/// The agent has waited for this child of its own.
pub fn own_ended(pid: u32) {
    if let (Some(o), Ok(pid)) = (own().as_mut(), i32::try_from(pid)) {
        o.remove(&pid);
    }
}

/// After task `id` ended and its group was killed: kills and reaps the orphans it left with the
/// agent (as subreaper): those that carry its task id, or every one when no other task runs.
pub async fn kill_orphans(id: i64) {
    if !matches!(get(), Containment::Reaper) {
        return;
    }
    let _ = tokio::task::spawn_blocking(move || kill_orphans_blocking(id)).await;
}

fn kill_orphans_blocking(id: i64) {
    let me = rustix::process::getpid().as_raw_nonzero().get();
    let mark = format!("TASKNODE_TASK_ID={id}");
    let deadline = std::time::Instant::now() + EMPTY_TIMEOUT;
    loop {
        let own: HashMap<i32, bool> = own().clone().unwrap_or_default();
        let alone = !own.values().any(|shell| *shell);
        let mut left = 0;
        for child in children(me) {
            // The agent's own children (task shells, an update's trial) are waited for by
            // whoever started them.
            if own.contains_key(&child.pid) {
                continue;
            }
            let Some(pid) = Pid::from_raw(child.pid) else {
                continue;
            };
            if child.zombie {
                let _ = rustix::process::waitpid(Some(pid), WaitOptions::NOHANG);
                continue;
            }
            let ours = alone
                || fs::read(format!("/proc/{}/environ", child.pid))
                    .is_ok_and(|env| env.split(|b| *b == 0).any(|v| v == mark.as_bytes()));
            if ours {
                let _ = rustix::process::kill_process(pid, Signal::Kill);
                left += 1;
            }
        }
        if left == 0 {
            return;
        }
        if std::time::Instant::now() > deadline {
            tracing::warn!(task = id, left, "orphans of a task survived 5 s of SIGKILL");
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

struct Child {
    pid: i32,
    zombie: bool,
}

/// The children of `parent`, from /proc.
fn children(parent: i32) -> Vec<Child> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // pid (comm) state ppid ...; comm may hold spaces and parentheses.
            let rest = &stat[stat.rfind(')')? + 1..];
            let mut f = rest.split_whitespace();
            let state = f.next()?;
            let ppid: i32 = f.next()?.parse().ok()?;
            (ppid == parent).then_some(Child {
                pid,
                zombie: state == "Z",
            })
        })
        .collect()
}

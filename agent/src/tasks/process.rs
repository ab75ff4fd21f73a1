//! One task's run: a fresh working directory, `/bin/sh` on the script in its own process group
//! with a clean environment (as the task user when the agent is root), standard output and
//! error into the task log up to its size limit, and, at the timeout, on cancel or at shutdown,
//! the whole process group killed. Whatever way the script ends, no process of its group is
//! left behind, nor (see [`super::contain`]) of its cgroup or, without one, any orphan it left.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rustix::process::{Pid, Signal};
use tasknode_protocol::tasks::Outcome;
use tokio::sync::watch;

use super::contain;
use crate::client::now_ms;

/// Why the agent ends a task early.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// An operator cancelled it, or the console took it back.
    Cancel,
    /// The agent is stopping and the drain timeout has passed.
    Shutdown(String),
}

/// Whom a task runs as.
#[derive(Debug, Clone)]
pub struct RunAs {
    pub name: String,
    /// `None`: the agent's own user (it is not root).
    pub ids: Option<(u32, u32)>,
    pub home: PathBuf,
}

#[derive(Debug, Clone)]
pub struct Spec {
    pub id: i64,
    pub script: String,
    pub timeout: Duration,
    pub work_dir: PathBuf,
    pub log_path: PathBuf,
    pub log_max_bytes: u64,
    pub run_as: Result<RunAs, String>,
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct Ran {
    pub outcome: Outcome,
    pub started_ms: Option<i64>,
    pub finished_ms: i64,
    pub log_bytes: u64,
}

/// Grace between SIGTERM and SIGKILL of a task's process group.
const KILL_GRACE: Duration = Duration::from_secs(5);
/// How long the log copier may take to see the end of output once the group is dead.
const DRAIN_OUTPUT: Duration = Duration::from_secs(5);

/// The working directory of task `id` under `work_dir`, and the script beside it.
pub fn paths(work_dir: &Path, id: i64) -> (PathBuf, PathBuf) {
    (
        work_dir.join(id.to_string()),
        work_dir.join(format!("{id}.sh")),
    )
}

/// Removes what a run left in the work directory.
pub fn clean(work_dir: &Path, id: i64) {
    let (dir, script) = paths(work_dir, id);
    let _ = fs::remove_dir_all(dir);
    let _ = fs::remove_file(script);
}

fn not_started(reason: String, log_path: &Path) -> Ran {
    // The reason goes to the log too, where whoever reads it will look first.
    let line = format!("[tasknode] the task could not start: {reason}\n");
    let log_bytes = fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o640)
        .open(log_path)
        .and_then(|mut f| f.write_all(line.as_bytes()))
        .map_or(0, |()| line.len() as u64);
    Ran {
        outcome: Outcome::NotStarted { reason },
        started_ms: None,
        finished_ms: now_ms(),
        log_bytes,
    }
}

fn prepare(spec: &Spec, run_as: &RunAs) -> std::io::Result<(PathBuf, PathBuf)> {
    let (dir, script) = paths(&spec.work_dir, spec.id);
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o711)
        .create(&spec.work_dir)?;
    // A directory left by an earlier run of this id (an agent killed mid-task) is not reused.
    let _ = fs::remove_dir_all(&dir);
    fs::DirBuilder::new().mode(0o700).create(&dir)?;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o500)
        .open(&script)?;
    f.write_all(spec.script.as_bytes())?;
    if let Some((uid, gid)) = run_as.ids {
        let owner = |p: &Path| std::os::unix::fs::chown(p, Some(uid), Some(gid));
        owner(&dir)?;
        owner(&script)?;
    }
    Ok((dir, script))
}

/// Runs a task to its end. `stop` ends it early.
pub async fn run(spec: Spec, mut stop: watch::Receiver<Option<Stop>>) -> Ran {
    let run_as = match &spec.run_as {
        Ok(r) => r.clone(),
        Err(reason) => return not_started(reason.clone(), &spec.log_path),
    };
    let (dir, script) = match prepare(&spec, &run_as) {
        Ok(p) => p,
        Err(e) => {
            return not_started(
                format!(
                    "preparing its working directory in {}: {e}",
                    spec.work_dir.display()
                ),
                &spec.log_path,
            );
        }
    };
    let log = match fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o640)
        .open(&spec.log_path)
    {
        Ok(f) => f,
        Err(e) => {
            return not_started(
                format!("opening its log {}: {e}", spec.log_path.display()),
                &spec.log_path,
            );
        }
    };
    let (reader, writer) = match std::io::pipe().and_then(|(r, w)| Ok((r, w.try_clone()?, w))) {
        Ok((r, w1, w2)) => (r, (w1, w2)),
        Err(e) => return not_started(format!("creating a pipe: {e}"), &spec.log_path),
    };

    let mut cmd = tokio::process::Command::new("/bin/sh");
    cmd.arg(&script)
        .current_dir(&dir)
        .env_clear()
        .env(
            "PATH",
            "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin",
        )
        .env("HOME", &run_as.home)
        .env("USER", &run_as.name)
        .env("LOGNAME", &run_as.name)
        .env("SHELL", "/bin/sh")
        .env("LANG", "C")
        .env("TASKNODE_TASK_ID", spec.id.to_string())
        .env("TASKNODE_WORK_DIR", &dir)
        .stdin(Stdio::null())
        .stdout(writer.0)
        .stderr(writer.1)
        .process_group(0);
    let cgroup = match contain::task_cgroup(spec.id) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(task = spec.id, error = %e, "cannot create the task's cgroup; it is contained by its process group only");
            None
        }
    };
    match &cgroup {
        Some(cg) => enter_then_drop(&mut cmd, cg.procs.clone(), run_as.ids),
        None => {
            if let Some((uid, gid)) = run_as.ids {
                cmd.uid(uid).gid(gid);
            }
        }
    }
    let spawned = contain::spawn_own(true, || cmd.spawn(), tokio::process::Child::id);
    // The command holds the pipe's write ends; the copier sees the end of output only once
    // every copy of them is closed.
    drop(cmd);
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            clean(&spec.work_dir, spec.id);
            if let Some(cg) = cgroup {
                cg.empty_and_remove().await;
            }
            return not_started(format!("running /bin/sh: {e}"), &spec.log_path);
        }
    };
    let shell = child.id();
    let started_ms = now_ms();
    let pgid = child.id().and_then(|p| Pid::from_raw(p as i32));

    let written = Arc::new(AtomicU64::new(0));
    let copier = {
        let written = Arc::clone(&written);
        let max = spec.log_max_bytes;
        std::thread::spawn(move || copy_capped(reader, log, max, &written))
    };

    let timeout = tokio::time::sleep(spec.timeout);
    tokio::pin!(timeout);
    let mut ended_by: Option<Outcome> = None;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            () = &mut timeout, if ended_by.is_none() => {
                ended_by = Some(Outcome::TimedOut);
                kill_group(pgid, &mut child).await;
            }
            changed = stop.changed(), if ended_by.is_none() => {
                let why = if changed.is_ok() { stop.borrow_and_update().clone() } else { None };
                match why {
                    Some(Stop::Cancel) => ended_by = Some(Outcome::Cancelled),
                    Some(Stop::Shutdown(reason)) => ended_by = Some(Outcome::Killed { reason }),
                    // The sender is gone: nobody can stop this task any more; let it run.
                    None if changed.is_err() => {
                        let status = child.wait().await;
                        break status;
                    }
                    None => continue,
                }
                kill_group(pgid, &mut child).await;
            }
        }
    };
    if let Some(pid) = shell {
        contain::own_ended(pid);
    }
    // Whatever the script left running in its group, its cgroup, or as an orphan goes with it.
    if let Some(pgid) = pgid {
        kill_rest(pgid).await;
    }
    if let Some(cg) = cgroup {
        cg.empty_and_remove().await;
    }
    contain::kill_orphans(spec.id).await;
    let finished_ms = now_ms();
    // Output of processes that left the group may hold the pipe open; do not wait for them.
    let deadline = std::time::Instant::now() + DRAIN_OUTPUT;
    while !copier.is_finished() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let log_bytes = if copier.is_finished() {
        copier.join().unwrap_or(written.load(Ordering::SeqCst))
    } else {
        written.load(Ordering::SeqCst)
    };
    clean(&spec.work_dir, spec.id);
    let outcome = match (ended_by, status) {
        (Some(o), _) => o,
        (None, Ok(s)) => match (s.code(), s.signal()) {
            (Some(code), _) => Outcome::Exited { code },
            (None, Some(signal)) => Outcome::Signaled { signal },
            (None, None) => Outcome::Exited { code: -1 },
        },
        (None, Err(e)) => Outcome::Killed {
            reason: format!("waiting for the script failed: {e}"),
        },
    };
    Ran {
        outcome,
        started_ms: Some(started_ms),
        finished_ms,
        log_bytes,
    }
}

/// Makes the forked child join the task's cgroup (from inside the agent's delegated subtree, so
/// before it gives up the agent's user) and only then take the task user's ids.
fn enter_then_drop(
    cmd: &mut tokio::process::Command,
    procs: std::ffi::CString,
    ids: Option<(u32, u32)>,
) {
    let join = move || -> std::io::Result<()> {
        use rustix::fs::{Mode, OFlags};
        let fd = rustix::fs::open(
            procs.as_c_str(),
            OFlags::WRONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        rustix::io::write(&fd, b"0")?;
        drop(fd);
        if let Some((uid, gid)) = ids {
            drop_to(uid, gid)?;
        }
        Ok(())
    };
    #[allow(unsafe_code)]
    // SAFETY: the closure runs in the forked child before exec and makes only system calls
    // (open, write, close, setgroups, setgid, setuid) on data made before the fork: it neither
    // allocates nor takes a lock.
    unsafe {
        cmd.pre_exec(join);
    }
}

/// What `Command::uid` and `gid` do, done after the cgroup is joined: no supplementary groups,
/// then the group, then the user.
#[allow(unsafe_code)]
fn drop_to(uid: u32, gid: u32) -> std::io::Result<()> {
    // SAFETY: plain system calls on integers; a null list with length 0 is what setgroups takes
    // to clear the supplementary groups.
    let failed = unsafe {
        libc::setgroups(0, std::ptr::null()) != 0
            || libc::setgid(gid) != 0
            || libc::setuid(uid) != 0
    };
    if failed {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// SIGTERM to the group, then SIGKILL after the grace period if its leader is still there.
async fn kill_group(pgid: Option<Pid>, child: &mut tokio::process::Child) {
    let Some(pgid) = pgid else { return };
    let _ = rustix::process::kill_process_group(pgid, Signal::Term);
    if tokio::time::timeout(KILL_GRACE, child.wait())
        .await
        .is_err()
    {
        let _ = rustix::process::kill_process_group(pgid, Signal::Kill);
    }
}

/// SIGKILL to the group until no process is left in it (a script forking in a loop gains
/// new members while the first signal is delivered).
async fn kill_rest(pgid: Pid) {
    for _ in 0..500 {
        if rustix::process::kill_process_group(pgid, Signal::Kill).is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tracing::warn!(
        pgid = pgid.as_raw_nonzero().get(),
        "processes of a task's group survived 5 s of SIGKILL"
    );
}

/// Copies output into the log until the end of output, keeping at most `max` bytes and one
/// line saying the rest was discarded. Returns the bytes the log holds.
fn copy_capped(
    mut from: std::io::PipeReader,
    mut to: fs::File,
    max: u64,
    written: &AtomicU64,
) -> u64 {
    let mut buf = vec![0u8; 64 * 1024];
    let mut held: u64 = 0;
    let mut truncated = false;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        if truncated {
            continue;
        }
        let room = max.saturating_sub(held);
        let take = n.min(usize::try_from(room).unwrap_or(usize::MAX));
        if to.write_all(&buf[..take]).is_err() {
            truncated = true;
            continue;
        }
        held += take as u64;
        if take < n {
            let note = format!(
                "\n[tasknode] log truncated at {max} bytes; further output was discarded\n"
            );
            if to.write_all(note.as_bytes()).is_ok() {
                held += note.len() as u64;
            }
            truncated = true;
        }
        written.store(held, Ordering::SeqCst);
    }
    let _ = to.sync_all();
    written.store(held, Ordering::SeqCst);
    held
}

//! Tasks beside the store: the task logs agents push (one file per task in DATA/task-logs),
//! and the sweep that takes tasks back from servers that stopped. Which polls a change wakes
//! is `dispatch.rs`.

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tasknode_protocol::wire::ServerStatus;

use crate::clock::Clock;
use crate::liveness::LivenessMap;
use crate::status::{self, Thresholds};
use crate::store::Store;

pub use crate::dispatch::Dispatch;

/// How much task log VPC servers may push to the console (`serve --max-task-log`,
/// `--max-server-logs`).
#[derive(Debug, Clone, Copy)]
pub struct LogLimits {
    /// Largest log of one task.
    pub per_task: u64,
    /// Most log of one server, all its tasks together.
    pub per_server: u64,
}

impl Default for LogLimits {
    /// By default 1 GiB per task and 50 GiB per server.
    fn default() -> LogLimits {
        LogLimits {
            per_task: 1 << 30,
            per_server: 50 << 30,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("the console holds {size} bytes of this log; send from offset {size}")]
    Gap { size: u64 },
    #[error(
        "this task's log would pass the console's limit of {limit} bytes per task (serve --max-task-log); the rest stays on the server"
    )]
    TaskFull { limit: u64 },
    #[error(
        "this server's task logs on the console would pass its limit of {limit} bytes per server (serve --max-server-logs); delete groups whose old tasks are no longer needed, or raise the limit"
    )]
    ServerFull { limit: u64 },
    #[error("task log {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The task logs agents push, one file per task. Appends are serialized.
#[derive(Debug)]
pub struct TaskLogs {
    dir: PathBuf,
    limits: LogLimits,
    /// Bytes held per server (by id), for the servers that pushed since the console started;
    /// under the write lock.
    write: Mutex<HashMap<i64, u64>>,
}

impl TaskLogs {
    pub fn open(dir: &Path, limits: LogLimits) -> std::io::Result<TaskLogs> {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        Ok(TaskLogs {
            dir: dir.to_owned(),
            limits,
            write: Mutex::new(HashMap::new()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<i64, u64>> {
        self.write.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn path(&self, id: i64) -> PathBuf {
        self.dir.join(format!("{id}.log"))
    }

    fn io(&self, id: i64) -> impl FnOnce(std::io::Error) -> LogError {
        let path = self.path(id);
        move |source| LogError::Io { path, source }
    }

    /// Bytes of the log of task `id` held (0 when none).
    pub fn size(&self, id: i64) -> Result<u64, LogError> {
        match fs::metadata(self.path(id)) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(self.io(id)(e)),
        }
    }

    /// Whether the bytes held for `server` are counted already; if not, pass the ids of its
    /// tasks to [`TaskLogs::append`].
    pub fn counts_server(&self, server: i64) -> bool {
        self.lock().contains_key(&server)
    }

    /// Adds `bytes`, which start at `offset` of the agent's log of task `id`, which runs on
    /// `server` (whose tasks are `server_tasks`, when its bytes are not counted yet). Bytes
    /// the console already holds (a resend after a lost answer) are skipped; a gap is refused;
    /// of a push that crosses a limit what fits is kept, and a push with no room left is
    /// refused. Returns the size.
    pub fn append(
        &self,
        id: i64,
        server: i64,
        server_tasks: Option<&[i64]>,
        offset: u64,
        bytes: &[u8],
    ) -> Result<u64, LogError> {
        let mut held = self.lock();
        if let (false, Some(ids)) = (held.contains_key(&server), server_tasks) {
            let mut total = 0u64;
            for &t in ids {
                total = total.saturating_add(self.size(t)?);
            }
            held.insert(server, total);
        }
        let size = self.size(id)?;
        if offset > size {
            return Err(LogError::Gap { size });
        }
        let skip = usize::try_from(size - offset).unwrap_or(usize::MAX);
        let Some(new) = bytes.get(skip..).filter(|b| !b.is_empty()) else {
            return Ok(size);
        };
        // What fits under both limits is kept; a push with no room left at all is refused, so
        // the console holds the head of a long log and the agent learns where it stopped.
        let task_room = self.limits.per_task.saturating_sub(size);
        if task_room == 0 {
            return Err(LogError::TaskFull {
                limit: self.limits.per_task,
            });
        }
        let server_total = held.get(&server).copied().unwrap_or(size);
        let server_room = self.limits.per_server.saturating_sub(server_total);
        if server_room == 0 {
            return Err(LogError::ServerFull {
                limit: self.limits.per_server,
            });
        }
        let room = usize::try_from(task_room.min(server_room)).unwrap_or(usize::MAX);
        let new = &new[..new.len().min(room)];
        let added = new.len() as u64;
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path(id))
            .map_err(self.io(id))?;
        // The answer tells the agent these bytes are kept: they reach the disk first (and a new
        // file's name with them).
        f.write_all(new)
            .and_then(|()| f.sync_data())
            .map_err(self.io(id))?;
        if size == 0 {
            fs::File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(self.io(id))?;
        }
        held.insert(server, server_total + added);
        Ok(size + added)
    }

    /// Removes the log of task `id` (a deleted task's); a log never written is no error.
    pub fn remove(&self, id: i64) -> Result<(), LogError> {
        let mut held = self.lock();
        // Which server held it is not known here: count every server again on its next push.
        held.clear();
        match fs::remove_file(self.path(id)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(self.io(id)(e)),
            _ => Ok(()),
        }
    }

    /// Up to `max` bytes from `offset`, and the size of the log.
    pub fn read(&self, id: i64, offset: u64, max: usize) -> Result<(Vec<u8>, u64), LogError> {
        let path = self.path(id);
        let mut f = match fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
            Err(e) => return Err(self.io(id)(e)),
        };
        let size = f.metadata().map_err(self.io(id))?.len();
        if offset >= size {
            return Ok((Vec::new(), size));
        }
        f.seek(SeekFrom::Start(offset)).map_err(self.io(id))?;
        let mut buf = Vec::new();
        f.take(max as u64)
            .read_to_end(&mut buf)
            .map_err(self.io(id))?;
        Ok((buf, size))
    }
}

/// Every `every`, takes the tasks of stopped servers back: assigned ones are queued again,
/// running ones reported lost (never run again). Of several consoles on one database, only
/// the one holding `lease` does.
pub async fn sweep_periodically(
    store: Arc<dyn Store>,
    live: Arc<LivenessMap>,
    lease: Arc<crate::lease::Lease>,
    clock: Clock,
    thresholds: Thresholds,
    every: Duration,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !lease.held() {
            continue;
        }
        let fence = lease.fence();
        if let Err(e) = sweep(store.as_ref(), &live, &clock, &thresholds, &fence).await {
            tracing::warn!(error = %e, "checking the servers of running tasks failed; will retry");
        }
    }
}

async fn sweep(
    store: &dyn Store,
    live: &LivenessMap,
    clock: &Clock,
    thresholds: &Thresholds,
    fence: &crate::store::Fence,
) -> Result<(), crate::store::StoreError> {
    let busy = store.busy_servers().await?;
    if busy.is_empty() {
        return Ok(());
    }
    // Only the busy servers: at 100,000 servers, listing them all every few seconds (and
    // copying every node's liveness) held the store while tasks ran.
    let servers = store.servers_by_id(&busy).await?;
    let now = clock.now_ms();
    for s in &servers {
        let l = s
            .enrollment
            .as_ref()
            .and_then(|e| live.get(&e.node_id))
            .unwrap_or_else(|| s.liveness.clone());
        let (st, reason) = status::derive(s, &l, now, thresholds);
        if st != ServerStatus::Stopped {
            continue;
        }
        let why = format!("server {} stopped ({reason})", s.name);
        let r = store
            .abandon_server_tasks(s.id, &why, now, Some(fence))
            .await?;
        if !r.requeued.is_empty() || !r.lost.is_empty() {
            // The store wakes the polls of the requeued tasks' group.
            tracing::warn!(server = %s.name, requeued = ?r.requeued, lost = ?r.lost, "took tasks back from a stopped server");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_skip_what_is_held_and_refuse_gaps() {
        let dir = tempfile::tempdir().unwrap();
        let logs = TaskLogs::open(&dir.path().join("logs"), LogLimits::default()).unwrap();
        assert_eq!(logs.size(7).unwrap(), 0);
        assert_eq!(logs.append(7, 1, Some(&[7]), 0, b"hello ").unwrap(), 6);
        // A resend of bytes already held, with one new byte.
        assert_eq!(logs.append(7, 1, None, 3, b"lo w").unwrap(), 7);
        assert!(matches!(
            logs.append(7, 1, None, 9, b"x"),
            Err(LogError::Gap { size: 7 })
        ));
        assert_eq!(logs.append(7, 1, None, 7, b"orld").unwrap(), 11);
        let (bytes, size) = logs.read(7, 6, 100).unwrap();
        assert_eq!((bytes.as_slice(), size), (&b"world"[..], 11));
        let (bytes, _) = logs.read(7, 0, 3).unwrap();
        assert_eq!(bytes, b"hel");
        assert_eq!(logs.read(7, 50, 3).unwrap(), (Vec::new(), 11));
        assert_eq!(logs.read(8, 0, 3).unwrap(), (Vec::new(), 0));

        // A deleted task's log goes; a log never written is no error.
        logs.remove(7).unwrap();
        logs.remove(8).unwrap();
        assert_eq!(logs.size(7).unwrap(), 0);
        assert_eq!(
            std::fs::read_dir(dir.path().join("logs")).unwrap().count(),
            0
        );
    }

    #[test]
    fn logs_stop_at_the_limits_per_task_and_per_server() {
        let dir = tempfile::tempdir().unwrap();
        let limits = LogLimits {
            per_task: 10,
            per_server: 15,
        };
        let logs = TaskLogs::open(&dir.path().join("logs"), limits).unwrap();
        assert_eq!(
            logs.append(1, 9, Some(&[1, 2]), 0, b"0123456789").unwrap(),
            10
        );
        assert!(matches!(
            logs.append(1, 9, None, 10, b"x"),
            Err(LogError::TaskFull { limit: 10 })
        ));
        assert_eq!(logs.append(2, 9, None, 0, b"01234").unwrap(), 5);
        let full = logs.append(2, 9, None, 5, b"5").unwrap_err();
        assert!(matches!(full, LogError::ServerFull { limit: 15 }));
        assert!(full.to_string().contains("--max-server-logs"), "{full}");
        // Another server is not held back, and nothing refused was written.
        assert_eq!(logs.append(3, 8, Some(&[3]), 0, b"abc").unwrap(), 3);
        // A push that crosses the limit keeps what fits.
        assert_eq!(
            logs.append(4, 7, Some(&[4]), 0, b"0123456789AB").unwrap(),
            10
        );
        assert_eq!(
            fs::read(dir.path().join("logs/4.log")).unwrap(),
            b"0123456789"
        );
        assert_eq!(logs.size(1).unwrap() + logs.size(2).unwrap(), 15);

        // A console started again counts what the server's tasks hold from their files.
        let again = TaskLogs::open(&dir.path().join("logs"), limits).unwrap();
        assert!(!again.counts_server(9));
        assert!(matches!(
            again.append(2, 9, Some(&[1, 2]), 5, b"5"),
            Err(LogError::ServerFull { .. })
        ));
        assert!(again.counts_server(9));
    }
}

//! Task logs in the embedded store: one file per task in `task-logs/` beside the database
//! (`DATA/task-logs/ID.log`, 0600 in a 0700 directory). One console owns the database, so the
//! bytes each server holds are counted in memory, once per server from its tasks' files, and
//! appends are serialized.

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use bytes::Bytes;

use super::SqliteStore;
use crate::store::logs::{Appended, LogLimits, Plan, TaskLogStore, plan};
use crate::store::{StoreError, TaskStore};

/// An I/O error on one task's log file, as a [`StoreError`]'s source.
#[derive(Debug, thiserror::Error)]
#[error("task log {path}: {source}")]
struct FileError {
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

/// The files, and the bytes held per server (by id) for the servers that pushed since the
/// console started, under the write lock.
#[derive(Debug)]
pub(super) struct FileLogs {
    dir: PathBuf,
    write: Mutex<HashMap<i64, u64>>,
}

impl FileLogs {
    /// The logs of the database at `db`; the directory is made on the first push.
    pub(super) fn beside(db: &Path) -> FileLogs {
        let parent = db.parent().unwrap_or(Path::new("."));
        FileLogs {
            dir: parent.join("task-logs"),
            write: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<i64, u64>> {
        self.write.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn path(&self, id: i64) -> PathBuf {
        self.dir.join(format!("{id}.log"))
    }

    fn io(&self, id: i64, op: &'static str) -> impl FnOnce(std::io::Error) -> StoreError {
        let path = self.path(id);
        move |source| StoreError::Database {
            op,
            source: Box::new(FileError { path, source }),
        }
    }

    fn size(&self, id: i64) -> Result<u64, StoreError> {
        match fs::metadata(self.path(id)) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(self.io(id, "reading a task log's size")(e)),
        }
    }

    fn counts(&self, server: i64) -> bool {
        self.lock().contains_key(&server)
    }

    /// [`TaskLogStore::append_log`]; `server_tasks` are the ids of the server's tasks when its
    /// bytes are not counted yet.
    fn append(
        &self,
        id: i64,
        server: i64,
        server_tasks: Option<&[i64]>,
        offset: u64,
        bytes: &[u8],
        limits: LogLimits,
    ) -> Result<Appended, StoreError> {
        let mut held = self.lock();
        if let (false, Some(ids)) = (held.contains_key(&server), server_tasks) {
            let mut total = 0u64;
            for &t in ids {
                total = total.saturating_add(self.size(t)?);
            }
            held.insert(server, total);
        }
        let size = self.size(id)?;
        let server_total = held.get(&server).copied().unwrap_or(size);
        let (skip, take) = match plan(size, offset, bytes.len(), server_total, limits) {
            Plan::Answer(a) => return Ok(a),
            Plan::Keep { skip, take } => (skip, take),
        };
        let new = &bytes[skip..skip + take];
        let write = self.io(id, "writing a task log");
        if size == 0 {
            use std::os::unix::fs::DirBuilderExt;
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&self.dir)
                .map_err(self.io(id, "making the task log directory"))?;
        }
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(self.path(id))
            .map_err(self.io(id, "opening a task log"))?;
        // The answer tells the agent these bytes are kept: they reach the disk first (and a new
        // file's name with them).
        f.write_all(new)
            .and_then(|()| f.sync_data())
            .map_err(write)?;
        if size == 0 {
            fs::File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(self.io(id, "syncing the task log directory"))?;
        }
        held.insert(server, server_total + take as u64);
        Ok(Appended::Size(size + take as u64))
    }

    fn remove(&self, ids: &[i64]) -> Result<(), StoreError> {
        let mut held = self.lock();
        // Which server held them is not known here: count every server again on its next push.
        held.clear();
        // Every file is tried; the first failure is told.
        let mut first = Ok(());
        for &id in ids {
            match fs::remove_file(self.path(id)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound && first.is_ok() => {
                    first = Err(self.io(id, "removing a task log")(e));
                }
                _ => {}
            }
        }
        first
    }

    fn read(&self, id: i64, offset: u64, max: usize) -> Result<(Vec<u8>, u64), StoreError> {
        let err = |op| self.io(id, op);
        let mut f = match fs::File::open(self.path(id)) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
            Err(e) => return Err(err("opening a task log")(e)),
        };
        let size = f.metadata().map_err(err("reading a task log"))?.len();
        if offset >= size {
            return Ok((Vec::new(), size));
        }
        f.seek(SeekFrom::Start(offset))
            .map_err(err("reading a task log"))?;
        let mut buf = Vec::new();
        f.take(max as u64)
            .read_to_end(&mut buf)
            .map_err(err("reading a task log"))?;
        Ok((buf, size))
    }
}

/// Runs `f` with the logs on the blocking pool (file I/O and fsync).
async fn on_files<T: Send + 'static>(
    logs: &Arc<FileLogs>,
    f: impl FnOnce(&FileLogs) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let logs = Arc::clone(logs);
    tokio::task::spawn_blocking(move || f(&logs))
        .await
        .map_err(|e| StoreError::Worker(e.to_string()))?
}

#[async_trait]
impl TaskLogStore for SqliteStore {
    async fn log_sizes(&self, tasks: &[i64]) -> Result<HashMap<i64, u64>, StoreError> {
        let tasks = tasks.to_vec();
        on_files(&self.logs, move |l| {
            let mut sizes = HashMap::new();
            for id in tasks {
                match l.size(id)? {
                    0 => {}
                    n => {
                        sizes.insert(id, n);
                    }
                }
            }
            Ok(sizes)
        })
        .await
    }

    async fn append_log(
        &self,
        task: i64,
        server: i64,
        offset: u64,
        bytes: Bytes,
        limits: LogLimits,
    ) -> Result<Appended, StoreError> {
        // The first push of a server since the console started counts what its tasks hold.
        let server_tasks = if self.logs.counts(server) {
            None
        } else {
            Some(self.server_task_ids(server).await?)
        };
        on_files(&self.logs, move |l| {
            l.append(
                task,
                server,
                server_tasks.as_deref(),
                offset,
                &bytes,
                limits,
            )
        })
        .await
    }

    async fn read_log(
        &self,
        task: i64,
        offset: u64,
        max: usize,
    ) -> Result<(Vec<u8>, u64), StoreError> {
        on_files(&self.logs, move |l| l.read(task, offset, max)).await
    }

    async fn remove_logs(&self, tasks: &[i64]) -> Result<(), StoreError> {
        let tasks = tasks.to_vec();
        on_files(&self.logs, move |l| l.remove(&tasks)).await
    }
}

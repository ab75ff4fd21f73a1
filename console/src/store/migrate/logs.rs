//! The task logs VPC servers pushed: one file per task in `task-logs/` beside the SQLite
//! database, rows in PostgreSQL (`task_logs`, `task_log_chunks`; see `store/logs.rs`). The log
//! of every task that is copied moves in the migration's transaction, and is checked like a
//! table: how many logs, and a SHA-256 over each log's task id, size and bytes in task id
//! order, read back from both sides. Files that are not the log of a copied task (a deleted
//! task's, anything else) stay where they are and are counted.

use std::collections::BTreeSet;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use rusqlite::Connection;
use sha2::{Digest, Sha256};
use tokio_postgres::Transaction;

use super::{MigrateError, Phase, Progress, TableCheck, lite, pg};
use tasknode_protocol::tasks::MAX_LOG_CHUNK_BYTES;

/// The PostgreSQL tables the logs go to; the SQLite database has none of them.
pub const TABLES: &[&str] = &["task_logs", "task_log_chunks"];

/// The logs found: (task id, file) of copied tasks in id order, and how many files were left.
pub(super) struct Found {
    logs: Vec<(i64, PathBuf)>,
    pub(super) left: u64,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> MigrateError {
    let path = path.to_owned();
    move |source| MigrateError::Io { path, source }
}

/// The log files in `dir` (none when it is missing) of the tasks in the SQLite snapshot.
pub(super) fn find(lite_tx: &Connection, dir: &Path) -> Result<Found, MigrateError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Found {
                logs: Vec::new(),
                left: 0,
            });
        }
        Err(e) => return Err(io(dir)(e)),
    };
    let tasks: BTreeSet<i64> = lite_tx
        .prepare("SELECT id FROM tasks")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .map_err(lite("listing the tasks whose logs move"))?;
    let (mut logs, mut left) = (Vec::new(), 0);
    for entry in entries {
        let entry = entry.map_err(io(dir))?;
        // Regular files only: the type of the entry itself, never what a link points to.
        let is_file = entry.file_type().map_err(io(&entry.path()))?.is_file();
        let id = entry
            .file_name()
            .to_str()
            .and_then(|n| n.strip_suffix(".log"))
            .and_then(|n| n.parse::<i64>().ok());
        match id {
            Some(id) if is_file && tasks.contains(&id) => logs.push((id, entry.path())),
            _ => left += 1,
        }
    }
    logs.sort();
    Ok(Found { logs, left })
}

/// Copies the logs into the transaction, a chunk of at most one push at a time.
pub(super) async fn copy(
    tx: &Transaction<'_>,
    found: &Found,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<(), MigrateError> {
    let total = found.logs.len() as u64;
    let mut buf = vec![0u8; MAX_LOG_CHUNK_BYTES];
    for (done, (id, path)) in found.logs.iter().enumerate() {
        let mut f = open_log(path).map_err(io(path))?;
        let mut size = 0i64;
        tx.execute(
            "INSERT INTO task_logs (task_id, size) VALUES ($1, 0)",
            &[id],
        )
        .await
        .map_err(pg(format!("copying the log of task {id}")))?;
        loop {
            let n = read_full(&mut f, &mut buf).map_err(io(path))?;
            if n == 0 {
                break;
            }
            tx.execute(
                "INSERT INTO task_log_chunks (task_id, start, data) VALUES ($1, $2, $3)",
                &[id, &size, &&buf[..n]],
            )
            .await
            .map_err(pg(format!("copying the log of task {id}")))?;
            size += i64::try_from(n).unwrap_or(i64::MAX);
        }
        tx.execute(
            "UPDATE task_logs SET size = $2 WHERE task_id = $1",
            &[id, &size],
        )
        .await
        .map_err(pg(format!("copying the log of task {id}")))?;
        progress(Progress {
            phase: Phase::Copying,
            table: "task_logs",
            done: done as u64 + 1,
            total,
        });
    }
    Ok(())
}

/// Opens a log file without following a link: the directory is the console user's, and
/// `migrate` may run as root, so a file swapped for a link after it was listed must not make
/// it copy what the link points to into the database.
fn open_log(path: &Path) -> std::io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
}

/// Fills `buf` from `f` unless the file ends first; the bytes read.
fn read_full(f: &mut fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// One log's part of the checksum.
fn record(sum: &mut Sha256, id: i64, size: u64, content: [u8; 32]) {
    sum.update(id.to_le_bytes());
    sum.update(size.to_le_bytes());
    sum.update(content);
}

/// The logs' check: the files read again beside the rows read back from the transaction.
pub(super) async fn check(tx: &Transaction<'_>, found: &Found) -> Result<TableCheck, MigrateError> {
    let mut files = Sha256::new();
    for (id, path) in &found.logs {
        let mut f = open_log(path).map_err(io(path))?;
        let mut content = Sha256::new();
        let size = std::io::copy(&mut f, &mut content).map_err(io(path))?;
        record(&mut files, *id, size, content.finalize().into());
    }
    let op = || pg("reading the copied task logs back");
    let rows = tx
        .query("SELECT task_id, size FROM task_logs ORDER BY task_id", &[])
        .await
        .map_err(op())?;
    let mut copied = Sha256::new();
    for r in &rows {
        let id: i64 = r.try_get(0).map_err(op())?;
        let chunks = tx
            .query(
                "SELECT data FROM task_log_chunks WHERE task_id = $1 ORDER BY start",
                &[&id],
            )
            .await
            .map_err(op())?;
        let mut content = Sha256::new();
        let mut size = 0u64;
        for c in &chunks {
            let data: &[u8] = c.try_get(0).map_err(op())?;
            content.update(data);
            size += data.len() as u64;
        }
        // The size the row says must be what its chunks hold.
        let said: i64 = r.try_get(1).map_err(op())?;
        let size = if u64::try_from(said).ok() == Some(size) {
            size
        } else {
            u64::MAX
        };
        record(&mut copied, id, size, content.finalize().into());
    }
    Ok(TableCheck {
        table: "task_logs",
        sqlite_rows: found.logs.len() as u64,
        postgres_rows: rows.len() as u64,
        sqlite_sha256: hex::encode(files.finalize()),
        postgres_sha256: hex::encode(copied.finalize()),
    })
}

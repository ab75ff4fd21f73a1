//! The embedded store: one SQLite database in the data directory, in WAL mode with
//! `synchronous=FULL` (a commit is on disk when it returns), migrated by version
//! (`PRAGMA user_version`). Calls run on tokio's blocking pool, one at a time. This file holds
//! the connection and the migrations; each domain's queries are in the file of its name.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, Row, params};
use tasknode_protocol::NetworkType;

use super::wakes::WakeHub;
use super::{Enrollment, HealthStore, Liveness, Server, Stop, StoreError, WakeFeed, WakeStore};

/// Schema migrations, applied in order; a migration's number is the schema version it makes.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("migrations/0001_init.sql")),
    (2, include_str!("migrations/0002_enrollment_tokens.sql")),
    (3, include_str!("migrations/0003_tasks.sql")),
    (4, include_str!("migrations/0004_releases.sql")),
    (5, include_str!("migrations/0005_task_ids.sql")),
    (
        6,
        include_str!("migrations/0006_server_names_per_project.sql"),
    ),
    (7, include_str!("migrations/0007_sessions_secrets.sql")),
    (8, include_str!("migrations/0008_leases.sql")),
    (9, include_str!("migrations/0009_server_removal.sql")),
    (10, include_str!("migrations/0010_audit_log.sql")),
    (11, include_str!("migrations/0011_task_idempotency.sql")),
];

mod access;
mod audit;
mod leases;
mod liveness;
mod logs;
mod look;
mod projects;
mod releases;
mod removal;
mod secrets;
mod servers;
mod tasks;

pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    /// Wake-ups stay in this process: one console owns the file.
    wakes: WakeHub,
    /// Task logs, as files beside the database.
    logs: Arc<logs::FileLogs>,
}

impl WakeStore for SqliteStore {
    fn wakes(&self) -> WakeFeed {
        WakeFeed {
            rx: self.wakes.subscribe(),
            pass_on: None,
        }
    }
}

#[async_trait::async_trait]
impl HealthStore for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.call(|conn| {
            conn.query_row("SELECT 1", [], |_| Ok(()))
                .map_err(sql("answering a health check"))
        })
        .await
    }
}

fn sql(op: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |source| StoreError::Database {
        op,
        source: Box::new(source),
    }
}

fn opening(path: &Path, source: rusqlite::Error) -> StoreError {
    StoreError::Open {
        database: path.display().to_string(),
        source: Box::new(source),
    }
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _)
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
    )
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let open_err = |source| opening(path, source);
        // Refused before anything is created when the directory is open to others.
        secrets::make_private(path)?;
        let mut conn = Connection::open(path).map_err(open_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        // FULL: every commit reaches the disk before the call returns, so an answered write
        // (a task submitted, a token spent, a start accepted) survives a power loss. Heartbeats
        // stay off this path: they are held in memory and written in batches.
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(open_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(open_err)?;
        migrate(&mut conn, path)?;
        secrets::make_private(path)?;
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
            wakes: WakeHub::default(),
            logs: Arc::new(logs::FileLogs::beside(path)),
        })
    }

    /// Runs `f` with the connection on the blocking pool.
    async fn call<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            let mut guard = conn
                .lock()
                .map_err(|_| StoreError::Worker("a database call panicked".into()))?;
            f(&mut guard)
        })
        .await
        .map_err(|e| StoreError::Worker(e.to_string()))?
    }
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let known = MIGRATIONS.last().map_or(0, |m| m.0);
    let found: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(|source| opening(path, source))?;
    if found > known {
        return Err(StoreError::TooNew {
            database: path.display().to_string(),
            found,
            known,
        });
    }
    // A migration that copies a table others reference (0006) needs foreign keys off while it
    // runs (SQLite's recipe for changing a table); each one checks them before it commits.
    let fk_err = |source| opening(path, source);
    conn.pragma_update(None, "foreign_keys", "OFF")
        .map_err(fk_err)?;
    for &(version, script) in MIGRATIONS.iter().filter(|m| m.0 > found) {
        let err = |source: rusqlite::Error| StoreError::Migrate {
            version,
            source: Box::new(source),
        };
        let tx = conn.transaction().map_err(err)?;
        tx.execute_batch(script).map_err(err)?;
        let dangling: Option<String> = tx
            .query_row("PRAGMA foreign_key_check", [], |r| r.get(0))
            .optional()
            .map_err(err)?;
        if let Some(table) = dangling {
            return Err(err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY),
                Some(format!("a row of table {table} refers to a missing row")),
            )));
        }
        tx.pragma_update(None, "user_version", version)
            .map_err(err)?;
        tx.commit().map_err(err)?;
    }
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(fk_err)?;
    Ok(())
}

fn project_id(conn: &Connection, project: &str) -> Result<i64, StoreError> {
    conn.query_row("SELECT id FROM projects WHERE name = ?1", [project], |r| {
        r.get(0)
    })
    .optional()
    .map_err(sql("looking up a project"))?
    .ok_or_else(|| StoreError::NotFound {
        kind: "project",
        name: project.to_owned(),
    })
}

/// The id and network of group `group` of `project`, or `NotFound` naming what is missing.
fn group_of(conn: &Connection, project: &str, group: &str) -> Result<(i64, String), StoreError> {
    let pid = project_id(conn, project)?;
    conn.query_row(
        "SELECT id, network FROM resource_groups WHERE project_id = ?1 AND name = ?2",
        params![pid, group],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()
    .map_err(sql("looking up a resource group"))?
    .ok_or_else(|| StoreError::NotFound {
        kind: "resource group",
        name: group.to_owned(),
    })
}

fn parse_network(s: &str) -> NetworkType {
    // The CHECK constraint admits only these two.
    if s == "vpc" {
        NetworkType::Vpc
    } else {
        NetworkType::Classic
    }
}

const SERVER_COLUMNS: &str = "s.id, s.name, g.name, p.name, g.network, s.max_concurrency, s.created_ms,
     s.node_id, s.secret_sha256, s.enrolled_ms, s.cpu_cores, s.memory_bytes,
     s.agent_version, s.last_heartbeat_ms, s.clock_offset_ms, s.running_tasks, s.stopped_ms, s.stop_reason, g.id,
     s.draining_ms
     FROM servers s JOIN resource_groups g ON g.id = s.group_id JOIN projects p ON p.id = g.project_id";

fn server_from_row(r: &Row<'_>) -> rusqlite::Result<Server> {
    let network: String = r.get(4)?;
    let node_id: Option<String> = r.get(7)?;
    let enrollment = match node_id {
        Some(node_id) => Some(Enrollment {
            node_id,
            secret_sha256: r.get::<_, Option<String>>(8)?.unwrap_or_default(),
            enrolled_ms: r.get::<_, Option<i64>>(9)?.unwrap_or_default(),
            cpu_cores: r.get::<_, Option<f64>>(10)?.unwrap_or_default(),
            memory_bytes: r.get::<_, Option<i64>>(11)?.unwrap_or_default().max(0) as u64,
        }),
        None => None,
    };
    let stopped = match r.get::<_, Option<i64>>(16)? {
        Some(at_ms) => Some(Stop {
            at_ms,
            reason: r.get::<_, Option<String>>(17)?.unwrap_or_default(),
        }),
        None => None,
    };
    Ok(Server {
        id: r.get(0)?,
        name: r.get(1)?,
        group: r.get(2)?,
        group_id: r.get(18)?,
        project: r.get(3)?,
        network: parse_network(&network),
        max_concurrency: r.get(5)?,
        created_ms: r.get(6)?,
        enrollment,
        liveness: Liveness {
            agent_version: r.get(12)?,
            last_heartbeat_ms: r.get(13)?,
            clock_offset_ms: r.get(14)?,
            running_tasks: r.get(15)?,
            stopped,
            log_addr: None,
        },
        draining_ms: r.get(19)?,
    })
}

/// One server with its group and project, by its node id.
fn server_by_node(conn: &Connection, node_id: &str) -> Result<Option<Server>, StoreError> {
    conn.query_row(
        &format!("SELECT {SERVER_COLUMNS} WHERE s.node_id = ?1"),
        [node_id],
        server_from_row,
    )
    .optional()
    .map_err(sql("looking up a node"))
}

/// One server of `project` by name. Names are unique within a project; other projects may
/// have pending servers of the same name, which this never returns.
fn server_named(
    conn: &Connection,
    project: &str,
    name: &str,
) -> Result<Option<Server>, StoreError> {
    // By the servers' own (project_id, name) key: joined through the group, SQLite walks every
    // server of the group, which made each enrollment cost the group's size.
    conn.query_row(
        &format!(
            "SELECT {SERVER_COLUMNS}
             WHERE s.project_id = (SELECT id FROM projects WHERE name = ?1) AND s.name = ?2"
        ),
        [project, name],
        server_from_row,
    )
    .optional()
    .map_err(sql("looking up a server"))
}

#[cfg(test)]
mod tests;

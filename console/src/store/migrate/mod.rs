//! Moving a console's state from its SQLite database into PostgreSQL (`tasknode-console
//! migrate --to`). Every table of the schema is copied with its ids, in one PostgreSQL
//! transaction that first locks the tables and checks the target holds no state yet; the
//! identity sequences are then set past the highest ids ever given out (SQLite's
//! `sqlite_sequence` included, so a task id whose log file may still exist is never handed out
//! again). Before the commit, each table's rows are read back from both databases in key order,
//! rendered canonically and hashed (SHA-256); any difference in a count or a checksum rolls the
//! whole copy back.
//!
//! The copy works at the SQL level, table by table, from [`TABLES`] (a test checks it names
//! every table of both schemas). Columns are read from both schemas and must match by name; each
//! value is converted strictly to the PostgreSQL column's type (a value SQLite's loose typing let
//! in that PostgreSQL would change is an error naming the table, column and row, never a silent
//! conversion).

use std::path::Path;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};
use tokio_postgres::Transaction;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};

use super::{PostgresStore, SqliteStore, StoreError};

mod logs;
mod values;

pub use logs::TABLES as LOG_TABLES;

use values::{Checksum, Kind, Value, from_postgres, from_sqlite, param};

/// A table that moves, with the columns of its primary key (the order rows are compared in).
#[derive(Debug, Clone, Copy)]
pub struct Table {
    pub name: &'static str,
    pub key: &'static [&'static str],
}

/// Every table of the schema, in an order that inserts rows before the rows that refer to them.
pub const TABLES: &[Table] = &[
    table("projects", &["id"]),
    table("users", &["id"]),
    table("resource_groups", &["id"]),
    table("servers", &["id"]),
    table("enrollment_tokens", &["id"]),
    table("tasks", &["id"]),
    table("releases", &["version"]),
    table("rollouts", &["group_id"]),
    table("rollout_members", &["group_id", "server_id"]),
    table("update_reports", &["server_id"]),
    table("web_sessions", &["token_sha256"]),
    table("console_secrets", &["name"]),
    table("removed_nodes", &["node_id"]),
    table("audit_log", &["id"]),
];

const fn table(name: &'static str, key: &'static [&'static str]) -> Table {
    Table { name, key }
}

/// Tables of the schemas that are not state: the store's own bookkeeping, and the leases of
/// the console's singletons (held by the running consoles; a stopped console holds none that
/// matters, and the consoles on PostgreSQL take them afresh).
pub const NOT_MOVED: &[&str] = &[
    "schema_version",
    "leases",
    "node_changes",
    "node_changes_pruned",
];

/// Columns only the PostgreSQL schema has: bookkeeping of the consoles sharing it, which a
/// migrated row takes from the column's default.
pub const POSTGRES_ONLY: &[(&str, &str)] = &[("servers", "log_addr")];

/// Rows a progress report is given after, at most.
const PROGRESS_EVERY: u64 = 5_000;

/// Rows read from PostgreSQL at a time.
const FETCH: i32 = 5_000;

/// What a migration is doing, for progress reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Copying,
    Checking,
}

/// A progress report: `done` of `total` rows of `table`.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub phase: Phase,
    pub table: &'static str,
    pub done: u64,
    pub total: u64,
}

/// One table's rows and checksum in both databases.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TableCheck {
    pub table: &'static str,
    pub sqlite_rows: u64,
    pub postgres_rows: u64,
    pub sqlite_sha256: String,
    pub postgres_sha256: String,
}

impl TableCheck {
    pub fn same(&self) -> bool {
        self.sqlite_rows == self.postgres_rows && self.sqlite_sha256 == self.postgres_sha256
    }
}

/// Where an identity sequence was set: the next id it hands out.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NextId {
    pub table: &'static str,
    pub next_id: i64,
}

/// What a migration found: every table's check (the pushed task logs' last), the sequences
/// it set, and how many files in `task-logs/` were not the log of a task and stayed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub tables: Vec<TableCheck>,
    pub next_ids: Vec<NextId>,
    pub log_files_left: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(
        "the PostgreSQL database already holds state ({}); nothing was changed: migrate into a new, empty database (`createdb`), which `migrate` fills before any console serves it",
        describe(found)
    )]
    NotEmpty { found: Vec<(&'static str, i64)> },
    #[error(
        "the copy differs from the SQLite database in table(s) {}; nothing was changed (rolled back)",
        tables.join(", ")
    )]
    Mismatch { tables: Vec<String>, report: Report },
    #[error(
        "table {table}, column {column}, row {row}: {message}; nothing was changed: correct the row in the SQLite database and migrate again"
    )]
    Value {
        table: &'static str,
        column: String,
        row: String,
        message: String,
    },
    #[error("the SQLite and PostgreSQL schemas differ: {0}; nothing was changed")]
    Schema(String),
    #[error("{op}: {source}")]
    Sqlite {
        op: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{op}: {source}")]
    Postgres {
        op: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("{path}: {source}; nothing was changed")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn describe(found: &[(&'static str, i64)]) -> String {
    found
        .iter()
        .map(|(t, n)| {
            if *t == "projects" {
                format!("{t}: {n} beside the default")
            } else {
                format!("{t}: {n} rows")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn lite(op: impl Into<String>) -> impl FnOnce(rusqlite::Error) -> MigrateError {
    let op = op.into();
    move |source| MigrateError::Sqlite { op, source }
}

fn pg(op: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> MigrateError {
    let op = op.into();
    move |source| MigrateError::Postgres { op, source }
}

/// Copies the SQLite database at `source` (first migrated to the newest schema) into `target`,
/// checks the copy and commits it; or changes nothing and says why.
pub async fn migrate(
    source: &Path,
    target: &PostgresStore,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<Report, MigrateError> {
    run(source, target, progress, None).await
}

/// [`migrate`], running `tamper` (SQL) in the transaction between the copy and the check: how
/// the tests show a damaged copy is caught.
async fn run(
    source: &Path,
    target: &PostgresStore,
    progress: &(dyn Fn(Progress) + Sync),
    tamper: Option<&str>,
) -> Result<Report, MigrateError> {
    drop(SqliteStore::open(source)?);
    let mut lite_conn = Connection::open_with_flags(
        source,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(lite(format!("opening {}", source.display())))?;
    // One read transaction: every table is read from the same snapshot.
    let snapshot = lite_conn
        .transaction()
        .map_err(lite("starting a read of the SQLite database"))?;
    let mut client = target.client().await?;
    let tx = client
        .transaction()
        .await
        .map_err(pg("starting a PostgreSQL transaction"))?;
    lock_and_check_empty(&tx).await?;
    let log_dir = source.parent().unwrap_or(Path::new(".")).join("task-logs");
    let found = logs::find(&snapshot, &log_dir)?;

    let mut columns = Vec::with_capacity(TABLES.len());
    for table in TABLES {
        columns.push(columns_of(&snapshot, &tx, table).await?);
    }
    tx.execute("DELETE FROM projects", &[])
        .await
        .map_err(pg("removing the target's empty default project"))?;
    for (table, cols) in TABLES.iter().zip(&columns) {
        copy_table(&snapshot, &tx, table, cols, progress).await?;
    }
    let next_ids = set_sequences(&snapshot, &tx, &columns).await?;
    logs::copy(&tx, &found, progress).await?;
    if let Some(sql) = tamper {
        tx.batch_execute(sql).await.map_err(pg("tampering"))?;
    }

    let mut tables = Vec::with_capacity(TABLES.len());
    for (table, cols) in TABLES.iter().zip(&columns) {
        let (sqlite_rows, sqlite_sha256) = sqlite_checksum(&snapshot, table, cols, progress)?;
        let (postgres_rows, postgres_sha256) = postgres_checksum(&tx, table, cols).await?;
        tables.push(TableCheck {
            table: table.name,
            sqlite_rows,
            postgres_rows,
            sqlite_sha256,
            postgres_sha256,
        });
    }
    tables.push(logs::check(&tx, &found).await?);
    let report = Report {
        tables,
        next_ids,
        log_files_left: found.left,
    };
    let differ: Vec<String> = report
        .tables
        .iter()
        .filter(|t| !t.same())
        .map(|t| t.table.to_owned())
        .collect();
    if !differ.is_empty() {
        // Dropping the transaction rolls it back.
        return Err(MigrateError::Mismatch {
            tables: differ,
            report,
        });
    }
    tx.commit()
        .await
        .map_err(pg("committing the copy to PostgreSQL"))?;
    Ok(report)
}

/// Locks every table against writers (a console already serving the database waits, then
/// finds the copy) and refuses a target with any state beside its empty default project.
async fn lock_and_check_empty(tx: &Transaction<'_>) -> Result<(), MigrateError> {
    tx.batch_execute("SET LOCAL lock_timeout = '10s'")
        .await
        .map_err(pg("setting a lock timeout"))?;
    let names: Vec<&str> = TABLES.iter().map(|t| t.name).collect();
    tx.batch_execute(&format!(
        "LOCK TABLE {} IN EXCLUSIVE MODE",
        names.join(", ")
    ))
    .await
    .map_err(pg(
        "locking the PostgreSQL tables (is a console using this database?)",
    ))?;
    let mut found = Vec::new();
    for table in TABLES {
        let filter = if table.name == "projects" {
            " WHERE name <> 'default'"
        } else {
            ""
        };
        let n: i64 = tx
            .query_one(&format!("SELECT count(*) FROM {}{filter}", table.name), &[])
            .await
            .map_err(pg(format!("counting the target's {}", table.name)))?
            .get(0);
        if n > 0 {
            found.push((table.name, n));
        }
    }
    if found.is_empty() {
        Ok(())
    } else {
        Err(MigrateError::NotEmpty { found })
    }
}

#[derive(Debug, Clone)]
struct Column {
    name: String,
    kind: Kind,
    identity: bool,
}

/// The table's columns in PostgreSQL's order, checked to be the SQLite table's too.
async fn columns_of(
    lite_tx: &Connection,
    tx: &Transaction<'_>,
    table: &Table,
) -> Result<Vec<Column>, MigrateError> {
    let rows = tx
        .query(
            "SELECT column_name::text, data_type::text, is_identity::text
             FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name = $1
             ORDER BY ordinal_position",
            &[&table.name],
        )
        .await
        .map_err(pg(format!("reading the columns of {}", table.name)))?;
    let mut cols = Vec::with_capacity(rows.len());
    for r in &rows {
        let name: String = r.get(0);
        let data_type: String = r.get(1);
        if POSTGRES_ONLY.contains(&(table.name, name.as_str())) {
            continue;
        }
        let kind = Kind::of(&data_type).ok_or_else(|| {
            MigrateError::Schema(format!(
                "column {}.{name} has PostgreSQL type {data_type}, which migrate does not know",
                table.name
            ))
        })?;
        cols.push(Column {
            name,
            kind,
            identity: r.get::<_, String>(2) == "YES",
        });
    }
    let mut lite_cols: Vec<String> = lite_tx
        .prepare("SELECT name FROM pragma_table_info(?1)")
        .and_then(|mut s| {
            s.query_map([table.name], |r| r.get(0))?
                .collect::<Result<_, _>>()
        })
        .map_err(lite(format!("reading the columns of {}", table.name)))?;
    let mut pg_cols: Vec<String> = cols.iter().map(|c| c.name.clone()).collect();
    lite_cols.sort();
    pg_cols.sort();
    if lite_cols.is_empty() || lite_cols != pg_cols {
        return Err(MigrateError::Schema(format!(
            "table {}: SQLite has columns [{}], PostgreSQL [{}]",
            table.name,
            lite_cols.join(", "),
            pg_cols.join(", ")
        )));
    }
    Ok(cols)
}

fn quoted(cols: &[Column]) -> String {
    cols.iter()
        .map(|c| format!("\"{}\"", c.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `SELECT` of every column in key order; text keys in byte order on both sides (SQLite's
/// BINARY collation, PostgreSQL's "C"), whatever the database's collation.
fn select(table: &Table, cols: &[Column], postgres: bool) -> String {
    let order: Vec<String> = table
        .key
        .iter()
        .map(|k| {
            let text = cols.iter().any(|c| c.name == *k && c.kind == Kind::Text);
            if postgres && text {
                format!("\"{k}\" COLLATE \"C\"")
            } else {
                format!("\"{k}\"")
            }
        })
        .collect();
    format!(
        "SELECT {} FROM {} ORDER BY {}",
        quoted(cols),
        table.name,
        order.join(", ")
    )
}

/// The key of the row `values` of `table`, for messages.
fn key_of(table: &Table, cols: &[Column], values: &[ValueRef<'_>]) -> String {
    table
        .key
        .iter()
        .filter_map(|k| cols.iter().position(|c| c.name == *k))
        .map(|i| match values[i] {
            ValueRef::Integer(n) => n.to_string(),
            ValueRef::Text(t) => format!("{:?}", String::from_utf8_lossy(t)),
            ValueRef::Blob(b) => hex::encode(b),
            ValueRef::Real(f) => f.to_string(),
            ValueRef::Null => "NULL".to_owned(),
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn count(lite_tx: &Connection, table: &Table) -> Result<u64, MigrateError> {
    let n: i64 = lite_tx
        .query_row(&format!("SELECT count(*) FROM {}", table.name), [], |r| {
            r.get(0)
        })
        .map_err(lite(format!("counting {}", table.name)))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Converts one SQLite row to the PostgreSQL column types.
fn convert_row(
    table: &Table,
    cols: &[Column],
    row: &rusqlite::Row<'_>,
) -> Result<Vec<Value>, MigrateError> {
    let raw: Vec<ValueRef<'_>> = (0..cols.len())
        .map(|i| row.get_ref(i))
        .collect::<Result<_, _>>()
        .map_err(lite(format!("reading a row of {}", table.name)))?;
    raw.iter()
        .zip(cols)
        .map(|(v, c)| {
            from_sqlite(*v, c.kind).map_err(|message| MigrateError::Value {
                table: table.name,
                column: c.name.clone(),
                row: key_of(table, cols, &raw),
                message,
            })
        })
        .collect()
}

/// Copies every row of `table` with COPY (binary), its ids included.
async fn copy_table(
    lite_tx: &Connection,
    tx: &Transaction<'_>,
    table: &Table,
    cols: &[Column],
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<(), MigrateError> {
    let total = count(lite_tx, table)?;
    let report = |done| {
        progress(Progress {
            phase: Phase::Copying,
            table: table.name,
            done,
            total,
        })
    };
    report(0);
    let types: Vec<Type> = cols.iter().map(|c| c.kind.pg_type()).collect();
    let sink = tx
        .copy_in(&format!(
            "COPY {} ({}) FROM STDIN (FORMAT binary)",
            table.name,
            quoted(cols)
        ))
        .await
        .map_err(pg(format!("copying {}", table.name)))?;
    let writer = BinaryCopyInWriter::new(sink, &types);
    let mut writer = std::pin::pin!(writer);
    let mut stmt = lite_tx
        .prepare(&select(table, cols, false))
        .map_err(lite(format!("reading {}", table.name)))?;
    let mut rows = stmt
        .query([])
        .map_err(lite(format!("reading {}", table.name)))?;
    let mut done = 0u64;
    while let Some(row) = rows
        .next()
        .map_err(lite(format!("reading {}", table.name)))?
    {
        let values = convert_row(table, cols, row)?;
        let params: Vec<Box<dyn ToSql + Sync + Send>> = values
            .iter()
            .zip(cols)
            .map(|(v, c)| param(v, c.kind))
            .collect();
        let refs: Vec<&(dyn ToSql + Sync)> = params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect();
        writer
            .as_mut()
            .write(&refs)
            .await
            .map_err(pg(format!("copying {}", table.name)))?;
        done += 1;
        if done.is_multiple_of(PROGRESS_EVERY) {
            report(done);
        }
    }
    writer
        .as_mut()
        .finish()
        .await
        .map_err(pg(format!("copying {}", table.name)))?;
    report(done);
    Ok(())
}

/// Sets each identity sequence past the highest id in its table and the highest SQLite ever
/// gave out (`sqlite_sequence`: ids of deleted rows, such as tasks of a deleted group whose log
/// files may remain, are not given out again).
async fn set_sequences(
    lite_tx: &Connection,
    tx: &Transaction<'_>,
    columns: &[Vec<Column>],
) -> Result<Vec<NextId>, MigrateError> {
    let has_sequence_table: bool = lite_tx
        .query_row(
            "SELECT count(*) > 0 FROM sqlite_master WHERE name = 'sqlite_sequence'",
            [],
            |r| r.get(0),
        )
        .map_err(lite("looking for sqlite_sequence"))?;
    let mut next_ids = Vec::new();
    for (table, cols) in TABLES.iter().zip(columns) {
        for col in cols.iter().filter(|c| c.identity) {
            let highest: Option<i64> = tx
                .query_one(
                    &format!("SELECT max(\"{}\") FROM {}", col.name, table.name),
                    &[],
                )
                .await
                .map_err(pg(format!("reading the highest id of {}", table.name)))?
                .get(0);
            let given: Option<i64> = if has_sequence_table {
                lite_tx
                    .query_row(
                        "SELECT max(seq) FROM sqlite_sequence WHERE name = ?1",
                        [table.name],
                        |r| r.get(0),
                    )
                    .map_err(lite("reading sqlite_sequence"))?
            } else {
                None
            };
            let last = highest.unwrap_or(0).max(given.unwrap_or(0));
            // With is_called false the sequence hands out 1 next; else last + 1.
            tx.execute(
                "SELECT setval(pg_get_serial_sequence($1, $2), $3, $4)",
                &[&table.name, &col.name, &last.max(1), &(last > 0)],
            )
            .await
            .map_err(pg(format!("setting the id sequence of {}", table.name)))?;
            next_ids.push(NextId {
                table: table.name,
                next_id: last + 1,
            });
        }
    }
    Ok(next_ids)
}

fn sqlite_checksum(
    lite_tx: &Connection,
    table: &Table,
    cols: &[Column],
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<(u64, String), MigrateError> {
    let total = count(lite_tx, table)?;
    let mut sum = Checksum::new();
    let mut stmt = lite_tx
        .prepare(&select(table, cols, false))
        .map_err(lite(format!("reading {}", table.name)))?;
    let mut rows = stmt
        .query([])
        .map_err(lite(format!("reading {}", table.name)))?;
    while let Some(row) = rows
        .next()
        .map_err(lite(format!("reading {}", table.name)))?
    {
        for v in convert_row(table, cols, row)? {
            sum.value(&v);
        }
        sum.end_row();
        if sum.rows.is_multiple_of(PROGRESS_EVERY) {
            progress(Progress {
                phase: Phase::Checking,
                table: table.name,
                done: sum.rows,
                total,
            });
        }
    }
    Ok(sum.finish())
}

async fn postgres_checksum(
    tx: &Transaction<'_>,
    table: &Table,
    cols: &[Column],
) -> Result<(u64, String), MigrateError> {
    let err = || pg(format!("reading back {}", table.name));
    let portal = tx
        .bind(&select(table, cols, true), &[])
        .await
        .map_err(err())?;
    let mut sum = Checksum::new();
    loop {
        let rows = tx.query_portal(&portal, FETCH).await.map_err(err())?;
        if rows.is_empty() {
            break;
        }
        for row in &rows {
            for (i, c) in cols.iter().enumerate() {
                sum.value(&from_postgres(row, i, c.kind).map_err(err())?);
            }
            sum.end_row();
        }
    }
    Ok(sum.finish())
}

#[cfg(test)]
mod tests;

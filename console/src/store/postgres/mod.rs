//! The shared store: a PostgreSQL database that several consoles use at once. Connections come
//! from a pool (deadpool-postgres over tokio-postgres); every transition that checks and then
//! writes takes row locks (`FOR UPDATE`), and assignment skips rows another console holds
//! (`FOR UPDATE SKIP LOCKED`), so consoles compete without handing a task out twice. The schema
//! is migrated by version (table `schema_version`) under an advisory lock, so consoles starting
//! together migrate once. Wake-ups travel between consoles with LISTEN/NOTIFY (`wakes.rs`).
//! This file holds the pool and the migrations; each domain's queries are
//! in the file of its name; every connection is made in `connect.rs`, with TLS as the URL's
//! `sslmode` asks. Durability is the server's: a commit returns when its
//! `synchronous_commit` says the change is durable.

use std::time::Duration;

use deadpool_postgres::{Object, Pool};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{FromSql, ToSql};
use tokio_postgres::{GenericClient, Row};

use super::wakes::WakeHub;
use super::{
    Enrollment, HealthStore, Liveness, Server, Stop, StoreError, Wake, WakeFeed, WakeStore,
};
use tasknode_protocol::NetworkType;

mod access;
mod audit;
mod connect;
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
pub(crate) mod wakes;

use connect::Connector;
pub use connect::Roots;

/// Schema migrations, applied in order; a migration's number is the schema version it makes.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("migrations/0001_init.sql")),
    (2, include_str!("migrations/0002_sessions_secrets.sql")),
    (3, include_str!("migrations/0003_leases.sql")),
    (4, include_str!("migrations/0004_task_logs.sql")),
    (5, include_str!("migrations/0005_liveness_writer.sql")),
    (6, include_str!("migrations/0006_server_removal.sql")),
    (7, include_str!("migrations/0007_audit_log.sql")),
    (8, include_str!("migrations/0008_log_addr.sql")),
    (9, include_str!("migrations/0009_task_idempotency.sql")),
    (10, include_str!("migrations/0010_look_function.sql")),
    (11, include_str!("migrations/0011_servers_fillfactor.sql")),
    (12, include_str!("migrations/0012_node_changes.sql")),
];

/// The advisory lock migrations run under ("tasknode" in ASCII).
const MIGRATION_LOCK: i64 = 0x7461_736b_6e6f_6465;

/// Connections one console keeps open at most.
const POOL_SIZE: usize = 16;

pub struct PostgresStore {
    pool: Pool,
    /// Where the listening connection connects (as the pool does, outside it).
    connector: Connector,
    /// This console among those on the database, so it skips its own notifications.
    instance: u64,
    wakes: WakeHub,
    /// The tasks that exchange wake-ups with the other consoles, started by the first
    /// [`WakeStore::wakes`].
    wake_tasks: std::sync::Mutex<Option<WakeTasks>>,
}

/// The listening connection's task, and the task (with its queue) that passes wake-ups on.
struct WakeTasks {
    listener: tokio::task::JoinHandle<()>,
    sender: tokio::task::JoinHandle<()>,
    pass_on: tokio::sync::mpsc::UnboundedSender<Wake>,
}

impl WakeStore for PostgresStore {
    fn wakes(&self) -> WakeFeed {
        let rx = self.wakes.subscribe();
        let mut tasks = self.wake_tasks.lock().unwrap_or_else(|e| e.into_inner());
        if tasks.is_none() {
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => {
                    let (tx, out) = tokio::sync::mpsc::unbounded_channel();
                    let listener = rt.spawn(wakes::listen(
                        self.connector.clone(),
                        self.instance,
                        self.wakes.clone(),
                    ));
                    let sender = rt.spawn(wakes::pass_on(self.pool.clone(), self.instance, out));
                    *tasks = Some(WakeTasks {
                        listener,
                        sender,
                        pass_on: tx,
                    });
                }
                Err(_) => tracing::warn!(
                    "no runtime to exchange wake-ups with other consoles on; their changes reach this console's agents at their next poll"
                ),
            }
        }
        WakeFeed {
            rx,
            pass_on: tasks.as_ref().map(|t| t.pass_on.clone()),
        }
    }
}

#[async_trait::async_trait]
impl HealthStore for PostgresStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.client()
            .await?
            .query_one("SELECT 1", &[])
            .await
            .map_err(db("answering a health check"))?;
        Ok(())
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        if let Some(t) = self
            .wake_tasks
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            t.listener.abort();
            t.sender.abort();
        }
    }
}

pub(super) type PgError = tokio_postgres::Error;

/// Statements run on the hot paths (a task's submit, assignment, start and finish, a node's
/// lookup, liveness) are prepared once per pooled connection and kept there (deadpool's
/// statement cache): a statement given as text costs a round trip to prepare it every time it
/// runs, which doubled the round trips of every task. Only fixed statement texts go through
/// it (the cache keeps every text it saw for the connection's life).
#[async_trait::async_trait]
trait Cached: deadpool_postgres::GenericClient {
    async fn q(&self, sql: &str, p: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, PgError> {
        let st = self.prepare_cached(sql).await?;
        self.query(&st, p).await
    }

    async fn q_opt(&self, sql: &str, p: &[&(dyn ToSql + Sync)]) -> Result<Option<Row>, PgError> {
        let st = self.prepare_cached(sql).await?;
        self.query_opt(&st, p).await
    }

    async fn q_one(&self, sql: &str, p: &[&(dyn ToSql + Sync)]) -> Result<Row, PgError> {
        let st = self.prepare_cached(sql).await?;
        self.query_one(&st, p).await
    }

    async fn exec(&self, sql: &str, p: &[&(dyn ToSql + Sync)]) -> Result<u64, PgError> {
        let st = self.prepare_cached(sql).await?;
        self.execute(&st, p).await
    }
}

impl<C: deadpool_postgres::GenericClient + ?Sized> Cached for C {}

/// A read-only transaction whose statements all read one snapshot.
async fn snapshot<'a>(
    c: &'a mut Object,
    op: &'static str,
) -> Result<deadpool_postgres::Transaction<'a>, StoreError> {
    c.build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(db(op))
}

fn db(op: &'static str) -> impl FnOnce(PgError) -> StoreError {
    move |source| StoreError::Database {
        op,
        source: Box::new(source),
    }
}

fn is_unique_violation(e: &PgError) -> bool {
    e.code() == Some(&SqlState::UNIQUE_VIOLATION)
}

/// Column `i` of `r`, or a database error (a column of an unexpected type).
fn col<'a, T: FromSql<'a>>(r: &'a Row, i: usize) -> Result<T, StoreError> {
    r.try_get(i).map_err(db("reading a row"))
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn to_u32(n: i64) -> u32 {
    u32::try_from(n.max(0)).unwrap_or(u32::MAX)
}

impl PostgresStore {
    /// Connects to the database at `url` (which must not carry a password: give it in
    /// `password`), with TLS as its `sslmode` asks, verified against `roots`, and brings its
    /// schema up to date.
    pub async fn connect(
        url: &str,
        password: Option<&str>,
        roots: Roots,
    ) -> Result<PostgresStore, StoreError> {
        let shown = redact(url);
        let open_err = |source: DriverErrorKind| StoreError::Open {
            database: shown.clone(),
            source: source.into(),
        };
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e: PgError| open_err(DriverErrorKind::Pg(e)))?;
        if config.get_password().is_some() {
            return Err(open_err(DriverErrorKind::Message(
                "the URL carries a password; give it separately".into(),
            )));
        }
        if let Some(p) = password {
            config.password(p);
        }
        config
            .application_name("tasknode-console")
            .connect_timeout(Duration::from_secs(10));
        let connector = Connector::new(url, config, roots)
            .map_err(|m| open_err(DriverErrorKind::Message(m)))?;
        let pool = connector
            .pool(POOL_SIZE, Duration::from_secs(10))
            .map_err(|e| open_err(DriverErrorKind::Message(e.to_string())))?;
        let mut client = pool.get().await.map_err(|e| {
            open_err(DriverErrorKind::Message(match &e {
                deadpool_postgres::PoolError::Backend(pg) => connector.explain(pg),
                _ => e.to_string(),
            }))
        })?;
        migrate(&mut client, &shown).await?;
        drop(client);
        Ok(PostgresStore {
            pool,
            connector,
            instance: rand::random(),
            wakes: WakeHub::default(),
            wake_tasks: std::sync::Mutex::new(None),
        })
    }

    /// This console as the changes it writes name it (`node_changes.writer`).
    fn writer(&self) -> i64 {
        i64::from_ne_bytes(self.instance.to_ne_bytes())
    }

    /// Wakes this console's polls, once the transaction that sent `wakes` committed.
    fn woke(&self, wakes: &[Wake]) {
        for w in wakes {
            self.wakes.send(*w);
        }
    }

    /// A pooled connection.
    pub(super) async fn client(&self) -> Result<Object, StoreError> {
        self.pool.get().await.map_err(|e| StoreError::Database {
            op: "getting a database connection",
            source: Box::new(e),
        })
    }
}

/// `url` with any password in it (before the host, or a `password=` option) replaced by
/// `***`, for messages.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "the database connection string".to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) if userinfo.contains(':') => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{user}:***@{host}")
        }
        _ => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let options: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => kv.to_owned(),
                })
                .collect();
            format!("{path}?{}", options.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

/// What can go wrong opening the database, boxed into [`StoreError::Open`].
enum DriverErrorKind {
    Pg(PgError),
    Message(String),
}

impl From<DriverErrorKind> for super::DriverError {
    fn from(k: DriverErrorKind) -> Self {
        match k {
            DriverErrorKind::Pg(e) => Box::new(e),
            DriverErrorKind::Message(m) => m.into(),
        }
    }
}

/// Applies the migrations the database lacks, in one transaction under an advisory lock: a
/// console starting at the same time waits, then finds the schema up to date.
async fn migrate(client: &mut Object, database: &str) -> Result<(), StoreError> {
    let known = MIGRATIONS.last().map_or(0, |m| m.0);
    let open_err = |e: PgError| StoreError::Open {
        database: database.to_owned(),
        source: Box::new(e),
    };
    let tx = client.transaction().await.map_err(open_err)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(open_err)?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
        .await
        .map_err(open_err)?;
    let found: Option<i64> = tx
        .query_opt("SELECT max(version) FROM schema_version", &[])
        .await
        .map_err(open_err)?
        .and_then(|r| r.get(0));
    let found = found.unwrap_or(0);
    if found > known {
        return Err(StoreError::TooNew {
            database: database.to_owned(),
            found,
            known,
        });
    }
    for &(version, script) in MIGRATIONS.iter().filter(|m| m.0 > found) {
        let err = |source: PgError| StoreError::Migrate {
            version,
            source: Box::new(source),
        };
        tx.batch_execute(script).await.map_err(err)?;
        tx.execute("DELETE FROM schema_version", &[])
            .await
            .map_err(err)?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES ($1)",
            &[&version],
        )
        .await
        .map_err(err)?;
    }
    tx.commit().await.map_err(open_err)
}

async fn project_id(
    c: &impl deadpool_postgres::GenericClient,
    project: &str,
) -> Result<i64, StoreError> {
    c.q_opt("SELECT id FROM projects WHERE name = $1", &[&project])
        .await
        .map_err(db("looking up a project"))?
        .map(|r| col(&r, 0))
        .transpose()?
        .ok_or_else(|| StoreError::NotFound {
            kind: "project",
            name: project.to_owned(),
        })
}

/// The id and network of group `group` of `project`, or `NotFound` naming what is missing.
async fn group_of(
    c: &impl deadpool_postgres::GenericClient,
    project: &str,
    group: &str,
) -> Result<(i64, String), StoreError> {
    let pid = project_id(c, project).await?;
    let row = c
        .q_opt(
            "SELECT id, network FROM resource_groups WHERE project_id = $1 AND name = $2",
            &[&pid, &group],
        )
        .await
        .map_err(db("looking up a resource group"))?
        .ok_or_else(|| StoreError::NotFound {
            kind: "resource group",
            name: group.to_owned(),
        })?;
    Ok((col(&row, 0)?, col(&row, 1)?))
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
     s.draining_ms, s.log_addr
     FROM servers s JOIN resource_groups g ON g.id = s.group_id JOIN projects p ON p.id = g.project_id";

/// A log service address as the `log_addr` column keeps it; anything else is no address (the
/// next heartbeat writes it again).
fn parse_log_addr(text: Option<String>) -> Option<std::net::SocketAddr> {
    text.and_then(|t| t.parse().ok())
}

fn server_from_row(r: &Row) -> Result<Server, StoreError> {
    let network: String = col(r, 4)?;
    let node_id: Option<String> = col(r, 7)?;
    let enrollment = match node_id {
        Some(node_id) => Some(Enrollment {
            node_id,
            secret_sha256: col::<Option<String>>(r, 8)?.unwrap_or_default(),
            enrolled_ms: col::<Option<i64>>(r, 9)?.unwrap_or_default(),
            cpu_cores: col::<Option<f64>>(r, 10)?.unwrap_or_default(),
            memory_bytes: col::<Option<i64>>(r, 11)?.unwrap_or_default().max(0) as u64,
        }),
        None => None,
    };
    let stopped = match col::<Option<i64>>(r, 16)? {
        Some(at_ms) => Some(Stop {
            at_ms,
            reason: col::<Option<String>>(r, 17)?.unwrap_or_default(),
        }),
        None => None,
    };
    Ok(Server {
        id: col(r, 0)?,
        name: col(r, 1)?,
        group: col(r, 2)?,
        group_id: col(r, 18)?,
        project: col(r, 3)?,
        network: parse_network(&network),
        max_concurrency: col::<Option<i64>>(r, 5)?.map(to_u32),
        created_ms: col(r, 6)?,
        enrollment,
        liveness: Liveness {
            agent_version: col(r, 12)?,
            last_heartbeat_ms: col(r, 13)?,
            clock_offset_ms: col(r, 14)?,
            running_tasks: to_u32(col(r, 15)?),
            stopped,
            log_addr: parse_log_addr(col(r, 20)?),
        },
        draining_ms: col(r, 19)?,
    })
}

/// One server with its group and project, by its node id.
async fn server_by_node(
    c: &impl deadpool_postgres::GenericClient,
    node_id: &str,
) -> Result<Option<Server>, StoreError> {
    c.q_opt(
        &format!("SELECT {SERVER_COLUMNS} WHERE s.node_id = $1"),
        &[&node_id],
    )
    .await
    .map_err(db("looking up a node"))?
    .map(|r| server_from_row(&r))
    .transpose()
}

/// One server of `project` by name (names are unique within a project).
async fn server_named(
    c: &impl GenericClient,
    project: &str,
    name: &str,
) -> Result<Option<Server>, StoreError> {
    c.query_opt(
        // By the servers' own (project_id, name) key, not by walking the group's servers.
        &format!(
            "SELECT {SERVER_COLUMNS}
             WHERE s.project_id = (SELECT id FROM projects WHERE name = $1) AND s.name = $2"
        ),
        &[&project, &name],
    )
    .await
    .map_err(db("looking up a server"))?
    .map(|r| server_from_row(&r))
    .transpose()
}

#[cfg(test)]
mod tests;

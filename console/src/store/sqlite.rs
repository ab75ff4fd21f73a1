//! The embedded store: one SQLite database in the data directory, in WAL mode with
//! `synchronous=FULL` (a commit is on disk when it returns), migrated by version
//! (`PRAGMA user_version`). Calls run on tokio's blocking pool, one at a time.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, params};
use tasknode_protocol::NetworkType;
use tasknode_protocol::wire::HostFacts;

use tasknode_protocol::tasks::{FinishTask, HeldTask, TaskAssignment};
use tasknode_protocol::updates::{SetRollout, UpdateReport};

use super::{
    Advance, DeletedGroup, Enrollment, EnrollmentToken, Fenced, Group, Liveness, LivenessUpdate,
    Login, NewRelease, Project, Published, Reconciled, Release, Rollout, Server, ServerFilter,
    SpendToken, Stop, Store, StoreError, Task, TaskFilter, UpdateRecord, User,
};

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
];

#[path = "sqlite_tasks.rs"]
mod tasks;

#[path = "sqlite_releases.rs"]
mod releases;

#[path = "sqlite_secrets.rs"]
mod secrets;

pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
}

fn sql(op: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |source| StoreError::Sqlite { op, source }
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
        let open_err = |source| StoreError::Open {
            path: path.to_owned(),
            source,
        };
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
        .map_err(|source| StoreError::Open {
            path: path.to_owned(),
            source,
        })?;
    if found > known {
        return Err(StoreError::TooNew {
            path: PathBuf::from(path),
            found,
            known,
        });
    }
    // A migration that copies a table others reference (0006) needs foreign keys off while it
    // runs (SQLite's recipe for changing a table); each one checks them before it commits.
    let fk_err = |source| StoreError::Open {
        path: path.to_owned(),
        source,
    };
    conn.pragma_update(None, "foreign_keys", "OFF")
        .map_err(fk_err)?;
    for &(version, script) in MIGRATIONS.iter().filter(|m| m.0 > found) {
        let err = |source| StoreError::Migrate { version, source };
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
     s.agent_version, s.last_heartbeat_ms, s.clock_offset_ms, s.running_tasks, s.stopped_ms, s.stop_reason
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
        },
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
    conn.query_row(
        &format!("SELECT {SERVER_COLUMNS} WHERE p.name = ?1 AND s.name = ?2"),
        [project, name],
        server_from_row,
    )
    .optional()
    .map_err(sql("looking up a server"))
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_project(&self, name: &str, now_ms: i64) -> Result<Project, StoreError> {
        let name = name.to_owned();
        self.call(move |conn| {
            conn.execute(
                "INSERT INTO projects (name, created_ms) VALUES (?1, ?2)",
                params![name, now_ms],
            )
            .map_err(|e| {
                if is_unique_violation(&e) {
                    StoreError::Exists {
                        kind: "project",
                        name: name.clone(),
                    }
                } else {
                    sql("creating a project")(e)
                }
            })?;
            Ok(Project {
                name,
                created_ms: now_ms,
            })
        })
        .await
    }

    async fn list_projects(&self) -> Result<Vec<Project>, StoreError> {
        self.call(|conn| {
            let mut stmt = conn
                .prepare("SELECT name, created_ms FROM projects ORDER BY name")
                .map_err(sql("listing projects"))?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(Project {
                        name: r.get(0)?,
                        created_ms: r.get(1)?,
                    })
                })
                .map_err(sql("listing projects"))?;
            rows.collect::<Result<_, _>>()
                .map_err(sql("listing projects"))
        })
        .await
    }

    async fn create_user(
        &self,
        project: &str,
        name: &str,
        password_hash: &str,
        now_ms: i64,
    ) -> Result<User, StoreError> {
        let (project, name, hash) = (
            project.to_owned(),
            name.to_owned(),
            password_hash.to_owned(),
        );
        self.call(move |conn| {
            let pid = project_id(conn, &project)?;
            conn.execute(
                "INSERT INTO users (project_id, name, password_hash, created_ms) VALUES (?1, ?2, ?3, ?4)",
                params![pid, name, hash, now_ms],
            )
            .map_err(|e| {
                if is_unique_violation(&e) {
                    StoreError::Exists { kind: "user", name: name.clone() }
                } else {
                    sql("creating a user")(e)
                }
            })?;
            Ok(User { name, project, created_ms: now_ms })
        })
        .await
    }

    async fn list_users(&self, project: Option<&str>) -> Result<Vec<User>, StoreError> {
        let project = project.map(str::to_owned);
        self.call(move |conn| {
            let mut stmt = conn
                .prepare(
                    "SELECT u.name, p.name, u.created_ms FROM users u JOIN projects p ON p.id = u.project_id
                     WHERE ?1 IS NULL OR p.name = ?1 ORDER BY u.name",
                )
                .map_err(sql("listing users"))?;
            let rows = stmt
                .query_map([project], |r| {
                    Ok(User {
                        name: r.get(0)?,
                        project: r.get(1)?,
                        created_ms: r.get(2)?,
                    })
                })
                .map_err(sql("listing users"))?;
            rows.collect::<Result<_, _>>().map_err(sql("listing users"))
        })
        .await
    }

    async fn login(&self, user_name: &str) -> Result<Option<Login>, StoreError> {
        let user_name = user_name.to_owned();
        self.call(move |conn| {
            conn.query_row(
                "SELECT p.name, u.password_hash FROM users u JOIN projects p ON p.id = u.project_id
                 WHERE u.name = ?1",
                [user_name],
                |r| {
                    Ok(Login {
                        project: r.get(0)?,
                        password_hash: r.get(1)?,
                    })
                },
            )
            .optional()
            .map_err(sql("looking up a user"))
        })
        .await
    }

    async fn create_group(
        &self,
        project: &str,
        name: &str,
        network: NetworkType,
        now_ms: i64,
    ) -> Result<Group, StoreError> {
        let (project, name) = (project.to_owned(), name.to_owned());
        self.call(move |conn| {
            let pid = project_id(conn, &project)?;
            conn.execute(
                "INSERT INTO resource_groups (project_id, name, network, created_ms) VALUES (?1, ?2, ?3, ?4)",
                params![pid, name, network.as_str(), now_ms],
            )
            .map_err(|e| {
                if is_unique_violation(&e) {
                    StoreError::Exists { kind: "resource group", name: name.clone() }
                } else {
                    sql("creating a resource group")(e)
                }
            })?;
            Ok(Group { name, project, network, servers: 0, created_ms: now_ms })
        })
        .await
    }

    async fn rename_group(
        &self,
        project: &str,
        group: &str,
        new_name: &str,
    ) -> Result<Group, StoreError> {
        let (project, group, new_name) =
            (project.to_owned(), group.to_owned(), new_name.to_owned());
        self.call(move |conn| {
            let (id, _) = group_of(conn, &project, &group)?;
            conn.execute(
                "UPDATE resource_groups SET name = ?1 WHERE id = ?2",
                params![new_name, id],
            )
            .map_err(|e| {
                if is_unique_violation(&e) {
                    StoreError::Exists { kind: "resource group", name: new_name.clone() }
                } else {
                    sql("renaming a resource group")(e)
                }
            })?;
            conn.query_row(
                "SELECT g.network, g.created_ms, (SELECT COUNT(*) FROM servers s WHERE s.group_id = g.id)
                 FROM resource_groups g WHERE g.id = ?1",
                [id],
                |r| {
                    let network: String = r.get(0)?;
                    Ok((network, r.get::<_, i64>(1)?, r.get::<_, u32>(2)?))
                },
            )
            .map_err(sql("reading a renamed resource group"))
            .map(|(network, created_ms, servers)| Group {
                name: new_name,
                project,
                network: parse_network(&network),
                servers,
                created_ms,
            })
        })
        .await
    }

    async fn delete_group(&self, project: &str, group: &str) -> Result<DeletedGroup, StoreError> {
        let (project, group) = (project.to_owned(), group.to_owned());
        self.call(move |conn| {
            let tx = conn.transaction().map_err(sql("deleting a resource group"))?;
            let (id, _) = group_of(&tx, &project, &group)?;
            let count = |query: &str| -> Result<i64, StoreError> {
                tx.query_row(query, [id], |r| r.get(0))
                    .map_err(sql("deleting a resource group"))
            };
            let servers = count("SELECT COUNT(*) FROM servers WHERE group_id = ?1")?;
            if servers > 0 {
                return Err(StoreError::Conflict {
                    field: "group",
                    message: format!(
                        "group {group} still has {servers} server{}; a group is deleted only when it is empty",
                        if servers == 1 { "" } else { "s" }
                    ),
                });
            }
            let unfinished = count(
                "SELECT COUNT(*) FROM tasks WHERE group_id = ?1 AND state IN ('queued', 'assigned', 'running')",
            )?;
            if unfinished > 0 {
                return Err(StoreError::Conflict {
                    field: "group",
                    message: format!(
                        "group {group} has {unfinished} unfinished task{} (queued, assigned or running); cancel {them} (`tasknode-console task cancel ID`) or wait for {them} to finish, then delete the group",
                        if unfinished == 1 { "" } else { "s" },
                        them = if unfinished == 1 { "it" } else { "them" },
                    ),
                });
            }
            let tasks = {
                let mut stmt = tx
                    .prepare("SELECT id FROM tasks WHERE group_id = ?1 ORDER BY id")
                    .map_err(sql("deleting a resource group"))?;
                stmt.query_map([id], |r| r.get::<_, i64>(0))
                    .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                    .map_err(sql("deleting a resource group"))?
            };
            for statement in [
                "DELETE FROM tasks WHERE group_id = ?1",
                "DELETE FROM enrollment_tokens WHERE group_id = ?1",
                // Its rollout and the rollout's members go by ON DELETE CASCADE.
                "DELETE FROM resource_groups WHERE id = ?1",
            ] {
                tx.execute(statement, [id])
                    .map_err(sql("deleting a resource group"))?;
            }
            tx.commit().map_err(sql("deleting a resource group"))?;
            Ok(DeletedGroup { name: group, project, tasks })
        })
        .await
    }

    async fn list_groups(&self, project: Option<&str>) -> Result<Vec<Group>, StoreError> {
        let project = project.map(str::to_owned);
        self.call(move |conn| {
            let mut stmt = conn
                .prepare(
                    "SELECT g.name, p.name, g.network, g.created_ms,
                            (SELECT COUNT(*) FROM servers s WHERE s.group_id = g.id)
                     FROM resource_groups g JOIN projects p ON p.id = g.project_id
                     WHERE ?1 IS NULL OR p.name = ?1 ORDER BY p.name, g.name",
                )
                .map_err(sql("listing resource groups"))?;
            let rows = stmt
                .query_map([project], |r| {
                    let network: String = r.get(2)?;
                    Ok(Group {
                        name: r.get(0)?,
                        project: r.get(1)?,
                        network: parse_network(&network),
                        created_ms: r.get(3)?,
                        servers: r.get(4)?,
                    })
                })
                .map_err(sql("listing resource groups"))?;
            rows.collect::<Result<_, _>>()
                .map_err(sql("listing resource groups"))
        })
        .await
    }

    async fn group_network(&self, project: &str, group: &str) -> Result<NetworkType, StoreError> {
        let (project, group) = (project.to_owned(), group.to_owned());
        self.call(move |conn| {
            let pid = project_id(conn, &project)?;
            let network: Option<String> = conn
                .query_row(
                    "SELECT network FROM resource_groups WHERE project_id = ?1 AND name = ?2",
                    params![pid, group],
                    |r| r.get(0),
                )
                .optional()
                .map_err(sql("looking up a resource group"))?;
            network
                .map(|n| parse_network(&n))
                .ok_or(StoreError::NotFound {
                    kind: "resource group",
                    name: group,
                })
        })
        .await
    }

    async fn add_server(
        &self,
        project: &str,
        group: &str,
        name: &str,
        max_concurrency: Option<u32>,
        now_ms: i64,
    ) -> Result<Server, StoreError> {
        let (project, group, name) = (project.to_owned(), group.to_owned(), name.to_owned());
        self.call(move |conn| {
            let tx = conn.transaction().map_err(sql("adding a server"))?;
            let (gid, _) = group_of(&tx, &project, &group)?;
            // Only this project's servers count: another project's pending server of the same
            // name neither blocks this one nor is told of.
            if let Some(existing) = server_named(&tx, &project, &name)? {
                return Err(StoreError::ServerTaken {
                    name,
                    group: existing.group,
                    project: existing.project,
                });
            }
            tx.execute(
                "INSERT INTO servers (group_id, project_id, name, max_concurrency, created_ms)
                 VALUES (?1, (SELECT project_id FROM resource_groups WHERE id = ?1), ?2, ?3, ?4)",
                params![gid, name, max_concurrency, now_ms],
            )
            .map_err(sql("adding a server"))?;
            let server = server_named(&tx, &project, &name)?.ok_or(StoreError::NotFound {
                kind: "server",
                name: name.clone(),
            })?;
            tx.commit().map_err(sql("adding a server"))?;
            Ok(server)
        })
        .await
    }

    async fn list_servers(&self, filter: &ServerFilter) -> Result<Vec<Server>, StoreError> {
        let filter = filter.clone();
        self.call(move |conn| {
            let mut stmt = conn
                .prepare(&format!(
                    "SELECT {SERVER_COLUMNS}
                     WHERE (?1 IS NULL OR p.name = ?1) AND (?2 IS NULL OR g.name = ?2)
                     ORDER BY p.name, g.name, s.name"
                ))
                .map_err(sql("listing servers"))?;
            let rows = stmt
                .query_map(params![filter.project, filter.group], server_from_row)
                .map_err(sql("listing servers"))?;
            rows.collect::<Result<_, _>>()
                .map_err(sql("listing servers"))
        })
        .await
    }

    async fn server_by_name(
        &self,
        project: &str,
        name: &str,
    ) -> Result<Option<Server>, StoreError> {
        let (project, name) = (project.to_owned(), name.to_owned());
        self.call(move |conn| server_named(conn, &project, &name))
            .await
    }

    async fn server_by_node(&self, node_id: &str) -> Result<Option<Server>, StoreError> {
        let node_id = node_id.to_owned();
        self.call(move |conn| server_by_node(conn, &node_id)).await
    }

    async fn enroll(
        &self,
        server_id: i64,
        enrollment: &Enrollment,
        facts: &HostFacts,
        spend: Option<SpendToken>,
    ) -> Result<u64, StoreError> {
        let (e, f) = (enrollment.clone(), facts.clone());
        self.call(move |conn| {
            let tx = conn.transaction().map_err(sql("recording an enrollment"))?;
            // The first enrollment binds a name to its project: a server of the same name that
            // another project enrolled first keeps it.
            let elsewhere: bool = tx
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM servers o JOIN servers s ON s.id = ?1
                                    WHERE o.name = s.name AND o.id != s.id AND o.node_id IS NOT NULL)",
                    [server_id],
                    |r| r.get(0),
                )
                .map_err(sql("recording an enrollment"))?;
            if elsewhere {
                return Err(StoreError::EnrolledElsewhere);
            }
            if let Some(spend) = &spend {
                let spent = tx
                    .execute(
                        "UPDATE enrollment_tokens SET used_ms = ?2,
                                used_by = (SELECT name FROM servers WHERE id = ?3)
                         WHERE token_sha256 = ?1 AND used_ms IS NULL AND expires_ms > ?2",
                        params![spend.token_sha256, spend.now_ms, server_id],
                    )
                    .map_err(sql("spending an enrollment token"))?;
                if spent != 1 {
                    return Err(StoreError::TokenSpent);
                }
            }
            tx.execute(
                "UPDATE servers SET node_id = ?2, secret_sha256 = ?3, enrolled_ms = ?4, hostname = ?5,
                        cpu_cores = ?6, memory_bytes = ?7, os = ?8, arch = ?9, kernel = ?10,
                        agent_version = ?11, clock_offset_ms = NULL, running_tasks = 0,
                        stopped_ms = NULL, stop_reason = NULL,
                        enroll_generation = enroll_generation + 1
                 WHERE id = ?1",
                params![
                    server_id,
                    e.node_id,
                    e.secret_sha256,
                    e.enrolled_ms,
                    f.hostname,
                    f.cpu_cores,
                    i64::try_from(f.memory_bytes).unwrap_or(i64::MAX),
                    f.os,
                    f.arch,
                    f.kernel,
                    f.agent_version,
                ],
            )
            .map_err(|e| {
                if is_unique_violation(&e) {
                    StoreError::EnrolledElsewhere
                } else {
                    sql("recording an enrollment")(e)
                }
            })?;
            let generation: i64 = tx
                .query_row(
                    "SELECT enroll_generation FROM servers WHERE id = ?1",
                    [server_id],
                    |r| r.get(0),
                )
                .map_err(sql("recording an enrollment"))?;
            tx.commit().map_err(sql("recording an enrollment"))?;
            Ok(u64::try_from(generation).unwrap_or(0))
        })
        .await
    }

    async fn create_enrollment_token(
        &self,
        project: &str,
        group: &str,
        user: &str,
        token_sha256: &str,
        created_ms: i64,
        expires_ms: i64,
    ) -> Result<EnrollmentToken, StoreError> {
        let (project, group, user, sha) = (
            project.to_owned(),
            group.to_owned(),
            user.to_owned(),
            token_sha256.to_owned(),
        );
        self.call(move |conn| {
            let tx = conn.transaction().map_err(sql("creating an enrollment token"))?;
            let pid = project_id(&tx, &project)?;
            let (gid, network) = group_of(&tx, &project, &group)?;
            let uid: i64 = tx
                .query_row(
                    "SELECT id FROM users WHERE name = ?1 AND project_id = ?2",
                    params![user, pid],
                    |r| r.get(0),
                )
                .optional()
                .map_err(sql("creating an enrollment token"))?
                .ok_or_else(|| StoreError::UserNotInProject {
                    user: user.clone(),
                    project: project.clone(),
                })?;
            tx.execute(
                "INSERT INTO enrollment_tokens (token_sha256, group_id, user_id, created_ms, expires_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![sha, gid, uid, created_ms, expires_ms],
            )
            .map_err(sql("creating an enrollment token"))?;
            tx.commit().map_err(sql("creating an enrollment token"))?;
            Ok(EnrollmentToken {
                group,
                project,
                network: parse_network(&network),
                user,
                created_ms,
                expires_ms,
                used: None,
            })
        })
        .await
    }

    async fn enrollment_token(
        &self,
        token_sha256: &str,
    ) -> Result<Option<EnrollmentToken>, StoreError> {
        let sha = token_sha256.to_owned();
        self.call(move |conn| {
            conn.query_row(
                "SELECT g.name, p.name, g.network, u.name, t.created_ms, t.expires_ms, t.used_ms, t.used_by
                 FROM enrollment_tokens t
                 JOIN resource_groups g ON g.id = t.group_id
                 JOIN projects p ON p.id = g.project_id
                 JOIN users u ON u.id = t.user_id
                 WHERE t.token_sha256 = ?1",
                [sha],
                |r| {
                    let network: String = r.get(2)?;
                    let used_ms: Option<i64> = r.get(6)?;
                    let used_by: Option<String> = r.get(7)?;
                    Ok(EnrollmentToken {
                        group: r.get(0)?,
                        project: r.get(1)?,
                        network: parse_network(&network),
                        user: r.get(3)?,
                        created_ms: r.get(4)?,
                        expires_ms: r.get(5)?,
                        used: used_ms.map(|t| (t, used_by.unwrap_or_default())),
                    })
                },
            )
            .optional()
            .map_err(sql("looking up an enrollment token"))
        })
        .await
    }

    async fn record_liveness(&self, batch: Vec<LivenessUpdate>) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.call(move |conn| {
            let tx = conn.transaction().map_err(sql("persisting liveness"))?;
            {
                let mut stmt = tx
                    .prepare_cached(
                        "UPDATE servers SET agent_version = ?2, last_heartbeat_ms = ?3, clock_offset_ms = ?4,
                                running_tasks = ?5, stopped_ms = ?6, stop_reason = ?7
                         WHERE node_id = ?1",
                    )
                    .map_err(sql("persisting liveness"))?;
                for u in &batch {
                    let l = &u.liveness;
                    stmt.execute(params![
                        u.node_id,
                        l.agent_version,
                        l.last_heartbeat_ms,
                        l.clock_offset_ms,
                        l.running_tasks,
                        l.stopped.as_ref().map(|s| s.at_ms),
                        l.stopped.as_ref().map(|s| s.reason.as_str()),
                    ])
                    .map_err(sql("persisting liveness"))?;
                }
            }
            tx.commit().map_err(sql("persisting liveness"))
        })
        .await
    }

    async fn submit_task(
        &self,
        project: &str,
        group: &str,
        script: &str,
        timeout_secs: u64,
        now_ms: i64,
    ) -> Result<Task, StoreError> {
        let (project, group, script) = (project.to_owned(), group.to_owned(), script.to_owned());
        self.call(move |conn| tasks::submit(conn, &project, &group, &script, timeout_secs, now_ms))
            .await
    }

    async fn task(&self, id: i64) -> Result<Option<Task>, StoreError> {
        self.call(move |conn| tasks::task(conn, id)).await
    }

    async fn list_tasks(&self, filter: &TaskFilter) -> Result<Vec<Task>, StoreError> {
        let filter = filter.clone();
        self.call(move |conn| tasks::list(conn, &filter)).await
    }

    async fn cancel_task(&self, id: i64, now_ms: i64) -> Result<Task, StoreError> {
        self.call(move |conn| tasks::cancel(conn, id, now_ms)).await
    }

    async fn reconcile(
        &self,
        server_id: i64,
        held: Vec<HeldTask>,
        now_ms: i64,
    ) -> Result<Reconciled, StoreError> {
        self.call(move |conn| tasks::reconcile(conn, server_id, &held, now_ms))
            .await
    }

    async fn assign(
        &self,
        server_id: i64,
        max_concurrency: u32,
        now_ms: i64,
    ) -> Result<Vec<TaskAssignment>, StoreError> {
        self.call(move |conn| tasks::assign(conn, server_id, max_concurrency, now_ms))
            .await
    }

    async fn start_task(
        &self,
        server_id: i64,
        id: i64,
        lease: i64,
        at_ms: i64,
        _now_ms: i64,
    ) -> Result<Fenced, StoreError> {
        self.call(move |conn| tasks::start(conn, server_id, id, lease, at_ms))
            .await
    }

    async fn finish_task(
        &self,
        server_id: i64,
        id: i64,
        report: FinishTask,
        _now_ms: i64,
    ) -> Result<Fenced, StoreError> {
        self.call(move |conn| tasks::finish(conn, server_id, id, &report))
            .await
    }

    async fn holds_lease(&self, server_id: i64, id: i64, lease: i64) -> Result<bool, StoreError> {
        self.call(move |conn| tasks::holds_lease(conn, server_id, id, lease))
            .await
    }

    async fn server_task_ids(&self, server_id: i64) -> Result<Vec<i64>, StoreError> {
        self.call(move |conn| tasks::server_task_ids(conn, server_id))
            .await
    }

    async fn busy_servers(&self) -> Result<Vec<i64>, StoreError> {
        self.call(|conn| tasks::busy_servers(conn)).await
    }

    async fn abandon_server_tasks(
        &self,
        server_id: i64,
        reason: &str,
        now_ms: i64,
    ) -> Result<Reconciled, StoreError> {
        let reason = reason.to_owned();
        self.call(move |conn| tasks::abandon(conn, server_id, &reason, now_ms))
            .await
    }

    async fn publish_release(
        &self,
        release: NewRelease,
        now_ms: i64,
    ) -> Result<(Release, Published), StoreError> {
        self.call(move |conn| releases::publish(conn, &release, now_ms))
            .await
    }

    async fn list_releases(&self) -> Result<Vec<Release>, StoreError> {
        self.call(|conn| releases::list(conn)).await
    }

    async fn release_manifest(
        &self,
        version: &str,
        now_ms: i64,
    ) -> Result<Option<String>, StoreError> {
        let version = version.to_owned();
        self.call(move |conn| releases::manifest_text(conn, &version, now_ms))
            .await
    }

    async fn set_rollout(
        &self,
        rollout: &SetRollout,
        reason: &str,
        now_ms: i64,
    ) -> Result<Rollout, StoreError> {
        let (rollout, reason) = (rollout.clone(), reason.to_owned());
        self.call(move |conn| releases::set_rollout(conn, &rollout, &reason, now_ms))
            .await
    }

    async fn list_rollouts(&self, project: Option<&str>) -> Result<Vec<Rollout>, StoreError> {
        let project = project.map(str::to_owned);
        self.call(move |conn| releases::list_rollouts(conn, project.as_deref()))
            .await
    }

    async fn advance_rollout(&self, step: &Advance, now_ms: i64) -> Result<bool, StoreError> {
        let step = step.clone();
        self.call(move |conn| releases::advance(conn, &step, now_ms))
            .await
    }

    async fn record_update_report(
        &self,
        server_id: i64,
        report: &UpdateReport,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let report = report.clone();
        self.call(move |conn| releases::record_report(conn, server_id, &report, now_ms))
            .await
    }

    async fn update_reports(&self) -> Result<Vec<UpdateRecord>, StoreError> {
        self.call(|conn| releases::reports(conn)).await
    }
}

#[cfg(test)]
#[path = "sqlite_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "sqlite_tenancy_tests.rs"]
mod tenancy_tests;

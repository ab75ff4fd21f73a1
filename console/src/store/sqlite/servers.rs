//! Servers, enrollments and enrollment tokens in the embedded store. An enrollment, the token
//! it spends and the generation it takes are one transaction.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};
use tasknode_protocol::wire::HostFacts;

use super::{
    SERVER_COLUMNS, SqliteStore, group_of, is_unique_violation, parse_network, project_id,
    server_by_node, server_from_row, server_named, sql,
};
use crate::store::wakes::requeued;
use crate::store::{
    Enrollment, EnrollmentToken, Removal, RemoveMode, RemovedNode, Server, ServerFilter,
    ServerStore, SpendToken, StoreError, Wake,
};

#[async_trait]
impl ServerStore for SqliteStore {
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

    async fn servers_by_id(&self, ids: &[i64]) -> Result<Vec<Server>, StoreError> {
        let ids = ids.to_vec();
        self.call(move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!("SELECT {SERVER_COLUMNS} WHERE s.id = ?1"))
                .map_err(sql("looking up servers"))?;
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                if let Some(s) = stmt
                    .query_row([id], server_from_row)
                    .optional()
                    .map_err(sql("looking up servers"))?
                {
                    out.push(s);
                }
            }
            Ok(out)
        })
        .await
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

    async fn remove_server(
        &self,
        project: &str,
        name: &str,
        mode: RemoveMode,
        now_ms: i64,
    ) -> Result<Removal, StoreError> {
        let (project, name) = (project.to_owned(), name.to_owned());
        let (removal, groups) = self
            .call(move |conn| super::removal::remove(conn, &project, &name, mode, now_ms))
            .await?;
        let server = match &removal {
            Removal::Removed { server, .. } | Removal::Draining { server, .. } => server.id,
        };
        // Its polls look again (and find it gone or draining); tasks queued again wake their
        // group.
        self.wakes.send(Wake::Server { server });
        for w in requeued(&groups) {
            self.wakes.send(w);
        }
        Ok(removal)
    }

    async fn move_server(&self, project: &str, name: &str, to: &str) -> Result<Server, StoreError> {
        let (project, name, to) = (project.to_owned(), name.to_owned(), to.to_owned());
        let moved = self
            .call(move |conn| super::removal::move_to(conn, &project, &name, &to))
            .await?;
        self.wakes.send(Wake::Moved { server: moved.id });
        Ok(moved)
    }

    async fn removed_nodes_since(
        &self,
        since_ms: Option<i64>,
    ) -> Result<Vec<RemovedNode>, StoreError> {
        self.call(move |conn| super::removal::removed_since(conn, since_ms))
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
}

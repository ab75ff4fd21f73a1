//! Servers, enrollments and enrollment tokens in the shared store. An enrollment, the token it
//! spends and the generation it takes are one transaction; the server row's lock orders
//! enrollments of one server, and the unique index on enrolled names decides a race between
//! projects, on any console.

use async_trait::async_trait;
use tasknode_protocol::wire::HostFacts;

use super::{
    PostgresStore, SERVER_COLUMNS, col, db, group_of, is_unique_violation, parse_network,
    project_id, server_by_node, server_from_row, server_named, to_i64,
};
use crate::store::{
    Enrollment, EnrollmentToken, Removal, RemoveMode, RemovedNode, Server, ServerFilter,
    ServerStore, SpendToken, StoreError,
};

#[async_trait]
impl ServerStore for PostgresStore {
    async fn add_server(
        &self,
        project: &str,
        group: &str,
        name: &str,
        max_concurrency: Option<u32>,
        now_ms: i64,
    ) -> Result<Server, StoreError> {
        let op = "adding a server";
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db(op))?;
        let (gid, _) = group_of(&tx, project, group).await?;
        let taken = |existing: Server| StoreError::ServerTaken {
            name: name.to_owned(),
            group: existing.group,
            project: existing.project,
        };
        // Only this project's servers count: another project's pending server of the same
        // name neither blocks this one nor is told of.
        if let Some(existing) = server_named(&*tx, project, name).await? {
            return Err(taken(existing));
        }
        let max = max_concurrency.map(i64::from);
        let added = tx
            .execute(
                "INSERT INTO servers (group_id, project_id, name, max_concurrency, created_ms)
                 VALUES ($1, (SELECT project_id FROM resource_groups WHERE id = $1), $2, $3, $4)
                 ON CONFLICT (project_id, name) DO NOTHING",
                &[&gid, &name, &max, &now_ms],
            )
            .await
            .map_err(db(op))?;
        let server =
            server_named(&*tx, project, name)
                .await?
                .ok_or_else(|| StoreError::NotFound {
                    kind: "server",
                    name: name.to_owned(),
                })?;
        if added == 0 {
            // Another console added it since the check above.
            return Err(taken(server));
        }
        tx.commit().await.map_err(db(op))?;
        Ok(server)
    }

    async fn list_servers(&self, filter: &ServerFilter) -> Result<Vec<Server>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                &format!(
                    "SELECT {SERVER_COLUMNS}
                     WHERE ($1::text IS NULL OR p.name = $1) AND ($2::text IS NULL OR g.name = $2)
                     ORDER BY p.name COLLATE \"C\", g.name COLLATE \"C\", s.name COLLATE \"C\""
                ),
                &[&filter.project, &filter.group],
            )
            .await
            .map_err(db("listing servers"))?;
        rows.iter().map(server_from_row).collect()
    }

    async fn server_by_name(
        &self,
        project: &str,
        name: &str,
    ) -> Result<Option<Server>, StoreError> {
        let c = self.client().await?;
        server_named(&**c, project, name).await
    }

    async fn server_by_node(&self, node_id: &str) -> Result<Option<Server>, StoreError> {
        let c = self.client().await?;
        server_by_node(&c, node_id).await
    }

    async fn servers_by_id(&self, ids: &[i64]) -> Result<Vec<Server>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                &format!("SELECT {SERVER_COLUMNS} WHERE s.id = ANY($1)"),
                &[&ids],
            )
            .await
            .map_err(db("looking up servers"))?;
        rows.iter().map(server_from_row).collect()
    }

    async fn enroll(
        &self,
        server_id: i64,
        e: &Enrollment,
        f: &HostFacts,
        spend: Option<SpendToken>,
    ) -> Result<u64, StoreError> {
        let op = "recording an enrollment";
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db(op))?;
        // The first enrollment binds a name to its project: a server of the same name that
        // another project enrolled first keeps it.
        let elsewhere: bool = col(
            &tx.query_one(
                "SELECT EXISTS (SELECT 1 FROM servers o JOIN servers s ON s.id = $1
                                WHERE o.name = s.name AND o.id != s.id AND o.node_id IS NOT NULL)",
                &[&server_id],
            )
            .await
            .map_err(db(op))?,
            0,
        )?;
        if elsewhere {
            return Err(StoreError::EnrolledElsewhere);
        }
        if let Some(spend) = &spend {
            // Under READ COMMITTED a second spender waits for the first one's row lock, then
            // finds the token used.
            let spent = tx
                .execute(
                    "UPDATE enrollment_tokens SET used_ms = $2,
                            used_by = (SELECT name FROM servers WHERE id = $3)
                     WHERE token_sha256 = $1 AND used_ms IS NULL AND expires_ms > $2",
                    &[&spend.token_sha256, &spend.now_ms, &server_id],
                )
                .await
                .map_err(db("spending an enrollment token"))?;
            if spent != 1 {
                return Err(StoreError::TokenSpent);
            }
        }
        let row = tx
            .query_opt(
                "UPDATE servers SET node_id = $2, secret_sha256 = $3, enrolled_ms = $4, hostname = $5,
                        cpu_cores = $6, memory_bytes = $7, os = $8, arch = $9, kernel = $10,
                        agent_version = $11, clock_offset_ms = NULL, running_tasks = 0,
                        stopped_ms = NULL, stop_reason = NULL, log_addr = NULL,
                        enroll_generation = enroll_generation + 1
                 WHERE id = $1
                 RETURNING enroll_generation",
                &[
                    &server_id,
                    &e.node_id,
                    &e.secret_sha256,
                    &e.enrolled_ms,
                    &f.hostname,
                    &f.cpu_cores,
                    &to_i64(f.memory_bytes),
                    &f.os,
                    &f.arch,
                    &f.kernel,
                    &f.agent_version,
                ],
            )
            .await
            .map_err(|e| {
                if is_unique_violation(&e) {
                    StoreError::EnrolledElsewhere
                } else {
                    db(op)(e)
                }
            })?
            .ok_or_else(|| StoreError::NotFound {
                kind: "server",
                name: server_id.to_string(),
            })?;
        let generation: i64 = col(&row, 0)?;
        // News to every console, this one too (liveness.rs).
        tx.execute(
            "INSERT INTO node_changes (server_ids) VALUES (ARRAY[$1::bigint])",
            &[&server_id],
        )
        .await
        .map_err(db(op))?;
        tx.commit().await.map_err(db(op))?;
        Ok(u64::try_from(generation).unwrap_or(0))
    }

    async fn remove_server(
        &self,
        project: &str,
        name: &str,
        mode: RemoveMode,
        now_ms: i64,
    ) -> Result<Removal, StoreError> {
        self.remove(project, name, mode, now_ms).await
    }

    async fn move_server(&self, project: &str, name: &str, to: &str) -> Result<Server, StoreError> {
        self.move_to(project, name, to).await
    }

    async fn removed_nodes_since(
        &self,
        since_ms: Option<i64>,
    ) -> Result<Vec<RemovedNode>, StoreError> {
        self.removed_since(since_ms).await
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
        let op = "creating an enrollment token";
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db(op))?;
        let pid = project_id(&tx, project).await?;
        let (gid, network) = group_of(&tx, project, group).await?;
        let uid: i64 = tx
            .query_opt(
                "SELECT id FROM users WHERE name = $1 AND project_id = $2",
                &[&user, &pid],
            )
            .await
            .map_err(db(op))?
            .map(|r| col(&r, 0))
            .transpose()?
            .ok_or_else(|| StoreError::UserNotInProject {
                user: user.to_owned(),
                project: project.to_owned(),
            })?;
        tx.execute(
            "INSERT INTO enrollment_tokens (token_sha256, group_id, user_id, created_ms, expires_ms)
             VALUES ($1, $2, $3, $4, $5)",
            &[&token_sha256, &gid, &uid, &created_ms, &expires_ms],
        )
        .await
        .map_err(db(op))?;
        tx.commit().await.map_err(db(op))?;
        Ok(EnrollmentToken {
            group: group.to_owned(),
            project: project.to_owned(),
            network: parse_network(&network),
            user: user.to_owned(),
            created_ms,
            expires_ms,
            used: None,
        })
    }

    async fn enrollment_token(
        &self,
        token_sha256: &str,
    ) -> Result<Option<EnrollmentToken>, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "SELECT g.name, p.name, g.network, u.name, t.created_ms, t.expires_ms, t.used_ms, t.used_by
                 FROM enrollment_tokens t
                 JOIN resource_groups g ON g.id = t.group_id
                 JOIN projects p ON p.id = g.project_id
                 JOIN users u ON u.id = t.user_id
                 WHERE t.token_sha256 = $1",
                &[&token_sha256],
            )
            .await
            .map_err(db("looking up an enrollment token"))?;
        let Some(r) = row else {
            return Ok(None);
        };
        let network: String = col(&r, 2)?;
        let used_ms: Option<i64> = col(&r, 6)?;
        let used_by: Option<String> = col(&r, 7)?;
        Ok(Some(EnrollmentToken {
            group: col(&r, 0)?,
            project: col(&r, 1)?,
            network: parse_network(&network),
            user: col(&r, 3)?,
            created_ms: col(&r, 4)?,
            expires_ms: col(&r, 5)?,
            used: used_ms.map(|t| (t, used_by.unwrap_or_default())),
        }))
    }
}

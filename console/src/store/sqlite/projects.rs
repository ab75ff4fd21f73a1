//! Projects, users and resource groups in the embedded store.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};
use tasknode_protocol::NetworkType;

use super::{SqliteStore, group_of, is_unique_violation, parse_network, project_id, sql};
use crate::store::{DeletedGroup, Group, Login, Project, ProjectStore, StoreError, User};

#[async_trait]
impl ProjectStore for SqliteStore {
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

    async fn group(&self, project: &str, group: &str) -> Result<Group, StoreError> {
        let (project, group) = (project.to_owned(), group.to_owned());
        self.call(move |conn| {
            let pid = project_id(conn, &project)?;
            let found = conn
                .query_row(
                    "SELECT g.network, g.created_ms,
                            (SELECT COUNT(*) FROM servers s WHERE s.group_id = g.id)
                     FROM resource_groups g WHERE g.project_id = ?1 AND g.name = ?2",
                    params![pid, group],
                    |r| {
                        let network: String = r.get(0)?;
                        Ok((parse_network(&network), r.get(1)?, r.get(2)?))
                    },
                )
                .optional()
                .map_err(sql("looking up a resource group"))?;
            let (network, created_ms, servers) = found.ok_or_else(|| StoreError::NotFound {
                kind: "resource group",
                name: group.clone(),
            })?;
            Ok(Group {
                name: group,
                project,
                network,
                servers,
                created_ms,
            })
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
}

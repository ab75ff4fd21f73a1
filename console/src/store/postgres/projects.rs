//! Projects, users and resource groups in the shared store. Text is ordered byte by byte
//! (`COLLATE "C"`), as the embedded store orders it, whatever the database's locale.

use async_trait::async_trait;
use tasknode_protocol::NetworkType;

use super::{
    PostgresStore, col, db, group_of, is_unique_violation, parse_network, project_id, to_u32,
};
use crate::store::{DeletedGroup, Group, Login, Project, ProjectStore, StoreError, User};

fn exists(
    kind: &'static str,
    name: &str,
    op: &'static str,
) -> impl FnOnce(super::PgError) -> StoreError {
    let name = name.to_owned();
    move |e| {
        if is_unique_violation(&e) {
            StoreError::Exists { kind, name }
        } else {
            db(op)(e)
        }
    }
}

#[async_trait]
impl ProjectStore for PostgresStore {
    async fn create_project(&self, name: &str, now_ms: i64) -> Result<Project, StoreError> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO projects (name, created_ms) VALUES ($1, $2)",
            &[&name, &now_ms],
        )
        .await
        .map_err(exists("project", name, "creating a project"))?;
        Ok(Project {
            name: name.to_owned(),
            created_ms: now_ms,
        })
    }

    async fn list_projects(&self) -> Result<Vec<Project>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT name, created_ms FROM projects ORDER BY name COLLATE \"C\"",
                &[],
            )
            .await
            .map_err(db("listing projects"))?;
        rows.iter()
            .map(|r| {
                Ok(Project {
                    name: col(r, 0)?,
                    created_ms: col(r, 1)?,
                })
            })
            .collect()
    }

    async fn create_user(
        &self,
        project: &str,
        name: &str,
        password_hash: &str,
        now_ms: i64,
    ) -> Result<User, StoreError> {
        let c = self.client().await?;
        let pid = project_id(&c, project).await?;
        c.execute(
            "INSERT INTO users (project_id, name, password_hash, created_ms) VALUES ($1, $2, $3, $4)",
            &[&pid, &name, &password_hash, &now_ms],
        )
        .await
        .map_err(exists("user", name, "creating a user"))?;
        Ok(User {
            name: name.to_owned(),
            project: project.to_owned(),
            created_ms: now_ms,
        })
    }

    async fn list_users(&self, project: Option<&str>) -> Result<Vec<User>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT u.name, p.name, u.created_ms FROM users u JOIN projects p ON p.id = u.project_id
                 WHERE $1::text IS NULL OR p.name = $1 ORDER BY u.name COLLATE \"C\"",
                &[&project],
            )
            .await
            .map_err(db("listing users"))?;
        rows.iter()
            .map(|r| {
                Ok(User {
                    name: col(r, 0)?,
                    project: col(r, 1)?,
                    created_ms: col(r, 2)?,
                })
            })
            .collect()
    }

    async fn login(&self, user_name: &str) -> Result<Option<Login>, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "SELECT p.name, u.password_hash FROM users u JOIN projects p ON p.id = u.project_id
                 WHERE u.name = $1",
                &[&user_name],
            )
            .await
            .map_err(db("looking up a user"))?;
        row.map(|r| {
            Ok(Login {
                project: col(&r, 0)?,
                password_hash: col(&r, 1)?,
            })
        })
        .transpose()
    }

    async fn create_group(
        &self,
        project: &str,
        name: &str,
        network: NetworkType,
        now_ms: i64,
    ) -> Result<Group, StoreError> {
        let c = self.client().await?;
        let pid = project_id(&c, project).await?;
        c.execute(
            "INSERT INTO resource_groups (project_id, name, network, created_ms) VALUES ($1, $2, $3, $4)",
            &[&pid, &name, &network.as_str(), &now_ms],
        )
        .await
        .map_err(exists("resource group", name, "creating a resource group"))?;
        Ok(Group {
            name: name.to_owned(),
            project: project.to_owned(),
            network,
            servers: 0,
            created_ms: now_ms,
        })
    }

    async fn list_groups(&self, project: Option<&str>) -> Result<Vec<Group>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT g.name, p.name, g.network, g.created_ms,
                        (SELECT COUNT(*) FROM servers s WHERE s.group_id = g.id)
                 FROM resource_groups g JOIN projects p ON p.id = g.project_id
                 WHERE $1::text IS NULL OR p.name = $1
                 ORDER BY p.name COLLATE \"C\", g.name COLLATE \"C\"",
                &[&project],
            )
            .await
            .map_err(db("listing resource groups"))?;
        rows.iter()
            .map(|r| {
                let network: String = col(r, 2)?;
                Ok(Group {
                    name: col(r, 0)?,
                    project: col(r, 1)?,
                    network: parse_network(&network),
                    created_ms: col(r, 3)?,
                    servers: to_u32(col(r, 4)?),
                })
            })
            .collect()
    }

    async fn group_network(&self, project: &str, group: &str) -> Result<NetworkType, StoreError> {
        let c = self.client().await?;
        let (_, network) = group_of(&c, project, group).await?;
        Ok(parse_network(&network))
    }

    async fn group(&self, project: &str, group: &str) -> Result<Group, StoreError> {
        let c = self.client().await?;
        let (id, network) = group_of(&c, project, group).await?;
        let r = c
            .query_one(
                "SELECT g.created_ms, (SELECT COUNT(*) FROM servers s WHERE s.group_id = g.id)
                 FROM resource_groups g WHERE g.id = $1",
                &[&id],
            )
            .await
            .map_err(db("looking up a resource group"))?;
        Ok(Group {
            name: group.to_owned(),
            project: project.to_owned(),
            network: parse_network(&network),
            created_ms: col(&r, 0)?,
            servers: to_u32(col(&r, 1)?),
        })
    }

    async fn rename_group(
        &self,
        project: &str,
        group: &str,
        new_name: &str,
    ) -> Result<Group, StoreError> {
        let c = self.client().await?;
        let (id, _) = group_of(&c, project, group).await?;
        c.execute(
            "UPDATE resource_groups SET name = $1 WHERE id = $2",
            &[&new_name, &id],
        )
        .await
        .map_err(exists(
            "resource group",
            new_name,
            "renaming a resource group",
        ))?;
        let r = c
            .query_one(
                "SELECT g.network, g.created_ms, (SELECT COUNT(*) FROM servers s WHERE s.group_id = g.id)
                 FROM resource_groups g WHERE g.id = $1",
                &[&id],
            )
            .await
            .map_err(db("reading a renamed resource group"))?;
        let network: String = col(&r, 0)?;
        Ok(Group {
            name: new_name.to_owned(),
            project: project.to_owned(),
            network: parse_network(&network),
            servers: to_u32(col(&r, 2)?),
            created_ms: col(&r, 1)?,
        })
    }

    async fn delete_group(&self, project: &str, group: &str) -> Result<DeletedGroup, StoreError> {
        let op = "deleting a resource group";
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db(op))?;
        let (id, _) = group_of(&tx, project, group).await?;
        // Holds off servers and tasks added to the group meanwhile (their inserts lock it too).
        tx.execute(
            "SELECT id FROM resource_groups WHERE id = $1 FOR UPDATE",
            &[&id],
        )
        .await
        .map_err(db(op))?;
        let count = |query: &'static str| {
            let tx = &tx;
            async move {
                let r = tx.query_one(query, &[&id]).await.map_err(db(op))?;
                col::<i64>(&r, 0)
            }
        };
        let servers = count("SELECT COUNT(*) FROM servers WHERE group_id = $1").await?;
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
            "SELECT COUNT(*) FROM tasks WHERE group_id = $1 AND state IN ('queued', 'assigned', 'running')",
        )
        .await?;
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
        let tasks = tx
            .query(
                "SELECT id FROM tasks WHERE group_id = $1 ORDER BY id",
                &[&id],
            )
            .await
            .map_err(db(op))?
            .iter()
            .map(|r| col::<i64>(r, 0))
            .collect::<Result<Vec<_>, _>>()?;
        for statement in [
            "DELETE FROM tasks WHERE group_id = $1",
            "DELETE FROM enrollment_tokens WHERE group_id = $1",
            // Its rollout and the rollout's members go by ON DELETE CASCADE.
            "DELETE FROM resource_groups WHERE id = $1",
        ] {
            tx.execute(statement, &[&id]).await.map_err(db(op))?;
        }
        tx.commit().await.map_err(db(op))?;
        Ok(DeletedGroup {
            name: group.to_owned(),
            project: project.to_owned(),
            tasks,
        })
    }
}

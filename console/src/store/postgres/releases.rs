//! Releases, rollouts and update reports in the shared store. A publication locks its release
//! row; a rollout step is applied only to the rollout it was decided for (`started_ms`), so a
//! step from a console that decided it before the rollout was set again changes nothing.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use async_trait::async_trait;
use tasknode_protocol::manifest::{self, compare_versions};
use tasknode_protocol::updates::{Batch, RolloutState, SetRollout, UpdateOutcome, UpdateReport};
use tokio_postgres::{GenericClient, Row};

use super::{PostgresStore, col, db, group_of, to_u32};
use crate::store::{
    Advance, NewRelease, Published, Release, ReleaseStore, Rollout, StoreError, UpdateRecord,
};

const RELEASE_COLUMNS: &str = "version, channel, targets, rollback_manifest, issued_ms,
     published_ms, signed_by FROM releases";

/// When a rollback manifest stops being accepted (`None` when it cannot be read, which
/// publishing rules out).
fn expiry(rollback_manifest: &str) -> Option<i64> {
    manifest::read_unverified(rollback_manifest.as_bytes())
        .ok()
        .and_then(|(m, _)| m.expires_ms)
}

fn corrupt(what: String) -> StoreError {
    StoreError::Database {
        op: "reading a row",
        source: what.into(),
    }
}

fn release_from_row(r: &Row) -> Result<Release, StoreError> {
    let targets: String = col(r, 2)?;
    let rollback: Option<String> = col(r, 3)?;
    Ok(Release {
        version: col(r, 0)?,
        channel: col(r, 1)?,
        targets: serde_json::from_str(&targets)
            .map_err(|e| corrupt(format!("a release's targets: {e}")))?,
        rollback: rollback.is_some(),
        rollback_expires_ms: rollback.as_deref().and_then(expiry),
        issued_ms: col(r, 4)?,
        published_ms: col(r, 5)?,
        signed_by: col(r, 6)?,
    })
}

async fn release(c: &impl GenericClient, version: &str) -> Result<Option<Release>, StoreError> {
    c.query_opt(
        &format!("SELECT {RELEASE_COLUMNS} WHERE version = $1"),
        &[&version],
    )
    .await
    .map_err(db("looking up a release"))?
    .map(|r| release_from_row(&r))
    .transpose()
}

fn conflict(message: String) -> StoreError {
    StoreError::Conflict {
        field: "manifest",
        message,
    }
}

fn rollout_state(s: &str) -> Result<RolloutState, StoreError> {
    match s {
        "running" => Ok(RolloutState::Running),
        "halted" => Ok(RolloutState::Halted),
        "done" => Ok(RolloutState::Done),
        other => Err(corrupt(format!("unknown rollout state {other:?}"))),
    }
}

fn outcome_of(s: &str) -> Result<UpdateOutcome, StoreError> {
    match s {
        "started" => Ok(UpdateOutcome::Started),
        "updated" => Ok(UpdateOutcome::Updated),
        "failed" => Ok(UpdateOutcome::Failed),
        "managed" => Ok(UpdateOutcome::Managed),
        other => Err(corrupt(format!("unknown update outcome {other:?}"))),
    }
}

const ROLLOUT_COLUMNS: &str = "r.group_id, p.name, g.name, r.version, r.batch, r.max_failures,
     r.state, r.reason, r.started_ms
     FROM rollouts r JOIN resource_groups g ON g.id = r.group_id JOIN projects p ON p.id = g.project_id";

fn rollout_from_row(r: &Row) -> Result<Rollout, StoreError> {
    let batch: String = col(r, 4)?;
    let state: String = col(r, 6)?;
    Ok(Rollout {
        group_id: col(r, 0)?,
        project: col(r, 1)?,
        group: col(r, 2)?,
        version: col(r, 3)?,
        batch: serde_json::from_str::<Batch>(&batch)
            .map_err(|e| corrupt(format!("a rollout's batch: {e}")))?,
        max_failures: to_u32(col(r, 5)?),
        state: rollout_state(&state)?,
        reason: col(r, 7)?,
        started_ms: col(r, 8)?,
        members: BTreeMap::new(),
    })
}

#[async_trait]
impl ReleaseStore for PostgresStore {
    async fn publish_release(
        &self,
        new: NewRelease,
        now_ms: i64,
    ) -> Result<(Release, Published), StoreError> {
        let op = "publishing a release";
        let m = &new.manifest;
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db(op))?;
        let targets: Vec<&str> = m.artifacts.iter().map(|a| a.target.as_str()).collect();
        let targets =
            serde_json::to_string(&targets).map_err(|e| StoreError::Worker(e.to_string()))?;
        // A first publication inserts; one racing it on another console waits for the row and
        // then takes the path of a version already there.
        let inserted = tx
            .execute(
                "INSERT INTO releases (version, channel, manifest, rollback_manifest, issued_ms,
                                       published_ms, signed_by, targets)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (version) DO NOTHING",
                &[
                    &m.version,
                    &m.channel,
                    &new.text,
                    &m.rollback.then_some(&new.text),
                    &m.issued_ms,
                    &now_ms,
                    &new.signed_by,
                    &targets,
                ],
            )
            .await
            .map_err(db(op))?;
        let published = if inserted == 1 {
            if m.rollback {
                Published::Rollback
            } else {
                Published::New
            }
        } else {
            let s = tx
                .query_one(
                    "SELECT channel, manifest, rollback_manifest FROM releases WHERE version = $1
                     FOR UPDATE",
                    &[&m.version],
                )
                .await
                .map_err(db(op))?;
            let (channel, manifest, rollback_manifest): (String, String, Option<String>) =
                (col(&s, 0)?, col(&s, 1)?, col(&s, 2)?);
            if channel != m.channel {
                return Err(conflict(format!(
                    "version {} was already published for channel {}, not {}; release a new version",
                    m.version, channel, m.channel
                )));
            }
            let same_text = if m.rollback {
                rollback_manifest.as_deref() == Some(new.text.as_str())
            } else {
                manifest == new.text
            };
            if same_text {
                Published::Unchanged
            } else {
                // The stored manifest may itself be a rollback (a version first published by
                // its rollback manifest): then its release manifest may still come.
                let first = manifest::read_unverified(manifest.as_bytes()).ok();
                let same_binaries = first
                    .as_ref()
                    .is_some_and(|(f, _)| f.artifacts == m.artifacts);
                let first_is_rollback = first.as_ref().is_some_and(|(f, _)| f.rollback);
                if m.rollback {
                    if !same_binaries {
                        return Err(conflict(format!(
                            "the rollback manifest for {} lists other binaries than the published release; sign the rollback with `tasknode-dist rollback --version {}` in the --out the release was built in",
                            m.version, m.version
                        )));
                    }
                    tx.execute(
                        "UPDATE releases SET rollback_manifest = $2, issued_ms = $3, published_ms = $4,
                                signed_by = $5
                         WHERE version = $1",
                        &[&m.version, &new.text, &m.issued_ms, &now_ms, &new.signed_by],
                    )
                    .await
                    .map_err(db(op))?;
                    Published::Rollback
                } else if first_is_rollback && same_binaries {
                    tx.execute(
                        "UPDATE releases SET manifest = $2, issued_ms = GREATEST(issued_ms, $3),
                                published_ms = $4
                         WHERE version = $1",
                        &[&m.version, &new.text, &m.issued_ms, &now_ms],
                    )
                    .await
                    .map_err(db(op))?;
                    Published::New
                } else {
                    return Err(conflict(format!(
                        "version {} was already published with other content; release a new version",
                        m.version
                    )));
                }
            }
        };
        let r = release(&*tx, &m.version)
            .await?
            .ok_or_else(|| StoreError::NotPublished {
                version: m.version.clone(),
            })?;
        tx.commit().await.map_err(db(op))?;
        Ok((r, published))
    }

    async fn list_releases(&self) -> Result<Vec<Release>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(&format!("SELECT {RELEASE_COLUMNS}"), &[])
            .await
            .map_err(db("listing releases"))?;
        let mut releases = rows
            .iter()
            .map(release_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        releases.sort_by(|a, b| {
            compare_versions(&b.version, &a.version)
                .unwrap_or(Ordering::Equal)
                .then_with(|| b.version.cmp(&a.version))
        });
        Ok(releases)
    }

    async fn release_manifest(
        &self,
        version: &str,
        now_ms: i64,
    ) -> Result<Option<String>, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "SELECT manifest, rollback_manifest FROM releases WHERE version = $1",
                &[&version],
            )
            .await
            .map_err(db("reading a release manifest"))?;
        let Some(r) = row else { return Ok(None) };
        let (manifest, rollback): (String, Option<String>) = (col(&r, 0)?, col(&r, 1)?);
        // Agents refuse an expired rollback, also for moving forward to its version.
        Ok(Some(match rollback {
            Some(rollback) if expiry(&rollback).is_some_and(|e| e > now_ms) => rollback,
            _ => manifest,
        }))
    }

    async fn set_rollout(
        &self,
        req: &SetRollout,
        reason: &str,
        now_ms: i64,
    ) -> Result<Rollout, StoreError> {
        let op = "setting a rollout";
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db(op))?;
        let (gid, _) = group_of(&tx, &req.project, &req.group).await?;
        if release(&*tx, &req.version).await?.is_none() {
            return Err(StoreError::NotPublished {
                version: req.version.clone(),
            });
        }
        let batch =
            serde_json::to_string(&req.batch).map_err(|e| StoreError::Worker(e.to_string()))?;
        tx.execute(
            "INSERT INTO rollouts (group_id, version, batch, max_failures, state, reason, started_ms)
             VALUES ($1, $2, $3, $4, 'running', $5, $6)
             ON CONFLICT (group_id) DO UPDATE SET version = excluded.version, batch = excluded.batch,
                 max_failures = excluded.max_failures, state = excluded.state,
                 reason = excluded.reason, started_ms = excluded.started_ms",
            &[
                &gid,
                &req.version,
                &batch,
                &i64::from(req.max_failures),
                &reason,
                &now_ms,
            ],
        )
        .await
        .map_err(db(op))?;
        tx.execute("DELETE FROM rollout_members WHERE group_id = $1", &[&gid])
            .await
            .map_err(db(op))?;
        let r = tx
            .query_one(
                &format!("SELECT {ROLLOUT_COLUMNS} WHERE r.group_id = $1"),
                &[&gid],
            )
            .await
            .map_err(db(op))?;
        let r = rollout_from_row(&r)?;
        tx.commit().await.map_err(db(op))?;
        Ok(r)
    }

    async fn list_rollouts(&self, project: Option<&str>) -> Result<Vec<Rollout>, StoreError> {
        let op = "listing rollouts";
        let c = self.client().await?;
        let rows = c
            .query(
                &format!(
                    "SELECT {ROLLOUT_COLUMNS} WHERE $1::text IS NULL OR p.name = $1
                     ORDER BY p.name COLLATE \"C\", g.name COLLATE \"C\""
                ),
                &[&project],
            )
            .await
            .map_err(db(op))?;
        let mut rollouts = rows
            .iter()
            .map(rollout_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let stmt = c
            .prepare("SELECT server_id, admitted_ms FROM rollout_members WHERE group_id = $1")
            .await
            .map_err(db(op))?;
        for r in &mut rollouts {
            for m in c.query(&stmt, &[&r.group_id]).await.map_err(db(op))? {
                r.members.insert(col(&m, 0)?, col(&m, 1)?);
            }
        }
        Ok(rollouts)
    }

    async fn advance_rollout(&self, step: &Advance, now_ms: i64) -> Result<bool, StoreError> {
        let op = "advancing a rollout";
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db(op))?;
        // The lease row stays locked (shared) until this step commits, so a console taking
        // the lease over waits for it and then sees the step.
        if let Some(f) = &step.fence
            && !super::leases::holds(&*tx, f, now_ms).await?
        {
            return Ok(false);
        }
        let changed = tx
            .execute(
                "UPDATE rollouts SET state = $3, reason = $4 WHERE group_id = $1 AND started_ms = $2",
                &[
                    &step.group_id,
                    &step.started_ms,
                    &step.state.as_str(),
                    &step.reason,
                ],
            )
            .await
            .map_err(db(op))?;
        if changed == 0 {
            return Ok(false);
        }
        tx.execute(
            "INSERT INTO rollout_members (group_id, server_id, admitted_ms)
             SELECT $1, id, $3 FROM unnest($2::bigint[]) AS id
             ON CONFLICT DO NOTHING",
            &[&step.group_id, &step.admit, &now_ms],
        )
        .await
        .map_err(db(op))?;
        tx.commit().await.map_err(db(op))?;
        Ok(true)
    }

    async fn record_update_report(
        &self,
        server_id: i64,
        report: &UpdateReport,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO update_reports (server_id, version, outcome, reason, at_ms)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (server_id) DO UPDATE SET version = excluded.version,
                 outcome = excluded.outcome, reason = excluded.reason, at_ms = excluded.at_ms",
            &[
                &server_id,
                &report.version,
                &report.outcome.as_str(),
                &report.reason,
                &now_ms,
            ],
        )
        .await
        .map_err(db("recording an update report"))?;
        Ok(())
    }

    async fn update_reports(&self) -> Result<Vec<UpdateRecord>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT server_id, version, outcome, reason, at_ms FROM update_reports ORDER BY server_id",
                &[],
            )
            .await
            .map_err(db("reading update reports"))?;
        rows.iter()
            .map(|r| {
                let outcome: String = col(r, 2)?;
                Ok(UpdateRecord {
                    server_id: col(r, 0)?,
                    version: col(r, 1)?,
                    outcome: outcome_of(&outcome)?,
                    reason: col(r, 3)?,
                    at_ms: col(r, 4)?,
                })
            })
            .collect()
    }
}

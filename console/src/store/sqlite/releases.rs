//! Releases, rollouts and update reports in the embedded store. A release keeps the manifest
//! file exactly as it was published; what the rollout engine decides is written as one step
//! (admitted servers and the rollout's state) in one transaction.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, Row, params};
use tasknode_protocol::manifest::{self, compare_versions};
use tasknode_protocol::updates::{Batch, RolloutState, SetRollout, UpdateOutcome, UpdateReport};

use async_trait::async_trait;

use super::{SqliteStore, group_of, sql};
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

fn release_from_row(r: &Row<'_>) -> rusqlite::Result<Release> {
    let targets: String = r.get(2)?;
    let rollback: Option<String> = r.get(3)?;
    Ok(Release {
        version: r.get(0)?,
        channel: r.get(1)?,
        targets: serde_json::from_str(&targets).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Text, e.into())
        })?,
        rollback: rollback.is_some(),
        rollback_expires_ms: rollback.as_deref().and_then(expiry),
        issued_ms: r.get(4)?,
        published_ms: r.get(5)?,
        signed_by: r.get(6)?,
    })
}

fn release(conn: &Connection, version: &str) -> Result<Option<Release>, StoreError> {
    conn.query_row(
        &format!("SELECT {RELEASE_COLUMNS} WHERE version = ?1"),
        [version],
        release_from_row,
    )
    .optional()
    .map_err(sql("looking up a release"))
}

/// What is stored of a version before a publication.
struct Stored {
    channel: String,
    manifest: String,
    rollback_manifest: Option<String>,
}

fn conflict(message: String) -> StoreError {
    StoreError::Conflict {
        field: "manifest",
        message,
    }
}

fn publish(
    conn: &mut Connection,
    new: &NewRelease,
    now_ms: i64,
) -> Result<(Release, Published), StoreError> {
    let op = "publishing a release";
    let m = &new.manifest;
    let tx = conn.transaction().map_err(sql(op))?;
    let stored: Option<Stored> = tx
        .query_row(
            "SELECT channel, manifest, rollback_manifest FROM releases WHERE version = ?1",
            [&m.version],
            |r| {
                Ok(Stored {
                    channel: r.get(0)?,
                    manifest: r.get(1)?,
                    rollback_manifest: r.get(2)?,
                })
            },
        )
        .optional()
        .map_err(sql(op))?;
    let targets: Vec<&str> = m.artifacts.iter().map(|a| a.target.as_str()).collect();
    let targets = serde_json::to_string(&targets).map_err(|e| StoreError::Worker(e.to_string()))?;
    let published = match stored {
        None => {
            tx.execute(
                "INSERT INTO releases (version, channel, manifest, rollback_manifest, issued_ms,
                                       published_ms, signed_by, targets)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    m.version,
                    m.channel,
                    new.text,
                    m.rollback.then_some(&new.text),
                    m.issued_ms,
                    now_ms,
                    new.signed_by,
                    targets,
                ],
            )
            .map_err(sql(op))?;
            if m.rollback {
                Published::Rollback
            } else {
                Published::New
            }
        }
        Some(s) => {
            if s.channel != m.channel {
                return Err(conflict(format!(
                    "version {} was already published for channel {}, not {}; release a new version",
                    m.version, s.channel, m.channel
                )));
            }
            let same_text = if m.rollback {
                s.rollback_manifest.as_deref() == Some(new.text.as_str())
            } else {
                s.manifest == new.text
            };
            if same_text {
                Published::Unchanged
            } else {
                // The stored manifest may itself be a rollback (a version first published by
                // its rollback manifest): then its release manifest may still come.
                let first = manifest::read_unverified(s.manifest.as_bytes()).ok();
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
                        "UPDATE releases SET rollback_manifest = ?2, issued_ms = ?3, published_ms = ?4,
                                signed_by = ?5
                         WHERE version = ?1",
                        params![m.version, new.text, m.issued_ms, now_ms, new.signed_by],
                    )
                    .map_err(sql(op))?;
                    Published::Rollback
                } else if first_is_rollback && same_binaries {
                    tx.execute(
                        "UPDATE releases SET manifest = ?2, issued_ms = MAX(issued_ms, ?3),
                                published_ms = ?4
                         WHERE version = ?1",
                        params![m.version, new.text, m.issued_ms, now_ms],
                    )
                    .map_err(sql(op))?;
                    Published::New
                } else {
                    return Err(conflict(format!(
                        "version {} was already published with other content; release a new version",
                        m.version
                    )));
                }
            }
        }
    };
    let r = release(&tx, &m.version)?.ok_or_else(|| StoreError::NotPublished {
        version: m.version.clone(),
    })?;
    tx.commit().map_err(sql(op))?;
    Ok((r, published))
}

fn list(conn: &Connection) -> Result<Vec<Release>, StoreError> {
    let op = "listing releases";
    let mut stmt = conn
        .prepare(&format!("SELECT {RELEASE_COLUMNS}"))
        .map_err(sql(op))?;
    let rows = stmt.query_map([], release_from_row).map_err(sql(op))?;
    let mut releases: Vec<Release> = rows.collect::<Result<_, _>>().map_err(sql(op))?;
    releases.sort_by(|a, b| {
        compare_versions(&b.version, &a.version)
            .unwrap_or(Ordering::Equal)
            .then_with(|| b.version.cmp(&a.version))
    });
    Ok(releases)
}

fn manifest_text(
    conn: &Connection,
    version: &str,
    now_ms: i64,
) -> Result<Option<String>, StoreError> {
    let row: Option<(String, Option<String>)> = conn
        .query_row(
            "SELECT manifest, rollback_manifest FROM releases WHERE version = ?1",
            [version],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(sql("reading a release manifest"))?;
    // Agents refuse an expired rollback, also for moving forward to its version.
    Ok(row.map(|(manifest, rollback)| match rollback {
        Some(rollback) if expiry(&rollback).is_some_and(|e| e > now_ms) => rollback,
        _ => manifest,
    }))
}

fn state_of(s: &str) -> rusqlite::Result<RolloutState> {
    // The CHECK constraint admits only these.
    match s {
        "running" => Ok(RolloutState::Running),
        "halted" => Ok(RolloutState::Halted),
        "done" => Ok(RolloutState::Done),
        other => Err(rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Text,
            format!("unknown rollout state {other:?}").into(),
        )),
    }
}

fn outcome_of(s: &str) -> rusqlite::Result<UpdateOutcome> {
    // The CHECK constraint admits only these.
    match s {
        "started" => Ok(UpdateOutcome::Started),
        "updated" => Ok(UpdateOutcome::Updated),
        "failed" => Ok(UpdateOutcome::Failed),
        "managed" => Ok(UpdateOutcome::Managed),
        other => Err(rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Text,
            format!("unknown update outcome {other:?}").into(),
        )),
    }
}

const ROLLOUT_COLUMNS: &str = "r.group_id, p.name, g.name, r.version, r.batch, r.max_failures,
     r.state, r.reason, r.started_ms
     FROM rollouts r JOIN resource_groups g ON g.id = r.group_id JOIN projects p ON p.id = g.project_id";

fn rollout_from_row(r: &Row<'_>) -> rusqlite::Result<Rollout> {
    let batch: String = r.get(4)?;
    let state: String = r.get(6)?;
    Ok(Rollout {
        group_id: r.get(0)?,
        project: r.get(1)?,
        group: r.get(2)?,
        version: r.get(3)?,
        batch: serde_json::from_str::<Batch>(&batch).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(4, rusqlite::types::Type::Text, e.into())
        })?,
        max_failures: r.get(5)?,
        state: state_of(&state)?,
        reason: r.get(7)?,
        started_ms: r.get(8)?,
        members: BTreeMap::new(),
    })
}

/// Fills in the members of `rollouts`.
fn with_members(conn: &Connection, rollouts: &mut [Rollout]) -> Result<(), StoreError> {
    let op = "reading rollout members";
    let mut stmt = conn
        .prepare_cached("SELECT server_id, admitted_ms FROM rollout_members WHERE group_id = ?1")
        .map_err(sql(op))?;
    for r in rollouts {
        let rows = stmt
            .query_map([r.group_id], |row| Ok((row.get(0)?, row.get(1)?)))
            .map_err(sql(op))?;
        r.members = rows.collect::<Result<_, _>>().map_err(sql(op))?;
    }
    Ok(())
}

fn set_rollout(
    conn: &mut Connection,
    req: &SetRollout,
    reason: &str,
    now_ms: i64,
) -> Result<Rollout, StoreError> {
    let op = "setting a rollout";
    let tx = conn.transaction().map_err(sql(op))?;
    let (gid, _) = group_of(&tx, &req.project, &req.group)?;
    if release(&tx, &req.version)?.is_none() {
        return Err(StoreError::NotPublished {
            version: req.version.clone(),
        });
    }
    let batch = serde_json::to_string(&req.batch).map_err(|e| StoreError::Worker(e.to_string()))?;
    tx.execute("DELETE FROM rollout_members WHERE group_id = ?1", [gid])
        .map_err(sql(op))?;
    tx.execute(
        "INSERT INTO rollouts (group_id, version, batch, max_failures, state, reason, started_ms)
         VALUES (?1, ?2, ?3, ?4, 'running', ?5, ?6)
         ON CONFLICT (group_id) DO UPDATE SET version = excluded.version, batch = excluded.batch,
             max_failures = excluded.max_failures, state = excluded.state,
             reason = excluded.reason, started_ms = excluded.started_ms",
        params![gid, req.version, batch, req.max_failures, reason, now_ms],
    )
    .map_err(sql(op))?;
    let r = tx
        .query_row(
            &format!("SELECT {ROLLOUT_COLUMNS} WHERE r.group_id = ?1"),
            [gid],
            rollout_from_row,
        )
        .map_err(sql(op))?;
    tx.commit().map_err(sql(op))?;
    Ok(r)
}

fn list_rollouts(conn: &Connection, project: Option<&str>) -> Result<Vec<Rollout>, StoreError> {
    let op = "listing rollouts";
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {ROLLOUT_COLUMNS} WHERE ?1 IS NULL OR p.name = ?1 ORDER BY p.name, g.name"
        ))
        .map_err(sql(op))?;
    let rows = stmt
        .query_map([project], rollout_from_row)
        .map_err(sql(op))?;
    let mut rollouts: Vec<Rollout> = rows.collect::<Result<_, _>>().map_err(sql(op))?;
    with_members(conn, &mut rollouts)?;
    Ok(rollouts)
}

fn advance(conn: &mut Connection, step: &Advance, now_ms: i64) -> Result<bool, StoreError> {
    let op = "advancing a rollout";
    let tx = conn.transaction().map_err(sql(op))?;
    if let Some(f) = &step.fence
        && !super::leases::holds(&tx, f, now_ms)?
    {
        return Ok(false);
    }
    let changed = tx
        .execute(
            "UPDATE rollouts SET state = ?3, reason = ?4 WHERE group_id = ?1 AND started_ms = ?2",
            params![
                step.group_id,
                step.started_ms,
                step.state.as_str(),
                step.reason
            ],
        )
        .map_err(sql(op))?;
    if changed == 0 {
        return Ok(false);
    }
    {
        let mut stmt = tx
            .prepare_cached(
                "INSERT OR IGNORE INTO rollout_members (group_id, server_id, admitted_ms)
                 VALUES (?1, ?2, ?3)",
            )
            .map_err(sql(op))?;
        for id in &step.admit {
            stmt.execute(params![step.group_id, id, now_ms])
                .map_err(sql(op))?;
        }
    }
    tx.commit().map_err(sql(op))?;
    Ok(true)
}

fn record_report(
    conn: &Connection,
    server_id: i64,
    report: &UpdateReport,
    now_ms: i64,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO update_reports (server_id, version, outcome, reason, at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (server_id) DO UPDATE SET version = excluded.version,
             outcome = excluded.outcome, reason = excluded.reason, at_ms = excluded.at_ms",
        params![
            server_id,
            report.version,
            report.outcome.as_str(),
            report.reason,
            now_ms
        ],
    )
    .map_err(sql("recording an update report"))?;
    Ok(())
}

fn reports(conn: &Connection) -> Result<Vec<UpdateRecord>, StoreError> {
    let op = "reading update reports";
    let mut stmt = conn
        .prepare_cached(
            "SELECT server_id, version, outcome, reason, at_ms FROM update_reports ORDER BY server_id",
        )
        .map_err(sql(op))?;
    let rows = stmt
        .query_map([], |r| {
            let outcome: String = r.get(2)?;
            Ok(UpdateRecord {
                server_id: r.get(0)?,
                version: r.get(1)?,
                outcome: outcome_of(&outcome)?,
                reason: r.get(3)?,
                at_ms: r.get(4)?,
            })
        })
        .map_err(sql(op))?;
    rows.collect::<Result<_, _>>().map_err(sql(op))
}

#[async_trait]
impl ReleaseStore for SqliteStore {
    async fn publish_release(
        &self,
        release: NewRelease,
        now_ms: i64,
    ) -> Result<(Release, Published), StoreError> {
        self.call(move |conn| publish(conn, &release, now_ms)).await
    }

    async fn list_releases(&self) -> Result<Vec<Release>, StoreError> {
        self.call(|conn| list(conn)).await
    }

    async fn release_manifest(
        &self,
        version: &str,
        now_ms: i64,
    ) -> Result<Option<String>, StoreError> {
        let version = version.to_owned();
        self.call(move |conn| manifest_text(conn, &version, now_ms))
            .await
    }

    async fn set_rollout(
        &self,
        rollout: &SetRollout,
        reason: &str,
        now_ms: i64,
    ) -> Result<Rollout, StoreError> {
        let (rollout, reason) = (rollout.clone(), reason.to_owned());
        self.call(move |conn| set_rollout(conn, &rollout, &reason, now_ms))
            .await
    }

    async fn list_rollouts(&self, project: Option<&str>) -> Result<Vec<Rollout>, StoreError> {
        let project = project.map(str::to_owned);
        self.call(move |conn| list_rollouts(conn, project.as_deref()))
            .await
    }

    async fn advance_rollout(&self, step: &Advance, now_ms: i64) -> Result<bool, StoreError> {
        let step = step.clone();
        self.call(move |conn| advance(conn, &step, now_ms)).await
    }

    async fn record_update_report(
        &self,
        server_id: i64,
        report: &UpdateReport,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let report = report.clone();
        self.call(move |conn| record_report(conn, server_id, &report, now_ms))
            .await
    }

    async fn update_reports(&self) -> Result<Vec<UpdateRecord>, StoreError> {
        self.call(|conn| reports(conn)).await
    }
}

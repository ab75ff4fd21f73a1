//! Self-update: published releases (signed manifests kept byte for byte), each group's rollout
//! and the servers it admitted, and every server's latest update report.

use std::collections::BTreeMap;

use async_trait::async_trait;
use tasknode_protocol::manifest::Manifest;
use tasknode_protocol::updates::{Batch, RolloutState, SetRollout, UpdateOutcome, UpdateReport};

use super::StoreError;

/// A published release, as the store holds it (without its manifest text).
#[derive(Debug, Clone, PartialEq)]
pub struct Release {
    pub version: String,
    pub channel: String,
    /// The Rust targets it has binaries for.
    pub targets: Vec<String>,
    /// Whether a signed rollback manifest is published for it.
    pub rollback: bool,
    /// When that rollback manifest stops being accepted.
    pub rollback_expires_ms: Option<i64>,
    /// When its newest manifest was signed.
    pub issued_ms: i64,
    /// When the console took its newest manifest.
    pub published_ms: i64,
    /// The key that signed its newest manifest (hex).
    pub signed_by: String,
}

/// A manifest file to publish, read (and, where the console can, verified) by the caller.
#[derive(Debug, Clone)]
pub struct NewRelease {
    pub manifest: Manifest,
    /// The file exactly as published: agents get these bytes and check their signature.
    pub text: String,
    pub signed_by: String,
}

/// What publishing a manifest changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// A version the console did not have.
    New,
    /// A rollback manifest for a version (new, or replacing an older rollback).
    Rollback,
    /// The same file was published before: nothing changed.
    Unchanged,
}

/// A group's rollout and the servers admitted to it so far.
#[derive(Debug, Clone, PartialEq)]
pub struct Rollout {
    pub group_id: i64,
    pub project: String,
    pub group: String,
    pub version: String,
    pub batch: Batch,
    pub max_failures: u32,
    pub state: RolloutState,
    pub reason: String,
    pub started_ms: i64,
    /// Admitted servers: server id → when.
    pub members: BTreeMap<i64, i64>,
}

/// One step of a rollout, as the rollout engine decided it.
#[derive(Debug, Clone, PartialEq)]
pub struct Advance {
    pub group_id: i64,
    /// The rollout the step was decided for: a rollout set since then is left alone.
    pub started_ms: i64,
    /// Servers to admit.
    pub admit: Vec<i64>,
    pub state: RolloutState,
    pub reason: String,
    /// The lease the deciding console held: with one, the step applies only while that
    /// console still holds it.
    pub fence: Option<super::Fence>,
}

/// A server's latest update report.
#[derive(Debug, Clone, PartialEq)]
pub struct UpdateRecord {
    pub server_id: i64,
    pub version: String,
    pub outcome: UpdateOutcome,
    pub reason: String,
    pub at_ms: i64,
}

#[async_trait]
pub trait ReleaseStore: Send + Sync {
    /// Publishes a manifest file. The same file again changes nothing; a rollback manifest
    /// for a published version is kept beside its manifest (and may also be a version's first
    /// publication); other content for a published version is a `Conflict`.
    async fn publish_release(
        &self,
        release: NewRelease,
        now_ms: i64,
    ) -> Result<(Release, Published), StoreError>;
    /// Every release, the newest version first.
    async fn list_releases(&self) -> Result<Vec<Release>, StoreError>;
    /// The manifest file to hand an agent for `version`: its rollback manifest when one is
    /// published and has not expired at `now_ms`, else its manifest.
    async fn release_manifest(
        &self,
        version: &str,
        now_ms: i64,
    ) -> Result<Option<String>, StoreError>;

    /// Sets the rollout of a group (running, with `reason`), replacing any earlier one and
    /// clearing the servers it admitted. The version must be published (`NotPublished`).
    async fn set_rollout(
        &self,
        rollout: &SetRollout,
        reason: &str,
        now_ms: i64,
    ) -> Result<Rollout, StoreError>;
    /// Rollouts with their admitted servers, by project and group; of one project with
    /// `project`.
    async fn list_rollouts(&self, project: Option<&str>) -> Result<Vec<Rollout>, StoreError>;
    /// Admits servers to a rollout and records its state. Returns false (and changes nothing)
    /// when the group's rollout was set again since the step was decided, or when the step's
    /// fence names a lease its holder no longer holds at `now_ms`.
    async fn advance_rollout(&self, step: &Advance, now_ms: i64) -> Result<bool, StoreError>;

    /// Keeps `report` as the server's latest.
    async fn record_update_report(
        &self,
        server_id: i64,
        report: &UpdateReport,
        now_ms: i64,
    ) -> Result<(), StoreError>;
    /// The latest report of every server that sent one.
    async fn update_reports(&self) -> Result<Vec<UpdateRecord>, StoreError>;
}

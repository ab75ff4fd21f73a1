//! Releases and rollouts: publishing signed update manifests (checked against the release
//! this console serves), each group's rollout (never back to an older version without a
//! signed rollback), the manifest an agent is asked to run, and agents' update reports.

use std::cmp::Ordering;
use std::io::Read;
use std::path::{Path, PathBuf};

use ed25519_dalek::VerifyingKey;
use ed25519_dalek::pkcs8::DecodePublicKey;
use sha2::{Digest, Sha256};
use tasknode_protocol::manifest::{self, Manifest, ManifestError, compare_versions};
use tasknode_protocol::updates::{
    ReleaseView, RolloutView, SetRollout, UpdateOutcome, UpdateReport,
};
use tasknode_protocol::validate;

use super::{Caller, ServiceError, blocking};
use crate::app::AppState;
use crate::clock::rfc3339;
use crate::store::{NewRelease, Published, Release, ServerFilter, StoreError};

pub fn view(r: Release) -> ReleaseView {
    ReleaseView {
        version: r.version,
        channel: r.channel,
        targets: r.targets,
        rollback: r.rollback,
        issued_at: rfc3339(r.issued_ms),
        published_at: rfc3339(r.published_ms),
        signed_by: r.signed_by,
    }
}

/// A manifest that does not read as one.
fn unreadable(e: ManifestError) -> ServiceError {
    let field = match &e {
        ManifestError::Field { field, .. } => (*field).to_owned(),
        ManifestError::Format(_) => "format".to_owned(),
        _ => "body".to_owned(),
    };
    ServiceError::invalid(field, e)
}

fn bad_signature(message: String) -> ServiceError {
    ServiceError::Unprocessable {
        field: "signature",
        message,
    }
}

/// With `--dist` and its manifest key, checks that the manifest file is signed by that key.
/// Without them the console takes the file as it is: agents check every signature anyway.
async fn check_signature(
    state: &AppState,
    file: &[u8],
    signed_by: &str,
) -> Result<(), ServiceError> {
    let Some(dist) = &state.dist else {
        return Ok(());
    };
    let Some(release_key) = dist_key(dist).await? else {
        return Ok(());
    };
    let key_path = dist.join(tasknode_render::published::MANIFEST_PUBLIC);
    manifest::verify(file, &[release_key]).map_err(|e| match e {
        ManifestError::Unsigned => bad_signature(format!(
            "the manifest is unsigned; publish the file `tasknode-dist build` (or `tasknode-dist rollback`) signed with the release key {}",
            key_path.display()
        )),
        ManifestError::UntrustedKey { .. } => bad_signature(format!(
            "the manifest is signed by key {}, not by this release's key {} ({}); publish manifests signed with the keys the release in --dist was built with",
            validate::show(signed_by),
            manifest::encode_key(&release_key),
            key_path.display()
        )),
        ManifestError::BadSignature => bad_signature(
            "the manifest's signature does not verify: the file was changed after it was signed; publish it exactly as `tasknode-dist` wrote it".to_owned(),
        ),
        other => unreadable(other),
    })?;
    Ok(())
}

/// The manifest key of the release in `--dist`, when it has one.
async fn dist_key(dist: &Path) -> Result<Option<VerifyingKey>, ServiceError> {
    let path = dist.join(tasknode_render::published::MANIFEST_PUBLIC);
    let pem = match tokio::fs::read_to_string(&path).await {
        Ok(pem) => pem,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(ServiceError::Internal(format!(
                "reading the release's manifest key {}: {e}",
                path.display()
            )));
        }
    };
    VerifyingKey::from_public_key_pem(&pem).map(Some).map_err(|e| {
        ServiceError::Internal(format!(
            "{} is not an ed25519 public key in PEM ({e}); `tasknode-dist build --keys` writes it",
            path.display()
        ))
    })
}

/// Checks that each binary the manifest lists is in `--dist` as the manifest describes it, so
/// that agents can download it from the console.
fn check_artifacts(dist: &Path, m: &Manifest) -> Result<(), ServiceError> {
    let refuse = |message: String| ServiceError::Unprocessable {
        field: "artifacts",
        message: format!(
            "{message}; publish the manifest from the `tasknode-dist build` output this console serves (--dist {})",
            dist.display()
        ),
    };
    for a in &m.artifacts {
        if !a.url.starts_with("releases/") {
            return Err(refuse(format!(
                "the {} binary's url {} is not under releases/, where the console serves release files from",
                a.target, a.url
            )));
        }
        let path: PathBuf = dist.join(&a.url);
        let mut file = std::fs::File::open(&path).map_err(|e| {
            refuse(format!(
                "the {} binary {} cannot be read ({e})",
                a.target,
                path.display()
            ))
        })?;
        let size = file.metadata().map(|md| md.len()).unwrap_or_default();
        if size != a.size {
            return Err(refuse(format!(
                "the {} binary {} has {size} bytes, the manifest says {}",
                a.target,
                path.display(),
                a.size
            )));
        }
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = file.read(&mut buf).map_err(|e| {
                refuse(format!(
                    "the {} binary {} cannot be read ({e})",
                    a.target,
                    path.display()
                ))
            })?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        let sha = hex::encode(hasher.finalize());
        if sha != a.sha256 {
            return Err(refuse(format!(
                "the {} binary {} has sha256 {sha}, the manifest says {}",
                a.target,
                path.display(),
                a.sha256
            )));
        }
    }
    Ok(())
}

/// Publishes the signed manifest file `bytes`; answers the release and whether it is new
/// (`false`: the same file was published before, and nothing changed).
pub async fn publish(state: &AppState, bytes: &[u8]) -> Result<(ReleaseView, bool), ServiceError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| {
            ServiceError::invalid(
                "body",
                "is not UTF-8 text; publish the manifest file `tasknode-dist` wrote",
            )
        })?
        .to_owned();
    let (m, envelope) = manifest::read_unverified(bytes).map_err(unreadable)?;
    check_signature(state, bytes, &envelope.signed_by).await?;
    if let Some(dist) = state.dist.clone() {
        let m = m.clone();
        blocking(move || check_artifacts(&dist, &m)).await??;
    }
    let rollback = m.rollback;
    let (release, published) = state
        .store
        .publish_release(
            NewRelease {
                manifest: m,
                text,
                signed_by: envelope.signed_by,
            },
            state.clock.now_ms(),
        )
        .await?;
    let new = match published {
        Published::Unchanged => false,
        Published::New | Published::Rollback => {
            tracing::info!(
                version = %release.version,
                channel = %release.channel,
                rollback,
                signed_by = %release.signed_by,
                "release published"
            );
            super::audit::record(
                state,
                super::Caller::Admin,
                "release.publish",
                format!(
                    "release {} ({}{})",
                    release.version,
                    release.channel,
                    if rollback { ", rollback" } else { "" }
                ),
                None,
            )
            .await;
            true
        }
    };
    Ok((view(release), new))
}

pub async fn list(state: &AppState) -> Result<Vec<ReleaseView>, ServiceError> {
    let releases = state.store.list_releases().await?;
    Ok(releases.into_iter().map(view).collect())
}

/// Sets a group's rollout (`req` already validated); only the admin may.
pub async fn set_rollout(
    state: &AppState,
    caller: Caller<'_>,
    req: SetRollout,
) -> Result<RolloutView, ServiceError> {
    caller.require_admin("start a rollout")?;
    // The group must exist (NotFound names it) and the version be published.
    state.store.group_network(&req.project, &req.group).await?;
    let release = state
        .store
        .list_releases()
        .await?
        .into_iter()
        .find(|r| r.version == req.version)
        .ok_or_else(|| StoreError::NotPublished {
            version: req.version.clone(),
        })?;
    // An expired rollback is no rollback: agents refuse it.
    let now = state.clock.now_ms();
    if release.rollback_expires_ms.is_none_or(|e| e <= now) {
        refuse_downgrade(state, &req, &release).await?;
    }
    let view = state.rollouts.set(&req).await?;
    tracing::info!(
        group = %req.group,
        project = %req.project,
        version = %req.version,
        batch = %req.batch,
        max_failures = req.max_failures,
        reason = %view.reason,
        "rollout set"
    );
    super::audit::record(
        state,
        caller,
        "rollout.set",
        format!(
            "rollout of {} to group {} (batch {}, max failures {})",
            req.version, req.group, req.batch, req.max_failures
        ),
        Some(&req.project),
    )
    .await;
    Ok(view)
}

/// Agents move to an older version only with a signed rollback: refuses a rollout that would
/// take a server of the group back without one.
async fn refuse_downgrade(
    state: &AppState,
    req: &SetRollout,
    release: &Release,
) -> Result<(), ServiceError> {
    let servers = state
        .store
        .list_servers(&ServerFilter {
            project: Some(req.project.clone()),
            group: Some(req.group.clone()),
        })
        .await?;
    let live = state.live.by_server();
    let newer: Vec<(String, String)> = servers
        .iter()
        .filter_map(|s| {
            let running = live
                .get(&s.id)
                .unwrap_or(&s.liveness)
                .agent_version
                .clone()?;
            (compare_versions(&req.version, &running) == Some(Ordering::Less))
                .then(|| (s.name.clone(), running))
        })
        .collect();
    let Some((name, running)) = newer.first() else {
        return Ok(());
    };
    let more = match newer.len() {
        1 => String::new(),
        n => format!(" (and {} more)", n - 1),
    };
    let v = &req.version;
    let missing = match release.rollback_expires_ms {
        Some(at) => format!(
            "the rollback manifest published for {v} expired at {}",
            rfc3339(at)
        ),
        None => format!("no rollback manifest is published for {v}"),
    };
    Err(ServiceError::Conflict {
        field: Some("version".to_owned()),
        message: format!(
            "version {v} is older than {running}, which server {name}{more} runs, and {missing}: agents move back only with a signed rollback. Sign one with `tasknode-dist rollback --version {v}`, publish it with `tasknode-console release publish FILE`, then set the rollout again"
        ),
    })
}

/// The rollouts (advanced first) of `project`, or of every project, that the caller may see.
pub async fn rollouts(
    state: &AppState,
    caller: Caller<'_>,
    project: Option<&str>,
) -> Result<Vec<RolloutView>, ServiceError> {
    let project = caller.project().or(project);
    let views = state.rollouts.tick().await?.views();
    Ok(views
        .into_iter()
        .filter(|v| project.is_none_or(|p| p == v.project))
        .collect())
}

/// The manifest text of `version` as published, for an agent asked to run it.
pub async fn manifest(state: &AppState, version: &str) -> Result<String, ServiceError> {
    manifest::release_version("version", version).map_err(|e| match e {
        ManifestError::Field { why, .. } => ServiceError::invalid("version", why),
        other => ServiceError::invalid("version", other),
    })?;
    state
        .store
        .release_manifest(version, state.clock.now_ms())
        .await?
        .ok_or_else(|| ServiceError::NotFound {
            field: Some("version".to_owned()),
            message: format!(
                "version {version} is not published on this console; publish its signed manifest with `tasknode-console release publish FILE`"
            ),
        })
}

/// Records how node `node_id`'s update went and advances the rollouts.
pub async fn report(
    state: &AppState,
    node_id: &str,
    req: &UpdateReport,
) -> Result<(), ServiceError> {
    let server = super::nodes::node_server(state, node_id).await?;
    state
        .store
        .record_update_report(server.id, req, state.clock.now_ms())
        .await?;
    let outcome = req.outcome.as_str();
    if req.outcome == UpdateOutcome::Failed {
        tracing::warn!(server = %server.name, version = %req.version, outcome = %outcome, reason = %req.reason, "agent update report");
    } else {
        tracing::info!(server = %server.name, version = %req.version, outcome = %outcome, reason = %req.reason, "agent update report");
    }
    if let Err(e) = state.rollouts.tick().await {
        tracing::warn!(error = %e, "advancing rollouts after an update report failed; will retry");
    }
    Ok(())
}

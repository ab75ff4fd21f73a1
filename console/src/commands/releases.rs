//! `tasknode-console release ...`: publish signed manifests, list releases and rollouts, pin a
//! group to a version or roll it out in batches, over the API.

use std::io::Read;
use std::path::Path;

use anyhow::Context;
use serde::Serialize;
use tasknode_protocol::manifest::{self, MAX_MANIFEST_BYTES};
use tasknode_protocol::updates::{Batch, ReleaseView, RolloutView, SetRollout};
use tasknode_protocol::validate;

use super::{print_json, print_table};
use crate::cli::{Global, ReleaseCmd};
use crate::client::AdminClient;

/// What `release list --json` prints.
#[derive(Serialize)]
struct Listing {
    releases: Vec<ReleaseView>,
    rollouts: Vec<RolloutView>,
}

pub async fn run(global: &Global, cmd: ReleaseCmd) -> anyhow::Result<()> {
    match cmd {
        ReleaseCmd::List { project, out } => {
            if let Some(p) = &project {
                validate::name("--project", p)?;
            }
            let client = AdminClient::resolve(global)?;
            let releases: Vec<ReleaseView> = client.get("/api/v1/releases", &[]).await?;
            let q: Vec<(&str, &str)> = project.iter().map(|p| ("project", p.as_str())).collect();
            let rollouts: Vec<RolloutView> = client.get("/api/v1/rollouts", &q).await?;
            if out.json {
                return print_json(&Listing { releases, rollouts });
            }
            list(releases, rollouts);
        }
        ReleaseCmd::Publish { file, out } => {
            let bytes = read_manifest(&file)?;
            let (m, _) = manifest::read_unverified(&bytes)
                .with_context(|| format!("{} is not an update manifest", file.display()))?;
            let client = AdminClient::resolve(global)?;
            let r: ReleaseView = client.post_json_text("/api/v1/releases", bytes).await?;
            if out.json {
                return print_json(&r);
            }
            if m.rollback {
                println!(
                    "published the rollback manifest of {} (channel {}); move a group back with `tasknode-console release pin --group GROUP --version {}`",
                    r.version, r.channel, r.version
                );
            } else {
                println!(
                    "published {} (channel {}, {}); offer it with `tasknode-console release rollout --group GROUP --version {} --batch 25%`",
                    r.version,
                    r.channel,
                    r.targets.join(", "),
                    r.version
                );
            }
        }
        ReleaseCmd::Pin {
            group,
            version,
            project,
            out,
        } => {
            let req = SetRollout {
                project,
                group,
                version,
                batch: Batch::All,
                max_failures: 0,
            };
            set(global, req, out.json).await?;
        }
        ReleaseCmd::Rollout {
            group,
            version,
            batch,
            max_failures,
            project,
            out,
        } => {
            let batch =
                Batch::parse(&batch).map_err(|e| anyhow::anyhow!("--batch: {}", e.message))?;
            let req = SetRollout {
                project,
                group,
                version,
                batch,
                max_failures,
            };
            set(global, req, out.json).await?;
        }
    }
    Ok(())
}

fn read_manifest(path: &Path) -> anyhow::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| {
            f.take(MAX_MANIFEST_BYTES as u64 + 1)
                .read_to_end(&mut bytes)
        })
        .with_context(|| format!("reading the manifest {}", path.display()))?;
    if bytes.len() > MAX_MANIFEST_BYTES {
        anyhow::bail!(
            "{} is larger than the {MAX_MANIFEST_BYTES} bytes a manifest may have; publish the manifest.CHANNEL.json `tasknode-dist build` wrote",
            path.display()
        );
    }
    Ok(bytes)
}

async fn set(global: &Global, req: SetRollout, json: bool) -> anyhow::Result<()> {
    validate::name("--group", &req.group)?;
    validate::name("--project", &req.project)?;
    manifest::release_version("--version", &req.version).map_err(|e| match e {
        manifest::ManifestError::Field { why, .. } => anyhow::anyhow!("--version: {why}"),
        other => anyhow::anyhow!("--version: {other}"),
    })?;
    let client = AdminClient::resolve(global)?;
    let r: RolloutView = client.post("/api/v1/rollouts", &req).await?;
    if json {
        return print_json(&r);
    }
    println!(
        "group {} ({}): {} {}: {}",
        r.group,
        r.project,
        r.version,
        r.state.as_str(),
        r.reason
    );
    println!(
        "{} of {} servers offered, {} updated, {} failed; follow it with `tasknode-console release list` and `tasknode-console server list --group {}`",
        r.admitted, r.servers, r.updated, r.failed, r.group
    );
    Ok(())
}

fn list(releases: Vec<ReleaseView>, rollouts: Vec<RolloutView>) {
    if releases.is_empty() {
        println!("no release published; publish one with `tasknode-console release publish FILE`");
    } else {
        let rows: Vec<_> = releases
            .into_iter()
            .map(|r| {
                vec![
                    r.version,
                    r.channel,
                    r.targets.join(","),
                    if r.rollback { "yes" } else { "no" }.to_owned(),
                    r.published_at,
                    r.signed_by.chars().take(16).collect(),
                ]
            })
            .collect();
        print_table(
            &[
                "VERSION",
                "CHANNEL",
                "TARGETS",
                "ROLLBACK",
                "PUBLISHED",
                "SIGNED BY",
            ],
            &rows,
        );
    }
    println!();
    if rollouts.is_empty() {
        println!(
            "no group has a rollout; start one with `tasknode-console release rollout` or `release pin`"
        );
        return;
    }
    let rows: Vec<_> = rollouts
        .into_iter()
        .map(|r| {
            vec![
                r.group,
                r.project,
                r.version,
                r.batch.to_string(),
                r.state.as_str().to_owned(),
                format!("{}/{}", r.admitted, r.servers),
                r.updated.to_string(),
                format!("{} (max {})", r.failed, r.max_failures),
                r.reason,
            ]
        })
        .collect();
    print_table(
        &[
            "GROUP", "PROJECT", "VERSION", "BATCH", "STATE", "ADMITTED", "UPDATED", "FAILED",
            "REASON",
        ],
        &rows,
    );
}

//! The build itself: every package of a release made in memory (at once where they are
//! independent, see [`crate::parallel`]), checked against what was released already, then
//! written, summed and indexed.

use std::fs;
use std::path::PathBuf;

use crate::error::BuildError;
use crate::keys::{self, ReleaseKeys};
use crate::repo;
use crate::rpm_package::{self, RpmError, RpmInputs};
use crate::target::{self, RpmTarget, Target, TargetError, Version};
use tasknode_protocol::manifest::{self, Manifest};
use tasknode_render::arch::Arch;
use tasknode_render::dist::Dist;
use tasknode_render::published::RELEASES_DIR;
use tasknode_render::templates::Templates;

use super::inputs::{check_published_arches, check_writable, read_agents};
use super::manifest::{manifest_name, update_artifact, update_binary_name};
use super::publish::Planned;
use super::{ArtifactKind, BuildOptions, BuildReport, Progress, RepoReport, repo_dir};

/// Builds every artifact of `opts`. Nothing is written until every input has been checked
/// and every package built in memory.
pub fn build(opts: &BuildOptions, progress: &dyn Progress) -> Result<BuildReport, BuildError> {
    // -- Check every input.
    let rpm_dists: Vec<Dist> = opts.targets.iter().filter_map(|t| t.dist()).collect();
    let keys = match (&opts.keys, rpm_dists.is_empty()) {
        (Some(dir), _) => Some(ReleaseKeys::load(dir)?),
        (None, true) => None,
        (None, false) => {
            return Err(BuildError::NoKeys {
                targets: rpm_dists
                    .iter()
                    .map(|d| d.name())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
    };
    let agents = read_agents(&opts.agents, &opts.version)?;
    let console = match &opts.console {
        Some(path) => Some(crate::console_package::read(path)?),
        None => None,
    };
    let docs = if rpm_dists.is_empty() && !opts.targets.contains(&Target::Deb) {
        crate::docs::AgentDocs::default()
    } else {
        // The pages describe the command line, the same on every architecture: made by the
        // agent that runs on this host.
        let runs_here = agents
            .iter()
            .find(|a| Some(a.arch) == Arch::host())
            .unwrap_or(&agents[0]);
        crate::docs::AgentDocs::from_agent(&runs_here.path, &runs_here.bytes, opts.source_date)?
    };
    let templates = match &opts.templates_dir {
        Some(d) => Templates::with_overrides(d)?,
        None => Templates::embedded()?,
    };
    let facts = target::rpm_targets()?;
    check_writable(&opts.out)?;
    check_published_arches(&opts.out, &agents, &opts.version)?;
    let with_deb = opts.targets.contains(&Target::Deb);
    if with_deb {
        crate::deb::check_tool()?;
    }
    if let Some(keys) = &keys {
        let path = opts.out.join(keys::PACKAGE_PUBLIC);
        if let Ok(text) = fs::read_to_string(&path) {
            let found = keys::public_key_fingerprint(&text).unwrap_or_else(|| "unreadable".into());
            if found != keys.package_fingerprint {
                return Err(BuildError::OtherKey {
                    path,
                    found,
                    expected: keys.package_fingerprint.clone(),
                });
            }
        }
    }
    // Each dist's RPMs: one per architecture both the dist and this build have.
    let mut rpms: Vec<(&RpmTarget, Arch)> = Vec::new();
    for dist in &rpm_dists {
        let target: &RpmTarget = facts
            .get(dist)
            .ok_or_else(|| TargetError::Unknown(dist.to_string()))?;
        for a in &agents {
            if target.arches.contains(&a.arch) {
                rpms.push((target, a.arch));
            }
        }
    }

    let per_arch = 1 + u64::from(with_deb);
    let steps = 1 + agents.len() as u64 * per_arch + rpms.len() as u64 * 2;
    progress.start(steps);
    let version = opts.version.as_str();
    let release_dir = opts.out.join(RELEASES_DIR).join(version);
    let mut planned = Vec::new();

    // -- Build in memory, the independent parts at once (see crate::parallel).
    // The tarballs (gzip at its best, slow) are made beside the RPMs.
    let tarballs = || {
        crate::parallel::map(opts.jobs, &agents, |a| {
            let bytes = agent_tarball(&a.bytes, &opts.version, opts.source_date)?;
            progress.step(&format!("{} agent tarball", a.arch));
            Ok::<_, BuildError>(bytes)
        })
    };
    let signature_time = keys
        .as_ref()
        .map_or(opts.source_date, |k| k.signature_time(opts.source_date));
    let signer = keys.as_ref().map(ReleaseKeys::package_signer);
    // Every RPM, the agent's and the console's: headers first, then each distinct payload
    // compressed once and every package signed (see crate::rpm_payload).
    let rpms_built = || {
        let Some(signer) = signer else {
            return Ok((Vec::new(), Vec::new()));
        };
        let unsealed = crate::parallel::map(opts.jobs, &rpms, |(target, arch)| {
            let agent = agents
                .iter()
                .find(|a| a.arch == *arch)
                .map(|a| a.bytes.as_slice())
                .unwrap_or_default();
            let agent_rpm = rpm_package::unsealed(
                &templates,
                &RpmInputs {
                    target,
                    version: &opts.version,
                    arch: *arch,
                    agent,
                    docs: &docs,
                    source_date: opts.source_date,
                },
            )?;
            // The console is packaged for x86_64 only.
            let console_rpm = match console
                .as_deref()
                .filter(|_| target.console && *arch == Arch::X86_64)
            {
                Some(console) => Some(crate::console_package::unsealed_rpm(
                    &templates,
                    &crate::console_package::RpmInputs {
                        target,
                        version: &opts.version,
                        arch: *arch,
                        console,
                        source_date: opts.source_date,
                    },
                )?),
                None => None,
            };
            Ok::<_, BuildError>((agent_rpm, console_rpm))
        })?;
        // One list to seal: the agent RPMs in the order of `rpms`, then the console RPMs.
        let (mut packages, consoles): (Vec<_>, Vec<_>) = unsealed.into_iter().unzip();
        let with_console: Vec<bool> = consoles.iter().map(Option::is_some).collect();
        packages.extend(consoles.into_iter().flatten());
        // A step for each agent RPM, as it is signed.
        let step = |i: usize| {
            if let Some((target, arch)) = rpms.get(i) {
                progress.step(&format!("{} {arch} RPM", target.dist));
            }
        };
        let sealed =
            crate::rpm_payload::seal_all(opts.jobs, &packages, signer, signature_time, &step)
                .map_err(RpmError::Seal)?;
        let mut sealed = sealed.into_iter();
        let agent_rpms: Vec<Vec<u8>> = sealed.by_ref().take(rpms.len()).collect();
        let console_rpms: Vec<Option<Vec<u8>>> = with_console
            .iter()
            .map(|&with| if with { sealed.next() } else { None })
            .collect();
        Ok::<_, BuildError>((agent_rpms, console_rpms))
    };
    let (tarballs, built) = crate::parallel::join(opts.jobs, tarballs, rpms_built);
    let (tarballs, (agent_rpms, console_rpms)) = (tarballs?, built?);
    for (a, tarball) in agents.iter().zip(tarballs) {
        planned.push(Planned {
            kind: ArtifactKind::Tarball,
            path: release_dir.join(format!("tasknode-{version}-{}-linux-musl.tar.gz", a.arch)),
            bytes: tarball,
            mode: 0o644,
        });
        planned.push(Planned {
            kind: ArtifactKind::Binary,
            path: release_dir.join(update_binary_name(a.arch)),
            bytes: a.bytes.clone(),
            mode: 0o755,
        });
    }
    if let Some(keys) = &keys {
        let manifest = Manifest {
            format: manifest::FORMAT,
            channel: opts.channel.clone(),
            version: version.to_owned(),
            rollback: false,
            issued_ms: i64::from(opts.source_date) * 1000,
            expires_ms: None,
            artifacts: agents
                .iter()
                .map(|a| update_artifact(version, a.arch, &a.bytes))
                .collect(),
        };
        planned.push(Planned {
            kind: ArtifactKind::Manifest,
            path: release_dir.join(manifest_name(&opts.channel, false)),
            bytes: manifest
                .sign(&keys.manifest)
                .map_err(|e| BuildError::Manifest(e.to_string()))?
                .into_bytes(),
            mode: 0o644,
        });
    }

    for (((target, arch), bytes), console_rpm) in rpms.iter().zip(agent_rpms).zip(console_rpms) {
        planned.push(Planned {
            kind: ArtifactKind::Rpm,
            path: repo_dir(&opts.out, target.dist, *arch).join(rpm_package::file_name(
                &opts.version,
                target,
                *arch,
            )),
            bytes,
            mode: 0o644,
        });
        let Some(bytes) = console_rpm else {
            continue;
        };
        planned.push(Planned {
            kind: ArtifactKind::ConsoleRpm,
            path: repo_dir(&opts.out, target.dist, *arch).join(
                crate::console_package::rpm_file_name(&opts.version, target, *arch),
            ),
            bytes,
            mode: 0o644,
        });
    }

    if with_deb {
        for a in &agents {
            progress.step(&format!("{} deb", a.arch.deb()));
            let bytes = crate::deb::build(
                &templates,
                &a.bytes,
                a.arch,
                &docs,
                &opts.version,
                opts.source_date,
                &opts.workspace,
            )?;
            planned.push(Planned {
                kind: ArtifactKind::Deb,
                path: release_dir.join(crate::deb::file_name(&opts.version, a.arch)),
                bytes,
                mode: 0o644,
            });
        }
        if let Some(console) = &console {
            let bytes = crate::console_package::build_deb(
                &templates,
                console,
                &opts.version,
                opts.source_date,
                &opts.workspace,
            )?;
            planned.push(Planned {
                kind: ArtifactKind::ConsoleDeb,
                path: release_dir.join(crate::console_package::deb_file_name(&opts.version)),
                bytes,
                mode: 0o644,
            });
        }
    }

    let artifacts = super::publish::publish(
        opts,
        &planned,
        keys.as_ref(),
        &agents,
        &release_dir,
        progress,
    )?;

    // -- Index each repository the build added to.
    let mut repositories = Vec::new();
    if let Some(signer) = signer {
        // One repository per job; the threads left over read each one's packages.
        let per_repo = std::num::NonZeroUsize::new(opts.jobs.get() / rpms.len().max(1))
            .unwrap_or(std::num::NonZeroUsize::MIN);
        repositories = crate::parallel::map(opts.jobs, &rpms, |(target, arch)| {
            let dir = repo_dir(&opts.out, target.dist, *arch);
            let indexed =
                repo::index_with_jobs(&dir, opts.source_date, signature_time, signer, per_repo)?;
            progress.step(&format!("{} {arch} repodata", target.dist));
            Ok::<_, BuildError>(RepoReport {
                dist: target.dist,
                arch: *arch,
                path: dir,
                indexed,
            })
        })?;
    }
    progress.finish();
    Ok(BuildReport {
        version: version.to_owned(),
        source_date: opts.source_date,
        artifacts,
        repositories,
    })
}

/// tasknode-VERSION-x86_64-linux-musl.tar.gz: the agent under tasknode-VERSION/, with fixed
/// owner, mode and time, gzip without a timestamp.
fn agent_tarball(agent: &[u8], version: &Version, source_date: u32) -> Result<Vec<u8>, BuildError> {
    let gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::best());
    let mut tar = tar::Builder::new(gz);
    tar.mode(tar::HeaderMode::Deterministic);
    let mut header = tar::Header::new_gnu();
    header.set_size(agent.len() as u64);
    header.set_mode(0o755);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(u64::from(source_date));
    header.set_entry_type(tar::EntryType::Regular);
    let path = format!("tasknode-{version}/tasknode");
    let err = |e: std::io::Error| BuildError::Io {
        path: PathBuf::from(&path),
        source: e,
    };
    tar.append_data(&mut header, &path, agent).map_err(err)?;
    let gz = tar.into_inner().map_err(err)?;
    gz.finish().map_err(err)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_tarball_depends_only_on_its_inputs() {
        let v = Version::parse("1.2.0").unwrap();
        let a = agent_tarball(b"binary", &v, 1_700_000_000).unwrap();
        let b = agent_tarball(b"binary", &v, 1_700_000_000).unwrap();
        assert_eq!(a, b);
        let c = agent_tarball(b"binary", &v, 1_700_000_001).unwrap();
        assert_ne!(a, c);
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(a.as_slice()));
        let entry = archive.entries().unwrap().next().unwrap().unwrap();
        assert_eq!(
            entry.path().unwrap().to_str(),
            Some("tasknode-1.2.0/tasknode")
        );
        assert_eq!(entry.header().mode().unwrap(), 0o755);
        assert_eq!(entry.header().mtime().unwrap(), 1_700_000_000);
    }
}

//! What a release is made from, read and checked before anything is built: the static agents
//! (one per architecture, each carrying the version), the source date, the release directory;
//! or the agent compiled here with cargo.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::BuildError;
use crate::target::Version;
use tasknode_render::arch::Arch;
use tasknode_render::published::AGENTS_DIR;

/// The source date: `explicit`, else SOURCE_DATE_EPOCH, else the commit time of HEAD in `dir`.
pub fn source_date(explicit: Option<u32>, dir: &Path) -> Result<u32, BuildError> {
    if let Some(d) = explicit {
        return Ok(d);
    }
    if let Ok(v) = std::env::var("SOURCE_DATE_EPOCH") {
        return v.trim().parse().map_err(|_| BuildError::Tool {
            what: "SOURCE_DATE_EPOCH".to_owned(),
            why: format!("{v:?} is not a number of seconds"),
        });
    }
    let out = std::process::Command::new("git")
        .args(["log", "-1", "--format=%ct"])
        .current_dir(dir)
        .output()
        .map_err(|_| BuildError::NoSourceDate)?;
    if !out.status.success() {
        return Err(BuildError::NoSourceDate);
    }
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|_| BuildError::NoSourceDate)
}

/// The cargo profile of the static agent (the root Cargo.toml: release, built for size).
const AGENT_PROFILE: &str = "agent";

/// Compiles the static agent for `arch` with `version` embedded, trusting the update-manifest
/// keys `trusted` (hex), in the workspace at `workspace`, and returns the path of the binary.
/// The C compiler and linker of each target are set in the workspace's .cargo/config.toml.
pub fn compile_agent(
    workspace: &Path,
    version: &Version,
    trusted: &[String],
    arch: Arch,
) -> Result<PathBuf, BuildError> {
    let target = arch.rust_target();
    let needs = match arch {
        Arch::X86_64 => "musl-gcc (Debian: musl-tools)",
        Arch::Aarch64 => "aarch64-linux-gnu-gcc (Debian: gcc-aarch64-linux-gnu)",
    };
    cargo_build(
        workspace,
        &CargoBuild {
            package: "tasknode",
            profile: AGENT_PROFILE,
            target,
            env: &[
                ("TASKNODE_VERSION", version.as_str()),
                ("TASKNODE_TRUSTED_KEYS", &trusted.join(",")),
            ],
            what: "the agent",
            needs,
        },
    )
}

/// One static binary for `cargo_build` to make.
pub(crate) struct CargoBuild<'a> {
    pub(crate) package: &'a str,
    pub(crate) profile: &'a str,
    pub(crate) target: &'a str,
    pub(crate) env: &'a [(&'a str, &'a str)],
    /// What it is, for messages ("the agent").
    pub(crate) what: &'a str,
    /// The C toolchain the target needs, for the message when the build fails.
    pub(crate) needs: &'a str,
}

/// Builds `b.package` for `b.target` with `b.profile` in `workspace` and returns the binary's
/// path.
pub(crate) fn cargo_build(workspace: &Path, b: &CargoBuild) -> Result<PathBuf, BuildError> {
    let status = std::process::Command::new(std::env::var("CARGO").unwrap_or("cargo".into()))
        .args([
            "build",
            "--profile",
            b.profile,
            "--locked",
            "-p",
            b.package,
            "--target",
            b.target,
        ])
        .envs(b.env.iter().copied())
        .current_dir(workspace)
        .status()
        .map_err(|e| BuildError::Tool {
            what: "cargo build".to_owned(),
            why: format!("{e}; install Rust (https://rustup.rs)"),
        })?;
    if !status.success() {
        return Err(BuildError::Tool {
            what: format!("cargo build of {}", b.what),
            why: format!(
                "failed ({status}); it needs `rustup target add {}` and {}",
                b.target, b.needs
            ),
        });
    }
    Ok(workspace
        .join("target")
        .join(b.target)
        .join(b.profile)
        .join(b.package))
}

/// One agent of the release, read and checked.
#[derive(Debug)]
pub(super) struct ReleaseAgent {
    pub(super) arch: Arch,
    pub(super) path: PathBuf,
    pub(super) bytes: Vec<u8>,
}

/// Reads every agent, one per architecture, in the order of [`Arch::ALL`].
pub(super) fn read_agents(
    paths: &[PathBuf],
    version: &Version,
) -> Result<Vec<ReleaseAgent>, BuildError> {
    if paths.is_empty() {
        return Err(BuildError::Agent {
            path: PathBuf::new(),
            why: "no agent given; pass --agent, or leave it out to have the agents built"
                .to_owned(),
        });
    }
    let mut agents: Vec<ReleaseAgent> = Vec::new();
    for path in paths {
        let (arch, bytes) = read_agent(path, version)?;
        if let Some(other) = agents.iter().find(|a| a.arch == arch) {
            return Err(BuildError::Agent {
                path: path.clone(),
                why: format!(
                    "{} is the {arch} agent already; give one agent per architecture",
                    other.path.display()
                ),
            });
        }
        agents.push(ReleaseAgent {
            arch,
            path: path.clone(),
            bytes,
        });
    }
    agents.sort_by_key(|a| a.arch);
    Ok(agents)
}

/// Reads an agent and checks it is a static ELF of an architecture agents are built for,
/// carrying `version`.
pub(super) fn read_agent(path: &Path, version: &Version) -> Result<(Arch, Vec<u8>), BuildError> {
    let bad = |why: String| BuildError::Agent {
        path: path.to_owned(),
        why,
    };
    let bytes = fs::read(path).map_err(|e| bad(format!("{e}")))?;
    let Some(arch) = Arch::of_elf(&bytes) else {
        return Err(bad(
            "not an x86_64 or aarch64 ELF executable; build it with `cargo build --profile agent --target x86_64-unknown-linux-musl -p tasknode` (or aarch64-unknown-linux-musl)".to_owned(),
        ));
    };
    match tasknode_protocol::agent_version_in(&bytes) {
        Some(v) if v == version.as_str() => Ok((arch, bytes)),
        Some(v) => Err(bad(format!(
            "it is agent version {v}, not {version}; build it with TASKNODE_VERSION={version}, or leave out --agent to have it built"
        ))),
        None => Err(bad(
            "it carries no tasknode agent version: it is not an agent built from this workspace"
                .to_owned(),
        )),
    }
}

/// Creates `out` if needed and proves a file can be made in it.
pub(super) fn check_writable(out: &Path) -> Result<(), BuildError> {
    let unwritable = |source| BuildError::Unwritable {
        path: out.to_owned(),
        source,
    };
    fs::create_dir_all(out).map_err(unwritable)?;
    let probe = out.join(format!(".tasknode-dist-probe-{}", std::process::id()));
    fs::write(&probe, b"").map_err(unwritable)?;
    fs::remove_file(&probe).map_err(unwritable)
}

/// Whether `version` goes to OUT/agents/ for install scripts: unless a newer version is there.
pub(super) fn publishes_agents(out: &Path, version: &Version) -> bool {
    !Arch::ALL.into_iter().any(|arch| {
        let path = out
            .join(AGENTS_DIR)
            .join(tasknode_render::artifacts::file_name(arch));
        fs::read(&path).ok().is_some_and(|existing| {
            tasknode_protocol::agent_version_in(&existing)
                .and_then(|v| Version::parse(v).ok())
                .is_some_and(|v| v > *version)
        })
    })
}

/// A console serves its install scripts one version for every architecture: a build that
/// publishes its agents must bring every architecture OUT/agents/ holds at another version.
pub(super) fn check_published_arches(
    out: &Path,
    agents: &[ReleaseAgent],
    version: &Version,
) -> Result<(), BuildError> {
    if !publishes_agents(out, version) {
        return Ok(());
    }
    for arch in Arch::ALL {
        if agents.iter().any(|a| a.arch == arch) {
            continue;
        }
        let path = out
            .join(AGENTS_DIR)
            .join(tasknode_render::artifacts::file_name(arch));
        let Ok(existing) = fs::read(&path) else {
            continue;
        };
        let found = tasknode_protocol::agent_version_in(&existing).unwrap_or("of no version");
        if found != version.as_str() {
            return Err(BuildError::ArchMissing {
                path,
                found: found.to_owned(),
                arch,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn fake_agent(dir: &Path, name: &str, machine: u8, version: &str) -> PathBuf {
        let mut elf = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x02\0".to_vec();
        elf.extend_from_slice(&[machine, 0]);
        elf.extend_from_slice(tasknode_protocol::AGENT_VERSION_MARKER);
        elf.extend_from_slice(version.as_bytes());
        elf.push(0);
        let path = dir.join(name);
        fs::write(&path, &elf).unwrap();
        path
    }

    #[test]
    fn agents_are_one_per_architecture_and_read_in_build_order() {
        let dir = tempfile::tempdir().unwrap();
        let v = Version::parse("1.0.0").unwrap();
        let arm = fake_agent(dir.path(), "arm", 0xb7, "1.0.0");
        let x86 = fake_agent(dir.path(), "x86", 0x3e, "1.0.0");
        let x86_again = fake_agent(dir.path(), "x86-again", 0x3e, "1.0.0");
        let agents = read_agents(&[arm.clone(), x86.clone()], &v).unwrap();
        let arches: Vec<Arch> = agents.iter().map(|a| a.arch).collect();
        assert_eq!(arches, [Arch::X86_64, Arch::Aarch64]);
        let e = read_agents(&[x86, arm, x86_again], &v)
            .unwrap_err()
            .to_string();
        assert!(e.contains("is the x86_64 agent already"), "{e}");
    }

    #[test]
    fn a_release_leaving_out_an_architecture_install_scripts_serve_is_refused() {
        let out = tempfile::tempdir().unwrap();
        let agents_dir = out.path().join("agents");
        fs::create_dir_all(&agents_dir).unwrap();
        let x86 = fake_agent(out.path(), "x86", 0x3e, "1.1.0");
        let v = Version::parse("1.1.0").unwrap();
        let agents = read_agents(&[x86], &v).unwrap();
        // No aarch64 agent served yet: fine.
        check_published_arches(out.path(), &agents, &v).unwrap();
        // An aarch64 agent of an older version is served: this build would mix versions.
        fake_agent(&agents_dir, "tasknode-aarch64", 0xb7, "1.0.0");
        let e = check_published_arches(out.path(), &agents, &v).unwrap_err();
        assert!(
            matches!(&e, BuildError::ArchMissing { arch: Arch::Aarch64, found, .. } if found == "1.0.0"),
            "{e}"
        );
        // Of this version (a second build of it): fine; of a newer one: nothing is published.
        fake_agent(&agents_dir, "tasknode-aarch64", 0xb7, "1.1.0");
        check_published_arches(out.path(), &agents, &v).unwrap();
        fake_agent(&agents_dir, "tasknode-aarch64", 0xb7, "1.2.0");
        assert!(!publishes_agents(out.path(), &v));
        check_published_arches(out.path(), &agents, &v).unwrap();
    }

    #[test]
    fn an_agent_of_another_version_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasknode");
        let mut elf = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x02\0\x3e\0".to_vec();
        elf.extend_from_slice(tasknode_protocol::AGENT_VERSION_MARKER);
        elf.extend_from_slice(b"1.0.0\0");
        fs::write(&path, &elf).unwrap();
        let e = read_agent(&path, &Version::parse("1.1.0").unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("1.0.0, not 1.1.0") && e.contains("TASKNODE_VERSION=1.1.0"),
            "{e}"
        );
        read_agent(&path, &Version::parse("1.0.0").unwrap()).unwrap();
        fs::write(&path, b"#!/bin/sh\n").unwrap();
        let e = read_agent(&path, &Version::parse("1.0.0").unwrap()).unwrap_err();
        assert!(
            e.to_string().contains("not an x86_64 or aarch64 ELF"),
            "{e}"
        );
    }
}

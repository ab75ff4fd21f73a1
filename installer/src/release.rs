//! `tasknode-dist build`: one version in, every artifact the fleet needs out.
//!
//! ```text
//! OUT/RPM-GPG-KEY-tasknode                      the package key, as yum imports it
//! OUT/agents/tasknode-ARCH                      the newest agent, as install scripts fetch it
//! OUT/releases/VERSION/tasknode-VERSION-ARCH-linux-musl.tar.gz
//! OUT/releases/VERSION/tasknode_VERSION-1_DEBARCH.deb
//! OUT/releases/VERSION/tasknode-RUST_TARGET    the agent, as self-updates fetch it
//! OUT/releases/VERSION/manifest.CHANNEL.json   the signed update manifest (with --keys)
//! OUT/manifest-signing.public.pem               the key manifests are signed with
//! OUT/releases/VERSION/SHA256SUMS               of the release's files, paths relative to OUT
//! OUT/repo/DIST/ARCH/tasknode-VERSION-1.DIST.ARCH.rpm + repodata/ (+ repomd.xml.asc)
//! OUT/repo/DIST/x86_64/tasknode-console-VERSION-1.DIST.x86_64.rpm   (el7, al8; with a console)
//! OUT/releases/VERSION/tasknode-console_VERSION-1_amd64.deb          (with a console)
//! ```
//!
//! ARCH is each architecture of the agents built ([`Arch`]: x86_64, aarch64), DEBARCH its
//! Debian name (amd64, arm64). One manifest lists every architecture's binary, one SHA256SUMS
//! every file of the release; each dist gets the RPMs of the architectures rpm/targets.toml
//! gives it, each in a repository of its own, as yum's `$basearch` finds it.
//!
//! Everything is checked before anything is written; every file is written under a temporary
//! name and renamed into place; a version already built is never changed (building it again
//! from the same tree gives the same bytes, which is allowed). Times come from one source date,
//! so two builds of a version are byte-identical, signatures included.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::arch::Arch;
use crate::keys::{self, KeyError, ReleaseKeys};
use crate::repo::{self, Indexed, RepoError};
use crate::rpm_package::{self, RpmError, RpmInputs};
use crate::target::{self, RpmTarget, TargetError, Version};
use crate::templates::{TemplateError, Templates};
use tasknode_protocol::manifest::{self, Manifest};

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error(transparent)]
    Rpm(#[from] RpmError),
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error("--keys is required to build {targets}: RPMs and their repositories are signed")]
    NoKeys { targets: String },
    #[error("--out {path} cannot be written: {source}; choose a directory you can write")]
    Unwritable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--agent {path}: {why}")]
    Agent { path: PathBuf, why: String },
    #[error(
        "{path} is agent {found} and this release has no {arch} agent: install scripts are served one version for every architecture; give an --agent for {arch} too (or build without --agent, which builds them all)"
    )]
    ArchMissing {
        path: PathBuf,
        found: String,
        arch: Arch,
    },
    #[error("--console {path}: {why}")]
    Console { path: PathBuf, why: String },
    #[error(transparent)]
    Docs(#[from] crate::docs::DocsError),
    #[error(
        "{path} already exists with other content: version {version} was released already; build a new version instead of changing it"
    )]
    Released { path: PathBuf, version: String },
    #[error(
        "{path} is another key (fingerprint {found}) than --keys ({expected}): hosts trust the key this directory was first released with; use those keys, or another --out"
    )]
    OtherKey {
        path: PathBuf,
        found: String,
        expected: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {why}")]
    Tool { what: String, why: String },
    #[error("signing the update manifest: {0}")]
    Manifest(String),
    #[error(
        "version {version} was not built in {out}: {path} is missing; build it first with `tasknode-dist build --version {version} --out {out}`"
    )]
    NotBuilt {
        version: String,
        out: PathBuf,
        path: PathBuf,
    },
    #[error(
        "no source date: set SOURCE_DATE_EPOCH or --source-date-epoch (the commit time, `git log -1 --format=%ct`, is used inside a git checkout)"
    )]
    NoSourceDate,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BuildError + '_ {
    move |source| BuildError::Io {
        path: path.to_owned(),
        source,
    }
}

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub out: PathBuf,
    pub version: Version,
    pub targets: Vec<&'static str>,
    pub keys: Option<PathBuf>,
    /// The static agents, one per architecture (read from each ELF header); each must carry
    /// `version`.
    pub agents: Vec<PathBuf>,
    /// The static x86_64 console, packaged as tasknode-console (see [`crate::console_package`]);
    /// without it the release holds no console packages.
    pub console: Option<PathBuf>,
    /// Seconds since the epoch: build time, file times, signature times.
    pub source_date: u32,
    /// Templates (embedded unless overridden).
    pub templates_dir: Option<PathBuf>,
    /// The workspace (cargo-deb reads agent/Cargo.toml there).
    pub workspace: PathBuf,
    /// The update channel the manifest is signed for.
    pub channel: String,
    /// How many packages, signatures and indexes are made at once; any number gives the same
    /// bytes.
    pub jobs: std::num::NonZeroUsize,
}

/// One file the build wrote (or found identical).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Artifact {
    pub kind: String,
    pub path: PathBuf,
    pub size: u64,
    pub sha256: String,
}

/// What `build` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BuildReport {
    pub version: String,
    pub source_date: u32,
    pub artifacts: Vec<Artifact>,
    pub repositories: Vec<RepoReport>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct RepoReport {
    pub dist: String,
    pub arch: Arch,
    pub path: PathBuf,
    #[serde(flatten)]
    pub indexed: Indexed,
}

/// Observes the steps of a build (progress bars in the CLI; nothing in the library). Steps
/// that run at once report from their own threads, each when it is done.
pub trait Progress: Sync {
    fn start(&self, steps: u64);
    fn step(&self, what: &str);
    fn finish(&self);
}

/// No progress output.
#[derive(Debug)]
pub struct Quiet;

impl Progress for Quiet {
    fn start(&self, _: u64) {}
    fn step(&self, _: &str) {}
    fn finish(&self) {}
}

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

/// A file to write: its final path and bytes.
struct Planned {
    kind: &'static str,
    path: PathBuf,
    bytes: Vec<u8>,
    mode: u32,
}

/// Builds every artifact of `opts`. Nothing is written until every input has been checked
/// and every package built in memory.
pub fn build(opts: &BuildOptions, progress: &dyn Progress) -> Result<BuildReport, BuildError> {
    // -- Check every input.
    let rpm_dists: Vec<&str> = opts
        .targets
        .iter()
        .copied()
        .filter(|t| *t != "deb")
        .collect();
    let keys = match (&opts.keys, rpm_dists.is_empty()) {
        (Some(dir), _) => Some(ReleaseKeys::load(dir)?),
        (None, true) => None,
        (None, false) => {
            return Err(BuildError::NoKeys {
                targets: rpm_dists.join(", "),
            });
        }
    };
    let agents = read_agents(&opts.agents, &opts.version)?;
    let console = match &opts.console {
        Some(path) => Some(crate::console_package::read(path)?),
        None => None,
    };
    let docs = if rpm_dists.is_empty() && !opts.targets.contains(&"deb") {
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
    let with_deb = opts.targets.contains(&"deb");
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
            .get(*dist)
            .ok_or_else(|| TargetError::Unknown((*dist).to_owned()))?;
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
    let release_dir = opts.out.join("releases").join(version);
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
    let mut signer = None;
    if let Some(keys) = &keys {
        signer = Some(keys.package_signer().map_err(|e| {
            BuildError::Key(KeyError::WrongKey {
                path: opts
                    .keys
                    .clone()
                    .unwrap_or_default()
                    .join(keys::PACKAGE_SECRET),
                why: e.to_string(),
            })
        })?);
    }
    let rpms_built = || {
        crate::parallel::map(opts.jobs, &rpms, |(target, arch)| {
            let Some(signer) = &signer else {
                return Ok(None);
            };
            let agent = agents
                .iter()
                .find(|a| a.arch == *arch)
                .map(|a| a.bytes.as_slice())
                .unwrap_or_default();
            let bytes = rpm_package::build(
                &templates,
                &RpmInputs {
                    target,
                    version: &opts.version,
                    arch: arch.uname(),
                    agent,
                    docs: &docs,
                    source_date: opts.source_date,
                    signature_time,
                },
                signer,
            )?;
            progress.step(&format!("{} {arch} RPM", target.dist));
            Ok::<_, BuildError>(Some(bytes))
        })
    };
    let (tarballs, built) = crate::parallel::join(opts.jobs, tarballs, rpms_built);
    let (tarballs, built) = (tarballs?, built?);
    for (a, tarball) in agents.iter().zip(tarballs) {
        planned.push(Planned {
            kind: "tarball",
            path: release_dir.join(format!("tasknode-{version}-{}-linux-musl.tar.gz", a.arch)),
            bytes: tarball,
            mode: 0o644,
        });
        planned.push(Planned {
            kind: "binary",
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
            kind: "manifest",
            path: release_dir.join(manifest_name(&opts.channel, false)),
            bytes: manifest
                .sign(&keys.manifest)
                .map_err(|e| BuildError::Manifest(e.to_string()))?
                .into_bytes(),
            mode: 0o644,
        });
    }

    for ((target, arch), bytes) in rpms.iter().zip(built) {
        let Some(bytes) = bytes else {
            continue;
        };
        planned.push(Planned {
            kind: "rpm",
            path: repo_dir(&opts.out, &target.dist, *arch).join(rpm_package::file_name(
                &opts.version,
                target,
                arch.uname(),
            )),
            bytes,
            mode: 0o644,
        });
        // The console is packaged for x86_64 only (an RPM was built: there is a signer).
        if let (Some(console), Some(signer)) = (
            console
                .as_deref()
                .filter(|_| target.console && *arch == Arch::X86_64),
            signer.as_ref(),
        ) {
            let bytes = crate::console_package::build_rpm(
                &templates,
                &crate::console_package::RpmInputs {
                    target,
                    version: &opts.version,
                    arch: arch.uname(),
                    console,
                    source_date: opts.source_date,
                    signature_time,
                },
                signer,
            )?;
            planned.push(Planned {
                kind: "console-rpm",
                path: repo_dir(&opts.out, &target.dist, *arch).join(
                    crate::console_package::rpm_file_name(&opts.version, target, arch.uname()),
                ),
                bytes,
                mode: 0o644,
            });
        }
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
                kind: "deb",
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
                kind: "console-deb",
                path: release_dir.join(crate::console_package::deb_file_name(&opts.version)),
                bytes,
                mode: 0o644,
            });
        }
    }

    // -- Refuse to change a released version, before writing anything.
    for p in &planned {
        if let Ok(existing) = fs::read(&p.path)
            && existing != p.bytes
        {
            return Err(BuildError::Released {
                path: p.path.clone(),
                version: version.to_owned(),
            });
        }
    }

    // -- Write.
    let mut artifacts = Vec::new();
    if let Some(keys) = &keys {
        let key_path = opts.out.join(keys::PACKAGE_PUBLIC);
        write_atomic(&key_path, keys.package_public.as_bytes(), 0o644)?;
        artifacts.push(artifact("key", &key_path, keys.package_public.as_bytes()));
        let pem = keys.manifest_public_pem()?;
        let key_path = opts.out.join(keys::MANIFEST_PUBLIC);
        write_atomic(&key_path, pem.as_bytes(), 0o644)?;
        artifacts.push(artifact("key", &key_path, pem.as_bytes()));
    }
    // Each file is synced before its rename: those waits overlap (the file system commits
    // them together), unless the build runs on one thread.
    let at_once = if opts.jobs.get() == 1 {
        opts.jobs
    } else {
        std::num::NonZeroUsize::new(planned.len()).unwrap_or(opts.jobs)
    };
    artifacts.extend(crate::parallel::map(at_once, &planned, |p| {
        write_atomic(&p.path, &p.bytes, p.mode)?;
        Ok::<_, BuildError>(artifact(p.kind, &p.path, &p.bytes))
    })?);
    progress.step("agents for install scripts");
    if publishes_agents(&opts.out, &opts.version) {
        for a in &agents {
            let path = opts
                .out
                .join("agents")
                .join(crate::artifacts::file_name(a.arch.uname()));
            write_atomic(&path, &a.bytes, 0o755)?;
            artifacts.push(artifact("agent", &path, &a.bytes));
        }
    }

    // SHA256SUMS of the release's own files, by their path in OUT: `sha256sum -c
    // releases/VERSION/SHA256SUMS` in OUT checks them.
    let sums: String = artifacts
        .iter()
        .filter(|a| a.kind != "key" && a.kind != "agent")
        .map(|a| {
            let rel = a.path.strip_prefix(&opts.out).unwrap_or(&a.path);
            format!("{}  {}\n", a.sha256, rel.display())
        })
        .collect();
    let sums_path = release_dir.join("SHA256SUMS");
    write_atomic(&sums_path, sums.as_bytes(), 0o644)?;
    artifacts.push(artifact("sums", &sums_path, sums.as_bytes()));

    // -- Index each repository the build added to.
    let mut repositories = Vec::new();
    if let Some(signer) = &signer {
        // One repository per job; the threads left over read each one's packages.
        let per_repo = std::num::NonZeroUsize::new(opts.jobs.get() / rpms.len().max(1))
            .unwrap_or(std::num::NonZeroUsize::MIN);
        repositories = crate::parallel::map(opts.jobs, &rpms, |(target, arch)| {
            let dir = repo_dir(&opts.out, &target.dist, *arch);
            let indexed =
                repo::index_with_jobs(&dir, opts.source_date, signature_time, signer, per_repo)?;
            progress.step(&format!("{} {arch} repodata", target.dist));
            Ok::<_, BuildError>(RepoReport {
                dist: target.dist.clone(),
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

/// The file name of the agent binary for `arch` that self-updates download.
pub fn update_binary_name(arch: Arch) -> String {
    format!("tasknode-{}", arch.rust_target())
}

/// The file name of a release's manifest for `channel` (a rollback manifest, or the one
/// `build` signs).
pub fn manifest_name(channel: &str, rollback: bool) -> String {
    if rollback {
        format!("rollback.{channel}.json")
    } else {
        format!("manifest.{channel}.json")
    }
}

fn update_artifact(version: &str, arch: Arch, agent: &[u8]) -> manifest::Artifact {
    manifest::Artifact {
        target: arch.rust_target().to_owned(),
        url: format!("releases/{version}/{}", update_binary_name(arch)),
        size: agent.len() as u64,
        sha256: hex::encode(Sha256::digest(agent)),
    }
}

/// What `rollback` wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RollbackReport {
    pub version: String,
    pub channel: String,
    pub path: PathBuf,
    pub expires_ms: i64,
}

/// Signs a rollback manifest for a version already built in `out`: it lets agents that run a
/// newer version move back to `version` until `now_ms + life_ms`.
pub fn sign_rollback(
    out: &Path,
    keys_dir: &Path,
    version: &Version,
    channel: &str,
    now_ms: i64,
    life_ms: i64,
) -> Result<RollbackReport, BuildError> {
    let keys = ReleaseKeys::load(keys_dir)?;
    let release_dir = out.join("releases").join(version.as_str());
    // Every architecture the release was built for.
    let mut artifacts = Vec::new();
    for arch in Arch::ALL {
        let path = release_dir.join(update_binary_name(arch));
        if let Ok(agent) = fs::read(&path) {
            artifacts.push(update_artifact(version.as_str(), arch, &agent));
        }
    }
    if artifacts.is_empty() {
        return Err(BuildError::NotBuilt {
            version: version.to_string(),
            out: out.to_owned(),
            path: release_dir.join(update_binary_name(Arch::X86_64)),
        });
    }
    let manifest = Manifest {
        format: manifest::FORMAT,
        channel: channel.to_owned(),
        version: version.to_string(),
        rollback: true,
        issued_ms: now_ms,
        expires_ms: Some(now_ms.saturating_add(life_ms)),
        artifacts,
    };
    let text = manifest
        .sign(&keys.manifest)
        .map_err(|e| BuildError::Manifest(e.to_string()))?;
    let path = release_dir.join(manifest_name(channel, true));
    write_atomic(&path, text.as_bytes(), 0o644)?;
    Ok(RollbackReport {
        version: version.to_string(),
        channel: channel.to_owned(),
        path,
        expires_ms: now_ms.saturating_add(life_ms),
    })
}

/// OUT/repo/DIST/ARCH.
pub fn repo_dir(out: &Path, dist: &str, arch: Arch) -> PathBuf {
    out.join("repo").join(dist).join(arch.uname())
}

fn artifact(kind: &str, path: &Path, bytes: &[u8]) -> Artifact {
    Artifact {
        kind: kind.to_owned(),
        path: path.to_owned(),
        size: bytes.len() as u64,
        sha256: hex::encode(Sha256::digest(bytes)),
    }
}

/// One agent of the release, read and checked.
#[derive(Debug)]
struct ReleaseAgent {
    arch: Arch,
    path: PathBuf,
    bytes: Vec<u8>,
}

/// Reads every agent, one per architecture, in the order of [`Arch::ALL`].
fn read_agents(paths: &[PathBuf], version: &Version) -> Result<Vec<ReleaseAgent>, BuildError> {
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
fn read_agent(path: &Path, version: &Version) -> Result<(Arch, Vec<u8>), BuildError> {
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
fn check_writable(out: &Path) -> Result<(), BuildError> {
    let unwritable = |source| BuildError::Unwritable {
        path: out.to_owned(),
        source,
    };
    fs::create_dir_all(out).map_err(unwritable)?;
    let probe = out.join(format!(".tasknode-dist-probe-{}", std::process::id()));
    fs::write(&probe, b"").map_err(unwritable)?;
    fs::remove_file(&probe).map_err(unwritable)
}

/// Writes `bytes` to a temporary file beside `path`, fsyncs it and renames it into place.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), BuildError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io(dir))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(io(path))
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

/// Whether `version` goes to OUT/agents/ for install scripts: unless a newer version is there.
fn publishes_agents(out: &Path, version: &Version) -> bool {
    !Arch::ALL.into_iter().any(|arch| {
        let path = out
            .join("agents")
            .join(crate::artifacts::file_name(arch.uname()));
        fs::read(&path).ok().is_some_and(|existing| {
            tasknode_protocol::agent_version_in(&existing)
                .and_then(|v| Version::parse(v).ok())
                .is_some_and(|v| v > *version)
        })
    })
}

/// A console serves its install scripts one version for every architecture: a build that
/// publishes its agents must bring every architecture OUT/agents/ holds at another version.
fn check_published_arches(
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
            .join("agents")
            .join(crate::artifacts::file_name(arch.uname()));
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

/// A short table of what was built, for people.
pub fn summary(report: &BuildReport, out: &Path) -> String {
    let mut rows: Vec<[String; 4]> = vec![[
        "ARTIFACT".into(),
        "SIZE".into(),
        "SHA256".into(),
        "PATH".into(),
    ]];
    for a in &report.artifacts {
        rows.push([
            a.kind.clone(),
            human_size(a.size),
            a.sha256.get(..16).unwrap_or("").to_owned(),
            a.path
                .strip_prefix(out)
                .unwrap_or(&a.path)
                .display()
                .to_string(),
        ]);
    }
    let mut widths = [0; 4];
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut text = String::new();
    for r in &rows {
        let line = format!(
            "{:<w0$}  {:>w1$}  {:<w2$}  {}",
            r[0],
            r[1],
            r[2],
            r[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        );
        text.push_str(line.trim_end());
        text.push('\n');
    }
    let repos: BTreeMap<(&str, Arch), &RepoReport> = report
        .repositories
        .iter()
        .map(|r| ((r.dist.as_str(), r.arch), r))
        .collect();
    for ((dist, arch), r) in repos {
        text.push_str(&format!(
            "repo {dist} {arch}: {} package(s), {} newly indexed, signed repomd.xml ({})\n",
            r.indexed.packages,
            r.indexed.hashed,
            r.path.strip_prefix(out).unwrap_or(&r.path).display()
        ));
    }
    text
}

fn human_size(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
    } else if bytes >= 1 << 10 {
        format!("{:.1} KiB", bytes as f64 / f64::from(1 << 10))
    } else {
        format!("{bytes} B")
    }
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

//! The errors of tasknode-dist, in one place: [`BuildError`] for a release (which wraps the
//! others), and each module's own error, re-exported, for the callers of that module alone.

use std::path::{Path, PathBuf};

pub use crate::docs::DocsError;
pub use crate::keys::KeyError;
pub use crate::repo::RepoError;
pub use crate::rpm_package::RpmError;
pub use crate::target::TargetError;
use tasknode_render::arch::Arch;
pub use tasknode_render::render::RenderError;
pub use tasknode_render::templates::TemplateError;

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
    Docs(#[from] DocsError),
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

pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BuildError + '_ {
    move |source| BuildError::Io {
        path: path.to_owned(),
        source,
    }
}

//! `tasknode-dist index`: re-indexes one yum repository directory.

use std::path::{Path, PathBuf};

use clap::Args;

#[derive(Debug, Args)]
pub struct IndexArgs {
    /// The repository directory (e.g. OUT/repo/el7/x86_64): its *.rpm files are indexed.
    #[arg(long, value_name = "DIR")]
    pub repo: PathBuf,
    /// Directory of the release keys (from `keygen`).
    #[arg(long, value_name = "DIR")]
    pub keys: PathBuf,
    /// Time stamp of the metadata and its signature. [default: SOURCE_DATE_EPOCH, else the
    /// commit time of the current directory's HEAD]
    #[arg(long, value_name = "SECONDS")]
    pub source_date_epoch: Option<u32>,
    /// Print what was indexed as JSON.
    #[arg(long)]
    pub json: bool,
    /// Threads to read packages and compress metadata on; any number gives the same bytes.
    /// [default: one per core]
    #[arg(long, value_name = "N")]
    pub jobs: Option<std::num::NonZeroUsize>,
}

pub fn run(args: &IndexArgs) -> anyhow::Result<()> {
    if !args.repo.is_dir() {
        anyhow::bail!("--repo {}: not a directory", args.repo.display());
    }
    let keys = tasknode_dist::keys::ReleaseKeys::load(&args.keys)?;
    let source_date = tasknode_dist::release::source_date(args.source_date_epoch, Path::new("."))?;
    let indexed = tasknode_dist::repo::index_with_jobs(
        &args.repo,
        source_date,
        keys.signature_time(source_date),
        keys.package_signer(),
        args.jobs
            .unwrap_or_else(tasknode_dist::parallel::default_jobs),
    )?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&indexed)?);
    } else {
        println!(
            "indexed {}: {} package(s), {} read for the first time; repomd.xml signed",
            args.repo.display(),
            indexed.packages,
            indexed.hashed
        );
    }
    Ok(())
}

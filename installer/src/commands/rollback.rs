//! `tasknode-dist rollback`: signs a rollback manifest for a version already built.

use std::path::PathBuf;

use clap::Args;

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The release directory the version was built in.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Directory of the release keys (from `keygen`).
    #[arg(long, value_name = "DIR")]
    pub keys: PathBuf,
    /// The version to roll back to.
    #[arg(long, value_name = "VERSION")]
    pub version: String,
    /// The update channel.
    #[arg(long, default_value = tasknode_protocol::manifest::DEFAULT_CHANNEL)]
    pub channel: String,
    /// How long agents accept the rollback manifest.
    #[arg(long, default_value = "30d", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub expires_in: std::time::Duration,
    /// Print what was written as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &RollbackArgs) -> anyhow::Result<()> {
    let version = tasknode_dist::target::Version::parse(&args.version)?;
    tasknode_protocol::validate::name("channel", &args.channel)
        .map_err(|e| anyhow::anyhow!("--channel: {}", e.message))?;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default();
    let life_ms = i64::try_from(args.expires_in.as_millis()).unwrap_or(i64::MAX);
    if life_ms <= 0 {
        anyhow::bail!("--expires-in must be longer than 0");
    }
    let report = tasknode_dist::release::sign_rollback(
        &args.out,
        &args.keys,
        &version,
        &args.channel,
        now_ms,
        life_ms,
    )?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "signed a rollback to {} on channel {} in {}",
            report.version,
            report.channel,
            report.path.display()
        );
        println!(
            "next: tasknode-console release publish {} && tasknode-console release pin --group GROUP --version {}",
            report.path.display(),
            report.version
        );
    }
    Ok(())
}

//! `tasknode-dist keygen`: makes the release keys.

use std::path::PathBuf;

use clap::Args;

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Directory to create the keys in (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// The OpenPGP user ID of the package key.
    #[arg(long, value_name = "TEXT", default_value = "tasknode release signing")]
    pub user_id: String,
    /// Print what was made as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &KeygenArgs) -> anyhow::Result<()> {
    let spinner = indicatif::ProgressBar::new_spinner().with_message(format!(
        "generating an RSA-{} key (takes a few seconds)",
        tasknode_dist::keys::RSA_BITS
    ));
    spinner.enable_steady_tick(std::time::Duration::from_millis(120));
    let made = tasknode_dist::keys::generate(&args.out, &args.user_id);
    spinner.finish_and_clear();
    let made = made?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&made)?);
    } else {
        println!("release keys written to {}", made.dir.display());
        println!(
            "  package key (RPMs, repodata): {} (public: {})",
            tasknode_dist::keys::PACKAGE_SECRET,
            tasknode_dist::keys::PACKAGE_PUBLIC
        );
        println!("    fingerprint {}", made.package_fingerprint);
        println!(
            "  manifest key (updates): {} (public: {})",
            tasknode_dist::keys::MANIFEST_SECRET,
            tasknode_dist::keys::MANIFEST_PUBLIC
        );
        println!("    {}", made.manifest_public_key);
        println!(
            "  standby manifest key, for the next rotation (agents trust it too; keep it offline): {}",
            tasknode_dist::keys::MANIFEST_NEXT_SECRET
        );
        println!("    {}", made.next_manifest_public_key);
        println!("keep the *.secret.* files private and backed up: they sign every release");
    }
    Ok(())
}

//! `yum-command`: the command that points a host's yum at this console's signed repository.

use tasknode_protocol::wire::YumSetup;
use tasknode_protocol::{layout, validate};

use crate::cli::{Global, YumCommandArgs};
use crate::client::AdminClient;

pub async fn run(global: &Global, args: YumCommandArgs) -> anyhow::Result<()> {
    validate::name("--dist", &args.dist)?;
    let client = AdminClient::resolve(global)?;
    let setup: YumSetup = client
        .get(&format!("/api/v1/yum/{}", args.dist), &[])
        .await?;
    if args.out.json {
        return super::print_json(&setup);
    }
    println!(
        "Run this as root on a {} host to use this console's signed repository:",
        setup.dist
    );
    println!();
    println!("  {}", setup.command);
    println!("  yum install {}", layout::PACKAGE_NAME);
    println!();
    if let (Some(file), Some(sha)) = (&setup.ca_file, &setup.ca_sha256) {
        println!("It keeps the console's CA (SHA-256 {sha}) in {file}: yum trusts only it for");
        println!(
            "this repository, and `tasknode enroll --console-ca {file}` does the same for the agent."
        );
    }
    Ok(())
}

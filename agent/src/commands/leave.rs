//! `tasknode leave`: asks the console to remove this server from its resource group, as
//! install.sh --uninstall offers. The request carries this node's own id and secret (from the
//! 0600 config), which the console accepts for the server this node is enrolled as and no
//! other, so nothing else on the console can be removed with it.

use anyhow::Context;

use crate::Exit;
use crate::cli::LeaveArgs;
use crate::client::ConsoleClient;
use crate::config::Config;

pub async fn run(args: LeaveArgs) -> anyhow::Result<Exit> {
    let path = &args.config.config;
    let (config, node) = Config::load_enrolled(path)
        .with_context(|| format!("reading this node's credentials from {}", path.display()))?;
    let client = ConsoleClient::new(&config.console_urls(), config.console_ca.as_deref())?;
    match client.leave(&node.id, &node.secret, args.mode.into()).await {
        Ok(answer) => {
            println!("{}", answer.body.message);
            Ok(Exit::Success)
        }
        Err(e) if e.is_removed() => {
            println!(
                "server {} was removed from the console already",
                node.server_name
            );
            Ok(Exit::Success)
        }
        Err(e) => Err(e.into()),
    }
}

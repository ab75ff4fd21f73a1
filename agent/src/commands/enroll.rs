//! `tasknode enroll`: detects this server's identity, trades the user's access key for node
//! credentials, and writes them to the config (0600). The password is read from standard input
//! or a file, sent once over the wire, and never stored.

use std::io::BufRead;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, bail};
use tasknode_protocol::validate;
use tasknode_protocol::wire::EnrollRequest;

use crate::cli::EnrollArgs;
use crate::client::ConsoleClient;
use crate::config::{self, Config};
use crate::{Exit, env, facts, identity};

pub async fn run(args: EnrollArgs) -> anyhow::Result<Exit> {
    if args.password.is_some() {
        bail!(
            "--password: passwords are not accepted on the command line, where every user of this host can read them; use --password-stdin or --password-file FILE"
        );
    }
    validate::name("--user-name", &args.user_name)?;
    let client = ConsoleClient::new(&args.console).context("--console")?;
    let password = read_password(&args)?;
    validate::password("password", &password)?;

    let root = env::root();
    let identity = identity::detect(args.enable_uuid, &root)?;
    let facts = facts::collect(&root);
    let config_path = &args.config.config;
    let previous = Config::load(config_path).ok();

    let request = EnrollRequest {
        user_name: args.user_name.clone(),
        password,
        identity: identity.clone(),
        facts,
    };
    let answer = client.enroll(&request).await?;
    drop(request);
    let enrolled = answer.body;

    let log_dir = args
        .log_dir
        .clone()
        .unwrap_or_else(|| config::default_log_dir(config_path));
    let config = Config {
        console_url: args.console.clone(),
        node_id: enrolled.node_id.clone(),
        node_secret: enrolled.node_secret,
        server_name: enrolled.server_name.clone(),
        group: enrolled.group.clone(),
        project: enrolled.project.clone(),
        network: enrolled.network,
        install_method: args.install_method,
        log_dir,
    };
    config.save(config_path).with_context(|| {
        format!(
            "the console enrolled node {} but its credentials could not be saved; fix the problem and enroll again",
            enrolled.node_id
        )
    })?;

    if let Some(prev) = previous {
        println!("replaced the earlier enrollment (node {})", prev.node_id);
    }
    println!(
        "enrolled {identity} as server {} in {} group {} of project {} (node {})",
        enrolled.server_name, enrolled.network, enrolled.group, enrolled.project, enrolled.node_id
    );
    println!("config: {} (mode 0600)", config_path.display());
    if let Some(offset) = answer.offset_ms {
        if offset.abs() > tasknode_protocol::MAX_CLOCK_OFFSET_MS {
            eprintln!(
                "warning: this host's clock is {} s off the console's; the agent takes no work until it is within 120 s (chronyc makestep, or ntpdate -u <ntp server>)",
                offset.abs() / 1000
            );
        }
    }
    println!(
        "next: start the agent with `tasknode run --config {}`",
        config_path.display()
    );
    Ok(Exit::Success)
}

/// The first line of standard input or of the password file, without its line ending.
fn read_password(args: &EnrollArgs) -> anyhow::Result<String> {
    let mut line = String::new();
    if args.password_stdin {
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("--password-stdin: reading the password from standard input")?;
    } else if let Some(path) = &args.password_file {
        warn_if_readable(path);
        let file = std::fs::File::open(path)
            .with_context(|| format!("--password-file: opening {}", path.display()))?;
        std::io::BufReader::new(file)
            .read_line(&mut line)
            .with_context(|| format!("--password-file: reading {}", path.display()))?;
    } else {
        bail!("no password: pass --password-stdin (and pipe it in) or --password-file FILE");
    }
    let password = line.trim_end_matches(['\n', '\r']).to_owned();
    if password.is_empty() {
        bail!("the password is empty: give the access key's password on the first line");
    }
    Ok(password)
}

fn warn_if_readable(path: &Path) {
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            eprintln!(
                "warning: {} is mode {:o}; other users may read the password (chmod 600 it)",
                path.display(),
                mode & 0o777
            );
        }
    }
}

//! `tasknode enroll`: detects this server's identity, trades the user's access key for node
//! credentials, and writes them to the config (0600). The password is read from standard input
//! or a file, sent once over the wire, and never stored.

use std::io::BufRead;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, bail};
use tasknode_protocol::validate;
use tasknode_protocol::wire::EnrollRequest;

use crate::cli::{EnrollArgs, InstallMethod};
use crate::client::ConsoleClient;
use crate::config::{self, Config, ConfigError, Node};
use crate::{Exit, env, facts, identity};

pub async fn run(args: EnrollArgs) -> anyhow::Result<Exit> {
    if args.password.is_some() {
        bail!(
            "--password: passwords are not accepted on the command line, where every user of this host can read them; use --password-stdin or --password-file FILE"
        );
    }
    validate::name("--user-name", &args.user_name)?;
    let config_path = &args.config.config;
    // A config written by the installer (or an earlier enrollment) supplies the defaults.
    let existing = match Config::load(config_path) {
        Ok(c) => Some(c),
        Err(ConfigError::Missing { .. }) => None,
        Err(e) => return Err(e).context("fix or remove the existing config, then enroll again"),
    };
    let console = match (&args.console, &existing) {
        (Some(url), _) => url.clone(),
        (None, Some(c)) => c.console_url.clone(),
        (None, None) => bail!(
            "--console: no console URL; pass --console URL ({} does not exist to name one)",
            config_path.display()
        ),
    };
    let client = ConsoleClient::new(&console).context("--console")?;
    let password = read_password(&args)?;
    validate::password("password", &password)?;

    let root = env::root();
    let identity = identity::detect(args.enable_uuid, &root)?;
    let facts = facts::collect(&root);

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
        .or_else(|| existing.as_ref().map(|c| c.log_dir.clone()))
        .unwrap_or_else(|| config::default_log_dir(config_path));
    let install_method = args
        .install_method
        .or_else(|| existing.as_ref().map(|c| c.install_method))
        .unwrap_or(InstallMethod::Manual);
    let config = Config {
        console_url: console,
        install_method,
        log_dir,
        node: Some(Node {
            id: enrolled.node_id.clone(),
            secret: enrolled.node_secret,
            server_name: enrolled.server_name.clone(),
            group: enrolled.group.clone(),
            project: enrolled.project.clone(),
            network: enrolled.network,
        }),
    };
    config.save(config_path).with_context(|| {
        format!(
            "the console enrolled node {} but its credentials could not be saved; fix the problem and enroll again",
            enrolled.node_id
        )
    })?;

    if let Some(prev) = existing.and_then(|c| c.node) {
        println!("replaced the earlier enrollment (node {})", prev.id);
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

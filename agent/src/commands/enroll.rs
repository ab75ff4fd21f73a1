//! `tasknode enroll`: detects this server's identity, trades a user's access key or a one-time
//! enrollment token for node credentials, and writes them to the config (0600). The password or
//! token is read from standard input or a file, sent once over the wire, and never stored.
//! The config also records where the logs, the pid file and the tasks' work go: an existing
//! config's values, else the layout of `--install-method` (for `manual`, beside the config).

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

/// How long an enrollment is asked again while the consoles fail (no answer, or a 5xx).
const ENROLL_PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);

pub async fn run(args: EnrollArgs) -> anyhow::Result<Exit> {
    if args.password.is_some() {
        bail!(
            "--password: passwords are not accepted on the command line, where every user of this host can read them; use --password-stdin or --password-file FILE"
        );
    }
    let config_path = &args.config.config;
    // A config written by the installer (or an earlier enrollment) supplies the defaults.
    let existing = match Config::load(config_path) {
        Ok(c) => Some(c),
        Err(ConfigError::Missing { .. }) => None,
        Err(e) => return Err(e).context("fix or remove the existing config, then enroll again"),
    };
    let consoles = match (args.console.is_empty(), &existing) {
        (false, _) => args.console.clone(),
        (true, Some(c)) => c.console_urls(),
        (true, None) => bail!(
            "--console: no console URL; pass --console URL ({} does not exist to name one)",
            config_path.display()
        ),
    };
    let console_ca = args
        .console_ca
        .clone()
        .or_else(|| existing.as_ref().and_then(|c| c.console_ca.clone()));
    let client = ConsoleClient::new(&consoles, console_ca.as_deref()).context("--console")?;
    let credential = read_credential(&args)?;

    let root = env::root();
    let identity = identity::detect(args.enable_uuid, &root)?;
    let facts = facts::collect(&root);

    let (user_name, password, enrollment_token) = match credential {
        Secret::AccessKey(user, password) => (Some(user), Some(password), None),
        Secret::Token(token) => (None, None, Some(token)),
    };
    let request = EnrollRequest {
        user_name,
        password,
        enrollment_token,
        identity: identity.clone(),
        facts,
    };
    let answer = client
        .enroll_patiently(&request, ENROLL_PATIENCE, |e, delay| {
            eprintln!(
                "tasknode: the console failed ({e}); asking again in {:.1} s",
                delay.as_secs_f64()
            );
        })
        .await?;
    drop(request);
    let enrolled = answer.body;

    let install_method = args
        .install_method
        .or_else(|| existing.as_ref().map(|c| c.install_method))
        .unwrap_or(InstallMethod::Manual);
    let log_dir = args
        .log_dir
        .clone()
        .or_else(|| existing.as_ref().map(|c| c.log_dir.clone()))
        .unwrap_or_else(|| config::default_log_dir(install_method, config_path));
    // The config records where the agent's files are, so nothing later guesses them: the
    // existing config's, else the install method's layout's (beside the config when manual).
    let pid_file = existing
        .as_ref()
        .and_then(|c| c.pid_file.clone())
        .unwrap_or_else(|| config::default_pid_file(install_method, config_path));
    let mut tasks = existing
        .as_ref()
        .map(|c| c.tasks.clone())
        .unwrap_or_default();
    tasks.work_dir = Some(
        tasks
            .work_dir
            .unwrap_or_else(|| config::default_work_dir(install_method, &log_dir)),
    );
    let mut config = Config {
        console_url: String::new(),
        more_console_urls: Vec::new(),
        console_ca,
        install_method,
        log_dir,
        pid_file: Some(pid_file),
        // Enrolling again keeps how tasks were set up to run.
        tasks,
        logs: existing
            .as_ref()
            .map(|c| c.logs.clone())
            .unwrap_or_default(),
        update: existing
            .as_ref()
            .map(|c| c.update.clone())
            .unwrap_or_default(),
        metrics: existing
            .as_ref()
            .map(|c| c.metrics.clone())
            .unwrap_or_default(),
        node: Some(Node {
            id: enrolled.node_id.clone(),
            secret: enrolled.node_secret,
            server_name: enrolled.server_name.clone(),
            group: enrolled.group.clone(),
            project: enrolled.project.clone(),
            network: enrolled.network,
        }),
    };
    config.set_console_urls(&consoles);
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
    if let Some(offset) = answer.offset_ms
        && offset.abs() > tasknode_protocol::MAX_CLOCK_OFFSET_MS
    {
        eprintln!(
            "warning: this host's clock is {} s off the console's; the agent takes no work until it is within 120 s (chronyc makestep, or ntpdate -u <ntp server>)",
            offset.abs() / 1000
        );
    }
    println!(
        "next: start the agent with `tasknode run --config {}`",
        config_path.display()
    );
    Ok(Exit::Success)
}

/// The credential to enroll with: an access key or a one-time token.
enum Secret {
    AccessKey(String, String),
    Token(String),
}

/// Reads and checks the credential the flags name; secrets come from standard input or a
/// file, never from the command line.
fn read_credential(args: &EnrollArgs) -> anyhow::Result<Secret> {
    if args.token_stdin || args.token_file.is_some() {
        let token = first_line(args.token_stdin, args.token_file.as_deref(), "token")?;
        validate::enrollment_token("enrollment token", &token)?;
        return Ok(Secret::Token(token));
    }
    let Some(user) = &args.user_name else {
        bail!(
            "no credential: pass --user-name NAME with --password-stdin or --password-file FILE, or --token-stdin or --token-file FILE"
        );
    };
    validate::name("--user-name", user)?;
    if !args.password_stdin && args.password_file.is_none() {
        bail!("no password: pass --password-stdin (and pipe it in) or --password-file FILE");
    }
    let password = first_line(
        args.password_stdin,
        args.password_file.as_deref(),
        "password",
    )?;
    validate::password("password", &password)?;
    Ok(Secret::AccessKey(user.clone(), password))
}

/// The first line of standard input (`stdin`) or of `file`, without its line ending.
fn first_line(stdin: bool, file: Option<&Path>, what: &str) -> anyhow::Result<String> {
    let mut line = String::new();
    if stdin {
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .with_context(|| format!("reading the {what} from standard input"))?;
    } else if let Some(path) = file {
        warn_if_readable(path, what);
        let file = std::fs::File::open(path)
            .with_context(|| format!("opening the {what} file {}", path.display()))?;
        std::io::BufReader::new(file)
            .read_line(&mut line)
            .with_context(|| format!("reading the {what} file {}", path.display()))?;
    }
    let value = line.trim_end_matches(['\n', '\r']).to_owned();
    if value.is_empty() {
        bail!("the {what} is empty: give it on the first line");
    }
    Ok(value)
}

fn warn_if_readable(path: &Path, what: &str) {
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            eprintln!(
                "warning: {} is mode {:o}; other users may read the {what} (chmod 600 it)",
                path.display(),
                mode & 0o777
            );
        }
    }
}

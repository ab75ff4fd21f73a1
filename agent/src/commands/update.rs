//! `tasknode update [--check]`: the self-update of `tasknode run`, by hand.
//!
//! `--check` fetches the manifest of the version the console wants (or `--version`), verifies
//! it and says whether this agent would move to it, changing nothing. Without it the update is
//! carried out on a stopped agent: download, verify, trial, swap. The next start runs the new
//! version on probation, and puts the previous one back if it cannot heartbeat.

use std::sync::Arc;

use anyhow::Context;
use serde::Serialize;
use tasknode_protocol::manifest;

use crate::Exit;
use crate::cli::{InstallMethod, UpdateArgs};
use crate::client::{ConsoleClient, now_ms};
use crate::config::Config;
use crate::update::{self, Paths, Settings};
use tasknode_protocol::layout::PACKAGE_NAME;

#[derive(Debug, Serialize)]
struct Report {
    running: String,
    target: &'static str,
    channel: String,
    /// Update-manifest keys trusted (hex).
    trusted_keys: Vec<String>,
    /// The version asked for, by the console or --version.
    wanted: Option<String>,
    /// Whether this agent would move to it.
    update_available: bool,
    /// Why not, when it would not.
    reason: Option<String>,
    /// Set when the update was carried out.
    updated_to: Option<String>,
}

pub async fn run(args: UpdateArgs) -> anyhow::Result<Exit> {
    let path = &args.config.config;
    let (config, node) = Config::load_enrolled(path)?;
    let settings = Settings::from_config(&config)?;
    let client = Arc::new(ConsoleClient::new(
        &config.console_urls(),
        config.console_ca.as_deref(),
    )?);
    let mut report = Report {
        running: crate::version().to_owned(),
        target: update::TARGET,
        channel: settings.channel.clone(),
        trusted_keys: settings.trusted.iter().map(manifest::encode_key).collect(),
        wanted: None,
        update_available: false,
        reason: None,
        updated_to: None,
    };
    let result = check_and_update(&args, &config, &node, &settings, &client, &mut report).await;
    if let Err(e) = &result {
        report.reason = Some(format!("{e:#}"));
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    match result {
        Ok(()) => Ok(Exit::Success),
        Err(_) if args.json => Ok(Exit::Failure),
        Err(e) => Err(e),
    }
}

async fn check_and_update(
    args: &UpdateArgs,
    config: &Config,
    node: &crate::config::Node,
    settings: &Settings,
    client: &ConsoleClient,
    report: &mut Report,
) -> anyhow::Result<()> {
    match config.install_method {
        InstallMethod::Rpm => anyhow::bail!(
            "this agent was installed by rpm and does not replace its own files; run `yum update {PACKAGE_NAME}`"
        ),
        InstallMethod::Deb => anyhow::bail!(
            "this agent was installed by a .deb and does not replace its own files; run `apt-get install --only-upgrade {PACKAGE_NAME}`"
        ),
        InstallMethod::Script | InstallMethod::Manual => {}
    }
    let wanted = match &args.version {
        Some(v) => Some(v.clone()),
        None => {
            client
                .node(&node.id, &node.secret)
                .await
                .context("asking the console which version this server should run")?
                .body
                .desired_version
        }
    };
    report.wanted = wanted.clone();
    let Some(wanted) = wanted else {
        report.reason = Some("the console asks for no other version".to_owned());
        return Ok(());
    };
    if wanted == crate::version() {
        report.reason = Some(format!("version {wanted} is running"));
        return Ok(());
    }
    let file = client
        .manifest(&node.id, &node.secret, &wanted)
        .await
        .with_context(|| format!("fetching the manifest of {wanted}"))?;
    let manifest = manifest::verify(&file, &settings.trusted)?;
    manifest.offer_for(
        crate::version(),
        update::TARGET,
        &settings.channel,
        now_ms(),
    )?;
    report.update_available = true;
    if args.check {
        return Ok(());
    }

    let paths = Paths::current().context("finding this binary")?;
    let lock = update::lock(&args.config.config)?;
    if lock.is_none() {
        anyhow::bail!(
            "the agent is running: it updates itself when the console asks; to update by hand, stop it (serverctl stop), run `tasknode update`, then start it"
        );
    }
    let prepared = update::prepare(client, node, settings, &paths, &wanted).await?;
    eprintln!("downloaded and verified {wanted}; trying it");
    if let Err(e) = update::trial(&paths, &args.config.config, settings).await {
        let _ = std::fs::remove_file(&paths.new);
        return Err(e);
    }
    update::swap(&paths, &prepared, settings.health_timeout)?;
    report.updated_to = Some(wanted);
    Ok(())
}

fn print_report(r: &Report) {
    println!("running:   {} ({})", r.running, r.target);
    println!("channel:   {}", r.channel);
    println!(
        "trusted:   {}",
        if r.trusted_keys.is_empty() {
            "no update keys (set [update] trusted_keys, or install an agent built by `tasknode-dist build --keys`)".to_owned()
        } else {
            r.trusted_keys.join(", ")
        }
    );
    println!("wanted:    {}", r.wanted.as_deref().unwrap_or("-"));
    match (&r.updated_to, r.update_available) {
        (Some(v), _) => println!(
            "updated:   to {v}; start the agent (serverctl start): it runs {v} on probation and puts {} back if it cannot heartbeat",
            r.running
        ),
        (None, true) => println!("update:    available; `tasknode update` carries it out"),
        (None, false) => println!("update:    none"),
    }
    if let Some(reason) = &r.reason
        && r.updated_to.is_none()
    {
        println!("because:   {reason}");
    }
}

//! `tasknode status`: is this server enrolled, can it reach its console, when did it last
//! heartbeat, and how far is its clock from the console's. With several consoles it asks the
//! one the agent last heartbeated to first, names the one that answered as in use, and asks
//! each of the others too, to show its error.

use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;
use tasknode_protocol::MAX_CLOCK_OFFSET_MS;

use crate::Exit;
use crate::cli::StatusArgs;
use crate::client::ConsoleClient;
use crate::config::{self, Config, Node};
use crate::consoles::ConsoleView;
use crate::logfile::{self, HeartbeatEntry};

#[derive(Debug, Serialize)]
struct Report {
    config: String,
    enrolled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    config_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    config_warning: Option<String>,
    server_name: Option<String>,
    group: Option<String>,
    project: Option<String>,
    node_id: Option<String>,
    /// The console in use: the one that answered.
    console_url: Option<String>,
    /// Every console of the config, the one in use marked, each other's error.
    consoles: Vec<ConsoleView>,
    console_reachable: bool,
    console_error: Option<String>,
    /// The server's state as the console shows it, and why.
    console_status: Option<String>,
    console_reason: Option<String>,
    clock_offset_ms: Option<i64>,
    clock_ok: Option<bool>,
    last_heartbeat: Option<LastHeartbeat>,
    log_dir: Option<String>,
    healthy: bool,
}

#[derive(Debug, Serialize)]
struct LastHeartbeat {
    time: String,
    age_secs: u64,
    status: Option<u16>,
    latency_ms: u128,
    error: Option<String>,
}

pub async fn run(args: StatusArgs) -> anyhow::Result<Exit> {
    let path = &args.config.config;
    let mut report = Report {
        config: path.display().to_string(),
        enrolled: false,
        config_error: None,
        config_warning: None,
        server_name: None,
        group: None,
        project: None,
        node_id: None,
        console_url: None,
        consoles: Vec::new(),
        console_reachable: false,
        console_error: None,
        console_status: None,
        console_reason: None,
        clock_offset_ms: None,
        clock_ok: None,
        last_heartbeat: None,
        log_dir: None,
        healthy: false,
    };
    match Config::load_enrolled(path) {
        Ok((cfg, node)) => fill(&mut report, cfg, node).await,
        Err(e) => report.config_error = Some(e.to_string()),
    }
    report.config_warning = config::permission_warning(path);
    // Healthy: the console shows this server available and its clock is within limits.
    report.healthy =
        report.console_status.as_deref() == Some("available") && report.clock_ok == Some(true);

    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_text(&report);
    }
    Ok(if report.healthy {
        Exit::Success
    } else {
        Exit::Failure
    })
}

async fn fill(report: &mut Report, cfg: Config, node: Node) {
    report.enrolled = true;
    report.server_name = Some(node.server_name.clone());
    report.group = Some(node.group.clone());
    report.project = Some(node.project.clone());
    report.node_id = Some(node.id.clone());
    report.console_url = Some(cfg.console_url.clone());
    report.log_dir = Some(cfg.log_dir.display().to_string());
    let last = logfile::last_line(&cfg.log_dir.join("heartbeat.log"))
        .ok()
        .flatten()
        .and_then(|l| HeartbeatEntry::parse(&l));
    match ConsoleClient::new(&cfg.console_urls(), cfg.console_ca.as_deref()) {
        Ok(client) => {
            if let Some(url) = last.as_ref().and_then(|e| e.console.as_deref()) {
                client.consoles().prefer(url);
            }
            match client.node(&node.id, &node.secret).await {
                Ok(a) => {
                    report.console_reachable = true;
                    report.clock_offset_ms = a.offset_ms;
                    report.clock_ok = a
                        .offset_ms
                        .map(|o| o.unsigned_abs() <= MAX_CLOCK_OFFSET_MS.unsigned_abs());
                    report.console_status = Some(a.body.status.to_string());
                    report.console_reason = Some(a.body.reason);
                }
                Err(e) => {
                    report.console_reachable = e.status().is_some();
                    report.console_error = Some(e.to_string());
                }
            }
            report.console_url = Some(client.consoles().current_url());
            report.consoles = ask_the_others(Arc::new(client), &node).await;
        }
        Err(e) => report.console_error = Some(e.to_string()),
    }
    if let Some(e) = last {
        report.last_heartbeat = Some(LastHeartbeat {
            time: humantime::format_rfc3339_millis(e.at).to_string(),
            age_secs: SystemTime::now()
                .duration_since(e.at)
                .map_or(0, |d| d.as_secs()),
            status: e.status,
            latency_ms: e.latency.as_millis(),
            error: e.error,
        });
    }
}

/// Every console's view: the one in use as the failover left it, each other asked on its own
/// (at once, so consoles that time out cost one timeout).
async fn ask_the_others(client: Arc<ConsoleClient>, node: &Node) -> Vec<ConsoleView> {
    let mut views = client.consoles().views();
    let mut asks = tokio::task::JoinSet::new();
    let others: Vec<usize> = (0..views.len()).filter(|&i| !views[i].in_use).collect();
    for i in others {
        let (client, id, secret) = (Arc::clone(&client), node.id.clone(), node.secret.clone());
        asks.spawn(async move { (i, client.node_at(i, &id, &secret).await.err()) });
    }
    while let Some(Ok((i, error))) = asks.join_next().await {
        if let Some(v) = views.get_mut(i) {
            v.last_error = error.map(|e| e.to_string());
        }
    }
    views
}

fn print_text(r: &Report) {
    let or_dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
    println!("config:          {}", r.config);
    if let Some(e) = &r.config_error {
        println!("enrolled:        no ({e})");
    } else {
        println!(
            "enrolled:        yes: server {} in group {} of project {} (node {})",
            or_dash(&r.server_name),
            or_dash(&r.group),
            or_dash(&r.project),
            or_dash(&r.node_id)
        );
    }
    if let Some(w) = &r.config_warning {
        println!("warning:         {w}");
    }
    if r.enrolled {
        match (&r.console_error, &r.console_status) {
            (None, Some(status)) => println!(
                "console:         {} says {status}: {}",
                or_dash(&r.console_url),
                or_dash(&r.console_reason)
            ),
            (None, None) => println!("console:         {} reachable", or_dash(&r.console_url)),
            (Some(e), _) if r.console_reachable => println!("console:         REFUSED: {e}"),
            (Some(e), _) => println!("console:         UNREACHABLE: {e}"),
        }
        for c in r.consoles.iter().filter(|c| !c.in_use) {
            match &c.last_error {
                Some(e) => println!("other console:   {}: {e}", c.url),
                None => println!("other console:   {} reachable", c.url),
            }
        }
        match (r.clock_offset_ms, r.clock_ok) {
            (Some(o), Some(true)) => println!("clock offset:    {o} ms (within 120 s)"),
            (Some(o), _) => println!(
                "clock offset:    {} s: OFF BY MORE THAN 120 s, no tasks are taken; sync with `chronyc makestep` or `ntpdate -u <ntp server>`",
                o / 1000
            ),
            (None, _) => println!("clock offset:    unknown"),
        }
        match &r.last_heartbeat {
            Some(h) => println!(
                "last heartbeat:  {} ({} s ago), status {}, {} ms{}",
                h.time,
                h.age_secs,
                h.status.map_or_else(|| "-".to_owned(), |s| s.to_string()),
                h.latency_ms,
                h.error
                    .as_ref()
                    .map(|e| format!(", error {e}"))
                    .unwrap_or_default()
            ),
            None => println!("last heartbeat:  none recorded"),
        }
        println!("logs:            {}", or_dash(&r.log_dir));
    }
    println!("healthy:         {}", if r.healthy { "yes" } else { "no" });
}

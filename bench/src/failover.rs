//! `tasknode-loadgen failover`: simulated agents heartbeating to several consoles, one of which
//! this process kills with SIGKILL mid-run. Each agent starts on console `i mod n` and moves on
//! as the agent does (agent/src/consoles.rs): a heartbeat that gets no answer or a 5xx goes at
//! once to the next console, which stays in use. Measures the time from the kill until every
//! agent has had a heartbeat answered again, the most any heartbeat was delayed past its
//! schedule by the move, and the heartbeats no console answered.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use rand::Rng;
use serde_json::json;

use crate::heartbeat::heartbeat_request;
use crate::{load_nodes, raise_open_files};

#[derive(Debug, clap::Args)]
pub struct FailoverArgs {
    /// The consoles, in the order agents try them; repeat it.
    #[arg(long, required = true)]
    console: Vec<String>,
    /// The console's admin token file (to read the servers' status afterwards).
    #[arg(long)]
    token_file: PathBuf,
    #[arg(long)]
    state: PathBuf,
    /// The group the agents are in (whose statuses are counted afterwards).
    #[arg(long)]
    group: String,
    /// The process id of the console to kill (one of --console).
    #[arg(long)]
    kill_pid: i32,
    #[arg(long, value_parser = crate::duration, default_value = "10s")]
    interval: Duration,
    /// Heartbeating before the kill.
    #[arg(long, value_parser = crate::duration, default_value = "20s")]
    before: Duration,
    /// Heartbeating after the kill.
    #[arg(long, value_parser = crate::duration, default_value = "20s")]
    after: Duration,
    /// Heartbeats in flight at once, at most.
    #[arg(long, default_value_t = 512)]
    connections: usize,
}

/// What one agent saw after the kill.
struct AgentResult {
    /// First answered heartbeat after the kill, from the kill.
    back_after: Option<Duration>,
    /// Longest delay, past its scheduled time, of a heartbeat answered after the kill.
    worst_delay: Duration,
    moved: bool,
}

pub async fn run(args: FailoverArgs) -> anyhow::Result<()> {
    raise_open_files();
    let token = std::fs::read_to_string(&args.token_file)
        .with_context(|| format!("--token-file {}", args.token_file.display()))?
        .trim()
        .to_owned();
    let nodes = load_nodes(&args.state)?;
    let count = nodes.len();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.connections)
        .pool_idle_timeout(crate::POOL_IDLE)
        .timeout(Duration::from_secs(5))
        .build()?;
    let consoles = Arc::new(args.console.clone());
    let inflight = Arc::new(tokio::sync::Semaphore::new(args.connections));
    let unanswered = Arc::new(AtomicU64::new(0));
    let started = tokio::time::Instant::now();
    let kill_at = started + args.before;
    let end = kill_at + args.after;
    let mut workers = Vec::with_capacity(count);
    for (i, node) in nodes.into_iter().enumerate() {
        let (http, consoles, inflight, unanswered) = (
            http.clone(),
            Arc::clone(&consoles),
            Arc::clone(&inflight),
            Arc::clone(&unanswered),
        );
        let interval = args.interval;
        let phase = rand::thread_rng().gen_range(Duration::ZERO..interval);
        workers.push(tokio::spawn(async move {
            let mut current = i % consoles.len();
            let mut result = AgentResult {
                back_after: None,
                worst_delay: Duration::ZERO,
                moved: false,
            };
            let mut ticker = tokio::time::interval_at(started + phase, interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let due = ticker.tick().await;
                if due >= end {
                    break;
                }
                let Ok(_permit) = inflight.acquire().await else {
                    break;
                };
                let mut answered = false;
                for _ in 0..consoles.len() {
                    let res = heartbeat_request(&http, &consoles[current], &node)
                        .send()
                        .await;
                    match res {
                        Ok(r) if !r.status().is_server_error() => {
                            let ok = r.status().is_success();
                            let _ = r.bytes().await;
                            answered = ok;
                            break;
                        }
                        _ => {
                            current = (current + 1) % consoles.len();
                            result.moved = true;
                        }
                    }
                }
                let now = tokio::time::Instant::now();
                if !answered {
                    unanswered.fetch_add(1, Ordering::SeqCst);
                } else if due >= kill_at {
                    if result.back_after.is_none() {
                        result.back_after = Some(now.duration_since(kill_at));
                    }
                    result.worst_delay = result.worst_delay.max(now.duration_since(due));
                }
            }
            result
        }));
    }
    tokio::time::sleep_until(kill_at).await;
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(args.kill_pid).context("--kill-pid must be above 0")?,
        rustix::process::Signal::Kill,
    )
    .with_context(|| format!("killing console process {}", args.kill_pid))?;

    let mut back = Duration::ZERO;
    let mut never_back = 0usize;
    let mut worst_delay = Duration::ZERO;
    let mut moved = 0usize;
    for w in workers {
        let r = w.await?;
        match r.back_after {
            Some(d) => back = back.max(d),
            None => never_back += 1,
        }
        worst_delay = worst_delay.max(r.worst_delay);
        moved += usize::from(r.moved);
    }

    // How the surviving consoles show the agents' servers right after.
    let mut statuses = serde_json::Map::new();
    for base in consoles.iter() {
        let Ok(res) = http
            .get(format!("{base}/api/v1/servers?group={}", args.group))
            .bearer_auth(&token)
            .timeout(Duration::from_secs(60))
            .send()
            .await
        else {
            continue;
        };
        let servers: Vec<serde_json::Value> = res.error_for_status()?.json().await?;
        for s in &servers {
            let status = s["status"].as_str().unwrap_or("unknown").to_owned();
            let n = statuses.get(&status).and_then(|v| v.as_u64()).unwrap_or(0);
            statuses.insert(status, json!(n + 1));
        }
        break;
    }
    let stopped = statuses
        .get("stopped")
        .and_then(|v| v.as_u64())
        .unwrap_or(0);
    println!(
        "{}",
        json!({
            "agents": count,
            "consoles": consoles.len(),
            "interval_s": args.interval.as_secs_f64(),
            "all_back_s": back.as_secs_f64(),
            "never_back": never_back,
            "worst_delay_ms": worst_delay.as_secs_f64() * 1000.0,
            "moved": moved,
            "unanswered": unanswered.load(Ordering::SeqCst),
            "stopped": stopped,
            "statuses": statuses,
        })
    );
    if never_back > 0 {
        bail!("{never_back} agents had no heartbeat answered after the kill");
    }
    Ok(())
}

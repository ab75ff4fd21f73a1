//! `tasknode-loadgen fleet`: dispatch at scale. N simulated VPC servers (enrolled by `enroll`)
//! each hold a long poll and heartbeat every 10 s, as the agent does, and report every task
//! they are given as started and finished at once; meanwhile a submitter queues T tasks to their
//! group as fast as the console takes them. Measures tasks per second from the first submit to the last start (and
//! the last finish), and checks that every task ran exactly once: none lost, none started twice.
//! With several consoles the servers and the submits are spread over them round-robin.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;
use tokio::sync::Mutex;

use rand::Rng;

use crate::heartbeat::heartbeat_request;
use crate::{Node, histogram, load_nodes, post, raise_open_files};

#[derive(Debug, clap::Args)]
pub struct FleetArgs {
    /// A console to talk to; repeat it to spread servers and submits over several.
    #[arg(long, required = true)]
    console: Vec<String>,
    /// The console's admin token file.
    #[arg(long)]
    token_file: PathBuf,
    /// The enrolled servers (from `enroll --group GROUP`).
    #[arg(long)]
    state: PathBuf,
    #[arg(long)]
    group: String,
    #[arg(long, default_value_t = 10_000)]
    tasks: usize,
    /// Submits in flight at once.
    #[arg(long, default_value_t = 32)]
    submitters: usize,
    /// How long the servers' first polls get to reach the consoles before the first submit.
    #[arg(long, value_parser = crate::duration, default_value = "3s")]
    warmup: Duration,
    #[arg(long, value_parser = crate::duration, default_value = "300s")]
    timeout: Duration,
}

/// What the simulated servers saw, shared by all of them.
#[derive(Default)]
struct Seen {
    /// Accepted starts per task id, and when the first was accepted.
    starts: Mutex<HashMap<i64, (u32, Instant)>>,
    /// When each task was submitted (filled by the submitter).
    submitted: Mutex<HashMap<i64, Instant>>,
    started: AtomicUsize,
    finished: AtomicUsize,
    last_start: Mutex<Option<Instant>>,
    last_finish: Mutex<Option<Instant>>,
    refused: AtomicU64,
    poll_errors: AtomicU64,
    report_errors: AtomicU64,
    heartbeat_errors: AtomicU64,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Reports a task started and finished, as an agent does once its script ran.
async fn run_task(
    http: &reqwest::Client,
    base: &str,
    node: &Node,
    id: i64,
    lease: i64,
    seen: &Seen,
) -> anyhow::Result<()> {
    let url = format!("{base}/api/v1/nodes/{}/tasks/{id}", node.id);
    let at = now_ms();
    let res = http
        .post(format!("{url}/start"))
        .bearer_auth(&node.secret)
        .json(&json!({"lease": lease, "at_ms": at}))
        .send()
        .await?;
    if !res.status().is_success() {
        seen.refused.fetch_add(1, Ordering::SeqCst);
        bail!("start of task {id} answered {}", res.status());
    }
    let t = Instant::now();
    seen.starts.lock().await.entry(id).or_insert((0, t)).0 += 1;
    {
        let mut last = seen.last_start.lock().await;
        *last = Some(last.map_or(t, |l| l.max(t)));
    }
    seen.started.fetch_add(1, Ordering::SeqCst);
    let end = now_ms();
    let res = http
        .post(format!("{url}/finish"))
        .bearer_auth(&node.secret)
        .json(
            &json!({"lease": lease, "outcome": {"type": "exited", "code": 0},
                      "started_ms": at, "finished_ms": end, "log_bytes": 0}),
        )
        .send()
        .await?;
    if !res.status().is_success() {
        bail!("finish of task {id} answered {}", res.status());
    }
    let t = Instant::now();
    {
        let mut last = seen.last_finish.lock().await;
        *last = Some(last.map_or(t, |l| l.max(t)));
    }
    seen.finished.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

/// How often a simulated server heartbeats, as an agent does by default.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(10);

/// One simulated server: its polls, and beside them its heartbeats (without them, a run that
/// starts 10 minutes after the enrollment would find its servers shown stopped, and their
/// tasks taken back).
async fn server(http: reqwest::Client, base: String, node: Node, seen: Arc<Seen>) {
    tokio::join!(
        polls(&http, &base, &node, &seen),
        heartbeats(&http, &base, &node, &seen)
    );
}

async fn heartbeats(http: &reqwest::Client, base: &str, node: &Node, seen: &Seen) {
    let phase = rand::thread_rng().gen_range(Duration::ZERO..HEARTBEAT_EVERY);
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + phase, HEARTBEAT_EVERY);
    loop {
        ticker.tick().await;
        let answered = match heartbeat_request(http, base, node).send().await {
            Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
            _ => false,
        };
        if !answered {
            seen.heartbeat_errors.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// Long polls, runs what it is given, polls again.
async fn polls(http: &reqwest::Client, base: &str, node: &Node, seen: &Seen) {
    let url = format!("{base}/api/v1/nodes/{}/tasks/poll", node.id);
    loop {
        let res = http
            .post(&url)
            .bearer_auth(&node.secret)
            .json(&json!({"held": [], "accepting": true, "wait_secs": 30}))
            .timeout(Duration::from_secs(40))
            .send()
            .await;
        let answer = match res {
            Ok(r) if r.status().is_success() => r.json::<serde_json::Value>().await.ok(),
            _ => None,
        };
        let Some(answer) = answer else {
            seen.poll_errors.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let work = answer["assign"].as_array().cloned().unwrap_or_default();
        for a in work {
            let (Some(id), Some(lease)) = (a["id"].as_i64(), a["lease"].as_i64()) else {
                continue;
            };
            if let Err(e) = run_task(http, base, node, id, lease, seen).await {
                seen.report_errors.fetch_add(1, Ordering::SeqCst);
                eprintln!("{e:#}");
            }
        }
    }
}

pub async fn run(args: FleetArgs) -> anyhow::Result<()> {
    raise_open_files();
    let token = std::fs::read_to_string(&args.token_file)
        .with_context(|| format!("--token-file {}", args.token_file.display()))?
        .trim()
        .to_owned();
    let nodes = load_nodes(&args.state)?;
    let servers = nodes.len();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(servers + args.submitters)
        .pool_idle_timeout(crate::POOL_IDLE)
        .timeout(Duration::from_secs(60))
        .build()?;
    let seen = Arc::new(Seen::default());
    let consoles = Arc::new(args.console.clone());
    let mut sims = Vec::with_capacity(servers);
    for (i, node) in nodes.into_iter().enumerate() {
        let base = consoles[i % consoles.len()].clone();
        sims.push(tokio::spawn(server(
            http.clone(),
            base,
            node,
            Arc::clone(&seen),
        )));
    }
    tokio::time::sleep(args.warmup).await;

    let t0 = Instant::now();
    let semaphore = Arc::new(tokio::sync::Semaphore::new(args.submitters));
    let mut submits = Vec::with_capacity(args.tasks);
    for i in 0..args.tasks {
        let permit = Arc::clone(&semaphore).acquire_owned().await?;
        let (http, token, seen) = (http.clone(), token.clone(), Arc::clone(&seen));
        let base = consoles[i % consoles.len()].clone();
        let group = args.group.clone();
        submits.push(tokio::spawn(async move {
            let _permit = permit;
            let sent = Instant::now();
            let body = json!({"project": "default", "group": group, "script": "true\n"});
            let t = post(&http, &format!("{base}/api/v1/tasks"), &token, &body).await?;
            let id = t["id"]
                .as_i64()
                .context("submit answered without a task id")?;
            seen.submitted.lock().await.insert(id, sent);
            Ok::<_, anyhow::Error>(id)
        }));
    }
    let mut ids = Vec::with_capacity(args.tasks);
    for s in submits {
        ids.push(s.await??);
    }
    let submitted_s = t0.elapsed().as_secs_f64();
    let deadline = t0 + args.timeout;
    while seen.finished.load(Ordering::SeqCst) < args.tasks {
        if Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for s in &sims {
        s.abort();
    }
    let started = seen.started.load(Ordering::SeqCst);
    let finished = seen.finished.load(Ordering::SeqCst);
    let secs = |t: Option<Instant>| t.map_or(f64::NAN, |t| t.duration_since(t0).as_secs_f64());
    let start_s = secs(*seen.last_start.lock().await);
    let finish_s = secs(*seen.last_finish.lock().await);

    // What the console says became of each task: all succeeded, none started twice.
    let listed: Vec<serde_json::Value> = http
        .get(format!(
            "{}/api/v1/tasks?group={}&limit=10000",
            consoles[0], args.group
        ))
        .bearer_auth(&token)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let states: HashMap<i64, String> = listed
        .iter()
        .filter_map(|t| Some((t["id"].as_i64()?, t["state"].as_str()?.to_owned())))
        .collect();
    // Lost: ended other than succeeded, or gone from the list; unfinished: still queued,
    // assigned or running when the run timed out.
    let unfinished = ids
        .iter()
        .filter(|id| {
            matches!(
                states.get(id).map(String::as_str),
                Some("queued" | "assigned" | "running")
            )
        })
        .count();
    let lost = ids
        .iter()
        .filter(|id| states.get(id).map(String::as_str) != Some("succeeded"))
        .count()
        - unfinished;
    let starts = seen.starts.lock().await;
    let twice = starts.values().filter(|(n, _)| *n > 1).count();
    // Dispatch latency: from each task's submit to its first accepted start.
    let mut hist = histogram()?;
    let submitted = seen.submitted.lock().await;
    for (id, (_, at)) in starts.iter() {
        if let Some(sent) = submitted.get(id) {
            let us =
                u64::try_from(at.saturating_duration_since(*sent).as_micros()).unwrap_or(u64::MAX);
            hist.record(us.max(1))?;
        }
    }
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{}",
        json!({
            "servers": servers,
            "consoles": consoles.len(),
            "tasks": args.tasks,
            "submitted_s": submitted_s,
            "started": started,
            "finished": finished,
            "last_start_s": start_s,
            "last_finish_s": finish_s,
            "started_per_s": started as f64 / start_s,
            "finished_per_s": finished as f64 / finish_s,
            "dispatch_p50_ms": ms(0.5),
            "dispatch_p99_ms": ms(0.99),
            "lost": lost,
            "unfinished": unfinished,
            "twice": twice,
            "refused_starts": seen.refused.load(Ordering::SeqCst),
            "poll_errors": seen.poll_errors.load(Ordering::SeqCst),
            "report_errors": seen.report_errors.load(Ordering::SeqCst),
            "heartbeat_errors": seen.heartbeat_errors.load(Ordering::SeqCst),
        })
    );
    if finished < args.tasks {
        bail!(
            "only {finished} of {} tasks finished within {:?}",
            args.tasks,
            args.timeout
        );
    }
    Ok(())
}

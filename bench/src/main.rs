//! tasknode-loadgen: simulated agents for the benchmarks. `enroll` registers N agents with a
//! console (one-time tokens, so no Argon2 per agent), `heartbeat` runs them at an interval
//! (open loop, each agent on its own schedule), `saturate` sends back-to-back requests over C
//! connections to any URL (the console's heartbeat, or nginx for the ceiling), `dispatch`
//! submits tasks to a group served by a real agent and measures submit-to-start latency and log
//! streaming, `rollout` starts a staged rollout to the enrolled agents and measures how long
//! they take to converge on the new version, `signin` times a valid web sign-in during a flood
//! of wrong passwords, `fleet` dispatches tasks to thousands of simulated servers at once, and
//! `failover` kills one of several consoles under heartbeat load. Each prints one JSON line.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::json;

mod failover;
mod fleet;

/// How long a pooled connection may sit unused before the client drops it: under the 10 s the
/// console gives a new connection to send its first request head. The pool opens a connection
/// for a request that then goes out on one freed meanwhile, and keeps the new one unused; the
/// console closes it at 10 s, and a request sent on it just then failed ("connection reset by
/// peer"). An agent sends each request as soon as its connection opens.
const POOL_IDLE: Duration = Duration::from_secs(5);
mod heartbeat;
mod signin;

#[derive(Debug, Parser)]
#[command(
    name = "tasknode-loadgen",
    version,
    about = "Simulated tasknode agents for benchmarks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Add N VPC servers to a group and enroll an agent for each; write their credentials.
    Enroll {
        #[arg(long)]
        console: String,
        /// The console's admin token file.
        #[arg(long)]
        token_file: PathBuf,
        #[arg(long)]
        agents: usize,
        /// Where the node credentials go (JSON, mode 0600).
        #[arg(long)]
        state: PathBuf,
        /// Requests in flight at once.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// The group they go in (a VPC group, created if missing).
        #[arg(long, default_value = "bench")]
        group: String,
        /// Servers are named by UUIDs counted from this one (so groups in one database differ).
        #[arg(long, default_value_t = 0)]
        first: usize,
    },
    /// Run the enrolled agents: each heartbeats every INTERVAL, starting at a random phase.
    /// Latency is from send to answer; `lag` is how late the sends left against their schedule
    /// (this process falling behind). With several consoles, agent i talks to console i mod n.
    Heartbeat {
        #[arg(long, required = true)]
        console: Vec<String>,
        #[arg(long)]
        state: PathBuf,
        #[arg(long, value_parser = duration, default_value = "10s")]
        interval: Duration,
        #[arg(long, value_parser = duration, default_value = "30s")]
        duration: Duration,
        /// Heartbeats in flight at once, at most (the connection pool's size).
        #[arg(long, default_value_t = 512)]
        connections: usize,
    },
    /// Back-to-back requests over C connections for DURATION.
    Saturate {
        /// A plain URL to GET (nginx); without it, heartbeats to --console.
        #[arg(long)]
        url: Option<String>,
        #[arg(long)]
        console: Option<String>,
        #[arg(long)]
        state: Option<PathBuf>,
        #[arg(long, default_value_t = 32)]
        connections: usize,
        #[arg(long, value_parser = duration, default_value = "10s")]
        duration: Duration,
    },
    /// Submit tasks one at a time to GROUP (served by an agent on this host) and measure from
    /// submit to the script's first instruction; then one task writing LOG_MB megabytes: the
    /// time until the console has its whole log, and the time to read it back through the
    /// console.
    Dispatch {
        #[arg(long)]
        console: String,
        #[arg(long)]
        token_file: PathBuf,
        #[arg(long)]
        group: String,
        #[arg(long, default_value_t = 100)]
        tasks: usize,
        #[arg(long, default_value_t = 100)]
        log_mb: u64,
    },
    /// Run the enrolled agents (group `bench`), start a staged rollout of VERSION (already
    /// published) and time until every agent runs it. An agent asked for another version
    /// reports `started`, keeps heartbeating for UPDATE_TIME (what a real update takes), then
    /// reports `updated` and heartbeats as the new version.
    Rollout {
        #[arg(long)]
        console: String,
        #[arg(long)]
        token_file: PathBuf,
        #[arg(long)]
        state: PathBuf,
        #[arg(long)]
        version: String,
        /// Servers per batch: a count, a percentage, or all.
        #[arg(long, default_value = "25%")]
        batch: String,
        #[arg(long, value_parser = duration, default_value = "1s")]
        interval: Duration,
        #[arg(long, value_parser = duration, default_value = "2s")]
        update_time: Duration,
        #[arg(long, value_parser = duration, default_value = "600s")]
        timeout: Duration,
    },
    /// Time valid web sign-ins while a flood of wrong passwords is in flight.
    Signin(signin::SigninArgs),
    /// Queue tasks to a group of simulated servers, each long polling, and time the dispatch.
    Fleet(fleet::FleetArgs),
    /// Heartbeat to several consoles, kill one, and time until every agent is answered again.
    Failover(failover::FailoverArgs),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Node {
    id: String,
    secret: String,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        match cli.command {
            Command::Enroll {
                console,
                token_file,
                agents,
                state,
                concurrency,
                group,
                first,
            } => {
                let batch = Batch {
                    agents,
                    concurrency,
                    group,
                    first,
                };
                enroll(&console, &token_file, &batch, &state).await
            }
            Command::Heartbeat {
                console,
                state,
                interval,
                duration,
                connections,
            } => heartbeat::heartbeat(&console, &state, interval, duration, connections).await,
            Command::Saturate {
                url,
                console,
                state,
                connections,
                duration,
            } => heartbeat::saturate(url, console, state, connections, duration).await,
            Command::Dispatch {
                console,
                token_file,
                group,
                tasks,
                log_mb,
            } => dispatch(&console, &token_file, &group, tasks, log_mb).await,
            Command::Rollout {
                console,
                token_file,
                state,
                version,
                batch,
                interval,
                update_time,
                timeout,
            } => {
                let plan = RolloutPlan {
                    version,
                    batch,
                    interval,
                    update_time,
                    timeout,
                };
                rollout(&console, &token_file, &state, plan).await
            }
            Command::Signin(args) => signin::run(args).await,
            Command::Fleet(args) => fleet::run(args).await,
            Command::Failover(args) => failover::run(args).await,
        }
    })
}

fn client(connections: usize) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .pool_idle_timeout(POOL_IDLE)
        .timeout(Duration::from_secs(10))
        .build()?)
}

async fn post(
    http: &reqwest::Client,
    url: &str,
    bearer: &str,
    body: &serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    let res = http.post(url).bearer_auth(bearer).json(body).send().await?;
    let status = res.status();
    let text = res.text().await?;
    if !status.is_success() && status.as_u16() != 409 {
        bail!("{url}: HTTP {status}: {text}");
    }
    Ok(serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
}

/// Lifts the soft limit on open files to the hard one: every simulated server holds a long poll.
fn raise_open_files() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            eprintln!("could not raise the open-file limit: {e}");
        }
    }
}

/// Which servers `enroll` adds.
struct Batch {
    agents: usize,
    concurrency: usize,
    group: String,
    first: usize,
}

async fn enroll(
    console: &str,
    token_file: &PathBuf,
    batch: &Batch,
    state: &PathBuf,
) -> anyhow::Result<()> {
    let Batch {
        agents,
        concurrency,
        ref group,
        first,
    } = *batch;
    let token = std::fs::read_to_string(token_file)
        .with_context(|| format!("--token-file {}", token_file.display()))?
        .trim()
        .to_owned();
    let http = client(concurrency)?;
    let api = |p: &str| format!("{console}/api/v1{p}");
    post(
        &http,
        &api("/users"),
        &token,
        &json!({"name": "bench", "project": "default"}),
    )
    .await?;
    post(
        &http,
        &api("/groups"),
        &token,
        &json!({"name": group, "project": "default", "network": "vpc"}),
    )
    .await?;

    let started = Instant::now();
    let semaphore = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut tasks = Vec::with_capacity(agents);
    for i in 0..agents {
        let (http, token, console, group) = (
            http.clone(),
            token.clone(),
            console.to_owned(),
            group.clone(),
        );
        let permit = Arc::clone(&semaphore).acquire_owned().await?;
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let api = |p: &str| format!("{console}/api/v1{p}");
            let uuid = uuid::Uuid::from_u128(0x4c4c_4544_0000_0000_0000_0000_0000_0000 | ((first + i) as u128 + 1)).to_string();
            post(&http, &api("/servers"), &token, &json!({"project": "default", "group": group, "name": uuid})).await?;
            let cmd = post(&http, &api("/install-commands"), &token,
                &json!({"project": "default", "group": group, "user_name": "bench"})).await?;
            let url = cmd["url"].as_str().context("install command without a url")?;
            let one_time = url.rsplit('/').next().context("install url without a token")?.to_owned();
            let body = json!({
                "enrollment_token": one_time,
                "identity": {"kind": "uuid", "value": uuid},
                "facts": {"hostname": format!("bench-{i}"), "cpu_cores": 8.0, "memory_bytes": 17179869184u64,
                          "os": "CentOS release 6.10 (Final)", "arch": "x86_64", "kernel": "2.6.32", "agent_version": "0.1.0"}
            });
            let res = http.post(api("/enroll")).json(&body).send().await?;
            let status = res.status();
            let v: serde_json::Value = res.json().await?;
            if !status.is_success() {
                bail!("enroll {uuid}: HTTP {status}: {v}");
            }
            Ok::<_, anyhow::Error>(Node {
                id: v["node_id"].as_str().context("no node_id")?.to_owned(),
                secret: v["node_secret"].as_str().context("no node_secret")?.to_owned(),
            })
        }));
    }
    let mut nodes = Vec::with_capacity(agents);
    for (i, t) in tasks.into_iter().enumerate() {
        nodes.push(t.await??);
        if (i + 1) % 1000 == 0 {
            eprintln!("enrolled {} of {agents}", i + 1);
        }
    }
    let text = serde_json::to_string(&nodes)?;
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(state)?;
        f.write_all(text.as_bytes())?;
    }
    println!(
        "{}",
        json!({"enrolled": nodes.len(), "seconds": started.elapsed().as_secs_f64()})
    );
    Ok(())
}

fn load_nodes(state: &PathBuf) -> anyhow::Result<Vec<Node>> {
    let text =
        std::fs::read_to_string(state).with_context(|| format!("--state {}", state.display()))?;
    let nodes: Vec<Node> = serde_json::from_str(&text)?;
    if nodes.is_empty() {
        bail!(
            "{} holds no agents; run `tasknode-loadgen enroll` first",
            state.display()
        );
    }
    Ok(nodes)
}

/// An empty latency histogram: microseconds, 1 µs to 60 s, 3 significant digits.
fn histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 60_000_000, 3).context("latency histogram bounds")
}

fn unix_nanos() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

/// Waits until task `id` is final and the console holds its whole log; returns the task.
async fn wait_done(
    http: &reqwest::Client,
    console: &str,
    token: &str,
    id: i64,
) -> anyhow::Result<serde_json::Value> {
    let url = format!("{console}/api/v1/tasks/{id}/log?offset=0&limit=1");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if Instant::now() > deadline {
            bail!(
                "task {id} was not done with its whole log at the console within 120 s; is an agent serving its group?"
            );
        }
        let res = http.get(&url).bearer_auth(token).send().await?;
        let complete = res
            .headers()
            .get("x-tasknode-log-complete")
            .is_some_and(|v| v == "true");
        if complete {
            let t = http
                .get(format!("{console}/api/v1/tasks/{id}"))
                .bearer_auth(token)
                .send()
                .await?
                .json::<serde_json::Value>()
                .await?;
            return Ok(t);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn submit(
    http: &reqwest::Client,
    console: &str,
    token: &str,
    group: &str,
    script: &str,
) -> anyhow::Result<i64> {
    let body = json!({"project": "default", "group": group, "script": script});
    let t = post(http, &format!("{console}/api/v1/tasks"), token, &body).await?;
    t["id"]
        .as_i64()
        .context("submit answered without a task id")
}

async fn dispatch(
    console: &str,
    token_file: &PathBuf,
    group: &str,
    tasks: usize,
    log_mb: u64,
) -> anyhow::Result<()> {
    let token = std::fs::read_to_string(token_file)
        .with_context(|| format!("reading {}", token_file.display()))?
        .trim()
        .to_owned();
    let http = client(4)?;
    let mut hist = histogram()?;
    // The script prints the time of its first instruction; the agent and this process share
    // the host's clock.
    let script = "date +%s%N\n";
    for _ in 0..tasks {
        let sent = unix_nanos();
        let id = submit(&http, console, &token, group, script).await?;
        let t = wait_done(&http, console, &token, id).await?;
        if t["state"] != "succeeded" {
            bail!("task {id} ended {}: {}", t["state"], t["reason"]);
        }
        let log = http
            .get(format!("{console}/api/v1/tasks/{id}/log"))
            .bearer_auth(&token)
            .send()
            .await?
            .text()
            .await?;
        let started: i128 = log
            .trim()
            .parse()
            .with_context(|| format!("task {id} printed {log:?}, not a time"))?;
        let micros = ((started - sent) / 1000).max(1) as u64;
        hist.record(micros)?;
    }
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;

    let bytes = log_mb * 1_000_000;
    let t0 = Instant::now();
    let id = submit(
        &http,
        console,
        &token,
        group,
        &format!("head -c {bytes} /dev/zero | tr '\\0' x\n"),
    )
    .await?;
    let t = wait_done(&http, console, &token, id).await?;
    let took = t0.elapsed().as_secs_f64();
    let held = t["log_bytes"].as_u64().unwrap_or(0);
    if held < bytes {
        bail!(
            "the console holds {held} bytes of the {bytes}-byte log; raise the agent's log_max_bytes"
        );
    }
    // Reading it back through the console, 1 MiB at a time, as `task log` does.
    let t1 = Instant::now();
    let mut offset: u64 = 0;
    while offset < held {
        let chunk = http
            .get(format!("{console}/api/v1/tasks/{id}/log?offset={offset}"))
            .bearer_auth(&token)
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await?;
        if chunk.is_empty() {
            bail!("the log of task {id} ended at {offset} of {held} bytes");
        }
        offset += chunk.len() as u64;
    }
    let read_secs = t1.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({
            "tasks": tasks,
            "dispatch_p50_ms": ms(0.5),
            "dispatch_p99_ms": ms(0.99),
            "dispatch_max_ms": hist.max() as f64 / 1000.0,
            "log_bytes": held,
            "log_seconds": took,
            "log_mb_per_s": held as f64 / 1e6 / took,
            "log_read_seconds": read_secs,
            "log_read_mb_per_s": held as f64 / 1e6 / read_secs,
        })
    );
    Ok(())
}

struct RolloutPlan {
    version: String,
    batch: String,
    interval: Duration,
    update_time: Duration,
    timeout: Duration,
}

async fn rollout(
    console: &str,
    token_file: &PathBuf,
    state: &PathBuf,
    plan: RolloutPlan,
) -> anyhow::Result<()> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let token = std::fs::read_to_string(token_file)
        .with_context(|| format!("--token-file {}", token_file.display()))?
        .trim()
        .to_owned();
    let nodes = load_nodes(state)?;
    let count = nodes.len();
    let http = client(256)?;
    let done = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::with_capacity(count);
    for node in nodes {
        let (http, console, done) = (http.clone(), console.to_owned(), Arc::clone(&done));
        let (interval, update_time) = (plan.interval, plan.update_time);
        let phase = rand::thread_rng().gen_range(Duration::ZERO..interval);
        workers.push(tokio::spawn(async move {
            let mut version = "0.1.0".to_owned();
            let mut updating: Option<(String, Instant)> = None;
            let mut finished_at = None;
            let mut ticker =
                tokio::time::interval_at(tokio::time::Instant::now() + phase, interval);
            let report = |version: &str, outcome: &str| {
                http.post(format!("{console}/api/v1/nodes/{}/update", node.id))
                    .bearer_auth(&node.secret)
                    .json(&json!({"version": version, "outcome": outcome}))
                    .send()
            };
            while done.load(Ordering::SeqCst) < count {
                ticker.tick().await;
                if let Some((to, since)) = &updating
                    && since.elapsed() >= update_time
                {
                    version = to.clone();
                    let _ = report(&version, "updated").await;
                    updating = None;
                }
                let res = http
                    .post(format!("{console}/api/v1/nodes/{}/heartbeat", node.id))
                    .bearer_auth(&node.secret)
                    .json(&json!({"agent_version": version, "running_tasks": 0, "free_slots": 4}))
                    .send()
                    .await;
                let Ok(res) = res else { continue };
                let Ok(answer) = res.json::<serde_json::Value>().await else {
                    continue;
                };
                match answer["desired_version"].as_str() {
                    Some(want) if want != version && updating.is_none() => {
                        let _ = report(want, "started").await;
                        updating = Some((want.to_owned(), Instant::now()));
                    }
                    Some(want) if want == version && finished_at.is_none() => {
                        finished_at = Some(Instant::now());
                        done.fetch_add(1, Ordering::SeqCst);
                    }
                    _ => {}
                }
            }
            finished_at
        }));
    }
    // Every agent heartbeats once before the rollout starts.
    tokio::time::sleep(plan.interval * 2).await;
    let batch = if plan.batch == "all" {
        json!({"kind": "all"})
    } else if let Some(p) = plan.batch.strip_suffix('%') {
        json!({"kind": "percent", "value": p.parse::<u32>().context("--batch")?})
    } else {
        json!({"kind": "count", "value": plan.batch.parse::<u32>().context("--batch")?})
    };
    let t0 = Instant::now();
    post(
        &http,
        &format!("{console}/api/v1/rollouts"),
        &token,
        &json!({"project": "default", "group": "bench", "version": plan.version, "batch": batch, "max_failures": 0}),
    )
    .await?;
    let deadline = started + plan.timeout;
    while done.load(Ordering::SeqCst) < count {
        if Instant::now() > deadline {
            bail!(
                "only {} of {count} agents run {} after {:?}",
                done.load(Ordering::SeqCst),
                plan.version,
                plan.timeout
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seconds = t0.elapsed().as_secs_f64();
    for w in workers {
        w.await?;
    }
    println!(
        "{}",
        json!({"agents": count, "batch": plan.batch, "update_time_s": plan.update_time.as_secs_f64(), "converge_s": seconds})
    );
    Ok(())
}

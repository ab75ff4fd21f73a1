//! `heartbeat` and `saturate`: agents' heartbeats at fleet scale (open loop, each agent on its
//! own schedule) and back-to-back at a fixed concurrency. A failed request is counted by kind
//! (an HTTP status, a timeout, a refused connection), so a run that had errors says which.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use hdrhistogram::Histogram;
use rand::Rng;
use serde_json::json;

use crate::{Node, client, histogram, load_nodes, raise_open_files};

/// What one worker measured: latencies of successful requests, and the count of each outcome.
struct Tally {
    latencies: Histogram<u64>,
    ok: u64,
    /// Failed requests by kind (`failure`).
    errors: BTreeMap<String, u64>,
}

/// What kind of failure a request had: its status, or what went wrong on the way.
fn failure(res: &Result<reqwest::Response, reqwest::Error>) -> String {
    match res {
        Ok(r) => format!("HTTP {}", r.status().as_u16()),
        Err(e) if e.is_timeout() => "timeout".to_owned(),
        Err(e) if e.is_connect() => "connect".to_owned(),
        Err(e) => {
            // The innermost cause says it best ("connection reset by peer", ...).
            let mut cause: &dyn std::error::Error = e;
            while let Some(inner) = cause.source() {
                cause = inner;
            }
            format!("request: {cause}")
        }
    }
}

impl Tally {
    fn new(empty: &Histogram<u64>) -> Tally {
        Tally {
            latencies: empty.clone(),
            ok: 0,
            errors: BTreeMap::new(),
        }
    }

    fn failed(&mut self, kind: String) {
        *self.errors.entry(kind).or_default() += 1;
    }

    /// Sends a request, reads the whole answer, and records its latency if it succeeded.
    async fn send(&mut self, req: reqwest::RequestBuilder) {
        let t0 = Instant::now();
        match req.send().await {
            Ok(r) if r.status().is_success() => match r.bytes().await {
                Ok(_) => {
                    self.ok += 1;
                    let _ = self.latencies.record(t0.elapsed().as_micros() as u64);
                }
                Err(_) => self.failed("reading the answer".to_owned()),
            },
            other => self.failed(failure(&other)),
        }
    }

    fn summary(&self, elapsed: Duration) -> serde_json::Value {
        let ms = |q: f64| self.latencies.value_at_quantile(q) as f64 / 1000.0;
        json!({
            "ok": self.ok,
            "errors": self.errors.values().sum::<u64>(),
            "error_kinds": self.errors,
            "seconds": elapsed.as_secs_f64(),
            "rate_per_s": self.ok as f64 / elapsed.as_secs_f64(),
            "p50_ms": ms(0.5),
            "p99_ms": ms(0.99),
            "max_ms": self.latencies.max() as f64 / 1000.0,
        })
    }
}

/// Waits for the workers and adds up what they measured.
async fn collect(
    workers: Vec<tokio::task::JoinHandle<Tally>>,
    empty: &Histogram<u64>,
) -> anyhow::Result<Tally> {
    let mut all = Tally::new(empty);
    for w in workers {
        let t = w.await?;
        all.latencies.add(t.latencies)?;
        all.ok += t.ok;
        for (kind, n) in t.errors {
            *all.errors.entry(kind).or_default() += n;
        }
    }
    Ok(all)
}

const HEARTBEAT: &str =
    r#"{"agent_version":"0.1.0","clock_offset_ms":0,"running_tasks":0,"free_slots":16}"#;

/// One heartbeat of `node`, as an agent sends it.
pub(crate) fn heartbeat_request(
    http: &reqwest::Client,
    console: &str,
    node: &Node,
) -> reqwest::RequestBuilder {
    http.post(format!("{console}/api/v1/nodes/{}/heartbeat", node.id))
        .bearer_auth(&node.secret)
        .header("content-type", "application/json")
        .body(HEARTBEAT)
}

pub(crate) async fn heartbeat(
    consoles: &[String],
    state: &PathBuf,
    interval: Duration,
    duration: Duration,
    connections: usize,
) -> anyhow::Result<()> {
    raise_open_files();
    let nodes = load_nodes(state)?;
    let http = client(connections)?;
    let empty = histogram()?;
    let inflight = Arc::new(tokio::sync::Semaphore::new(connections));
    // One tally for all agents: a histogram each would take gigabytes at 100,000 agents.
    let shared = Arc::new(std::sync::Mutex::new((Tally::new(&empty), empty.clone())));
    let started = tokio::time::Instant::now();
    let deadline = started + duration;
    let count = nodes.len();
    let mut workers = Vec::with_capacity(count);
    for (i, node) in nodes.into_iter().enumerate() {
        let (http, console, inflight, shared) = (
            http.clone(),
            consoles[i % consoles.len()].clone(),
            Arc::clone(&inflight),
            Arc::clone(&shared),
        );
        let phase = rand::thread_rng().gen_range(Duration::ZERO..interval);
        workers.push(tokio::spawn(async move {
            // Open loop: each agent's sends are due on its own schedule, whatever the answers.
            let mut ticker = tokio::time::interval_at(started + phase, interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let due = ticker.tick().await;
                if due >= deadline {
                    break;
                }
                let Ok(_permit) = inflight.acquire().await else {
                    break;
                };
                let late = tokio::time::Instant::now().duration_since(due);
                let t0 = Instant::now();
                let outcome = match heartbeat_request(&http, &console, &node).send().await {
                    Ok(r) if r.status().is_success() => match r.bytes().await {
                        Ok(_) => Ok(()),
                        Err(_) => Err("reading the answer".to_owned()),
                    },
                    other => Err(failure(&other)),
                };
                let took = u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX);
                let mut guard = shared.lock().unwrap_or_else(|e| e.into_inner());
                let (tally, lag) = &mut *guard;
                let _ = lag.record(u64::try_from(late.as_micros()).unwrap_or(u64::MAX).max(1));
                match outcome {
                    Ok(()) => {
                        tally.ok += 1;
                        let _ = tally.latencies.record(took.max(1));
                    }
                    Err(kind) => tally.failed(kind),
                }
            }
        }));
    }
    for w in workers {
        w.await?;
    }
    let guard = shared.lock().unwrap_or_else(|e| e.into_inner());
    let (all, lag) = &*guard;
    let mut out = all.summary(duration);
    out["agents"] = json!(count);
    out["consoles"] = json!(consoles.len());
    out["interval_s"] = json!(interval.as_secs_f64());
    out["planned_per_s"] = json!(count as f64 / interval.as_secs_f64());
    out["lag_p99_ms"] = json!(lag.value_at_quantile(0.99) as f64 / 1000.0);
    out["lag_max_ms"] = json!(lag.max() as f64 / 1000.0);
    println!("{out}");
    Ok(())
}

pub(crate) async fn saturate(
    url: Option<String>,
    console: Option<String>,
    state: Option<PathBuf>,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<()> {
    let nodes = match (&url, &console, &state) {
        (Some(_), _, _) => Vec::new(),
        (None, Some(_), Some(s)) => load_nodes(s)?,
        _ => bail!("saturate needs --url, or --console and --state"),
    };
    let nodes = Arc::new(nodes);
    let http = client(connections)?;
    let empty = histogram()?;
    let started = Instant::now();
    let deadline = started + duration;
    let mut workers = Vec::with_capacity(connections);
    for c in 0..connections {
        let (http, url, console, nodes) = (
            http.clone(),
            url.clone(),
            console.clone(),
            Arc::clone(&nodes),
        );
        let mut tally = Tally::new(&empty);
        workers.push(tokio::spawn(async move {
            let mut i = c;
            while Instant::now() < deadline {
                let req = match (&url, &console) {
                    (Some(u), _) => http.get(u),
                    (None, Some(base)) => {
                        let node = &nodes[i % nodes.len()];
                        i += connections;
                        heartbeat_request(&http, base, node)
                    }
                    (None, None) => break,
                };
                tally.send(req).await;
            }
            tally
        }));
    }
    let all = collect(workers, &empty).await?;
    let mut out = all.summary(started.elapsed());
    out["connections"] = json!(connections);
    println!("{out}");
    Ok(())
}

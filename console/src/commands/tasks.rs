//! `tasknode-console task ...`: submit, list, show, cancel, and read logs, over the API.

use std::io::{Read, Write};
use std::time::Duration;

use anyhow::Context;
use tasknode_protocol::tasks::{
    MAX_SCRIPT_BYTES, MAX_TIMEOUT_SECS, SubmitTask, TaskState, TaskView, log_headers,
    validate_idempotency_key,
};
use tasknode_protocol::validate;

use super::{print_json, print_table};
use crate::cli::{Global, TaskCmd};
use crate::client::{AdminClient, ClientError};

/// How long `task submit` waits before each time it sends a submit again, when the console
/// did not answer: about 10 s in all, time for a load balancer to find a console gone.
const SUBMIT_RETRY_WAITS: [Duration; 5] = [
    Duration::from_millis(250),
    Duration::from_millis(750),
    Duration::from_secs(1),
    Duration::from_secs(3),
    Duration::from_secs(5),
];

/// Sends `req` (which carries an idempotency key) until a console answers it: a submit whose
/// answer was lost, committed or not, is sent again under the same key, so it makes one task.
async fn submit(client: &AdminClient, req: &SubmitTask) -> Result<TaskView, ClientError> {
    let mut waits = SUBMIT_RETRY_WAITS.iter();
    loop {
        let err = match client.post("/api/v1/tasks", req).await {
            Ok(t) => return Ok(t),
            Err(e) => e,
        };
        let unanswered = match &err {
            ClientError::Unreachable { .. } => true,
            ClientError::BadAnswer { status, .. } => matches!(status, 502..=504),
            _ => false,
        };
        match waits.next() {
            Some(wait) if unanswered => {
                eprintln!(
                    "{err}\nsending the submit again in {wait:?}, under the same idempotency key"
                );
                tokio::time::sleep(*wait).await;
            }
            _ => return Err(err),
        }
    }
}

pub async fn run(global: &Global, cmd: TaskCmd) -> anyhow::Result<()> {
    match cmd {
        TaskCmd::Submit {
            group,
            script,
            timeout,
            project,
            idempotency_key,
            out,
        } => {
            validate::name("--group", &group)?;
            validate::name("--project", &project)?;
            let timeout_secs = timeout.map(|t| t.as_secs().max(1));
            if timeout_secs.is_some_and(|t| t > MAX_TIMEOUT_SECS) {
                anyhow::bail!("--timeout: a task may run for at most 7 days (168h)");
            }
            if let Some(key) = &idempotency_key {
                validate_idempotency_key("--idempotency-key", key)?;
            }
            let text = read_script(&script)?;
            let client = AdminClient::resolve(global)?;
            let req = SubmitTask {
                project,
                group,
                script: text,
                timeout_secs,
                idempotency_key: Some(
                    idempotency_key.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
                ),
            };
            let t = submit(&client, &req).await?;
            if out.json {
                return print_json(&t);
            }
            println!("task {} submitted to group {}: {}", t.id, t.group, t.reason);
            println!(
                "follow it with `tasknode-console task log {} --follow`",
                t.id
            );
        }
        TaskCmd::List {
            group,
            project,
            state,
            limit,
            out,
        } => {
            if let Some(s) = &state
                && TaskState::parse(s).is_none()
            {
                anyhow::bail!(
                    "--state {s}: use queued, assigned, running, succeeded, failed, timed_out, cancelled or lost"
                );
            }
            let client = AdminClient::resolve(global)?;
            let limit = limit.to_string();
            let mut q: Vec<(&str, &str)> = vec![("limit", &limit)];
            for (k, v) in [("group", &group), ("project", &project), ("state", &state)] {
                if let Some(v) = v {
                    q.push((k, v));
                }
            }
            let list: Vec<TaskView> = client.get("/api/v1/tasks", &q).await?;
            if out.json {
                return print_json(&list);
            }
            let dash = || "-".to_owned();
            let rows: Vec<_> = list
                .into_iter()
                .map(|t| {
                    vec![
                        t.id.to_string(),
                        t.group,
                        t.state.to_string(),
                        t.server.unwrap_or_else(dash),
                        t.exit_code.map_or_else(dash, |c| c.to_string()),
                        t.submitted_at,
                        t.reason,
                    ]
                })
                .collect();
            print_table(
                &[
                    "ID",
                    "GROUP",
                    "STATE",
                    "SERVER",
                    "EXIT",
                    "SUBMITTED",
                    "REASON",
                ],
                &rows,
            );
        }
        TaskCmd::Show { id, out } => {
            let client = AdminClient::resolve(global)?;
            let t: TaskView = client.get(&format!("/api/v1/tasks/{id}"), &[]).await?;
            if out.json {
                return print_json(&t);
            }
            show(&t);
        }
        TaskCmd::Cancel { id, out } => {
            let client = AdminClient::resolve(global)?;
            let t: TaskView = client
                .post(
                    &format!("/api/v1/tasks/{id}/cancel"),
                    &serde_json::json!({}),
                )
                .await?;
            if out.json {
                return print_json(&t);
            }
            match t.state {
                TaskState::Cancelled => println!("task {id} cancelled: {}", t.reason),
                _ => println!(
                    "task {id}: cancel requested; its server kills it at its next poll ({})",
                    t.reason
                ),
            }
        }
        TaskCmd::Log { id, follow } => log(global, id, follow).await?,
    }
    Ok(())
}

fn read_script(path: &std::path::Path) -> anyhow::Result<String> {
    let mut bytes = Vec::new();
    if path.as_os_str() == "-" {
        std::io::stdin()
            .take(MAX_SCRIPT_BYTES as u64 + 1)
            .read_to_end(&mut bytes)
            .context("--script -: reading the script from standard input")?;
    } else {
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_SCRIPT_BYTES as u64 + 1).read_to_end(&mut bytes))
            .with_context(|| format!("--script: reading {}", path.display()))?;
    }
    if bytes.len() > MAX_SCRIPT_BYTES {
        anyhow::bail!(
            "--script: larger than {MAX_SCRIPT_BYTES} bytes; ship large code to the servers and submit a script that calls it"
        );
    }
    String::from_utf8(bytes)
        .map_err(|_| anyhow::anyhow!("--script: not UTF-8 text; a task is a shell script"))
}

fn show(t: &TaskView) {
    let dash = || "-".to_owned();
    let rows = [
        ("task", t.id.to_string()),
        ("group", format!("{} (project {})", t.group, t.project)),
        ("state", t.state.to_string()),
        ("reason", t.reason.clone()),
        ("server", t.server.clone().unwrap_or_else(dash)),
        ("timeout", format!("{} s", t.timeout_secs)),
        ("submitted", t.submitted_at.clone()),
        ("started", t.started_at.clone().unwrap_or_else(dash)),
        ("finished", t.finished_at.clone().unwrap_or_else(dash)),
        (
            "exit code",
            t.exit_code.map_or_else(dash, |c| c.to_string()),
        ),
        ("log", format!("{} bytes", t.log_bytes)),
    ];
    for (k, v) in rows {
        println!("{k:<10} {v}");
    }
}

/// Prints the log; with `follow`, until the task is done and the console holds all of it.
async fn log(global: &Global, id: i64, follow: bool) -> anyhow::Result<()> {
    let client = AdminClient::resolve(global)?;
    let path = format!("/api/v1/tasks/{id}/log");
    let mut offset: u64 = 0;
    let mut out = std::io::stdout().lock();
    loop {
        let at = offset.to_string();
        let (headers, bytes) = client.get_bytes(&path, &[("offset", &at)]).await?;
        out.write_all(&bytes)
            .context("writing the log to standard output")?;
        out.flush().ok();
        offset += bytes.len() as u64;
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let size: u64 = header(log_headers::SIZE)
            .and_then(|s| s.parse().ok())
            .unwrap_or(offset);
        if offset < size {
            continue;
        }
        let complete = header(log_headers::COMPLETE).as_deref() == Some("true");
        if !follow || complete {
            if follow && let Some(state) = header(log_headers::STATE) {
                eprintln!("task {id} is {state}");
            }
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

//! Reading a task's log: from the console's own copy (VPC servers push theirs), or from the
//! log service of the classic server that ran it, with a token signed for that node and file.
//! A log service is untrusted: the client is bounded in time and bytes and follows no redirect.

use std::time::Duration;

use tasknode_protocol::tasks::{TaskState, log_headers};
use tasknode_protocol::validate;

use super::ServiceError;
use crate::app::AppState;
use crate::store::Task;

/// A piece of a task's log, with where the task and its log stand.
#[derive(Debug)]
pub struct LogChunk {
    pub bytes: Vec<u8>,
    /// The log's size so far.
    pub size: u64,
    pub state: TaskState,
    /// The task is over and its whole log is here.
    pub complete: bool,
}

impl LogChunk {
    /// The headers a piece of log travels with, in the API and the web console alike (names
    /// from `tasknode_protocol::tasks::log_headers`).
    pub fn headers(&self) -> [(&'static str, String); 4] {
        [
            ("content-type", "application/octet-stream".to_owned()),
            (log_headers::STATE, self.state.as_str().to_owned()),
            (log_headers::SIZE, self.size.to_string()),
            (
                log_headers::COMPLETE,
                if self.complete { "true" } else { "false" }.to_owned(),
            ),
        ]
    }
}

/// Reads up to `limit` bytes of task `t`'s log from `offset`: from the console's own copy, or
/// from the log service of the classic server that ran it.
pub async fn read(
    state: &AppState,
    t: &Task,
    offset: u64,
    limit: usize,
) -> Result<LogChunk, ServiceError> {
    let (bytes, size) = match classic_server(state, t).await? {
        Some((server, node_id)) => {
            read_from_agent(state, &server, &node_id, t.id, offset, limit).await?
        }
        None => state.store.read_log(t.id, offset, limit).await?,
    };
    let complete = t.state.is_final() && t.log_bytes.is_none_or(|want| size >= want);
    Ok(LogChunk {
        bytes,
        size,
        state: t.state,
        complete,
    })
}

/// The server (name and node id) of a task that ran on a classic server, whose log the
/// console reads from that server's log service.
async fn classic_server(
    state: &AppState,
    t: &Task,
) -> Result<Option<(String, String)>, ServiceError> {
    let Some(name) = &t.server else {
        return Ok(None);
    };
    let Some(server) = state.store.server_by_name(&t.project, name).await? else {
        return Ok(None);
    };
    if server.network != tasknode_protocol::NetworkType::Classic {
        return Ok(None);
    }
    Ok(server.enrollment.map(|e| (server.name, e.node_id)))
}

/// Longest the console waits for one read from a log service, its answer's body included.
const AGENT_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Most bytes of an error answer from a log service the console reads.
const AGENT_ERROR_BYTES: usize = 4096;

/// The client for agents' log services: bounded in time, following no redirect (a log
/// service is untrusted and must not send the console elsewhere) and using no proxy.
fn agent_http() -> &'static reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .timeout(AGENT_READ_TIMEOUT)
            .connect_timeout(Duration::from_secs(3))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .unwrap_or_default()
    })
}

/// Reads the body of `res`, refusing one of more than `max` bytes.
async fn read_capped(mut res: reqwest::Response, max: usize) -> Result<Vec<u8>, ReadCapped> {
    let mut out = Vec::new();
    while let Some(chunk) = res.chunk().await.map_err(ReadCapped::Failed)? {
        if out.len() + chunk.len() > max {
            return Err(ReadCapped::TooLong);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

enum ReadCapped {
    Failed(reqwest::Error),
    TooLong,
}

/// Reads `limit` bytes from `offset` of task `id`'s log from the log service of `server`, with a
/// token signed for that node and file; returns them and the log's size there.
async fn read_from_agent(
    state: &AppState,
    server: &str,
    node_id: &str,
    id: i64,
    offset: u64,
    limit: usize,
) -> Result<(Vec<u8>, u64), ServiceError> {
    let unreachable = |detail: String| ServiceError::Upstream {
        message: format!(
            "server {server} keeps this log and serves it on its log service (classic network), which {detail}; check that the agent runs ({}) and that its log port (8000 by default) is open to the console",
            tasknode_protocol::layout::control_command("status")
        ),
    };
    let Some(addr) = state.live.log_addr(node_id) else {
        return Err(unreachable(
            "has not reported itself since the console started".to_owned(),
        ));
    };
    let path = format!("tasks/{id}.log");
    let token = tasknode_protocol::logtoken::sign(
        &state.log_key,
        &tasknode_protocol::logtoken::Grant {
            node: node_id.to_owned(),
            path: path.clone(),
            exp_ms: state.clock.now_ms() + tasknode_protocol::logtoken::TOKEN_LIFE_MS,
        },
    );
    let url = format!("http://{addr}/logs/{path}");
    let last = offset.saturating_add(limit as u64 - 1);
    let res = agent_http()
        .get(&url)
        .bearer_auth(token)
        .header(reqwest::header::RANGE, format!("bytes={offset}-{last}"))
        .send()
        .await
        .map_err(|e| unreachable(format!("did not answer at {addr}: {e}")))?;
    let status = res.status();
    let size = res
        .headers()
        .get("x-tasknode-log-size")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match status.as_u16() {
        200 | 206 => {
            let bytes = read_capped(res, limit).await.map_err(|e| match e {
                ReadCapped::Failed(e) => unreachable(format!("broke off at {addr}: {e}")),
                ReadCapped::TooLong => unreachable(format!(
                    "sent more than the {limit} bytes asked for at {addr}"
                )),
            })?;
            let size = size.unwrap_or(offset + bytes.len() as u64);
            Ok((bytes, size))
        }
        416 => Ok((Vec::new(), size.unwrap_or(offset))),
        // Not written yet (the task has not started), or past its retention there.
        404 => Ok((Vec::new(), 0)),
        _ => {
            let text = read_capped(res, AGENT_ERROR_BYTES)
                .await
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            Err(unreachable(format!(
                "refused at {addr} (HTTP {status}: {})",
                validate::show(text.trim())
            )))
        }
    }
}

//! The log service of a classic-network server (port 8000 by default): the console reads task
//! logs and heartbeat.log here. Every request must come from an allowed address and carry a
//! token the console signed for this node and that exact file, good for a minute. Only
//! `heartbeat.log` and `tasks/ID.log` can be named, so nothing outside the log directory is
//! reachable. `Range: bytes=A-B` reads part of a file; `?follow=true` waits (up to 25 s) for a
//! running task's log to grow past the range start.
//!
//! Every connection is bounded before any of that: a peer outside the allow list is closed at
//! accept, before a byte is read; a connection has [`HEAD_TIMEOUT`] to send each request head
//! (16 KiB at most); requests carry no body (one that announces a body is answered 413 and the
//! connection closed); at most [`MAX_CONNECTIONS`] are served at once (past that the one longest
//! without a request in flight makes room); and none lives past five minutes. So a flood of
//! half-open sockets can neither shut the console out nor take the file descriptors that
//! heartbeats, task pipes and logs need.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use ed25519_dalek::VerifyingKey;
use serde::Deserialize;
use tasknode_protocol::logtoken;
use tasknode_protocol::tasks::MAX_LOG_CHUNK_BYTES;

use crate::client::now_ms;
use crate::tasks::Runner;

/// Addresses allowed to read: single IPs or CIDR blocks.
#[derive(Debug, Clone, PartialEq)]
pub struct Allow(Vec<(IpAddr, u8)>);

impl Allow {
    /// Parses `10.0.0.5`, `192.168.0.0/24`, `::1`, `fd00::/8` (the `[logs] allow` list).
    pub fn parse(entries: &[String]) -> Result<Allow, String> {
        Allow::parse_setting("[logs] allow", entries)
    }

    /// The same for the setting `field`, which errors name.
    pub fn parse_setting(field: &str, entries: &[String]) -> Result<Allow, String> {
        let mut out = Vec::new();
        for e in entries {
            let (ip, bits) = match e.split_once('/') {
                Some((ip, bits)) => (ip, Some(bits)),
                None => (e.as_str(), None),
            };
            let ip: IpAddr = ip.trim().parse().map_err(|_| {
                format!("{field}: {e:?} is not an IP address or CIDR block (e.g. 10.0.0.5 or 10.0.0.0/24)")
            })?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let bits = match bits {
                Some(b) => b
                    .trim()
                    .parse::<u8>()
                    .ok()
                    .filter(|b| *b <= max)
                    .ok_or_else(|| {
                        format!("{field}: {e:?} has a bad prefix length (0 to {max})")
                    })?,
                None => max,
            };
            out.push((ip, bits));
        }
        Ok(Allow(out))
    }

    pub fn from_ips(ips: impl IntoIterator<Item = IpAddr>) -> Allow {
        Allow(
            ips.into_iter()
                .map(|ip| (ip, if ip.is_ipv4() { 32 } else { 128 }))
                .collect(),
        )
    }

    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.0.iter().any(|(net, bits)| match (net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(*bits)).unwrap_or(0);
                u32::from(*n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(*bits)).unwrap_or(0);
                u128::from(*n) & mask == u128::from(a) & mask
            }
            _ => false,
        })
    }

    pub fn describe(&self) -> String {
        self.0
            .iter()
            .map(|(ip, bits)| format!("{ip}/{bits}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The console's log key, as the last heartbeat answer gave it.
pub type LogKey = Arc<RwLock<Option<VerifyingKey>>>;

#[derive(Clone)]
struct Service {
    node_id: Arc<str>,
    log_dir: Arc<PathBuf>,
    allow: Arc<Allow>,
    key: LogKey,
    runner: Arc<Runner>,
}

pub fn router(
    node_id: &str,
    log_dir: PathBuf,
    allow: Allow,
    key: LogKey,
    runner: Arc<Runner>,
) -> Router {
    let service = Service {
        node_id: Arc::from(node_id),
        log_dir: Arc::new(log_dir),
        allow: Arc::new(allow),
        key,
        runner,
    };
    Router::new()
        .route("/logs/heartbeat.log", get(heartbeat_log))
        .route("/logs/tasks/{file}", get(task_log))
        .fallback(|| async {
            refuse(
                StatusCode::NOT_FOUND,
                "no such log; this service serves /logs/heartbeat.log and /logs/tasks/ID.log",
            )
        })
        .with_state(service)
}

fn refuse(status: StatusCode, message: &str) -> Response {
    (status, format!("{message}\n")).into_response()
}

#[derive(Debug, Default, Deserialize)]
struct LogQuery {
    #[serde(default)]
    follow: bool,
}

async fn heartbeat_log(
    State(s): State<Service>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let path = s.log_dir.join("heartbeat.log");
    serve(&s, peer, &headers, "heartbeat.log", path, None, false).await
}

async fn task_log(
    State(s): State<Service>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(file): Path<String>,
    Query(q): Query<LogQuery>,
    headers: HeaderMap,
) -> Response {
    // Only `DIGITS.log`: no separators, no dots but the one, so no way out of tasks/.
    let id = file
        .strip_suffix(".log")
        .filter(|d| !d.is_empty() && d.len() <= 18 && d.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|d| d.parse::<i64>().ok());
    let Some(id) = id else {
        if !s.allow.permits(peer.ip()) {
            return refuse(StatusCode::FORBIDDEN, "this address may not read logs here");
        }
        return refuse(
            StatusCode::NOT_FOUND,
            "no such log; task logs are /logs/tasks/ID.log",
        );
    };
    let name = format!("tasks/{id}.log");
    let path = s.log_dir.join("tasks").join(format!("{id}.log"));
    serve(&s, peer, &headers, &name, path, Some(id), q.follow).await
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
}

/// `Range: bytes=A-` or `bytes=A-B` as (A, B inclusive).
fn range(headers: &HeaderMap) -> Result<Option<(u64, Option<u64>)>, ()> {
    let Some(v) = headers.get(header::RANGE) else {
        return Ok(None);
    };
    let v = v.to_str().map_err(|_| ())?;
    let spec = v.strip_prefix("bytes=").ok_or(())?;
    let (a, b) = spec.split_once('-').ok_or(())?;
    let a: u64 = a.trim().parse().map_err(|_| ())?;
    let b = match b.trim() {
        "" => None,
        b => Some(b.parse::<u64>().map_err(|_| ())?),
    };
    if b.is_some_and(|b| b < a) {
        return Err(());
    }
    Ok(Some((a, b)))
}

async fn serve(
    s: &Service,
    peer: SocketAddr,
    headers: &HeaderMap,
    name: &str,
    path: PathBuf,
    task: Option<i64>,
    follow: bool,
) -> Response {
    if !s.allow.permits(peer.ip()) {
        tracing::warn!(peer = %peer.ip(), log = name, "log request from an address not in [logs] allow; refused");
        return refuse(StatusCode::FORBIDDEN, "this address may not read logs here");
    }
    let Some(token) = bearer(headers) else {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "send the console's log token: Authorization: Bearer TOKEN",
        );
    };
    let key = *s.key.read().unwrap_or_else(|e| e.into_inner());
    let Some(key) = key else {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "no console log key yet; the agent learns it from its first heartbeat answer",
        );
    };
    if let Err(e) = logtoken::verify(&key, token, &s.node_id, name, now_ms()) {
        tracing::warn!(peer = %peer.ip(), log = name, error = %e, "log request with a bad token; refused");
        return refuse(StatusCode::UNAUTHORIZED, &e.to_string());
    }
    let Ok(range) = range(headers) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "Range must be bytes=START- or bytes=START-END",
        );
    };
    let start = range.map_or(0, |r| r.0);
    let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).ok();
    let mut len = size(&path);
    if follow && let Some(id) = task {
        let until = tokio::time::Instant::now() + Duration::from_secs(25);
        while len.is_none_or(|l| l <= start)
            && s.runner.is_unfinished(id)
            && tokio::time::Instant::now() < until
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
            len = size(&path);
        }
    }
    let Some(len) = len else {
        return refuse(
            StatusCode::NOT_FOUND,
            "no such log here (never written, or past its retention)",
        );
    };
    let mut out = HeaderMap::new();
    out.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    out.insert("x-tasknode-log-size", HeaderValue::from(len));
    out.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if range.is_some() && start >= len {
        if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
            out.insert(header::CONTENT_RANGE, v);
        }
        return (StatusCode::RANGE_NOT_SATISFIABLE, out).into_response();
    }
    let end = range
        .and_then(|r| r.1)
        .map_or(len, |b| (b + 1).min(len))
        .min(start + MAX_LOG_CHUNK_BYTES as u64);
    let bytes = match read_range(&path, start, end) {
        Ok(b) => b,
        Err(e) => {
            return refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("reading the log: {e}"),
            );
        }
    };
    if range.is_some() || end < len {
        if let Ok(v) =
            HeaderValue::from_str(&format!("bytes {start}-{}/{len}", end.saturating_sub(1)))
        {
            out.insert(header::CONTENT_RANGE, v);
        }
        return (StatusCode::PARTIAL_CONTENT, out, bytes).into_response();
    }
    (StatusCode::OK, out, bytes).into_response()
}

fn read_range(path: &std::path::Path, start: u64, end: u64) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path)?;
    f.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::new();
    f.take(end.saturating_sub(start)).read_to_end(&mut buf)?;
    Ok(buf)
}

/// The most connections served at once. Only the console talks to this service, so a few
/// dozen cover every operator following a log; past it, the connection that has gone longest
/// without a request in flight makes room (a peer holding sockets open without asking for
/// anything goes first), and when every one is busy the newcomer is closed.
pub const MAX_CONNECTIONS: usize = 64;
/// A connection must send its request head within this, after it opens and between requests.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// No connection lives longer than this, whatever it does.
const CONNECTION_LIFE: Duration = Duration::from_secs(300);
/// The most a request head may take in memory.
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Binds the service and serves it in the background; returns the port it listens on.
pub async fn spawn(listen: SocketAddr, router: Router, allow: Allow) -> std::io::Result<u16> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(accept_loop(listener, router, Arc::new(allow)));
    Ok(port)
}

/// The connections being served, oldest first, each with whether a request is in flight.
#[derive(Default)]
struct Slots {
    next: u64,
    open: std::collections::BTreeMap<u64, (Arc<AtomicBool>, tokio::task::AbortHandle)>,
}

type SharedSlots = Arc<std::sync::Mutex<Slots>>;

fn lock(slots: &SharedSlots) -> std::sync::MutexGuard<'_, Slots> {
    slots.lock().unwrap_or_else(|e| e.into_inner())
}

/// Says at most once a minute how many connections were closed for `why`.
struct Tally {
    why: &'static str,
    count: u64,
    since: Option<tokio::time::Instant>,
}

impl Tally {
    fn add(&mut self, peer: IpAddr) {
        self.count += 1;
        let now = tokio::time::Instant::now();
        if self
            .since
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(60))
        {
            tracing::warn!(peer = %peer, closed = self.count, "{}", self.why);
            self.count = 0;
            self.since = Some(now);
        }
    }
}

async fn accept_loop(listener: tokio::net::TcpListener, router: Router, allow: Arc<Allow>) {
    let slots = SharedSlots::default();
    let mut outsiders = Tally {
        why: "log service connections from addresses not in [logs] allow, closed before reading a byte",
        count: 0,
        since: None,
    };
    let mut full = Tally {
        why: "log service connections closed: every connection is busy with a request",
        count: 0,
        since: None,
    };
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors, most likely: wait rather than spin.
                tracing::warn!(error = %e, "the log service cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if !allow.permits(peer.ip()) {
            drop(stream);
            outsiders.add(peer.ip());
            continue;
        }
        let mut s = lock(&slots);
        if s.open.len() >= MAX_CONNECTIONS {
            let idle = s
                .open
                .iter()
                .find(|(_, (busy, _))| !busy.load(Ordering::SeqCst))
                .map(|(id, _)| *id);
            match idle.and_then(|id| s.open.remove(&id)) {
                Some((_, task)) => task.abort(),
                None => {
                    drop(s);
                    drop(stream);
                    full.add(peer.ip());
                    continue;
                }
            }
        }
        let id = s.next;
        s.next += 1;
        let busy = Arc::new(AtomicBool::new(false));
        // Spawned under the lock, so the connection's own removal comes after its insertion.
        let task = tokio::spawn(serve_connection(
            stream,
            peer,
            router.clone(),
            Arc::clone(&busy),
            Leave(id, Arc::clone(&slots)),
        ));
        s.open.insert(id, (busy, task.abort_handle()));
    }
}

/// Takes a connection out of the slots when it ends, however it ends.
struct Leave(u64, SharedSlots);

impl Drop for Leave {
    fn drop(&mut self) {
        lock(&self.1).open.remove(&self.0);
    }
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    router: Router,
    busy: Arc<AtomicBool>,
    _leave: Leave,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tower_service::Service as _;

    let service = hyper::service::service_fn(
        move |mut req: axum::extract::Request<hyper::body::Incoming>| {
            let mut router = router.clone();
            let busy = Arc::clone(&busy);
            async move {
                busy.store(true, Ordering::SeqCst);
                // GET only: a request that announces a body is answered at once, unread.
                let has_body = req.headers().contains_key(header::TRANSFER_ENCODING)
                    || req
                        .headers()
                        .get(header::CONTENT_LENGTH)
                        .is_some_and(|v| v.as_bytes() != b"0");
                let res = if has_body {
                    let mut r = refuse(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "this service reads no request body",
                    );
                    r.headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                    Ok(r)
                } else {
                    req.extensions_mut().insert(ConnectInfo(peer));
                    router.call(req.map(axum::body::Body::new)).await
                };
                busy.store(false, Ordering::SeqCst);
                res
            }
        },
    );
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES);
    let conn = http.serve_connection(TokioIo::new(stream), service);
    match tokio::time::timeout(CONNECTION_LIFE, conn).await {
        Ok(Ok(())) | Err(_) => {}
        Ok(Err(e)) => {
            tracing::debug!(peer = %peer.ip(), error = %e, "log service connection ended")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_lists_take_ips_and_cidr_blocks() {
        let a = Allow::parse(&[
            "10.0.0.5".into(),
            "192.168.1.0/24".into(),
            "fd00::/8".into(),
        ])
        .unwrap();
        assert!(a.permits("10.0.0.5".parse().unwrap()));
        assert!(!a.permits("10.0.0.6".parse().unwrap()));
        assert!(a.permits("192.168.1.77".parse().unwrap()));
        assert!(!a.permits("192.168.2.1".parse().unwrap()));
        assert!(a.permits("fd12::1".parse().unwrap()));
        assert!(a.permits("::ffff:10.0.0.5".parse().unwrap()));
        assert!(
            Allow::parse(&["0.0.0.0/0".into()])
                .unwrap()
                .permits("8.8.8.8".parse().unwrap())
        );
        for bad in ["10.0.0", "10.0.0.0/33", "x", "10.0.0.0/"] {
            assert!(Allow::parse(&[bad.into()]).is_err(), "{bad}");
        }
    }

    #[test]
    fn ranges_are_parsed_strictly() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::RANGE, HeaderValue::from_str(v).unwrap());
            range(&m)
        };
        assert_eq!(range(&HeaderMap::new()), Ok(None));
        assert_eq!(h("bytes=5-"), Ok(Some((5, None))));
        assert_eq!(h("bytes=5-9"), Ok(Some((5, Some(9)))));
        for bad in ["bytes=9-5", "items=1-2", "bytes=-5", "bytes=a-"] {
            assert!(h(bad).is_err(), "{bad}");
        }
    }
}

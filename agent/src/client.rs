//! The agent's client of the console API. Every answer, success or refusal, comes back with its
//! latency and the clock offset measured from the console-time header (NTP-style: the console's
//! time minus the agent's time at the midpoint of the round trip). Every request goes to the
//! console in use and moves on to the next of the config's consoles when that one fails
//! ([`crate::consoles`]); one CA pin holds for all of them.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::Url;
use reqwest::header::AUTHORIZATION;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tasknode_protocol::TIME_HEADER;

use crate::consoles::Consoles;
use tasknode_protocol::tasks::{FinishTask, LogAck, PollRequest, PollResponse, StartTask};
use tasknode_protocol::updates::UpdateReport;
use tasknode_protocol::wire::{
    EnrollRequest, EnrollResponse, ErrorBody, HeartbeatRequest, HeartbeatResponse, NodeView,
    ShutdownRequest,
};

/// By default a request gives up after 10 s.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection left unused this long is closed by the agent, before the console does.
const POOL_IDLE: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{value:?} is not a console URL; use http://HOST:PORT or https://HOST:PORT")]
    BadUrl { value: String },
    #[error("console CA {path}: {detail}")]
    BadCa { path: PathBuf, detail: String },
    #[error("cannot reach the console at {url}: {detail}")]
    Unreachable {
        url: String,
        detail: String,
        latency: Duration,
        /// The TLS handshake failed: a certificate not trusted, or a handshake refused.
        tls: bool,
    },
    #[error("console refused (HTTP {status}{}): {message}", field.as_ref().map(|f| format!(", field {f}")).unwrap_or_default())]
    Refused {
        status: u16,
        field: Option<String>,
        message: String,
        latency: Duration,
        offset_ms: Option<i64>,
    },
    #[error("unexpected answer from the console (HTTP {status}): {message}")]
    BadAnswer {
        status: u16,
        message: String,
        latency: Duration,
        offset_ms: Option<i64>,
    },
}

impl ClientError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Refused { status, .. } | ClientError::BadAnswer { status, .. } => {
                Some(*status)
            }
            _ => None,
        }
    }

    /// A refusal that asking again will not change: the console judged the request itself
    /// (a field out of range, a task it no longer holds for this node, a limit reached). Not
    /// 401 or 403, which a re-enrollment mends (results wait on disk for it), nor 408 and 429,
    /// which say "later".
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            ClientError::Refused { status, .. }
                if (400..500).contains(status) && !matches!(status, 401 | 403 | 408 | 429)
        )
    }

    /// The console answered that this node's server was removed from its group (410 Gone,
    /// code `server_removed`): its credentials will not work again.
    pub fn is_removed(&self) -> bool {
        matches!(self, ClientError::Refused { status: 410, .. })
    }

    /// A failure of the console rather than an answer about the request: no answer (a
    /// connection error or a timeout) or a 5xx. The request then goes to the next console; a
    /// 4xx, final or not, is the console's word and goes nowhere else.
    pub fn fails_over(&self) -> bool {
        match self {
            ClientError::Unreachable { .. } => true,
            ClientError::BadAnswer { status, .. } => *status >= 500,
            _ => false,
        }
    }

    /// A TLS handshake that failed (a certificate not trusted): asking the same consoles again
    /// will not change it.
    pub fn is_tls_failure(&self) -> bool {
        matches!(self, ClientError::Unreachable { tls: true, .. })
    }

    /// This failure of the console in use, saying that the `others` failed the request too.
    fn others_failed_too(self, others: usize) -> ClientError {
        let also = if others == 1 {
            " (and the other console failed too)".to_owned()
        } else {
            format!(" (and the other {others} consoles failed too)")
        };
        match self {
            ClientError::Unreachable {
                url,
                detail,
                latency,
                tls,
            } => ClientError::Unreachable {
                url,
                detail: detail + &also,
                latency,
                tls,
            },
            ClientError::BadAnswer {
                status,
                message,
                latency,
                offset_ms,
            } => ClientError::BadAnswer {
                status,
                message: message + &also,
                latency,
                offset_ms,
            },
            other => other,
        }
    }

    pub fn latency(&self) -> Duration {
        match self {
            ClientError::Unreachable { latency, .. }
            | ClientError::Refused { latency, .. }
            | ClientError::BadAnswer { latency, .. } => *latency,
            ClientError::BadUrl { .. } | ClientError::BadCa { .. } => Duration::ZERO,
        }
    }

    pub fn offset_ms(&self) -> Option<i64> {
        match self {
            ClientError::Refused { offset_ms, .. } | ClientError::BadAnswer { offset_ms, .. } => {
                *offset_ms
            }
            _ => None,
        }
    }
}

/// A successful answer with how it was measured.
#[derive(Debug)]
pub struct Answer<T> {
    pub body: T,
    pub status: u16,
    pub latency: Duration,
    pub offset_ms: Option<i64>,
}

pub struct ConsoleClient {
    http: reqwest::Client,
    consoles: Consoles,
    /// Set, with the console's words, when a console answered that this node's server was
    /// removed (410): nothing this node asks will be granted again.
    removed: tokio::sync::watch::Sender<Option<String>>,
}

/// Parses a console URL, accepting only http and https with a host and no credentials.
pub fn parse_console_url(value: &str) -> Result<Url, ClientError> {
    let bad = || ClientError::BadUrl {
        value: value.to_owned(),
    };
    let url = Url::parse(value).map_err(|_| bad())?;
    let ok = matches!(url.scheme(), "http" | "https")
        && url.host().is_some()
        && url.username().is_empty()
        && url.password().is_none()
        && url.query().is_none()
        && url.fragment().is_none();
    if ok { Ok(url) } else { Err(bad()) }
}

/// Whether `e` failed in the TLS handshake. An io::Error's source() skips the error it wraps
/// (here an io::Error wrapping rustls's), so the walk steps into it instead.
fn tls_failure(e: &reqwest::Error) -> bool {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(cause) = next {
        if cause.is::<rustls::Error>() {
            return true;
        }
        next = match cause
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(wrapped) => Some(wrapped),
            None => cause.source(),
        };
    }
    false
}

/// A reqwest error and its causes on one line, without the URL (the caller names it once):
/// reqwest's own message alone rarely says "connection refused".
fn describe(e: reqwest::Error) -> String {
    chain(&e.without_url())
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let msg = s.to_string();
        if !out.contains(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        source = s.source();
    }
    out
}

/// The host's clock in milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl ConsoleClient {
    /// A client for the consoles at `console_urls`, the first in use. With `ca`, every
    /// console's certificate must chain to the CA certificates in that PEM file, and to
    /// nothing else.
    pub fn new(console_urls: &[String], ca: Option<&Path>) -> Result<ConsoleClient, ClientError> {
        let consoles = Consoles::new(console_urls)?;
        let mut builder = reqwest::Client::builder();
        if let Some(path) = ca {
            let bad = |detail: String| ClientError::BadCa {
                path: path.to_owned(),
                detail,
            };
            let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| bad(format!("not PEM certificates ({})", chain(&e))))?;
            if certs.is_empty() {
                return Err(bad(
                    "holds no certificate; copy the console's DATA/tls/ca.pem there".to_owned(),
                ));
            }
            builder = builder.tls_built_in_root_certs(false);
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            // Under the console's 60 s for an idle kept-alive connection: a request sent on
            // one the console is closing fails. (Not under its 10 s for a new connection's
            // first request: the heartbeat's connection, idle 10 s between heartbeats, would
            // then be opened again for each.)
            .pool_idle_timeout(POOL_IDLE)
            .user_agent(concat!("tasknode/", env!("TASKNODE_AGENT_VERSION")))
            .build()
            .map_err(|e| ClientError::Unreachable {
                url: consoles.current_url(),
                tls: tls_failure(&e),
                detail: describe(e),
                latency: Duration::ZERO,
            })?;
        Ok(ConsoleClient {
            http,
            consoles,
            removed: tokio::sync::watch::Sender::new(None),
        })
    }

    /// The consoles, which one is in use and what each last did.
    pub fn consoles(&self) -> &Consoles {
        &self.consoles
    }

    /// Waits until a console answers that this node's server was removed (any request's
    /// answer, a heartbeat's or a poll's), and returns what it said.
    pub async fn removed(&self) -> String {
        let mut rx = self.removed.subscribe();
        loop {
            if let Some(message) = rx.borrow_and_update().clone() {
                return message;
            }
            if rx.changed().await.is_err() {
                // The sender lives as long as this client: never reached.
                std::future::pending::<()>().await;
            }
        }
    }

    /// Runs `go` with `path` under the console in use; when that console fails
    /// ([`ClientError::fails_over`]), under the next one, round-robin, until one answers or
    /// each has failed once (then the failure of the console in use is returned, saying that
    /// the others failed too). The first console that answers is in use from then on.
    async fn each<T, F, Fut>(&self, path: &str, go: F) -> Result<T, ClientError>
    where
        F: Fn(Url) -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let (start, order) = self.consoles.order();
        let mut first = None;
        for i in order {
            let mut url = self.consoles.url(i).clone();
            url.set_path(path);
            match go(url).await {
                Err(e) if e.fails_over() => {
                    self.consoles.failed(i, &e);
                    first.get_or_insert(e);
                }
                answer => {
                    self.consoles.answered(start, i);
                    // A 410 is the console's word on this node, not a failure of that
                    // console: it goes to no other console, and nothing is asked again.
                    if let Err(e @ ClientError::Refused { status: 410, .. }) = &answer {
                        let said = e.to_string();
                        self.removed.send_if_modified(|r| {
                            r.is_none() && {
                                *r = Some(said);
                                true
                            }
                        });
                    }
                    return answer;
                }
            }
        }
        let others = self.consoles.len() - 1;
        Err(match first {
            Some(e) if others > 0 => e.others_failed_too(others),
            Some(e) => e,
            None => ClientError::BadUrl {
                value: String::new(),
            },
        })
    }

    /// How console `i` alone sees this node, without moving to another (`status` and
    /// `doctor` ask each console).
    pub async fn node_at(
        &self,
        i: usize,
        node_id: &str,
        secret: &str,
    ) -> Result<Answer<NodeView>, ClientError> {
        let mut url = self.consoles.url(i).clone();
        url.set_path(&format!("/api/v1/nodes/{node_id}"));
        let req = self
            .http
            .get(url.clone())
            .header(AUTHORIZATION, format!("Bearer {secret}"));
        self.send(req, &url).await
    }

    /// How the console sees this node.
    pub async fn node(&self, node_id: &str, secret: &str) -> Result<Answer<NodeView>, ClientError> {
        self.each(&format!("/api/v1/nodes/{node_id}"), |url| {
            let req = self
                .http
                .get(url.clone())
                .header(AUTHORIZATION, format!("Bearer {secret}"));
            async move { self.send(req, &url).await }
        })
        .await
    }

    pub async fn enroll(&self, req: &EnrollRequest) -> Result<Answer<EnrollResponse>, ClientError> {
        self.post("/api/v1/enroll", None, req).await
    }

    /// [`ConsoleClient::enroll`], asked again while every console fails (no answer, or a 5xx
    /// such as a balancer's 502 for a console that died mid-request), for up to `patience`:
    /// an install run across a console's kill or restart completes. A refusal is final at
    /// once. `waiting` hears of each failure and the delay before the next try.
    pub async fn enroll_patiently(
        &self,
        req: &EnrollRequest,
        patience: Duration,
        mut waiting: impl FnMut(&ClientError, Duration),
    ) -> Result<Answer<EnrollResponse>, ClientError> {
        let deadline = Instant::now() + patience;
        let mut backoff =
            crate::backoff::Backoff::new(Duration::from_millis(500), Duration::from_secs(5));
        loop {
            match self.enroll(req).await {
                Err(e) if e.fails_over() && !e.is_tls_failure() => {
                    let delay = backoff.next_delay();
                    if Instant::now() + delay > deadline {
                        return Err(e);
                    }
                    waiting(&e, delay);
                    tokio::time::sleep(delay).await;
                }
                answer => return answer,
            }
        }
    }

    pub async fn heartbeat(
        &self,
        node_id: &str,
        secret: &str,
        req: &HeartbeatRequest,
    ) -> Result<Answer<HeartbeatResponse>, ClientError> {
        let path = format!("/api/v1/nodes/{node_id}/heartbeat");
        self.post(&path, Some(secret), req).await
    }

    pub async fn shutdown(
        &self,
        node_id: &str,
        secret: &str,
        reason: &str,
    ) -> Result<(), ClientError> {
        let path = format!("/api/v1/nodes/{node_id}/shutdown");
        let body = ShutdownRequest {
            reason: reason.to_owned(),
        };
        self.post_no_content(&path, secret, &body).await
    }

    /// Asks the console to remove the server this node is enrolled as.
    pub async fn leave(
        &self,
        node_id: &str,
        secret: &str,
        mode: tasknode_protocol::wire::RemoveMode,
    ) -> Result<Answer<tasknode_protocol::wire::RemovedServerView>, ClientError> {
        let path = format!("/api/v1/nodes/{node_id}/leave");
        let body = tasknode_protocol::wire::LeaveRequest { mode };
        self.post(&path, Some(secret), &body).await
    }

    /// Asks for work; the console answers within `req.wait_secs`, so this request may take
    /// that much longer than others.
    pub async fn poll(
        &self,
        node_id: &str,
        secret: &str,
        req: &PollRequest,
    ) -> Result<Answer<PollResponse>, ClientError> {
        self.each(&format!("/api/v1/nodes/{node_id}/tasks/poll"), |url| {
            let http = self
                .http
                .post(url.clone())
                .header(AUTHORIZATION, format!("Bearer {secret}"))
                .timeout(REQUEST_TIMEOUT + Duration::from_secs(req.wait_secs))
                .json(req);
            async move { self.send(http, &url).await }
        })
        .await
    }

    /// Asks to start a task; `Ok` means the console accepted, a 409 refusal that it must not run.
    pub async fn start_task(
        &self,
        node_id: &str,
        secret: &str,
        id: i64,
        req: &StartTask,
    ) -> Result<(), ClientError> {
        let path = format!("/api/v1/nodes/{node_id}/tasks/{id}/start");
        self.post_no_content(&path, secret, req).await
    }

    pub async fn finish_task(
        &self,
        node_id: &str,
        secret: &str,
        id: i64,
        req: &FinishTask,
    ) -> Result<(), ClientError> {
        let path = format!("/api/v1/nodes/{node_id}/tasks/{id}/finish");
        self.post_no_content(&path, secret, req).await
    }

    /// Sends log bytes that start at `offset`; the answer says how much the console holds.
    pub async fn push_log(
        &self,
        node_id: &str,
        secret: &str,
        id: i64,
        lease: i64,
        offset: u64,
        bytes: Vec<u8>,
    ) -> Result<Answer<LogAck>, ClientError> {
        let bytes = axum::body::Bytes::from(bytes);
        self.each(
            &format!("/api/v1/nodes/{node_id}/tasks/{id}/log"),
            |mut url| {
                url.query_pairs_mut()
                    .append_pair("lease", &lease.to_string())
                    .append_pair("offset", &offset.to_string());
                let req = self
                    .http
                    .post(url.clone())
                    .header(AUTHORIZATION, format!("Bearer {secret}"))
                    .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                    .body(bytes.clone());
                async move { self.send(req, &url).await }
            },
        )
        .await
    }

    /// The signed update manifest of `version`, as the console holds it (the caller verifies
    /// it).
    pub async fn manifest(
        &self,
        node_id: &str,
        secret: &str,
        version: &str,
    ) -> Result<Vec<u8>, ClientError> {
        self.each(
            &format!("/api/v1/nodes/{node_id}/manifest/{version}"),
            |url| {
                let req = self
                    .http
                    .get(url.clone())
                    .header(AUTHORIZATION, format!("Bearer {secret}"));
                async move {
                    let res = self.raw(req, &url).await?;
                    let started = Instant::now();
                    res.bytes()
                        .await
                        .map(|b| b.to_vec())
                        .map_err(|e| ClientError::Unreachable {
                            url: url.to_string(),
                            tls: tls_failure(&e),
                            detail: describe(e),
                            latency: started.elapsed(),
                        })
                }
            },
        )
        .await
    }

    /// Tells the console what happened to an update.
    pub async fn report_update(
        &self,
        node_id: &str,
        secret: &str,
        report: &UpdateReport,
    ) -> Result<(), ClientError> {
        let path = format!("/api/v1/nodes/{node_id}/update");
        self.post_no_content(&path, secret, report).await
    }

    /// Starts downloading `relative` (a path under the console's URL); the caller reads the
    /// body with [`reqwest::Response::chunk`]. `timeout` bounds the whole transfer.
    pub async fn download(
        &self,
        relative: &str,
        timeout: Duration,
    ) -> Result<reqwest::Response, ClientError> {
        self.each(&format!("/{}", relative.trim_start_matches('/')), |url| {
            let req = self.http.get(url.clone()).timeout(timeout);
            async move { self.raw(req, &url).await }
        })
        .await
    }

    /// Sends `req`; a non-2xx answer is an error, a 2xx one is handed back unread.
    async fn raw(
        &self,
        req: reqwest::RequestBuilder,
        url: &Url,
    ) -> Result<reqwest::Response, ClientError> {
        let started = Instant::now();
        let res = req.send().await.map_err(|e| ClientError::Unreachable {
            url: url.to_string(),
            tls: tls_failure(&e),
            detail: describe(e),
            latency: started.elapsed(),
        })?;
        if res.status().is_success() {
            return Ok(res);
        }
        let status = res.status().as_u16();
        let bytes = res.bytes().await.unwrap_or_default();
        Err(refusal(status, &bytes, started.elapsed(), None))
    }

    async fn post_no_content<B: Serialize>(
        &self,
        path: &str,
        secret: &str,
        body: &B,
    ) -> Result<(), ClientError> {
        self.each(path, |url| {
            let req = self
                .http
                .post(url.clone())
                .header(AUTHORIZATION, format!("Bearer {secret}"))
                .json(body);
            async move { self.raw(req, &url).await.map(drop) }
        })
        .await
    }

    async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        secret: Option<&str>,
        body: &B,
    ) -> Result<Answer<T>, ClientError> {
        self.each(path, |url| {
            let mut req = self.http.post(url.clone()).json(body);
            if let Some(secret) = secret {
                req = req.header(AUTHORIZATION, format!("Bearer {secret}"));
            }
            async move { self.send(req, &url).await }
        })
        .await
    }

    async fn send<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
        url: &Url,
    ) -> Result<Answer<T>, ClientError> {
        let sent_ms = now_ms();
        let started = Instant::now();
        let res = req.send().await.map_err(|e| ClientError::Unreachable {
            url: url.to_string(),
            tls: tls_failure(&e),
            detail: describe(e),
            latency: started.elapsed(),
        })?;
        let rtt = started.elapsed();
        let offset_ms = res
            .headers()
            .get(TIME_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i64>().ok())
            .map(|console_ms| {
                let midpoint = sent_ms + i64::try_from(rtt.as_millis() / 2).unwrap_or(0);
                console_ms - midpoint
            });
        let status = res.status().as_u16();
        let bytes = res.bytes().await.map_err(|e| ClientError::Unreachable {
            url: url.to_string(),
            tls: tls_failure(&e),
            detail: describe(e),
            latency: started.elapsed(),
        })?;
        let latency = started.elapsed();
        if !(200..300).contains(&status) {
            return Err(refusal(status, &bytes, latency, offset_ms));
        }
        let body = serde_json::from_slice(&bytes).map_err(|e| ClientError::BadAnswer {
            status,
            message: format!("malformed JSON: {e}"),
            latency,
            offset_ms,
        })?;
        Ok(Answer {
            body,
            status,
            latency,
            offset_ms,
        })
    }
}

fn refusal(status: u16, bytes: &[u8], latency: Duration, offset_ms: Option<i64>) -> ClientError {
    match serde_json::from_slice::<ErrorBody>(bytes) {
        Ok(b) if (400..500).contains(&status) => ClientError::Refused {
            status,
            field: b.error.field,
            message: b.error.message,
            latency,
            offset_ms,
        },
        Ok(b) => ClientError::BadAnswer {
            status,
            message: b.error.message,
            latency,
            offset_ms,
        },
        Err(_) => ClientError::BadAnswer {
            status,
            message: String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned(),
            latency,
            offset_ms,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_refusals_that_asking_again_cannot_change_are_final() {
        let refused = |status| ClientError::Refused {
            status,
            field: None,
            message: String::new(),
            latency: Duration::ZERO,
            offset_ms: None,
        };
        for status in [400, 404, 409, 413] {
            assert!(refused(status).is_final(), "{status}");
        }
        for status in [401, 403, 408, 429] {
            assert!(!refused(status).is_final(), "{status}");
        }
        let server_error = ClientError::BadAnswer {
            status: 500,
            message: String::new(),
            latency: Duration::ZERO,
            offset_ms: None,
        };
        assert!(!server_error.is_final());
    }

    #[test]
    fn console_urls_are_checked() {
        parse_console_url("http://127.0.0.1:8080").unwrap();
        parse_console_url("https://console.example.com").unwrap();
        for bad in [
            "ftp://x",
            "127.0.0.1:8080",
            "http://user:pw@x",
            "http://x/?a=1",
            "",
            "http://",
        ] {
            assert!(parse_console_url(bad).is_err(), "{bad}");
        }
    }
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod failover_tests;

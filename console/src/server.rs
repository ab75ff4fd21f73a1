//! The console's listener: accepts TCP (or TLS) connections and serves the router on each over
//! HTTP/1.1 with hyper. Every peer that reaches the port is untrusted, so each connection is
//! bounded in time and the connections in number:
//!
//! - at most [`Limits::max_connections`] at once; past that, new connections wait in the
//!   kernel's listen queue, unread, until one closes;
//! - a TLS handshake must finish within [`Limits::handshake`], and so must a trusted
//!   balancer's PROXY protocol header before it ([`crate::proxy_protocol`]);
//! - a request head must arrive whole within [`Limits::head`] of the connection opening, or of
//!   its first byte on a kept-alive connection;
//! - a kept-alive connection may sit idle between requests for [`Limits::idle`] (longer than
//!   the 10 s between an agent's heartbeats, so agents keep their connections);
//! - a request body must arrive whole within [`Limits::body`] of the head (408 after);
//! - a request during which no byte moves either way for [`Limits::stall`] is cut off (a peer
//!   that stops reading its answer).
//!
//! hyper's own header-read timeout also runs while a kept-alive connection is idle, which would
//! close agents' connections between heartbeats; hence the small watchdog here instead.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::Request;
use http_body::{Frame, SizeHint};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore, watch};
use tokio::time::{Instant, Sleep};
use tower::{Service, ServiceExt};

/// How long and how many: see the module documentation.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub handshake: Duration,
    pub head: Duration,
    pub idle: Duration,
    pub body: Duration,
    pub stall: Duration,
}

/// Default of `serve --max-connections`: an agent holds up to three connections (its long
/// poll, its heartbeats, a log push), so this serves several thousand servers.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 20_000;

impl Default for Limits {
    /// By default: 20,000 connections, 10 s for a TLS handshake and for a request head, 60 s
    /// idle between requests, 60 s for a request body, 120 s without progress.
    fn default() -> Limits {
        Limits {
            max_connections: DEFAULT_MAX_CONNECTIONS as usize,
            handshake: Duration::from_secs(10),
            head: Duration::from_secs(10),
            idle: Duration::from_secs(60),
            body: Duration::from_secs(60),
            stall: Duration::from_secs(120),
        }
    }
}

/// How long open requests get to finish once the console is stopping.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Serves `router` on `listener` (over TLS with `tls`) until `stopping` resolves, then lets
/// open requests finish for up to 10 s. A connection from one of `proxies` begins with a
/// PROXY protocol header, whose client address the router is given as the connection's.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    proxies: Arc<[IpAddr]>,
    limits: Limits,
    stopping: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let max = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let permits = Arc::new(Semaphore::new(max));
    let tls = tls.map(tokio_rustls::TlsAcceptor::from);
    let (stop_tx, stop_rx) = watch::channel(false);
    let make = router.into_make_service_with_connect_info::<SocketAddr>();
    tokio::pin!(stopping);
    loop {
        // A permit first: at the cap, nothing more is accepted (nor read) until one closes.
        let permit = tokio::select! {
            p = Arc::clone(&permits).acquire_owned() => p?,
            () = &mut stopping => break,
        };
        let (mut tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before it was accepted.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut stopping => break,
        };
        let tls = tls.clone();
        let stop = stop_rx.clone();
        let mut make = make.clone();
        let from_proxy = proxies
            .iter()
            .any(|p| p.to_canonical() == peer.ip().to_canonical());
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tcp.set_nodelay(true);
            let client = if from_proxy {
                let header = crate::proxy_protocol::read_client(&mut tcp, peer);
                match tokio::time::timeout(limits.handshake, header).await {
                    Ok(Ok(client)) => client,
                    Ok(Err(e)) => {
                        tracing::warn!(%peer, error = %e, "closing a connection from a trusted proxy");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "PROXY protocol header timed out");
                        return;
                    }
                }
            } else {
                peer
            };
            let service = match make.call(client).await {
                Ok(s) => s,
                Err(never) => match never {},
            };
            match tls {
                None => serve_connection(tcp, service, limits, stop).await,
                Some(acceptor) => {
                    match tokio::time::timeout(limits.handshake, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => serve_connection(stream, service, limits, stop).await,
                        Ok(Err(e)) => {
                            tracing::debug!(%client, error = %e, "TLS handshake failed");
                        }
                        Err(_) => tracing::debug!(%client, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every connection holds a permit: all of them back means all connections closed.
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    if tokio::time::timeout(SHUTDOWN_GRACE, permits.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("connections still open after {SHUTDOWN_GRACE:?}; closing them");
    }
    Ok(())
}

/// Serves HTTP/1.1 on one connection until it closes, its watchdog fires, or the console
/// stops (then the request in progress finishes first).
async fn serve_connection<S, IO>(
    io: IO,
    service: S,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) where
    S: Service<Request, Response = axum::response::Response, Error = std::convert::Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let watchdog = Arc::new(Watchdog::new());
    let io = TokioIo::new(Watched {
        inner: io,
        watchdog: Arc::clone(&watchdog),
    });
    let dog = Arc::clone(&watchdog);
    let hyper_service =
        hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let guard = dog.begin_request();
            let req = req.map(|body| Body::new(BodyDeadline::new(Body::new(body), limits.body)));
            let service = service.clone();
            async move {
                let res = service.oneshot(req).await?;
                Ok::<_, std::convert::Infallible>(res.map(|body| {
                    Body::new(Guarded {
                        body,
                        _guard: guard,
                    })
                }))
            }
        });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.keep_alive(true).header_read_timeout(None);
    let conn = builder.serve_connection(io, hyper_service);
    tokio::pin!(conn);
    let mut stopping = *stop.borrow();
    if stopping {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            done = conn.as_mut() => {
                if let Err(e) = done {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            why = watchdog.expired(&limits) => {
                tracing::debug!(%why, "closing a connection");
                return;
            }
            changed = stop.changed(), if !stopping => {
                stopping = true;
                if changed.is_err() || *stop.borrow() {
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for (the rest of) a request head.
    Head,
    /// Between requests, nothing of the next one read yet.
    Idle,
    /// Requests in progress.
    Busy,
}

#[derive(Debug)]
struct WatchState {
    phase: Phase,
    /// When the phase began, or (busy) when a byte last moved.
    since: Instant,
    requests: usize,
}

/// What one connection is doing, as its reads, writes and requests tell, and when that has
/// gone on too long.
#[derive(Debug)]
struct Watchdog {
    state: Mutex<WatchState>,
    /// Told when a phase begins whose deadline may be sooner.
    changed: Notify,
}

impl Watchdog {
    fn new() -> Watchdog {
        Watchdog {
            state: Mutex::new(WatchState {
                phase: Phase::Head,
                since: Instant::now(),
                requests: 0,
            }),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, WatchState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn read(&self) {
        let mut s = self.lock();
        match s.phase {
            Phase::Idle => {
                s.phase = Phase::Head;
                s.since = Instant::now();
                drop(s);
                self.changed.notify_one();
            }
            Phase::Busy => s.since = Instant::now(),
            Phase::Head => {}
        }
    }

    fn wrote(&self) {
        let mut s = self.lock();
        if s.phase == Phase::Busy {
            s.since = Instant::now();
        }
    }

    fn begin_request(self: &Arc<Self>) -> RequestGuard {
        let mut s = self.lock();
        s.requests += 1;
        s.phase = Phase::Busy;
        s.since = Instant::now();
        RequestGuard(Arc::clone(self))
    }

    fn end_request(&self) {
        let mut s = self.lock();
        s.requests = s.requests.saturating_sub(1);
        if s.requests == 0 {
            s.phase = Phase::Idle;
            s.since = Instant::now();
            drop(s);
            self.changed.notify_one();
        }
    }

    /// Resolves when the current phase has lasted longer than its limit; says which.
    async fn expired(&self, limits: &Limits) -> &'static str {
        loop {
            let notified = self.changed.notified();
            let (phase, deadline) = {
                let s = self.lock();
                let limit = match s.phase {
                    Phase::Head => limits.head,
                    Phase::Idle => limits.idle,
                    Phase::Busy => limits.stall,
                };
                (s.phase, s.since + limit)
            };
            if Instant::now() >= deadline {
                return match phase {
                    Phase::Head => "no whole request head in time",
                    Phase::Idle => "idle for too long",
                    Phase::Busy => "no progress in a request for too long",
                };
            }
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => {}
                () = notified => {}
            }
        }
    }
}

/// Marks a request done when its answer has been sent (or dropped).
struct RequestGuard(Arc<Watchdog>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.end_request();
    }
}

/// A connection that tells its watchdog when bytes move.
struct Watched<IO> {
    inner: IO,
    watchdog: Arc<Watchdog>,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Watched<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.watchdog.read();
        }
        polled
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Watched<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.watchdog.wrote();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.watchdog.wrote();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The error a request body reports when it has not arrived whole in time; extractors that
/// see it answer 408 (see [`crate::http::error::ApiError::TimedOut`]).
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {} s", .0.as_secs())]
pub struct BodyTimedOut(pub Duration);

impl BodyTimedOut {
    /// Whether `err` or one of its causes is a [`BodyTimedOut`].
    pub fn is_cause_of(err: &(dyn std::error::Error + 'static)) -> bool {
        let mut cause = Some(err);
        while let Some(e) = cause {
            if e.is::<BodyTimedOut>() {
                return true;
            }
            cause = e.source();
        }
        false
    }
}

/// A request body that fails with [`BodyTimedOut`] once `timeout` has passed since the head.
struct BodyDeadline {
    inner: Body,
    deadline: Pin<Box<Sleep>>,
    timeout: Duration,
}

impl BodyDeadline {
    fn new(inner: Body, timeout: Duration) -> BodyDeadline {
        BodyDeadline {
            inner,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            timeout,
        }
    }
}

impl http_body::Body for BodyDeadline {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(Box::new(BodyTimedOut(this.timeout)))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that holds its request's guard until hyper has sent (or dropped) it.
struct Guarded {
    body: Body,
    _guard: RequestGuard,
}

impl http_body::Body for Guarded {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

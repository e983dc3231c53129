//! Accepting connections, with bounds a slow or idle client cannot stretch: at most
//! `--max-connections` open at once (past that, new ones wait in the kernel's backlog); a request
//! head must arrive whole within `--header-timeout` of its first byte; a connection with no
//! request running and no bytes moving for `--keep-alive-timeout` is closed. A body's own deadline
//! (`--body-timeout`) is kept where it is read (body.rs). None of this holds a model worker: a
//! request reaches its model's queue only once its body is read.
//!
//! axum's `serve` has no such settings, so connections are served here with hyper's HTTP/1
//! builder and the same router (HTTP/1 only, as before).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1::Builder;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tower_service::Service;

/// How long connections may take and how many may be open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub keep_alive_timeout: Duration,
}

impl ConnectionLimits {
    /// How often a connection checks its clock: a tenth of the shorter timeout, within
    /// [10 ms, 1 s], so a timeout fires at most 10 % late.
    fn tick(&self) -> Duration {
        (self.header_timeout.min(self.keep_alive_timeout) / 10)
            .clamp(Duration::from_millis(10), Duration::from_secs(1))
    }
}

/// No head has started since the last answer.
const NONE: u64 = u64::MAX;

/// What a connection is doing, as its I/O and its requests report it. Times are milliseconds
/// since `origin`.
struct Activity {
    origin: Instant,
    /// Requests whose answer is not yet handed to hyper.
    running: AtomicUsize,
    /// The last byte read or written, or the last answer.
    last_moved: AtomicU64,
    /// The first byte read while no request ran: a request head has started.
    head_started: AtomicU64,
}

/// Why a connection is closed by its clock.
#[derive(Debug, PartialEq, Eq)]
enum Expired {
    Header,
    Idle,
}

impl Activity {
    fn new() -> Self {
        Self {
            origin: Instant::now(),
            running: AtomicUsize::new(0),
            last_moved: AtomicU64::new(0),
            head_started: AtomicU64::new(NONE),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(NONE - 1)
    }

    fn read(&self) {
        let now = self.now();
        self.last_moved.store(now, Ordering::Relaxed);
        if self.running.load(Ordering::Acquire) == 0 {
            let _ =
                self.head_started
                    .compare_exchange(NONE, now, Ordering::AcqRel, Ordering::Relaxed);
        }
    }

    fn wrote(&self) {
        self.last_moved.store(self.now(), Ordering::Relaxed);
    }

    /// A request's head is parsed: its handler runs until the guard drops.
    fn request(self: &Arc<Self>) -> RequestGuard {
        self.running.fetch_add(1, Ordering::AcqRel);
        self.head_started.store(NONE, Ordering::Release);
        RequestGuard(Arc::clone(self))
    }

    fn expired(&self, limits: &ConnectionLimits) -> Option<Expired> {
        if self.running.load(Ordering::Acquire) > 0 {
            return None;
        }
        let now = self.now();
        let since = |t: u64| Duration::from_millis(now.saturating_sub(t));
        match self.head_started.load(Ordering::Acquire) {
            NONE if since(self.last_moved.load(Ordering::Relaxed)) > limits.keep_alive_timeout => {
                Some(Expired::Idle)
            }
            NONE => None,
            started if since(started) > limits.header_timeout => Some(Expired::Header),
            _ => None,
        }
    }
}

struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.last_moved.store(self.0.now(), Ordering::Relaxed);
        self.0.running.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A socket that reports its reads and writes to its connection's [`Activity`].
struct Watched {
    socket: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.socket).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.read();
        }
        poll
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.socket).poll_write(cx, buf);
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote();
        }
        poll
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.socket).poll_write_vectored(cx, bufs);
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote();
        }
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.socket.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.socket).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.socket).poll_shutdown(cx)
    }
}

/// Serves `app` on `listener` until `stop` resolves; then stops accepting, asks every open
/// connection to finish its running requests and close, and returns once they have (or after
/// `grace`).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    stop: impl Future<Output = ()>,
    grace: Duration,
) {
    let mut builder = Builder::new();
    // Our clock keeps the head and idle timeouts apart; hyper's head timer would start while a
    // keep-alive connection idles, so it is off.
    builder.header_read_timeout(None);
    let builder = Arc::new(builder);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (closing_tx, closing) = watch::channel(false);
    tokio::pin!(stop);
    loop {
        let permit = tokio::select! {
            () = &mut stop => break,
            permit = Arc::clone(&slots).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => accepted,
        };
        let socket = match accepted {
            Ok((socket, _)) => socket,
            Err(err) => {
                // Out of file descriptors and the like: wait a moment rather than spin.
                tracing::warn!("accepting a connection failed: {err}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = socket.set_nodelay(true);
        tokio::spawn(connection(
            socket,
            app.clone(),
            Arc::clone(&builder),
            limits,
            closing.clone(),
            permit,
        ));
    }
    drop(listener);
    let _ = closing_tx.send(true);
    let everyone = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(grace, slots.acquire_many(everyone))
        .await
        .is_err()
    {
        tracing::warn!("connections still open after {grace:?}; closing them");
    }
}

async fn connection(
    socket: TcpStream,
    app: Router,
    builder: Arc<Builder>,
    limits: ConnectionLimits,
    mut closing: watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        socket,
        activity: Arc::clone(&activity),
    });
    let service = {
        let activity = Arc::clone(&activity);
        hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let guard = activity.request();
            let mut app = app.clone();
            async move {
                let response = app.call(request).await;
                drop(guard);
                response
            }
        })
    };
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let mut tick = tokio::time::interval(limits.tick());
    let mut shutting = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!("connection ended: {err}");
                }
                return;
            }
            changed = closing.changed(), if !shutting => {
                if changed.is_err() || *closing.borrow() {
                    shutting = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
            _ = tick.tick() => match activity.expired(&limits) {
                // A head that dribbles in: nothing is owed to it, so the socket simply closes.
                Some(Expired::Header) => {
                    tracing::debug!(
                        "closing a connection whose request head took over {:?}",
                        limits.header_timeout
                    );
                    return;
                }
                Some(Expired::Idle) if !shutting => {
                    shutting = true;
                    conn.as_mut().graceful_shutdown();
                }
                // Still open after being asked to close: an answer the client does not read.
                Some(Expired::Idle) => return,
                None => {}
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ConnectionLimits {
        ConnectionLimits {
            max_connections: 4,
            header_timeout: Duration::from_millis(40),
            keep_alive_timeout: Duration::from_millis(80),
        }
    }

    #[test]
    fn an_idle_connection_expires_after_the_keep_alive_timeout() {
        let activity = Activity::new();
        assert_eq!(activity.expired(&limits()), None);
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(activity.expired(&limits()), Some(Expired::Idle));
        activity.wrote();
        assert_eq!(activity.expired(&limits()), None);
    }

    #[test]
    fn a_started_head_has_the_header_timeout() {
        let activity = Arc::new(Activity::new());
        activity.read();
        std::thread::sleep(Duration::from_millis(50));
        // Bytes keep coming, one at a time: the head's clock started with the first.
        activity.read();
        assert_eq!(activity.expired(&limits()), Some(Expired::Header));
        // Once the head is parsed, a running request is never timed out here.
        let guard = activity.request();
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(activity.expired(&limits()), None);
        // Body bytes read while it runs do not start a new head.
        activity.read();
        drop(guard);
        assert_eq!(activity.expired(&limits()), None);
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(activity.expired(&limits()), Some(Expired::Idle));
    }
}

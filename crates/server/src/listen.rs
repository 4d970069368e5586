//! The accept loop under both servers (the API and the Ollama gateway): HTTP/1.1 with a deadline for a request's
//! head and a cap on open connections, so that a flood of half-sent requests neither exhausts the process's file
//! descriptors nor locks everyone else out for longer than the deadline.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Bytes;
use axum::Router;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::time::{Instant, Sleep};
use tower::ServiceExt as _;

/// How a server treats its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A client must send a request's complete head (request line and headers) within this time, on a new
    /// connection and between the requests of a kept-alive one; then the connection is closed.
    pub header_read_timeout: Duration,
    /// Connections served at once; the next waits in the listen backlog until one closes.
    pub max_connections: usize,
    /// A request body that sends nothing for this long is cut off (the request fails, the connection closes).
    pub body_idle_timeout: Duration,
    /// A request body must have arrived in full within this time (`None`: as long as it keeps coming — the
    /// gateway, which forwards model uploads to Ollama).
    pub body_deadline: Option<Duration>,
    /// How long a stop waits for requests in flight (open event streams included) before closing them.
    pub drain: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            max_connections: connection_cap(),
            body_idle_timeout: Duration::from_secs(10),
            // 50 MB (the body limit) at 0.5 MB/s.
            body_deadline: Some(Duration::from_secs(100)),
            drain: Duration::from_secs(5),
        }
    }
}

impl Limits {
    /// The gateway's: like the API's, but a body may take as long as it keeps coming.
    pub fn gateway() -> Limits {
        Limits {
            body_deadline: None,
            ..Limits::default()
        }
    }
}

/// Connections this process can hold open while keeping descriptors for its models, images and database: the
/// soft descriptor limit is raised to the hard one first (Linux ships 1,024 soft against a far higher hard limit).
fn connection_cap() -> usize {
    const CAP: usize = 8192;
    const RESERVED: usize = 256;
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit read and write the struct passed by pointer, nothing else.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
                return CAP / 2;
            }
            if limit.rlim_cur < limit.rlim_max {
                let raised = libc::rlimit {
                    rlim_cur: limit.rlim_max.min(65_536),
                    rlim_max: limit.rlim_max,
                };
                if raised.rlim_cur > limit.rlim_cur
                    && libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0
                {
                    limit = raised;
                }
            }
        }
        let available = usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX);
        CAP.min(available.saturating_sub(RESERVED) / 2).max(16)
    }
    #[cfg(not(unix))]
    {
        CAP
    }
}

/// A running server: its address and a handle that stops it gracefully.
pub struct ServerHandle {
    pub addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl ServerHandle {
    /// Stops accepting connections, lets requests in flight finish (for [`Limits::drain`] at most), and returns.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.task.await.map_err(std::io::Error::other)?
    }

    /// Waits until the server stops by itself (an I/O error).
    pub async fn wait(self) -> std::io::Result<()> {
        self.task.await.map_err(std::io::Error::other)?
    }
}

/// Binds `addr` and serves `app` in the background under `limits`.
pub async fn serve(addr: SocketAddr, app: Router, limits: Limits) -> std::io::Result<ServerHandle> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(accept_loop(listener, app, limits, rx));
    Ok(ServerHandle {
        addr,
        shutdown: Some(tx),
        task,
    })
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: Limits,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) -> std::io::Result<()> {
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let mut warned_full = false;
    loop {
        let slot = tokio::select! {
            _ = &mut stop => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        if slots.available_permits() == 0 && !warned_full {
            tracing::warn!(
                max = limits.max_connections,
                "connection limit reached; new connections wait until one closes"
            );
            warned_full = true;
        } else if slots.available_permits() > limits.max_connections / 2 {
            warned_full = false;
        }
        let (stream, _peer) = tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors or a connection reset before it was accepted: wait and go on.
                    tracing::debug!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone().map_request(
            move |request: hyper::Request<hyper::body::Incoming>| {
                request.map(|body| Deadlined::new(body, &limits))
            },
        ));
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::trace!(error = %e, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!("requests still open after the drain time were closed");
    }
    Ok(())
}

/// A request body with deadlines: one between two pieces of it, one for the whole (see [`Limits`]), so a client
/// that stops sending part-way through a body cannot hold its connection forever.
struct Deadlined<B> {
    inner: B,
    idle_after: Duration,
    idle: Pin<Box<Sleep>>,
    total: Option<Pin<Box<Sleep>>>,
}

impl<B> Deadlined<B> {
    fn new(inner: B, limits: &Limits) -> Deadlined<B> {
        Deadlined {
            inner,
            idle_after: limits.body_idle_timeout,
            idle: Box::pin(tokio::time::sleep(limits.body_idle_timeout)),
            total: limits
                .body_deadline
                .map(|d| Box::pin(tokio::time::sleep(d))),
        }
    }
}

/// Why a body was cut off.
#[derive(Debug)]
struct TooSlow;

impl std::fmt::Display for TooSlow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the request body did not arrive in time")
    }
}

impl std::error::Error for TooSlow {}

impl<B> HttpBody for Deadlined<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                let next = Instant::now() + this.idle_after;
                this.idle.as_mut().reset(next);
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let total_passed = this
                    .total
                    .as_mut()
                    .is_some_and(|total| total.as_mut().poll(cx).is_ready());
                if total_passed || this.idle.as_mut().poll(cx).is_ready() {
                    tracing::debug!("cut off a request body that did not arrive in time");
                    return Poll::Ready(Some(Err(Box::new(TooSlow))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

//! The HTTP server under the API and UI. Unlike a bare `axum::serve`, it bounds what a
//! stranger on the network can hold: connections at once, and from one source address
//! (past either, the oldest connection of the address holding the most gives way, see
//! [`Crowd`]); a request's headers must arrive within the header timeout, which also closes
//! a keep-alive connection left idle that long; a connection on which no byte moves either
//! way for a minute is closed. Request bodies have their own time limit (in the router).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::add_extension::AddExtension;

use crate::crowd::{Crowd, Known};
use crate::repeated::Repeated;

/// Connections at once, and from one source address (a browser opens about six, a live
/// stream holds one).
const MAX_CONNECTIONS: usize = 256;
const MAX_PER_ADDRESS: usize = 32;
/// A connection on which nothing moves for this long is closed (live streams send a
/// keep-alive more often).
const STALLED: Duration = Duration::from_secs(60);
/// How long open connections get to finish once the hub stops.
const DRAIN: Duration = Duration::from_secs(5);

static GAVE_WAY: Repeated = Repeated::new("HTTP connection closed to make room");
static HANDSHAKE_FAILED: Repeated = Repeated::new("TLS handshake failed");

/// Limits of the HTTP server.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Time for a request's headers to arrive, and for an idle connection's next request.
    pub header_timeout: Duration,
}

/// A connection that notes when a byte last moved, either way.
struct Watched {
    inner: TcpStream,
    started: Instant,
    moved: Arc<AtomicU64>,
    /// Set at the first bytes read (in clear: over TLS, the handshake's end counts).
    spoke: Option<Arc<AtomicBool>>,
}

impl Watched {
    fn note(&self) {
        self.moved.store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

impl AsyncRead for Watched {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.note();
            if let Some(spoke) = &self.spoke {
                spoke.store(true, Ordering::Relaxed);
            }
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.note();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Resolves once nothing has moved on the connection for [`STALLED`].
async fn stalled(started: Instant, moved: Arc<AtomicU64>) {
    loop {
        let last = Duration::from_millis(moved.load(Ordering::Relaxed));
        let quiet = started.elapsed().saturating_sub(last);
        if quiet >= STALLED {
            return;
        }
        tokio::time::sleep(STALLED - quiet).await;
    }
}

/// Serves `app` on `listener` until `shutdown`, then lets open requests finish (for a
/// short while: live streams end by themselves on shutdown). With `tls`, each connection
/// first completes a TLS handshake, within the header timeout.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    (limits, known): (Limits, Arc<Known>),
    tls: Option<TlsAcceptor>,
    shutdown: CancellationToken,
) {
    let crowd = Crowd::new(MAX_CONNECTIONS, MAX_PER_ADDRESS, known);
    let tracker = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(conn) => conn,
            Err(error) => {
                // Out of file descriptors, most likely: back off rather than spin.
                tracing::warn!(%error, "HTTP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let place = crowd.enter(peer.ip());
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(AddExtension::new(app.clone(), ConnectInfo(peer)));
        let shutdown = shutdown.clone();
        let tls = tls.clone();
        tracker.spawn(async move {
            let gives_way = place.gives_way.clone();
            let started = Instant::now();
            let moved = Arc::new(AtomicU64::new(0));
            // In clear, its first bytes are its opening; over TLS, its whole handshake.
            let spoke = tls.is_none().then(|| place.spoke_flag());
            let io = Watched { inner: stream, started, moved: moved.clone(), spoke };
            let Some(tls) = tls else {
                return connection(io, service, peer, limits, (started, moved), gives_way, shutdown).await;
            };
            let handshake = tokio::select! {
                handshake = tokio::time::timeout(limits.header_timeout, tls.accept(io)) => handshake,
                () = gives_way.cancelled() => return,
                () = shutdown.cancelled() => return,
            };
            match handshake {
                Ok(Ok(io)) => {
                    place.spoke();
                    connection(io, service, peer, limits, (started, moved), gives_way, shutdown).await
                }
                Ok(Err(error)) => {
                    if HANDSHAKE_FAILED.log_this(peer.ip()) {
                        tracing::info!(%peer, %error, "TLS handshake failed");
                    }
                }
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
    tracker.close();
    let _ = tokio::time::timeout(DRAIN, tracker.wait()).await;
}

/// Serves HTTP/1 on one connection until it ends, gives way, stalls or the hub stops.
async fn connection<I, S>(
    io: I,
    service: S,
    peer: SocketAddr,
    limits: Limits,
    (started, moved): (Instant, Arc<AtomicU64>),
    gives_way: CancellationToken,
    shutdown: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming> + Send,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::ResBody: Send + 'static,
    <S::ResBody as hyper::body::Body>::Data: Send,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout).max_buf_size(64 * 1024);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => log_end(peer, result),
        () = gives_way.cancelled() => {
            if GAVE_WAY.log_this(peer.ip()) {
                tracing::warn!(%peer, "HTTP connection closed to make room for others");
            }
        }
        () = stalled(started, moved) => tracing::debug!(%peer, "HTTP connection stalled; closed"),
        () = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            if let Ok(result) = tokio::time::timeout(DRAIN, conn).await {
                log_end(peer, result);
            }
        }
    }
}

fn log_end(peer: SocketAddr, result: Result<(), hyper::Error>) {
    if let Err(error) = result {
        tracing::debug!(%peer, %error, "HTTP connection ended");
    }
}

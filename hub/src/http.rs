//! The HTTP server under the API and UI. Unlike a bare `axum::serve`, it bounds what a
//! stranger on the network can hold: connections at once, and from one source address;
//! a request's headers must arrive within the header timeout, which also closes a
//! keep-alive connection left idle that long. Refused connections are counted, not logged
//! one by one.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::add_extension::AddExtension;

use crate::repeated::Repeated;

/// Connections at once, and from one source address (a browser opens about six, a live
/// stream holds one).
const MAX_CONNECTIONS: usize = 256;
const MAX_PER_ADDRESS: usize = 32;
/// Refusals being told at once (past these, a connection is just closed).
const MAX_REFUSALS: usize = 64;
/// How long open connections get to finish once the hub stops.
const DRAIN: Duration = Duration::from_secs(5);

static REFUSED: Repeated = Repeated::new("HTTP connection refused: too many");

/// Limits of the HTTP server.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Time for a request's headers to arrive, and for an idle connection's next request.
    pub header_timeout: Duration,
}

/// Counts connections per source address; a connection's slot is freed when it drops.
#[derive(Clone, Default)]
struct PerAddress(Arc<Mutex<HashMap<IpAddr, usize>>>);

struct Slot {
    map: PerAddress,
    addr: IpAddr,
}

impl PerAddress {
    fn take(&self, addr: IpAddr) -> Option<Slot> {
        let mut map = self.0.lock().ok()?;
        let n = map.entry(addr).or_default();
        if *n >= MAX_PER_ADDRESS {
            return None;
        }
        *n += 1;
        Some(Slot { map: self.clone(), addr })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut map) = self.map.0.lock()
            && let Some(n) = map.get_mut(&self.addr)
        {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.addr);
            }
        }
    }
}

/// Serves `app` on `listener` until `shutdown`, then lets open requests finish (for a
/// short while: live streams end by themselves on shutdown).
pub async fn serve(listener: TcpListener, app: Router, limits: Limits, shutdown: CancellationToken) {
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS));
    let per_address = PerAddress::default();
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
        let (Ok(permit), Some(slot)) = (connections.clone().try_acquire_owned(), per_address.take(peer.ip())) else {
            if REFUSED.log_this(peer.ip()) {
                tracing::warn!(%peer, "HTTP connection refused: too many connections");
            }
            if let Ok(permit) = refusals.clone().try_acquire_owned() {
                tokio::spawn(refuse(stream, permit));
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(AddExtension::new(app.clone(), ConnectInfo(peer)));
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let _held = (permit, slot);
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout).max_buf_size(64 * 1024);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                result = conn.as_mut() => log_end(peer, result),
                () = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    if let Ok(result) = tokio::time::timeout(DRAIN, conn).await {
                        log_end(peer, result);
                    }
                }
            }
        });
    }
    tracker.close();
    let _ = tokio::time::timeout(DRAIN, tracker.wait()).await;
}

/// Tells a connection over the limits to come back later (503), rather than resetting it:
/// a browser that opened one too many retries. It reads the request's head first (clients
/// take an answer before their request as a broken connection). Bounded in time, size and
/// number.
async fn refuse(mut stream: tokio::net::TcpStream, _permit: tokio::sync::OwnedSemaphorePermit) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const BUSY: &[u8] =
        b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let mut head = Vec::with_capacity(1024);
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8 * 1024 {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                return Ok(());
            }
            head.extend_from_slice(&buf[..n]);
        }
        stream.write_all(BUSY).await?;
        stream.shutdown().await?;
        // Read the rest (a body), so closing does not reset the connection before the
        // client has read the answer.
        for _ in 0..16 {
            if stream.read(&mut buf).await? == 0 {
                break;
            }
        }
        std::io::Result::Ok(())
    })
    .await;
}

fn log_end(peer: SocketAddr, result: Result<(), hyper::Error>) {
    if let Err(error) = result {
        tracing::debug!(%peer, %error, "HTTP connection ended");
    }
}

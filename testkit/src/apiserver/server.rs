//! Connection handling: the accept loop, per-connection HTTP/1.1 serving, and the state shared
//! by every connection. Hand-rolled instead of `axum::serve` so that connections can be refused
//! and dropped on demand.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use super::faults::{Faults, RequestRecord};
use super::handlers;

use super::store::Store;

pub(crate) struct Settings {
    pub bookmark_interval: Duration,
    pub default_watch_timeout: Duration,
    pub timeout_fault_delay: Duration,
    /// RBAC decides impersonated requests (see `authz.rs`).
    pub authorization: bool,
}

pub(crate) struct Shared {
    pub store: Mutex<Store>,
    pub opts: Settings,
    pub faults: Mutex<Faults>,
    pub log: Mutex<Vec<RequestRecord>>,
    /// Bumped to close every open connection and watch stream.
    pub kill_tx: tokio::sync::watch::Sender<u64>,
    pub refuse: AtomicBool,
    pub latency: Mutex<Duration>,
    /// Added to every write only (create, update, patch, delete): a real server's writes wait for etcd's
    /// fsync while its reads come from the watch cache.
    pub write_latency: Mutex<Duration>,
    /// Bumped to end every open watch stream (connections stay up).
    pub drop_watches_tx: tokio::sync::watch::Sender<u64>,
    /// The accept loop; `None` during an outage (the listening socket is closed).
    pub accept: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Up to this much more, drawn per request, on top of `latency`.
    pub latency_jitter: Mutex<Duration>,
    /// State of the jitter's random numbers.
    pub jitter_rng: std::sync::atomic::AtomicU64,
    /// How late watch events arrive (the real watch cache lags the write that caused them).
    pub watch_delay: std::sync::Arc<Mutex<Duration>>,
    pub paused: tokio::sync::watch::Sender<bool>,
    pub addr: SocketAddr,
}

/// The request log keeps this many entries, so long benchmarks do not grow it without bound.
const LOG_LIMIT: usize = 200_000;

impl Shared {
    pub fn disconnect_all(&self) {
        self.kill_tx.send_modify(|e| *e += 1);
    }

    pub fn record(&self, rec: RequestRecord) {
        let mut log = self.log.lock();
        if log.len() >= LOG_LIMIT {
            log.drain(..LOG_LIMIT / 10);
        }
        log.push(rec);
    }
}

async fn serve_connection(
    sock: TcpStream,
    shared: Arc<Shared>,
    mut kill: tokio::sync::watch::Receiver<u64>,
) {
    let abort = Arc::new(Notify::new());
    let svc = {
        let abort = abort.clone();
        hyper::service::service_fn(move |req| {
            let shared = shared.clone();
            let abort = abort.clone();
            async move {
                match handlers::serve(shared, req).await {
                    Ok(resp) => Ok::<_, Infallible>(resp),
                    Err(handlers::DropConnection) => {
                        abort.notify_one();
                        std::future::pending().await
                    }
                }
            }
        })
    };
    let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(sock), svc);
    tokio::select! {
        biased;
        _ = kill.changed() => {}
        _ = abort.notified() => {}
        _ = conn => {}
    }
}

/// Listens on `addr` with `SO_REUSEADDR`, so the port of a server coming back from an outage can be bound
/// again while connections of its previous life linger in `TIME_WAIT`.
pub(crate) fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

pub(crate) async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let sock = match listener.accept().await {
            Ok((sock, _)) => sock,
            Err(e) => {
                tracing::debug!(error = %e, "fake apiserver accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        // Subscribe before checking the flag: a refusal that lands after the check then still
        // shows up as a kill signal, so no connection outlives `set_refuse_connections(true)`.
        let kill = shared.kill_tx.subscribe();
        if shared.refuse.load(Ordering::SeqCst) {
            drop(sock);
            continue;
        }
        let _ = sock.set_nodelay(true);
        tokio::spawn(serve_connection(sock, shared.clone(), kill));
    }
}

impl Shared {
    /// A number in `[0, 1)` (splitmix64; tests need variety, not security).
    pub fn next_unit_random(&self) -> f64 {
        let mut z = self
            .jitter_rng
            .fetch_add(0x9e37_79b9_7f4a_7c15, std::sync::atomic::Ordering::Relaxed);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

//! The public listener's HTTP/1 server: hyper directly, because `axum::serve` has no header-read
//! timeout and no connection limit, and both are what keeps a slow or hostile client from pinning memory.
//!
//! - At most `max_connections` connections are served at once; one more is accepted and closed at once
//!   (counted), so it neither waits in the kernel's backlog nor holds buffers.
//! - Headers must arrive within `header_read_timeout` (hyper closes the connection otherwise); the body
//!   has its own deadline and byte budget in the handler.
//! - Each connection's read buffer stays small: Apple's requests are about 1 KiB, and a buffer that grew to
//!   hyper's default 400 KiB on 200 connections would be 80 MiB.

use crate::metrics::Metrics;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// Largest read/write buffer per connection (hyper's minimum is 8 KiB). Headers must fit in it.
const CONNECTION_BUFFER_BYTES: usize = 16 * 1024;

/// Connection limits of the public listener.
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    /// Connections served at once.
    pub max_connections: usize,
    /// Time allowed for a request's headers to arrive.
    pub header_read_timeout: Duration,
}

/// Serves `router` on `listener` until `shutdown`, then lets requests in flight finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServeLimits,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    let connections = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(CONNECTION_BUFFER_BYTES);
    loop {
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            metrics.refused_connections.inc();
            tracing::debug!(
                limit = limits.max_connections,
                "connection limit reached; closing a new connection"
            );
            drop(stream);
            continue;
        };
        let router = router.clone();
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            router.clone().oneshot(request.map(axum::body::Body::new))
        });
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

//! The public listener's HTTP/1 server: hyper directly, because `axum::serve` has no header-read
//! timeout and no connection limit, and both are what keeps a slow or hostile client from pinning memory.
//!
//! - At most `max_connections` connections are served at once; one more is accepted and closed at once
//!   (counted), so it neither waits in the kernel's backlog nor holds buffers.
//! - A request's headers must arrive within `header_read_timeout` of its first bytes, and an idle
//!   kept-alive connection is kept `keep_alive_timeout` for its next request
//!   ([`super::conn_deadline`]); the body has its own deadline and byte budget in the handler.
//! - Each connection's read buffer stays small: Apple's requests are about 1 KiB, and a buffer that grew to
//!   hyper's default 400 KiB on 200 connections would be 80 MiB.

use super::conn_deadline::{DeadlineIo, Deadlines};
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
    /// Time allowed for a request's headers to arrive once it began.
    pub header_read_timeout: Duration,
    /// Time an idle kept-alive connection is kept for its next request.
    pub keep_alive_timeout: Duration,
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
    // hyper's own header timeout would also close idle kept-alive connections; `DeadlineIo` keeps the
    // two apart.
    http.timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_buf_size(CONNECTION_BUFFER_BYTES);
    let deadlines = Deadlines {
        header: limits.header_read_timeout,
        keep_alive: limits.keep_alive_timeout,
    };
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
        let (io, tracker) = DeadlineIo::new(stream, deadlines);
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            tracker.serving();
            let tracker = tracker.clone();
            let answer = router.clone().oneshot(request.map(axum::body::Body::new));
            async move {
                let answer = answer.await;
                tracker.done();
                answer
            }
        });
        let connection = graceful.watch(http.serve_connection(TokioIo::new(io), service));
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn exchange(stream: &mut tokio::net::TcpStream) -> usize {
        stream
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 512];
        stream.read(&mut buf).await.unwrap()
    }

    #[tokio::test]
    async fn an_idle_kept_alive_connection_is_kept_past_the_header_timeout_then_closed() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let limits = ServeLimits {
            max_connections: 4,
            header_read_timeout: Duration::from_millis(100),
            keep_alive_timeout: Duration::from_millis(600),
        };
        let router = Router::new().route("/", axum::routing::get(|| async { "ok" }));
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve(
            listener,
            router,
            limits,
            Metrics::default(),
            shutdown.clone(),
        ));
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        assert!(exchange(&mut stream).await > 0);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            exchange(&mut stream).await > 0,
            "kept past the header timeout"
        );
        let started = std::time::Instant::now();
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(3), stream.read(&mut buf))
            .await
            .expect("closed after the keep-alive time")
            .unwrap_or(0);
        assert_eq!(n, 0);
        assert!(
            started.elapsed() >= Duration::from_millis(450),
            "{:?}",
            started.elapsed()
        );
        shutdown.cancel();
        let _ = server.await;
    }
}

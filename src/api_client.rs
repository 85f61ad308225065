//! Kubernetes API clients whose connection pool lets go of what a burst opened.
//!
//! kube talks HTTP/1.1 to the API server, one request per connection, and its default client keeps every
//! connection it ever opened idle for 90 seconds, as many as there were requests at once. After the
//! start-up burst (every controller at its full concurrency) that was ~36 idle connections, each with
//! its buffers, its dispatch channel and, on a real API server, its TLS session: about 1 MB the idle
//! operator held for a minute and a half. Here the pool keeps at most `max_idle` connections per
//! API server and closes one idle for `idle_timeout`; the service stack around it is kube's own
//! (base URI, retries, credentials, extra headers, connect/read/write timeouts), without kube's
//! debug-level span per HTTP request (the controllers log their own requests' failures).

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kube::client::ConfigExt;
use kube::client::retry::RetryPolicy;
use std::time::Duration;
use tower::retry::RetryLayer;

/// How many idle connections a client keeps, and for how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool {
    /// Idle connections kept per API server; more are closed as their requests end.
    pub max_idle: usize,
    /// An idle connection is closed after this long unused.
    pub idle_timeout: Duration,
}

/// A client for `config` with `pool`. A proxy (which kube refuses without its `http-proxy` feature) is
/// left to kube, so it is refused with kube's own error.
pub fn client(config: kube::Config, pool: Pool) -> Result<kube::Client, kube::Error> {
    if config.proxy_url.is_some() {
        return kube::Client::try_from(config);
    }
    let mut http = HttpConnector::new();
    // The cluster URL decides the scheme; the TLS connector below answers both.
    http.enforce_http(false);
    let https = config.rustls_https_connector_with_connector(http)?;
    let mut timed = hyper_timeout::TimeoutConnector::new(https);
    timed.set_connect_timeout(config.connect_timeout);
    timed.set_read_timeout(config.read_timeout);
    timed.set_write_timeout(config.write_timeout);
    timed.set_reset_reader_on_write(config.reset_reader_on_write);
    let http_client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(pool.max_idle)
        .pool_idle_timeout(pool.idle_timeout)
        .build(timed);
    let service = tower::ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(
            config
                .default_retry
                .then(|| RetryLayer::new(RetryPolicy::server_retry())),
        )
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(tower::BoxError::from)
        .service(http_client);
    Ok(kube::Client::new(service, config.default_namespace))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// An HTTP/1.1 server that answers once `together` requests are in flight (so each came on its own
    /// connection) and counts the connections still open.
    async fn server(together: usize) -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let open = Arc::new(AtomicUsize::new(0));
        let barrier = Arc::new(tokio::sync::Barrier::new(together));
        let counted = open.clone();
        tokio::spawn(async move {
            loop {
                let (mut conn, _) = listener.accept().await.unwrap();
                counted.fetch_add(1, Ordering::SeqCst);
                let (open, barrier) = (counted.clone(), barrier.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0; 4096];
                    let mut first = true;
                    loop {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(_) => {}
                        }
                        if std::mem::take(&mut first) {
                            barrier.wait().await;
                        }
                        let answer = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
                        if conn.write_all(answer.as_bytes()).await.is_err() {
                            break;
                        }
                    }
                    open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        (url, open)
    }

    async fn open_after_burst(pool: Pool, burst: usize) -> usize {
        let (url, open) = server(burst).await;
        let config = kube::Config::new(url.parse().unwrap());
        let client = client(config, pool).unwrap();
        let requests = (0..burst)
            .map(|_| client.request_text(http::Request::get("/version").body(Vec::new()).unwrap()));
        for answer in futures::future::join_all(requests).await {
            assert_eq!(answer.unwrap(), "{}");
        }
        // Closing is the pool's background work: give it a moment to settle.
        for _ in 0..100 {
            if open.load(Ordering::SeqCst) <= pool.max_idle {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // A pool that closed too many would show it by now.
        tokio::time::sleep(Duration::from_millis(200)).await;
        open.load(Ordering::SeqCst)
    }

    fn keeping(max_idle: usize) -> Pool {
        Pool {
            max_idle,
            idle_timeout: Duration::from_secs(60),
        }
    }

    #[tokio::test]
    async fn a_burst_leaves_no_more_idle_connections_than_the_pool_keeps() {
        assert_eq!(open_after_burst(keeping(1), 4).await, 1);
    }

    #[tokio::test]
    async fn idle_connections_up_to_the_limit_stay_for_the_next_request() {
        assert_eq!(open_after_burst(keeping(8), 4).await, 4);
    }
}

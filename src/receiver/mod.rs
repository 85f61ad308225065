//! The webhook receiver: `POST /hooks/{namespace}/{route}` in, one durable `WebhookDelivery` per event out.
//!
//! Checks run in the order of the receiver's answer table (docs/RESOURCES.md) — route, size and time limits, signature over
//! the raw bytes, parse — and nothing is written for a request that fails one. Routes come from an
//! in-memory route table fed by a watch ([`routes`]), never from an API call per request.

pub(crate) mod admin;
mod answer;
pub mod backend;
pub(crate) mod budget;
mod conn_deadline;
mod handler;
pub mod handoff;
pub(crate) mod kube_backend;
pub mod record;
pub(crate) mod route_watch;
pub mod routes;
pub mod secret_cache;
pub mod serve;
pub mod store;

pub use answer::Answer;
pub use backend::{DeliverySink, Recorded, SecretSource, SinkError};
pub use routes::RouteLookup;

use crate::metrics::Metrics;
use axum::Router;
use axum::routing::post;
use budget::BodyBudget;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use secret_cache::SecretCache;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

/// Limits and cache settings of the receiver.
#[derive(Debug, Clone)]
pub struct ReceiverConfig {
    /// Largest accepted body.
    pub max_body_bytes: usize,
    /// Body bytes all requests together may be receiving at once.
    pub max_inflight_body_bytes: usize,
    /// Largest object the API server stores; larger deliveries get 413 before any write.
    pub max_object_bytes: usize,
    /// Time allowed for the whole body to arrive.
    pub body_timeout: Duration,
    /// How long a webhook secret is trusted before it is read again.
    pub secret_cache_ttl: Duration,
    /// Failed signatures allowed per route per minute before 429.
    pub failed_signatures_per_minute: u32,
    /// How long the previous webhook secret stays accepted after a change, for managed routes.
    pub secret_rotation_grace: Duration,
}

impl ReceiverConfig {
    /// The limits every recorded event is held to, by the receiver and catch-up alike.
    pub fn record_limits(&self) -> store::RecordLimits {
        store::RecordLimits {
            max_body_bytes: self.max_body_bytes,
            max_object_bytes: self.max_object_bytes,
        }
    }
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        ReceiverConfig {
            max_body_bytes: 64 * 1024,
            max_inflight_body_bytes: 8 * 1024 * 1024,
            max_object_bytes: 1_572_864,
            body_timeout: Duration::from_secs(10),
            secret_cache_ttl: Duration::from_secs(5),
            failed_signatures_per_minute: 30,
            secret_rotation_grace: Duration::from_secs(600),
        }
    }
}

/// Shared state of the public listener.
pub struct Receiver {
    routes: Arc<dyn RouteLookup>,
    secrets: SecretCache,
    store: store::DeliveryStore,
    failed_signatures: DefaultKeyedRateLimiter<Arc<str>>,
    budget: BodyBudget,
    /// The metrics label of requests for routes that do not exist.
    unknown_route: Arc<str>,
    config: ReceiverConfig,
    metrics: Metrics,
}

impl Receiver {
    /// A receiver reading routes from `routes`, secrets from `secrets` and storing into `sink`.
    pub fn new(
        routes: Arc<dyn RouteLookup>,
        secrets: Arc<dyn SecretSource>,
        sink: Arc<dyn DeliverySink>,
        config: ReceiverConfig,
        metrics: Metrics,
    ) -> Arc<Self> {
        let per_minute =
            NonZeroU32::new(config.failed_signatures_per_minute.max(1)).unwrap_or(NonZeroU32::MIN);
        Arc::new(Receiver {
            routes,
            secrets: SecretCache::new(secrets, config.secret_cache_ttl, metrics.clone()),
            store: store::DeliveryStore::new(sink, config.record_limits()),
            failed_signatures: RateLimiter::keyed(Quota::per_minute(per_minute)),
            budget: BodyBudget::new(config.max_inflight_body_bytes),
            unknown_route: Arc::from("unknown"),
            config,
            metrics,
        })
    }

    /// Where this receiver reports the Secrets it found missing, back, or changed (the controllers on
    /// this replica subscribe).
    pub fn secret_observations(&self) -> tokio::sync::broadcast::Sender<secret_cache::SecretId> {
        self.secrets.observations()
    }

    /// The public router: only the hook endpoint, so an Ingress exposes nothing else.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/hooks/{namespace}/{route}", post(handler::hook))
            // A bug that panics on one request answers 500 instead of dropping the connection; nothing
            // was stored for it, so the sender's retry loses nothing.
            .layer(tower_http::catch_panic::CatchPanicLayer::new())
            .with_state(self.clone())
    }

    /// Forgets rate-limit state of routes that have been quiet, so memory stays bounded. Run periodically.
    pub fn forget_quiet_routes(&self) {
        self.failed_signatures.retain_recent();
        self.failed_signatures.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::backend::{SecretData, SecretSourceError};
    use super::*;
    use crate::resources::{WebhookDelivery, WebhookRoute};
    use axum::body::Body;
    use futures::future::BoxFuture;
    use http::Request;
    use tower::ServiceExt;

    fn one_route(route: WebhookRoute) -> Arc<routes::RouteTable> {
        let table = routes::RouteTable::default();
        table.insert(&route);
        Arc::new(table)
    }

    struct FixedSecret;
    impl SecretSource for FixedSecret {
        fn secret<'a>(
            &'a self,
            _: &'a str,
            _: &'a str,
        ) -> BoxFuture<'a, Result<Option<SecretData>, SecretSourceError>> {
            Box::pin(async {
                Ok(Some(SecretData::from([(
                    "k".to_owned(),
                    b"s3cret".to_vec(),
                )])))
            })
        }
    }

    struct PanickingSink;
    impl DeliverySink for PanickingSink {
        fn record(&self, _: WebhookDelivery) -> BoxFuture<'_, Result<Recorded, SinkError>> {
            Box::pin(async { panic!("a bug in the store") })
        }
    }

    fn ios_release() -> WebhookRoute {
        record::tests::route()
    }

    #[tokio::test]
    async fn a_body_without_room_in_the_budget_gets_503_and_is_never_read() {
        let rx = Receiver::new(
            one_route(ios_release()),
            Arc::new(FixedSecret),
            Arc::new(PanickingSink),
            ReceiverConfig {
                max_body_bytes: 64 * 1024,
                max_inflight_body_bytes: 64 * 1024,
                ..ReceiverConfig::default()
            },
            Metrics::new(),
        );
        let polled = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = polled.clone();
        let body = futures::stream::poll_fn(move |_| {
            seen.store(true, std::sync::atomic::Ordering::SeqCst);
            std::task::Poll::Ready(None::<Result<bytes::Bytes, std::io::Error>>)
        });
        // Seven eighths of 64 KiB are open to large bodies: 60,000 bytes do not fit.
        let request = Request::post("/hooks/ios/release")
            .header(http::header::CONTENT_LENGTH, "60000")
            .body(Body::from_stream(body))
            .unwrap();
        let response = rx.router().oneshot(request).await.unwrap();
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()[http::header::RETRY_AFTER], "5");
        assert!(
            !polled.load(std::sync::atomic::Ordering::SeqCst),
            "body read"
        );
    }

    #[tokio::test]
    async fn a_panicking_request_answers_500_and_the_receiver_keeps_serving() {
        let route = ios_release();
        let rx = Receiver::new(
            one_route(route),
            Arc::new(FixedSecret),
            Arc::new(PanickingSink),
            ReceiverConfig::default(),
            Metrics::new(),
        );
        let body = include_bytes!("../../tests/fixtures/asc/events/webhook-ping.json");
        for _ in 0..2 {
            let request = Request::post("/hooks/ios/release")
                .header(
                    crate::asc::signature::HEADER,
                    crate::asc::signature::sign(b"s3cret", body),
                )
                .body(Body::from(&body[..]))
                .unwrap();
            let response = rx.router().oneshot(request).await.unwrap();
            assert_eq!(response.status(), 500);
        }
    }
}

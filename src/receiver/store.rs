//! The one way a delivery is stored, whoever recorded it: the receiver for a signed request, catch-up
//! for an entry of Apple's delivery log. Same limits, same checks before the write, same reading of
//! what the API server answers.

use super::backend::{DeliverySink, Recorded, SinkError};
use super::record::{TooLargeToStore, check_fits};
use crate::resources::WebhookDelivery;
use std::sync::Arc;

/// The size limits every recorded event is held to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordLimits {
    /// Largest event body (the receiver's request body, catch-up's logged payload).
    pub max_body_bytes: usize,
    /// Largest object the API server stores.
    pub max_object_bytes: usize,
}

impl RecordLimits {
    /// Refuses a body over the body limit, before it is parsed or built into a delivery.
    pub fn check_body(&self, size: usize) -> Result<(), RecordError> {
        let limit = self.max_body_bytes;
        if size > limit {
            return Err(RecordError::BodyTooLarge { size, limit });
        }
        Ok(())
    }
}

/// Why a delivery was not stored.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The event's body is over the body limit; nothing was written.
    #[error("the event's body of {size} bytes is over the limit of {limit} bytes")]
    BodyTooLarge {
        /// Bytes of the body.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The delivery would be larger than the API server stores; nothing was written.
    #[error(transparent)]
    TooLargeToStore(#[from] TooLargeToStore),
    /// The API server did not store it.
    #[error(transparent)]
    Sink(#[from] SinkError),
}

impl RecordError {
    /// Whether the same event would be refused every time: only a retry of an unavailable store can
    /// succeed.
    pub fn is_permanent(&self) -> bool {
        !matches!(self, RecordError::Sink(SinkError::Unavailable(_)))
    }

    /// A word for metrics: `too_large`, `refused` or `unavailable`.
    pub fn reason(&self) -> &'static str {
        match self {
            RecordError::BodyTooLarge { .. }
            | RecordError::TooLargeToStore(_)
            | RecordError::Sink(SinkError::TooLarge(_)) => "too_large",
            RecordError::Sink(SinkError::Refused(_)) => "refused",
            RecordError::Sink(SinkError::Unavailable(_)) => "unavailable",
        }
    }
}

/// Checks deliveries against [`RecordLimits`] and stores them, once per name. Cheap to clone.
#[derive(Clone)]
pub struct DeliveryStore {
    sink: Arc<dyn DeliverySink>,
    limits: RecordLimits,
}

impl DeliveryStore {
    /// Stores into `sink` what fits `limits`.
    pub fn new(sink: Arc<dyn DeliverySink>, limits: RecordLimits) -> Self {
        DeliveryStore { sink, limits }
    }

    /// The limits deliveries are held to.
    pub fn limits(&self) -> RecordLimits {
        self.limits
    }

    /// Stores `delivery` unless it is too large to; AlreadyExists is [`Recorded::Duplicate`].
    pub async fn record(&self, delivery: WebhookDelivery) -> Result<Recorded, RecordError> {
        check_fits(&delivery, self.limits.max_object_bytes)?;
        Ok(self.sink.record(delivery).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::future::BoxFuture;
    use std::sync::Mutex;

    /// Answers each record with the next of its answers and keeps what it was given.
    struct Scripted {
        answers: Mutex<Vec<Result<Recorded, SinkError>>>,
        seen: Mutex<Vec<String>>,
    }

    impl DeliverySink for Scripted {
        fn record(&self, d: WebhookDelivery) -> BoxFuture<'_, Result<Recorded, SinkError>> {
            self.seen.lock().unwrap().push(d.metadata.name.unwrap());
            let next = self.answers.lock().unwrap().remove(0);
            Box::pin(async move { next })
        }
    }

    fn delivery(payload: &str) -> WebhookDelivery {
        let raw =
            format!(r#"{{"data":{{"id":"e-1","type":"webhookPingCreated","note":"{payload}"}}}}"#);
        let event = crate::asc::event::WebhookEvent::parse(bytes::Bytes::from(raw)).unwrap();
        super::super::record::build_delivery(
            &super::super::record::tests::route(),
            &event,
            None,
            "2026-01-01T00:00:00Z",
        )
    }

    fn store(answers: Vec<Result<Recorded, SinkError>>) -> (DeliveryStore, Arc<Scripted>) {
        let sink = Arc::new(Scripted {
            answers: Mutex::new(answers),
            seen: Mutex::default(),
        });
        let limits = RecordLimits {
            max_body_bytes: 1000,
            max_object_bytes: 64 * 1024,
        };
        (DeliveryStore::new(sink.clone(), limits), sink)
    }

    #[tokio::test]
    async fn a_delivery_over_the_object_limit_is_refused_for_good_before_any_write() {
        let (store, sink) = store(vec![]);
        let err = store
            .record(delivery(&"x".repeat(40_000)))
            .await
            .unwrap_err();
        assert!(err.is_permanent() && err.reason() == "too_large", "{err}");
        assert!(sink.seen.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn what_the_api_server_answers_is_told_apart() {
        let boxed = |m: &str| -> Box<dyn std::error::Error + Send + Sync> { m.into() };
        let (store, sink) = store(vec![
            Ok(Recorded::Created),
            Ok(Recorded::Duplicate),
            Err(SinkError::TooLarge(boxed(
                "etcdserver: request is too large",
            ))),
            Err(SinkError::Refused(boxed("422"))),
            Err(SinkError::Unavailable(boxed("503"))),
        ]);
        assert_eq!(
            store.record(delivery("a")).await.unwrap(),
            Recorded::Created
        );
        assert_eq!(
            store.record(delivery("a")).await.unwrap(),
            Recorded::Duplicate
        );
        let too_large = store.record(delivery("a")).await.unwrap_err();
        assert!(too_large.is_permanent() && too_large.reason() == "too_large");
        let refused = store.record(delivery("a")).await.unwrap_err();
        assert!(refused.is_permanent() && refused.reason() == "refused");
        let down = store.record(delivery("a")).await.unwrap_err();
        assert!(!down.is_permanent() && down.reason() == "unavailable");
        assert_eq!(sink.seen.lock().unwrap().len(), 5);
    }

    #[test]
    fn a_body_over_the_body_limit_is_refused() {
        let (store, _) = store(vec![]);
        assert!(store.limits().check_body(1000).is_ok());
        let err = store.limits().check_body(1001).unwrap_err();
        assert!(
            err.is_permanent() && err.to_string().contains("1001"),
            "{err}"
        );
    }
}

//! What the receiver needs from the outside world, as small traits: read a webhook secret, store a
//! delivery (finding a route is [`super::routes::RouteLookup`], next to what it finds). The operator plugs
//! in the API server; the receiver benchmark plugs in memory, so both measure the same request path.

use crate::resources::WebhookDelivery;
use futures::future::BoxFuture;
use std::collections::BTreeMap;

/// Why a Secret could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SecretSourceError {
    /// The API server could not be asked (down, timing out, refusing).
    #[error("cannot read Secret {namespace}/{name}: {source}")]
    Unavailable {
        /// Namespace of the Secret.
        namespace: String,
        /// Name of the Secret.
        name: String,
        /// What went wrong.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// A Secret's decoded `data`.
pub type SecretData = BTreeMap<String, Vec<u8>>;

/// Reads Secrets. `Ok(None)` means the Secret does not exist.
pub trait SecretSource: Send + Sync + 'static {
    /// The Secret's decoded `data`.
    fn secret<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<SecretData>, SecretSourceError>>;
}

/// The result of storing a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Stored now: the first delivery of this event.
    Created,
    /// A delivery of this name already existed: Apple sent the event again.
    Duplicate,
}

/// Why a delivery could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The store is unreachable or overloaded; Apple should try again later.
    #[error("delivery store unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The store refused the object as too large (413, or etcd's "request is too large"): the same
    /// event will be refused every time.
    #[error("delivery store refused the delivery as too large: {0}")]
    TooLarge(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The store refused the object for a reason a retry cannot change (400, 422: a bug, or an
    /// admission policy).
    #[error("delivery store refused the delivery: {0}")]
    Refused(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Stores deliveries, once per name.
pub trait DeliverySink: Send + Sync + 'static {
    /// Creates the delivery, or reports that it already exists.
    fn record(&self, delivery: WebhookDelivery) -> BoxFuture<'_, Result<Recorded, SinkError>>;
}

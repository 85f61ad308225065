//! The error of a reconcile, shared by every controller.

/// Why a reconcile did not finish. Both kinds are retried with backoff; invalid specs are not errors but
/// conditions, so they never land here.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server failed or refused a call.
    #[error("Kubernetes API call failed: {0}")]
    Kube(#[source] kube::Error),
    /// A delivery could not be recorded for now.
    #[error("cannot record the delivery: {0}")]
    Record(#[source] crate::receiver::store::RecordError),
    /// Something outside the operator is temporarily unavailable.
    #[error("temporarily unavailable: {0}")]
    Transient(String),
}

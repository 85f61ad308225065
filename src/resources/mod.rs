//! The contract users see: the three custom resources of `asc.webhooks.dev/v1alpha1`, their status types,
//! the condition helpers every controller shares, and the generated CRDs.

pub mod common;
pub mod conditions;
pub mod crds;
pub mod names;
pub mod release_timing;
// kube's `printcolumn(...)` repeats `type_`/`json_path` per column, which clippy mistakes for duplicates.
#[allow(clippy::duplicated_attributes)]
pub mod credential;
#[allow(clippy::duplicated_attributes)]
pub mod delivery;
#[allow(clippy::duplicated_attributes)]
pub mod route;
pub mod route_asc;
pub mod seen_events;

pub use common::{LocalObjectReference, SecretKeySelector};
pub use conditions::Condition;
pub use credential::{AscCredential, AscCredentialSpec, AscCredentialStatus};
pub use delivery::{WebhookDelivery, WebhookDeliverySpec, WebhookDeliveryStatus};
pub use route::{WebhookRoute, WebhookRouteSpec, WebhookRouteStatus};

/// API group of every resource this operator serves.
pub const GROUP: &str = "asc.webhooks.dev";
/// The one served version.
pub const VERSION: &str = "v1alpha1";

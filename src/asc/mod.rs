//! App Store Connect, with no Kubernetes in it: the webhook event model, `x-apple-signature`
//! verification, ES256 API tokens and the API client that enriches events.

pub mod api;
pub mod enrich;
pub mod event;
pub mod origins;
pub mod signature;
pub mod token;
pub mod webhook_deliveries;
pub mod webhooks;

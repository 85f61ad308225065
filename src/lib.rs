//! asc-webhook-operator: App Store Connect webhook notifications in, Kubernetes Jobs and HTTP calls out.
//!
//! `asc` knows App Store Connect and nothing of Kubernetes; `resources` is the contract users see;
//! `receiver` turns signed requests into `WebhookDelivery` objects; `controllers` turn those into work;
//! `actions` holds the pure builders of that work.

pub mod actions;
pub mod api_client;
pub mod asc;
pub mod cli;
pub mod controllers;
pub(crate) mod diagnose;
pub mod doctor;
pub mod examples;
pub mod leader;
pub mod memory;
pub mod metrics;
pub mod naming;
pub mod operator;
pub mod receiver;
pub mod replay;
pub mod resources;
pub(crate) mod retry;
pub mod send;
pub mod state_metrics;
pub mod telemetry;
pub mod text;
pub mod time;
pub mod timing;
pub(crate) mod watch_retry;

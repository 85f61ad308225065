//! Test support for asc-webhook-operator. Nothing here is shipped in the operator binary.

pub mod apiserver;
pub mod asc_mock;
pub mod kubectl;

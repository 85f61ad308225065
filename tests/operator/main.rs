//! The one integration test binary (one link on 2-core machines): contract checks of the resource types and
//! CRDs, the receiver over HTTP, and whole-operator scenarios against the in-process fake API server and
//! mock ASC API.

mod allocator;
mod api_cost;
mod apple_webhook;
mod chart;
mod cluster;
mod contract;
mod control_plane;
mod crash_burst;
mod credentials;
mod docs;
mod egress;
mod exactly_once;
mod examples;
mod fuzz_corpus;
mod harness;
mod leader;
mod leadership_terms;
mod lease_fencing;
mod limits;
mod logs;
mod manifests;
mod monitoring;
mod receiver;
mod recorder;
mod release_timing;
mod reliability;
mod replay;
mod resource_actions;
mod scenarios;
mod secret_changes;
mod startup;
mod suspend;
mod tenancy;
mod when;
mod world;

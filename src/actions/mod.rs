//! Pure builders of the work an event causes: the Job or other object a rule creates and the HTTP request
//! it sends.
//! Nothing here talks to the network but `http::send`; the delivery controller decides when, with what
//! these return.

pub mod context;
pub mod egress;
pub mod http;
pub mod job;
pub mod resource;
pub mod template;
pub mod when;

pub use context::EventContext;

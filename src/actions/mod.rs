//! Pure builders of the work an event causes: the Job a rule creates and the HTTP request it sends.
//! Nothing here talks to the network; the delivery controller does, with what these return.

pub mod context;
pub mod http;
pub mod job;
pub mod template;
pub mod when;

pub use context::EventContext;

//! Shared bodies of the fuzz targets; see `checks.rs`.

mod checks;

pub use checks::{event_parse, rule_matching, signature_header};

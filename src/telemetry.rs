//! Logging set-up. Structured fields only; the code never logs a secret, a signature or a token, and
//! request bodies are never logged either (they are stored on the `WebhookDelivery` instead).

use crate::cli::LogFormat;
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// Installs the global subscriber. Called once at start-up.
pub fn init(format: LogFormat, filter: &str) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|e| {
        eprintln!("invalid log filter {filter:?} ({e}); using `info`");
        EnvFilter::new("info")
    });
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Json => registry
            .with(fmt::layer().json().flatten_event(true))
            .init(),
        LogFormat::Text => registry.with(fmt::layer()).init(),
    }
}

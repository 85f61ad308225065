//! The admin listener: health, readiness and metrics, on a port an Ingress never routes to.

use crate::metrics::Metrics;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use std::sync::{Arc, Mutex, PoisonError};

/// Whether this replica can serve: once the route store has synced, and while nothing that needs a
/// person (missing CRDs, missing RBAC) is wrong.
#[derive(Clone)]
pub struct Readiness(Arc<Mutex<ReadyState>>, Arc<tokio::sync::watch::Sender<u64>>);

impl Default for Readiness {
    fn default() -> Self {
        Readiness(Arc::default(), Arc::new(tokio::sync::watch::Sender::new(0)))
    }
}

#[derive(Default)]
struct ReadyState {
    synced: bool,
    problem: Option<String>,
}

impl Readiness {
    fn with<T>(&self, f: impl FnOnce(&mut ReadyState) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Marks the route store synced.
    pub fn set_ready(&self) {
        self.with(|s| s.synced = true);
    }

    /// Records why the replica cannot serve; `/readyz` answers it until [`Readiness::clear_problem`].
    pub fn set_problem(&self, why: String) {
        self.with(|s| s.problem = Some(why));
    }

    /// The problem is gone (the watch works again).
    pub fn clear_problem(&self) {
        let recovered = self.with(|s| s.problem.take().is_some() && s.synced);
        if recovered {
            self.1.send_modify(|n| *n += 1);
        }
    }

    /// Counts the times a synced replica became ready again after a problem: events App Store Connect
    /// sent meanwhile may have failed, so catch-up makes a pass at each change.
    pub fn recoveries(&self) -> tokio::sync::watch::Receiver<u64> {
        self.1.subscribe()
    }

    /// Whether a problem keeps the replica unready.
    pub fn has_problem(&self) -> bool {
        self.with(|s| s.problem.is_some())
    }

    /// Ready, or why not.
    pub fn status(&self) -> Result<(), String> {
        self.with(|s| match (&s.problem, s.synced) {
            (Some(why), _) => Err(why.clone()),
            (None, false) => Err("route store not synced yet".to_owned()),
            (None, true) => Ok(()),
        })
    }
}

#[derive(Clone)]
struct AdminState {
    metrics: Metrics,
    readiness: Readiness,
}

/// `/healthz` (the process answers), `/readyz` (routes synced), `/metrics` (Prometheus text).
pub fn router(metrics: Metrics, readiness: Readiness) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(AdminState { metrics, readiness })
}

async fn readyz(State(s): State<AdminState>) -> impl IntoResponse {
    match s.readiness.status() {
        Ok(()) => (StatusCode::OK, "ready".to_owned()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}")),
    }
}

async fn metrics_text(State(s): State<AdminState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_keeps_a_synced_replica_unready_until_cleared() {
        let r = Readiness::default();
        assert_eq!(r.status(), Err("route store not synced yet".into()));
        r.set_problem("apply crds/".into());
        r.set_ready();
        assert_eq!(r.status(), Err("apply crds/".into()));
        r.clear_problem();
        assert!(r.status().is_ok());
    }

    #[test]
    fn becoming_ready_again_after_a_problem_is_signalled_and_the_first_sync_is_not() {
        let r = Readiness::default();
        let seen = r.recoveries();
        r.set_ready();
        r.clear_problem();
        assert_eq!(*seen.borrow(), 0, "nothing was wrong");
        r.set_problem("RBAC".into());
        assert!(r.status().is_err());
        r.clear_problem();
        r.clear_problem();
        assert_eq!(*seen.borrow(), 1, "one recovery, signalled once");
    }
}

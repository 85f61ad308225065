//! What a failing watch means for whoever runs the operator, in words that say what to do. A missing
//! CRD or missing RBAC otherwise shows up as a retry loop of 404s or 403s at warn level.

use kube::runtime::watcher;

/// How to install the CRDs, as the README says.
pub const APPLY_CRDS: &str = "apply crds/: kubectl apply --server-side -f crds/";

/// What is wrong, judged from a watch error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchProblem {
    /// The resource is not served: its CRD is not installed (404).
    MissingCrd(String),
    /// The service account may not list or watch it (403).
    Forbidden(String),
    /// Anything else: the API server is down, slow or restarting; the watch retries.
    Transient(String),
}

impl WatchProblem {
    /// Whether someone has to act (install CRDs, grant RBAC) before this can recover.
    pub fn needs_action(&self) -> bool {
        !matches!(self, WatchProblem::Transient(_))
    }

    /// The sentence for logs and `/readyz`.
    pub fn message(&self) -> &str {
        match self {
            WatchProblem::MissingCrd(m)
            | WatchProblem::Forbidden(m)
            | WatchProblem::Transient(m) => m,
        }
    }
}

/// Classifies an error of the watch on `resource` (plural, e.g. `webhookroutes`).
pub fn watch_problem(resource: &str, error: &watcher::Error) -> WatchProblem {
    let api = match error {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => Some((s.code, s.message.as_str())),
        watcher::Error::WatchError(s) => Some((s.code, s.message.as_str())),
        _ => None,
    };
    match api {
        Some((404, _)) => WatchProblem::MissingCrd(format!(
            "the API server does not serve {resource}: the CustomResourceDefinitions are not installed; {APPLY_CRDS}"
        )),
        Some((403, message)) => WatchProblem::Forbidden(format!(
            "the operator's service account may not list and watch {resource} ({message}); apply the Helm chart's ClusterRole or grant get, list and watch on it"
        )),
        _ => WatchProblem::Transient(format!("watch of {resource} failed: {error}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    fn list_failed(code: u16, message: &str) -> watcher::Error {
        watcher::Error::InitialListFailed(kube::Error::Api(Box::new(
            Status::failure(message, "").with_code(code),
        )))
    }

    #[test]
    fn missing_crds_and_rbac_say_what_to_do() {
        let p = watch_problem(
            "webhookroutes",
            &list_failed(404, "the server could not find the requested resource"),
        );
        assert!(p.needs_action());
        assert!(
            p.message().contains("kubectl apply --server-side -f crds/"),
            "{p:?}"
        );
        let p = watch_problem("webhookdeliveries", &list_failed(403, "forbidden"));
        assert!(matches!(p, WatchProblem::Forbidden(_)));
        assert!(p.message().contains("webhookdeliveries") && p.message().contains("ClusterRole"));
        let p = watch_problem("webhookroutes", &list_failed(503, "unavailable"));
        assert!(!p.needs_action());
    }
}

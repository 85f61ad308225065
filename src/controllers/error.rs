//! The error of a reconcile, shared by every controller.

use crate::asc::api::ApiError;
use crate::asc::webhooks::WebhookError;
use crate::controllers::context::CredentialProblem;
use crate::receiver::store::RecordError;

/// Why a reconcile did not finish. Every kind is retried with backoff; invalid specs are not errors but
/// conditions, so they never land here. Each keeps its cause as its source; [`Error::category`] names
/// the kind for the reconcile-failure metric and the Warning Event.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server failed or refused a call.
    #[error("Kubernetes API call failed")]
    Kube(#[source] kube::Error),
    /// A credential's key could not be read for now (its Secret could not be read).
    #[error("the AscCredential cannot be read for now")]
    Credential(#[source] CredentialProblem),
    /// The route's credential cannot be used; the route's conditions say why.
    #[error("the route's AscCredential is not usable: {reason}: {message}")]
    CredentialNotUsable {
        /// The condition reason.
        reason: &'static str,
        /// For a person.
        message: String,
    },
    /// App Store Connect failed a call the reconcile cannot finish without.
    #[error("calling App Store Connect failed")]
    AppStoreConnect(#[source] WebhookError),
    /// A delivery could not be recorded for now.
    #[error("cannot record the delivery")]
    Record(#[source] RecordError),
    /// The finalizer of the object could not be handled.
    #[error("handling the finalizer failed")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

/// What kind of failure a reconcile met: the `category` label of the reconcile-failure metric and the
/// reason of the Warning Event, so a person tells an App Store Connect 429 from a missing Secret without
/// reading logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Category {
    /// The API server answered 403.
    KubernetesForbidden,
    /// The API server answered 404 (a missing CRD, or an object gone meanwhile).
    KubernetesNotFound,
    /// The API server answered 409.
    KubernetesConflict,
    /// The API server failed, refused otherwise or could not be reached.
    KubernetesUnavailable,
    /// A credential's Secret could not be read for now.
    CredentialUnavailable,
    /// A route's credential cannot be used.
    CredentialNotUsable,
    /// App Store Connect answered 429 until retries ran out.
    AppStoreConnectRateLimited,
    /// App Store Connect failed or could not be reached.
    AppStoreConnectUnavailable,
    /// App Store Connect refused the key or token.
    AppStoreConnectForbidden,
    /// App Store Connect refused the request.
    AppStoreConnectRefused,
    /// A delivery could not be stored for now.
    DeliveryStoreUnavailable,
    /// The finalizer could not be handled.
    Finalizer,
}

impl Category {
    /// The metric label (`snake_case`).
    pub fn metric_label(self) -> &'static str {
        match self {
            Category::KubernetesForbidden => "kubernetes_forbidden",
            Category::KubernetesNotFound => "kubernetes_not_found",
            Category::KubernetesConflict => "kubernetes_conflict",
            Category::KubernetesUnavailable => "kubernetes_unavailable",
            Category::CredentialUnavailable => "credential_unavailable",
            Category::CredentialNotUsable => "credential_not_usable",
            Category::AppStoreConnectRateLimited => "app_store_connect_rate_limited",
            Category::AppStoreConnectUnavailable => "app_store_connect_unavailable",
            Category::AppStoreConnectForbidden => "app_store_connect_forbidden",
            Category::AppStoreConnectRefused => "app_store_connect_refused",
            Category::DeliveryStoreUnavailable => "delivery_store_unavailable",
            Category::Finalizer => "finalizer",
        }
    }

    /// The Event reason (`CamelCase`, as Kubernetes reasons are).
    pub fn event_reason(self) -> &'static str {
        match self {
            Category::KubernetesForbidden => "KubernetesForbidden",
            Category::KubernetesNotFound => "KubernetesNotFound",
            Category::KubernetesConflict => "KubernetesConflict",
            Category::KubernetesUnavailable => "KubernetesUnavailable",
            Category::CredentialUnavailable => "CredentialUnavailable",
            Category::CredentialNotUsable => "CredentialNotUsable",
            Category::AppStoreConnectRateLimited => "AppStoreConnectRateLimited",
            Category::AppStoreConnectUnavailable => "AppStoreConnectUnavailable",
            Category::AppStoreConnectForbidden => "AppStoreConnectForbidden",
            Category::AppStoreConnectRefused => "AppStoreConnectRefused",
            Category::DeliveryStoreUnavailable => "DeliveryStoreUnavailable",
            Category::Finalizer => "FinalizerFailed",
        }
    }
}

impl Error {
    /// What kind of failure this is.
    pub fn category(&self) -> Category {
        match self {
            Error::Kube(e) => kube_category(e),
            Error::Credential(_) => Category::CredentialUnavailable,
            Error::CredentialNotUsable { .. } => Category::CredentialNotUsable,
            Error::AppStoreConnect(e) => asc_category(e),
            Error::Record(_) => Category::DeliveryStoreUnavailable,
            Error::Finalizer(e) => match e.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(e)
                | kube::runtime::finalizer::Error::CleanupFailed(e) => e.category(),
                kube::runtime::finalizer::Error::AddFinalizer(e)
                | kube::runtime::finalizer::Error::RemoveFinalizer(e) => kube_category(e),
                _ => Category::Finalizer,
            },
        }
    }
}

fn kube_category(e: &kube::Error) -> Category {
    match e {
        kube::Error::Api(s) if s.code == 403 => Category::KubernetesForbidden,
        kube::Error::Api(s) if s.code == 404 => Category::KubernetesNotFound,
        kube::Error::Api(s) if s.code == 409 => Category::KubernetesConflict,
        _ => Category::KubernetesUnavailable,
    }
}

fn asc_category(e: &WebhookError) -> Category {
    match e {
        WebhookError::Unavailable(api) if rate_limited(api) => Category::AppStoreConnectRateLimited,
        WebhookError::Unavailable(_) | WebhookError::WebhookNotFound { .. } => {
            Category::AppStoreConnectUnavailable
        }
        WebhookError::Forbidden(_) | WebhookError::TokenScopeRefused(_) => {
            Category::AppStoreConnectForbidden
        }
        WebhookError::AppNotFound { .. }
        | WebhookError::LimitReached { .. }
        | WebhookError::Rejected { .. }
        | WebhookError::Malformed(_)
        | WebhookError::Other(_) => Category::AppStoreConnectRefused,
    }
}

/// Whether Apple's last answer was a 429.
fn rate_limited(e: &ApiError) -> bool {
    match e {
        ApiError::Status { status: 429, .. } => true,
        ApiError::GaveUp { last, .. } => rate_limited(last),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure("refused", "Reason")
                .with_code(code)
                .boxed(),
        )
    }

    fn asc_status(status: u16) -> ApiError {
        ApiError::Status {
            status,
            url: "https://api.appstoreconnect.apple.com/v1/webhooks".into(),
            asc_message: None,
            apple: None,
        }
    }

    #[test]
    fn an_app_store_connect_429_is_told_apart_from_a_missing_secret_and_a_server_error() {
        let limited = Error::AppStoreConnect(WebhookError::Unavailable(ApiError::GaveUp {
            attempts: 3,
            last: Box::new(asc_status(429)),
        }));
        let down = Error::AppStoreConnect(WebhookError::Unavailable(asc_status(503)));
        let secret = Error::Credential(CredentialProblem::Unusable {
            reason: "SecretUnreadable",
            message: "Secret ios/key cannot be read".into(),
            transient: true,
        });
        let categories = [limited.category(), down.category(), secret.category()];
        assert_eq!(
            categories.map(Category::metric_label),
            [
                "app_store_connect_rate_limited",
                "app_store_connect_unavailable",
                "credential_unavailable"
            ]
        );
        assert_eq!(
            limited.category().event_reason(),
            "AppStoreConnectRateLimited"
        );
    }

    #[test]
    fn kubernetes_refusals_are_told_apart_by_status() {
        let label = |code| Error::Kube(status(code)).category().metric_label();
        assert_eq!(label(403), "kubernetes_forbidden");
        assert_eq!(label(404), "kubernetes_not_found");
        assert_eq!(label(409), "kubernetes_conflict");
        assert_eq!(label(500), "kubernetes_unavailable");
    }

    #[test]
    fn a_finalizer_failure_is_categorised_by_its_cause() {
        let inner = Error::AppStoreConnect(WebhookError::Forbidden(asc_status(403)));
        let e = Error::Finalizer(Box::new(kube::runtime::finalizer::Error::CleanupFailed(
            inner,
        )));
        assert_eq!(e.category(), Category::AppStoreConnectForbidden);
    }

    #[test]
    fn the_cause_is_kept_as_the_source() {
        let e = Error::Kube(status(500));
        let chain = crate::text::error_chain(&e);
        assert!(
            chain.starts_with("Kubernetes API call failed: ") && chain.contains("refused"),
            "{chain}"
        );
    }
}

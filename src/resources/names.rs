//! Every name the operator shares between its parts and with the cluster: labels, the finalizer, field
//! managers, the API version written into patches and the default App Store Connect origin. They are
//! part of the contract (selectors, `kubectl get -l`, server-side apply ownership), so each is defined
//! once, here, and everything else refers to it.

/// `apiVersion` of the three custom resources, as written into status patches and owner references.
pub const API_VERSION: &str = "asc.webhooks.dev/v1alpha1";
/// Prefix of every label and finalizer this operator owns; a Job template may not set labels under it.
pub const PREFIX: &str = "asc.webhooks.dev/";

/// Label carrying the route's name on deliveries and Jobs.
pub const LABEL_ROUTE: &str = "asc.webhooks.dev/route";
/// Label carrying the event type on deliveries and Jobs.
pub const LABEL_EVENT_TYPE: &str = "asc.webhooks.dev/event-type";
/// Label set on a delivery once it reached a terminal phase. The delivery controller watches only
/// deliveries without it, so its cache holds the work in flight, not the whole history.
pub const LABEL_FINISHED: &str = "asc.webhooks.dev/finished";
/// Label carrying the rule's name on Jobs.
pub const LABEL_RULE: &str = "asc.webhooks.dev/rule";
/// Label carrying the delivery's name on Jobs.
pub const LABEL_DELIVERY: &str = "asc.webhooks.dev/delivery";
/// The standard label marking objects this operator manages (the Job watch selects on it).
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Value of [`LABEL_MANAGED_BY`].
pub const MANAGED_BY: &str = OPERATOR;

/// Annotation whose every new value replays a delivery: its matching rules run once more.
pub const ANNOTATION_REPLAY: &str = "asc.webhooks.dev/replay";

/// Annotation whose every new value on a route or credential makes the operator read everything it
/// depends on again now (Secrets, ServiceAccount, App Store Connect's copy of the webhook, a catch-up
/// pass, the key's verification), like Flux's `reconcile.fluxcd.io/requestedAt`.
pub const ANNOTATION_RECONCILE_REQUESTED_AT: &str = "asc.webhooks.dev/reconcile-requested-at";

/// kubectl's copy of the last applied spec: as large as the spec, and read by nothing here, so caches
/// drop it.
pub const ANNOTATION_LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Finalizer that deletes the App Store Connect webhook before the route goes.
pub const FINALIZER_ASC_WEBHOOK: &str = "asc.webhooks.dev/app-store-connect-webhook";

/// The operator's name: the Events' reporting controller, the default Lease name, and the prefix of its
/// pods' identities.
pub const OPERATOR: &str = "asc-webhook-operator";
/// `User-Agent` of every outbound HTTP request (App Store Connect and HTTP actions).
pub const USER_AGENT: &str = concat!("asc-webhook-operator/", env!("CARGO_PKG_VERSION"));

/// The single field manager for every write the operator makes, so ownership of fields is never split.
pub const FIELD_MANAGER: &str = OPERATOR;
/// The field manager of `status.appStoreConnect` and its conditions only: that part is written by the
/// App Store Connect reconciler, and a separate manager keeps its apply from dropping the route
/// controller's fields (and the other way round).
pub const FIELD_MANAGER_ASC: &str = "asc-webhook-operator/app-store-connect";

/// Apple's production API origin, used when a credential does not override it and the default of
/// `--asc-api-origins`.
pub const DEFAULT_API_URL: &str = "https://api.appstoreconnect.apple.com";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owned_labels_and_the_finalizer_share_the_group_prefix() {
        for name in [
            LABEL_ROUTE,
            LABEL_EVENT_TYPE,
            LABEL_FINISHED,
            LABEL_RULE,
            LABEL_DELIVERY,
            ANNOTATION_REPLAY,
            ANNOTATION_RECONCILE_REQUESTED_AT,
            FINALIZER_ASC_WEBHOOK,
        ] {
            assert!(name.starts_with(PREFIX), "{name}");
        }
        assert_eq!(PREFIX, format!("{}/", super::super::GROUP));
        assert_eq!(
            API_VERSION,
            format!("{}/{}", super::super::GROUP, super::super::VERSION)
        );
    }
}

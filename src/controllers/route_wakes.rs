//! Which changes of a route wake the route controller: everything but the status it writes itself.
//!
//! Its own status write comes back on the route watch a moment later. Woken by it, the controller found
//! the counts moved meanwhile in a burst and wrote again, so a busy route's status was written twice a
//! second instead of once (the deliveries' changes already wake it, at most once a second, through
//! the throttle); over 20 routes that was 0.4 route writes per delivery on a real API server. What the
//! App Store Connect webhook reconciler writes into the same status (its conditions and
//! `appStoreConnect`) still wakes it: `Ready` depends on the webhook being registered.

use super::route_status::route_controller_part;
use crate::resources::WebhookRoute;
use futures::{Stream, StreamExt};
use kube::ResourceExt;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// A digest of what of `route` the route controller acts on when it changes.
pub fn wakes_on(route: &WebhookRoute) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    route.uid().hash(&mut h);
    route.metadata.generation.hash(&mut h);
    route.labels().hash(&mut h);
    route.annotations().hash(&mut h);
    route.finalizers().hash(&mut h);
    route.metadata.deletion_timestamp.is_some().hash(&mut h);
    if let Some(status) = &route.status {
        let own = route_controller_part(status);
        let others: Vec<_> = status
            .conditions
            .iter()
            .filter(|c| !own.conditions.contains(c))
            .collect();
        // Conditions and the App Store Connect status have no `Hash`; their JSON is as good a digest.
        serde_json::to_vec(&(others, &status.app_store_connect))
            .unwrap_or_default()
            .hash(&mut h);
    }
    h.finish()
}

/// `routes` without the changes [`wakes_on`] leaves out (the first sight of each route passes).
pub fn changes_to_act_on(
    routes: impl Stream<Item = Arc<WebhookRoute>> + Send + 'static,
) -> impl Stream<Item = Arc<WebhookRoute>> + Send + 'static {
    // Keyed by a digest of namespace and name, not the `ObjectRef` (four strings per route, held for
    // the term): a wrong answer needs two routes to share 64 bits, and `wakes_on` hashes the uid, so a
    // route recreated under its name is still seen afresh.
    let mut last: HashMap<u64, u64> = HashMap::new();
    routes.filter(move |route| {
        let digest = wakes_on(route);
        let changed = last.insert(route_key(route), digest) != Some(digest);
        futures::future::ready(changed)
    })
}

fn route_key(route: &WebhookRoute) -> u64 {
    super::digest::of_name(
        route.metadata.namespace.as_deref(),
        route.metadata.name.as_deref().unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::WebhookRouteStatus;
    use crate::resources::conditions::Condition;

    fn route() -> WebhookRoute {
        let mut r: WebhookRoute = serde_json::from_value(serde_json::json!({
            "apiVersion": "asc.webhooks.dev/v1alpha1", "kind": "WebhookRoute",
            "metadata": {"name": "ios", "namespace": "apps", "uid": "u1", "generation": 1},
            "spec": {"secretRef": {"name": "hook", "key": "secret"}, "rules": []}
        }))
        .unwrap();
        r.status = Some(WebhookRouteStatus::default());
        r
    }

    fn condition(type_: &str, status: &str) -> Condition {
        serde_json::from_value(
            serde_json::json!({"type": type_, "status": status, "reason": "R",
            "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}),
        )
        .unwrap()
    }

    #[test]
    fn its_own_status_write_does_not_wake_the_route_controller() {
        let before = route();
        let mut after = before.clone();
        let status = after.status.as_mut().unwrap();
        status.deliveries.received = 40;
        status.conditions.push(condition("Ready", "True"));
        status.observed_generation = Some(1);
        assert_eq!(wakes_on(&before), wakes_on(&after));
    }

    #[test]
    fn a_spec_change_a_nudge_or_the_webhook_registration_wakes_it() {
        let before = route();
        let mut spec = before.clone();
        spec.metadata.generation = Some(2);
        let mut nudged = before.clone();
        nudged.annotations_mut().insert(
            "asc.webhooks.dev/reconcile-requested-at".into(),
            "now".into(),
        );
        let mut registered = before.clone();
        registered
            .status
            .as_mut()
            .unwrap()
            .conditions
            .push(condition("WebhookRegistered", "True"));
        for changed in [spec, nudged, registered] {
            assert_ne!(wakes_on(&before), wakes_on(&changed));
        }
    }

    #[tokio::test]
    async fn only_changes_it_acts_on_pass_and_the_first_sight_of_each_route() {
        let first = route();
        let mut own_write = first.clone();
        own_write.status.as_mut().unwrap().deliveries.received = 3;
        let mut edited = own_write.clone();
        edited.metadata.generation = Some(2);
        let passed: Vec<_> = changes_to_act_on(futures::stream::iter(
            [first, own_write, edited].map(Arc::new),
        ))
        .collect()
        .await;
        let generations: Vec<_> = passed.iter().map(|r| r.metadata.generation).collect();
        assert_eq!(generations, [Some(1), Some(2)]);
    }
}

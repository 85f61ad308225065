//! What the reconcilers of `status.appStoreConnect` take as last written for a route: this process's
//! own last write while the route cache may not show it yet, else the newest cached route.

use super::state;
use crate::controllers::Context;
use crate::resources::WebhookRoute;
use crate::resources::conditions::Condition;
use crate::resources::route_asc::AppStoreConnectStatus;
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use std::sync::Arc;

/// What this reconciler last recorded for the route: its own last write when the cache may not show it
/// yet, else the route's status.
pub(super) fn known_asc(ctx: &Context, route: &WebhookRoute) -> Option<AppStoreConnectStatus> {
    match route.uid().and_then(|uid| ctx.written_asc.get(&uid)) {
        Some((asc, _)) => asc,
        None => newest(ctx, route)
            .as_deref()
            .unwrap_or(route)
            .status
            .as_ref()
            .and_then(|s| s.app_store_connect.as_deref().cloned()),
    }
}

/// This reconciler's conditions as it last wrote them, else as the route shows them.
pub(super) fn known_conditions(ctx: &Context, route: &WebhookRoute) -> Vec<Condition> {
    match route.uid().and_then(|uid| ctx.written_asc.get(&uid)) {
        Some((_, conditions)) => conditions,
        None => state::owned_conditions(newest(ctx, route).as_deref().unwrap_or(route)),
    }
}

/// Forgets this process's last write for `route` once the newest cached copy of the route shows exactly
/// that: from then on the cache gives [`known_asc`] and [`known_conditions`] the same answer (the cache
/// only moves forward, and only this process writes that part), and an idle route no longer holds a
/// second copy of its status for the whole term. A write kept in memory only (see
/// `state::only_progress_moved`) is not shown, so it stays.
pub(super) fn settle(ctx: &Context, route: &WebhookRoute) {
    let Some(uid) = route.uid() else {
        return;
    };
    if !ctx.written_asc.holds(&uid) {
        return;
    }
    let Some(newest) = newest(ctx, route) else {
        return;
    };
    ctx.written_asc.forget_if(&uid, |(asc, conditions)| {
        shows(&newest, asc.as_ref(), conditions)
    });
}

/// The cache's copy of `route` when it is the same object: the reconcile's copy may predate it.
fn newest(ctx: &Context, route: &WebhookRoute) -> Option<Arc<WebhookRoute>> {
    ctx.stores
        .routes
        .get(&ObjectRef::from_obj(route))
        .filter(|r| r.uid() == route.uid())
}

/// Whether `route` shows `asc` as its `status.appStoreConnect` and exactly `conditions` as this
/// reconciler's conditions (in any order).
fn shows(
    route: &WebhookRoute,
    asc: Option<&AppStoreConnectStatus>,
    conditions: &[Condition],
) -> bool {
    let shown_asc = route
        .status
        .as_ref()
        .and_then(|s| s.app_store_connect.as_deref());
    let shown = state::owned_conditions(route);
    shown_asc == asc
        && shown.len() == conditions.len()
        && conditions.iter().all(|c| shown.contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::WebhookRouteStatus;

    fn route(asc: Option<AppStoreConnectStatus>, conditions: Vec<Condition>) -> WebhookRoute {
        let mut r: WebhookRoute = serde_json::from_value(serde_json::json!({
            "apiVersion": "asc.webhooks.dev/v1alpha1", "kind": "WebhookRoute",
            "metadata": {"name": "ios", "namespace": "apps", "uid": "u1", "generation": 1},
            "spec": {"secretRef": {"name": "hook", "key": "secret"}, "rules": []}
        }))
        .unwrap();
        r.status = Some(WebhookRouteStatus {
            app_store_connect: asc.map(Box::new),
            conditions,
            ..Default::default()
        });
        r
    }

    fn registered(status: bool) -> Condition {
        Condition::new(super::super::WEBHOOK_REGISTERED, status, "R", "m")
    }

    fn verified() -> Condition {
        Condition::new(super::super::WEBHOOK_VERIFIED, true, "R", "m")
    }

    fn asc(id: &str) -> AppStoreConnectStatus {
        AppStoreConnectStatus {
            webhook_id: Some(id.into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_route_shows_a_write_with_the_same_status_and_conditions_in_any_order() {
        let shown = route(Some(asc("w1")), vec![verified(), registered(true)]);
        assert!(shows(
            &shown,
            Some(&asc("w1")),
            &[registered(true), verified()]
        ));
    }

    #[test]
    fn a_route_does_not_show_a_write_that_differs_in_anything() {
        let shown = route(Some(asc("w1")), vec![registered(true), verified()]);
        assert!(!shows(
            &shown,
            Some(&asc("w2")),
            &[registered(true), verified()]
        ));
        assert!(!shows(&shown, None, &[registered(true), verified()]));
        assert!(!shows(
            &shown,
            Some(&asc("w1")),
            &[registered(false), verified()]
        ));
        assert!(!shows(&shown, Some(&asc("w1")), &[registered(true)]));
    }
}

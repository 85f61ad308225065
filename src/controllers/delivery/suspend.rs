//! `spec.suspend` on a route, the delivery side: a delivery that has not started is held (phase
//! `Pending`, `Completed` reason `RouteSuspended`) instead of matched and run, and once the route is
//! resumed the held deliveries start one after another in the order they were received.
//!
//! Order is kept without a queue of its own: a delivery that has not started waits while an older
//! delivery of the same route is still held (looked up in the controller's cache of unfinished
//! deliveries), so the oldest starts first and each start releases the next. Matching happens when a
//! delivery starts, so rules edited during the suspension apply to the events that waited.

use crate::resources::WebhookDelivery;
use crate::resources::conditions::{self, Condition};
use crate::resources::delivery::{Phase, WebhookDeliveryStatus};
use crate::resources::route::WebhookRoute;
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;

/// The reason a held delivery (and a held action) carries.
pub const REASON: &str = "RouteSuspended";

/// Holds a delivery that has not started: it stays `Pending` and says why.
pub fn hold(st: &mut WebhookDeliveryStatus, route: &str, generation: Option<i64>, now: &str) {
    st.phase = Phase::Pending;
    let message = format!(
        "route {route} is suspended (spec.suspend: true); the actions run once it is resumed"
    );
    st.message = Some(message.clone());
    st.conditions = conditions::merge(
        &st.conditions,
        vec![Condition::new("Completed", false, REASON, message)],
        generation,
        now,
    );
}

/// Whether the delivery is held by a suspended route.
pub fn is_held(st: &WebhookDeliveryStatus) -> bool {
    st.phase == Phase::Pending
        && conditions::find(&st.conditions, "Completed").is_some_and(|c| c.reason == REASON)
}

/// Drops the suspension message once the delivery runs (its `Completed` condition is rewritten by the
/// pass that runs it).
pub fn release(st: &mut WebhookDeliveryStatus) {
    if is_held(st) {
        st.message = None;
    }
}

/// Slims a delivery to what the watch cache is read for between passes: the scheduling below (route,
/// receipt, whether it is held) and the controller's own keys (name, namespace, resourceVersion, labels).
/// Every unfinished delivery stays cached until it finishes (all of a burst whose Jobs run), so its payload
/// and status would be held twice over; a pass reads the full object from the API server instead.
pub fn scheduling_copy(d: &mut WebhookDelivery) {
    d.spec.payload = String::new();
    d.spec.request_id = None;
    d.spec.instance = None;
    d.status = d.status.take().map(|st| WebhookDeliveryStatus {
        phase: st.phase,
        conditions: if is_held(&st) {
            st.conditions
                .into_iter()
                .filter(|c| c.type_ == "Completed")
                .collect()
        } else {
            Vec::new()
        },
        ..WebhookDeliveryStatus::default()
    });
}

/// Order of receipt: `receivedAt` as a time (it carries milliseconds; older deliveries whole seconds),
/// then the name.
fn receipt(d: &WebhookDelivery) -> (Option<jiff::Timestamp>, String) {
    (crate::time::parse_ts(&d.spec.received_at), d.name_any())
}

fn same_route(a: &WebhookDelivery, b: &WebhookDelivery) -> bool {
    a.spec.route == b.spec.route && a.namespace() == b.namespace()
}

/// Whether `me` must wait because an older delivery of its route is still held.
pub fn waits_behind<'a>(
    me: &WebhookDelivery,
    unfinished: impl IntoIterator<Item = &'a WebhookDelivery>,
) -> bool {
    let mine = receipt(me);
    unfinished.into_iter().any(|other| {
        same_route(me, other) && other.status.as_ref().is_some_and(is_held) && receipt(other) < mine
    })
}

/// The held deliveries of `route`, oldest first: what a change of the route must look at again.
pub fn held_of_route<'a>(
    route: &WebhookRoute,
    unfinished: impl IntoIterator<Item = &'a WebhookDelivery>,
) -> Vec<ObjectRef<WebhookDelivery>> {
    let ns = route.namespace();
    let name = route.name_any();
    let mut held: Vec<&WebhookDelivery> = unfinished
        .into_iter()
        .filter(|d| d.spec.route == name && d.namespace() == ns)
        .filter(|d| d.status.as_ref().is_some_and(is_held))
        .collect();
    held.sort_by_key(|a| receipt(a));
    held.into_iter().map(ObjectRef::from_obj).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::delivery::WebhookDeliverySpec;
    use crate::resources::route::WebhookRouteSpec;
    use crate::resources::{SecretKeySelector, WebhookDeliveryStatus};

    fn delivery(name: &str, route: &str, at: &str, held: bool) -> WebhookDelivery {
        let mut d = WebhookDelivery::new(
            name,
            WebhookDeliverySpec {
                route: route.into(),
                event_id: name.into(),
                event_type: "buildUploadStateUpdated".into(),
                old_state: None,
                new_state: None,
                instance: None,
                received_at: at.into(),
                event_created_at: None,
                source: Default::default(),
                request_id: None,
                payload: "{}".into(),
            },
        );
        d.metadata.namespace = Some("ios".into());
        let mut st = WebhookDeliveryStatus::default();
        if held {
            hold(&mut st, route, Some(1), "t");
        }
        d.status = Some(st);
        d
    }

    #[test]
    fn a_held_delivery_is_pending_and_says_the_route_is_suspended() {
        let mut st = WebhookDeliveryStatus::default();
        hold(&mut st, "release", Some(1), "t");
        assert!(is_held(&st));
        assert_eq!(st.phase, Phase::Pending);
        assert!(st.message.as_deref().unwrap().contains("suspended"));
        release(&mut st);
        assert_eq!(st.message, None);
    }

    #[test]
    fn only_an_older_held_delivery_of_the_same_route_makes_one_wait() {
        let first = delivery("a", "r", "2026-01-01T00:00:01Z", true);
        let second = delivery("b", "r", "2026-01-01T00:00:02Z", true);
        let other_route = delivery("c", "other", "2026-01-01T00:00:00Z", true);
        let all = [first.clone(), second.clone(), other_route];
        assert!(!waits_behind(&first, &all), "the oldest starts");
        assert!(waits_behind(&second, &all));
        let started = delivery("a", "r", "2026-01-01T00:00:01Z", false);
        assert!(!waits_behind(&second, &[started, second.clone()]));
    }

    #[test]
    fn milliseconds_order_deliveries_received_within_one_second() {
        let earlier = delivery("zz", "r", "2026-01-01T00:00:01.100Z", true);
        let later = delivery("aa", "r", "2026-01-01T00:00:01.900Z", true);
        let all = [earlier.clone(), later.clone()];
        assert!(
            waits_behind(&later, &all),
            "received later, though its name sorts first"
        );
        assert!(!waits_behind(&earlier, &all));
    }

    /// Route `r` in namespace `ios`, without rules.
    fn route_r() -> WebhookRoute {
        let mut r = WebhookRoute::new(
            "r",
            WebhookRouteSpec {
                secret_ref: SecretKeySelector {
                    name: "s".into(),
                    key: "k".into(),
                    namespace: None,
                },
                credential_ref: None,
                service_account_name: None,
                rules: vec![],
                delivery_history_limit: None,
                suspend: false,
                app_store_connect: None,
            },
        );
        r.metadata.namespace = Some("ios".into());
        r
    }

    #[test]
    fn a_route_change_looks_at_its_held_deliveries_oldest_first() {
        let route = route_r();
        let all = [
            delivery("late", "r", "2026-01-01T00:00:03Z", true),
            delivery("early", "r", "2026-01-01T00:00:01Z", true),
            delivery("running", "r", "2026-01-01T00:00:00Z", false),
            delivery("elsewhere", "other", "2026-01-01T00:00:02Z", true),
        ];
        let names: Vec<String> = held_of_route(&route, &all)
            .into_iter()
            .map(|r| r.name)
            .collect();
        assert_eq!(names, vec!["early", "late"]);
    }

    #[test]
    fn the_cached_copy_keeps_what_scheduling_reads_and_drops_the_payload() {
        let mut running = delivery("a", "r", "2026-01-01T00:00:01Z", false);
        running.spec.payload = "x".repeat(4096);
        running.spec.request_id = Some("req".into());
        if let Some(st) = running.status.as_mut() {
            st.phase = Phase::Running;
            st.matched_rules = vec!["build".into()];
            st.message = Some("running".into());
        }
        let held = delivery("b", "r", "2026-01-01T00:00:02Z", true);
        let mut slim = [running.clone(), held.clone()];
        for d in &mut slim {
            scheduling_copy(d);
        }
        assert!(
            slim.iter()
                .all(|d| d.spec.payload.is_empty() && d.spec.request_id.is_none())
        );
        let st = slim[0].status.clone().unwrap_or_default();
        assert_eq!(st.phase, Phase::Running);
        assert!(st.matched_rules.is_empty() && st.message.is_none());
        assert!(slim[1].status.as_ref().is_some_and(is_held), "still held");
        let full = [running.clone(), held.clone()];
        for me in [&running, &held] {
            assert_eq!(waits_behind(me, &slim), waits_behind(me, &full));
        }
        let route_names = |all: &[WebhookDelivery]| {
            held_of_route(&route_r(), all)
                .into_iter()
                .map(|o| o.name)
                .collect::<Vec<_>>()
        };
        assert_eq!(route_names(&slim), route_names(&full));
    }
}

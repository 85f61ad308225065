//! The first two steps of a pass, both pure: whether the delivery may run at all now (gate), and which
//! rules it runs (plan).

use super::state::{self, Why};
use crate::controllers::matching::{EventFacts, matching_rules};
use crate::controllers::seen;
use crate::resources::delivery::{ActionState, WebhookDeliveryStatus};
use crate::resources::route::Rule;
use crate::resources::{WebhookDelivery, WebhookRoute};
use kube::ResourceExt;

/// What the gate looks at. The two lookups are asked only when the gate gets to them, as before.
pub struct GateInput<'a, 'r> {
    /// The delivery, as read at the start of the pass.
    pub delivery: &'a WebhookDelivery,
    /// Its route, if it still exists.
    pub route: Option<&'r WebhookRoute>,
    /// The delivery's status so far.
    pub status: &'a WebhookDeliveryStatus,
    /// Whether this leader pruned a delivery of the same name (the same event).
    pub was_pruned: &'a dyn Fn() -> bool,
    /// Whether an older held delivery of the same route must start first.
    pub waits_behind: &'a dyn Fn() -> bool,
}

/// What the gate let through.
#[derive(Debug)]
pub enum Gate<'a> {
    /// The route is gone: the delivery fails.
    RouteGone,
    /// An earlier delivery of this event ran and was pruned: this one runs nothing.
    Duplicate,
    /// Nothing started yet and the route is suspended: the delivery is held.
    Suspended,
    /// Nothing started yet and an older delivery of the resumed route goes first: look again soon.
    WaitInOrder,
    /// The delivery runs, on this route.
    Open(&'a WebhookRoute),
}

/// Gate: route gone, duplicate, suspended, order, in that order.
pub fn gate<'r>(input: &GateInput<'_, 'r>) -> Gate<'r> {
    let Some(route) = input.route else {
        return Gate::RouteGone;
    };
    let st = input.status;
    if st.matched_rules.is_empty()
        && st.actions.is_empty()
        && st.replay_count() == 0
        && ((input.was_pruned)() || seen::holds(route, &input.delivery.name_any()))
    {
        return Gate::Duplicate;
    }
    if st.matched_rules.is_empty() {
        // Nothing started yet: a suspended route holds the delivery, and a resumed one starts its
        // deliveries in order of receipt.
        if route.spec.suspend {
            return Gate::Suspended;
        }
        if (input.waits_behind)() {
            return Gate::WaitInOrder;
        }
    }
    Gate::Open(route)
}

/// Why a duplicate runs nothing, for its status and Event.
pub fn duplicate_message(d: &WebhookDelivery) -> String {
    format!(
        "event {} already ran on route {} (its delivery was pruned; status.seenEvents of the route): nothing runs again; set {} to run it on purpose",
        d.spec.event_id,
        d.spec.route,
        crate::resources::delivery::ANNOTATION_REPLAY
    )
}

/// The rules the delivery runs: matched on the first pass, then kept, so editing a route never
/// half-reruns an event.
fn rules_of(route: &WebhookRoute, d: &WebhookDelivery, st: &WebhookDeliveryStatus) -> Vec<Rule> {
    if st.matched_rules.is_empty() {
        let facts = EventFacts {
            event_type: &d.spec.event_type,
            new_state: d.spec.new_state.as_deref(),
            old_state: d.spec.old_state.as_deref(),
        };
        matching_rules(&route.spec.rules, facts)
            .into_iter()
            .cloned()
            .collect()
    } else {
        route
            .spec
            .rules
            .iter()
            .filter(|r| st.matched_rules.contains(&r.name))
            .cloned()
            .collect()
    }
}

/// Plan: the rules to run, recorded in `st.matchedRules`; an unfinished action whose rule was removed
/// from the route fails. `None`: no rule matches the event.
pub fn plan(
    route: &WebhookRoute,
    d: &WebhookDelivery,
    st: &mut WebhookDeliveryStatus,
    now: &str,
) -> Option<Vec<Rule>> {
    let rules = rules_of(route, d, st);
    if rules.is_empty() && st.matched_rules.is_empty() {
        return None;
    }
    for gone in st.matched_rules.clone() {
        if rules.iter().any(|r| r.name == gone) {
            continue;
        }
        if let Some(a) = st
            .actions
            .iter_mut()
            .find(|a| a.rule == gone && !a.state.is_done())
        {
            state::transition(
                a,
                ActionState::Failed,
                Some(Why::new(
                    "RuleRemoved",
                    "the rule was removed from the route",
                )),
                now,
            );
        }
    }
    st.matched_rules = rules.iter().map(|r| r.name.clone()).collect();
    Some(rules)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::actions::context::tests::delivery;
    use crate::resources::delivery::ActionStatus;
    use std::cell::Cell;

    /// Route `ios/release` with `rules` (JSON) and `suspend`.
    pub(crate) fn route(rules: serde_json::Value, suspend: bool) -> WebhookRoute {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "asc.webhooks.dev/v1alpha1", "kind": "WebhookRoute",
            "metadata": {"name": "release", "namespace": "ios", "uid": "uid-1"},
            "spec": {"secretRef": {"name": "s", "key": "k"}, "rules": rules, "suspend": suspend}
        }))
        .unwrap()
    }

    /// A Job rule named `name` matching `event_type`, plus `extra` fields.
    pub(crate) fn rule(
        name: &str,
        event_type: &str,
        extra: serde_json::Value,
    ) -> serde_json::Value {
        let mut r = serde_json::json!({
            "name": name,
            "match": {"eventTypes": [event_type]},
            "job": {"template": {"spec": {"template": {"spec": {"containers": []}}}}}
        });
        if let (Some(r), Some(extra)) = (r.as_object_mut(), extra.as_object()) {
            r.extend(extra.clone());
        }
        r
    }

    fn gate_of(
        d: &WebhookDelivery,
        route: Option<&WebhookRoute>,
        st: &WebhookDeliveryStatus,
        pruned: bool,
        behind: bool,
    ) -> (String, bool) {
        let asked_order = Cell::new(false);
        let waits_behind = || {
            asked_order.set(true);
            behind
        };
        let verdict = gate(&GateInput {
            delivery: d,
            route,
            status: st,
            was_pruned: &|| pruned,
            waits_behind: &waits_behind,
        });
        let name = match verdict {
            Gate::RouteGone => "RouteGone",
            Gate::Duplicate => "Duplicate",
            Gate::Suspended => "Suspended",
            Gate::WaitInOrder => "WaitInOrder",
            Gate::Open(_) => "Open",
        };
        (name.to_owned(), asked_order.get())
    }

    fn started() -> WebhookDeliveryStatus {
        WebhookDeliveryStatus {
            matched_rules: vec!["build".into()],
            ..Default::default()
        }
    }

    #[test]
    fn a_delivery_whose_route_is_gone_fails_before_anything_else_is_asked() {
        let d = delivery("build-upload-complete");
        let (verdict, _) = gate_of(&d, None, &Default::default(), true, true);
        assert_eq!(verdict, "RouteGone");
    }

    #[test]
    fn only_a_delivery_that_has_not_started_is_a_duplicate_of_a_pruned_one() {
        let d = delivery("build-upload-complete");
        let r = route(serde_json::json!([]), false);
        let fresh = WebhookDeliveryStatus::default();
        assert_eq!(gate_of(&d, Some(&r), &fresh, true, false).0, "Duplicate");
        assert_eq!(gate_of(&d, Some(&r), &started(), true, false).0, "Open");
        let acted = WebhookDeliveryStatus {
            actions: vec![ActionStatus::default()],
            ..Default::default()
        };
        assert_eq!(gate_of(&d, Some(&r), &acted, true, false).0, "Open");
    }

    #[test]
    fn a_suspended_route_holds_what_has_not_started_and_order_is_asked_only_when_running() {
        let d = delivery("build-upload-complete");
        let suspended = route(serde_json::json!([]), true);
        let fresh = WebhookDeliveryStatus::default();
        assert_eq!(
            gate_of(&d, Some(&suspended), &fresh, false, true),
            ("Suspended".to_owned(), false)
        );
        assert_eq!(
            gate_of(&d, Some(&suspended), &started(), false, true).0,
            "Open"
        );
        let resumed = route(serde_json::json!([]), false);
        assert_eq!(
            gate_of(&d, Some(&resumed), &fresh, false, true),
            ("WaitInOrder".to_owned(), true)
        );
        assert_eq!(
            gate_of(&d, Some(&resumed), &started(), false, true),
            ("Open".to_owned(), false),
            "a started delivery never waits for order"
        );
    }

    #[test]
    fn the_first_plan_matches_the_event_and_later_plans_keep_the_matched_rules() {
        let d = delivery("build-upload-complete");
        let r = route(
            serde_json::json!([
                rule("build", "buildUploadStateUpdated", serde_json::json!({})),
                rule(
                    "review",
                    "appStoreVersionAppVersionStateUpdated",
                    serde_json::json!({})
                )
            ]),
            false,
        );
        let mut st = WebhookDeliveryStatus::default();
        let rules = plan(&r, &d, &mut st, "now").expect("a rule matches");
        assert_eq!(
            rules.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
            ["build"]
        );
        assert_eq!(st.matched_rules, ["build"]);
        let mut kept = WebhookDeliveryStatus {
            matched_rules: vec!["review".into()],
            ..Default::default()
        };
        let rules = plan(&r, &d, &mut kept, "now").expect("kept");
        assert_eq!(
            rules[0].name, "review",
            "matched once, kept however the event looks"
        );
    }

    #[test]
    fn a_plan_fails_the_unfinished_action_of_a_removed_rule_and_no_match_is_none() {
        let d = delivery("build-upload-complete");
        let r = route(
            serde_json::json!([rule(
                "build",
                "buildUploadStateUpdated",
                serde_json::json!({})
            )]),
            false,
        );
        let mut st = WebhookDeliveryStatus {
            matched_rules: vec!["build".into(), "gone".into()],
            actions: vec![ActionStatus {
                rule: "gone".into(),
                state: ActionState::Running,
                ..Default::default()
            }],
            ..Default::default()
        };
        plan(&r, &d, &mut st, "now").expect("build is kept");
        assert_eq!(st.matched_rules, ["build"]);
        assert_eq!(st.actions[0].state, ActionState::Failed);
        assert_eq!(st.actions[0].reason.as_deref(), Some("RuleRemoved"));
        let unmatched = route(
            serde_json::json!([rule(
                "other",
                "appStoreVersionAppVersionStateUpdated",
                serde_json::json!({})
            )]),
            false,
        );
        let mut fresh = WebhookDeliveryStatus::default();
        assert!(plan(&unmatched, &d, &mut fresh, "now").is_none());
    }
}

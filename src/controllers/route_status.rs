//! The pure half of the route controller: is the route usable (and if not, what should a person fix:
//! [`validation`]), what do its deliveries add up to, and which deliveries fall out of the history.

mod validation;

pub use validation::{
    Problem, RouteFacts, problems, referenced_keys, referenced_secrets, resource_kinds,
};

use super::asc_webhook;
use super::delivery_index::DeliverySummary;
use crate::resources::conditions::{self, Condition};
use crate::resources::delivery::Phase;
use crate::resources::route::{DeliveryCounts, LastDelivery};
use crate::resources::{WebhookRoute, WebhookRouteStatus};
use kube::ResourceExt;

/// The `Ready` condition for a list of problems.
pub fn ready_condition(problems: &[Problem]) -> Condition {
    match problems.first() {
        None => Condition::new(
            "Ready",
            true,
            "Ready",
            "references resolve and every rule is valid",
        ),
        Some(first) => {
            let message = problems
                .iter()
                .map(|p| p.message.as_str())
                .collect::<Vec<_>>()
                .join("; ");
            Condition::new("Ready", false, first.reason, message)
        }
    }
}

/// The `Suspended` condition: `Ready` keeps meaning "receives", this one says whether actions run.
pub fn suspended_condition(route: &WebhookRoute) -> Condition {
    if route.spec.suspend {
        Condition::new(
            "Suspended",
            true,
            "RouteSuspended",
            "spec.suspend is true: events are recorded, their actions wait until it is false",
        )
    } else {
        Condition::new("Suspended", false, "Active", "actions run as events arrive")
    }
}

/// The route's phase: what to fix first, else whether it is paused.
pub fn route_phase(route: &WebhookRoute, problems: &[Problem]) -> &'static str {
    if !problems.is_empty() {
        "NotReady"
    } else if route.spec.suspend {
        "Suspended"
    } else {
        "Ready"
    }
}

fn phase(d: &DeliverySummary) -> Phase {
    d.phase
}

fn count(deliveries: &[&DeliverySummary]) -> DeliveryCounts {
    let mut c = DeliveryCounts::default();
    for d in deliveries {
        c.received += 1;
        match phase(d) {
            Phase::Succeeded => c.succeeded += 1,
            Phase::Failed => c.failed += 1,
            Phase::NoMatch => c.no_match += 1,
            Phase::Duplicate => c.duplicate += 1,
            Phase::Pending | Phase::Running => c.in_progress += 1,
        }
    }
    c
}

fn add(a: &DeliveryCounts, b: &DeliveryCounts) -> DeliveryCounts {
    DeliveryCounts {
        received: a.received + b.received,
        succeeded: a.succeeded + b.succeeded,
        failed: a.failed + b.failed,
        no_match: a.no_match + b.no_match,
        in_progress: a.in_progress + b.in_progress,
        duplicate: a.duplicate + b.duplicate,
    }
}

fn received_key(d: &DeliverySummary) -> (&str, &str) {
    (&d.received_at, &d.name)
}

/// The finished deliveries beyond `limit`, oldest first: what pruning deletes.
pub fn to_prune<'a>(deliveries: &[&'a DeliverySummary], limit: i32) -> Vec<&'a DeliverySummary> {
    let excess = deliveries
        .len()
        .saturating_sub(usize::try_from(limit.max(1)).unwrap_or(1));
    let mut finished: Vec<&DeliverySummary> = deliveries
        .iter()
        .copied()
        .filter(|d| phase(d).is_terminal() && !d.replay_wanted)
        .collect();
    finished.sort_by_key(|d| received_key(d));
    finished.truncate(excess);
    finished
}

/// The route's status after pruning `pruned_now` from `deliveries` (which still includes them).
pub fn desired_status(
    route: &WebhookRoute,
    deliveries: &[&DeliverySummary],
    pruned_now: &[&DeliverySummary],
    problems: &[Problem],
    public_url: Option<&str>,
    now: &str,
) -> WebhookRouteStatus {
    let prev = route.status.clone().unwrap_or_default();
    let pruned_before = prev.pruned.clone().unwrap_or_default();
    // `deliveries` still holds the ones pruned now, so they are counted there, not twice.
    let totals = add(
        &count(deliveries),
        &DeliveryCounts {
            in_progress: 0,
            ..pruned_before.clone()
        },
    );
    let pruned = add(&pruned_before, &count(pruned_now));
    let last_delivery = deliveries
        .iter()
        .max_by_key(|d| received_key(d))
        .map(|d| LastDelivery {
            name: d.name.clone(),
            event_type: d.event_type.to_string(),
            new_state: d.new_state.as_deref().map(str::to_owned),
            phase: Some(phase(d).as_str().to_owned()),
            received_at: d.received_at.to_string(),
        })
        .or(prev.last_delivery.clone());
    let last_ping_time = deliveries
        .iter()
        .filter(|d| &*d.event_type == "webhookPingCreated")
        .map(|d| d.received_at.to_string())
        .chain(prev.last_ping_time.clone())
        .max();
    let ns = route.namespace().unwrap_or_default();
    WebhookRouteStatus {
        url: public_url.map(|base| {
            format!(
                "{}/hooks/{ns}/{}",
                base.trim_end_matches('/'),
                route.name_any()
            )
        }),
        phase: Some(route_phase(route, problems).to_owned()),
        conditions: conditions::merge(
            &prev.conditions,
            vec![ready_condition(problems), suspended_condition(route)],
            route.metadata.generation,
            now,
        )
        .into_iter()
        .filter(|c| !asc_webhook::state::OWNED_CONDITIONS.contains(&c.type_.as_str()))
        .collect(),
        deliveries: totals,
        last_delivery,
        pruned: (pruned != DeliveryCounts::default()).then_some(pruned),
        last_ping_time,
        observed_generation: route.metadata.generation,
        app_store_connect: None,
        // Written before the deletes: an event pruned now is never without its record.
        seen_events: super::seen::remember(
            &prev.seen_events,
            pruned_now.iter().map(|d| d.name.as_str()),
        ),
        release_timing: crate::timing::fold_deliveries(
            &prev.release_timing,
            &prev.seen_events,
            deliveries
                .iter()
                .filter_map(|d| Some((d.name.as_str(), d.timing.as_deref()?))),
        ),
    }
}

/// The part of a route's status this controller writes: without what the App Store Connect webhook
/// reconciler owns (`appStoreConnect` and its conditions), which this controller never applies.
pub fn route_controller_part(status: &WebhookRouteStatus) -> WebhookRouteStatus {
    WebhookRouteStatus {
        app_store_connect: None,
        conditions: status
            .conditions
            .iter()
            .filter(|c| !asc_webhook::state::OWNED_CONDITIONS.contains(&c.type_.as_str()))
            .cloned()
            .collect(),
        ..status.clone()
    }
}

#[cfg(test)]
mod tests;

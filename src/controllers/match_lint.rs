//! Values in a rule's `match` that no documented event has: an event type Apple does not document
//! (`buildUploadStateUpdatedd`) or a state no event type reports (`COMPLET`). Apple adds types and states
//! without notice, so such a route stays Ready and the value stays in the filter; but a typo would never
//! fire, so the route's `Ready` message, a Warning Event and `doctor` name it with the nearest known value.
//! Pure.

use crate::asc::webhooks::{EVENT_TYPES, subscription_name};
use crate::resources::{WebhookRoute, WebhookRouteStatus};

/// The test ping's type, which webhooks do not subscribe to but rules may name.
const PING: [&str; 2] = ["webhookPingCreated", "WEBHOOK_PING_CREATED"];

/// Every state Apple documents for the events webhooks deliver: build upload and background asset
/// version states, App Store version states (old and new names), TestFlight external build states, and
/// background asset release states.
pub const KNOWN_STATES: &[&str] = &[
    // Build uploads and background asset versions.
    "AWAITING_UPLOAD",
    "PROCESSING",
    "FAILED",
    "COMPLETE",
    // App Store versions (appVersionState, and the older appStoreState names).
    "ACCEPTED",
    "DEVELOPER_REJECTED",
    "DEVELOPER_REMOVED_FROM_SALE",
    "IN_REVIEW",
    "INVALID_BINARY",
    "METADATA_REJECTED",
    "NOT_APPLICABLE",
    "PENDING_APPLE_RELEASE",
    "PENDING_CONTRACT",
    "PENDING_DEVELOPER_RELEASE",
    "PREORDER_READY_FOR_SALE",
    "PREPARE_FOR_SUBMISSION",
    "PROCESSING_FOR_APP_STORE",
    "PROCESSING_FOR_DISTRIBUTION",
    "READY_FOR_DISTRIBUTION",
    "READY_FOR_REVIEW",
    "READY_FOR_SALE",
    "REJECTED",
    "REMOVED_FROM_SALE",
    "REPLACED_WITH_NEW_VERSION",
    "WAITING_FOR_EXPORT_COMPLIANCE",
    "WAITING_FOR_REVIEW",
    // TestFlight external builds.
    "BETA_APPROVED",
    "BETA_REJECTED",
    "EXPIRED",
    "IN_BETA_REVIEW",
    "IN_BETA_TESTING",
    "IN_EXPORT_COMPLIANCE_REVIEW",
    "MISSING_EXPORT_COMPLIANCE",
    "PROCESSING_EXCEPTION",
    "READY_FOR_BETA_SUBMISSION",
    "READY_FOR_BETA_TESTING",
    "WAITING_FOR_BETA_REVIEW",
    // Background asset releases.
    "PROCESSING_FOR_TESTING",
    "READY_FOR_TESTING",
];

/// One value of a rule's filter that no documented event has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unknown {
    /// The rule's name.
    pub rule: String,
    /// `match.eventTypes`, `match.newStates` or `match.oldStates`.
    pub field: &'static str,
    /// The value as written.
    pub value: String,
    /// The closest documented value, when one is close enough to be a likely typo.
    pub nearest: Option<String>,
}

impl std::fmt::Display for Unknown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = if self.field == "match.eventTypes" {
            "an event type Apple does not document"
        } else {
            "a state no documented event type has"
        };
        write!(
            f,
            "rule {}: {} {:?} is {what}",
            self.rule, self.field, self.value
        )?;
        match &self.nearest {
            Some(n) => write!(f, " (did you mean {n:?}?)"),
            None => Ok(()),
        }
    }
}

/// Every filter value of `route` that no documented event has, in rule order.
pub fn unknown_values(route: &WebhookRoute) -> Vec<Unknown> {
    let mut out = Vec::new();
    for rule in &route.spec.rules {
        let Some(filter) = &rule.filter else { continue };
        let mut note = |field: &'static str, value: &String, nearest: Option<String>| {
            out.push(Unknown {
                rule: rule.name.clone(),
                field,
                value: value.clone(),
                nearest,
            })
        };
        for t in &filter.event_types {
            if !known_event_type(t) {
                note("match.eventTypes", t, nearest_event_type(t));
            }
        }
        for (field, states) in [
            ("match.newStates", &filter.new_states),
            ("match.oldStates", &filter.old_states),
        ] {
            for s in states {
                if !KNOWN_STATES.iter().any(|k| k.eq_ignore_ascii_case(s)) {
                    note(
                        field,
                        s,
                        nearest(s, KNOWN_STATES.iter().map(|k| k.to_string())),
                    );
                }
            }
        }
    }
    out
}

/// The unknown values as one sentence for the `Ready` message and the Event.
pub fn describe(unknown: &[Unknown]) -> String {
    let each: Vec<String> = unknown.iter().map(Unknown::to_string).collect();
    format!(
        "{}; accepted, as Apple adds types and states, but such a rule fires only for exactly that value",
        each.join("; ")
    )
}

/// The `Ready` reason of a route that is Ready but names a value no documented event has.
pub const REASON: &str = "UnknownMatchValue";

/// Names `unknown` in the route's `Ready` condition when it is True (a route that is not Ready has more
/// pressing things to say). Its status and transition time stay: only reason and message change.
pub fn name_in_ready(status: &mut WebhookRouteStatus, unknown: &[Unknown]) {
    if unknown.is_empty() {
        return;
    }
    if let Some(ready) = status
        .conditions
        .iter_mut()
        .find(|c| c.type_ == "Ready" && c.is_true())
    {
        ready.reason = REASON.to_owned();
        ready.message = crate::text::truncate(
            &format!("references resolve; {}", describe(unknown)),
            MESSAGE_LIMIT,
        );
    }
}

/// Longest `Ready` message written (a route may hold many rules).
const MESSAGE_LIMIT: usize = 1800;

fn known_event_type(t: &str) -> bool {
    subscription_name(t).is_some() || PING.contains(&t)
}

/// The documented type closest to `t`, in the spelling `t` uses (camelCase or SCREAMING_SNAKE).
fn nearest_event_type(t: &str) -> Option<String> {
    let snake = t.contains('_') || t.chars().all(|c| !c.is_ascii_lowercase());
    let names = EVENT_TYPES
        .iter()
        .copied()
        .chain([PING[1]])
        .map(|n| if snake { n.to_owned() } else { camel(n) });
    nearest(t, names)
}

/// `BUILD_UPLOAD_STATE_UPDATED` as Apple's payloads spell it: `buildUploadStateUpdated`.
fn camel(snake: &str) -> String {
    let mut out = String::with_capacity(snake.len());
    for (i, word) in snake.split('_').enumerate() {
        let lower = word.to_ascii_lowercase();
        if i == 0 {
            out.push_str(&lower);
        } else {
            let mut chars = lower.chars();
            if let Some(first) = chars.next() {
                out.push(first.to_ascii_uppercase());
                out.extend(chars);
            }
        }
    }
    out
}

/// The candidate closest to `value` by edit distance (case-insensitive), if within a third of its
/// length: further off, a suggestion would mislead more than help.
fn nearest(value: &str, candidates: impl Iterator<Item = String>) -> Option<String> {
    let value_lower = value.to_ascii_lowercase();
    let (distance, best) = candidates
        .map(|c| {
            (
                strsim::levenshtein(&value_lower, &c.to_ascii_lowercase()),
                c,
            )
        })
        .min_by_key(|(d, _)| *d)?;
    (distance <= value.len().div_ceil(3).max(1)).then_some(best)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(rules: serde_json::Value) -> WebhookRoute {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "asc.webhooks.dev/v1alpha1", "kind": "WebhookRoute",
            "metadata": {"name": "r", "namespace": "ns"},
            "spec": {"secretRef": {"name": "s", "key": "k"}, "rules": rules}
        }))
        .unwrap()
    }

    #[test]
    fn documented_types_and_states_in_either_spelling_are_known() {
        let r = route(serde_json::json!([{"name": "a", "match": {
            "eventTypes": ["buildUploadStateUpdated", "APP_STORE_VERSION_APP_VERSION_STATE_UPDATED",
                "webhookPingCreated", "backgroundAssetVersionStateUpdated"],
            "newStates": ["COMPLETE", "ready_for_distribution"], "oldStates": ["PROCESSING"]}}]));
        assert_eq!(unknown_values(&r), vec![]);
    }

    #[test]
    fn a_typo_is_named_with_the_nearest_known_value_in_the_spelling_used() {
        let r = route(serde_json::json!([{"name": "notify", "match": {
            "eventTypes": ["buildUploadStateUpdatedd", "BUILD_UPLOAD_STATE_UPDATE"],
            "newStates": ["COMPLET"], "oldStates": ["SOMETHING_APPLE_ADDS_LATER"]}}]));
        let found = unknown_values(&r);
        let pairs: Vec<(&str, &str, Option<&str>)> = found
            .iter()
            .map(|u| (u.field, u.value.as_str(), u.nearest.as_deref()))
            .collect();
        assert_eq!(
            pairs,
            vec![
                (
                    "match.eventTypes",
                    "buildUploadStateUpdatedd",
                    Some("buildUploadStateUpdated")
                ),
                (
                    "match.eventTypes",
                    "BUILD_UPLOAD_STATE_UPDATE",
                    Some("BUILD_UPLOAD_STATE_UPDATED")
                ),
                ("match.newStates", "COMPLET", Some("COMPLETE")),
                ("match.oldStates", "SOMETHING_APPLE_ADDS_LATER", None),
            ]
        );
        let text = describe(&found);
        assert!(
            text.contains(
                r#"rule notify: match.eventTypes "buildUploadStateUpdatedd" is an event type Apple does not document (did you mean "buildUploadStateUpdated"?)"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"match.newStates "COMPLET" is a state no documented event type has (did you mean "COMPLETE"?)"#), "{text}");
    }

    #[test]
    fn a_ready_route_names_the_unknown_value_and_keeps_its_transition_time() {
        let unknown = unknown_values(&route(serde_json::json!([{"name": "n", "match": {
            "newStates": ["COMPLET"]}}])));
        let mut status = crate::resources::WebhookRouteStatus {
            conditions: vec![crate::resources::conditions::Condition::new(
                "Ready",
                true,
                "Ready",
                "references resolve and every rule is valid",
            )],
            ..Default::default()
        };
        status.conditions[0].last_transition_time = "t0".into();
        let mut unchanged = status.clone();
        name_in_ready(&mut unchanged, &[]);
        assert_eq!(unchanged, status);
        name_in_ready(&mut status, &unknown);
        let ready = &status.conditions[0];
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("True", REASON)
        );
        assert!(ready.message.contains(r#""COMPLET""#) && ready.message.contains(r#""COMPLETE""#));
        assert_eq!(ready.last_transition_time, "t0");
        let mut not_ready = crate::resources::WebhookRouteStatus {
            conditions: vec![crate::resources::conditions::Condition::new(
                "Ready",
                false,
                "SecretNotFound",
                "x",
            )],
            ..Default::default()
        };
        name_in_ready(&mut not_ready, &unknown);
        assert_eq!(not_ready.conditions[0].reason, "SecretNotFound");
    }

    #[test]
    fn every_webhook_event_type_spells_as_apple_sends_it() {
        assert_eq!(
            camel("BUILD_UPLOAD_STATE_UPDATED"),
            "buildUploadStateUpdated"
        );
        for t in EVENT_TYPES {
            assert!(known_event_type(&camel(t)), "{t}");
        }
    }
}

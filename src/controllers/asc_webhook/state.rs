//! The pure status half of the App Store Connect webhook reconciler: the `WebhookRegistered` and
//! `WebhookVerified` conditions and the status patch it applies under its own field manager.

use crate::resources::WebhookRoute;
use crate::resources::conditions::{self, Condition, UNKNOWN};
use crate::resources::route_asc::{AppStoreConnectStatus, WEBHOOK_REGISTERED, WEBHOOK_VERIFIED};
use kube::ResourceExt;
use serde_json::{Value, json};
use std::time::Duration;

/// The conditions this reconciler owns; the route controller never writes them.
pub const OWNED_CONDITIONS: [&str; 2] = [WEBHOOK_REGISTERED, WEBHOOK_VERIFIED];

/// A condition with status `Unknown`.
pub fn unknown(type_: &str, reason: &str, message: impl Into<String>) -> Condition {
    Condition {
        status: UNKNOWN.to_owned(),
        ..Condition::new(type_, false, reason, message)
    }
}

/// `WebhookVerified` from when the last ping was requested and when the receiver last recorded one.
pub fn verified_condition(
    asc: &AppStoreConnectStatus,
    last_ping_time: Option<&str>,
    url: &str,
    now: jiff::Timestamp,
    timeout: Duration,
) -> (Condition, Option<Duration>) {
    let parse = |s: Option<&str>| s.and_then(crate::time::parse_ts);
    let Some(requested) = parse(asc.ping_requested_time.as_deref()) else {
        return (
            unknown(
                WEBHOOK_VERIFIED,
                "PingNotSent",
                "no test ping has been requested since the webhook was registered",
            ),
            None,
        );
    };
    // Timestamps are whole seconds: a ping recorded in the second it was requested counts.
    if parse(last_ping_time).is_some_and(|received| received >= requested) {
        return (
            Condition::new(
                WEBHOOK_VERIFIED,
                true,
                "PingReceived",
                format!(
                    "a ping App Store Connect sent after the last change reached the receiver at {url}"
                ),
            ),
            None,
        );
    }
    let waited = Duration::try_from(now.duration_since(requested)).unwrap_or(Duration::ZERO);
    match timeout.checked_sub(waited) {
        Some(left) if !left.is_zero() => (
            unknown(
                WEBHOOK_VERIFIED,
                "PingSent",
                format!(
                    "waiting for the test ping requested at {} to reach {url}",
                    crate::time::format_ts(requested)
                ),
            ),
            Some(left),
        ),
        _ => (
            Condition::new(
                WEBHOOK_VERIFIED,
                false,
                "PingNotReceived",
                format!(
                    "App Store Connect accepted a test ping at {} but it has not reached the receiver after {} s: \
                     check that {url} is reachable from the internet (DNS, firewall), that the Ingress routes \
                     /hooks to the operator's Service, and that its TLS certificate is valid and publicly \
                     trusted; App Store Connect's delivery log (Users and Access → Integrations → Webhooks) \
                     shows the error it got",
                    crate::time::format_ts(requested),
                    waited.as_secs()
                ),
            ),
            None,
        ),
    }
}

/// Only this reconciler's conditions out of a route's status.
pub fn owned_conditions(route: &WebhookRoute) -> Vec<Condition> {
    route
        .status
        .as_ref()
        .map(|s| {
            s.conditions
                .iter()
                .filter(|c| OWNED_CONDITIONS.contains(&c.type_.as_str()))
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// The conditions after `fresh`, with transition times kept unless a status flipped; only owned types.
pub fn next_conditions(
    route: &WebhookRoute,
    previous: &[Condition],
    fresh: Vec<Condition>,
    now: &str,
) -> Vec<Condition> {
    conditions::merge(previous, fresh, route.metadata.generation, now)
        .into_iter()
        .filter(|c| OWNED_CONDITIONS.contains(&c.type_.as_str()))
        .collect()
}

/// The server-side-apply body for this reconciler's fields; `None` parts are removed from the object.
pub fn status_patch(asc: Option<&AppStoreConnectStatus>, conditions: &[Condition]) -> Value {
    let mut status = serde_json::Map::new();
    if let Some(asc) = asc {
        status.insert("appStoreConnect".into(), json!(asc));
    }
    // Omitted rather than empty: an apply that leaves a field out gives it up, which is how this
    // reconciler removes its fields when a route stops asking for a webhook.
    if !conditions.is_empty() {
        status.insert("conditions".into(), json!(conditions));
    }
    let mut patch =
        json!({"apiVersion": crate::resources::names::API_VERSION, "kind": "WebhookRoute"});
    if !status.is_empty() {
        patch["status"] = Value::Object(status);
    }
    patch
}

/// Whether `route` needs this controller: its webhook is managed, or traces of earlier management (the
/// finalizer, the status part) remain to be removed. Other routes never enter its queue, so a thousand
/// manual routes cost it no reconcile and no room in its scheduler.
pub fn concerns(route: &WebhookRoute) -> bool {
    route.spec.app_store_connect.is_some()
        || route
            .finalizers()
            .iter()
            .any(|f| f == crate::resources::names::FINALIZER_ASC_WEBHOOK)
        || route.status.as_ref().is_some_and(|s| {
            s.app_store_connect.is_some()
                || s.conditions
                    .iter()
                    .any(|c| OWNED_CONDITIONS.contains(&c.type_.as_str()))
        })
}

/// How old the recorded catch-up progress may grow before a pass that only moved it is written.
const PROGRESS_RECORD_EVERY: Duration = Duration::from_secs(3600);

/// Whether `now_asc` differs from what the route's status records only in catch-up progress (when the
/// last pass ended, how far the log was read) and that record is younger than [`PROGRESS_RECORD_EVERY`].
/// Such a write is skipped: 1,000 idle routes making a pass every ten minutes would otherwise cost the API
/// server 1.7 writes a second. The cost: after a restart or a leader change (which make a pass at once
/// anyway) up to an hour more of Apple's delivery log is read again; names keep that idempotent. Pure.
pub fn only_progress_moved(
    recorded: Option<&AppStoreConnectStatus>,
    now_asc: Option<&AppStoreConnectStatus>,
    now: jiff::Timestamp,
) -> bool {
    let (Some(recorded), Some(now_asc)) = (recorded, now_asc) else {
        return false;
    };
    let (Some(was), Some(is)) = (&recorded.catch_up, &now_asc.catch_up) else {
        return false;
    };
    let fresh = was
        .last_check_time
        .as_deref()
        .and_then(crate::time::parse_ts)
        .is_some_and(|t| {
            Duration::try_from(now.duration_since(t)).is_ok_and(|age| age < PROGRESS_RECORD_EVERY)
        });
    let without_progress = |a: &AppStoreConnectStatus| {
        let mut a = a.clone();
        if let Some(c) = a.catch_up.as_mut() {
            c.last_check_time = None;
            c.checkpoint = None;
        }
        a
    };
    fresh && was != is && without_progress(recorded) == without_progress(now_asc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pass_that_only_moved_recent_progress_is_not_written_and_anything_else_is() {
        let now = jiff::Timestamp::now();
        let ago = |secs: i64| crate::time::format_ts(now - jiff::SignedDuration::from_secs(secs));
        let status = |last: &str, checkpoint: &str, recovered: i64| AppStoreConnectStatus {
            webhook_id: Some("w1".into()),
            catch_up: Some(crate::resources::route_asc::CatchUpStatus {
                last_check_time: Some(last.into()),
                checkpoint: Some(checkpoint.into()),
                recovered,
                ..Default::default()
            }),
            ..Default::default()
        };
        let recorded = status(&ago(600), "c1", 0);
        let moved = status(&ago(0), "c2", 0);
        assert!(only_progress_moved(Some(&recorded), Some(&moved), now));
        assert!(
            !only_progress_moved(Some(&recorded), Some(&status(&ago(0), "c2", 1)), now),
            "an event recovered is written"
        );
        let old = status(&ago(3700), "c1", 0);
        assert!(
            !only_progress_moved(Some(&old), Some(&moved), now),
            "progress recorded over an hour ago is written"
        );
        assert!(!only_progress_moved(None, Some(&moved), now));
        assert!(
            !only_progress_moved(Some(&recorded), Some(&recorded), now),
            "nothing moved"
        );
    }

    #[test]
    fn only_managed_routes_and_routes_with_traces_of_management_concern_the_webhook_controller() {
        let manual = crate::receiver::record::tests::route();
        assert!(!concerns(&manual));
        let mut managed = manual.clone();
        managed.spec.app_store_connect = Some(Default::default());
        assert!(concerns(&managed));
        let mut finalized = manual.clone();
        finalized.metadata.finalizers =
            Some(vec![crate::resources::names::FINALIZER_ASC_WEBHOOK.into()]);
        assert!(concerns(&finalized));
        let mut with_status = manual.clone();
        with_status.status = Some(crate::resources::WebhookRouteStatus {
            app_store_connect: Some(Box::default()),
            ..Default::default()
        });
        assert!(concerns(&with_status));
        let mut with_condition = manual.clone();
        with_condition.status = Some(crate::resources::WebhookRouteStatus {
            conditions: vec![Condition {
                type_: WEBHOOK_VERIFIED.into(),
                ..Default::default()
            }],
            ..Default::default()
        });
        assert!(concerns(&with_condition));
    }

    fn at(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    fn requested(t: &str) -> AppStoreConnectStatus {
        AppStoreConnectStatus {
            ping_requested_time: Some(t.into()),
            ..Default::default()
        }
    }

    const FIVE_MIN: Duration = Duration::from_secs(300);

    #[test]
    fn a_ping_recorded_after_the_request_verifies() {
        let (c, next) = verified_condition(
            &requested("2026-12-01T10:00:00Z"),
            Some("2026-12-01T10:00:00Z"),
            "u",
            at("2026-12-01T10:00:01Z"),
            FIVE_MIN,
        );
        assert!(c.is_true(), "{c:?}");
        assert_eq!(next, None);
    }

    #[test]
    fn an_older_ping_does_not_count_and_waiting_is_unknown() {
        let (c, next) = verified_condition(
            &requested("2026-12-01T10:00:00Z"),
            Some("2026-12-01T09:59:00Z"),
            "u",
            at("2026-12-01T10:01:00Z"),
            FIVE_MIN,
        );
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("Unknown", "PingSent")
        );
        assert_eq!(next, Some(Duration::from_secs(240)));
    }

    #[test]
    fn no_ping_after_the_timeout_is_false_and_points_at_the_likely_causes() {
        let (c, _) = verified_condition(
            &requested("2026-12-01T10:00:00Z"),
            None,
            "https://h/hooks/ios/r",
            at("2026-12-01T10:05:00Z"),
            FIVE_MIN,
        );
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "PingNotReceived")
        );
        for hint in ["internet", "Ingress", "TLS", "https://h/hooks/ios/r"] {
            assert!(c.message.contains(hint), "{hint}: {}", c.message);
        }
    }

    #[test]
    fn the_patch_carries_type_meta_and_only_owned_fields() {
        let p = status_patch(None, &[]);
        assert_eq!(p["kind"], "WebhookRoute");
        assert!(
            p.get("status").is_none(),
            "nothing owned: every field given up"
        );
        let asc = AppStoreConnectStatus {
            webhook_id: Some("w".into()),
            ..Default::default()
        };
        let p = status_patch(Some(&asc), &[]);
        assert_eq!(p["status"]["appStoreConnect"]["webhookId"], "w");
        assert!(p["status"].get("url").is_none() && p["status"].get("deliveries").is_none());
    }
}

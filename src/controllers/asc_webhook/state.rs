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

/// How a test ping is proven: how long to wait for it, and how an unanswered one is requested again.
/// Apple does not document whether it retries a ping delivery that failed (a connection closed under
/// it, a 503), so each delivery is treated as possibly the only one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PingPolicy {
    /// After this long without the ping, `WebhookVerified` turns `False`.
    pub verify_timeout: Duration,
    /// The first re-send is due this long after the request; each later one waits twice as long as the
    /// one before (30 s → at 30 s, 90 s, 210 s).
    pub resend_after: Duration,
    /// Re-sends per request at most; none is made at or after the verify timeout.
    pub max_resends: i32,
}

impl Default for PingPolicy {
    fn default() -> Self {
        PingPolicy {
            verify_timeout: Duration::from_secs(5 * 60),
            resend_after: Duration::from_secs(30),
            max_resends: 3,
        }
    }
}

fn parse(s: Option<&str>) -> Option<jiff::Timestamp> {
    s.and_then(crate::time::parse_ts)
}

/// Whether a ping recorded at `last_ping_time` answers the request in `asc`. Timestamps are whole
/// seconds: a ping recorded in the second it was requested counts.
fn answered(asc: &AppStoreConnectStatus, last_ping_time: Option<&str>) -> bool {
    match (
        parse(asc.ping_requested_time.as_deref()),
        parse(last_ping_time),
    ) {
        (Some(requested), Some(received)) => received >= requested,
        _ => false,
    }
}

/// When the next re-send of the requested ping is due, if one is still allowed: `resend_after ×
/// (2^(n+1) − 1)` after the request for the (n+1)-th, and only before the verify timeout.
pub fn next_resend_at(
    asc: &AppStoreConnectStatus,
    last_ping_time: Option<&str>,
    policy: &PingPolicy,
) -> Option<jiff::Timestamp> {
    let requested = parse(asc.ping_requested_time.as_deref())?;
    let done = asc.ping_resends.unwrap_or(0).max(0);
    if done >= policy.max_resends || answered(asc, last_ping_time) || policy.resend_after.is_zero()
    {
        return None;
    }
    let factor = 2_u32.checked_pow(u32::try_from(done + 1).ok()?)? - 1;
    let after = policy.resend_after.checked_mul(factor)?;
    (after < policy.verify_timeout)
        .then(|| requested.checked_add(after).ok())
        .flatten()
}

/// Whether the requested ping has not arrived and a re-send is due at `now`.
pub fn resend_due(
    asc: &AppStoreConnectStatus,
    last_ping_time: Option<&str>,
    now: jiff::Timestamp,
    policy: &PingPolicy,
) -> bool {
    next_resend_at(asc, last_ping_time, policy).is_some_and(|at| at <= now)
}

/// `WebhookVerified` from when the ping was requested (and re-sent) and when the receiver last recorded
/// one, with how long until the verdict or the next re-send is due (a re-send already due is not
/// counted: the caller sends it, or retries after its backoff).
pub fn verified_condition(
    asc: &AppStoreConnectStatus,
    last_ping_time: Option<&str>,
    url: &str,
    now: jiff::Timestamp,
    policy: &PingPolicy,
) -> (Condition, Option<Duration>) {
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
    if answered(asc, last_ping_time) {
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
    let until = |t: jiff::Timestamp| Duration::try_from(t.duration_since(now)).ok();
    let waited = Duration::try_from(now.duration_since(requested)).unwrap_or(Duration::ZERO);
    let resends = asc.ping_resends.unwrap_or(0).max(0);
    let requested_at = crate::time::format_ts(requested);
    match policy.verify_timeout.checked_sub(waited) {
        Some(left) if !left.is_zero() => {
            let resend = next_resend_at(asc, last_ping_time, policy)
                .and_then(until)
                .filter(|d| !d.is_zero());
            let next = [Some(left), resend].into_iter().flatten().min();
            (waiting(asc, &requested_at, resends, url, policy), next)
        }
        _ => (
            Condition::new(
                WEBHOOK_VERIFIED,
                false,
                "PingNotReceived",
                format!(
                    "App Store Connect accepted a test ping at {requested_at}{} but none has reached the receiver after {} s: \
                     check that {url} is reachable from the internet (DNS, firewall), that the Ingress routes \
                     /hooks to the operator's Service, and that its TLS certificate is valid and publicly \
                     trusted; App Store Connect's delivery log (Users and Access → Integrations → Webhooks) \
                     shows the error it got",
                    match resends {
                        0 => String::new(),
                        n => format!(" (and again {n} time(s))"),
                    },
                    waited.as_secs()
                ),
            ),
            None,
        ),
    }
}

/// `WebhookVerified` while the ping is awaited: `PingSent`, or `PingResent` once it was requested again.
fn waiting(
    asc: &AppStoreConnectStatus,
    requested_at: &str,
    resends: i32,
    url: &str,
    policy: &PingPolicy,
) -> Condition {
    if resends == 0 {
        return unknown(
            WEBHOOK_VERIFIED,
            "PingSent",
            format!("waiting for the test ping requested at {requested_at} to reach {url}"),
        );
    }
    unknown(
        WEBHOOK_VERIFIED,
        "PingResent",
        format!(
            "the test ping requested at {requested_at} has not reached {url}; requested again {resends} of at \
             most {} time(s), last at {}; turns False {} s after the first request if none arrives",
            policy.max_resends,
            asc.ping_resent_time.as_deref().unwrap_or("?"),
            policy.verify_timeout.as_secs()
        ),
    )
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

    const FIVE_MIN: &PingPolicy = &PingPolicy {
        verify_timeout: Duration::from_secs(300),
        resend_after: Duration::from_secs(30),
        max_resends: 3,
    };

    fn resent(t: &str, resends: i32, last: &str) -> AppStoreConnectStatus {
        AppStoreConnectStatus {
            ping_resends: Some(resends),
            ping_resent_time: Some(last.into()),
            ..requested(t)
        }
    }

    #[test]
    fn an_unanswered_ping_is_resent_with_doubling_waits_a_bounded_number_of_times_before_the_verdict()
     {
        let at_of = |asc: &AppStoreConnectStatus| {
            next_resend_at(asc, None, FIVE_MIN).map(crate::time::format_ts)
        };
        let first = requested("2026-12-01T10:00:00Z");
        assert_eq!(at_of(&first).as_deref(), Some("2026-12-01T10:00:30Z"));
        let once = resent("2026-12-01T10:00:00Z", 1, "2026-12-01T10:00:30Z");
        assert_eq!(at_of(&once).as_deref(), Some("2026-12-01T10:01:30Z"));
        let twice = resent("2026-12-01T10:00:00Z", 2, "2026-12-01T10:01:30Z");
        assert_eq!(at_of(&twice).as_deref(), Some("2026-12-01T10:03:30Z"));
        let thrice = resent("2026-12-01T10:00:00Z", 3, "2026-12-01T10:03:30Z");
        assert_eq!(at_of(&thrice), None, "at most three re-sends");
        // A fourth would be due at 450 s, after a verdict at 300 s: never sent, whatever the limit.
        let generous = PingPolicy {
            max_resends: 10,
            ..*FIVE_MIN
        };
        assert_eq!(next_resend_at(&thrice, None, &generous), None);

        assert!(!resend_due(
            &first,
            None,
            at("2026-12-01T10:00:29Z"),
            FIVE_MIN
        ));
        assert!(resend_due(
            &first,
            None,
            at("2026-12-01T10:00:30Z"),
            FIVE_MIN
        ));
        assert!(
            !resend_due(
                &first,
                Some("2026-12-01T10:00:01Z"),
                at("2026-12-01T10:00:31Z"),
                FIVE_MIN
            ),
            "a ping that arrived is never sent again"
        );
        let off = PingPolicy {
            max_resends: 0,
            ..*FIVE_MIN
        };
        assert!(!resend_due(&first, None, at("2026-12-01T10:04:00Z"), &off));
    }

    #[test]
    fn a_resent_ping_says_so_and_the_next_look_is_the_next_resend_or_the_verdict() {
        let (c, next) = verified_condition(
            &requested("2026-12-01T10:00:00Z"),
            None,
            "u",
            at("2026-12-01T10:00:10Z"),
            FIVE_MIN,
        );
        assert_eq!(c.reason, "PingSent");
        assert_eq!(next, Some(Duration::from_secs(20)), "the first re-send");
        let asc = resent("2026-12-01T10:00:00Z", 1, "2026-12-01T10:00:30Z");
        let (c, next) = verified_condition(&asc, None, "u", at("2026-12-01T10:00:31Z"), FIVE_MIN);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("Unknown", "PingResent")
        );
        for part in [
            "requested again 1 of at most 3",
            "2026-12-01T10:00:30Z",
            "300 s",
        ] {
            assert!(c.message.contains(part), "{part}: {}", c.message);
        }
        assert_eq!(next, Some(Duration::from_secs(59)));
        let asc = resent("2026-12-01T10:00:00Z", 3, "2026-12-01T10:03:30Z");
        let (c, _) = verified_condition(&asc, None, "u", at("2026-12-01T10:05:00Z"), FIVE_MIN);
        assert_eq!(c.reason, "PingNotReceived");
        assert!(c.message.contains("and again 3 time(s)"), "{}", c.message);
        let (c, _) = verified_condition(
            &asc,
            Some("2026-12-01T10:04:00Z"),
            "u",
            at("2026-12-01T10:05:00Z"),
            FIVE_MIN,
        );
        assert_eq!(c.reason, "PingReceived", "a re-sent ping verifies");
    }

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

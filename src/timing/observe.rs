//! The state change a recorded delivery reports, for the timing fold. Pure.

use super::Observation;
use crate::resources::WebhookDelivery;
use crate::resources::delivery::{ActionState, ActionStatus, Phase};
use crate::resources::release_timing::{ItemKind, TimeSource};
use serde::Deserialize;
use std::borrow::Cow;

/// The one field of a payload the fold needs: `data.attributes.timestamp`.
#[derive(Deserialize)]
struct Payload<'a> {
    #[serde(borrow)]
    data: Option<Data<'a>>,
}

#[derive(Deserialize)]
struct Data<'a> {
    #[serde(borrow)]
    attributes: Option<Attributes<'a>>,
}

#[derive(Deserialize)]
struct Attributes<'a> {
    #[serde(borrow, default)]
    timestamp: Option<Cow<'a, str>>,
}

/// Apple's `timestamp` of the event in `payload`, when it has a readable one.
pub fn apple_timestamp(payload: &str) -> Option<jiff::Timestamp> {
    let p: Payload<'_> = serde_json::from_str(payload).ok()?;
    crate::time::parse_ts(&p.data?.attributes?.timestamp?)
}

/// What the fold times: build uploads and app versions.
pub fn kind_of(instance_type: &str) -> Option<ItemKind> {
    match instance_type {
        "buildUploads" => Some(ItemKind::Build),
        "appStoreVersions" => Some(ItemKind::Version),
        _ => None,
    }
}

/// Whether an action got as far as doing something (a Job or object created, a request answered).
fn started(a: &ActionStatus) -> bool {
    match a.state {
        ActionState::Running | ActionState::Succeeded => true,
        ActionState::Failed => {
            a.job_name.is_some() || a.resource.is_some() || a.http_status_code.is_some()
        }
        ActionState::Pending | ActionState::InFlight => false,
    }
}

/// The state change `d` reports, or `None` when it is not about a build upload or app version, has no
/// new state, or is a `Duplicate` (its event was folded before its first delivery was pruned).
///
/// Its time is Apple's `timestamp` when the payload has one, else the delivery-log `createdDate` for
/// an event recovered by catch-up, else when the receiver accepted it.
pub fn observation(d: &WebhookDelivery) -> Option<Observation> {
    let instance = d.spec.instance.as_ref()?;
    let kind = kind_of(&instance.type_)?;
    let state = d.spec.new_state.clone()?;
    let phase = d.status.as_ref().map(|s| s.phase).unwrap_or_default();
    if phase == Phase::Duplicate {
        return None;
    }
    let (at, source) = if let Some(t) = apple_timestamp(&d.spec.payload) {
        (t, TimeSource::Apple)
    } else if let Some(t) = d
        .spec
        .event_created_at
        .as_deref()
        .and_then(crate::time::parse_ts)
    {
        (t, TimeSource::DeliveryLog)
    } else {
        (
            crate::time::parse_ts(&d.spec.received_at)?,
            TimeSource::Received,
        )
    };
    let status = d.status.as_ref();
    let name = status.and_then(|s| s.enrichment.as_ref()).and_then(|e| {
        match (&e.version, &e.build_number) {
            (Some(v), Some(b)) => Some(format!("{v} ({b})")),
            (Some(v), None) => Some(v.clone()),
            (None, Some(b)) => Some(format!("({b})")),
            (None, None) => None,
        }
    });
    // Counted once the delivery is over: until then more of its actions may still start.
    let actions_started = (kind == ItemKind::Build && state == "COMPLETE" && phase.is_terminal())
        .then(|| {
            let n = status.map_or(0, |s| s.actions.iter().filter(|a| started(a)).count());
            i32::try_from(n).unwrap_or(i32::MAX)
        });
    Some(Observation {
        kind,
        id: instance.id.clone(),
        state,
        from: d.spec.old_state.clone(),
        at,
        source,
        name,
        actions_started,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::WebhookDeliverySpec;
    use crate::resources::delivery::{
        ActionKind, EnrichmentStatus, InstanceReference, WebhookDeliveryStatus,
    };

    fn delivery(instance_type: &str, payload: &str) -> WebhookDelivery {
        WebhookDelivery::new(
            "release-0123456789abcdef",
            WebhookDeliverySpec {
                route: "release".into(),
                event_id: "e".into(),
                event_type: "buildUploadStateUpdated".into(),
                old_state: Some("PROCESSING".into()),
                new_state: Some("COMPLETE".into()),
                instance: Some(InstanceReference {
                    type_: instance_type.into(),
                    id: "b-1".into(),
                    url: None,
                }),
                received_at: "2026-12-01T10:20:00.250Z".into(),
                event_created_at: None,
                source: Default::default(),
                request_id: None,
                payload: payload.into(),
            },
        )
    }

    fn action(state: ActionState, job: Option<&str>) -> ActionStatus {
        ActionStatus {
            rule: "r".into(),
            kind: ActionKind::Job,
            state,
            job_name: job.map(str::to_owned),
            ..Default::default()
        }
    }

    #[test]
    fn apples_timestamp_wins_over_the_delivery_log_and_the_receipt_time() {
        let mut d = delivery(
            "buildUploads",
            r#"{"data":{"attributes":{"timestamp":"2026-12-01T10:00:00.5Z"}}}"#,
        );
        d.spec.event_created_at = Some("2026-12-01T10:05:00Z".into());
        let o = observation(&d).unwrap();
        assert_eq!(o.source, TimeSource::Apple);
        assert_eq!(o.at, "2026-12-01T10:00:00.5Z".parse().unwrap());

        d.spec.payload = r#"{"data":{"attributes":{"newState":"COMPLETE"}}}"#.into();
        let o = observation(&d).unwrap();
        assert_eq!(
            (o.source, o.at),
            (
                TimeSource::DeliveryLog,
                "2026-12-01T10:05:00Z".parse().unwrap()
            )
        );

        d.spec.event_created_at = None;
        let o = observation(&d).unwrap();
        assert_eq!(o.source, TimeSource::Received);
        assert_eq!(o.at, "2026-12-01T10:20:00.250Z".parse().unwrap());
    }

    #[test]
    fn only_build_uploads_and_app_versions_with_a_new_state_are_timed() {
        assert!(observation(&delivery("buildBetaDetails", "{}")).is_none());
        let mut d = delivery("buildUploads", "{}");
        d.spec.new_state = None;
        assert!(observation(&d).is_none());
        let v = observation(&delivery("appStoreVersions", "not json")).unwrap();
        assert_eq!(v.kind, ItemKind::Version);
    }

    #[test]
    fn a_duplicate_delivery_reports_nothing() {
        let mut d = delivery("buildUploads", "{}");
        d.status = Some(WebhookDeliveryStatus {
            phase: Phase::Duplicate,
            ..Default::default()
        });
        assert!(observation(&d).is_none());
    }

    #[test]
    fn a_finished_complete_delivery_counts_the_actions_that_started() {
        let mut d = delivery("buildUploads", "{}");
        d.status = Some(WebhookDeliveryStatus {
            phase: Phase::Running,
            actions: vec![action(ActionState::Running, Some("j"))],
            ..Default::default()
        });
        assert_eq!(
            observation(&d).unwrap().actions_started,
            None,
            "not before it finished"
        );
        d.status = Some(WebhookDeliveryStatus {
            phase: Phase::Failed,
            actions: vec![
                action(ActionState::Succeeded, Some("j")),
                action(ActionState::Failed, Some("k")),
                action(ActionState::Failed, None),
            ],
            enrichment: Some(EnrichmentStatus {
                result: "Enriched".into(),
                version: Some("1.4.0".into()),
                build_number: Some("42".into()),
                ..Default::default()
            }),
            ..Default::default()
        });
        let o = observation(&d).unwrap();
        assert_eq!(
            o.actions_started,
            Some(2),
            "a Job that ran and failed counts"
        );
        assert_eq!(o.name.as_deref(), Some("1.4.0 (42)"));
        d.status = Some(WebhookDeliveryStatus {
            phase: Phase::NoMatch,
            ..Default::default()
        });
        assert_eq!(observation(&d).unwrap().actions_started, Some(0));
    }
}

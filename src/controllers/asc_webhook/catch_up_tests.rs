//! Unit tests of catch-up's pure parts.
use super::*;
use crate::asc::webhook_deliveries::LoggedEvent;

fn at(s: &str) -> jiff::Timestamp {
    s.parse().unwrap()
}

#[test]
fn a_pass_runs_at_start_up_then_every_interval() {
    let ten = Duration::from_secs(600);
    let s = CatchUpStatus {
        last_check_time: Some("2026-12-01T10:00:00Z".into()),
        ..Default::default()
    };
    assert_eq!(
        due_in(Some(&s), ten, false, at("2026-12-01T10:00:01Z")),
        Duration::ZERO
    );
    assert_eq!(
        due_in(Some(&s), ten, true, at("2026-12-01T10:04:00Z")),
        Duration::from_secs(360)
    );
    assert_eq!(
        due_in(Some(&s), ten, true, at("2026-12-01T10:11:00Z")),
        Duration::ZERO
    );
    assert_eq!(
        due_in(None, ten, true, at("2026-12-01T10:11:00Z")),
        Duration::ZERO
    );
}

#[test]
fn reading_starts_at_the_checkpoint_or_a_lookback_ago_but_never_past_nine_days() {
    let now = at("2026-12-02T10:00:00Z");
    let day = Duration::from_secs(86_400);
    assert_eq!(read_from(None, now, day).start, at("2026-12-01T10:00:00Z"));
    let s = CatchUpStatus {
        checkpoint: Some("2026-12-02T09:30:00.250Z".into()),
        ..Default::default()
    };
    let from = read_from(Some(&s), now, day);
    assert_eq!(from.start, at("2026-12-02T09:30:00.250Z"));
    assert_eq!(from.clamped_from, None);
    let old = CatchUpStatus {
        checkpoint: Some("2026-11-02T10:00:00Z".into()),
        ..Default::default()
    };
    let from = read_from(Some(&old), now, day);
    assert_eq!(from.start, at("2026-11-23T10:00:00Z"), "nine days back");
    assert_eq!(from.clamped_from, Some(at("2026-11-02T10:00:00Z")));
    let long_lookback = read_from(None, now, 30 * day);
    assert_eq!(long_lookback.start, at("2026-11-23T10:00:00Z"));
    assert!(long_lookback.clamped_from.is_some());
}

#[test]
fn a_pass_walks_day_wide_windows_up_to_an_open_ended_last_one() {
    let w = windows(at("2026-11-29T12:00:00Z"), at("2026-12-01T13:00:00Z"));
    assert_eq!(
        w,
        [
            (at("2026-11-29T12:00:00Z"), Some(at("2026-11-30T12:00:00Z"))),
            (at("2026-11-30T12:00:00Z"), Some(at("2026-12-01T12:00:00Z"))),
            (at("2026-12-01T12:00:00Z"), None),
        ]
    );
    let recent = windows(at("2026-12-01T12:58:00Z"), at("2026-12-01T13:00:00Z"));
    assert_eq!(recent, [(at("2026-12-01T12:58:00Z"), None)]);
}

#[test]
fn the_checkpoint_moves_to_a_window_end_or_the_pass_start_less_the_overlap_and_never_back() {
    let start = at("2026-12-01T13:00:00Z");
    assert_eq!(committed(None, None, start), "2026-12-01T12:58:00Z");
    assert_eq!(
        committed(None, Some(at("2026-11-30T12:00:00Z")), start),
        "2026-11-30T12:00:00Z"
    );
    assert_eq!(
        committed(None, Some(at("2026-12-01T12:59:30Z")), start),
        "2026-12-01T12:58:00Z",
        "a window ending inside the overlap commits no further than the overlap"
    );
    assert_eq!(
        committed(Some("2026-12-01T12:59:00Z"), None, start),
        "2026-12-01T12:59:00Z",
        "a pass right after another does not move it back"
    );
}

fn logged(id: &str, created: &str, payload: &str) -> LoggedDelivery {
    LoggedDelivery {
        id: id.into(),
        created_date: Some(created.into()),
        state: DeliveryState::Failed,
        error_message: None,
        redelivery: false,
        response_status: None,
        event: LoggedEvent {
            id: format!("e-{id}"),
            event_type: "BUILD_UPLOAD_STATE_UPDATED".into(),
            payload: payload.into(),
            ping: false,
            created_date: None,
        },
    }
}

#[test]
fn the_lag_runs_from_apples_created_date_to_the_recording() {
    let now = at("2026-12-01T10:10:00Z");
    let l = logged("a", "2026-12-01T10:00:00.000Z", "{}");
    assert_eq!(lag_seconds(&l, now), Some(600.0));
    let mut undated = logged("b", "not a date", "{}");
    assert_eq!(lag_seconds(&undated, now), None);
    undated.created_date = None;
    undated.event.created_date = Some("2026-12-01T10:09:00Z".into());
    assert_eq!(lag_seconds(&undated, now), Some(60.0));
    let future = logged("c", "2026-12-01T10:20:00Z", "{}");
    assert_eq!(
        lag_seconds(&future, now),
        Some(0.0),
        "clock skew never counts negative"
    );
}

#[test]
fn a_logged_payload_becomes_the_delivery_the_receiver_would_have_made() {
    let route = crate::receiver::record::tests::route();
    let payload = r#"{"data":{"type":"buildUploadStateUpdated","id":"evt-1","attributes":{"newState":"COMPLETE"}}}"#;
    let d = recorded(
        &route,
        &logged("d1", "2026-12-01T10:00:00Z", payload),
        "now",
        LIMITS,
    )
    .unwrap();
    let live = build_delivery(
        &route,
        &WebhookEvent::parse(payload.as_bytes().to_vec().into()).unwrap(),
        None,
        "now",
    );
    assert_eq!(
        d.metadata.name, live.metadata.name,
        "one name whichever way it arrives"
    );
    assert_eq!(d.spec.source, DeliverySource::CatchUp);
    assert_eq!(d.spec.payload, payload);
    let invalid = recorded(&route, &logged("d2", "t", "not json"), "now", LIMITS).unwrap_err();
    assert_eq!(invalid.reason, "invalid_payload");
}

const LIMITS: RecordLimits = RecordLimits {
    max_body_bytes: 64 * 1024,
    max_object_bytes: 1_572_864,
};

#[test]
fn a_logged_payload_is_held_to_the_receivers_body_limit() {
    let route = crate::receiver::record::tests::route();
    let payload = |pad: usize| {
        format!(
            r#"{{"data":{{"type":"buildUploadStateUpdated","id":"y","pad":"{}"}}}}"#,
            "a".repeat(pad)
        )
    };
    let fits = payload(LIMITS.max_body_bytes - 100);
    assert!(recorded(&route, &logged("d3", "t", &fits), "now", LIMITS).is_ok());
    let over = payload(LIMITS.max_body_bytes);
    let skip = recorded(&route, &logged("d4", "t", &over), "now", LIMITS).unwrap_err();
    assert_eq!(skip.reason, "too_large");
    assert!(
        skip.why.contains(&LIMITS.max_body_bytes.to_string()),
        "{skip:?}"
    );
}

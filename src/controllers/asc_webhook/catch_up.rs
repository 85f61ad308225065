//! Catch-up: events App Store Connect failed to deliver (receiver down, Ingress or TLS broken) are read
//! back from its delivery log and recorded exactly as the receiver would have — same deterministic name,
//! so an event arriving both live and through catch-up is one delivery and one Job.
//!
//! Progress is a checkpoint in status (the newest `createdDate` read), saved after every page, so a 429
//! half-way, a restart or a leader change resumes there instead of re-reading the whole log; each pass
//! reads from a little before it, for clock skew between Apple's servers.

use super::Context;
use crate::asc::api::AscClient;
use crate::asc::event::WebhookEvent;
use crate::asc::webhook_deliveries::{DeliveryFilter, DeliveryState, LoggedDelivery};
use crate::asc::webhooks::{WebhookError, Webhooks};
use crate::controllers::{Error, seen};
use crate::metrics::{CatchUpErrorLabels, RouteLabels};
use crate::receiver::record::build_delivery;
use crate::resources::delivery::DeliverySource;
use crate::resources::route_asc::{AppStoreConnectStatus, CatchUpMode, CatchUpStatus};
use crate::resources::{WebhookDelivery, WebhookRoute};
use kube::api::PostParams;
use kube::{Api, ResourceExt};
use std::time::Duration;

/// How far before the checkpoint each pass starts reading.
pub const OVERLAP: Duration = Duration::from_secs(120);
/// Payloads longer than this are refused, as the receiver refuses such bodies by default.
pub const MAX_PAYLOAD_BYTES: usize = 1024 * 1024;
/// Pages read per pass; the checkpoint carries the rest to the next pass.
const MAX_PAGES: usize = 50;

/// Time until the next pass is due; zero when due now. `ran_here`: this process already made a pass for
/// the route (every process makes one at start-up). Pure.
pub fn due_in(
    status: Option<&CatchUpStatus>,
    interval: Duration,
    ran_here: bool,
    now: jiff::Timestamp,
) -> Duration {
    if !ran_here {
        return Duration::ZERO;
    }
    let last = status
        .and_then(|s| s.last_check_time.as_deref())
        .and_then(crate::time::parse_ts);
    let Some(last) = last else {
        return Duration::ZERO;
    };
    let since = Duration::try_from(now.duration_since(last)).unwrap_or(Duration::ZERO);
    interval.saturating_sub(since)
}

/// Where a pass starts reading: a little before the checkpoint, or `lookback` ago on the first pass.
/// Pure.
pub fn read_from(
    status: Option<&CatchUpStatus>,
    now: jiff::Timestamp,
    lookback: Duration,
) -> String {
    let back = |from: jiff::Timestamp, d: Duration| {
        let d = jiff::SignedDuration::try_from(d).unwrap_or(jiff::SignedDuration::ZERO);
        from.checked_sub(d).unwrap_or(from)
    };
    let start = match status
        .and_then(|s| s.checkpoint.as_deref())
        .and_then(crate::time::parse_ts)
    {
        Some(checkpoint) => back(checkpoint, OVERLAP),
        None => back(now, lookback),
    };
    crate::time::format_ts(start)
}

/// The later of the checkpoint and the deliveries' `createdDate`s. Pure.
pub fn advance(checkpoint: Option<String>, page: &[LoggedDelivery]) -> Option<String> {
    page.iter()
        .filter_map(|d| d.created_date.clone())
        .chain(checkpoint)
        .max_by_key(|t| crate::time::parse_ts(t))
}

/// The `WebhookDelivery` the receiver would have made for a logged delivery's payload. The payload comes
/// from Apple's authenticated API, so it needs no signature; it is bounded and parsed like a body. Pure.
pub fn recorded(
    route: &WebhookRoute,
    logged: &LoggedDelivery,
    now: &str,
) -> Result<WebhookDelivery, String> {
    let event = logged
        .event
        .as_ref()
        .ok_or("the delivery log did not include the event")?;
    if event.payload.len() > MAX_PAYLOAD_BYTES {
        return Err(format!(
            "payload of {} bytes is over the limit",
            event.payload.len()
        ));
    }
    let parsed = WebhookEvent::parse(event.payload.clone().into_bytes().into())
        .map_err(|e| format!("payload is not an App Store Connect event: {e}"))?;
    let mut d = build_delivery(route, &parsed, Some(&logged.id), now);
    d.spec.source = DeliverySource::CatchUp;
    Ok(d)
}

/// When the next pass is due for route `key`: an interrupted pass is owed after its backoff, a finished
/// one after `interval`.
pub(super) fn next_pass_in(
    ctx: &Context,
    key: &str,
    status: Option<&CatchUpStatus>,
    interval: Duration,
) -> Duration {
    if let Some(left) = ctx.holds.held(&format!("catch-up/{key}"), 0) {
        return left;
    }
    due_in(
        status,
        interval,
        ctx.caught_up.contains(key),
        jiff::Timestamp::now(),
    )
}

/// Runs a pass when one is due and updates `asc.catchUp`; answers when the next one is due (`None`: off).
pub(super) async fn pass_if_due(
    ctx: &Context,
    route: &WebhookRoute,
    client: &AscClient,
    asc: &mut AppStoreConnectStatus,
) -> Result<Option<Duration>, Error> {
    let Some(spec) = route.spec.app_store_connect.as_ref() else {
        return Ok(None);
    };
    let Some(minutes) = spec.catch_up_interval_minutes() else {
        return Ok(None);
    };
    let Some(webhook_id) = asc.webhook_id.clone() else {
        return Ok(None);
    };
    let interval = Duration::from_secs(minutes * 60);
    let key = super::failure_key(route);
    let left = next_pass_in(ctx, &key, asc.catch_up.as_ref(), interval);
    if !left.is_zero() {
        return Ok(Some(left));
    }
    let mode = spec.catch_up.as_ref().map(|c| c.mode).unwrap_or_default();
    let mut state = asc.catch_up.clone().unwrap_or_default();
    let filter = DeliveryFilter {
        states: vec![DeliveryState::Failed, DeliveryState::Pending],
        created_since: Some(read_from(
            Some(&state),
            jiff::Timestamp::now(),
            ctx.settings.catch_up_lookback,
        )),
        ..DeliveryFilter::default()
    };
    let hooks = Webhooks::new(client);
    let deliveries: Api<WebhookDelivery> =
        Api::namespaced(ctx.client.clone(), &route.namespace().unwrap_or_default());
    let mut page_url: Option<String> = None;
    let mut outcome: Result<(), WebhookError> = Ok(());
    for _ in 0..MAX_PAGES {
        let page = match hooks
            .deliveries_page(&webhook_id, &filter, page_url.as_deref())
            .await
        {
            Ok(p) => p,
            Err(e) => {
                outcome = Err(e);
                break;
            }
        };
        for logged in &page.deliveries {
            state.recovered += recover(ctx, route, &hooks, &deliveries, logged, mode).await?;
        }
        state.checkpoint = advance(state.checkpoint.take(), &page.deliveries);
        match page.next {
            Some(next) => page_url = Some(next),
            None => break,
        }
    }
    let retry_key = format!("catch-up/{key}");
    match outcome {
        Ok(()) => {
            ctx.caught_up.mark(&key);
            ctx.backoffs.succeeded(&retry_key);
            ctx.holds.release(&retry_key);
            state.last_check_time = Some(crate::time::now_rfc3339());
            asc.catch_up = Some(state);
            Ok(Some(interval))
        }
        Err(e) => {
            // The checkpoint keeps what was read; the next pass resumes there, after a backoff.
            tracing::warn!(route = %route.name_any(), error = %crate::controllers::credential::error_chain(&e), "catch-up pass interrupted");
            count_error(ctx, route, error_reason(&e));
            // Not marked done: the pass is owed, after a backoff (held, so the status write this
            // causes does not start it again at once).
            asc.catch_up = Some(state);
            let delay = ctx.backoffs.failed(&retry_key);
            ctx.holds
                .hold(&retry_key, 0, std::time::Instant::now() + delay);
            Ok(Some(delay))
        }
    }
}

/// Records (or has Apple redeliver) one logged delivery unless its event is already recorded; answers
/// how many events it recovered (0 or 1).
async fn recover(
    ctx: &Context,
    route: &WebhookRoute,
    hooks: &Webhooks<'_>,
    deliveries: &Api<WebhookDelivery>,
    logged: &LoggedDelivery,
    mode: CatchUpMode,
) -> Result<i64, Error> {
    let delivery = match recorded(route, logged, &crate::time::now_rfc3339()) {
        Ok(d) => d,
        Err(why) => {
            tracing::warn!(route = %route.name_any(), delivery = %logged.id, %why, "delivery-log entry skipped");
            count_error(ctx, route, "invalid_entry");
            return Ok(0);
        }
    };
    // A ping recovered from the log would prove nothing about reachability, and would turn
    // `WebhookVerified` True for a receiver Apple cannot reach: pings only count when they arrive.
    if logged.event.as_ref().is_some_and(|e| e.ping) {
        return Ok(0);
    }
    // Recorded, finished and pruned since: the overlap of the next pass (or Apple's log) brings it back,
    // and it must not run again. This leader's memory covers the moment between pruning and the route
    // copy here showing the record; the route's `status.seenEvents` covers restarts and leader changes.
    let namespace = route.namespace().unwrap_or_default();
    if ctx.pruned.contains(&namespace, &delivery.name_any())
        || seen::holds(route, &delivery.name_any())
    {
        return Ok(0);
    }
    match mode {
        CatchUpMode::Redeliver => {
            // Only what was never recorded, live or otherwise, is worth sending again.
            let recorded = deliveries
                .get_opt(&delivery.name_any())
                .await
                .map_err(Error::Kube)?
                .is_some();
            if recorded || logged.state != Some(DeliveryState::Failed) {
                return Ok(0);
            }
            match hooks.redeliver(&logged.id).await {
                Ok(_) => {
                    let why = format!(
                        "asked App Store Connect to redeliver {} event {} that failed to arrive",
                        delivery.spec.event_type, delivery.spec.event_id
                    );
                    Ok(recovered(ctx, route, logged, "EventRedelivered", why).await)
                }
                Err(e) => {
                    tracing::warn!(route = %route.name_any(), error = %crate::controllers::credential::error_chain(&e), "redelivery refused");
                    count_error(ctx, route, "redelivery_refused");
                    Ok(0)
                }
            }
        }
        CatchUpMode::Record => match deliveries.create(&PostParams::default(), &delivery).await {
            Ok(_) => {
                let why = format!(
                    "recorded {} event {} from App Store Connect's delivery log (it had not arrived)",
                    delivery.spec.event_type, delivery.spec.event_id
                );
                Ok(recovered(ctx, route, logged, "EventRecovered", why).await)
            }
            Err(kube::Error::Api(s)) if s.is_already_exists() => Ok(0),
            Err(e) => Err(Error::Kube(e)),
        },
    }
}

/// Counts one recovered event and says so on the route; the number of events recovered (one).
async fn recovered(
    ctx: &Context,
    route: &WebhookRoute,
    logged: &LoggedDelivery,
    reason: &'static str,
    why: String,
) -> i64 {
    count_recovered(ctx, route, logged);
    ctx.event(route, false, reason, why).await;
    1
}

fn route_label(route: &WebhookRoute) -> RouteLabels {
    RouteLabels {
        route: format!(
            "{}/{}",
            route.namespace().unwrap_or_default(),
            route.name_any()
        )
        .into(),
    }
}

fn count_error(ctx: &Context, route: &WebhookRoute, reason: &'static str) {
    let RouteLabels { route } = route_label(route);
    ctx.metrics
        .catch_up_errors
        .get_or_create(&CatchUpErrorLabels {
            route: route.to_string(),
            reason,
        })
        .inc();
}

fn count_recovered(ctx: &Context, route: &WebhookRoute, logged: &LoggedDelivery) {
    ctx.metrics
        .catch_up_recovered
        .get_or_create(&route_label(route))
        .inc();
    if let Some(lag) = lag_seconds(logged, jiff::Timestamp::now()) {
        ctx.metrics.catch_up_lag.observe(lag);
    }
}

/// Seconds from Apple's `createdDate` of the delivery (or its event) to `now`; `None` without a
/// readable date. Pure.
pub fn lag_seconds(logged: &LoggedDelivery, now: jiff::Timestamp) -> Option<f64> {
    let created = logged
        .created_date
        .as_deref()
        .or(logged
            .event
            .as_ref()
            .and_then(|e| e.created_date.as_deref()))
        .and_then(crate::time::parse_ts)?;
    Some(now.duration_since(created).as_secs_f64().max(0.0))
}

/// The metric's reason word for an interrupted pass. Pure.
pub fn error_reason(e: &WebhookError) -> &'static str {
    match e {
        WebhookError::Unavailable(_) => "unavailable",
        WebhookError::Forbidden(_) => "forbidden",
        WebhookError::AppNotFound { .. } | WebhookError::WebhookNotFound { .. } => "not_found",
        WebhookError::Rejected { .. } | WebhookError::LimitReached { .. } => "rejected",
        WebhookError::Malformed(_) => "malformed",
        WebhookError::Other(_) => "other",
    }
}

#[cfg(test)]
mod tests {
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
    fn reading_starts_before_the_checkpoint_or_a_lookback_ago() {
        let now = at("2026-12-02T10:00:00Z");
        let day = Duration::from_secs(86_400);
        assert_eq!(read_from(None, now, day), "2026-12-01T10:00:00Z");
        let s = CatchUpStatus {
            checkpoint: Some("2026-12-02T09:30:00.250Z".into()),
            ..Default::default()
        };
        assert_eq!(read_from(Some(&s), now, day), "2026-12-02T09:28:00Z");
    }

    fn logged(id: &str, created: &str, payload: &str) -> LoggedDelivery {
        LoggedDelivery {
            id: id.into(),
            created_date: Some(created.into()),
            state: Some(DeliveryState::Failed),
            error_message: None,
            redelivery: false,
            response_status: None,
            event: Some(LoggedEvent {
                id: format!("e-{id}"),
                event_type: "buildUploadStateUpdated".into(),
                payload: payload.into(),
                ping: false,
                created_date: None,
            }),
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
        undated.event.as_mut().unwrap().created_date = Some("2026-12-01T10:09:00Z".into());
        assert_eq!(lag_seconds(&undated, now), Some(60.0));
        let future = logged("c", "2026-12-01T10:20:00Z", "{}");
        assert_eq!(
            lag_seconds(&future, now),
            Some(0.0),
            "clock skew never counts negative"
        );
    }

    #[test]
    fn the_checkpoint_only_moves_forward() {
        let page = [
            logged("a", "2026-12-01T10:00:00.000Z", "{}"),
            logged("b", "2026-12-01T10:05:00.000Z", "{}"),
        ];
        assert_eq!(
            advance(None, &page).as_deref(),
            Some("2026-12-01T10:05:00.000Z")
        );
        assert_eq!(
            advance(Some("2026-12-01T11:00:00Z".into()), &page).as_deref(),
            Some("2026-12-01T11:00:00Z")
        );
        assert_eq!(advance(Some("x".into()), &[]).as_deref(), Some("x"));
    }

    #[test]
    fn a_logged_payload_becomes_the_delivery_the_receiver_would_have_made() {
        let route = crate::receiver::record::tests::route();
        let payload = r#"{"data":{"type":"buildUploadStateUpdated","id":"evt-1","attributes":{"newState":"COMPLETE"}}}"#;
        let d = recorded(
            &route,
            &logged("d1", "2026-12-01T10:00:00Z", payload),
            "now",
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
        assert!(recorded(&route, &logged("d2", "t", "not json"), "now").is_err());
        let huge = format!(
            r#"{{"data":{{"type":"x","id":"y","pad":"{}"}}}}"#,
            "a".repeat(MAX_PAYLOAD_BYTES)
        );
        assert!(recorded(&route, &logged("d3", "t", &huge), "now").is_err());
    }
}

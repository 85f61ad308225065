//! Catch-up: events App Store Connect failed to deliver (receiver down, Ingress or TLS broken) are read
//! back from its delivery log and recorded exactly as the receiver would have — same deterministic name,
//! so an event arriving both live and through catch-up is one delivery and one Job.
//!
//! The live log refuses a state filter, keeps about ten days and documents no order. So a pass reads
//! every entry in `createdDate` windows (one day wide, the last one open-ended) and picks FAILED and
//! PENDING itself; it never asks for more than [`MAX_AGE`] back (saying so in status when it had to cut);
//! and the checkpoint in status moves only when a whole window has been read, whatever order Apple
//! served it in. After a complete pass the checkpoint is the pass start less [`OVERLAP`] (for clock skew
//! between Apple's servers), so it moves even when nothing failed, and a 429 half-way, a restart or a
//! leader change resumes at the last complete window.

use super::Context;
use crate::asc::api::AscClient;
use crate::asc::event::WebhookEvent;
use crate::asc::webhook_deliveries::{
    DeliveryFilter, DeliveryPage, DeliveryState, LoggedDelivery, SkippedEntry,
};
use crate::asc::webhooks::{WebhookError, Webhooks};
use crate::controllers::{Error, seen};
use crate::metrics::{CatchUpErrorLabels, RouteLabels};
use crate::receiver::Recorded;
use crate::receiver::record::build_delivery;
use crate::receiver::store::RecordLimits;
use crate::resources::delivery::DeliverySource;
use crate::resources::route_asc::{AppStoreConnectStatus, CatchUpMode, CatchUpStatus};
use crate::resources::{WebhookDelivery, WebhookRoute};
use jiff::{SignedDuration, Timestamp};
use kube::{Api, ResourceExt};
use std::time::Duration;

/// How far before the pass start the checkpoint of a complete pass is set.
pub const OVERLAP: Duration = Duration::from_secs(120);
/// The oldest window start asked for: Apple refuses windows starting more than about ten days back.
pub const MAX_AGE: Duration = Duration::from_secs(9 * 86_400);
/// Width of one window; the checkpoint moves a window at a time.
pub const WINDOW: Duration = Duration::from_secs(86_400);
/// Pages read per pass; the checkpoint carries the rest to the next pass.
const MAX_PAGES: usize = 50;

/// Time until the next pass is due; zero when due now. `ran_here`: this process already made a pass for
/// the route (every process makes one at start-up). Pure.
pub fn due_in(
    status: Option<&CatchUpStatus>,
    interval: Duration,
    ran_here: bool,
    now: Timestamp,
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

fn back(from: Timestamp, d: Duration) -> Timestamp {
    let d = SignedDuration::try_from(d).unwrap_or(SignedDuration::ZERO);
    from.checked_sub(d).unwrap_or(from)
}

fn ahead(from: Timestamp, d: Duration) -> Timestamp {
    let d = SignedDuration::try_from(d).unwrap_or(SignedDuration::ZERO);
    from.checked_add(d).unwrap_or(from)
}

/// Where a pass starts reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadFrom {
    /// The first window's start.
    pub start: Timestamp,
    /// What the pass wanted instead, when that was further back than [`MAX_AGE`].
    pub clamped_from: Option<Timestamp>,
}

/// Where a pass starts reading: the checkpoint, or `lookback` ago on the first pass, but never more than
/// [`MAX_AGE`] ago. Pure.
pub fn read_from(status: Option<&CatchUpStatus>, now: Timestamp, lookback: Duration) -> ReadFrom {
    let wanted = status
        .and_then(|s| s.checkpoint.as_deref())
        .and_then(crate::time::parse_ts)
        .unwrap_or_else(|| back(now, lookback));
    let floor = back(now, MAX_AGE);
    if wanted < floor {
        ReadFrom {
            start: floor,
            clamped_from: Some(wanted),
        }
    } else {
        ReadFrom {
            start: wanted,
            clamped_from: None,
        }
    }
}

/// The `[since, before)` windows from `start` to `now`, one [`WINDOW`] wide; the last has no end. Pure.
pub fn windows(start: Timestamp, now: Timestamp) -> Vec<(Timestamp, Option<Timestamp>)> {
    let mut out = Vec::new();
    let mut since = start;
    loop {
        let end = ahead(since, WINDOW);
        if end >= now || end <= since {
            out.push((since, None));
            return out;
        }
        out.push((since, Some(end)));
        since = end;
    }
}

/// The checkpoint once the window ending at `end` (`None`: the open last one) of a pass started at
/// `pass_start` is read whole: its end, but no later than the pass start less [`OVERLAP`], and never
/// behind `old`. Pure.
pub fn committed(old: Option<&str>, end: Option<Timestamp>, pass_start: Timestamp) -> String {
    let latest = back(pass_start, OVERLAP);
    let new = end.map_or(latest, |e| e.min(latest));
    let kept = old.and_then(crate::time::parse_ts).filter(|o| *o > new);
    crate::time::format_ts(kept.unwrap_or(new))
}

/// Why an entry of the log is skipped for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skip {
    /// The metric's reason word.
    pub reason: &'static str,
    /// What to tell a person.
    pub why: String,
}

/// The `WebhookDelivery` the receiver would have made for a logged delivery's payload. The payload comes
/// from Apple's authenticated API, so it needs no signature; it is held to the receiver's body limit and
/// parsed like a body. Pure.
pub fn recorded(
    route: &WebhookRoute,
    logged: &LoggedDelivery,
    now: &str,
    limits: RecordLimits,
) -> Result<WebhookDelivery, Skip> {
    let event = &logged.event;
    limits.check_body(event.payload.len()).map_err(|e| Skip {
        reason: e.reason(),
        why: e.to_string(),
    })?;
    let parsed =
        WebhookEvent::parse(event.payload.clone().into_bytes().into()).map_err(|e| Skip {
            reason: "invalid_payload",
            why: format!("payload is not an App Store Connect event: {e}"),
        })?;
    let mut d = build_delivery(route, &parsed, Some(&logged.id), now);
    d.spec.source = DeliverySource::CatchUp;
    d.spec.event_created_at = event.created_date.clone().or(logged.created_date.clone());
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
        Timestamp::now(),
    )
}

/// Why a pass stopped before reading every window.
enum Interrupted {
    /// Apple refused or failed a page.
    Api(WebhookError),
    /// [`MAX_PAGES`] were read; the rest is for the next pass.
    PageBudget,
}

/// What one pass needs besides its progress.
struct Pass<'a> {
    ctx: &'a Context,
    route: &'a WebhookRoute,
    hooks: Webhooks<'a>,
    deliveries: Api<WebhookDelivery>,
    mode: CatchUpMode,
    webhook_id: String,
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
    let pass = Pass {
        ctx,
        route,
        hooks: Webhooks::new(client),
        deliveries: Api::namespaced(ctx.client.clone(), &route.namespace().unwrap_or_default()),
        mode: spec.catch_up.as_ref().map(|c| c.mode).unwrap_or_default(),
        webhook_id,
    };
    let started = Timestamp::now();
    let mut state = asc.catch_up.clone().unwrap_or_default();
    let from = read_from(Some(&state), started, ctx.settings.catch_up_lookback);
    if let Some(wanted) = from.clamped_from {
        note_clamp(&pass, &mut state, wanted, from.start).await;
    }
    let outcome = pass.walk(&mut state, from.start, started).await?;
    asc.catch_up = Some(state);
    Ok(Some(finish(ctx, route, &key, interval, outcome, asc)))
}

/// Says on the route (status and a Warning) that the pass could not read as far back as it wanted.
async fn note_clamp(
    pass: &Pass<'_>,
    state: &mut CatchUpStatus,
    wanted: Timestamp,
    start: Timestamp,
) {
    let (wanted, start) = (
        crate::time::format_ts(wanted),
        crate::time::format_ts(start),
    );
    if state.clamped_from.as_deref() == Some(wanted.as_str()) {
        return;
    }
    let why = format!(
        "catch-up wanted App Store Connect's delivery log from {wanted}, but Apple keeps about ten days: \
         reading from {start}; events created before that cannot be recovered"
    );
    pass.ctx
        .event(pass.route, true, "CatchUpWindowClamped", why)
        .await;
    state.clamped_from = Some(wanted);
    state.clamped_to = Some(start);
}

/// Books a pass's outcome; answers when the next pass is due.
fn finish(
    ctx: &Context,
    route: &WebhookRoute,
    key: &str,
    interval: Duration,
    outcome: Result<(), Interrupted>,
    asc: &mut AppStoreConnectStatus,
) -> Duration {
    let retry_key = format!("catch-up/{key}");
    let reason = match outcome {
        Ok(()) => {
            ctx.caught_up.mark(key);
            ctx.backoffs.succeeded(&retry_key);
            ctx.holds.release(&retry_key);
            if let Some(state) = asc.catch_up.as_mut() {
                state.last_check_time = Some(crate::time::now_rfc3339());
            }
            return interval;
        }
        Err(Interrupted::Api(e)) => {
            tracing::warn!(route = %route.name_any(), error = %crate::text::error_chain(&e), "catch-up pass interrupted");
            error_reason(&e)
        }
        Err(Interrupted::PageBudget) => {
            tracing::info!(route = %route.name_any(), pages = MAX_PAGES, "catch-up read its page budget; the next pass continues");
            "page_budget"
        }
    };
    count_error(ctx, route, reason);
    // Not marked done: the pass is owed, after a backoff (held, so the status write this causes does
    // not start it again at once). The checkpoint keeps the windows read whole.
    let delay = ctx.backoffs.failed(&retry_key);
    ctx.holds
        .hold(&retry_key, 0, std::time::Instant::now() + delay);
    delay
}

impl Pass<'_> {
    /// Reads every window from `start`, recovering what was not delivered, and moves the checkpoint past
    /// each window read whole.
    async fn walk(
        &self,
        state: &mut CatchUpStatus,
        start: Timestamp,
        started: Timestamp,
    ) -> Result<Result<(), Interrupted>, Error> {
        let mut budget = MAX_PAGES;
        for (since, before) in windows(start, started) {
            let filter = DeliveryFilter {
                created_since: Some(crate::time::format_ts(since)),
                created_before: before.map(crate::time::format_ts),
                ..DeliveryFilter::default()
            };
            let mut page_url: Option<String> = None;
            loop {
                let Some(left) = budget.checked_sub(1) else {
                    return Ok(Err(Interrupted::PageBudget));
                };
                budget = left;
                let page = match self
                    .hooks
                    .deliveries_page(&self.webhook_id, &filter, page_url.as_deref())
                    .await
                {
                    Ok(p) => p,
                    Err(e) => return Ok(Err(Interrupted::Api(e))),
                };
                state.recovered += self.page(&page).await?;
                match page.next {
                    Some(next) => page_url = Some(next),
                    None => break,
                }
            }
            state.checkpoint = Some(committed(state.checkpoint.as_deref(), before, started));
        }
        Ok(Ok(()))
    }

    /// Counts the page's skipped entries and recovers its undelivered ones; answers how many it recovered.
    async fn page(&self, page: &DeliveryPage) -> Result<i64, Error> {
        for skipped in &page.skipped {
            count_skipped(self.ctx, self.route, skipped);
        }
        let mut n = 0;
        for logged in page.deliveries.iter().filter(|d| d.state.undelivered()) {
            n += recover(
                self.ctx,
                self.route,
                &self.hooks,
                &self.deliveries,
                logged,
                self.mode,
            )
            .await?;
        }
        Ok(n)
    }
}

fn count_skipped(ctx: &Context, route: &WebhookRoute, s: &SkippedEntry) {
    tracing::warn!(route = %route.name_any(), delivery = %s.id, reason = s.reason.as_str(), detail = %s.detail, "delivery-log entry skipped");
    count_skip(ctx, route, s.reason.as_str());
}

fn count_skip(ctx: &Context, route: &WebhookRoute, reason: &'static str) {
    let RouteLabels { route } = route_label(route);
    ctx.metrics
        .catch_up_entries_skipped
        .get_or_create(&CatchUpErrorLabels {
            route: route.to_string(),
            reason,
        })
        .inc();
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
    let limits = ctx.delivery_store.limits();
    let delivery = match recorded(route, logged, &crate::time::now_rfc3339(), limits) {
        Ok(d) => d,
        Err(skip) => {
            skipped(ctx, route, logged, skip).await;
            return Ok(0);
        }
    };
    // A ping recovered from the log would prove nothing about reachability, and would turn
    // `WebhookVerified` True for a receiver Apple cannot reach: pings only count when they arrive.
    if logged.event.ping {
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
            if recorded || logged.state != DeliveryState::Failed {
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
                    tracing::warn!(route = %route.name_any(), error = %crate::text::error_chain(&e), "redelivery refused");
                    count_error(ctx, route, "redelivery_refused");
                    Ok(0)
                }
            }
        }
        CatchUpMode::Record => record(ctx, route, logged, delivery).await,
    }
}

/// Records `delivery` the receiver's way; an entry that can never be stored is skipped.
async fn record(
    ctx: &Context,
    route: &WebhookRoute,
    logged: &LoggedDelivery,
    delivery: WebhookDelivery,
) -> Result<i64, Error> {
    let event = format!(
        "{} event {}",
        delivery.spec.event_type, delivery.spec.event_id
    );
    match ctx.delivery_store.record(delivery).await {
        Ok(Recorded::Created) => {
            let why = format!(
                "recorded {event} from App Store Connect's delivery log (it had not arrived)"
            );
            Ok(recovered(ctx, route, logged, "EventRecovered", why).await)
        }
        Ok(Recorded::Duplicate) => Ok(0),
        // Refused every time it is tried: holding the checkpoint for it would hold every later event
        // of its window until Apple's log drops them all.
        Err(e) if e.is_permanent() => {
            let skip = Skip {
                reason: e.reason(),
                why: format!("{event}: {e}"),
            };
            skipped(ctx, route, logged, skip).await;
            Ok(0)
        }
        Err(e) => Err(Error::Record(e)),
    }
}

/// Counts an entry skipped for good, and says so in the log and as a Warning on the route.
async fn skipped(ctx: &Context, route: &WebhookRoute, logged: &LoggedDelivery, skip: Skip) {
    tracing::warn!(route = %route.name_any(), delivery = %logged.id, reason = skip.reason, why = %skip.why, "delivery-log entry skipped");
    count_skip(ctx, route, skip.reason);
    let note = format!(
        "skipped entry {} of App Store Connect's delivery log: {}; it can never be recorded, so catch-up moves past it",
        logged.id, skip.why
    );
    ctx.event(route, true, "CatchUpEntrySkipped", note).await;
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
        .or(logged.event.created_date.as_deref())
        .and_then(crate::time::parse_ts)?;
    Some(now.duration_since(created).as_secs_f64().max(0.0))
}

/// The metric's reason word for an interrupted pass. Pure.
pub fn error_reason(e: &WebhookError) -> &'static str {
    match e {
        WebhookError::Unavailable(_) => "unavailable",
        WebhookError::Forbidden(_) => "forbidden",
        WebhookError::TokenScopeRefused(_) => "token_scope_refused",
        WebhookError::AppNotFound { .. } | WebhookError::WebhookNotFound { .. } => "not_found",
        WebhookError::Rejected { .. } | WebhookError::LimitReached { .. } => "rejected",
        WebhookError::Malformed(_) => "malformed",
        WebhookError::Other(_) => "other",
    }
}

#[cfg(test)]
#[path = "catch_up_tests.rs"]
mod tests;

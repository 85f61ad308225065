//! The `WebhookDelivery` controller: match the route's rules, enrich once, run each action exactly once,
//! and keep the delivery's status true.
//!
//! Exactly once rests on three things. Jobs (and the objects of resource actions) have deterministic
//! names, so a second create is AlreadyExists (adopted only if this delivery owns it). Every status write carries the
//! `resourceVersion` of the copy it was decided on, so a pass working from a stale cached copy (watch
//! events arrive late) cannot write, and starts again from a fresh read. And each side effect is
//! recorded before it happens (an HTTP attempt is written `InFlight` first) and its outcome right after,
//! so no pass repeats what an earlier one did. Only a crash between an HTTP request and the write of its
//! outcome can repeat that request; the repeat is recorded as such (`AttemptInterrupted`).

mod create;
mod enrich;
mod http_call;
pub mod jobs;
pub mod replay;
pub mod resources;
pub mod state;
pub mod suspend;

use self::enrich::{Enriched, RequiredMissing, enrich_if_needed, required_missing};
use self::jobs::JobStep;
use self::state::{AfterAttempt, Why};
use super::context::Context;
use super::matching::{EventFacts, matching_rules};
use super::{Error, seen, status};
use crate::actions::EventContext;
use crate::actions::http;
use crate::resources::delivery::{ActionState, Phase, WebhookDeliveryStatus};
use crate::resources::names::{API_VERSION, FIELD_MANAGER, LABEL_FINISHED};
use crate::resources::route::{EnrichPolicy, Rule};
use crate::resources::{WebhookDelivery, WebhookRoute};
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};
use std::sync::Arc;
use std::time::Duration;

/// A running Job is looked at this often even without a watch event, as a safety net.
const JOB_RECHECK: Duration = Duration::from_secs(300);
/// How soon a delivery waiting behind an older one of a resumed route looks again.
const ORDER_WAIT: Duration = Duration::from_millis(100);
/// Passes started over from a fresh read before giving the delivery back to the queue.
const MAX_STALE_RESTARTS: usize = 3;

/// Reconciles one delivery.
///
/// `d` is the watch cache's slim copy (`suspend::scheduling_copy`: no payload, next to no status), so
/// every pass starts from the full object read from the API server.
pub async fn reconcile(d: Arc<WebhookDelivery>, ctx: Arc<Context>) -> Result<Action, Error> {
    let api = deliveries(&ctx, &d);
    let name = d.name_any();
    for _ in 0..MAX_STALE_RESTARTS {
        let Some(current) = api.get_opt(&name).await.map_err(Error::Kube)? else {
            return Ok(Action::await_change());
        };
        match pass(&ctx, current).await? {
            Pass::Done(action) => return Ok(action),
            Pass::Stale => {
                ctx.metrics.stale_writes.inc();
            }
        }
    }
    Ok(Action::requeue(Duration::from_millis(100)))
}

fn deliveries(ctx: &Context, d: &WebhookDelivery) -> Api<WebhookDelivery> {
    Api::namespaced(ctx.client.clone(), &d.namespace().unwrap_or_default())
}

/// How one pass ended.
enum Pass {
    /// Finished; look again per the action.
    Done(Action),
    /// A write found a newer version than the one decided on: start again from a fresh read.
    Stale,
}

/// Status writes of one pass, each conditional on the version the pass last read or wrote.
struct Writer<'a> {
    api: Api<WebhookDelivery>,
    name: String,
    resource_version: Option<String>,
    written: WebhookDeliveryStatus,
    ctx: &'a Context,
    delivery: &'a WebhookDelivery,
}

impl Writer<'_> {
    /// Writes `st` if it differs from what is stored. `Ok(false)`: the object changed underneath.
    async fn save(&mut self, st: &WebhookDeliveryStatus) -> Result<bool, Error> {
        if *st == self.written {
            return Ok(true);
        }
        let applied =
            status::apply_if_unchanged(&self.api, &self.name, self.resource_version.as_deref(), st)
                .await
                .map_err(Error::Kube)?;
        let Some(obj) = applied else {
            return Ok(false);
        };
        self.resource_version = obj.resource_version();
        if st.phase == Phase::Failed && self.written.phase != Phase::Failed {
            let why = st
                .message
                .clone()
                .unwrap_or_else(|| "an action failed".into());
            self.ctx
                .event(self.delivery, true, "DeliveryFailed", why)
                .await;
        }
        self.written = st.clone();
        Ok(true)
    }
}

/// The route of `d`, from the route controller's cache, else from the API server (a route created a
/// moment ago may not be cached yet).
async fn route_of(ctx: &Context, d: &WebhookDelivery) -> Result<Option<WebhookRoute>, Error> {
    let namespace = d.namespace().unwrap_or_default();
    if let Some(store) = ctx.stores.routes()
        && let Some(r) = store.get(&ObjectRef::new(&d.spec.route).within(&namespace))
    {
        return Ok(Some(r.as_ref().clone()));
    }
    let routes: Api<WebhookRoute> = Api::namespaced(ctx.client.clone(), &namespace);
    routes.get_opt(&d.spec.route).await.map_err(Error::Kube)
}

/// The rules the delivery runs: matched on the first pass, then kept, so editing a route never
/// half-reruns an event.
fn plan(route: &WebhookRoute, d: &WebhookDelivery, st: &WebhookDeliveryStatus) -> Vec<Rule> {
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

async fn pass(ctx: &Context, d: WebhookDelivery) -> Result<Pass, Error> {
    let d = match start_replay(ctx, d).await? {
        Some(d) => d,
        None => return Ok(Pass::Stale),
    };
    let previous = d.status.clone().unwrap_or_default();
    if previous.phase.is_terminal() {
        // A crash between the terminal status and the label leaves the label to set now.
        if !d.labels().contains_key(LABEL_FINISHED) {
            mark_finished(ctx, &d).await?;
        }
        return Ok(Pass::Done(Action::await_change()));
    }
    let now_ts = jiff::Timestamp::now();
    let now = crate::time::format_ts(now_ts);
    let generation = d.metadata.generation;
    let mut st = previous.clone();
    let mut w = Writer {
        api: deliveries(ctx, &d),
        name: d.name_any(),
        resource_version: d.resource_version(),
        written: previous.clone(),
        ctx,
        delivery: &d,
    };

    let Some(route) = route_of(ctx, &d).await? else {
        state::finish(
            &mut st,
            Phase::Failed,
            Some(format!("route {} no longer exists", d.spec.route)),
            generation,
            &now,
        );
        return conclude(ctx, &d, &mut w, st, now_ts).await;
    };
    if st.matched_rules.is_empty() && st.actions.is_empty() && st.replay_count() == 0 {
        let namespace = d.namespace().unwrap_or_default();
        if ctx.pruned.contains(&namespace, &d.name_any()) || seen::holds(&route, &d.name_any()) {
            // An earlier delivery of this event ran and was pruned: this one runs nothing.
            let why = format!(
                "event {} already ran on route {} (its delivery was pruned; status.seenEvents of the route): nothing runs again; set {} to run it on purpose",
                d.spec.event_id,
                d.spec.route,
                crate::resources::delivery::ANNOTATION_REPLAY
            );
            ctx.metrics
                .duplicate_events
                .get_or_create(&crate::metrics::RouteLabels {
                    route: format!("{namespace}/{}", d.spec.route).into(),
                })
                .inc();
            ctx.event(&d, false, "DuplicateEvent", why.clone()).await;
            state::finish(&mut st, Phase::Duplicate, Some(why), generation, &now);
            return conclude(ctx, &d, &mut w, st, now_ts).await;
        }
    }
    if st.matched_rules.is_empty() {
        // Nothing started yet: a suspended route holds the delivery, and a resumed one starts its
        // deliveries in order of receipt.
        if route.spec.suspend {
            suspend::hold(&mut st, &d.spec.route, generation, &now);
            return conclude(ctx, &d, &mut w, st, now_ts).await;
        }
        if let Some(store) = ctx.stores.unfinished_deliveries()
            && suspend::waits_behind(&d, store.state().iter().map(|o| o.as_ref()))
        {
            return Ok(Pass::Done(Action::requeue(ORDER_WAIT)));
        }
    }
    suspend::release(&mut st);
    let rules = plan(&route, &d, &st);
    if rules.is_empty() && st.matched_rules.is_empty() {
        state::finish(&mut st, Phase::NoMatch, None, generation, &now);
        return conclude(ctx, &d, &mut w, st, now_ts).await;
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
                &now,
            );
        }
    }
    st.matched_rules = rules.iter().map(|r| r.name.clone()).collect();

    let retry_due = st
        .next_retry_time
        .as_deref()
        .and_then(crate::time::parse_ts)
        .is_none_or(|t| t <= now_ts);
    let enriched = enrich_if_needed(ctx, &d, &route, &rules, &st, retry_due).await;
    let mut did_work = !matches!(enriched, Enriched::NotNeeded);
    if let Some(e) = enriched.status() {
        st.enrichment = Some(e);
    }
    let event_ctx = EventContext {
        delivery: &d,
        enrichment: enriched.get(),
    };

    let mut retry_in: Option<Duration> = None;
    let mut want_retry = |wanted: Duration| {
        let wanted = wanted.min(ctx.settings.retry_max_delay);
        retry_in = Some(retry_in.map_or(wanted, |r: Duration| r.min(wanted)));
    };
    let attempts_so_far = st.attempts;
    let backoff = |n: i32| ctx.settings.backoff(u32::try_from(n).unwrap_or(1));
    // Rules whose `when` said no: dropped from the plan after the loop.
    let mut declined: Vec<String> = Vec::new();
    for rule in &rules {
        if let Some(when) = &rule.when
            && state::not_started(&st.actions, rule)
            && !(rule.enrich == EnrichPolicy::Required && enriched.get().is_none())
        {
            // Decided after enrichment, before the action starts; never again once it started.
            match crate::actions::when::evaluate(when, &event_ctx, crate::actions::when::COST_LIMIT)
            {
                Ok(true) => {}
                Ok(false) => {
                    declined.push(rule.name.clone());
                    continue;
                }
                Err(e) => {
                    let a = state::entry(&mut st.actions, rule);
                    let why = Why::new(e.reason(), format!("when: {e}"));
                    state::transition(a, ActionState::Failed, Some(why), &now);
                    continue;
                }
            }
        }
        let a = state::entry(&mut st.actions, rule);
        if a.state.is_done() {
            continue;
        }
        let starting = a.job_name.is_none() && rule.job.is_some()
            || a.resource.is_none() && rule.resource.is_some()
            || rule.http.is_some();
        if starting && route.spec.suspend && a.state != ActionState::InFlight {
            // Suspended mid-delivery: what runs is still followed, nothing new starts.
            let why = Why::new(
                suspend::REASON,
                "the route is suspended (spec.suspend: true)",
            );
            state::transition(a, ActionState::Pending, Some(why), &now);
            continue;
        }
        if starting && rule.enrich == EnrichPolicy::Required && enriched.get().is_none() {
            match required_missing(
                &enriched,
                retry_due,
                attempts_so_far,
                ctx.settings.max_attempts,
                route.spec.credential_ref.is_some(),
            ) {
                RequiredMissing::Retry(why) => {
                    state::transition(a, ActionState::Pending, Some(why), &now);
                    want_retry(backoff(attempts_so_far + 1));
                }
                RequiredMissing::Fail(why) => {
                    state::transition(a, ActionState::Failed, Some(why), &now)
                }
                RequiredMissing::Wait => {}
            }
            continue;
        }
        if rule.job.is_some() || rule.resource.is_some() {
            let step = if let Some(job_action) = &rule.job {
                let input = jobs::JobInput {
                    delivery: &d,
                    route: &route,
                    rule,
                    action: job_action,
                    event: &event_ctx,
                };
                jobs::step(ctx, &input, a, &now).await?
            } else {
                let Some(resource_action) = &rule.resource else {
                    continue;
                };
                let input = resources::ResourceInput {
                    delivery: &d,
                    route: &route,
                    rule,
                    action: resource_action,
                    event: &event_ctx,
                };
                resources::step(ctx, &input, a, &now).await?
            };
            match step {
                JobStep::Created => {
                    did_work = true;
                    // Recorded before anything else can fail: the Job is never made twice.
                    if !w.save(&st).await? {
                        return Ok(Pass::Stale);
                    }
                }
                JobStep::Observed => {}
                JobStep::RetryLater(why) => {
                    did_work = true;
                    let attempts = a.attempts;
                    if attempts >= ctx.settings.max_attempts {
                        let msg = format!("{}; gave up after {attempts} attempts", why.message);
                        state::transition(
                            a,
                            ActionState::Failed,
                            Some(Why::new(why.reason, msg)),
                            &now,
                        );
                    } else {
                        state::transition(a, ActionState::Pending, Some(why), &now);
                        want_retry(backoff(attempts));
                    }
                }
            }
        } else if let Some(http_action) = &rule.http {
            let max = http::max_attempts(http_action);
            if a.state == ActionState::InFlight {
                // Seen on a copy that wins its write below: the attempt before was interrupted.
                if let AfterAttempt::Retry { .. } = state::interrupted_attempt(a, max, &now) {
                    want_retry(Duration::ZERO);
                }
                continue;
            }
            if !retry_due {
                continue;
            }
            did_work = true;
            let request = match http_call::prepare(
                ctx,
                &d.namespace().unwrap_or_default(),
                &route,
                http_action,
                &event_ctx,
            )
            .await?
            {
                http_call::Prepared::Request(r) => r,
                http_call::Prepared::Missing(error) => {
                    a.attempts += 1;
                    if let AfterAttempt::Retry { .. } =
                        state::retry_or_fail(a, "HttpSecretNotFound", &error, max, &now, None)
                    {
                        want_retry(backoff(a.attempts));
                    }
                    continue;
                }
                http_call::Prepared::Invalid(why) => {
                    a.attempts += 1;
                    state::transition(a, ActionState::Failed, Some(why), &now);
                    continue;
                }
            };
            state::start_http_attempt(a, &now);
            if !w.save(&st).await? {
                return Ok(Pass::Stale);
            }
            let outcome = http_call::send(ctx, &request).await;
            let a = state::entry(&mut st.actions, rule);
            let after = state::finish_http_attempt(a, &outcome, max, &now);
            if let AfterAttempt::Retry { retry_after } = after {
                let b = backoff(a.attempts);
                let asked = retry_after.map(Duration::from_secs);
                want_retry(crate::retry::honour(b, asked, ctx.settings.retry_max_delay));
            }
            // The outcome is written before anything else happens, so no later pass repeats the call.
            if !save_outcome(ctx, &mut w, &mut st, rule).await? {
                return Ok(Pass::Stale);
            }
        }
    }
    if !declined.is_empty() {
        st.actions.retain(|a| !declined.contains(&a.rule));
        st.matched_rules.retain(|r| !declined.contains(r));
        if st.matched_rules.is_empty() {
            let why = "the rules whose match fits this event all have a `when` that is false";
            state::finish(&mut st, Phase::NoMatch, Some(why.into()), generation, &now);
            return conclude(ctx, &d, &mut w, st, now_ts).await;
        }
    }
    if did_work {
        st.attempts += 1;
    }

    let mut phase = state::phase_of(&st.actions);
    if !phase.is_terminal() && retry_in.is_none() && !retry_due {
        // Nothing ran because a retry is not due yet: keep the schedule.
    } else {
        st.next_retry_time = retry_in.map(|r| crate::time::format_ts(now_ts + r));
    }
    if phase == Phase::Pending && st.attempts > 0 {
        phase = Phase::Running;
    }
    let message = if phase == Phase::Failed {
        state::failure_message(&st.actions)
    } else {
        None
    };
    state::finish(&mut st, phase, message, generation, &now);
    conclude(ctx, &d, &mut w, st, now_ts).await
}

/// Writes an HTTP attempt's outcome. Should the write lose to a newer version (nothing but this pass
/// should write while an attempt is in flight, but a status edit by a person can), the outcome is carried
/// over to a fresh read of the delivery rather than dropped.
async fn save_outcome(
    ctx: &Context,
    w: &mut Writer<'_>,
    st: &mut WebhookDeliveryStatus,
    rule: &Rule,
) -> Result<bool, Error> {
    if w.save(st).await? {
        return Ok(true);
    }
    let Some(outcome) = st.actions.iter().find(|a| a.rule == rule.name).cloned() else {
        return Ok(false);
    };
    let Some(fresh) = w.api.get_opt(&w.name).await.map_err(Error::Kube)? else {
        return Ok(false);
    };
    let mut fresh_st = fresh.status.clone().unwrap_or_default();
    match fresh_st.actions.iter_mut().find(|a| a.rule == rule.name) {
        Some(a) if a.state == ActionState::InFlight && a.attempts == outcome.attempts => {
            *a = outcome;
        }
        _ => return Ok(false),
    }
    ctx.metrics.stale_writes.inc();
    w.resource_version = fresh.resource_version();
    w.written = fresh.status.unwrap_or_default();
    *st = fresh_st;
    w.save(st).await
}

/// Writes the pass's final status (and labels a finished delivery).
async fn conclude(
    ctx: &Context,
    d: &WebhookDelivery,
    w: &mut Writer<'_>,
    st: WebhookDeliveryStatus,
    now_ts: jiff::Timestamp,
) -> Result<Pass, Error> {
    if !w.save(&st).await? {
        return Ok(Pass::Stale);
    }
    if st.phase.is_terminal() && replay::requested(d).is_some() {
        // Asked for while this run was going: it starts on the next pass, and the label stays off.
        return Ok(Pass::Done(Action::requeue(Duration::from_millis(10))));
    }
    if st.phase.is_terminal() {
        mark_finished(ctx, d).await?;
    }
    Ok(Pass::Done(next_action(&st, now_ts)))
}

/// Starts the replay the annotation asks for, if the current run is finished: one conditional write, so
/// it starts once. `None`: the delivery changed underneath, read it again.
async fn start_replay(ctx: &Context, d: WebhookDelivery) -> Result<Option<WebhookDelivery>, Error> {
    let finished = d.status.as_ref().is_some_and(|s| s.phase.is_terminal());
    let Some(value) = replay::requested(&d)
        .filter(|_| finished)
        .map(str::to_owned)
    else {
        return Ok(Some(d));
    };
    let mut st = d.status.clone().unwrap_or_default();
    let now = crate::time::now_rfc3339();
    replay::begin(&mut st, &value, d.metadata.generation, &now);
    let api = deliveries(ctx, &d);
    let Some(started) =
        status::apply_if_unchanged(&api, &d.name_any(), d.resource_version().as_deref(), &st)
            .await
            .map_err(Error::Kube)?
    else {
        return Ok(None);
    };
    ctx.metrics.replays.inc();
    ctx.event(
        &d,
        false,
        "ReplayStarted",
        format!(
            "replay {} of event {} ({}={value}): the matching rules run again",
            st.replay_count(),
            d.spec.event_id,
            crate::resources::delivery::ANNOTATION_REPLAY
        ),
    )
    .await;
    Ok(Some(started))
}

fn next_action(st: &WebhookDeliveryStatus, now: jiff::Timestamp) -> Action {
    if st.phase.is_terminal() {
        return Action::await_change();
    }
    if let Some(t) = st
        .next_retry_time
        .as_deref()
        .and_then(crate::time::parse_ts)
    {
        let wait = t.duration_since(now).as_millis().max(0) as u64;
        return Action::requeue(Duration::from_millis(wait.max(10)).min(JOB_RECHECK));
    }
    Action::requeue(JOB_RECHECK)
}

/// Labels a finished delivery, which drops it from this controller's watch (and memory).
async fn mark_finished(ctx: &Context, d: &WebhookDelivery) -> Result<(), Error> {
    let patch = serde_json::json!({
        "apiVersion": API_VERSION,
        "kind": "WebhookDelivery",
        "metadata": {"labels": {LABEL_FINISHED: "true"}},
    });
    match deliveries(ctx, d)
        .patch(
            &d.name_any(),
            &PatchParams::apply(FIELD_MANAGER),
            &Patch::Apply(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.is_not_found() => Ok(()),
        Err(e) => Err(Error::Kube(e)),
    }
}

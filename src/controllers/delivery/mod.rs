//! The `WebhookDelivery` controller: match the route's rules, enrich once, run each action exactly once,
//! and keep the delivery's status true.
//!
//! Exactly once rests on three things. Jobs (and the objects of resource actions) have deterministic
//! names, so a second create is AlreadyExists (adopted only if this delivery owns it): that is the
//! record that the object exists, so its create needs no status write of its own before or after, and
//! the pass's one write at its end records it. Every status write carries the `resourceVersion` of the
//! copy it was decided on, so a pass working from a stale copy (watch events arrive late) cannot write,
//! and starts again from a fresh read. And an HTTP attempt, which has no name to make a repeat
//! harmless, is written `InFlight` before it is sent and its outcome right after, so no pass repeats
//! what an earlier one did. Only a crash between an HTTP request and the write of its outcome can repeat
//! that request; the repeat is recorded as such (`AttemptInterrupted`).
//!
//! What this costs the API server per delivery, counted by a test: to its Job, the receiver's create,
//! the Job's create and one status write, and one read of the delivery (the watch cache keeps no
//! payload); to finish once the Job completes, the outcome and the finished label.

mod action;
mod admit;
mod create;
mod enrich;
pub mod gate;
mod http_call;
pub mod jobs;
pub mod replay;
pub mod resources;
pub mod schedule;
pub mod state;
pub mod suspend;
mod writer;

use self::action::{RuleAction, StepInput, Stepped};
use self::admit::{Admission, When, admit, decide_when};
use self::enrich::{Enriched, enrich_if_needed};
use self::gate::{Gate, GateInput, gate, plan};
use self::schedule::{Bookkeeping, drop_declined, next_action, schedule};
use self::writer::{Writer, deliveries};
use super::context::Context;
use super::{Error, status};
use crate::actions::EventContext;
use crate::resources::delivery::{ActionState, Phase, WebhookDeliveryStatus};
use crate::resources::names::{API_VERSION, FIELD_MANAGER, LABEL_FINISHED};
use crate::resources::route::Rule;
use crate::resources::{WebhookDelivery, WebhookRoute};
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};
use std::sync::Arc;
use std::time::Duration;

/// How soon a delivery waiting behind an older one of a resumed route looks again.
const ORDER_WAIT: Duration = Duration::from_millis(100);
/// Passes started over from a fresh read before giving the delivery back to the queue.
const MAX_STALE_RESTARTS: usize = 3;

/// Reconciles one delivery.
///
/// `d` is the watch cache's slim copy (`suspend::scheduling_copy`: no payload, next to no status), so a
/// pass starts from the full object: the copy this term last read or wrote while the watch shows no
/// newer version (`DeliveryCopies`), else read from the API server, as after a stale write.
pub async fn reconcile(d: Arc<WebhookDelivery>, ctx: Arc<Context>) -> Result<Action, Error> {
    let api = deliveries(&ctx, &d);
    let name = d.name_any();
    for attempt in 0..MAX_STALE_RESTARTS {
        let kept = (attempt == 0).then(|| ctx.copies.current(&d)).flatten();
        let current = match kept {
            Some(c) => c,
            None => {
                let Some(read) = api.get_opt(&name).await.map_err(Error::Kube)? else {
                    ctx.copies.forget(&d);
                    return Ok(Action::await_change());
                };
                ctx.copies.read(&read);
                read
            }
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

/// What of a delivery, when it changes, calls for a pass: its spec (`metadata.generation`) and the replay
/// asked for. Not its status: the passes write it, and a pass woken by its own write finds nothing to do
/// at the price of a read; nor its labels (the finished label takes it out of the watch). Job changes
/// wake it through the Job watch, a route's resumption through the route watch.
pub fn wakes_on(d: &WebhookDelivery) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let replay = d
        .annotations()
        .get(crate::resources::delivery::ANNOTATION_REPLAY);
    (d.metadata.generation, replay).hash(&mut h);
    Some(h.finish())
}

/// How one pass ended.
enum Pass {
    /// Finished; look again per the action.
    Done(Action),
    /// A write found a newer version than the one decided on: start again from a fresh read.
    Stale,
}

/// The route of `d`, from the route controller's cache, else from the API server (a route created a
/// moment ago may not be cached yet).
async fn route_of(ctx: &Context, d: &WebhookDelivery) -> Result<Option<WebhookRoute>, Error> {
    let namespace = d.namespace().unwrap_or_default();
    if let Some(r) = ctx
        .stores
        .routes
        .get(&ObjectRef::new(&d.spec.route).within(&namespace))
    {
        return Ok(Some(r.as_ref().clone()));
    }
    let routes: Api<WebhookRoute> = Api::namespaced(ctx.client.clone(), &namespace);
    routes.get_opt(&d.spec.route).await.map_err(Error::Kube)
}

/// One pass over a delivery read a moment ago: gate → plan → enrich → per rule, `when` and the action's
/// step → schedule → conclude. Each status write is conditional on the version the pass decided on.
async fn pass(ctx: &Context, d: WebhookDelivery) -> Result<Pass, Error> {
    let Some(d) = start_replay(ctx, d).await? else {
        return Ok(Pass::Stale);
    };
    let previous = d.status.clone().unwrap_or_default();
    if previous.phase.is_terminal() {
        // A crash between the terminal status and the label leaves the label to set now.
        if !d.labels().contains_key(LABEL_FINISHED) {
            mark_finished(ctx, &d).await?;
        }
        return Ok(Pass::Done(Action::await_change()));
    }
    let now = jiff::Timestamp::now();
    let mut w = Writer::new(ctx, &d, previous.clone());
    let mut st = previous;
    let route = route_of(ctx, &d).await?;
    let route = match pass_gate(ctx, &d, route.as_ref(), &mut st, now).await {
        Ok(route) => route,
        Err(Stopped::Requeue(after)) => return Ok(Pass::Done(Action::requeue(after))),
        Err(Stopped::Conclude) => return conclude(ctx, &d, &mut w, st, now).await,
    };
    let now_text = crate::time::format_ts(now);
    let Some(rules) = plan(route, &d, &mut st, &now_text) else {
        state::finish(
            &mut st,
            Phase::NoMatch,
            None,
            d.metadata.generation,
            &now_text,
        );
        return conclude(ctx, &d, &mut w, st, now).await;
    };
    let (enriched, retry_due) = enrich(ctx, &d, route, &rules, &mut st, now).await;
    let event = EventContext {
        delivery: &d,
        enrichment: enriched.get(),
    };
    let input = StepInput {
        delivery: &d,
        route,
        event: &event,
        retry_due,
        now: &now_text,
    };
    let mut book = Bookkeeping::new(
        ctx.settings.retry_backoff(),
        ctx.settings.max_attempts,
        !matches!(enriched, Enriched::NotNeeded),
    );
    let declined =
        match run_rules(ctx, &input, &enriched, &rules, &mut st, &mut w, &mut book).await? {
            Some(declined) => declined,
            None => return Ok(Pass::Stale),
        };
    if !drop_declined(&mut st, &declined, d.metadata.generation, &now_text) {
        if book.did_work && st.attempts == 0 && st.replay_count() == 0 {
            let ns = d.namespace().unwrap_or_default();
            (ctx.metrics.state).observe_start_lag(&ns, &d.spec.route, &d.spec.received_at, now);
        }
        schedule(&mut st, &book, retry_due, d.metadata.generation, now);
    }
    conclude(ctx, &d, &mut w, st, now).await
}

/// Enrich: fetches (or recalls) the event's object when an action about to start may use it, and
/// records the outcome; with whether a scheduled retry is due (or none is scheduled).
async fn enrich(
    ctx: &Context,
    d: &WebhookDelivery,
    route: &WebhookRoute,
    rules: &[Rule],
    st: &mut WebhookDeliveryStatus,
    now: jiff::Timestamp,
) -> (Enriched, bool) {
    let retry_due = st
        .next_retry_time
        .as_deref()
        .and_then(crate::time::parse_ts)
        .is_none_or(|t| t <= now);
    let enriched = enrich_if_needed(ctx, d, route, rules, st, retry_due).await;
    if let Some(e) = enriched.status() {
        st.enrichment = Some(e);
    }
    (enriched, retry_due)
}

/// How a pass the gate stopped ends: concluded with its status, or looked at again soon.
enum Stopped {
    /// Write the status and conclude.
    Conclude,
    /// Look again after this long, writing nothing.
    Requeue(Duration),
}

/// The gate's I/O half: asks the gate and turns what it says into the delivery's status (and the
/// duplicate's metric and Event). `Ok`: the delivery runs, on this route.
async fn pass_gate<'r>(
    ctx: &Context,
    d: &WebhookDelivery,
    route: Option<&'r WebhookRoute>,
    st: &mut WebhookDeliveryStatus,
    now: jiff::Timestamp,
) -> Result<&'r WebhookRoute, Stopped> {
    let namespace = d.namespace().unwrap_or_default();
    let was_pruned = || ctx.pruned.contains(&namespace, &d.name_any());
    let waits_behind = || {
        let unfinished = ctx.stores.unfinished.state();
        suspend::waits_behind(d, unfinished.iter().map(|o| o.as_ref()))
    };
    let verdict = gate(&GateInput {
        delivery: d,
        route,
        status: st,
        was_pruned: &was_pruned,
        waits_behind: &waits_behind,
    });
    let (generation, now) = (d.metadata.generation, crate::time::format_ts(now));
    match verdict {
        Gate::Open(route) => {
            suspend::release(st);
            return Ok(route);
        }
        Gate::WaitInOrder => return Err(Stopped::Requeue(ORDER_WAIT)),
        Gate::RouteGone => {
            let why = format!("route {} no longer exists", d.spec.route);
            state::finish(st, Phase::Failed, Some(why), generation, &now);
        }
        Gate::Duplicate => {
            let why = gate::duplicate_message(d);
            ctx.metrics
                .duplicate_events
                .get_or_create(&crate::metrics::RouteLabels {
                    route: format!("{namespace}/{}", d.spec.route).into(),
                })
                .inc();
            ctx.event(d, false, "DuplicateEvent", why.clone()).await;
            state::finish(st, Phase::Duplicate, Some(why), generation, &now);
        }
        Gate::Suspended => suspend::hold(st, &d.spec.route, generation, &now),
    }
    Err(Stopped::Conclude)
}

/// Per rule: `when`, whether its action may take a step, and the step. The rules whose `when` said no,
/// or `None` when a write found a newer version.
async fn run_rules(
    ctx: &Context,
    input: &StepInput<'_>,
    enriched: &Enriched,
    rules: &[Rule],
    st: &mut WebhookDeliveryStatus,
    w: &mut Writer<'_>,
    book: &mut Bookkeeping,
) -> Result<Option<Vec<String>>, Error> {
    let admission = Admission {
        suspended: input.route.spec.suspend,
        enriched,
        retry_due: input.retry_due,
        attempts_so_far: st.attempts,
        max_attempts: ctx.settings.max_attempts,
        has_credential: input.route.spec.credential_ref.is_some(),
    };
    let mut declined = Vec::new();
    for rule in rules {
        match decide_when(rule, &st.actions, input.event) {
            When::Run => {}
            When::Declined => {
                declined.push(rule.name.clone());
                continue;
            }
            When::Failed(why) => {
                let a = state::entry(&mut st.actions, rule);
                state::transition(a, ActionState::Failed, Some(why), input.now);
                continue;
            }
        }
        let a = state::entry(&mut st.actions, rule);
        if !admit(rule, a, &admission, book, input.now) {
            continue;
        }
        let Some(action) = RuleAction::of(rule) else {
            continue;
        };
        if let Stepped::Stale = action.step(ctx, input, rule, st, w, book).await? {
            return Ok(None);
        }
    }
    Ok(Some(declined))
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
    let from = d.resource_version();
    let Some(started) = status::apply_if_unchanged(&api, &d.name_any(), from.as_deref(), &st)
        .await
        .map_err(Error::Kube)?
    else {
        return Ok(None);
    };
    ctx.copies.wrote(from.as_deref(), &started);
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

/// Labels a finished delivery, which drops it from this controller's watch (and memory).
async fn mark_finished(ctx: &Context, d: &WebhookDelivery) -> Result<(), Error> {
    ctx.copies.forget(d);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::delivery::{ANNOTATION_REPLAY, WebhookDeliverySpec};

    fn delivery() -> WebhookDelivery {
        let mut d = WebhookDelivery::new(
            "r-1",
            WebhookDeliverySpec::sample("r", "e", "BUILD_UPLOAD_STATE_UPDATED", ""),
        );
        d.metadata.generation = Some(1);
        d
    }

    #[test]
    fn a_status_write_wakes_no_pass_but_a_spec_change_or_a_replay_does() {
        let d = delivery();
        let mut written = d.clone();
        written.status = Some(WebhookDeliveryStatus {
            phase: Phase::Running,
            ..Default::default()
        });
        written.metadata.resource_version = Some("9".into());
        assert_eq!(wakes_on(&d), wakes_on(&written));
        let mut changed = d.clone();
        changed.metadata.generation = Some(2);
        assert_ne!(wakes_on(&d), wakes_on(&changed));
        let mut replayed = d.clone();
        replayed
            .annotations_mut()
            .insert(ANNOTATION_REPLAY.into(), "1".into());
        assert_ne!(wakes_on(&d), wakes_on(&replayed));
    }
}

//! One rule's action, whichever kind, taking its step in a pass: a Job and an object are created once
//! and then followed; an HTTP request is sent once per attempt. Every kind reports what it did and
//! wants into the pass's [`Bookkeeping`].

use super::create::ActionInput;
use super::schedule::Bookkeeping;
use super::state::{self, AfterAttempt};
use super::writer::{Writer, save_outcome};
use super::{http_call, jobs, resources};
use crate::actions::EventContext;
use crate::actions::http;
use crate::controllers::Error;
use crate::controllers::context::Context;
use crate::resources::delivery::{ActionState, WebhookDeliveryStatus};
use crate::resources::route::{HttpAction, JobAction, ResourceAction, Rule};
use crate::resources::{WebhookDelivery, WebhookRoute};
use kube::ResourceExt;
use std::time::Duration;

/// The action of a rule.
#[derive(Clone, Copy)]
pub enum RuleAction<'a> {
    /// Create a Job and follow it.
    Job(&'a JobAction),
    /// Create an object and follow it.
    Resource(&'a ResourceAction),
    /// Send a request.
    Http(&'a HttpAction),
}

impl<'a> RuleAction<'a> {
    /// The action `rule` names (the schema allows exactly one).
    pub fn of(rule: &'a Rule) -> Option<Self> {
        if let Some(job) = &rule.job {
            Some(RuleAction::Job(job))
        } else if let Some(resource) = &rule.resource {
            Some(RuleAction::Resource(resource))
        } else {
            rule.http.as_ref().map(RuleAction::Http)
        }
    }
}

/// What every action of one pass is made from.
pub struct StepInput<'a> {
    /// The delivery, as read at the start of the pass.
    pub delivery: &'a WebhookDelivery,
    /// Its route.
    pub route: &'a WebhookRoute,
    /// Event data (enriched, if it was).
    pub event: &'a EventContext<'a>,
    /// Whether a scheduled retry is due (or none is scheduled).
    pub retry_due: bool,
    /// The pass's time, as written in status.
    pub now: &'a str,
}

impl<'a> StepInput<'a> {
    /// The input of `rule`'s `action` that creates an object.
    fn of<A>(&self, rule: &'a Rule, action: &'a A) -> ActionInput<'a, A> {
        ActionInput {
            delivery: self.delivery,
            route: self.route,
            rule,
            action,
            event: self.event,
        }
    }
}

/// Whether the pass goes on after an action's step.
#[must_use]
pub enum Stepped {
    /// On to the next action.
    Next,
    /// A write found a newer version than the one decided on: start again from a fresh read.
    Stale,
}

impl RuleAction<'_> {
    /// Advances `rule`'s action one step: start it, or observe it, or retry it; an HTTP attempt is
    /// recorded in status before and after it is sent, a created object by the pass's final write.
    pub async fn step(
        self,
        ctx: &Context,
        input: &StepInput<'_>,
        rule: &Rule,
        st: &mut WebhookDeliveryStatus,
        w: &mut Writer<'_>,
        book: &mut Bookkeeping,
    ) -> Result<Stepped, Error> {
        let a = state::entry(&mut st.actions, rule);
        let step = match self {
            RuleAction::Http(action) => {
                return http_step(ctx, input, rule, action, st, w, book).await;
            }
            RuleAction::Job(action) => {
                jobs::step(ctx, &input.of(rule, action), a, input.now).await?
            }
            RuleAction::Resource(action) => {
                resources::step(ctx, &input.of(rule, action), a, input.now).await?
            }
        };
        match step {
            // Recorded by the pass's one status write at its end, not by a write of its own: the name is
            // deterministic, so should that write never happen (a crash, a lost write), the next pass's
            // create is AlreadyExists and adopts the object this delivery owns. Never made twice either way.
            jobs::JobStep::Created => book.worked(),
            jobs::JobStep::Observed => {}
            jobs::JobStep::RetryLater(why) => book.retry_later(a, why, input.now),
        }
        Ok(Stepped::Next)
    }
}

/// One HTTP attempt: recorded `InFlight`, sent, and its outcome recorded before anything else.
async fn http_step(
    ctx: &Context,
    input: &StepInput<'_>,
    rule: &Rule,
    action: &HttpAction,
    st: &mut WebhookDeliveryStatus,
    w: &mut Writer<'_>,
    book: &mut Bookkeeping,
) -> Result<Stepped, Error> {
    let now = input.now;
    let max = http::max_attempts(action);
    let a = state::entry(&mut st.actions, rule);
    if a.state == ActionState::InFlight {
        // Seen on a copy that wins its write below: the attempt before was interrupted.
        if let AfterAttempt::Retry { .. } = state::interrupted_attempt(a, max, now) {
            book.want_retry(Duration::ZERO);
        }
        return Ok(Stepped::Next);
    }
    if !input.retry_due {
        return Ok(Stepped::Next);
    }
    book.worked();
    let namespace = input.delivery.namespace().unwrap_or_default();
    let request =
        match http_call::prepare(ctx, &namespace, input.route, action, input.event).await? {
            http_call::Prepared::Request(r) => r,
            http_call::Prepared::Missing(error) => {
                a.attempts += 1;
                let after = state::retry_or_fail(a, "HttpSecretNotFound", &error, max, now, None);
                if let AfterAttempt::Retry { .. } = after {
                    book.retry_after_attempt(a.attempts);
                }
                return Ok(Stepped::Next);
            }
            http_call::Prepared::Invalid(why) => {
                a.attempts += 1;
                state::transition(a, ActionState::Failed, Some(why), now);
                return Ok(Stepped::Next);
            }
        };
    state::start_http_attempt(a, now);
    if !w.save(st).await? {
        return Ok(Stepped::Stale);
    }
    let outcome = http_call::send(ctx, &request).await;
    let a = state::entry(&mut st.actions, rule);
    let after = state::finish_http_attempt(a, &outcome, max, now);
    book.after_http_attempt(a, after);
    // The outcome is written before anything else happens, so no later pass repeats the call.
    if !save_outcome(ctx, w, st, rule).await? {
        return Ok(Stepped::Stale);
    }
    Ok(Stepped::Next)
}

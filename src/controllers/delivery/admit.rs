//! Per rule, before its action takes a step (pure): whether its `when` lets it run, and whether it may
//! start now.

use super::enrich::{Enriched, RequiredMissing, required_missing};
use super::schedule::Bookkeeping;
use super::state::{self, Why};
use crate::actions::EventContext;
use crate::actions::when::{COST_LIMIT, evaluate};
use crate::resources::delivery::{ActionState, ActionStatus};
use crate::resources::route::{EnrichPolicy, Rule};

/// What a rule's `when` decided.
#[derive(Debug, PartialEq, Eq)]
pub enum When {
    /// No `when`, already decided earlier (the action started), or true.
    Run,
    /// False: the rule is dropped from the plan.
    Declined,
    /// It could not be evaluated: the action fails.
    Failed(Why),
}

/// Decides `when`: after enrichment, before the action starts; never again once it started. A rule that
/// requires enrichment it does not have is not asked yet.
pub fn decide_when(rule: &Rule, actions: &[ActionStatus], event: &EventContext<'_>) -> When {
    let Some(when) = &rule.when else {
        return When::Run;
    };
    if !state::not_started(actions, rule)
        || rule.enrich == EnrichPolicy::Required && event.enrichment.is_none()
    {
        return When::Run;
    }
    match evaluate(when, event, COST_LIMIT) {
        Ok(true) => When::Run,
        Ok(false) => When::Declined,
        Err(e) => When::Failed(Why::new(e.reason(), format!("when: {e}"))),
    }
}

/// What the pass knows that decides whether an action may start.
pub struct Admission<'a> {
    /// Whether the route is suspended now.
    pub suspended: bool,
    /// What enrichment came to in this pass.
    pub enriched: &'a Enriched,
    /// Whether a scheduled retry is due (or none is scheduled).
    pub retry_due: bool,
    /// The delivery's passes with work before this one.
    pub attempts_so_far: i32,
    /// Passes before a transiently failing delivery gives up.
    pub max_attempts: i32,
    /// Whether the route names a credential.
    pub has_credential: bool,
}

/// Whether `rule`'s action `a` takes a step in this pass. It does not when it is done, when it would
/// start on a suspended route (it waits, `Pending`), or when it would start without the enrichment it
/// requires (it waits for a retry, or fails).
pub fn admit(
    rule: &Rule,
    a: &mut ActionStatus,
    pass: &Admission<'_>,
    book: &mut Bookkeeping,
    now: &str,
) -> bool {
    if a.state.is_done() {
        return false;
    }
    let starting = a.job_name.is_none() && rule.job.is_some()
        || a.resource.is_none() && rule.resource.is_some()
        || rule.http.is_some();
    if starting && pass.suspended && a.state != ActionState::InFlight {
        // Suspended mid-delivery: what runs is still followed, nothing new starts.
        let why = Why::new(
            super::suspend::REASON,
            "the route is suspended (spec.suspend: true)",
        );
        state::transition(a, ActionState::Pending, Some(why), now);
        return false;
    }
    if starting && rule.enrich == EnrichPolicy::Required && pass.enriched.get().is_none() {
        match required_missing(
            pass.enriched,
            pass.retry_due,
            pass.attempts_so_far,
            pass.max_attempts,
            pass.has_credential,
        ) {
            RequiredMissing::Retry(why) => {
                state::transition(a, ActionState::Pending, Some(why), now);
                book.retry_after_attempt(pass.attempts_so_far + 1);
            }
            RequiredMissing::Fail(why) => state::transition(a, ActionState::Failed, Some(why), now),
            RequiredMissing::Wait => {}
        }
        return false;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::context::tests::{delivery, enrichment};
    use crate::controllers::delivery::gate::tests::rule;
    use crate::retry::Backoff;
    use std::time::Duration;

    fn rule_of(extra: serde_json::Value) -> Rule {
        serde_json::from_value(rule("build", "buildUploadStateUpdated", extra)).unwrap()
    }

    fn book() -> Bookkeeping {
        let backoff = Backoff {
            base: Duration::from_secs(2),
            max: Duration::from_secs(300),
        };
        Bookkeeping::new(backoff, 8, false)
    }

    fn pass(suspended: bool, enriched: &Enriched) -> Admission<'_> {
        Admission {
            suspended,
            enriched,
            retry_due: true,
            attempts_so_far: 0,
            max_attempts: 8,
            has_credential: true,
        }
    }

    #[test]
    fn when_is_asked_once_before_the_action_starts() {
        let d = delivery("build-upload-complete");
        let event = EventContext {
            delivery: &d,
            enrichment: None,
        };
        let yes = rule_of(serde_json::json!({"when": "event.type == 'buildUploadStateUpdated'"}));
        let no = rule_of(serde_json::json!({"when": "event.type == 'other'"}));
        assert_eq!(decide_when(&yes, &[], &event), When::Run);
        assert_eq!(decide_when(&no, &[], &event), When::Declined);
        let started = ActionStatus {
            rule: "build".into(),
            attempts: 1,
            ..Default::default()
        };
        assert_eq!(
            decide_when(&no, &[started], &event),
            When::Run,
            "never asked again"
        );
        let broken = rule_of(serde_json::json!({"when": "event.nothing.deeper"}));
        assert!(matches!(decide_when(&broken, &[], &event), When::Failed(_)));
    }

    #[test]
    fn when_waits_for_the_enrichment_a_rule_requires() {
        let d = delivery("build-upload-complete");
        let required = rule_of(
            serde_json::json!({"enrich": "Required", "when": "instance.platform == 'MAC_OS'"}),
        );
        let bare = EventContext {
            delivery: &d,
            enrichment: None,
        };
        assert_eq!(
            decide_when(&required, &[], &bare),
            When::Run,
            "not asked yet"
        );
        let e = enrichment("buildUploads-3f1c2a9e-7b44-4d2e-9a51-0c8e2f6d1b77");
        let enriched = EventContext {
            delivery: &d,
            enrichment: Some(&e),
        };
        assert_eq!(decide_when(&required, &[], &enriched), When::Declined);
    }

    #[test]
    fn a_suspended_route_starts_nothing_new_but_follows_what_runs() {
        let r = rule_of(serde_json::json!({}));
        let mut fresh = ActionStatus::default();
        let mut b = book();
        assert!(!admit(
            &r,
            &mut fresh,
            &pass(true, &Enriched::NotNeeded),
            &mut b,
            "now"
        ));
        assert_eq!(fresh.state, ActionState::Pending);
        assert_eq!(fresh.reason.as_deref(), Some(super::super::suspend::REASON));
        let mut running = ActionStatus {
            job_name: Some("job".into()),
            state: ActionState::Running,
            ..Default::default()
        };
        assert!(admit(
            &r,
            &mut running,
            &pass(true, &Enriched::NotNeeded),
            &mut b,
            "now"
        ));
        let mut done = ActionStatus {
            state: ActionState::Succeeded,
            ..Default::default()
        };
        assert!(!admit(
            &r,
            &mut done,
            &pass(false, &Enriched::NotNeeded),
            &mut b,
            "now"
        ));
        assert_eq!(b.retry_in, None);
    }

    #[test]
    fn a_required_enrichment_that_failed_for_now_retries_the_action_later() {
        let r = rule_of(serde_json::json!({"enrich": "Required"}));
        let failed = Enriched::No {
            message: "503".into(),
            transient: true,
        };
        let mut a = ActionStatus::default();
        let mut b = book();
        assert!(!admit(&r, &mut a, &pass(false, &failed), &mut b, "now"));
        assert_eq!(a.state, ActionState::Pending);
        assert!(b.retry_in.is_some_and(|d| d >= Duration::from_secs(2)));
        let lasting = Enriched::No {
            message: "404".into(),
            transient: false,
        };
        assert!(!admit(&r, &mut a, &pass(false, &lasting), &mut b, "now"));
        assert_eq!(a.state, ActionState::Failed);
    }
}

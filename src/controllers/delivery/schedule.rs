//! The end of a pass (pure): the retry bookkeeping every action reports into, the rules `when` dropped,
//! the phase, and when to look again.

use super::state::{self, AfterAttempt, Why};
use crate::resources::delivery::{ActionState, ActionStatus, Phase, WebhookDeliveryStatus};
use crate::retry::Backoff;
use kube::runtime::controller::Action;
use std::time::Duration;

/// A running Job is looked at this often even without a watch event, as a safety net.
pub const JOB_RECHECK: Duration = Duration::from_secs(300);

/// What the actions of one pass did and asked for: whether any did work (the pass counts as an attempt)
/// and the soonest retry any of them wants.
#[derive(Debug)]
pub struct Bookkeeping {
    backoff: Backoff,
    /// Passes before a transiently failing action gives up.
    max_attempts: i32,
    /// The soonest retry wanted, if any.
    pub retry_in: Option<Duration>,
    /// Whether an action did work (or enrichment was fetched).
    pub did_work: bool,
}

impl Bookkeeping {
    /// Bookkeeping of a pass retrying per `backoff` (its `max` also caps every wanted delay).
    pub fn new(backoff: Backoff, max_attempts: i32, did_work: bool) -> Self {
        Bookkeeping {
            backoff,
            max_attempts,
            retry_in: None,
            did_work,
        }
    }

    /// Notes that an action did work.
    pub fn worked(&mut self) {
        self.did_work = true;
    }

    /// Wants a retry after `wanted` (capped), unless an earlier one is wanted already.
    pub fn want_retry(&mut self, wanted: Duration) {
        let wanted = wanted.min(self.backoff.max);
        self.retry_in = Some(self.retry_in.map_or(wanted, |r| r.min(wanted)));
    }

    fn backoff_of(&self, attempt: i32) -> Duration {
        self.backoff.delay(u32::try_from(attempt).unwrap_or(1))
    }

    /// Wants a retry after the backoff of the `attempt`-th attempt.
    pub fn retry_after_attempt(&mut self, attempt: i32) {
        self.want_retry(self.backoff_of(attempt));
    }

    /// An HTTP attempt's outcome: a retry after its backoff, or longer if the server asked for longer.
    pub fn after_http_attempt(&mut self, a: &ActionStatus, after: AfterAttempt) {
        if let AfterAttempt::Retry { retry_after } = after {
            let asked = retry_after.map(Duration::from_secs);
            let wanted = crate::retry::honour(self.backoff_of(a.attempts), asked, self.backoff.max);
            self.want_retry(wanted);
        }
    }

    /// A Job or object that could not be created now: retried after a backoff, or failed once the
    /// action used its attempts.
    pub fn retry_later(&mut self, a: &mut ActionStatus, why: Why, now: &str) {
        self.worked();
        let attempts = a.attempts;
        if attempts >= self.max_attempts {
            let msg = format!("{}; gave up after {attempts} attempts", why.message);
            state::transition(a, ActionState::Failed, Some(Why::new(why.reason, msg)), now);
        } else {
            state::transition(a, ActionState::Pending, Some(why), now);
            self.retry_after_attempt(attempts);
        }
    }
}

/// Drops the rules whose `when` said no from the plan. `true`: none is left, and the delivery is
/// finished as `NoMatch`.
pub fn drop_declined(
    st: &mut WebhookDeliveryStatus,
    declined: &[String],
    generation: Option<i64>,
    now: &str,
) -> bool {
    if declined.is_empty() {
        return false;
    }
    st.actions.retain(|a| !declined.contains(&a.rule));
    st.matched_rules.retain(|r| !declined.contains(r));
    if !st.matched_rules.is_empty() {
        return false;
    }
    let why = "the rules whose match fits this event all have a `when` that is false";
    state::finish(st, Phase::NoMatch, Some(why.into()), generation, now);
    true
}

/// Schedule: the pass's attempt count, the next retry, and the phase that follows from the actions.
pub fn schedule(
    st: &mut WebhookDeliveryStatus,
    book: &Bookkeeping,
    retry_due: bool,
    generation: Option<i64>,
    now: jiff::Timestamp,
) {
    if book.did_work {
        st.attempts += 1;
    }
    let mut phase = state::phase_of(&st.actions);
    if !phase.is_terminal() && book.retry_in.is_none() && !retry_due {
        // Nothing ran because a retry is not due yet: keep the schedule.
    } else {
        st.next_retry_time = book.retry_in.map(|r| crate::time::format_ts(now + r));
    }
    if phase == Phase::Pending && st.attempts > 0 {
        phase = Phase::Running;
    }
    let message = if phase == Phase::Failed {
        state::failure_message(&st.actions)
    } else {
        None
    };
    state::finish(st, phase, message, generation, &crate::time::format_ts(now));
}

/// When to look at the delivery again after a pass that wrote `st`.
pub fn next_action(st: &WebhookDeliveryStatus, now: jiff::Timestamp) -> Action {
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

#[cfg(test)]
mod tests {
    use super::*;

    const T0: &str = "2026-01-01T00:00:00Z";

    fn book(did_work: bool) -> Bookkeeping {
        let backoff = Backoff {
            base: Duration::from_secs(2),
            max: Duration::from_secs(300),
        };
        Bookkeeping::new(backoff, 3, did_work)
    }

    fn now() -> jiff::Timestamp {
        crate::time::parse_ts(T0).unwrap()
    }

    fn action(rule: &str, state: ActionState) -> ActionStatus {
        ActionStatus {
            rule: rule.into(),
            state,
            ..Default::default()
        }
    }

    #[test]
    fn the_soonest_wanted_retry_wins_and_none_is_longer_than_the_cap() {
        let mut b = book(false);
        b.want_retry(Duration::from_secs(3600));
        assert_eq!(b.retry_in, Some(Duration::from_secs(300)));
        b.want_retry(Duration::from_secs(5));
        b.want_retry(Duration::from_secs(50));
        assert_eq!(b.retry_in, Some(Duration::from_secs(5)));
    }

    #[test]
    fn a_server_asking_for_longer_than_the_backoff_is_honoured_within_the_cap() {
        let mut b = book(false);
        let a = ActionStatus {
            attempts: 1,
            ..Default::default()
        };
        b.after_http_attempt(
            &a,
            AfterAttempt::Retry {
                retry_after: Some(60),
            },
        );
        assert_eq!(b.retry_in, Some(Duration::from_secs(60)));
        let mut capped = book(false);
        capped.after_http_attempt(
            &a,
            AfterAttempt::Retry {
                retry_after: Some(86_400),
            },
        );
        assert_eq!(capped.retry_in, Some(Duration::from_secs(300)));
    }

    #[test]
    fn a_create_refused_for_now_retries_until_its_attempts_are_used() {
        let mut b = book(false);
        let mut a = ActionStatus {
            attempts: 1,
            ..Default::default()
        };
        b.retry_later(&mut a, Why::new("Forbidden", "not yet"), T0);
        assert!(b.did_work);
        assert_eq!(a.state, ActionState::Pending);
        assert!(b.retry_in.is_some());
        a.attempts = 3;
        b.retry_later(&mut a, Why::new("Forbidden", "not yet"), T0);
        assert_eq!(a.state, ActionState::Failed);
        assert!(
            a.error
                .as_deref()
                .is_some_and(|e| e.contains("gave up after 3 attempts")),
            "{a:?}"
        );
    }

    #[test]
    fn declined_rules_leave_the_plan_and_a_plan_of_none_is_no_match() {
        let mut st = WebhookDeliveryStatus {
            matched_rules: vec!["a".into(), "b".into()],
            actions: vec![action("a", ActionState::Pending)],
            ..Default::default()
        };
        assert!(!drop_declined(&mut st, &[], None, T0));
        assert!(!drop_declined(&mut st, &["a".into()], None, T0));
        assert_eq!(st.matched_rules, ["b"]);
        assert!(st.actions.is_empty());
        assert!(drop_declined(&mut st, &["b".into()], None, T0));
        assert_eq!(st.phase, Phase::NoMatch);
    }

    #[test]
    fn a_pass_with_work_counts_an_attempt_runs_and_schedules_its_retry() {
        let mut st = WebhookDeliveryStatus {
            actions: vec![action("a", ActionState::Pending)],
            ..Default::default()
        };
        let mut b = book(true);
        b.want_retry(Duration::from_secs(10));
        schedule(&mut st, &b, true, None, now());
        assert_eq!(st.attempts, 1);
        assert_eq!(st.phase, Phase::Running);
        assert_eq!(st.next_retry_time.as_deref(), Some("2026-01-01T00:00:10Z"));
    }

    #[test]
    fn a_pass_before_its_retry_is_due_keeps_the_schedule() {
        let later = Some("2026-01-01T00:05:00Z".to_owned());
        let mut st = WebhookDeliveryStatus {
            actions: vec![action("a", ActionState::Pending)],
            next_retry_time: later.clone(),
            ..Default::default()
        };
        schedule(&mut st, &book(false), false, None, now());
        assert_eq!(st.next_retry_time, later);
        assert_eq!(st.phase, Phase::Pending);
        assert_eq!(
            next_action(&st, now()),
            Action::requeue(Duration::from_secs(300))
        );
    }

    #[test]
    fn a_failed_action_fails_the_delivery_with_its_message_and_nothing_is_retried() {
        let mut failed = action("a", ActionState::Failed);
        failed.error = Some("boom".into());
        let mut st = WebhookDeliveryStatus {
            actions: vec![failed],
            next_retry_time: Some(T0.into()),
            ..Default::default()
        };
        schedule(&mut st, &book(false), false, None, now());
        assert_eq!(st.phase, Phase::Failed);
        assert_eq!(st.next_retry_time, None);
        assert!(st.message.is_some());
        assert_eq!(next_action(&st, now()), Action::await_change());
    }
}

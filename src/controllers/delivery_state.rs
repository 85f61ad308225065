//! The pure half of the delivery controller: the per-action bookkeeping, the phase that follows from it,
//! and when to look again.

use crate::actions::http::AttemptOutcome;
use crate::resources::conditions::{self, Condition};
use crate::resources::delivery::{ActionStatus, Phase, WebhookDeliveryStatus};
use crate::resources::route::Rule;
use k8s_openapi::api::batch::v1::Job;

/// Action states as written in status.
pub mod state {
    /// Not started, or waiting for a retry.
    pub const PENDING: &str = "Pending";
    /// Started (a Job exists and has not finished).
    pub const RUNNING: &str = "Running";
    /// Done.
    pub const SUCCEEDED: &str = "Succeeded";
    /// Failed for good.
    pub const FAILED: &str = "Failed";
}

/// Whether an action needs no more work.
pub fn is_done(a: &ActionStatus) -> bool {
    a.state == state::SUCCEEDED || a.state == state::FAILED
}

/// The action entry of `rule`, created `Pending` if this is its first pass.
pub fn entry<'a>(actions: &'a mut Vec<ActionStatus>, rule: &Rule) -> &'a mut ActionStatus {
    let kind = if rule.job.is_some() { "Job" } else { "Http" };
    let idx = match actions.iter().position(|a| a.rule == rule.name) {
        Some(i) => i,
        None => {
            actions.push(ActionStatus {
                rule: rule.name.clone(),
                kind: kind.to_owned(),
                state: state::PENDING.to_owned(),
                ..ActionStatus::default()
            });
            actions.len() - 1
        }
    };
    &mut actions[idx]
}

/// Moves an action to `new_state`, stamping the time only on a change.
pub fn transition(a: &mut ActionStatus, new_state: &str, error: Option<String>, now: &str) {
    if a.state != new_state {
        a.state = new_state.to_owned();
        a.last_transition_time = Some(now.to_owned());
    }
    a.error = error;
}

/// What a Job's status says about the action.
pub fn job_outcome(job: &Job) -> (&'static str, Option<String>) {
    let conditions = job.status.as_ref().and_then(|s| s.conditions.as_ref());
    let holds = |t: &str| {
        conditions
            .into_iter()
            .flatten()
            .find(|c| c.type_ == t && c.status == "True")
    };
    if holds("Complete").is_some() || holds("SuccessCriteriaMet").is_some() {
        return (state::SUCCEEDED, None);
    }
    if let Some(c) = holds("Failed").or_else(|| holds("FailureTarget")) {
        let why = c.reason.clone().unwrap_or_else(|| "Failed".into());
        let detail = c.message.clone().unwrap_or_default();
        return (
            state::FAILED,
            Some(format!("Job failed: {why} {detail}").trim().to_owned()),
        );
    }
    (state::RUNNING, None)
}

/// Applies one HTTP attempt's outcome; returns the retry delay hint (server's `Retry-After`) if another
/// attempt is due.
pub fn record_http_attempt(
    a: &mut ActionStatus,
    outcome: &AttemptOutcome,
    max_attempts: i32,
    now: &str,
) -> Option<Option<u64>> {
    a.attempts += 1;
    match outcome {
        AttemptOutcome::Succeeded { status } => {
            a.http_status_code = Some(i32::from(*status));
            transition(a, state::SUCCEEDED, None, now);
            None
        }
        AttemptOutcome::Permanent { status, error } => {
            a.http_status_code = Some(i32::from(*status));
            transition(a, state::FAILED, Some(error.clone()), now);
            None
        }
        AttemptOutcome::Denied { error } => {
            transition(a, state::FAILED, Some(error.clone()), now);
            None
        }
        AttemptOutcome::Retryable {
            status,
            error,
            retry_after,
        } => {
            a.http_status_code = status.map(i32::from);
            if a.attempts >= max_attempts {
                transition(
                    a,
                    state::FAILED,
                    Some(format!("{error}; gave up after {} attempts", a.attempts)),
                    now,
                );
                None
            } else {
                transition(a, state::PENDING, Some(format!("{error}; will retry")), now);
                Some(*retry_after)
            }
        }
    }
}

/// The phase that follows from the actions: all done and none failed → `Succeeded`; all done with a
/// failure → `Failed`; otherwise `Running` once anything started, else `Pending`.
pub fn phase_of(actions: &[ActionStatus]) -> Phase {
    if actions.is_empty() {
        return Phase::Pending;
    }
    if actions.iter().all(is_done) {
        if actions.iter().any(|a| a.state == state::FAILED) {
            Phase::Failed
        } else {
            Phase::Succeeded
        }
    } else if actions
        .iter()
        .any(|a| a.state != state::PENDING || a.attempts > 0)
    {
        Phase::Running
    } else {
        Phase::Pending
    }
}

/// Sets phase, message, completion time and the `Completed` condition consistently.
pub fn finish(
    status: &mut WebhookDeliveryStatus,
    phase: Phase,
    message: Option<String>,
    generation: Option<i64>,
    now: &str,
) {
    status.phase = phase;
    if message.is_some() {
        status.message = message;
    }
    let completed = match phase {
        Phase::Succeeded => {
            Condition::new("Completed", true, "Succeeded", "every action succeeded")
        }
        Phase::NoMatch => Condition::new(
            "Completed",
            true,
            "NoMatch",
            "no rule of the route matched this event",
        ),
        Phase::Failed => Condition::new(
            "Completed",
            true,
            "Failed",
            status
                .message
                .clone()
                .unwrap_or_else(|| "an action failed".into()),
        ),
        Phase::Pending | Phase::Running => {
            Condition::new("Completed", false, phase.as_str(), "actions in progress")
        }
    };
    if phase.is_terminal() {
        status.next_retry_time = None;
        status.completion_time.get_or_insert_with(|| now.to_owned());
    } else {
        status.completion_time = None;
    }
    status.conditions = conditions::merge(&status.conditions, vec![completed], generation, now);
    status.observed_generation = generation;
}

/// A one-line summary of failed actions for `status.message`.
pub fn failure_message(actions: &[ActionStatus]) -> Option<String> {
    let failed: Vec<String> = actions
        .iter()
        .filter(|a| a.state == state::FAILED)
        .map(|a| {
            format!(
                "rule {}: {}",
                a.rule,
                a.error.as_deref().unwrap_or("failed")
            )
        })
        .collect();
    (!failed.is_empty()).then(|| failed.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::SecretKeySelector;
    use crate::resources::route::{EnrichPolicy, EventFilter, HttpAction};

    fn http_rule() -> Rule {
        Rule {
            name: "slack".into(),
            filter: Some(EventFilter::default()),
            enrich: EnrichPolicy::Optional,
            job: None,
            http: Some(HttpAction {
                url_secret_ref: SecretKeySelector {
                    name: "s".into(),
                    key: "url".into(),
                    namespace: None,
                },
                method: None,
                headers_secret_ref: None,
                body: None,
                content_type: None,
                timeout_seconds: None,
                max_attempts: None,
            }),
        }
    }

    fn retryable() -> AttemptOutcome {
        AttemptOutcome::Retryable {
            status: Some(500),
            error: "endpoint answered 500".into(),
            retry_after: None,
        }
    }

    #[test]
    fn three_server_errors_then_success_is_succeeded_with_four_attempts() {
        let mut actions = vec![];
        let a = entry(&mut actions, &http_rule());
        for _ in 0..3 {
            assert!(record_http_attempt(a, &retryable(), 5, "t").is_some());
        }
        assert!(
            record_http_attempt(a, &AttemptOutcome::Succeeded { status: 200 }, 5, "t").is_none()
        );
        assert_eq!(
            (a.attempts, a.state.as_str(), a.http_status_code),
            (4, state::SUCCEEDED, Some(200))
        );
        assert_eq!(phase_of(&actions), Phase::Succeeded);
    }

    #[test]
    fn endless_server_errors_fail_at_the_limit_with_the_reason() {
        let mut actions = vec![];
        let a = entry(&mut actions, &http_rule());
        let mut retries = 0;
        while record_http_attempt(a, &retryable(), 3, "t").is_some() {
            retries += 1;
        }
        assert_eq!(retries, 2);
        assert_eq!(a.state, state::FAILED);
        assert!(
            a.error
                .as_deref()
                .unwrap()
                .contains("gave up after 3 attempts")
        );
        assert_eq!(phase_of(&actions), Phase::Failed);
        assert!(failure_message(&actions).unwrap().contains("rule slack"));
    }

    #[test]
    fn a_client_error_fails_at_once() {
        let mut actions = vec![];
        let a = entry(&mut actions, &http_rule());
        let outcome = AttemptOutcome::Permanent {
            status: 404,
            error: "endpoint answered 404".into(),
        };
        assert!(record_http_attempt(a, &outcome, 5, "t").is_none());
        assert_eq!(a.state, state::FAILED);
    }

    #[test]
    fn job_conditions_decide_the_action_state() {
        let mut job = Job::default();
        assert_eq!(job_outcome(&job).0, state::RUNNING);
        job.status = Some(
            serde_json::from_value(
                serde_json::json!({"conditions": [{"type": "Complete", "status": "True"}]}),
            )
            .unwrap(),
        );
        assert_eq!(job_outcome(&job).0, state::SUCCEEDED);
        job.status = Some(
            serde_json::from_value(serde_json::json!({"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]}))
                .unwrap(),
        );
        let (s, why) = job_outcome(&job);
        assert_eq!(s, state::FAILED);
        assert!(why.unwrap().contains("BackoffLimitExceeded"));
    }

    #[test]
    fn terminal_phases_stamp_completion_and_condition() {
        let mut s = WebhookDeliveryStatus::default();
        finish(&mut s, Phase::Running, None, Some(1), "t1");
        assert!(s.completion_time.is_none());
        finish(&mut s, Phase::Succeeded, None, Some(1), "t2");
        assert_eq!(s.completion_time.as_deref(), Some("t2"));
        let c = conditions::find(&s.conditions, "Completed").unwrap();
        assert!(c.is_true());
        assert_eq!(c.last_transition_time, "t2");
    }
}

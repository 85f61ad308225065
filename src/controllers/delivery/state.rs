//! The pure half of the delivery controller: the per-action bookkeeping, the phase that follows from it,
//! and when to look again.

use crate::actions::http::AttemptOutcome;
use crate::resources::conditions::{self, Condition};
use crate::resources::delivery::{
    ActionKind, ActionState, ActionStatus, Phase, WebhookDeliveryStatus,
};
use crate::resources::route::Rule;
use k8s_openapi::api::batch::v1::Job;

/// The action entry of `rule`, created `Pending` if this is its first pass.
pub fn entry<'a>(actions: &'a mut Vec<ActionStatus>, rule: &Rule) -> &'a mut ActionStatus {
    let kind = if rule.job.is_some() {
        ActionKind::Job
    } else if rule.resource.is_some() {
        ActionKind::Resource
    } else {
        ActionKind::Http
    };
    let idx = match actions.iter().position(|a| a.rule == rule.name) {
        Some(i) => i,
        None => {
            actions.push(ActionStatus {
                rule: rule.name.clone(),
                kind,
                state: ActionState::Pending,
                ..ActionStatus::default()
            });
            actions.len() - 1
        }
    };
    &mut actions[idx]
}

/// Whether `rule`'s action has not started: no entry yet, or one still `Pending` with nothing done.
pub fn not_started(actions: &[ActionStatus], rule: &Rule) -> bool {
    actions
        .iter()
        .find(|a| a.rule == rule.name)
        .is_none_or(|a| {
            a.state == ActionState::Pending
                && a.attempts == 0
                && a.job_name.is_none()
                && a.resource.is_none()
        })
}

/// Why an action is where it is, for a person and as a reason word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Why {
    /// CamelCase reason.
    pub reason: &'static str,
    /// For a person.
    pub message: String,
}

impl Why {
    /// A reason with its message.
    pub fn new(reason: &'static str, message: impl Into<String>) -> Why {
        Why {
            reason,
            message: message.into(),
        }
    }
}

/// Moves an action to `new_state`, stamping the time only on a change.
pub fn transition(a: &mut ActionStatus, new_state: ActionState, why: Option<Why>, now: &str) {
    if a.state != new_state {
        a.state = new_state;
        a.last_transition_time = Some(now.to_owned());
    }
    match why {
        Some(w) => {
            a.reason = Some(w.reason.to_owned());
            a.error = Some(w.message);
        }
        None => {
            a.reason = None;
            a.error = None;
        }
    }
}

/// What a Job's status says about the action.
pub fn job_outcome(job: &Job) -> (ActionState, Option<Why>) {
    let conditions = job.status.as_ref().and_then(|s| s.conditions.as_ref());
    let holds = |t: &str| {
        conditions
            .into_iter()
            .flatten()
            .find(|c| c.type_ == t && c.status == "True")
    };
    if holds("Complete").is_some() || holds("SuccessCriteriaMet").is_some() {
        return (ActionState::Succeeded, None);
    }
    if let Some(c) = holds("Failed").or_else(|| holds("FailureTarget")) {
        let why = c.reason.clone().unwrap_or_else(|| "Failed".into());
        let detail = c.message.clone().unwrap_or_default();
        return (
            ActionState::Failed,
            Some(Why::new(
                "JobFailed",
                format!("Job failed: {why} {detail}").trim().to_owned(),
            )),
        );
    }
    (ActionState::Running, None)
}

/// Marks the start of an HTTP attempt: counted, and `InFlight` until its outcome is recorded.
pub fn start_http_attempt(a: &mut ActionStatus, now: &str) {
    a.attempts += 1;
    transition(a, ActionState::InFlight, None, now);
}

/// What to do after an HTTP attempt's outcome was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterAttempt {
    /// The action is done (succeeded or failed for good).
    Done,
    /// Try again, no sooner than the server's `Retry-After` (seconds) when it gave one.
    Retry {
        /// The server's hint.
        retry_after: Option<u64>,
    },
}

/// Applies the outcome of the attempt started by [`start_http_attempt`].
pub fn finish_http_attempt(
    a: &mut ActionStatus,
    outcome: &AttemptOutcome,
    max_attempts: i32,
    now: &str,
) -> AfterAttempt {
    match outcome {
        AttemptOutcome::Succeeded { status } => {
            a.http_status_code = Some(i32::from(*status));
            transition(a, ActionState::Succeeded, None, now);
            AfterAttempt::Done
        }
        AttemptOutcome::Permanent { status, error } => {
            a.http_status_code = Some(i32::from(*status));
            transition(
                a,
                ActionState::Failed,
                Some(Why::new("EndpointError", error.clone())),
                now,
            );
            AfterAttempt::Done
        }
        // Never retried: the address will be as refused next time.
        AttemptOutcome::Denied { error } => {
            transition(
                a,
                ActionState::Failed,
                Some(Why::new("EgressDenied", error.clone())),
                now,
            );
            AfterAttempt::Done
        }
        AttemptOutcome::Retryable {
            status,
            error,
            retry_after,
        } => {
            a.http_status_code = status.map(i32::from);
            retry_or_fail(
                a,
                "EndpointUnavailable",
                error,
                max_attempts,
                now,
                *retry_after,
            )
        }
    }
}

/// An attempt that could not be made or whose outcome is unknown counts like a retryable failure.
pub fn retry_or_fail(
    a: &mut ActionStatus,
    reason: &'static str,
    error: &str,
    max_attempts: i32,
    now: &str,
    retry_after: Option<u64>,
) -> AfterAttempt {
    if a.attempts >= max_attempts {
        transition(
            a,
            ActionState::Failed,
            Some(Why::new(
                reason,
                format!("{error}; gave up after {} attempts", a.attempts),
            )),
            now,
        );
        AfterAttempt::Done
    } else {
        transition(
            a,
            ActionState::Pending,
            Some(Why::new(reason, format!("{error}; will retry"))),
            now,
        );
        AfterAttempt::Retry { retry_after }
    }
}

/// An `InFlight` action seen on a fresh read: the operator stopped (crash, kill, lost leadership) between
/// writing the intent and recording the outcome. Whether the endpoint got the request is unknown; it
/// counts as a failed attempt and is retried (an HTTP action is at least once only across a crash).
pub fn interrupted_attempt(a: &mut ActionStatus, max_attempts: i32, now: &str) -> AfterAttempt {
    let error = format!(
        "attempt {} was interrupted before its outcome was recorded (the endpoint may have received it)",
        a.attempts
    );
    retry_or_fail(a, "AttemptInterrupted", &error, max_attempts, now, None)
}

/// The phase that follows from the actions: all done and none failed → `Succeeded`; all done with a
/// failure → `Failed`; otherwise `Running` once anything started, else `Pending`.
pub fn phase_of(actions: &[ActionStatus]) -> Phase {
    if actions.is_empty() {
        return Phase::Pending;
    }
    if actions.iter().all(|a| a.state.is_done()) {
        if actions.iter().any(|a| a.state == ActionState::Failed) {
            Phase::Failed
        } else {
            Phase::Succeeded
        }
    } else if actions
        .iter()
        .any(|a| a.state != ActionState::Pending || a.attempts > 0)
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
        Phase::Duplicate => Condition::new(
            "Completed",
            true,
            "Duplicate",
            status
                .message
                .clone()
                .unwrap_or_else(|| "the event already ran".into()),
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
        .filter(|a| a.state == ActionState::Failed)
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
            when: None,
            job: None,
            resource: None,
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
            start_http_attempt(a, "t");
            assert_eq!(a.state, ActionState::InFlight);
            assert!(matches!(
                finish_http_attempt(a, &retryable(), 5, "t"),
                AfterAttempt::Retry { .. }
            ));
        }
        start_http_attempt(a, "t");
        assert_eq!(
            finish_http_attempt(a, &AttemptOutcome::Succeeded { status: 200 }, 5, "t"),
            AfterAttempt::Done
        );
        assert_eq!(
            (a.attempts, a.state, a.http_status_code),
            (4, ActionState::Succeeded, Some(200))
        );
        assert_eq!(phase_of(&actions), Phase::Succeeded);
    }

    #[test]
    fn endless_server_errors_fail_at_the_limit_with_the_reason() {
        let mut actions = vec![];
        let a = entry(&mut actions, &http_rule());
        let mut retries = 0;
        loop {
            start_http_attempt(a, "t");
            if finish_http_attempt(a, &retryable(), 3, "t") == AfterAttempt::Done {
                break;
            }
            retries += 1;
        }
        assert_eq!(retries, 2);
        assert_eq!(a.state, ActionState::Failed);
        assert_eq!(a.reason.as_deref(), Some("EndpointUnavailable"));
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
        start_http_attempt(a, "t");
        assert_eq!(finish_http_attempt(a, &outcome, 5, "t"), AfterAttempt::Done);
        assert_eq!(a.state, ActionState::Failed);
        assert_eq!(a.reason.as_deref(), Some("EndpointError"));
    }

    #[test]
    fn an_interrupted_attempt_counts_and_is_retried_until_the_limit() {
        let mut actions = vec![];
        let a = entry(&mut actions, &http_rule());
        start_http_attempt(a, "t");
        assert!(matches!(
            interrupted_attempt(a, 2, "t"),
            AfterAttempt::Retry { .. }
        ));
        assert_eq!(a.reason.as_deref(), Some("AttemptInterrupted"));
        start_http_attempt(a, "t");
        assert_eq!(interrupted_attempt(a, 2, "t"), AfterAttempt::Done);
        assert_eq!(a.state, ActionState::Failed);
    }

    #[test]
    fn job_conditions_decide_the_action_state() {
        let mut job = Job::default();
        assert_eq!(job_outcome(&job).0, ActionState::Running);
        job.status = Some(
            serde_json::from_value(
                serde_json::json!({"conditions": [{"type": "Complete", "status": "True"}]}),
            )
            .unwrap(),
        );
        assert_eq!(job_outcome(&job).0, ActionState::Succeeded);
        job.status = Some(
            serde_json::from_value(serde_json::json!({"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]}))
                .unwrap(),
        );
        let (s, why) = job_outcome(&job);
        assert_eq!(s, ActionState::Failed);
        assert!(why.unwrap().message.contains("BackoffLimitExceeded"));
    }

    #[test]
    fn a_resource_action_has_its_kind_and_has_started_once_its_object_exists() {
        let rule = Rule {
            http: None,
            resource: Some(crate::resources::route::ResourceAction {
                template: serde_json::json!({"apiVersion": "tekton.dev/v1", "kind": "PipelineRun"}),
                succeeded_when: None,
                failed_when: None,
            }),
            ..http_rule()
        };
        let mut actions = vec![];
        assert!(not_started(&actions, &rule));
        let a = entry(&mut actions, &rule);
        assert_eq!(a.kind, ActionKind::Resource);
        a.resource = Some(crate::resources::delivery::ResourceStatus {
            api_version: "tekton.dev/v1".into(),
            kind: "PipelineRun".into(),
            name: "r-run-0123456789".into(),
            observed: None,
        });
        assert!(!not_started(&actions, &rule));
        assert_eq!(phase_of(&actions), Phase::Pending);
        let a = entry(&mut actions, &rule);
        transition(a, ActionState::Running, None, "t");
        assert_eq!(phase_of(&actions), Phase::Running);
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

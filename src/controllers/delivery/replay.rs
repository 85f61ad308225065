//! Replay on request: a new value of the annotation `asc.webhooks.dev/replay` runs the delivery's
//! matching rules once more. The run that ended moves to `status.history`, the status starts over for
//! the new run (rules are matched again against the route as it is now), and Jobs of replay `n` carry
//! `r<n>` in their names, so they are new Jobs. `spec` is never touched: the event stays what arrived.
//!
//! A replay starts only once the current run has finished (a value set while actions run waits for
//! them). Its start is one conditional status write, so two passes cannot both start it, and the value
//! it answered is stored: the same value again (a re-apply, a second `kubectl annotate`) runs nothing.

use crate::resources::WebhookDelivery;
use crate::resources::conditions::{self, Condition};
use crate::resources::delivery::{
    ANNOTATION_REPLAY, Phase, ReplayStatus, RunRecord, WebhookDeliveryStatus,
};
use crate::resources::names::LABEL_FINISHED;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};

/// Earlier runs kept in `status.history`; the oldest are dropped first.
pub const HISTORY_LIMIT: usize = 20;
/// Serialized bytes `status.history` may take, beyond its newest run: the delivery must stay inside the
/// room kept for status below the API server's object limit however large its payload.
pub const HISTORY_MAX_BYTES: usize = 16 * 1024;

/// The annotation value asking for a replay not yet started, if any. Pure.
pub fn requested(d: &WebhookDelivery) -> Option<&str> {
    let value = d.annotations().get(ANNOTATION_REPLAY)?.trim();
    if value.is_empty() {
        return None;
    }
    let last = d
        .status
        .as_ref()
        .and_then(|s| s.replays.as_ref())
        .and_then(|r| r.last_value.as_deref());
    (last != Some(value)).then_some(value)
}

/// Starts the replay asked for by `value`: the finished run goes to history, the status describes a
/// new, pending run. Pure.
pub fn begin(st: &mut WebhookDeliveryStatus, value: &str, generation: Option<i64>, now: &str) {
    let run = st.replay_count();
    st.history.push(RunRecord {
        replay: run,
        phase: st.phase,
        message: st.message.take(),
        actions: std::mem::take(&mut st.actions),
        completion_time: st.completion_time.take(),
    });
    let excess = st.history.len().saturating_sub(HISTORY_LIMIT);
    st.history.drain(..excess);
    while st.history.len() > 1 && serialized_len(&st.history) > HISTORY_MAX_BYTES {
        st.history.remove(0);
    }
    st.replays = Some(ReplayStatus {
        count: run + 1,
        last_value: Some(value.to_owned()),
        last_time: Some(now.to_owned()),
    });
    st.phase = Phase::Pending;
    st.attempts = 0;
    st.matched_rules.clear();
    st.next_retry_time = None;
    let completed = Condition::new(
        "Completed",
        false,
        "Replaying",
        format!("replay {} requested ({ANNOTATION_REPLAY}={value})", run + 1),
    );
    st.conditions = conditions::merge(&st.conditions, vec![completed], generation, now);
    st.observed_generation = generation;
}

fn serialized_len(history: &[RunRecord]) -> usize {
    serde_json::to_vec(history).map_or(0, |v| v.len())
}

/// Removes the finished label from delivery `name`, which brings it back into the delivery
/// controller's watch (a watch with a label selector sends an object whose label stops matching
/// as added). A JSON merge patch: `null` removes the label whoever set it. Gone already is fine.
pub async fn unfinish(api: &Api<WebhookDelivery>, name: &str) -> Result<(), kube::Error> {
    let patch = serde_json::json!({"metadata": {"labels": {LABEL_FINISHED: null}}});
    match api
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.is_not_found() => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::delivery::{ActionKind, ActionState, ActionStatus};

    fn finished(annotation: Option<&str>) -> WebhookDelivery {
        let route = crate::receiver::record::tests::route();
        let event = crate::asc::event::WebhookEvent::parse(bytes::Bytes::from_static(
            include_bytes!("../../../tests/fixtures/asc/events/build-upload-complete.json"),
        ))
        .unwrap();
        let mut d = crate::receiver::record::build_delivery(&route, &event, None, "t0");
        if let Some(v) = annotation {
            d.metadata.annotations = Some([(ANNOTATION_REPLAY.to_owned(), v.to_owned())].into());
        }
        let mut st = WebhookDeliveryStatus {
            matched_rules: vec!["submit".into()],
            attempts: 1,
            actions: vec![ActionStatus {
                rule: "submit".into(),
                kind: ActionKind::Job,
                state: ActionState::Succeeded,
                job_name: Some("release-submit-abc".into()),
                attempts: 1,
                ..Default::default()
            }],
            ..Default::default()
        };
        crate::controllers::delivery::state::finish(&mut st, Phase::Succeeded, None, Some(1), "t1");
        d.status = Some(st);
        d
    }

    #[test]
    fn a_new_annotation_value_asks_for_a_replay_and_the_same_value_again_does_not() {
        assert_eq!(requested(&finished(None)), None);
        assert_eq!(requested(&finished(Some(" "))), None);
        let mut d = finished(Some("1"));
        assert_eq!(requested(&d), Some("1"));
        let st = d.status.as_mut().unwrap();
        begin(st, "1", Some(1), "t2");
        assert_eq!(
            requested(&d),
            None,
            "the value it answered runs nothing again"
        );
        d.metadata.annotations = Some([(ANNOTATION_REPLAY.to_owned(), "2".to_owned())].into());
        assert_eq!(requested(&d), Some("2"));
    }

    #[test]
    fn a_replay_keeps_the_finished_run_in_history_and_starts_a_fresh_one() {
        let mut d = finished(Some("1"));
        let st = d.status.as_mut().unwrap();
        begin(st, "1", Some(1), "t2");
        assert_eq!(st.phase, Phase::Pending);
        assert!(
            st.actions.is_empty() && st.matched_rules.is_empty() && st.completion_time.is_none()
        );
        assert_eq!(st.attempts, 0);
        let replays = st.replays.clone().unwrap();
        assert_eq!(
            (replays.count, replays.last_value.as_deref()),
            (1, Some("1"))
        );
        assert_eq!(st.history.len(), 1);
        assert_eq!(st.history[0].replay, 0);
        assert_eq!(st.history[0].phase, Phase::Succeeded);
        assert_eq!(
            st.history[0].actions[0].job_name.as_deref(),
            Some("release-submit-abc")
        );
        assert_eq!(st.history[0].completion_time.as_deref(), Some("t1"));
        let c = conditions::find(&st.conditions, "Completed").unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "Replaying")
        );
        assert_eq!(st.replay_count(), 1);
    }

    #[test]
    fn history_is_bounded() {
        let mut st = finished(None).status.unwrap();
        for n in 0..(HISTORY_LIMIT + 3) {
            begin(&mut st, &n.to_string(), None, "t");
            st.phase = Phase::Succeeded;
        }
        assert_eq!(st.history.len(), HISTORY_LIMIT);
        assert_eq!(st.history[0].replay, 3, "the oldest runs went first");
        assert_eq!(st.replay_count(), i32::try_from(HISTORY_LIMIT + 3).unwrap());

        // Runs with many long errors are bounded by size too; the newest always stays.
        let mut st = finished(None).status.unwrap();
        for n in 0..HISTORY_LIMIT {
            st.actions = (0..32)
                .map(|r| ActionStatus {
                    rule: format!("rule-{r}"),
                    error: Some("e".repeat(300)),
                    ..Default::default()
                })
                .collect();
            begin(&mut st, &n.to_string(), None, "t");
        }
        assert!(!st.history.is_empty());
        assert!(
            st.history.len() == 1 || serialized_len(&st.history) <= HISTORY_MAX_BYTES,
            "{} bytes",
            serialized_len(&st.history)
        );
        assert_eq!(
            st.history.last().unwrap().replay,
            i32::try_from(HISTORY_LIMIT).unwrap() - 1
        );
    }
}

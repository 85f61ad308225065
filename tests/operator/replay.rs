//! Replay on request: a new value of `asc.webhooks.dev/replay` on a finished delivery runs its matching
//! rules once more (new Jobs, HTTP calls again, earlier results kept in `status.history`), through the
//! annotation itself or the `replay` subcommand; the same value again runs nothing.

use crate::harness::*;
use crate::recorder::Recorder;
use asc_webhook_operator::resources::WebhookDelivery;
use asc_webhook_operator::resources::delivery::{ANNOTATION_REPLAY, DeliverySource, Phase};
use kube::api::{Api, Patch, PatchParams};
use std::time::Duration;
use testkit::apiserver::FakeApiServer;

const RULES: &str = "    - name: build\n      match: {eventTypes: [BUILD_UPLOAD_STATE_UPDATED]}\n      job:\n        template:\n          spec:\n            template:\n              spec:\n                restartPolicy: Never\n                containers: [{name: run, image: busybox}]\n    - name: notify\n      match: {eventTypes: [BUILD_UPLOAD_STATE_UPDATED]}\n      http: {urlSecretRef: {name: slack, key: url}, body: '{\"id\": \"{{ event.id }}\"}'}\n";
const EVENT: &[u8] = br#"{"data":{"type":"buildUploadStateUpdated","id":"evt-replay","attributes":{"oldState":"PROCESSING","newState":"COMPLETE"}}}"#;
const WAIT: Duration = Duration::from_secs(20);

/// A route with a Job rule and an HTTP rule, one event run to the end (Job completed): the delivery's
/// name.
async fn finished_delivery(api: &FakeApiServer, op: &Operator, hooks: &Recorder) -> String {
    wait_route_ready(api, "r").await;
    let (status, answer) = op.post("r", EVENT, WEBHOOK_SECRET).await;
    assert_eq!(status, 202, "{answer}");
    let name = answer["delivery"].as_str().unwrap().to_owned();
    let job = eventually("the Job is created", WAIT, || {
        let j = jobs(api).first().and_then(|j| j.metadata.name.clone());
        async move { j }
    })
    .await;
    complete_job(api, &job, true).await;
    finished(api, &name, 0).await;
    assert_eq!(hooks.requests().len(), 1);
    name
}

/// Waits until run `replay` of the delivery succeeded and is labelled finished again.
async fn finished(api: &FakeApiServer, name: &str, replay: i32) -> WebhookDelivery {
    eventually(
        "the run succeeded and the delivery is finished",
        WAIT,
        || {
            let d = get_delivery(api, name);
            async move {
                let d = d?;
                let s = d.status.as_ref()?;
                let done = s.phase == Phase::Succeeded
                    && s.replay_count() == replay
                    && d.metadata
                        .labels
                        .as_ref()
                        .is_some_and(|l| l.contains_key("asc.webhooks.dev/finished"));
                done.then_some(d)
            }
        },
    )
    .await
}

async fn staged(hooks: &Recorder) -> FakeApiServer {
    let api = fake_api().await;
    put_secret(&api, "hook-secret", &[("secret", WEBHOOK_SECRET)]).await;
    put_secret(&api, "slack", &[("url", &format!("{}/slack", hooks.url))]).await;
    route_with(&api, "r", RULES, "").await;
    api
}

async fn annotate(api: &FakeApiServer, name: &str, value: &str) {
    let deliveries: Api<WebhookDelivery> = Api::namespaced(api.client(), NS);
    let patch = serde_json::json!({"metadata": {"annotations": {ANNOTATION_REPLAY: value}}});
    deliveries
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

/// Completes the Job of replay `n` once it exists and waits for that run to finish.
async fn replay_runs(api: &FakeApiServer, name: &str, n: i32) -> WebhookDelivery {
    let job = eventually("the replay creates a new Job", WAIT, || {
        let j = jobs(api)
            .into_iter()
            .filter_map(|j| j.metadata.name)
            .find(|j| j.contains(&format!("-r{n}-")));
        async move { j }
    })
    .await;
    complete_job(api, &job, true).await;
    finished(api, name, n).await
}

#[tokio::test]
async fn a_new_replay_annotation_runs_the_actions_once_more_and_the_same_value_runs_nothing() {
    let hooks = Recorder::start().await;
    let api = staged(&hooks).await;
    let op = Operator::start(&api, &[]).await;
    let name = finished_delivery(&api, &op, &hooks).await;

    // `kubectl annotate` only: the finished label stays, and the operator brings the delivery back.
    annotate(&api, &name, "first").await;
    let d = replay_runs(&api, &name, 1).await;
    assert_eq!(jobs(&api).len(), 2, "one new Job");
    assert_eq!(hooks.requests().len(), 2, "the HTTP call ran again");
    let s = d.status.clone().unwrap();
    let replays = s.replays.clone().unwrap();
    assert_eq!(
        (replays.count, replays.last_value.as_deref()),
        (1, Some("first"))
    );
    assert_eq!(s.history.len(), 1, "the original run stays in history");
    assert_eq!(s.history[0].replay, 0);
    assert_eq!(s.history[0].phase, Phase::Succeeded);
    assert_eq!(s.history[0].actions.len(), 2);
    assert_ne!(
        s.history[0].actions.iter().find_map(|a| a.job_name.clone()),
        s.actions.iter().find_map(|a| a.job_name.clone()),
        "the replay's Job is a new one"
    );
    assert_eq!(d.spec.source, DeliverySource::Webhook, "spec is untouched");
    crate::apple_webhook::wait_event(&api, "ReplayStarted").await;

    // The same value again (a re-apply): nothing runs.
    annotate(&api, &name, "first").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(jobs(&api).len(), 2);
    assert_eq!(hooks.requests().len(), 2);
    assert_eq!(
        get_delivery(&api, &name)
            .unwrap()
            .status
            .unwrap()
            .replay_count(),
        1
    );
    let metrics = op.metrics().await;
    assert!(
        metrics.contains("asc_webhook_delivery_replays_total 1"),
        "{metrics}"
    );
    op.stop().await;
}

#[tokio::test]
async fn the_replay_command_runs_the_actions_once_more_and_the_same_value_runs_nothing() {
    let hooks = Recorder::start().await;
    let api = staged(&hooks).await;
    let op = Operator::start(&api, &[]).await;
    let name = finished_delivery(&api, &op, &hooks).await;

    let done = asc_webhook_operator::replay::request(api.client(), NS, &name, None)
        .await
        .unwrap();
    assert_eq!(done.value, "1", "the next integer");
    assert!(!done.unchanged);
    let d = replay_runs(&api, &name, 1).await;
    assert_eq!(jobs(&api).len(), 2);
    assert_eq!(hooks.requests().len(), 2);
    assert_eq!(d.status.unwrap().history.len(), 1);

    let again = asc_webhook_operator::replay::request(api.client(), NS, &name, Some("1"))
        .await
        .unwrap();
    assert!(again.unchanged, "{again}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(jobs(&api).len(), 2);
    assert_eq!(hooks.requests().len(), 2);

    let next = asc_webhook_operator::replay::request(api.client(), NS, &name, None)
        .await
        .unwrap();
    assert_eq!(next.value, "2");
    let d = replay_runs(&api, &name, 2).await;
    assert_eq!(jobs(&api).len(), 3);
    assert_eq!(hooks.requests().len(), 3);
    assert_eq!(d.status.unwrap().history.len(), 2);

    let missing = asc_webhook_operator::replay::request(api.client(), NS, "nope", None).await;
    assert!(
        missing.unwrap_err().to_string().contains("not found"),
        "a missing delivery is a clear error"
    );
    op.stop().await;
}

#[tokio::test]
async fn a_replay_asked_for_while_the_actions_run_starts_when_they_end() {
    let hooks = Recorder::start().await;
    let api = staged(&hooks).await;
    let op = Operator::start(&api, &[]).await;
    wait_route_ready(&api, "r").await;
    let (status, answer) = op.post("r", EVENT, WEBHOOK_SECRET).await;
    assert_eq!(status, 202, "{answer}");
    let name = answer["delivery"].as_str().unwrap().to_owned();
    let job = eventually("the Job is created", WAIT, || {
        let j = jobs(&api).first().and_then(|j| j.metadata.name.clone());
        async move { j }
    })
    .await;
    annotate(&api, &name, "early").await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let d = get_delivery(&api, &name).unwrap();
    let s = d.status.unwrap();
    assert_eq!(s.replay_count(), 0, "the running Job is not abandoned");
    assert_eq!(s.phase, Phase::Running);
    assert_eq!(jobs(&api).len(), 1);

    complete_job(&api, &job, true).await;
    let d = replay_runs(&api, &name, 1).await;
    let s = d.status.unwrap();
    assert_eq!(s.history.len(), 1);
    assert_eq!(s.history[0].phase, Phase::Succeeded);
    assert_eq!(jobs(&api).len(), 2);
    assert_eq!(hooks.requests().len(), 2);
    op.stop().await;
}

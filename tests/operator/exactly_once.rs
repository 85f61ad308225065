//! Exactly once on a real API server's terms: watch events arrive late, Jobs vanish after their TTL,
//! quota refuses for a while, and a name can be taken by someone else.

use crate::harness::*;
use crate::recorder::Recorder;
use asc_webhook_operator::naming;
use asc_webhook_operator::resources::delivery::{ActionState, Phase};
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, DeleteParams, PostParams};
use std::time::Duration;
use testkit::apiserver::{Fault, FaultRule, Verb};

const JOB_RULE: &str = "    - name: build\n      match: {eventTypes: [BUILD_UPLOAD_STATE_UPDATED]}\n      job:\n        template:\n          spec:\n            template:\n              spec:\n                restartPolicy: Never\n                containers: [{name: run, image: busybox}]\n";
const HTTP_RULE: &str = "    - name: notify\n      match: {eventTypes: [BUILD_UPLOAD_STATE_UPDATED]}\n      http: {urlSecretRef: {name: slack, key: url}, body: '{\"id\": \"{{ event.id }}\"}'}\n";

fn event(i: usize) -> Vec<u8> {
    format!(
        r#"{{"data":{{"type":"buildUploadStateUpdated","id":"evt-{i}","attributes":{{"oldState":"PROCESSING","newState":"COMPLETE"}}}}}}"#
    )
    .into_bytes()
}

async fn staged(rules: &str, hooks: Option<&Recorder>) -> testkit::apiserver::FakeApiServer {
    let api = fake_api().await;
    put_secret(&api, "hook-secret", &[("secret", WEBHOOK_SECRET)]).await;
    if let Some(h) = hooks {
        put_secret(&api, "slack", &[("url", &format!("{}/slack", h.url))]).await;
    }
    route_with(&api, "r", rules, "").await;
    api
}

async fn wait_delivery<F>(api: &testkit::apiserver::FakeApiServer, name: &str, what: &str, ok: F)
where
    F: Fn(&asc_webhook_operator::resources::WebhookDelivery) -> bool,
{
    eventually(what, Duration::from_secs(20), || {
        let d = get_delivery(api, name);
        let done = d.as_ref().is_some_and(&ok);
        async move { done.then_some(()) }
    })
    .await;
}

/// The measurement that found the bug: a Job rule and an HTTP rule on one route, five events, with the
/// delivery watch lagging. No pass triggered late may call Slack again.
#[tokio::test]
async fn a_lagging_watch_makes_one_http_call_and_one_job_per_event() {
    let hooks = Recorder::start().await;
    let api = staged(&format!("{JOB_RULE}{HTTP_RULE}"), Some(&hooks)).await;
    let op = Operator::start(&api, &[]).await;
    wait_route_ready(&api, "r").await;
    api.set_watch_delay(Duration::from_millis(400));
    let mut names = Vec::new();
    for i in 0..5 {
        let (status, answer) = op.post("r", &event(i), WEBHOOK_SECRET).await;
        assert_eq!(status, 202, "{answer}");
        names.push(answer["delivery"].as_str().unwrap().to_owned());
    }
    for name in &names {
        wait_delivery(
            &api,
            name,
            "the HTTP action succeeded and the Job runs",
            |d| {
                d.status.as_ref().is_some_and(|s| {
                    s.actions.len() == 2
                        && s.actions.iter().all(|a| {
                            matches!(a.state, ActionState::Succeeded | ActionState::Running)
                        })
                })
            },
        )
        .await;
    }
    // Stale passes keep arriving for a while after the work is done.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(hooks.requests().len(), 5, "one Slack message per event");
    assert_eq!(jobs(&api).len(), 5);
    for d in deliveries(&api) {
        let http = d
            .status
            .unwrap()
            .actions
            .into_iter()
            .find(|a| a.rule == "notify")
            .unwrap();
        assert_eq!(http.attempts, 1, "{http:?}");
    }
    // Passes read the delivery from the API server, so the late watch events only trigger passes that
    // find the work recorded; a write racing a pass is the next test.
    op.stop().await;
}

fn stale_writes(metrics: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("asc_webhook_controller_stale_writes_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Someone else writes the delivery after a pass read it and before the pass records its HTTP intent:
/// the pass loses its write, reads again, and the event still makes one HTTP call.
#[tokio::test]
async fn a_write_between_a_pass_read_and_its_intent_makes_the_pass_start_again_without_a_second_call()
 {
    let hooks = Recorder::start().await;
    let api = staged(HTTP_RULE, Some(&hooks)).await;
    let op = Operator::start(&api, &[]).await;
    wait_route_ready(&api, "r").await;
    // The pass's first status write is held back, so the other write lands between its read and it.
    api.add_fault(
        FaultRule::new(Fault::Delay(Duration::from_millis(1500)))
            .verb(Verb::Patch)
            .resource("webhookdeliveries")
            .subresource("status"),
    );
    let (status, answer) = op.post("r", &event(1), WEBHOOK_SECRET).await;
    assert_eq!(status, 202, "{answer}");
    let name = answer["delivery"].as_str().unwrap().to_owned();
    // The pass started from the copy the receiver handed over (or a read) and its write is held.
    eventually(
        "the pass's status write is held",
        Duration::from_secs(10),
        || {
            let held = api.faults_pending() == 0;
            async move { held.then_some(()) }
        },
    )
    .await;
    api.patch_object(
        "webhookdeliveries",
        NS,
        &name,
        serde_json::json!({"metadata": {"labels": {"team": "ios"}}}),
    )
    .unwrap();
    wait_delivery(&api, &name, "the delivery finishes", |d| {
        d.status.as_ref().is_some_and(|s| s.phase.is_terminal())
    })
    .await;
    let d = get_delivery(&api, &name).unwrap();
    let st = d.status.unwrap();
    assert_eq!(st.phase, Phase::Succeeded, "{st:?}");
    assert_eq!(st.actions[0].attempts, 1, "{st:?}");
    assert_eq!(hooks.requests().len(), 1, "one Slack message");
    let metrics = op.metrics().await;
    assert!(
        stale_writes(&metrics) > 0.0,
        "the racing write was not caught: {metrics}"
    );
    op.stop().await;
}

/// `ttlSecondsAfterFinished: 0` removes a finished Job at once; the delivery must still read success.
#[tokio::test]
async fn a_job_removed_by_its_ttl_after_succeeding_is_a_success() {
    let api = staged(JOB_RULE, None).await;
    let op = Operator::start(&api, &[]).await;
    wait_route_ready(&api, "r").await;
    let (_, answer) = op.post("r", &event(1), WEBHOOK_SECRET).await;
    let name = answer["delivery"].as_str().unwrap().to_owned();
    wait_delivery(&api, &name, "the Job runs", |d| {
        d.status
            .as_ref()
            .is_some_and(|s| s.actions.first().is_some_and(|a| a.job_name.is_some()))
    })
    .await;
    let job = naming::job_name("r", "build", "evt-1");
    // Both the completion and the deletion reach the operator only after the Job is gone.
    api.set_watch_delay(Duration::from_millis(300));
    complete_job(&api, &job, true).await;
    Api::<Job>::namespaced(api.client(), NS)
        .delete(&job, &DeleteParams::background())
        .await
        .unwrap();
    wait_delivery(&api, &name, "the delivery finishes", |d| {
        d.status.as_ref().is_some_and(|s| s.phase.is_terminal())
    })
    .await;
    let d = get_delivery(&api, &name).unwrap();
    assert_eq!(d.status.unwrap().phase, Phase::Succeeded);
    op.stop().await;
}

/// A Job that carries the name this delivery would use but belongs to nobody (or someone else) is not
/// reported as this delivery's work.
#[tokio::test]
async fn a_job_of_that_name_owned_by_someone_else_is_not_adopted() {
    let api = staged(JOB_RULE, None).await;
    let squatter: Job = serde_json::from_value(serde_json::json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": naming::job_name("r", "build", "evt-7"), "namespace": NS},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "x", "image": "busybox"}]}}}
    }))
    .unwrap();
    Api::<Job>::namespaced(api.client(), NS)
        .create(&PostParams::default(), &squatter)
        .await
        .unwrap();
    let op = Operator::start(&api, &[]).await;
    wait_route_ready(&api, "r").await;
    let (_, answer) = op.post("r", &event(7), WEBHOOK_SECRET).await;
    let name = answer["delivery"].as_str().unwrap().to_owned();
    wait_delivery(&api, &name, "the delivery fails", |d| {
        d.status.as_ref().is_some_and(|s| s.phase == Phase::Failed)
    })
    .await;
    let a = get_delivery(&api, &name).unwrap().status.unwrap().actions[0].clone();
    assert_eq!(a.reason.as_deref(), Some("JobNameTaken"), "{a:?}");
    op.stop().await;
}

/// A ResourceQuota's refusal is temporary: the Job is created once the quota allows it.
#[tokio::test]
async fn a_quota_refusal_is_retried_until_the_job_fits() {
    let api = staged(JOB_RULE, None).await;
    api.add_fault(
        FaultRule::new(Fault::StatusMessage(
            403,
            "jobs.batch \"x\" is forbidden: exceeded quota: team-quota, requested: count/jobs.batch=1, used: count/jobs.batch=10, limited: count/jobs.batch=10".into(),
        ))
        .verb(Verb::Create)
        .resource("jobs")
        .times(2),
    );
    let op = Operator::start(&api, &[]).await;
    wait_route_ready(&api, "r").await;
    let (_, answer) = op.post("r", &event(3), WEBHOOK_SECRET).await;
    let name = answer["delivery"].as_str().unwrap().to_owned();
    wait_delivery(
        &api,
        &name,
        "the Job is created after the quota refusals",
        |d| {
            d.status.as_ref().is_some_and(|s| {
                s.actions
                    .first()
                    .is_some_and(|a| a.state == ActionState::Running)
            })
        },
    )
    .await;
    let a = get_delivery(&api, &name).unwrap().status.unwrap().actions[0].clone();
    assert_eq!(a.attempts, 3, "{a:?}");
    assert_eq!(jobs(&api).len(), 1);
    op.stop().await;
}

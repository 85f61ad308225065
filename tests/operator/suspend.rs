//! `spec.suspend` on a route: events are recorded and held, nothing runs; resuming runs each held
//! delivery once, in the order received.

use crate::harness::*;
use asc_webhook_operator::resources::WebhookDelivery;
use asc_webhook_operator::resources::delivery::Phase;
use kube::api::{Api, Patch, PatchParams};
use std::time::Duration;

const JOB_RULE: &str = "    - name: build\n      match: {eventTypes: [BUILD_UPLOAD_STATE_UPDATED]}\n      job:\n        template:\n          spec:\n            template:\n              spec:\n                restartPolicy: Never\n                containers: [{name: run, image: busybox}]\n";

fn event(i: usize) -> Vec<u8> {
    format!(
        r#"{{"data":{{"type":"buildUploadStateUpdated","id":"held-{i}","attributes":{{"oldState":"PROCESSING","newState":"COMPLETE"}}}}}}"#
    )
    .into_bytes()
}

fn held(d: &WebhookDelivery) -> bool {
    d.status.as_ref().is_some_and(|s| {
        s.phase == Phase::Pending
            && s.conditions
                .iter()
                .any(|c| c.type_ == "Completed" && c.reason == "RouteSuspended")
    })
}

#[tokio::test]
async fn a_suspended_route_records_events_without_acting_and_resuming_runs_each_once_in_order() {
    let api = fake_api().await;
    put_secret(&api, "hook-secret", &[("secret", WEBHOOK_SECRET)]).await;
    route_with(&api, "r", JOB_RULE, "  suspend: true\n").await;
    let op = Operator::start(&api, &[]).await;
    let route = eventually("the route shows Suspended", Duration::from_secs(15), || {
        let r = get_route(&api, "r");
        async move { (r.status.as_ref()?.phase.as_deref() == Some("Suspended")).then_some(r) }
    })
    .await;
    let conditions = route.status.unwrap().conditions;
    assert!(
        conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True"),
        "a suspended route still receives: {conditions:?}"
    );

    let mut names = Vec::new();
    for i in 0..3 {
        let (status, answer) = op.post("r", &event(i), WEBHOOK_SECRET).await;
        assert_eq!(status, 202, "the receiver answers as always: {answer}");
        names.push(answer["delivery"].as_str().unwrap().to_owned());
    }
    for name in &names {
        eventually("the delivery is held", Duration::from_secs(15), || {
            let d = get_delivery(&api, name);
            async move { d.filter(held).map(|_| ()) }
        })
        .await;
    }
    // Held deliveries are looked at again only when the route changes: give a wrong controller the
    // time to act anyway.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(jobs(&api).is_empty(), "nothing runs while suspended");
    assert!(deliveries(&api).iter().all(held));

    let routes: Api<asc_webhook_operator::resources::WebhookRoute> =
        Api::namespaced(api.client(), NS);
    routes
        .patch(
            "r",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"suspend": false}})),
        )
        .await
        .unwrap();
    let mut job_names = Vec::new();
    for name in &names {
        let d = eventually("the delivery runs", Duration::from_secs(20), || {
            let d = get_delivery(&api, name);
            async move {
                d.filter(|d| {
                    d.status
                        .as_ref()
                        .is_some_and(|s| s.phase == Phase::Running && s.message.is_none())
                })
            }
        })
        .await;
        job_names.push(d.status.unwrap().actions[0].job_name.clone().unwrap());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let all_jobs = jobs(&api);
    assert_eq!(all_jobs.len(), 3, "one Job per event");
    // The fake API server's resourceVersion is one global counter: creation order.
    let created_at = |job: &str| -> u64 {
        let j = all_jobs
            .iter()
            .find(|j| j.metadata.name.as_deref() == Some(job))
            .unwrap();
        j.metadata
            .resource_version
            .as_deref()
            .unwrap()
            .parse()
            .unwrap()
    };
    let order: Vec<u64> = job_names.iter().map(|j| created_at(j)).collect();
    let mut sorted = order.clone();
    sorted.sort_unstable();
    assert_eq!(
        order, sorted,
        "Jobs start in the order events were received"
    );
    let r = get_route(&api, "r");
    assert_eq!(r.status.unwrap().phase.as_deref(), Some("Ready"));
    op.stop().await;
}

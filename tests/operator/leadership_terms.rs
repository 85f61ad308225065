//! One process, two leadership terms: the Lease is taken away and given back without a restart, and
//! the second term acts on the cluster as it is then, not as the first term last saw it.

use crate::harness::*;
use asc_webhook_operator::resources::WebhookDelivery;
use asc_webhook_operator::resources::delivery::Phase;
use asc_webhook_operator::resources::names::LABEL_FINISHED;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use std::time::Duration;
use testkit::apiserver::FakeApiServer;

const LEASE: &str = "asc-webhook-operator";
const IDENTITY: &str = "replica-a";
const JOB_RULE: &str = "    - name: build\n      match: {eventTypes: [BUILD_UPLOAD_STATE_UPDATED]}\n      job:\n        template:\n          spec:\n            template:\n              spec:\n                restartPolicy: Never\n                containers: [{name: run, image: busybox}]\n";

fn event(id: &str) -> Vec<u8> {
    format!(
        r#"{{"data":{{"type":"buildUploadStateUpdated","id":"{id}","attributes":{{"oldState":"PROCESSING","newState":"COMPLETE"}}}}}}"#
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

fn running(d: &WebhookDelivery) -> bool {
    d.status.as_ref().is_some_and(|s| s.phase == Phase::Running)
}

/// Writes the Lease as another replica holding it for `seconds` would.
fn hand_lease_to_other(api: &FakeApiServer, seconds: i64) {
    let now = jiff::Timestamp::now().to_string();
    let mut lease = api
        .get_object("leases", NS, LEASE)
        .expect("the lease exists");
    lease["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    lease["spec"] = serde_json::json!({
        "holderIdentity": "replica-b", "acquireTime": now, "renewTime": now,
        "leaseDurationSeconds": seconds, "leaseTransitions": 1,
    });
    api.put_object("leases", lease).expect("lease overwritten");
}

/// Whether this replica's controllers run, as its metrics say.
async fn leads(op: &Operator) -> bool {
    op.metrics().await.lines().any(|l| {
        l.starts_with(&format!("asc_webhook_leader{{replica=\"{IDENTITY}\"}}")) && l.ends_with(" 1")
    })
}

async fn wait_leading(op: &Operator, want: bool, what: &str) {
    eventually(what, Duration::from_secs(20), || async move {
        (leads(op).await == want).then_some(())
    })
    .await;
}

async fn set_suspend(api: &FakeApiServer, route: &str, suspend: bool) {
    Api::<asc_webhook_operator::resources::WebhookRoute>::namespaced(api.client(), NS)
        .patch(
            route,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"suspend": suspend}})),
        )
        .await
        .unwrap();
}

/// Finishes `name` as the other leader's delivery controller would: the status, then the label.
async fn finish_as_other_leader(api: &FakeApiServer, name: &str) {
    let deliveries: Api<WebhookDelivery> = Api::namespaced(api.client(), NS);
    let now = jiff::Timestamp::now().to_string();
    deliveries
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"status": {
                "phase": "Succeeded", "conditions": [{"type": "Completed", "status": "True",
                "reason": "Succeeded", "message": "done by the other leader",
                "lastTransitionTime": now}]}})),
        )
        .await
        .unwrap();
    deliveries
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"labels": {LABEL_FINISHED: "true"}}})),
        )
        .await
        .unwrap();
}

/// A delivery of `route` as the receiver would have recorded it, created directly (the receiver answers
/// 404 for a deleted route).
async fn record_directly(api: &FakeApiServer, like: &WebhookDelivery, name: &str, route: &str) {
    let mut d = WebhookDelivery::new(name, like.spec.clone());
    d.metadata.namespace = Some(NS.into());
    d.spec.route = route.into();
    d.spec.event_id = name.into();
    d.spec.received_at = jiff::Timestamp::now().to_string();
    Api::<WebhookDelivery>::namespaced(api.client(), NS)
        .create(&PostParams::default(), &d)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_second_term_in_the_same_process_acts_on_routes_and_deliveries_as_they_are_now() {
    let api = fake_api().await;
    put_secret(&api, "hook-secret", &[("secret", WEBHOOK_SECRET)]).await;
    route_with(&api, "resumed", JOB_RULE, "  suspend: true\n").await;
    route_with(&api, "suspended", JOB_RULE, "").await;
    route_with(&api, "deleted", JOB_RULE, "").await;
    let op = Operator::start(
        &api,
        &[
            "--leader-election",
            "--lease-namespace",
            NS,
            "--lease-duration-seconds",
            "3",
            "--identity",
            IDENTITY,
        ],
    )
    .await;
    wait_leading(&op, true, "the replica leads its first term").await;

    // First term: two events of the suspended route are held.
    let mut first_term = Vec::new();
    for i in 0..2 {
        let (status, answer) = op
            .post("resumed", &event(&format!("first-{i}")), WEBHOOK_SECRET)
            .await;
        assert_eq!(status, 202, "{answer}");
        first_term.push(answer["delivery"].as_str().unwrap().to_owned());
    }
    for name in &first_term {
        eventually("the delivery is held", Duration::from_secs(15), || {
            let d = get_delivery(&api, name);
            async move { d.filter(held).map(|_| ()) }
        })
        .await;
    }

    // Another replica leads for a while; meanwhile it resumes the route and finishes the held
    // deliveries, and the other two routes are suspended and deleted.
    hand_lease_to_other(&api, 30);
    wait_leading(&op, false, "the replica loses the lease").await;
    set_suspend(&api, "resumed", false).await;
    for name in &first_term {
        finish_as_other_leader(&api, name).await;
    }
    set_suspend(&api, "suspended", true).await;
    Api::<asc_webhook_operator::resources::WebhookRoute>::namespaced(api.client(), NS)
        .delete("deleted", &DeleteParams::default())
        .await
        .unwrap();
    // The other replica stops renewing: the lease comes back to this one.
    hand_lease_to_other(&api, 1);
    wait_leading(&op, true, "the replica leads again").await;

    // A new event of the resumed route runs at once: nothing of the route is held any more.
    let (status, answer) = op.post("resumed", &event("second-0"), WEBHOOK_SECRET).await;
    assert_eq!(status, 202, "{answer}");
    let resumed = answer["delivery"].as_str().unwrap().to_owned();
    let d = eventually(
        "the new delivery of the resumed route runs",
        Duration::from_secs(15),
        || {
            let d = get_delivery(&api, &resumed);
            async move { d.filter(|d| running(d) || held(d)) }
        },
    )
    .await;
    assert!(
        running(&d),
        "runs at once, not behind finished deliveries or a suspension that ended: {:?}",
        d.status
    );

    // A new event of the route suspended meanwhile is held.
    let (status, answer) = op
        .post("suspended", &event("second-1"), WEBHOOK_SECRET)
        .await;
    assert_eq!(status, 202, "{answer}");
    let suspended = answer["delivery"].as_str().unwrap().to_owned();
    let d = eventually(
        "the new delivery of the suspended route is looked at",
        Duration::from_secs(15),
        || {
            let d = get_delivery(&api, &suspended);
            async move { d.filter(|d| running(d) || held(d)) }
        },
    )
    .await;
    assert!(held(&d), "held by the suspension: {:?}", d.status);

    // A delivery of the route deleted meanwhile fails instead of running.
    let like = get_delivery(&api, &resumed).unwrap();
    record_directly(&api, &like, "orphan-delivery", "deleted").await;
    let d = eventually(
        "the delivery of the deleted route concludes",
        Duration::from_secs(15),
        || {
            let d = get_delivery(&api, "orphan-delivery");
            async move { d.filter(|d| d.status.as_ref().is_some_and(|s| s.phase != Phase::Pending)) }
        },
    )
    .await;
    let status = d.status.unwrap();
    assert_eq!(status.phase, Phase::Failed, "{status:?}");
    assert!(
        status
            .message
            .as_deref()
            .unwrap_or("")
            .contains("no longer exists"),
        "{status:?}"
    );
    let job_routes: Vec<String> = jobs(&api)
        .iter()
        .filter_map(|j| {
            j.metadata
                .labels
                .as_ref()?
                .get("asc.webhooks.dev/route")
                .cloned()
        })
        .collect();
    assert!(
        !job_routes
            .iter()
            .any(|r| r == "suspended" || r == "deleted"),
        "Jobs only for the resumed route: {job_routes:?}"
    );
    op.stop().await;
}

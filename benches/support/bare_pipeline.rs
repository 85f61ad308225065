//! What exactly-once needs from the API server, done by a bare client with no operator in between: per
//! event, create its `WebhookDelivery`, create its Job, write the delivery's status once (server-side
//! apply, as the operator does). Its own namespace, so the operator never sees these deliveries.
//!
//! It is the pace a real control plane allows for this work, with everything that comes with it (the
//! Job controller creating each Job's Pod and writing the Job's status, the garbage collector, every
//! watch): the line the operator's own burst is measured against, next to the bare client's Jobs alone.

use futures::StreamExt;
use hdrhistogram::Histogram;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::json;
use std::time::{Duration, Instant};

pub const NS: &str = "asc-bench-bare";

fn deliveries(client: &Client) -> Api<DynamicObject> {
    let ar = ApiResource {
        group: "asc.webhooks.dev".into(),
        version: "v1alpha1".into(),
        api_version: "asc.webhooks.dev/v1alpha1".into(),
        kind: "WebhookDelivery".into(),
        plural: "webhookdeliveries".into(),
    };
    Api::namespaced_with(client.clone(), NS, &ar)
}

/// The delivery the receiver would create for event `id` (the same fields, the same size).
fn delivery(id: &str) -> DynamicObject {
    let payload = json!({"data": {"type": "buildUploadStateUpdated", "id": id, "version": 1,
        "attributes": {"oldState": "PROCESSING", "newState": "COMPLETE"},
        "relationships": {"instance": {"data": {"type": "buildUploads", "id": format!("b-{id}")}}}}});
    serde_json::from_value(json!({
        "apiVersion": "asc.webhooks.dev/v1alpha1", "kind": "WebhookDelivery",
        "metadata": {"name": format!("bare-{id}"), "labels": {
            "asc.webhooks.dev/event-type": "buildUploadStateUpdated", "asc.webhooks.dev/route": "bare"}},
        "spec": {"route": "bare", "eventId": id, "eventType": "buildUploadStateUpdated",
            "instance": {"id": format!("b-{id}"), "type": "buildUploads"},
            "oldState": "PROCESSING", "newState": "COMPLETE", "payload": payload.to_string(),
            "receivedAt": "2026-01-01T00:00:00.000Z", "source": "Webhook"}
    }))
    .expect("delivery")
}

fn job(id: &str) -> Job {
    serde_json::from_value(json!({"metadata": {"name": format!("bare-{id}")},
        "spec": {"template": {"spec": {"restartPolicy": "Never",
        "containers": [{"name": "lane", "image": "busybox", "command": ["true"]}]}}}}))
    .expect("Job")
}

/// The status the operator writes once the Job exists.
fn running(id: &str) -> serde_json::Value {
    json!({"apiVersion": "asc.webhooks.dev/v1alpha1", "kind": "WebhookDelivery", "status": {
        "phase": "Running", "attempts": 1, "observedGeneration": 1, "matchedRules": ["build"],
        "actions": [{"rule": "build", "kind": "Job", "state": "Running", "attempts": 1,
            "jobName": format!("bare-{id}"), "lastTransitionTime": "2026-01-01T00:00:00Z"}],
        "conditions": [{"type": "Completed", "status": "False", "reason": "Running",
            "message": "actions in progress", "observedGeneration": 1,
            "lastTransitionTime": "2026-01-01T00:00:00Z"}]}})
}

/// One event's three writes; the time until its Job was created.
async fn one(client: &Client, id: &str) -> Duration {
    let t0 = Instant::now();
    deliveries(client)
        .create(&PostParams::default(), &delivery(id))
        .await
        .expect("delivery created");
    Api::<Job>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &job(id))
        .await
        .expect("Job created");
    let to_job = t0.elapsed();
    let apply = PatchParams::apply("asc-webhook-bench-bare").force();
    deliveries(client)
        .patch_status(&format!("bare-{id}"), &apply, &Patch::Apply(&running(id)))
        .await
        .expect("status written");
    to_job
}

/// `events` one at a time (delivery create → Job create, p50/p99), then `burst` events `in_flight` at
/// a time (events/s with all three writes done); the namespace is deleted afterwards.
pub async fn run(
    client: &Client,
    events: usize,
    burst: usize,
    in_flight: usize,
) -> (Histogram<u64>, f64) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}});
    namespaces
        .patch(
            NS,
            &PatchParams::apply("asc-webhook-bench").force(),
            &Patch::Apply(&ns),
        )
        .await
        .expect("namespace");
    let mut latency = Histogram::<u64>::new(3).expect("histogram");
    for i in 0..events {
        let took = one(client, &format!("one-{i}")).await;
        latency.record(took.as_micros() as u64).ok();
    }
    let t0 = Instant::now();
    futures::stream::iter(0..burst)
        .for_each_concurrent(in_flight, |i| async move {
            one(client, &format!("burst-{i}")).await;
        })
        .await;
    let rate = burst as f64 / t0.elapsed().as_secs_f64();
    // Gone before the operator starts, so its deletion does not load the server under the operator.
    let _ = namespaces.delete(NS, &DeleteParams::background()).await;
    let deadline = Instant::now() + Duration::from_secs(600);
    while namespaces.get_opt(NS).await.ok().flatten().is_some() {
        assert!(Instant::now() < deadline, "namespace {NS} not deleted");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    (latency, rate)
}

//! What the operator costs the API server: deliveries are counted from a watch, never listed, and a Ready
//! route's Secrets are not read again because its deliveries changed.

use crate::harness::*;
use asc_webhook_operator::resources::WebhookDelivery;
use asc_webhook_operator::resources::delivery::Phase;
use asc_webhook_operator::resources::names::LABEL_FINISHED;
use kube::ResourceExt;
use std::collections::BTreeMap;
use std::time::Duration;
use testkit::apiserver::Verb;

#[tokio::test]
async fn counting_deliveries_lists_nothing_and_rereads_no_secret() {
    let api = fake_api().await;
    put_secret(&api, "hook-secret", &[("secret", WEBHOOK_SECRET)]).await;
    put_secret(&api, "slack", &[("url", "https://hooks.slack.example/x")]).await;
    let rules = "    - name: never\n      match: {eventTypes: [SOMETHING_ELSE]}\n      http: {urlSecretRef: {name: slack, key: url}}\n";
    route_with(&api, "counted", rules, "").await;
    let op = Operator::start(&api, &[]).await;
    wait_route_ready(&api, "counted").await;
    api.clear_request_log();
    for i in 0..5 {
        let body = format!(
            r#"{{"data":{{"type":"buildUploadStateUpdated","id":"cost-{i}","attributes":{{"newState":"PROCESSING"}}}}}}"#
        );
        assert_eq!(
            op.post("counted", body.as_bytes(), WEBHOOK_SECRET).await.0,
            202
        );
    }
    eventually(
        "the route counted all five",
        Duration::from_secs(15),
        || {
            let r = get_route(&api, "counted");
            async move {
                r.status
                    .filter(|s| s.deliveries.received == 5 && s.deliveries.no_match == 5)
                    .map(|_| ())
            }
        },
    )
    .await;
    let log = api.request_log();
    let lists: Vec<_> = log
        .iter()
        .filter(|r| r.verb == Verb::List)
        .map(|r| r.path.clone())
        .collect();
    assert!(lists.is_empty(), "no LIST while counting: {lists:?}");
    // The receiver reads the webhook secret (its cache is seconds long); the route controller reads neither
    // Secret again just because deliveries changed.
    let secret_reads: Vec<_> = log
        .iter()
        .filter(|r| r.resource == "secrets" && r.verb == Verb::Get)
        .map(|r| r.name.clone())
        .collect();
    assert!(
        !secret_reads.iter().any(|n| n.as_deref() == Some("slack")),
        "the Slack Secret was read again: {secret_reads:?}"
    );
    assert!(secret_reads.len() <= 1, "{secret_reads:?}");
    op.stop().await;
}

/// Requests the operator's own clients sent, by verb and resource(/subresource), from the fake's log;
/// watches, discovery and the Lease left out (they cost per process, not per delivery).
fn operator_requests(api: &testkit::apiserver::FakeApiServer) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for r in api.request_log() {
        let ours = r.client().starts_with("asc-webhook-operator");
        if !ours || matches!(r.verb, Verb::Watch | Verb::Discovery) || r.resource == "leases" {
            continue;
        }
        let what = match r.subresource.as_str() {
            "" => format!("{:?} {}", r.verb, r.resource),
            sub => format!("{:?} {}/{sub}", r.verb, r.resource),
        };
        *counts.entry(what).or_default() += 1;
    }
    counts
}

fn is_write(what: &str) -> bool {
    !(what.starts_with("Get ") || what.starts_with("List "))
}

/// A route's status (its counts) is written for many deliveries at once, not per delivery; the
/// receiver reads the webhook Secret once per its cache, not per delivery.
fn per_delivery(what: &str) -> bool {
    !what.contains("webhookroutes") && !what.contains("secrets")
}

/// The route's status writes a phase may make however many deliveries changed: the deliveries' changes
/// wake the route at most once a second, and once more for the interval under way; its own status write
/// coming back on the route watch wakes it no more. A slow machine is allowed more seconds, never a write
/// per delivery.
fn at_most_one_a_second(since: std::time::Instant) -> usize {
    since.elapsed().as_secs() as usize + 2
}

/// Requests per delivery, per-delivery resources only, and the route status writes, of `counts`.
fn split(counts: &BTreeMap<String, usize>) -> (usize, usize, usize) {
    (
        total(counts, |k| per_delivery(k) && is_write(k)),
        total(counts, |k| per_delivery(k) && !is_write(k)),
        total(counts, |k| k.contains("webhookroutes")),
    )
}

fn total(counts: &BTreeMap<String, usize>, f: impl Fn(&str) -> bool) -> usize {
    counts.iter().filter(|(k, _)| f(k)).map(|(_, n)| n).sum()
}

const JOB_RULE: &str = "    - name: build\n      match: {eventTypes: [BUILD_UPLOAD_STATE_UPDATED]}\n      enrich: Never\n      job:\n        template:\n          spec:\n            template:\n              spec:\n                restartPolicy: Never\n                containers: [{name: run, image: busybox}]\n";

/// What exactly-once needs from the API server and no more: in a burst, the receiver's create, the Job's
/// create and one status write with the outcome per delivery, no read when the receiver that stored it
/// runs in the leader's process; once the Job completes,
/// the outcome and the finished label. No Event for a delivery that went well.
#[tokio::test]
async fn a_delivery_costs_three_writes_and_no_read_to_its_job_and_two_writes_to_finish() {
    const EVENTS: usize = 20;
    let api = fake_api().await;
    put_secret(&api, "hook-secret", &[("secret", WEBHOOK_SECRET)]).await;
    route_with(&api, "counted", JOB_RULE, "").await;
    let op = Operator::start(&api, &[]).await;
    wait_route_ready(&api, "counted").await;
    // Past the route controller's settling writes.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    api.clear_request_log();
    let counting = std::time::Instant::now();
    let posts = (0..EVENTS).map(|i| {
        let body = format!(
            r#"{{"data":{{"type":"buildUploadStateUpdated","id":"burst-{i}","attributes":{{"newState":"COMPLETE"}}}}}}"#
        );
        let op = &op;
        async move { op.post("counted", body.as_bytes(), WEBHOOK_SECRET).await.0 }
    });
    let answers = futures::future::join_all(posts).await;
    assert!(answers.iter().all(|s| *s == 202), "{answers:?}");
    let running = |d: &WebhookDelivery| {
        d.status.as_ref().is_some_and(|s| {
            s.phase == Phase::Running && s.actions.iter().all(|a| a.job_name.is_some())
        })
    };
    eventually(
        "every delivery records its Job",
        Duration::from_secs(20),
        || {
            let all = deliveries(&api);
            let done = all.len() == EVENTS && all.iter().all(running);
            async move { done.then_some(()) }
        },
    )
    .await;
    // Late passes (their own writes coming back on the watch) would land in this second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(jobs(&api).len(), EVENTS);
    let to_job = operator_requests(&api);
    let (writes, reads, route_writes) = split(&to_job);
    // The receiver hands what it created to the delivery controller of its own process, so a pass reads
    // a delivery back only when the watch brought it before the create's answer (rare: allow a few).
    assert!(
        writes <= 3 * EVENTS
            && reads <= EVENTS / 10
            && route_writes <= at_most_one_a_second(counting),
        "{writes} writes and {reads} reads for {EVENTS} deliveries, {route_writes} route status writes: {to_job:#?}"
    );
    assert!(
        total(&to_job, |k| k.contains("secrets")) <= 1,
        "{to_job:#?}"
    );
    assert_eq!(to_job.get("Create events"), None, "no Event: {to_job:#?}");

    api.clear_request_log();
    let counting = std::time::Instant::now();
    for job in jobs(&api) {
        complete_job(&api, &job.metadata.name.unwrap(), true).await;
    }
    eventually("every delivery finishes", Duration::from_secs(20), || {
        let all = deliveries(&api);
        let done = all.iter().all(|d| {
            d.labels().contains_key(LABEL_FINISHED)
                && d.status
                    .as_ref()
                    .is_some_and(|s| s.phase == Phase::Succeeded)
        });
        async move { done.then_some(()) }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let to_finish = operator_requests(&api);
    let (writes, reads, route_writes) = split(&to_finish);
    assert!(
        writes <= 2 * EVENTS && reads == 0 && route_writes <= at_most_one_a_second(counting),
        "{writes} writes and {reads} reads to finish {EVENTS} deliveries, {route_writes} route status writes: {to_finish:#?}"
    );
    assert_eq!(
        to_finish.get("Create events"),
        None,
        "no Event: {to_finish:#?}"
    );
    op.stop().await;
}

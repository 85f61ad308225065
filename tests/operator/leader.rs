//! Two replicas against one API server: both receive, exactly one reconciles, and stopping it hands over.

use crate::harness::*;
use crate::world::stage;
use asc_webhook_operator::resources::delivery::Phase;
use std::time::Duration;

fn reconciles(metrics: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| {
            l.starts_with("asc_webhook_controller_reconciles_total{controller=\"delivery\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

fn holder(api: &testkit::apiserver::FakeApiServer) -> Option<String> {
    api.get_object("leases", NS, "asc-webhook-operator")?["spec"]["holderIdentity"]
        .as_str()
        .map(str::to_owned)
}

/// Waits until `identity` holds the operator's Lease.
async fn wait_holder(api: &testkit::apiserver::FakeApiServer, identity: &str, seconds: u64) {
    eventually(
        &format!("{identity} holds the lease"),
        Duration::from_secs(seconds),
        || {
            let h = holder(api);
            async move { (h.as_deref() == Some(identity)).then_some(()) }
        },
    )
    .await;
}

async fn wait_done(api: &testkit::apiserver::FakeApiServer, name: &str) {
    eventually(&format!("{name} succeeds"), Duration::from_secs(20), || {
        let d = get_delivery(api, name);
        async move { d?.status.filter(|s| s.phase == Phase::Succeeded) }
    })
    .await;
}

#[tokio::test]
async fn only_the_leader_reconciles_and_stopping_it_hands_over() {
    let (api, asc, hooks, _) = stage("failure-notifier").await;
    let origin = origin_flags(&asc);
    let flags = |id: &'static str| {
        vec![
            "--leader-election",
            "--lease-namespace",
            NS,
            "--lease-duration-seconds",
            "3",
            "--identity",
            id,
            origin[0].as_str(),
            origin[1].as_str(),
        ]
    };
    let a = Operator::start(&api, &flags("replica-a")).await;
    wait_holder(&api, "replica-a", 10).await;
    let b = Operator::start(&api, &flags("replica-b")).await;

    // The follower receives; the leader does the work.
    let (status, answer) = b
        .post(
            "failure-notifier",
            &fixture_for_mock("build-upload-failed", &asc),
            WEBHOOK_SECRET,
        )
        .await;
    assert_eq!(status, 202);
    wait_done(&api, answer["delivery"].as_str().unwrap()).await;
    assert!(reconciles(&a.metrics().await) > 0, "the leader reconciled");
    assert_eq!(reconciles(&b.metrics().await), 0, "the follower did not");
    assert_eq!(hooks.to("/slack-webhook").len(), 1);

    a.stop().await;
    wait_holder(&api, "replica-b", 15).await;
    let (status, answer) = b
        .post(
            "failure-notifier",
            &fixture_for_mock("app-version-developer-rejected", &asc),
            WEBHOOK_SECRET,
        )
        .await;
    assert_eq!(status, 202);
    wait_done(&api, answer["delivery"].as_str().unwrap()).await;
    assert!(
        reconciles(&b.metrics().await) > 0,
        "the new leader reconciles"
    );
    assert_eq!(
        hooks.to("/slack-webhook").len(),
        2,
        "each event handled once"
    );
    b.stop().await;
}

#[tokio::test]
async fn a_leader_that_stops_renewing_is_replaced_after_the_lease_expires() {
    let (api, asc, hooks, _) = stage("failure-notifier").await;
    let origin = origin_flags(&asc);
    let dir = tempfile::tempdir().unwrap();
    let flags = |id: &'static str| {
        [
            "--leader-election",
            "--lease-namespace",
            NS,
            "--lease-duration-seconds",
            "2",
            "--identity",
            id,
            origin[0].as_str(),
            origin[1].as_str(),
        ]
    };
    let a = Process::start(&api, dir.path(), &flags("proc-a")).await;
    wait_holder(&api, "proc-a", 10).await;
    let b = Process::start(&api, dir.path(), &flags("proc-b")).await;
    a.kill().await;
    wait_holder(&api, "proc-b", 20).await;
    let (status, answer) = b
        .post(
            "failure-notifier",
            &fixture_for_mock("build-upload-failed", &asc),
            WEBHOOK_SECRET,
        )
        .await;
    assert_eq!(status, 202);
    wait_done(&api, answer["delivery"].as_str().unwrap()).await;
    assert_eq!(hooks.to("/slack-webhook").len(), 1);
    b.kill().await;
}

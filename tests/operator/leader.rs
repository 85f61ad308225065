//! Two replicas against one API server: both receive, exactly one reconciles, and stopping it hands over.

use crate::harness::*;
use crate::world::stage;
use asc_webhook_operator::leader::field_manager;
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

/// Whether the replica behind `admin_url` says it runs the controllers (a stopped one does not).
async fn is_leading(client: &reqwest::Client, admin_url: &str) -> bool {
    let Ok(resp) = client.get(format!("{admin_url}/metrics")).send().await else {
        return false;
    };
    resp.text().await.is_ok_and(|text| {
        text.lines()
            .any(|l| l.starts_with("asc_webhook_leader{replica=") && l.ends_with("} 1"))
    })
}

/// Polls every replica twice in the same order. Replica `i` leading on both passes, with replica `j`
/// leading in a read taken between them, proves both led at one instant (no false alarm from a
/// hand-over that happens during a sweep).
async fn both_led_at_once(client: &reqwest::Client, urls: &[String]) -> bool {
    let mut passes = [Vec::new(), Vec::new()];
    for pass in &mut passes {
        for url in urls {
            pass.push(is_leading(client, url).await);
        }
    }
    let [first, second] = passes;
    (0..urls.len()).any(|i| {
        first[i]
            && second[i]
            && (0..urls.len()).any(|j| (j > i && first[j]) || (j < i && second[j]))
    })
}

#[tokio::test]
async fn replicas_racing_for_a_released_lease_never_both_lead() {
    let api = fake_api().await;
    // Requests that take a different time each, as on a real API server, so the two waiting replicas'
    // reads and writes interleave differently from round to round.
    api.set_latency_jitter(Duration::from_millis(40));
    let flags = |id: &str| {
        vec![
            "--leader-election".to_owned(),
            "--lease-namespace".to_owned(),
            NS.to_owned(),
            "--lease-duration-seconds".to_owned(),
            "3".to_owned(),
            "--identity".to_owned(),
            id.to_owned(),
        ]
    };
    let start = |id: String| {
        let api = &api;
        let argv = flags(&id);
        async move {
            let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
            (id, Operator::start(api, &argv).await)
        }
    };
    let mut replicas = vec![
        start("race-0".into()).await,
        start("race-1".into()).await,
        start("race-2".into()).await,
    ];
    let urls = std::sync::Arc::new(std::sync::Mutex::new(
        replicas
            .iter()
            .map(|(_, op)| op.admin_url.clone())
            .collect::<Vec<_>>(),
    ));
    let done = tokio_util::sync::CancellationToken::new();
    let watcher = {
        let urls = urls.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut overlaps = 0;
            while !done.is_cancelled() {
                let snapshot = urls.lock().unwrap().clone();
                if both_led_at_once(&client, &snapshot).await {
                    overlaps += 1;
                }
            }
            overlaps
        })
    };
    for round in 0..5 {
        let leader = eventually("a replica holds the lease", Duration::from_secs(15), || {
            let h = holder(&api);
            async move { h }
        })
        .await;
        let at = replicas.iter().position(|(id, _)| *id == leader).unwrap();
        let (_, op) = replicas.remove(at);
        // A graceful stop releases the lease: the two waiting replicas race for it.
        op.stop().await;
        urls.lock().unwrap().remove(at);
        eventually(
            "another replica takes over",
            Duration::from_secs(15),
            || {
                let h = holder(&api);
                let leader = leader.clone();
                async move { h.filter(|h| *h != leader) }
            },
        )
        .await;
        let fresh = start(format!("race-{}", round + 3)).await;
        urls.lock().unwrap().push(fresh.1.admin_url.clone());
        replicas.push(fresh);
    }
    done.cancel();
    let overlaps = watcher.await.unwrap();
    assert_eq!(overlaps, 0, "two replicas led at the same time");

    // The fencing itself: the holder applied the Lease under its own field manager, so another
    // replica's apply of holderIdentity conflicts instead of silently taking it over.
    let holder = holder(&api).expect("a holder");
    let lease = api
        .get_object("leases", NS, "asc-webhook-operator")
        .unwrap();
    let managers: Vec<&str> = lease["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["manager"].as_str())
        .collect();
    assert!(
        managers.contains(&field_manager(&holder).as_str()),
        "{managers:?}"
    );
    let leases: kube::Api<k8s_openapi::api::coordination::v1::Lease> =
        kube::Api::namespaced(api.client(), NS);
    let intruder = leases
        .patch(
            "asc-webhook-operator",
            &kube::api::PatchParams::apply(&field_manager("race-intruder")),
            &kube::api::Patch::Apply(serde_json::json!({
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "spec": {"holderIdentity": "race-intruder"}
            })),
        )
        .await;
    assert!(
        matches!(&intruder, Err(kube::Error::Api(s)) if s.code == 409),
        "{intruder:?}"
    );
    for (_, op) in replicas {
        op.stop().await;
    }
}

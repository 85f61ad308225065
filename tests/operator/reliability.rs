//! Exactly once, restarts, outages and misconfiguration: the delivery always ends `Succeeded` or
//! `Failed`, never stuck and never doubled.

use crate::harness::*;
use crate::world::{World, stage};
use asc_webhook_operator::resources::delivery::Phase;
use std::time::Duration;
use testkit::apiserver::{Fault, FaultRule, Verb};
use testkit::asc_mock::Fault as AscFault;

#[tokio::test]
async fn same_event_fifty_times_concurrently_makes_one_delivery_and_one_job() {
    let w = World::example("submit-after-processing", &[]).await;
    w.wait_route_ready().await;
    let body = fixture_for_mock("build-upload-complete", &w.asc);
    let answers = futures::future::join_all(
        (0..50).map(|_| w.op.post("submit-after-processing", &body, WEBHOOK_SECRET)),
    )
    .await;
    assert!(
        answers.iter().all(|(s, _)| *s == 200 || *s == 202),
        "{answers:?}"
    );
    let name = answers[0].1["delivery"].as_str().unwrap().to_owned();
    w.wait_phase(&name, Phase::Running).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(deliveries(&w.api).len(), 1);
    assert_eq!(jobs(&w.api).len(), 1);
    w.op.stop().await;
}

#[tokio::test]
async fn operator_killed_after_creating_the_job_but_before_status_restarts_into_one_job() {
    let (api, asc, _hooks, _) = stage("submit-after-processing").await;
    let dir = tempfile::tempdir().unwrap();
    // Every delivery status write fails: the Job gets created, its name never recorded.
    api.add_fault(
        FaultRule::new(Fault::Status(500))
            .verb(Verb::Patch)
            .resource("webhookdeliveries")
            .subresource("status")
            .times(usize::MAX),
    );
    let origin = origin_flags(&asc);
    let first = Process::start(&api, dir.path(), &flags(&[], &origin)).await;
    wait_route_ready(&api, "submit-after-processing").await;
    let (status, answer) = first
        .post(
            "submit-after-processing",
            &fixture_for_mock("build-upload-complete", &asc),
            WEBHOOK_SECRET,
        )
        .await;
    assert_eq!(status, 202);
    let name = answer["delivery"].as_str().unwrap().to_owned();
    eventually("the Job exists", Duration::from_secs(15), || {
        let n = jobs(&api).len();
        async move { (n == 1).then_some(()) }
    })
    .await;
    assert!(
        get_delivery(&api, &name).unwrap().status.is_none(),
        "status was never written"
    );
    first.kill().await;

    api.clear_faults();
    let second = Process::start(&api, dir.path(), &flags(&[], &origin)).await;
    let running = eventually(
        "the restarted operator records the Job",
        Duration::from_secs(20),
        || {
            let d = get_delivery(&api, &name);
            async move {
                d?.status
                    .filter(|s| s.actions.first().is_some_and(|a| a.job_name.is_some()))
            }
        },
    )
    .await;
    assert_eq!(jobs(&api).len(), 1, "still exactly one Job");
    complete_job(&api, running.actions[0].job_name.as_deref().unwrap(), true).await;
    eventually("the delivery completes", Duration::from_secs(20), || {
        let d = get_delivery(&api, &name);
        async move { d?.status.filter(|s| s.phase == Phase::Succeeded) }
    })
    .await;
    assert_eq!(jobs(&api).len(), 1);
    second.kill().await;
}

#[tokio::test]
async fn api_server_failing_for_a_while_still_completes_the_delivery() {
    let w = World::example_on_fake("release-message", &[]).await;
    w.wait_route_ready().await;
    let body = fixture_for_mock("app-version-ready-for-distribution", &w.asc);
    let name = w.deliver(&body).await;
    // Fail every controller call for a while (the receiver already stored the delivery).
    w.fake()
        .add_fault(FaultRule::new(Fault::Status(500)).times(40));
    let done = w.wait_terminal(&name).await.status.unwrap();
    assert_eq!(done.phase, Phase::Succeeded, "{done:?}");
    assert_eq!(w.hooks.to("/slack-webhook").len(), 1);
    w.op.stop().await;
}

#[tokio::test]
async fn asc_down_with_required_enrichment_fails_with_the_reason() {
    let w = World::example(
        "submit-after-processing",
        &["--max-attempts", "2", "--asc-api-max-attempts", "2"],
    )
    .await;
    w.wait_route_ready().await;
    w.asc.inject_always(AscFault::InternalServerError);
    let name = w
        .deliver(&fixture_for_mock("build-upload-complete", &w.asc))
        .await;
    let done = w.wait_terminal(&name).await.status.unwrap();
    assert_eq!(done.phase, Phase::Failed);
    let msg = done.message.unwrap();
    assert!(
        msg.contains("enrichment is required but failed") && msg.contains("500"),
        "{msg}"
    );
    assert!(
        jobs(&w.api).is_empty(),
        "no Job without the required enrichment"
    );
    w.op.stop().await;
}

#[tokio::test]
async fn asc_down_with_optional_enrichment_runs_the_job_without_it() {
    let w = World::example("submit-after-processing", &["--asc-api-max-attempts", "1"]).await;
    let mut route = get_route(&w.api, "submit-after-processing");
    route.spec.rules[0].enrich = asc_webhook_operator::resources::route::EnrichPolicy::Optional;
    let patch = serde_json::json!({"spec": {"rules": route.spec.rules}});
    kube::Api::<asc_webhook_operator::resources::WebhookRoute>::namespaced(w.api.client(), NS)
        .patch(
            "submit-after-processing",
            &Default::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .unwrap();
    w.wait_route_ready().await;
    w.asc.inject_always(AscFault::ServiceUnavailable {
        retry_after_secs: None,
    });
    let name = w
        .deliver(&fixture_for_mock("build-upload-complete", &w.asc))
        .await;
    let status = w.wait_phase(&name, Phase::Running).await.status.unwrap();
    assert_eq!(status.enrichment.unwrap().result, "Failed");
    let job = jobs(&w.api).pop().expect("the Job runs without enrichment");
    let env = job.spec.unwrap().template.spec.unwrap().containers[0]
        .env
        .clone()
        .unwrap();
    assert!(env.iter().any(|e| e.name == "ASC_NEW_STATE"));
    assert!(!env.iter().any(|e| e.name == "ASC_VERSION"));
    w.op.stop().await;
}

#[tokio::test]
async fn slack_answering_500_three_times_then_200_succeeds_with_four_attempts() {
    let w = World::example("failure-notifier", &[]).await;
    w.wait_route_ready().await;
    w.hooks.script(&[500, 500, 500]);
    let name = w
        .deliver(&fixture_for_mock("build-upload-failed", &w.asc))
        .await;
    let done = w.wait_terminal(&name).await.status.unwrap();
    assert_eq!(done.phase, Phase::Succeeded, "{done:?}");
    assert_eq!(
        (done.actions[0].attempts, done.actions[0].http_status_code),
        (4, Some(200))
    );
    assert_eq!(w.hooks.to("/slack-webhook").len(), 4);
    w.op.stop().await;
}

#[tokio::test]
async fn slack_always_500_fails_after_the_retry_limit_with_the_reason() {
    let w = World::example("failure-notifier", &[]).await;
    w.wait_route_ready().await;
    w.hooks.always(500);
    let name = w
        .deliver(&fixture_for_mock("build-upload-failed", &w.asc))
        .await;
    let done = w.wait_terminal(&name).await.status.unwrap();
    assert_eq!(done.phase, Phase::Failed);
    let action = &done.actions[0];
    assert_eq!(action.attempts, 5, "the default limit");
    assert!(
        action
            .error
            .as_deref()
            .unwrap()
            .contains("endpoint answered 500; gave up after 5 attempts")
    );
    assert!(done.message.unwrap().contains("rule build-failed"));
    // The Event follows the status write.
    eventually("a Warning Event says so", Duration::from_secs(10), || {
        let events = w.api.list_objects("events", Some(NS));
        async move {
            events
                .iter()
                .any(|e| e["reason"] == "DeliveryFailed" && e["type"] == "Warning")
                .then_some(())
        }
    })
    .await;
    w.assert_no_secret_leaks().await;
    w.op.stop().await;
}

#[tokio::test]
async fn route_referencing_another_namespace_is_refused_with_a_reason() {
    let api = fake_api().await;
    put_secret(&api, "hook-secret", &[("secret", WEBHOOK_SECRET)]).await;
    let rules = "    - name: notify\n      match: {}\n      http: {urlSecretRef: {name: slack, key: url, namespace: payments}}\n";
    route_with(
        &api,
        "sneaky",
        rules,
        "  credentialRef: {name: team, namespace: payments}\n",
    )
    .await;
    let op = Operator::start(&api, &[]).await;
    let ready = ready_condition(&api, "sneaky", "the route reports the reference").await;
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "CrossNamespaceReference")
    );
    assert!(ready.message.contains("payments"));
    op.stop().await;
}

#[tokio::test]
async fn history_limit_prunes_the_oldest_finished_deliveries_but_keeps_counting() {
    let api = fake_api().await;
    put_secret(&api, "hook-secret", &[("secret", WEBHOOK_SECRET)]).await;
    let rules = "    - name: never\n      match: {eventTypes: [SOMETHING_ELSE]}\n      http: {urlSecretRef: {name: slack, key: url}}\n";
    route_with(&api, "short", rules, "  deliveryHistoryLimit: 2\n").await;
    let op = Operator::start(&api, &["--recheck-interval", "500ms"]).await;
    for i in 0..5 {
        let body = format!(
            r#"{{"data":{{"type":"buildUploadStateUpdated","id":"evt-{i}","attributes":{{"newState":"PROCESSING"}}}}}}"#
        );
        assert_eq!(
            op.post("short", body.as_bytes(), WEBHOOK_SECRET).await.0,
            202
        );
        tokio::time::sleep(Duration::from_millis(1100)).await; // distinct receivedAt seconds, so "oldest" is well defined
    }
    let status = eventually(
        "the route pruned to its limit",
        Duration::from_secs(20),
        || {
            let kept = deliveries(&api).len();
            let r = get_route(&api, "short");
            async move {
                r.status.filter(|s| {
                    kept == 2 && s.deliveries.received == 5 && s.deliveries.no_match == 5
                })
            }
        },
    )
    .await;
    let kept: Vec<String> = deliveries(&api)
        .into_iter()
        .map(|d| d.spec.event_id)
        .collect();
    assert_eq!(kept.len(), 2);
    assert!(
        kept.contains(&"evt-4".to_owned()) && kept.contains(&"evt-3".to_owned()),
        "the newest stay: {kept:?}"
    );
    assert_eq!(status.pruned.unwrap().received, 3);
    op.stop().await;
}

#[tokio::test]
async fn sigterm_stops_the_process_cleanly() {
    let api = fake_api().await;
    let dir = tempfile::tempdir().unwrap();
    let process = Process::start(
        &api,
        dir.path(),
        &[
            "--leader-election",
            "--lease-namespace",
            NS,
            "--identity",
            "term-test",
        ],
    )
    .await;
    eventually("it leads", Duration::from_secs(10), || {
        let h = api.get_object("leases", NS, "asc-webhook-operator");
        async move {
            h.filter(|l| l["spec"]["holderIdentity"] == "term-test")
                .map(|_| ())
        }
    })
    .await;
    let status = process.terminate().await;
    let log: String = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect();
    assert!(status.success(), "{status:?}: {log}");
    let lease = api
        .get_object("leases", NS, "asc-webhook-operator")
        .unwrap();
    assert!(
        lease["spec"]["holderIdentity"].is_null() || lease["spec"]["holderIdentity"] == "",
        "the lease is released: {lease}"
    );
}

#[tokio::test]
async fn required_enrichment_of_an_event_without_an_object_fails_instead_of_waiting() {
    let w = World::example("submit-after-processing", &[]).await;
    w.wait_route_ready().await;
    let body = br#"{"data":{"type":"buildUploadStateUpdated","id":"no-instance","attributes":{"oldState":"PROCESSING","newState":"COMPLETE"}}}"#;
    let name = w.deliver(body).await;
    let done = w.wait_terminal(&name).await.status.unwrap();
    assert_eq!(done.phase, Phase::Failed);
    assert!(
        done.message
            .unwrap()
            .contains("names no App Store Connect object")
    );
    assert!(jobs(&w.api).is_empty());
    w.op.stop().await;
}

//! The five use cases of README.md, end to end from the examples in `examples/`: a signed fixture in,
//! Jobs and HTTP calls out, with the statuses a person would read.

use crate::harness::*;
use crate::world::World;
use asc_webhook_operator::resources::delivery::Phase;
use k8s_openapi::api::batch::v1::Job;
use std::time::Duration;

fn env_of(job: &Job) -> std::collections::BTreeMap<String, k8s_openapi::api::core::v1::EnvVar> {
    let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    pod.containers[0]
        .env
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|e| (e.name.clone(), e))
        .collect()
}

fn value(
    env: &std::collections::BTreeMap<String, k8s_openapi::api::core::v1::EnvVar>,
    name: &str,
) -> String {
    env.get(name)
        .and_then(|e| e.value.clone())
        .unwrap_or_else(|| panic!("{name} not set"))
}

#[tokio::test]
async fn use_case_1_build_upload_complete_runs_the_submission_job_with_fastlane_key() {
    use_case_1(World::example("submit-after-processing", &[]).await).await;
}

/// The real-cluster mode (`ASC_E2E_KUBECONFIG`) itself, against an API server reached only through a
/// kubeconfig that starts without the CRDs, without the namespace and with a delivery left over in it
/// (the fake API server here, so CI covers the mode's own set-up and clean-up).
#[tokio::test]
async fn real_cluster_mode_sets_up_a_bare_api_server_and_runs_use_case_1_on_it() {
    use crate::cluster::{RealCluster, TestCluster};
    // On the real-cluster runtime, as a real cluster's API server is elsewhere: the mode's synchronous
    // reads block the test's thread.
    let bare =
        crate::cluster::on_runtime(testkit::apiserver::FakeApiServer::start(Default::default()))
            .await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    bare.write_kubeconfig(&kubeconfig).unwrap();
    let first = RealCluster::connect(kubeconfig.clone()).await;
    assert!(
        bare.list_objects("customresourcedefinitions", None).len() >= 3,
        "the CRDs are applied"
    );
    assert!(bare.get_object("namespaces", "", NS).is_some());
    let left_over = serde_json::json!({
        "apiVersion": "asc.webhooks.dev/v1alpha1", "kind": "WebhookDelivery",
        "metadata": {"name": "left-over", "namespace": NS, "finalizers": ["asc.webhooks.dev/test"]},
        "spec": {"route": "r", "eventId": "e", "eventType": "PING", "payload": "{}", "receivedAt": "2026-01-01T00:00:00Z"},
    });
    bare.put_object("webhookdeliveries", left_over).unwrap();
    drop(first);
    let cluster = RealCluster::connect(kubeconfig).await;
    assert!(
        bare.get_object("webhookdeliveries", NS, "left-over")
            .is_none(),
        "a scenario starts in an emptied namespace"
    );
    use_case_1(World::example_on(TestCluster::Real(cluster), "submit-after-processing", &[]).await)
        .await;
}

async fn use_case_1(w: World) {
    w.wait_route_ready().await;
    let delivery = w
        .deliver(&fixture_for_mock("build-upload-complete", &w.asc))
        .await;
    let running = w.wait_phase(&delivery, Phase::Running).await;
    let status = running.status.unwrap();
    let job_name = status.actions[0]
        .job_name
        .clone()
        .expect("the Job is recorded in status");
    assert_eq!(
        status.enrichment.as_ref().unwrap().version.as_deref(),
        Some("1.101.0")
    );

    let job = jobs(&w.api)
        .into_iter()
        .find(|j| j.metadata.name.as_deref() == Some(job_name.as_str()))
        .unwrap();
    let env = env_of(&job);
    assert_eq!(value(&env, "ASC_EVENT_TYPE"), "buildUploadStateUpdated");
    assert_eq!(value(&env, "ASC_NEW_STATE"), "COMPLETE");
    assert_eq!(value(&env, "ASC_OLD_STATE"), "PROCESSING");
    assert_eq!(value(&env, "ASC_INSTANCE_TYPE"), "buildUploads");
    assert_eq!(value(&env, "ASC_VERSION"), "1.101.0");
    assert_eq!(value(&env, "ASC_BUILD_NUMBER"), "1");
    assert_eq!(value(&env, "ASC_PLATFORM"), "IOS");
    assert!(value(&env, "ASC_PAYLOAD").contains("buildUploadStateUpdated"));
    assert_eq!(
        value(&env, "APP_STORE_CONNECT_API_KEY_KEY_ID"),
        "TEST2K9Q7X"
    );
    let key = env["APP_STORE_CONNECT_API_KEY_KEY"]
        .value_from
        .as_ref()
        .unwrap()
        .secret_key_ref
        .as_ref()
        .unwrap();
    assert_eq!(
        (key.name.as_str(), key.key.as_str()),
        ("asc-api-key", "AuthKey.p8")
    );
    let labels = job.metadata.labels.clone().unwrap();
    assert_eq!(labels["asc.webhooks.dev/rule"], "submit-for-review");
    assert_eq!(labels["asc.webhooks.dev/delivery"], delivery);
    assert_eq!(job.metadata.owner_references.unwrap()[0].name, delivery);

    complete_job(&w.api, &job_name, true).await;
    let done = w
        .wait_phase(&delivery, Phase::Succeeded)
        .await
        .status
        .unwrap();
    assert_eq!(
        done.actions[0].state,
        asc_webhook_operator::resources::delivery::ActionState::Succeeded
    );
    assert!(done.completion_time.is_some());
    let route = eventually("route counts the success", Duration::from_secs(10), || {
        let r = get_route(&w.api, "submit-after-processing");
        async move { (r.status.as_ref()?.deliveries.succeeded == 1).then_some(r) }
    })
    .await;
    let rs = route.status.unwrap();
    assert_eq!(rs.deliveries.received, 1);
    assert_eq!(
        rs.url.as_deref(),
        Some("https://hooks.example.com/hooks/ios/submit-after-processing")
    );
    let last = rs.last_delivery.unwrap();
    assert_eq!(
        (last.name.as_str(), last.phase.as_deref()),
        (delivery.as_str(), Some("Succeeded"))
    );
    w.assert_no_secret_leaks().await;
    w.op.stop().await;
}

#[tokio::test]
async fn use_case_2_ready_for_distribution_runs_the_gitflow_merge_job() {
    let w = World::example("gitflow-merge-on-release", &[]).await;
    w.wait_route_ready().await;
    // Another state change on the same route does nothing.
    let ignored = w
        .deliver(&fixture_for_mock("app-version-in-review", &w.asc))
        .await;
    let delivery = w
        .deliver(&fixture_for_mock(
            "app-version-ready-for-distribution",
            &w.asc,
        ))
        .await;
    assert_eq!(
        w.wait_terminal(&ignored).await.status.unwrap().phase,
        Phase::NoMatch
    );
    let status = w
        .wait_phase(&delivery, Phase::Running)
        .await
        .status
        .unwrap();
    let job_name = status.actions[0].job_name.clone().unwrap();
    let job = jobs(&w.api)
        .into_iter()
        .find(|j| j.metadata.name.as_deref() == Some(job_name.as_str()))
        .unwrap();
    let env = env_of(&job);
    assert_eq!(value(&env, "ASC_VERSION"), "1.101.0");
    assert_eq!(value(&env, "ASC_NEW_STATE"), "READY_FOR_DISTRIBUTION");
    assert!(
        !env.contains_key("APP_STORE_CONNECT_API_KEY_KEY"),
        "only injected when asked"
    );
    assert_eq!(jobs(&w.api).len(), 1);
    complete_job(&w.api, &job_name, false).await;
    let failed = w.wait_phase(&delivery, Phase::Failed).await.status.unwrap();
    assert!(failed.message.unwrap().contains("BackoffLimitExceeded"));
    w.op.stop().await;
}

#[tokio::test]
async fn use_case_3_release_posts_to_slack_naming_the_version_and_calls_jira() {
    let w = World::example("release-message", &[]).await;
    w.wait_route_ready().await;
    let delivery = w
        .deliver(&fixture_for_mock(
            "app-version-ready-for-distribution",
            &w.asc,
        ))
        .await;
    let done = w.wait_terminal(&delivery).await.status.unwrap();
    assert_eq!(done.phase, Phase::Succeeded, "{done:?}");
    let slack = w.hooks.to("/slack-webhook");
    assert_eq!(slack.len(), 1);
    let text = slack[0].json()["text"].as_str().unwrap().to_owned();
    assert!(text.contains("Version 1.101.0 (IOS) is live"), "{text}");
    let jira = w.hooks.to("/jira-automation");
    assert_eq!(jira.len(), 1);
    let body = jira[0].json();
    assert_eq!(body["data"]["version"], "1.101.0");
    assert_eq!(body["data"]["state"], "READY_FOR_DISTRIBUTION");
    assert!(jira[0].headers.iter().any(|(_, v)| {
        v.to_str()
            .unwrap_or_default()
            .starts_with("test-jira-automation-headers")
    }));
    assert_eq!(
        done.actions
            .iter()
            .map(|a| a.http_status_code)
            .collect::<Vec<_>>(),
        vec![Some(200), Some(200)]
    );
    w.assert_no_secret_leaks().await;
    w.op.stop().await;
}

#[tokio::test]
async fn use_case_4_failed_upload_and_rejection_reach_slack_with_apples_text() {
    let w = World::example("failure-notifier", &[]).await;
    w.wait_route_ready().await;
    let failed = w
        .deliver(&fixture_for_mock("build-upload-failed", &w.asc))
        .await;
    let rejected = w
        .deliver(&fixture_for_mock("app-version-developer-rejected", &w.asc))
        .await;
    assert_eq!(
        w.wait_terminal(&failed).await.status.unwrap().phase,
        Phase::Succeeded
    );
    assert_eq!(
        w.wait_terminal(&rejected).await.status.unwrap().phase,
        Phase::Succeeded
    );
    let texts: Vec<String> = w
        .hooks
        .to("/slack-webhook")
        .iter()
        .map(|r| r.json()["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(texts.len(), 2);
    let build = texts.iter().find(|t| t.contains("Build upload")).unwrap();
    assert!(
        build.contains("ITMS-90683: Missing purpose string in Info.plist"),
        "{build}"
    );
    assert!(build.contains("1.101.0 (3)"), "{build}");
    let version = texts
        .iter()
        .find(|t| t.contains("DEVELOPER_REJECTED"))
        .unwrap();
    assert!(version.contains("WAITING_FOR_REVIEW"), "{version}");
    w.assert_no_secret_leaks().await;
    w.op.stop().await;
}

fn feedback_event(
    kind: &str,
    id: &str,
    instance_type: &str,
    mock: &testkit::asc_mock::AscMock,
) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({"data": {
        "type": kind, "id": id, "version": 1,
        "attributes": {"timestamp": "2026-01-05T10:00:00Z"},
        "relationships": {"instance": {
            "data": {"type": instance_type, "id": format!("{id}-fb")},
            "links": {"self": format!("{}/v1/{instance_type}/{id}-fb", mock.url())}
        }}
    }}))
    .unwrap()
}

#[tokio::test]
async fn use_case_5_testflight_crash_and_screenshot_feedback_reach_slack() {
    let w = World::example("testflight-feedback", &[]).await;
    w.wait_route_ready().await;
    w.asc.insert_document(
        "/v1/betaFeedbackCrashSubmissions/crash-1-fb",
        &serde_json::json!({"data": {"type": "betaFeedbackCrashSubmissions", "id": "crash-1-fb", "attributes": {"comment": "App closes when I tap \"Buy\"", "deviceModel": "iPhone16,1"}}}),
    );
    let crash = w
        .deliver(&feedback_event(
            "betaFeedbackCrashSubmissionCreated",
            "crash-1",
            "betaFeedbackCrashSubmissions",
            &w.asc,
        ))
        .await;
    let shot = w
        .deliver(&feedback_event(
            "betaFeedbackScreenshotSubmissionCreated",
            "shot-1",
            "betaFeedbackScreenshotSubmissions",
            &w.asc,
        ))
        .await;
    assert_eq!(
        w.wait_terminal(&crash).await.status.unwrap().phase,
        Phase::Succeeded
    );
    let shot_status = w.wait_terminal(&shot).await.status.unwrap();
    assert_eq!(
        shot_status.phase,
        Phase::Succeeded,
        "optional enrichment failing (404) still sends the message"
    );
    assert_eq!(shot_status.enrichment.unwrap().result, "Failed");
    let texts: Vec<String> = w
        .hooks
        .to("/slack-webhook")
        .iter()
        .map(|r| r.json()["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(texts.len(), 2, "{texts:?}");
    let crash_text = texts.iter().find(|t| t.contains("crash")).unwrap();
    assert!(
        crash_text.contains("App closes when I tap \"Buy\""),
        "quotes survive JSON escaping: {crash_text}"
    );
    assert!(texts.iter().any(|t| t.contains("shot-1-fb")), "{texts:?}");
    w.op.stop().await;
}

#[tokio::test]
async fn use_case_1_on_github_actions_sends_the_exact_repository_dispatch() {
    let (api, asc, hooks, mut secret_values) =
        crate::world::stage("github-actions-submission").await;
    // Where and how GitHub would be called: its API path, a bearer token.
    put_secret(
        &api,
        "github-dispatch",
        &[(
            "url",
            &format!("{}/repos/example-org/ios-app/dispatches", hooks.url),
        )],
    )
    .await;
    let token = "Bearer github_pat_test_0123456789";
    put_secret(&api, "github-dispatch-headers", &[("Authorization", token)]).await;
    secret_values.push(token.to_owned());
    hooks.script(&[204]);
    let w = World::start((api, asc, hooks, secret_values), &[]).await;
    w.wait_route_ready().await;
    let delivery = w
        .deliver(&fixture_for_mock("build-upload-complete", &w.asc))
        .await;
    let done = w.wait_terminal(&delivery).await.status.unwrap();
    assert_eq!(done.phase, Phase::Succeeded, "{done:?}");
    assert_eq!(done.actions[0].http_status_code, Some(204));

    let sent = w.hooks.requests();
    assert_eq!(sent.len(), 1, "{sent:?}");
    let r = &sent[0];
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("POST", "/repos/example-org/ios-app/dispatches")
    );
    assert_eq!(r.headers["authorization"], token);
    assert_eq!(r.headers["content-type"], "application/json");
    assert!(
        r.headers.contains_key("user-agent"),
        "GitHub refuses requests without one"
    );
    let body = r.json();
    assert_eq!(
        body,
        serde_json::json!({
            "event_type": "asc-build-complete",
            "client_payload": {
                "eventId": "0b7d3c1e-4a2f-4e6b-9d8c-5f1a2b3c4d5e",
                "eventType": "buildUploadStateUpdated",
                "oldState": "PROCESSING",
                "newState": "COMPLETE",
                "instanceType": "buildUploads",
                "instanceId": "3f1c2a9e-7b44-4d2e-9a51-0c8e2f6d1b77",
                "version": "1.101.0",
                "buildNumber": "1",
                "platform": "IOS",
                "delivery": delivery,
            }
        })
    );
    assert!(
        body["client_payload"].as_object().unwrap().len() <= 10,
        "GitHub accepts at most 10 top-level client_payload keys"
    );
    w.assert_no_secret_leaks().await;
    w.op.stop().await;
}

//! The whole operator, watched the way Prometheus watches it: the state gauges follow a route from Ready
//! to a broken Secret and back, go with the route, and the scrape of that run lints clean and declares
//! every metric the rules and the dashboard query.

use super::*;
use crate::harness::*;
use asc_webhook_operator::resources::{AscCredential, WebhookRoute};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams};
use std::time::Duration;

const JOB_RULE: &str = "    - name: build\n      match: {eventTypes: [BUILD_UPLOAD_STATE_UPDATED]}\n      job:\n        template:\n          spec:\n            template:\n              spec:\n                restartPolicy: Never\n                containers: [{name: run, image: busybox}]\n";

fn ready_series(status: &str) -> String {
    format!(
        r#"asc_webhook_route_condition{{namespace="{NS}",route="release",type="Ready",status="{status}"}}"#
    )
}

/// The value of the series `series` (name and labels exactly as exported) in `scrape`.
fn value(scrape: &str, series: &str) -> Option<f64> {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

async fn wait_for_series(op: &Operator, what: &str, series: &str, wanted: f64) -> String {
    eventually(what, Duration::from_secs(15), || async {
        let scrape = op.metrics().await;
        (value(&scrape, series) == Some(wanted)).then_some(scrape)
    })
    .await
}

async fn route_ready_then_broken_then_fixed(
    api: &testkit::apiserver::FakeApiServer,
    op: &Operator,
) {
    let scrape = wait_for_series(op, "the route is Ready", &ready_series("True"), 1.0).await;
    assert_eq!(value(&scrape, &ready_series("False")), Some(0.0));
    assert_eq!(value(&scrape, &ready_series("Unknown")), Some(0.0));

    let secrets: Api<Secret> = Api::namespaced(api.client(), NS);
    secrets
        .delete("hook-secret", &DeleteParams::default())
        .await
        .unwrap();
    let scrape = wait_for_series(op, "the route is not Ready", &ready_series("False"), 1.0).await;
    assert_eq!(value(&scrape, &ready_series("True")), Some(0.0));
    let status = get_route(api, "release").status.unwrap();
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "SecretNotFound"),
        "the gauge says what status says"
    );

    put_secret(api, "hook-secret", &[("secret", WEBHOOK_SECRET)]).await;
    let scrape = wait_for_series(op, "the route is Ready again", &ready_series("True"), 1.0).await;
    assert_eq!(value(&scrape, &ready_series("False")), Some(0.0));
}

/// An event through the route: its last event time, the events counter and the start lag appear.
async fn an_event_runs(api: &testkit::apiserver::FakeApiServer, op: &Operator) -> String {
    let (status, answer) = op
        .post("release", &fixture("build-upload-complete"), WEBHOOK_SECRET)
        .await;
    assert_eq!(status, 202, "{answer}");
    eventually("the Job is created", Duration::from_secs(15), || {
        let made = !jobs(api).is_empty();
        async move { made.then_some(()) }
    })
    .await;
    let last = format!(
        r#"asc_webhook_route_last_event_timestamp_seconds{{namespace="{NS}",route="release"}}"#
    );
    let lag = format!(
        r#"asc_webhook_delivery_start_lag_seconds_count{{namespace="{NS}",route="release"}}"#
    );
    let scrape = wait_for_series(op, "the start lag is observed", &lag, 1.0).await;
    let scrape = match value(&scrape, &last) {
        Some(_) => scrape,
        None => {
            eventually("the last event time", Duration::from_secs(15), || async {
                let s = op.metrics().await;
                value(&s, &last).is_some().then_some(s)
            })
            .await
        }
    };
    let received = value(&scrape, &last).unwrap();
    let now = jiff::Timestamp::now().as_second() as f64;
    assert!(
        (now - 60.0..=now + 1.0).contains(&received),
        "{received} vs {now}"
    );
    assert_eq!(
        value(
            &scrape,
            r#"asc_webhook_receiver_events_total{route="ios/release",event_type="buildUploadStateUpdated"}"#
        ),
        Some(1.0)
    );
    scrape
}

/// `promtool check metrics` on the scrape: no lint problems.
fn lint(scrape: &str) {
    if let Some(promtool) = promtool() {
        let dir = tempfile::tempdir().unwrap();
        run_promtool(
            &promtool,
            dir.path(),
            &["check", "metrics"],
            Some(&classic_text(scrape)),
        );
    }
}

/// Every metric of the rules and the dashboard is one the scrape declares. (A family without series is
/// not declared at all, so the scrape must come from a run that exercised each.)
fn declares_every_queried_metric(scrape: &str) {
    let mut queried = BTreeSet::new();
    for (alert, expr) in rule_expressions() {
        let names = metric_names(&expr);
        assert!(!names.is_empty(), "{alert}: {expr}");
        let unknown = unknown_names(scrape, &names);
        assert!(
            unknown.is_empty(),
            "alert {alert} queries {unknown:?}, which the operator does not export"
        );
        queried.extend(names);
    }
    // The release timing panels are checked against the scrapes of a whole release
    // (tests/operator/release_timing.rs): this run times no build or version.
    for (panel, expr) in dashboard_expressions()
        .into_iter()
        .filter(|(title, _)| !RELEASE_TIMING_PANELS.contains(&title.as_str()))
    {
        let names = metric_names(&expr);
        let unknown = unknown_names(scrape, &names);
        assert!(
            unknown.is_empty(),
            "dashboard {panel} queries {unknown:?}, which the operator does not export"
        );
        queried.extend(names);
    }
    assert!(queried.len() >= 10, "{queried:?}");
}

#[tokio::test]
async fn state_gauges_follow_a_route_from_ready_to_a_broken_secret_and_back_and_go_with_it() {
    let api = fake_api().await;
    put_secret(&api, "hook-secret", &[("secret", WEBHOOK_SECRET)]).await;
    route_with(&api, "release", JOB_RULE, "").await;
    create_yaml::<AscCredential>(
        &api,
        "apiVersion: asc.webhooks.dev/v1alpha1\nkind: AscCredential\nmetadata: {name: team-key, namespace: ios}\nspec: {keyId: K, issuerId: I, privateKeySecretRef: {name: no-such-secret, key: AuthKey.p8}}\n",
    )
    .await;
    let op = Operator::start(
        &api,
        &[
            "--recheck-interval",
            "300ms",
            "--secret-recheck-interval",
            "300ms",
            "--identity",
            "replica-a",
        ],
    )
    .await;
    route_ready_then_broken_then_fixed(&api, &op).await;
    let credential = r#"asc_webhook_credential_condition{namespace="ios",credential="team-key",type="Ready",status="False"}"#;
    wait_for_series(&op, "the credential is not Ready", credential, 1.0).await;
    let scrape = an_event_runs(&api, &op).await;
    assert_eq!(
        value(&scrape, r#"asc_webhook_leader{replica="replica-a"}"#),
        Some(1.0)
    );
    assert!(
        scrape.contains("asc_webhook_build_info{version="),
        "{scrape}"
    );
    lint(&scrape);

    let routes: Api<WebhookRoute> = Api::namespaced(api.client(), NS);
    routes
        .delete("release", &DeleteParams::default())
        .await
        .unwrap();
    let scrape = eventually(
        "the route's series are gone",
        Duration::from_secs(15),
        || async {
            let s = op.metrics().await;
            (!s.contains(r#"route="release""#)).then_some(s)
        },
    )
    .await;
    assert!(
        scrape.contains(r#"credential="team-key""#),
        "only the deleted object's series went"
    );
    op.stop().await;
}

/// A route whose webhook the operator registered misses events while the operator is down; catch-up
/// recovers them and a live one follows. The scrape of that run has a series of every family the rules
/// and the dashboard query: it lints clean and declares every metric they name.
#[tokio::test]
async fn a_scrape_after_catch_up_lints_clean_and_declares_every_metric_the_rules_and_dashboard_query()
 {
    use crate::apple_webhook::*;
    let (api, mock) = world().await;
    let op = start_reachable(&api, &mock, &[]).await;
    managed_route(&api, "release", "", JOB_RULE).await;
    let id = webhook_id(&registered_and_verified(&api, "release").await);
    let url = op.url.clone();
    op.stop().await;
    let missed = mock
        .send_event(&id, &fixture("build-upload-failed"))
        .await
        .unwrap();
    assert_eq!(missed.state, testkit::asc_mock::DeliveryState::Failed);

    let op = restart_reachable(&api, &mock, &url, &["--identity", "replica-b"]).await;
    let recovered = r#"asc_webhook_catch_up_recovered_events_total{route="ios/release"}"#;
    wait_for_series(&op, "catch-up recovers the missed event", recovered, 1.0).await;
    let live = mock
        .send_event(&id, &fixture("build-upload-complete"))
        .await
        .unwrap();
    assert_eq!(live.response_status, Some(202), "{live:?}");
    let lag = format!(
        r#"asc_webhook_delivery_start_lag_seconds_count{{namespace="{NS}",route="release"}}"#
    );
    let scrape = wait_for_series(&op, "both events start their Job", &lag, 2.0).await;
    for t in ["Ready", "WebhookRegistered", "WebhookVerified"] {
        let series = format!(
            r#"asc_webhook_route_condition{{namespace="{NS}",route="release",type="{t}",status="True"}}"#
        );
        assert_eq!(value(&scrape, &series), Some(1.0), "{t}: {scrape}");
    }
    lint(&scrape);
    declares_every_queried_metric(&scrape);
    op.stop().await;
}

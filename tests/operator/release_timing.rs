//! Release timing end to end: a realistic release reaches the operator from the mock App Store Connect
//! — a build uploaded, processed and COMPLETE (sent twice), then its version waiting for review, in
//! review (missed while the operator restarts, recovered by catch-up newest first, so out of order),
//! pending the developer's release and ready for distribution — and the durations come out in metrics
//! and in what `kubectl get webhookroutes -o wide` prints.

use crate::apple_webhook::*;
use crate::harness::*;
use crate::monitoring::{
    RELEASE_TIMING_PANELS, dashboard_expressions, metric_names, release_timing_rule_expressions,
    unknown_names,
};
use asc_webhook_operator::resources::WebhookRoute;
use asc_webhook_operator::resources::delivery::DeliverySource;
use asc_webhook_operator::resources::release_timing::{ItemKind, TimeSource, TimedItem};
use jiff::{SignedDuration, Timestamp};
use jsonpath_rust::JsonPath;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;
use testkit::apiserver::FakeApiServer;
use testkit::asc_mock::{AscMock, DeliveryState, LogOrder};

const BUILD: &str = "3f1c2a9e-7b44-4d2e-9a51-0c8e2f6d1b77";
const VERSION: &str = "b8e5c7d1-2f6a-4e9b-8c3d-7a1f5e0b9c24";
const JOB: &str = "job: {template: {spec: {template: {spec: {restartPolicy: Never, containers: [{name: c, image: busybox}]}}}}}";

fn rules() -> String {
    format!(
        "    - name: testflight\n      match: {{eventTypes: [buildUploadStateUpdated], newStates: [COMPLETE]}}\n      {JOB}\n    - name: gitflow\n      match: {{eventTypes: [appStoreVersionAppVersionStateUpdated], newStates: [READY_FOR_DISTRIBUTION]}}\n      {JOB}\n"
    )
}

/// A state change event as Apple sends it; build uploads carry no `timestamp`.
fn event(
    mock: &AscMock,
    id: &str,
    instance: (&str, &str),
    from: &str,
    to: &str,
    at: Option<Timestamp>,
) -> Vec<u8> {
    let (kind, instance_id) = instance;
    let attributes = match at {
        Some(t) => json!({"oldValue": from, "newValue": to, "timestamp": stamp(t)}),
        None => json!({"oldState": from, "newState": to}),
    };
    let event_type = if kind == "buildUploads" {
        "buildUploadStateUpdated"
    } else {
        "appStoreVersionAppVersionStateUpdated"
    };
    serde_json::to_vec(&json!({"data": {
        "type": event_type, "id": id, "version": 1, "attributes": attributes,
        "relationships": {"instance": {
            "data": {"type": kind, "id": instance_id},
            "links": {"self": format!("{}/v1/{kind}/{instance_id}", mock.url())},
        }},
    }}))
    .unwrap()
}

fn stamp(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// kubectl's `HumanDuration` (k8s.io/apimachinery/pkg/util/duration), which it prints `date` columns in.
fn human_duration(d: SignedDuration) -> String {
    let s = d.as_secs();
    let (m, h) = (s / 60, s / 3600);
    match () {
        _ if s < 0 => "0s".into(),
        _ if s < 120 => format!("{s}s"),
        _ if m < 10 && s % 60 == 0 => format!("{m}m"),
        _ if m < 10 => format!("{m}m{}s", s % 60),
        _ if m < 180 => format!("{m}m"),
        _ if h < 8 && m % 60 == 0 => format!("{h}h"),
        _ if h < 8 => format!("{h}h{}m", m % 60),
        _ if h < 48 => format!("{h}h"),
        _ if h < 192 && h % 24 == 0 => format!("{}d", h / 24),
        _ if h < 192 => format!("{}d{}h", h / 24, h % 24),
        _ => format!("{}d", h / 24),
    }
}

/// What `kubectl get webhookroutes -o wide` prints for `route`: every printer column of the CRD the
/// chart installs, by name, evaluated as kubectl does (its JSONPath, first match, `date` as an age).
fn kubectl_get_wide(route: &WebhookRoute) -> Vec<(String, String)> {
    let crd: Value = serde_yaml::from_str(
        &std::fs::read_to_string(
            Path::new(ROOT).join("charts/asc-webhook-operator/crds/webhookroutes.yaml"),
        )
        .unwrap(),
    )
    .unwrap();
    let object = serde_json::to_value(route).unwrap();
    let mut row = vec![("NAME".to_owned(), route.metadata.name.clone().unwrap())];
    for c in crd["spec"]["versions"][0]["additionalPrinterColumns"]
        .as_array()
        .unwrap()
    {
        let path = format!("${}", c["jsonPath"].as_str().unwrap());
        let found = object.query(&path).unwrap().first().copied().cloned();
        let text = match (found, c["type"].as_str()) {
            (None | Some(Value::Null), _) => "<none>".to_owned(),
            (Some(Value::String(t)), Some("date")) => {
                human_duration(Timestamp::now().duration_since(t.parse::<Timestamp>().unwrap()))
            }
            (Some(Value::String(t)), _) => t,
            (Some(v), _) => v.to_string(),
        };
        row.push((c["name"].as_str().unwrap().to_uppercase(), text));
    }
    row
}

fn column<'a>(row: &'a [(String, String)], name: &str) -> &'a str {
    &row.iter().find(|(n, _)| n == name).unwrap().1
}

/// The value of series `series` (name and labels as exported) in `scrape`.
fn value(scrape: &str, series: &str) -> Option<f64> {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

fn series(name: &str, extra: &str) -> String {
    format!(r#"asc_webhook_{name}{{namespace="{NS}",route="release"{extra}}}"#)
}

fn timed(api: &FakeApiServer, kind: ItemKind) -> Option<TimedItem> {
    let route = get_route(api, "release");
    route
        .status?
        .release_timing
        .items
        .into_iter()
        .find(|i| i.kind == kind)
}

async fn wait_timed(api: &FakeApiServer, what: &str, ok: impl Fn(&TimedItem) -> bool) -> TimedItem {
    eventually(what, WAIT, || {
        let item = timed(api, ItemKind::Version)
            .filter(|i| ok(i))
            .or_else(|| timed(api, ItemKind::Build).filter(|i| ok(i)));
        async move { item }
    })
    .await
}

/// Sleeps until `t` (Apple's time of the next event) has passed.
async fn until(t: Option<Timestamp>) {
    let left = t.unwrap().duration_since(Timestamp::now());
    if let Ok(left) = Duration::try_from(left) {
        tokio::time::sleep(left).await;
    }
}

async fn sent(mock: &AscMock, webhook: &str, body: &[u8], wanted: DeliveryState) {
    let d = mock.send_event(webhook, body).await.unwrap();
    assert_eq!(d.state, wanted, "{d:?}");
}

/// Upload → processing → COMPLETE (sent twice); the Job it starts finishes. Answers the scrape, with
/// the processing time bounded by when the two events were sent.
async fn build_is_processed(
    api: &FakeApiServer,
    mock: &AscMock,
    op: &Operator,
    webhook: &str,
) -> String {
    let processing = event(
        mock,
        "e-processing",
        ("buildUploads", BUILD),
        "AWAITING_UPLOAD",
        "PROCESSING",
        None,
    );
    let before_processing = Timestamp::now();
    sent(mock, webhook, &processing, DeliveryState::Succeeded).await;
    let after_processing = Timestamp::now();
    wait_timed(api, "the build is PROCESSING", |i| i.state == "PROCESSING").await;
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let complete = event(
        mock,
        "e-complete",
        ("buildUploads", BUILD),
        "PROCESSING",
        "COMPLETE",
        None,
    );
    let before_complete = Timestamp::now();
    sent(mock, webhook, &complete, DeliveryState::Succeeded).await;
    let after_complete = Timestamp::now();
    // Apple sends it again: one delivery, one Job, one duration.
    sent(mock, webhook, &complete, DeliveryState::Succeeded).await;
    let job = eventually("the COMPLETE build starts its Job", WAIT, || {
        let j = jobs(api);
        async move { (j.len() == 1).then(|| j[0].metadata.name.clone().unwrap()) }
    })
    .await;
    complete_job(api, &job, true).await;
    let build = wait_timed(api, "the Job's runner time is counted", |i| {
        i.seconds_saved.is_some()
    })
    .await;
    assert_eq!(jobs(api).len(), 1, "the duplicate started nothing");
    assert_eq!(build.title, "1.101.0 (1)", "named by enrichment");
    assert!(
        build
            .states
            .iter()
            .all(|s| s.time_source == TimeSource::Received)
    );
    let processing_seconds = build.processing_seconds.unwrap();
    assert_eq!(build.seconds_saved, Some(processing_seconds), "one action");

    let count = series(
        "release_build_processing_seconds_count",
        r#",result="COMPLETE""#,
    );
    let scrape = eventually("processing time is observed", WAIT, || async {
        let s = op.metrics().await;
        (value(&s, &count) == Some(1.0)).then_some(s)
    })
    .await;
    let sum = value(
        &scrape,
        &series(
            "release_build_processing_seconds_sum",
            r#",result="COMPLETE""#,
        ),
    )
    .unwrap();
    let shortest = before_complete
        .duration_since(after_processing)
        .as_secs_f64();
    let longest = after_complete
        .duration_since(before_processing)
        .as_secs_f64();
    assert!(
        shortest >= 2.5 && (shortest..=longest).contains(&sum),
        "{shortest} ≤ {sum} ≤ {longest}"
    );
    assert_eq!(processing_seconds, sum as i64, "status and metric agree");
    assert_eq!(
        value(&scrape, &series("release_runner_saved_seconds_total", "")),
        Some(processing_seconds as f64)
    );
    let row = kubectl_get_wide(&get_route(api, "release"));
    assert_eq!(
        (column(&row, "LATEST"), column(&row, "STATE")),
        ("1.101.0 (1)", "COMPLETE")
    );
    assert!(column(&row, "SINCE").ends_with('s'), "{row:?}");
    scrape
}

#[tokio::test]
async fn a_release_with_a_duplicate_a_restart_and_catch_up_shows_apples_durations_in_metrics_and_kubectl()
 {
    let (api, mock) = world().await;
    mock.set_log_order(LogOrder::NewestFirst);
    let op = start_reachable(&api, &mock, &[]).await;
    let subscribed =
        ", eventTypes: [BUILD_UPLOAD_STATE_UPDATED, APP_STORE_VERSION_APP_VERSION_STATE_UPDATED]";
    managed_route(&api, "release", subscribed, &rules()).await;
    let webhook = webhook_id(&registered_and_verified(&api, "release").await);
    let build_scrape = build_is_processed(&api, &mock, &op, &webhook).await;

    // The version's story in Apple's time, after the build: seconds where Apple takes hours and days,
    // and each event sent once its time has come.
    let base = Timestamp::now();
    let at = |ms: i64| Some(base + SignedDuration::from_millis(ms));
    let version = ("appStoreVersions", VERSION);
    let waiting = event(
        &mock,
        "e-wfr",
        version,
        "READY_FOR_REVIEW",
        "WAITING_FOR_REVIEW",
        at(1_000),
    );
    until(at(1_000)).await;
    sent(&mock, &webhook, &waiting, DeliveryState::Succeeded).await;
    wait_timed(&api, "the version waits for review", |i| {
        i.state == "WAITING_FOR_REVIEW"
    })
    .await;
    let waiting_for = series(
        "release_in_state_seconds",
        r#",kind="version",state="WAITING_FOR_REVIEW""#,
    );
    let (waited, waiting_scrape) = eventually("the in-flight gauge", WAIT, || async {
        let s = op.metrics().await;
        value(&s, &waiting_for).map(|v| (v, s))
    })
    .await;
    // Event times travel as RFC 3339 with milliseconds: the state may have started up to 1 ms before
    // `base` + 1 s.
    let waited_so_far = Timestamp::now().duration_since(base).as_secs_f64() - 1.0 + 0.001;
    assert!(
        (0.0..=waited_so_far).contains(&waited),
        "{waited} ≤ {waited_so_far}"
    );
    let row = kubectl_get_wide(&get_route(&api, "release"));
    assert_eq!(
        (column(&row, "LATEST"), column(&row, "STATE")),
        (VERSION, "WAITING_FOR_REVIEW"),
        "no rule matched it, so it is not enriched: its id"
    );
    assert!(column(&row, "SINCE").ends_with('s'), "{row:?}");

    // A restart in the middle of review: both changes meanwhile miss the receiver.
    let url = op.url.clone();
    op.stop().await;
    let in_review = event(
        &mock,
        "e-ir",
        version,
        "WAITING_FOR_REVIEW",
        "IN_REVIEW",
        at(7_000),
    );
    let pending = event(
        &mock,
        "e-pdr",
        version,
        "IN_REVIEW",
        "PENDING_DEVELOPER_RELEASE",
        at(8_500),
    );
    until(at(8_500)).await;
    sent(&mock, &webhook, &in_review, DeliveryState::Failed).await;
    sent(&mock, &webhook, &pending, DeliveryState::Failed).await;
    let op = restart_reachable(&api, &mock, &url, &[]).await;
    wait_timed(&api, "catch-up closes the review", |i| {
        i.state == "PENDING_DEVELOPER_RELEASE"
            && i.states.iter().filter(|s| s.seconds.is_some()).count() == 2
    })
    .await;
    let recovered = deliveries(&api)
        .iter()
        .filter(|d| d.spec.source == DeliverySource::CatchUp)
        .count();
    assert_eq!(recovered, 2);
    let ready = event(
        &mock,
        "e-rfd",
        version,
        "PENDING_DEVELOPER_RELEASE",
        "READY_FOR_DISTRIBUTION",
        at(10_000),
    );
    until(at(10_000)).await;
    sent(&mock, &webhook, &ready, DeliveryState::Succeeded).await;
    let version = wait_timed(
        &api,
        "the version is released and named by enrichment",
        |i| i.state == "READY_FOR_DISTRIBUTION" && i.title == "1.101.0",
    )
    .await;
    let durations: Vec<(&str, Option<i64>, TimeSource)> = version
        .states
        .iter()
        .map(|s| (s.state.as_str(), s.seconds, s.time_source))
        .collect();
    assert_eq!(
        durations,
        vec![
            ("WAITING_FOR_REVIEW", Some(6), TimeSource::Apple),
            ("IN_REVIEW", Some(1), TimeSource::Apple),
            ("PENDING_DEVELOPER_RELEASE", Some(1), TimeSource::Apple),
            ("READY_FOR_DISTRIBUTION", None, TimeSource::Apple),
        ]
    );
    let row = kubectl_get_wide(&get_route(&api, "release"));
    assert_eq!(
        (column(&row, "LATEST"), column(&row, "STATE")),
        ("1.101.0", "READY_FOR_DISTRIBUTION")
    );
    assert!(column(&row, "SINCE").ends_with('s'), "{row:?}");

    let sum = |state: &str| {
        series(
            "release_version_state_seconds_sum",
            &format!(r#",state="{state}""#),
        )
    };
    let scrape = eventually("every state's duration is observed once", WAIT, || async {
        let s = op.metrics().await;
        value(&s, &sum("PENDING_DEVELOPER_RELEASE"))
            .is_some()
            .then_some(s)
    })
    .await;
    for (state, seconds) in [
        ("WAITING_FOR_REVIEW", 6.0),
        ("IN_REVIEW", 1.5),
        ("PENDING_DEVELOPER_RELEASE", 1.5),
    ] {
        assert_eq!(value(&scrape, &sum(state)), Some(seconds), "{state}");
        let count = series(
            "release_version_state_seconds_count",
            &format!(r#",state="{state}""#),
        );
        assert_eq!(value(&scrape, &count), Some(1.0), "{state}");
    }
    assert!(
        !scrape.contains("release_build_processing_seconds_count"),
        "the restarted operator counts the build again: {scrape}"
    );
    assert!(
        !scrape.contains("release_runner_saved_seconds_total{"),
        "nor its savings"
    );
    assert!(
        !scrape.contains(&waiting_for),
        "a released version is not in flight"
    );
    release_timing_queries_name_only_scraped_metrics(&[&build_scrape, &waiting_scrape, &scrape]);
    op.stop().await;
}

/// The dashboard's release timing panels and the opt-in alerts query only families these scrapes
/// declare (a family with no series is not declared, so each comes from the part of the run that
/// exercised it).
fn release_timing_queries_name_only_scraped_metrics(scrapes: &[&str]) {
    let scrape = scrapes.join("\n");
    let mut queries: Vec<(String, String)> = dashboard_expressions()
        .into_iter()
        .filter(|(title, _)| RELEASE_TIMING_PANELS.contains(&title.as_str()))
        .collect();
    assert_eq!(
        queries.iter().map(|q| &q.0).collect::<BTreeSet<_>>().len(),
        RELEASE_TIMING_PANELS.len(),
        "every release timing panel is in the dashboard"
    );
    queries.extend(release_timing_rule_expressions());
    for (what, expr) in queries {
        let names = metric_names(&expr);
        assert!(!names.is_empty(), "{what}: {expr}");
        let unknown = unknown_names(&scrape, &names);
        assert!(
            unknown.is_empty(),
            "{what} queries {unknown:?}, which the operator does not export"
        );
    }
}

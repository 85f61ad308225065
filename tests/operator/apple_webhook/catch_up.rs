//! Catch-up: events App Store Connect could not deliver while the operator was down are recovered from
//! its delivery log, each recorded (and its Job run) exactly once.

use super::*;
use asc_webhook_operator::resources::delivery::DeliverySource;
use testkit::asc_mock::DeliveryState;

pub(super) const JOB_RULES: &str = "    - name: submit\n      match: {eventTypes: [buildUploadStateUpdated]}\n      job: {template: {spec: {template: {spec: {restartPolicy: Never, containers: [{name: c, image: busybox}]}}}}}\n";

pub(super) fn build_event(id: &str) -> Vec<u8> {
    String::from_utf8(fixture("build-upload-complete"))
        .unwrap()
        .replace("0b7d3c1e-4a2f-4e6b-9d8c-5f1a2b3c4d5e", id)
        .into_bytes()
}

fn by_source(api: &FakeApiServer, source: DeliverySource) -> usize {
    deliveries(api)
        .iter()
        .filter(|d| d.spec.source == source && d.spec.event_type != "webhookPingCreated")
        .count()
}

#[tokio::test]
async fn events_missed_while_the_operator_was_down_are_recorded_once_each_after_a_restart() {
    missed_events_are_recorded_once_each(testkit::asc_mock::LogOrder::OldestFirst).await;
}

#[tokio::test]
async fn events_missed_are_recorded_once_each_from_a_log_served_newest_first() {
    missed_events_are_recorded_once_each(testkit::asc_mock::LogOrder::NewestFirst).await;
}

async fn missed_events_are_recorded_once_each(order: testkit::asc_mock::LogOrder) {
    let (api, mock) = world().await;
    mock.set_log_order(order);
    let op = start_reachable(&api, &mock, &[]).await;
    managed_route(&api, "release", "", JOB_RULES).await;
    let id = webhook_id(&registered_and_verified(&api, "release").await);
    let url = op.url.clone();
    op.stop().await;

    for n in 1..=3 {
        let sent = mock
            .send_event(&id, &build_event(&format!("missed-{n}")))
            .await
            .unwrap();
        assert_eq!(sent.state, DeliveryState::Failed, "the receiver is down");
    }

    let op = restart_reachable(&api, &mock, &url, &[]).await;
    eventually("the three missed events are recorded", WAIT, || {
        let n = by_source(&api, DeliverySource::CatchUp);
        async move { (n == 3).then_some(()) }
    })
    .await;
    eventually("each runs its Job", WAIT, || {
        let n = jobs(&api).len();
        async move { (n == 3).then_some(()) }
    })
    .await;
    let live = mock.send_event(&id, &build_event("live-4")).await.unwrap();
    assert_eq!(live.response_status, Some(202), "{live:?}");
    eventually("the live event runs its Job", WAIT, || {
        let n = jobs(&api).len();
        async move { (n == 4).then_some(()) }
    })
    .await;
    let route = eventually("status counts what was recovered", WAIT, || {
        let r = get_route(&api, "release");
        async move {
            let c = r
                .status
                .as_ref()?
                .app_store_connect
                .as_ref()?
                .catch_up
                .as_ref()?;
            (c.recovered == 3 && c.checkpoint.is_some()).then_some(r)
        }
    })
    .await;
    let _ = route;
    wait_event(&api, "EventRecovered").await;
    op.stop().await;

    // Another restart reads the log again from the checkpoint: nothing is recorded twice.
    let op = restart_reachable(&api, &mock, &url, &[]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(by_source(&api, DeliverySource::CatchUp), 3);
    assert_eq!(by_source(&api, DeliverySource::Webhook), 1);
    assert_eq!(jobs(&api).len(), 4, "every event ran its Job exactly once");
    op.stop().await;
}

#[tokio::test]
async fn redeliver_mode_has_app_store_connect_send_the_missed_events_again_signed() {
    let (api, mock) = world().await;
    let op = start_reachable(&api, &mock, &[]).await;
    managed_route(&api, "release", ", catchUp: {mode: Redeliver}", JOB_RULES).await;
    let id = webhook_id(&registered_and_verified(&api, "release").await);
    let url = op.url.clone();
    op.stop().await;
    let missed = mock
        .send_event(&id, &build_event("missed-r"))
        .await
        .unwrap();
    assert_eq!(missed.state, DeliveryState::Failed);

    let op = restart_reachable(&api, &mock, &url, &[]).await;
    eventually(
        "Apple redelivered it, signed, and it was accepted",
        WAIT,
        || {
            let ok = mock.deliveries().iter().any(|d| {
                d.redelivery
                    && d.state == DeliveryState::Succeeded
                    && d.response_status == Some(202)
            });
            async move { ok.then_some(()) }
        },
    )
    .await;
    eventually("one delivery, through the signed path", WAIT, || {
        let n = by_source(&api, DeliverySource::Webhook);
        async move { (n == 1).then_some(()) }
    })
    .await;
    assert_eq!(by_source(&api, DeliverySource::CatchUp), 0);
    op.stop().await;
}

/// Matches the events' type (so they are sent) but no state they carry: each ends `NoMatch`, cheaply.
const NO_MATCH_RULES: &str = "    - name: failed-only\n      match: {eventTypes: [buildUploadStateUpdated], newStates: [FAILED]}\n      http: {urlSecretRef: {name: slack, key: url}}\n";

#[tokio::test]
async fn every_page_of_a_long_log_is_read_and_a_429_half_way_reads_the_window_again() {
    let (api, mock) = world().await;
    // One attempt per call, so the 429 interrupts the pass instead of being waited out inside it.
    let flags = ["--asc-api-max-attempts", "1"];
    let op = start_reachable(&api, &mock, &flags).await;
    // Room for all 250: with the default history limit (100) pruning deletes the finished ones while
    // the pass runs, and the count below could never reach 250.
    route_with(
        &api,
        "release",
        NO_MATCH_RULES,
        &format!(
            "  deliveryHistoryLimit: 300\n  credentialRef: {{name: team}}\n  appStoreConnect: {{appId: \"{APP_ID}\"}}\n"
        ),
    )
    .await;
    let id = webhook_id(&registered_and_verified(&api, "release").await);
    let url = op.url.clone();
    op.stop().await;
    for n in 0..250 {
        let sent = mock
            .send_event(&id, &build_event(&format!("page-{n:03}")))
            .await
            .unwrap();
        assert_eq!(sent.state, DeliveryState::Failed);
    }
    mock.inject_for(
        http::Method::GET,
        "cursor=",
        testkit::asc_mock::Fault::TooManyRequests {
            retry_after_secs: 1,
        },
        1,
    );
    let before = webhook_calls(&mock)
        .iter()
        .filter(|r| r.path.contains("/deliveries"))
        .count();
    let op = restart_reachable(&api, &mock, &url, &flags).await;
    eventually(
        "all 250 missed events are recorded",
        Duration::from_secs(120),
        || {
            let n = by_source(&api, DeliverySource::CatchUp);
            async move { (n == 250).then_some(()) }
        },
    )
    .await;
    let reads: Vec<(String, Option<u16>)> = webhook_calls(&mock)
        .into_iter()
        .filter(|r| r.path.contains("/deliveries"))
        .skip(before)
        .map(|r| (r.path, r.status))
        .collect();
    let since = |path: &str| {
        url::form_urlencoded::parse(path.split_once('?').unwrap().1.as_bytes())
            .find(|(k, _)| k == "filter[createdDateGreaterThanOrEqualTo]")
            .map(|(_, v)| v.into_owned())
    };
    assert_eq!(reads[0].1, Some(200), "{reads:?}");
    assert_eq!(
        reads[1].1,
        Some(429),
        "the second page was refused: {reads:?}"
    );
    let resumed = reads[2..]
        .iter()
        .find(|(p, _)| !p.contains("cursor="))
        .expect("a new pass");
    // The order of a page is not documented, so a window read only in part commits nothing: the next
    // pass reads the interrupted window again from its start (a lookback ago, moved on by the seconds
    // in between), and what it recorded the first time is not recorded twice.
    let at = |p: &str| {
        since(p)
            .and_then(|s| asc_webhook_operator::time::parse_ts(&s))
            .unwrap()
    };
    let moved = at(&resumed.0).duration_since(at(&reads[0].0));
    assert!(
        moved >= jiff::SignedDuration::ZERO && moved < jiff::SignedDuration::from_secs(60),
        "the interrupted window is read again from its start: {reads:?}"
    );
    // The count is written when the resumed pass ends, after its last delivery is created; each pass
    // adds what it recovered, so an event recorded twice would show as more than 250.
    let recovered = eventually("status counts the resumed pass", WAIT, || {
        let r = get_route(&api, "release");
        async move {
            let n = r.status?.app_store_connect?.catch_up?.recovered;
            (n >= 250).then_some(n)
        }
    })
    .await;
    assert_eq!(recovered, 250);
    let metrics = op.metrics().await;
    assert!(
        metrics.contains(
            r#"asc_webhook_catch_up_errors_total{route="ios/release",reason="unavailable"} 1"#
        ),
        "the 429 is counted: {metrics}"
    );
    assert!(
        metrics.contains(r#"asc_webhook_catch_up_recovered_events_total{route="ios/release"} 250"#),
        "{metrics}"
    );
    op.stop().await;
}

/// With the default history limit (100) the first pass's deliveries finish (`NoMatch`) and are pruned while
/// the log is still being read; the pass after the 429 re-reads them in its overlap. They were recorded
/// once and must not be recorded (and acted on) again.
#[tokio::test]
async fn an_event_recorded_then_pruned_is_not_recorded_again_by_the_next_pass() {
    let (api, mock) = world().await;
    let flags = ["--asc-api-max-attempts", "1"];
    let op = start_reachable(&api, &mock, &flags).await;
    route_with(
        &api,
        "release",
        NO_MATCH_RULES,
        &format!("  credentialRef: {{name: team}}\n  appStoreConnect: {{appId: \"{APP_ID}\"}}\n"),
    )
    .await;
    let id = webhook_id(&registered_and_verified(&api, "release").await);
    let url = op.url.clone();
    op.stop().await;
    for n in 0..250 {
        mock.send_event(&id, &build_event(&format!("pruned-{n:03}")))
            .await
            .unwrap();
    }
    mock.inject_for(
        http::Method::GET,
        "cursor=",
        testkit::asc_mock::Fault::TooManyRequests {
            retry_after_secs: 1,
        },
        1,
    );
    api.clear_request_log();
    let op = restart_reachable(&api, &mock, &url, &flags).await;
    let recovered = eventually("both passes counted", Duration::from_secs(120), || {
        let r = get_route(&api, "release");
        async move {
            let n = r.status?.app_store_connect?.catch_up?.recovered;
            (n >= 250).then_some(n)
        }
    })
    .await;
    // Later passes (every interval) must not add any either.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let created = api.count_requests(|r| {
        r.verb == testkit::apiserver::Verb::Create
            && r.resource == "webhookdeliveries"
            && r.status == 201
    });
    assert_eq!(created, 250, "each missed event recorded once");
    assert_eq!(recovered, 250);
    let r = get_route(&api, "release");
    assert_eq!(
        r.status
            .unwrap()
            .app_store_connect
            .unwrap()
            .catch_up
            .unwrap()
            .recovered,
        250
    );
    op.stop().await;
}

/// The leader's memory of pruned deliveries dies with the process; the route's `status.seenEvents` does
/// not. An event recovered by catch-up runs its Job, is pruned past the history limit, and then comes
/// back twice after a restart: in the next pass's overlap and live from Apple. Neither runs anything.
#[tokio::test]
async fn an_event_pruned_past_the_history_limit_runs_nothing_again_after_a_restart_from_the_log_or_live()
 {
    let (api, mock) = world().await;
    let op = start_reachable(&api, &mock, &[]).await;
    route_with(
        &api,
        "release",
        JOB_RULES,
        &format!(
            "  deliveryHistoryLimit: 1\n  credentialRef: {{name: team}}\n  appStoreConnect: {{appId: \"{APP_ID}\"}}\n"
        ),
    )
    .await;
    let id = webhook_id(&registered_and_verified(&api, "release").await);
    let url = op.url.clone();
    op.stop().await;
    let missed = build_event("seen-once");
    mock.send_event(&id, &missed).await.unwrap();

    let op = restart_reachable(&api, &mock, &url, &[]).await;
    let first_job = eventually("catch-up records it and runs its Job", WAIT, || {
        let j = jobs(&api).first().and_then(|j| j.metadata.name.clone());
        async move { j }
    })
    .await;
    complete_job(&api, &first_job, true).await;
    let name = asc_webhook_operator::naming::delivery_name("release", "seen-once");
    // Newer events push it past the limit of one.
    for n in 0..2 {
        let sent = mock
            .send_event(&id, &build_event(&format!("newer-{n}")))
            .await
            .unwrap();
        assert_eq!(sent.response_status, Some(202), "{sent:?}");
    }
    eventually(
        "the first delivery is pruned and recorded as seen",
        WAIT,
        || {
            let gone = get_delivery(&api, &name).is_none();
            let seen = get_route(&api, "release").status.is_some_and(|s| {
                s.seen_events
                    .keys()
                    .iter()
                    .any(|k| name.ends_with(k.as_str()))
            });
            async move { (gone && seen).then_some(()) }
        },
    )
    .await;
    eventually("the newer events run their Jobs", WAIT, || {
        let n = jobs(&api).len();
        async move { (n == 2).then_some(()) }
    })
    .await;
    op.stop().await;
    api.clear_request_log();

    // A new process: nothing in memory. The next pass re-reads the event in its overlap.
    let reads = || {
        webhook_calls(&mock)
            .iter()
            .filter(|r| r.path.contains("/deliveries"))
            .count()
    };
    let reads_before = reads();
    let op = restart_reachable(&api, &mock, &url, &[]).await;
    eventually("the pass after the restart read the log", WAIT, || {
        let n = reads();
        async move { (n > reads_before).then_some(()) }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        get_delivery(&api, &name).is_none(),
        "catch-up did not record it again"
    );

    // Apple sends it again, live: recorded (nothing accepted is dropped), but it runs nothing. The
    // delivery may be pruned again at once (limit 1), so the route's counts tell.
    let again = mock.send_event(&id, &missed).await.unwrap();
    assert_eq!(again.response_status, Some(202), "{again:?}");
    let event = wait_event(&api, "DuplicateEvent").await;
    assert!(
        event["note"]
            .as_str()
            .unwrap_or_default()
            .contains("already ran"),
        "{event}"
    );
    eventually("the route counts one duplicate", WAIT, || {
        let n = get_route(&api, "release")
            .status
            .map(|s| s.deliveries.duplicate);
        async move { (n == Some(1)).then_some(()) }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let job_creates = api.count_requests(|r| {
        r.verb == testkit::apiserver::Verb::Create && r.resource == "jobs" && r.status == 201
    });
    assert_eq!(job_creates, 0, "no Job ran twice");
    let metrics = op.metrics().await;
    assert!(
        metrics.contains("asc_webhook_duplicate_events_total{route=\"ios/release\"} 1"),
        "{metrics}"
    );
    op.stop().await;
}

/// The receiver cannot record while the API server refuses it, and turns unready when it loses its
/// route watch; once it is ready again, catch-up makes a pass at once rather than at the next interval
/// (ten minutes), and the event Apple failed to deliver meanwhile is recorded.
#[tokio::test]
async fn catch_up_runs_when_the_receiver_is_ready_again() {
    use testkit::apiserver::{Fault, FaultRule, Verb};
    let (api, mock) = world().await;
    // The start-up pass is done: nothing more is due for ten minutes.
    let (op, id) = registered_after_the_start_up_pass(&api, &mock).await;

    api.add_fault(
        FaultRule::new(Fault::Status(500))
            .verb(Verb::Create)
            .resource("webhookdeliveries")
            .times(1),
    );
    let failed = mock
        .send_event(&id, &build_event("while-unready"))
        .await
        .unwrap();
    assert_eq!(failed.state, DeliveryState::Failed, "{failed:?}");
    assert_eq!(by_source(&api, DeliverySource::CatchUp), 0);

    // The route watch is refused (RBAC taken away, then given back): unready, then ready again.
    api.add_fault(
        FaultRule::new(Fault::Status(403))
            .verb(Verb::Watch)
            .resource("webhookroutes")
            .times(8),
    );
    api.disconnect_all();
    eventually("the receiver is unready", WAIT, || async {
        op.readyz().await.filter(|(s, _)| *s == 503)
    })
    .await;
    eventually("the receiver is ready again", WAIT, || async {
        op.readyz().await.filter(|(s, _)| *s == 200)
    })
    .await;
    eventually("the missed event is recovered", WAIT, || {
        let n = by_source(&api, DeliverySource::CatchUp);
        async move { (n == 1).then_some(()) }
    })
    .await;
    let metrics = op.metrics().await;
    assert!(
        metrics.contains(r#"asc_webhook_catch_up_recovered_events_total{route="ios/release"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("asc_webhook_catch_up_lag_seconds_count 1"),
        "{metrics}"
    );
    op.stop().await;
}

/// An operator and the route `release` (Job rules) whose webhook is registered and whose start-up
/// catch-up pass ran; answers the operator and the webhook id.
pub(super) async fn registered_after_the_start_up_pass(
    api: &FakeApiServer,
    mock: &AscMock,
) -> (Operator, String) {
    let op = start_reachable(api, mock, &[]).await;
    managed_route(api, "release", "", JOB_RULES).await;
    let id = webhook_id(&registered_and_verified(api, "release").await);
    eventually("the start-up pass ran", WAIT, || {
        let r = get_route(api, "release");
        async move { r.status?.app_store_connect?.catch_up?.last_check_time }
    })
    .await;
    (op, id)
}

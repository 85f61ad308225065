//! Catch-up against a delivery log that behaves like the live one: it refuses `filter[deliveryState]`
//! and windows older than ten days (with Apple's 400), lists healthy deliveries too, and documents no
//! order — so every scenario runs with the log served oldest-first and newest-first.

use super::catch_up::{build_event, registered_after_the_start_up_pass};
use super::*;
use asc_webhook_operator::resources::delivery::DeliverySource;
use testkit::asc_mock::{DeliveryState, LogOrder};

fn hours_ago(h: i64) -> jiff::Timestamp {
    jiff::Timestamp::now() - jiff::SignedDuration::from_hours(h)
}

fn recovered_here(api: &FakeApiServer) -> usize {
    deliveries(api)
        .iter()
        .filter(|d| d.spec.source == DeliverySource::CatchUp)
        .count()
}

/// A webhook whose operator was down: 500 healthy deliveries over the last nine days, three events
/// that failed to arrive, one entry whose payload is no event, and a checkpoint thirty days old.
async fn missed_events_are_recovered_from_the_live_shaped_log(order: LogOrder) {
    let (api, mock) = world().await;
    mock.set_log_order(order);
    let (op, id) = registered_after_the_start_up_pass(&api, &mock).await;
    let url = op.url.clone();
    op.stop().await;

    for n in 0..500 {
        let at = hours_ago(1 + (n % 215)).to_string();
        let body = build_event(&format!("healthy-{n:03}"));
        mock.log_delivery(&id, &body, DeliveryState::Succeeded, &at);
    }
    for n in 1..=3 {
        let sent = mock
            .send_event(&id, &build_event(&format!("missed-{n}")))
            .await;
        assert_eq!(
            sent.unwrap().state,
            DeliveryState::Failed,
            "the receiver is down"
        );
    }
    mock.log_delivery(
        &id,
        b"not json",
        DeliveryState::Failed,
        &hours_ago(2).to_string(),
    );
    let month_ago = asc_webhook_operator::time::format_ts(hours_ago(30 * 24));
    api.patch_object(
        "webhookroutes",
        NS,
        "release",
        serde_json::json!({"status": {"appStoreConnect": {"catchUp": {"checkpoint": month_ago}}}}),
    )
    .unwrap();
    let reads_before = webhook_calls(&mock).len();

    let op = restart_reachable(&api, &mock, &url, &[]).await;
    eventually("the three missed events are recorded", WAIT, || {
        let n = recovered_here(&api);
        async move { (n == 3).then_some(()) }
    })
    .await;
    let c = eventually("the pass completes and says it was clamped", WAIT, || {
        let r = get_route(&api, "release");
        let month_ago = month_ago.clone();
        async move {
            let c = r.status?.app_store_connect?.catch_up?;
            (c.recovered == 3
                && c.clamped_to.is_some()
                && c.checkpoint.as_deref() != Some(&month_ago))
            .then_some(c)
        }
    })
    .await;
    assert_eq!(c.clamped_from.as_deref(), Some(month_ago.as_str()));
    let checkpoint =
        asc_webhook_operator::time::parse_ts(c.checkpoint.as_deref().unwrap()).unwrap();
    assert!(
        checkpoint > hours_ago(1),
        "the checkpoint moves to the pass start: {c:?}"
    );
    wait_event(&api, "CatchUpWindowClamped").await;

    let reads: Vec<_> = webhook_calls(&mock)
        .into_iter()
        .skip(reads_before)
        .filter(|r| r.path.contains("/deliveries"))
        .collect();
    assert!(!reads.is_empty());
    for r in &reads {
        assert_eq!(r.status, Some(200), "Apple accepted every page: {r:?}");
        assert!(!r.path.contains("deliveryState"), "{}", r.path);
    }
    let metrics = op.metrics().await;
    assert!(
        !metrics.contains("asc_webhook_catch_up_errors_total{"),
        "no pass failed: {metrics}"
    );
    assert!(
        metrics.contains(
            r#"asc_webhook_catch_up_entries_skipped_total{route="ios/release",reason="invalid_payload"} 1"#
        ),
        "{metrics}"
    );
    eventually("each missed event runs its Job", WAIT, || {
        let n = jobs(&api).len();
        async move { (n == 3).then_some(()) }
    })
    .await;
    op.stop().await;
}

#[tokio::test]
async fn catch_up_recovers_missed_events_from_a_log_served_oldest_first() {
    missed_events_are_recovered_from_the_live_shaped_log(LogOrder::OldestFirst).await;
}

#[tokio::test]
async fn catch_up_recovers_missed_events_from_a_log_served_newest_first() {
    missed_events_are_recovered_from_the_live_shaped_log(LogOrder::NewestFirst).await;
}

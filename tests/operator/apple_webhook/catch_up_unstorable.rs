//! Catch-up and an entry of Apple's log that can never be stored: it is skipped, counted and said, and
//! the events around it are recovered all the same.

use super::catch_up::{JOB_RULES, build_event};
use super::*;
use asc_webhook_operator::resources::delivery::DeliverySource;
use testkit::asc_mock::{DeliveryState, LogOrder};

/// An event whose body fits the receiver's body limit but whose delivery does not fit in etcd: every
/// quote is escaped once in the body and once more in `spec.payload`.
fn unstorable_event(id: &str) -> Vec<u8> {
    let quotes = "\\\"".repeat(450_000);
    format!(
        r#"{{"data":{{"id":"{id}","type":"buildUploadStateUpdated","version":1,"attributes":{{"oldState":"PROCESSING","newState":"COMPLETE","note":"{quotes}"}}}}}}"#
    )
    .into_bytes()
}

fn recovered(api: &FakeApiServer) -> usize {
    deliveries(api)
        .iter()
        .filter(|d| d.spec.source == DeliverySource::CatchUp)
        .count()
}

#[tokio::test]
async fn an_unstorable_entry_between_missed_events_is_skipped_and_the_others_are_recovered() {
    let (api, mock) = world().await;
    mock.set_log_order(LogOrder::NewestFirst);
    // Limits that let the large body through the receiver's own checks, so the API server's refusal
    // (etcd's 1.5 MiB) is what decides, as with an object limit set above the cluster's.
    let flags = [
        "--max-body-bytes",
        "1048576",
        "--max-object-bytes",
        "3145728",
    ];
    let op = start_reachable(&api, &mock, &flags).await;
    managed_route(&api, "release", "", JOB_RULES).await;
    let id = webhook_id(&registered_and_verified(&api, "release").await);
    let url = op.url.clone();
    op.stop().await;

    // Served newest first, the unstorable entry comes after two of the events and before the third.
    let bodies = [
        build_event("missed-1"),
        unstorable_event("missed-huge"),
        build_event("missed-2"),
        build_event("missed-3"),
    ];
    for body in &bodies {
        let sent = mock.send_event(&id, body).await.unwrap();
        assert_eq!(sent.state, DeliveryState::Failed, "the receiver is down");
    }

    let op = restart_reachable(&api, &mock, &url, &flags).await;
    eventually("the three storable events are recorded", WAIT, || {
        let n = recovered(&api);
        async move { (n == 3).then_some(()) }
    })
    .await;
    let catch_up = eventually("the pass completes and moves the checkpoint", WAIT, || {
        let r = get_route(&api, "release");
        async move {
            let c = r.status?.app_store_connect?.catch_up?;
            (c.recovered == 3 && c.last_check_time.is_some()).then_some(c)
        }
    })
    .await;
    assert!(catch_up.checkpoint.is_some(), "{catch_up:?}");
    let event = wait_event(&api, "CatchUpEntrySkipped").await;
    assert_eq!(event["type"], "Warning", "{event}");
    let note = event["note"].as_str().unwrap_or_default();
    assert!(note.contains("too large"), "{note}");
    let metrics = op.metrics().await;
    let skipped: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("asc_webhook_catch_up_entries_skipped_total{"))
        .collect();
    assert!(
        skipped
            .iter()
            .any(|l| l.contains("reason=\"too_large\"") && l.ends_with(" 1")),
        "{skipped:?}"
    );
    let errors = metrics
        .lines()
        .filter(|l| {
            l.starts_with("asc_webhook_controller_reconciles_total{")
                && l.contains("result=\"error\"")
        })
        .collect::<Vec<_>>();
    assert!(errors.is_empty(), "no reconcile failed: {errors:?}");
    op.stop().await;
}

//! A test ping whose delivery never reaches the receiver (Apple answered the request, but the delivery
//! failed on the way and, as far as Apple documents, is not retried) is requested again, a bounded number
//! of times and before the verify timeout, instead of leaving `WebhookVerified` `Unknown` until it gives up.

use super::*;
use asc_webhook_operator::resources::route_asc::AppStoreConnectStatus;
use testkit::asc_mock::DeliveryState;

fn asc_status(route: &WebhookRoute) -> AppStoreConnectStatus {
    route
        .status
        .as_ref()
        .and_then(|s| s.app_store_connect.as_deref().cloned())
        .unwrap_or_default()
}

fn ping_requests(mock: &AscMock) -> usize {
    webhook_calls(mock)
        .iter()
        .filter(|r| r.method == "POST" && r.path.starts_with("/v1/webhookPings"))
        .count()
}

#[tokio::test]
async fn a_ping_whose_delivery_was_lost_is_requested_again_and_verifies_the_webhook() {
    let (api, mock) = world().await;
    mock.lose_ping_deliveries(1);
    let op = start_reachable(
        &api,
        &mock,
        &[
            "--webhook-ping-resend-after",
            "1s",
            "--webhook-verify-timeout",
            "60s",
        ],
    )
    .await;
    managed_route(&api, "release", "", RULES).await;
    let route = wait_condition(&api, "release", "WebhookVerified", "True", "PingReceived").await;
    let pings: Vec<_> = mock
        .deliveries()
        .into_iter()
        .filter(|d| d.event.ping)
        .collect();
    assert_eq!(
        pings.iter().map(|d| d.state).collect::<Vec<_>>(),
        [DeliveryState::Failed, DeliveryState::Succeeded],
        "the first delivery was lost, the re-sent one arrived"
    );
    let asc = asc_status(&route);
    assert_eq!(asc.ping_resends, Some(1), "{asc:?}");
    assert!(asc.ping_resent_time.is_some(), "{asc:?}");
    assert!(
        asc.ping_resent_time >= asc.ping_requested_time,
        "the request time stays the first one's: the timeout counts from it ({asc:?})"
    );
    let event = wait_event(&api, "PingResent").await;
    let note = event["note"].as_str().unwrap_or_default().to_owned();
    assert!(note.contains("1 of at most 3"), "{note}");
    // Verified: nothing more is sent.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(ping_requests(&mock), 2);
    op.stop().await;
}

#[tokio::test]
async fn pings_that_never_arrive_are_resent_a_bounded_number_of_times_before_the_verdict() {
    let (api, mock) = world().await;
    mock.lose_ping_deliveries(100);
    // Re-sends due 1 s, 3 s and 7 s after the request; the verdict at 6 s leaves room for two.
    let op = start_reachable(
        &api,
        &mock,
        &[
            "--webhook-ping-resend-after",
            "1s",
            "--webhook-verify-timeout",
            "6s",
        ],
    )
    .await;
    managed_route(&api, "release", "", RULES).await;
    let waiting = wait_condition(&api, "release", "WebhookVerified", "Unknown", "PingResent").await;
    let message = condition(&waiting, "WebhookVerified").unwrap().message;
    assert!(message.contains("requested again"), "{message}");
    let route = wait_condition(
        &api,
        "release",
        "WebhookVerified",
        "False",
        "PingNotReceived",
    )
    .await;
    let message = condition(&route, "WebhookVerified").unwrap().message;
    assert!(message.contains("and again 2 time(s)"), "{message}");
    assert_eq!(asc_status(&route).ping_resends, Some(2));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(ping_requests(&mock), 3, "one request and two re-sends");
    op.stop().await;
}

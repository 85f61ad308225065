//! Each way App Store Connect can refuse ends in the documented condition, with bounded retries.

use super::*;
use http::Method;
use std::time::Instant;
use testkit::asc_mock::Fault;

#[tokio::test]
async fn a_key_without_the_role_is_forbidden_with_an_actionable_message_and_not_retried_in_a_loop()
{
    let (api, mock) = world().await;
    mock.inject_always(Fault::Forbidden);
    let op = start_reachable(&api, &mock, &[]).await;
    managed_route(&api, "release", "", RULES).await;
    let route = wait_condition(&api, "release", "WebhookRegistered", "False", "Forbidden").await;
    let message = condition(&route, "WebhookRegistered").unwrap().message;
    assert!(message.contains("App Manager"), "{message}");
    wait_condition(&api, "release", "Ready", "False", "Forbidden").await;
    wait_event(&api, "Forbidden").await;
    let after = webhook_calls(&mock).len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        webhook_calls(&mock).len(),
        after,
        "a refusal for good is not retried at once"
    );
    op.stop().await;
}

#[tokio::test]
async fn an_unknown_app_is_app_not_found() {
    let (api, mock) = world().await;
    let op = start_reachable(&api, &mock, &[]).await;
    route_with(
        &api,
        "release",
        RULES,
        "  credentialRef: {name: team}\n  appStoreConnect: {appId: \"999\"}\n",
    )
    .await;
    let route = wait_condition(&api, "release", "WebhookRegistered", "False", "AppNotFound").await;
    assert!(
        condition(&route, "WebhookRegistered")
            .unwrap()
            .message
            .contains("999")
    );
    assert!(mock.webhooks().is_empty());
    op.stop().await;
}

#[tokio::test]
async fn a_conflict_puts_apples_detail_in_the_condition() {
    let (api, mock) = world().await;
    mock.inject_for(
        Method::POST,
        "/v1/webhooks",
        Fault::Status {
            status: 409,
            code: "ENTITY_ERROR".into(),
            detail: "The url is used by a webhook of another team.".into(),
        },
        1,
    );
    let op = start_reachable(&api, &mock, &[]).await;
    managed_route(&api, "release", "", RULES).await;
    let route = wait_condition(&api, "release", "WebhookRegistered", "False", "Rejected").await;
    let message = condition(&route, "WebhookRegistered").unwrap().message;
    assert!(
        message.contains("The url is used by a webhook of another team."),
        "{message}"
    );
    assert_eq!(
        calls(&mock, "POST", "/v1/webhooks"),
        1,
        "a POST is never retried blindly"
    );
    op.stop().await;
}

#[tokio::test]
async fn a_rate_limit_is_waited_out_as_retry_after_asks() {
    let (api, mock) = world().await;
    mock.inject_for(
        Method::GET,
        "/v1/apps/",
        Fault::TooManyRequests {
            retry_after_secs: 1,
        },
        1,
    );
    let op = start_reachable(&api, &mock, &[]).await;
    let started = Instant::now();
    managed_route(&api, "release", "", RULES).await;
    wait_condition(&api, "release", "WebhookRegistered", "True", "Created").await;
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After honoured"
    );
    let statuses: Vec<Option<u16>> = webhook_calls(&mock)
        .iter()
        .filter(|r| r.path.starts_with("/v1/apps/"))
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, vec![Some(429), Some(200)]);
    assert_eq!(mock.webhooks().len(), 1);
    op.stop().await;
}

#[tokio::test]
async fn a_persistent_rate_limit_ends_unavailable_without_a_tight_loop() {
    let (api, mock) = world().await;
    mock.inject_always(Fault::TooManyRequests {
        retry_after_secs: 1,
    });
    let op = start_reachable(&api, &mock, &[]).await;
    let started = Instant::now();
    managed_route(&api, "release", "", RULES).await;
    let route = wait_condition(
        &api,
        "release",
        "WebhookRegistered",
        "False",
        "AppStoreConnectUnavailable",
    )
    .await;
    assert!(
        condition(&route, "WebhookRegistered")
            .unwrap()
            .message
            .contains("429")
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let elapsed = started.elapsed().as_secs() + 1;
    let made = webhook_calls(&mock).len() as u64;
    assert!(
        made <= elapsed + 1,
        "{made} calls in {elapsed} s with Retry-After: 1"
    );
    op.stop().await;
}

#[tokio::test]
async fn server_errors_end_unavailable_with_bounded_retries_then_recover() {
    let (api, mock) = world().await;
    mock.inject_always(Fault::InternalServerError);
    let op = start_reachable(&api, &mock, &[]).await;
    managed_route(&api, "release", "", RULES).await;
    let route = wait_condition(
        &api,
        "release",
        "WebhookRegistered",
        "False",
        "AppStoreConnectUnavailable",
    )
    .await;
    assert!(
        condition(&route, "WebhookRegistered")
            .unwrap()
            .message
            .contains("500")
    );
    wait_condition(
        &api,
        "release",
        "Ready",
        "False",
        "AppStoreConnectUnavailable",
    )
    .await;
    let before = webhook_calls(&mock).len();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = webhook_calls(&mock).len() - before;
    // 4 attempts per pass (50 ms base backoff), passes 100 ms .. 1 s apart with doubling.
    assert!(during <= 40, "{during} calls in 3 s");
    mock.clear_faults();
    wait_condition(&api, "release", "WebhookRegistered", "True", "Created").await;
    assert_eq!(mock.webhooks().len(), 1);
    op.stop().await;
}

#[tokio::test]
async fn an_app_with_ten_webhooks_is_limit_reached() {
    let (api, mock) = world().await;
    for i in 0..10 {
        mock.add_webhook(MockWebhook {
            id: format!("other-{i}"),
            ..ui_webhook(&format!("https://elsewhere.example.com/{i}"))
        });
    }
    let op = start_reachable(&api, &mock, &[]).await;
    managed_route(&api, "release", "", RULES).await;
    let route = wait_condition(
        &api,
        "release",
        "WebhookRegistered",
        "False",
        "LimitReached",
    )
    .await;
    assert!(
        condition(&route, "WebhookRegistered")
            .unwrap()
            .message
            .contains("10")
    );
    assert_eq!(calls(&mock, "POST", "/v1/webhooks"), 0);
    op.stop().await;
}

//! Deleting a route: the finalizer deletes the webhook (unless `Retain`), lets go on a 404, and never holds
//! the route longer than `--webhook-release-timeout`.

use super::*;

#[tokio::test]
async fn deleting_the_route_deletes_its_webhook() {
    let (api, mock) = world().await;
    let op = start_reachable(&api, &mock, &[]).await;
    managed_route(&api, "release", "", RULES).await;
    let route = registered_and_verified(&api, "release").await;
    assert!(
        route
            .metadata
            .finalizers
            .as_ref()
            .unwrap()
            .iter()
            .any(|f| f == "asc.webhooks.dev/app-store-connect-webhook")
    );
    let id = webhook_id(&route);
    delete_route(&api, "release").await;
    wait_route_gone(&api, "release").await;
    assert!(mock.webhook(&id).is_none());
    assert_eq!(calls(&mock, "DELETE", &format!("/v1/webhooks/{id}")), 1);
    wait_event(&api, "WebhookDeleted").await;
    op.stop().await;
}

#[tokio::test]
async fn retain_keeps_the_webhook_when_the_route_goes() {
    let (api, mock) = world().await;
    let op = start_reachable(&api, &mock, &[]).await;
    managed_route(&api, "release", ", deletionPolicy: Retain", RULES).await;
    let id = webhook_id(&registered_and_verified(&api, "release").await);
    delete_route(&api, "release").await;
    wait_route_gone(&api, "release").await;
    assert!(mock.webhook(&id).is_some());
    assert_eq!(calls(&mock, "DELETE", "/v1/webhooks"), 0);
    wait_event(&api, "WebhookRetained").await;
    op.stop().await;
}

#[tokio::test]
async fn a_404_from_app_store_connect_still_releases_the_finalizer() {
    let (api, mock) = world().await;
    let op = start_reachable(&api, &mock, &[]).await;
    managed_route(&api, "release", "", RULES).await;
    let id = webhook_id(&registered_and_verified(&api, "release").await);
    assert!(mock.delete_webhook(&id));
    delete_route(&api, "release").await;
    wait_route_gone(&api, "release").await;
    assert_eq!(calls(&mock, "DELETE", &format!("/v1/webhooks/{id}")), 1);
    assert!(mock.webhooks().is_empty(), "not re-created on the way out");
    op.stop().await;
}

#[tokio::test]
async fn a_route_whose_credential_is_gone_is_released_after_the_bound_with_a_warning() {
    let (api, mock) = world().await;
    let op = start_reachable(&api, &mock, &["--webhook-release-timeout", "2s"]).await;
    managed_route(&api, "release", "", RULES).await;
    let id = webhook_id(&registered_and_verified(&api, "release").await);
    Api::<AscCredential>::namespaced(api.client(), NS)
        .delete("team", &DeleteParams::default())
        .await
        .unwrap();
    delete_route(&api, "release").await;
    // While it waits, the route says why.
    let waiting = wait_condition(
        &api,
        "release",
        "WebhookRegistered",
        "False",
        "CredentialNotReady",
    )
    .await;
    let message = condition(&waiting, "WebhookRegistered").unwrap().message;
    assert!(message.contains("released within 2 s"), "{message}");
    wait_route_gone(&api, "release").await;
    let event = wait_event(&api, "WebhookLeftBehind").await;
    assert_eq!(event["type"], "Warning");
    assert!(
        mock.webhook(&id).is_some(),
        "left behind, as the Event says"
    );
    op.stop().await;
}

#[tokio::test]
async fn a_route_without_app_store_connect_gets_no_finalizer_and_no_call() {
    let (api, mock) = world().await;
    let op = start_reachable(&api, &mock, &[]).await;
    route_with(&api, "manual", RULES, "").await;
    eventually("the route is ready", WAIT, || {
        let r = get_route(&api, "manual");
        async move { condition(&r, "Ready").filter(|c| c.is_true()).map(|_| r) }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = get_route(&api, "manual");
    assert!(r.metadata.finalizers.as_ref().is_none_or(|f| f.is_empty()));
    assert!(condition(&r, "WebhookRegistered").is_none());
    assert!(webhook_calls(&mock).is_empty());
    delete_route(&api, "manual").await;
    wait_route_gone(&api, "manual").await;
    op.stop().await;
}

#[tokio::test]
async fn removing_app_store_connect_stops_managing_and_leaves_the_webhook() {
    let (api, mock) = world().await;
    let op = start_reachable(&api, &mock, &[]).await;
    managed_route(&api, "release", "", RULES).await;
    let id = webhook_id(&registered_and_verified(&api, "release").await);
    edit_route(
        &api,
        "release",
        serde_json::json!({"spec": {"appStoreConnect": null}}),
    )
    .await;
    let route = eventually("the route is unmanaged", WAIT, || {
        let r = get_route(&api, "release");
        async move {
            let s = r.status.as_ref()?;
            let clean = s.app_store_connect.is_none()
                && condition(&r, "WebhookRegistered").is_none()
                && condition(&r, "WebhookVerified").is_none()
                && r.metadata.finalizers.as_ref().is_none_or(|f| f.is_empty());
            clean.then_some(r)
        }
    })
    .await;
    assert!(
        condition(&route, "Ready").is_some(),
        "the route controller's condition stays"
    );
    wait_condition(&api, "release", "Ready", "True", "Ready").await;
    assert!(mock.webhook(&id).is_some());
    assert_eq!(calls(&mock, "DELETE", "/v1/webhooks"), 0);
    op.stop().await;
}

//! Registration, adoption, verification, drift repair and `generateSecret`.

use super::*;
use asc_webhook_operator::resources::route_asc::AppStoreConnectStatus;
use k8s_openapi::api::core::v1::Secret;
use testkit::asc_mock::DeliveryState;

fn asc_status(route: &WebhookRoute) -> AppStoreConnectStatus {
    *route.status.clone().unwrap().app_store_connect.unwrap()
}

#[tokio::test]
async fn applying_a_route_registers_exactly_one_webhook_and_a_ping_verifies_it() {
    let (api, mock) = world().await;
    let op = start_reachable(&api, &mock, &[]).await;
    managed_route(&api, "release", "", RULES).await;
    let route = registered_and_verified(&api, "release").await;
    let hooks = mock.webhooks();
    assert_eq!(hooks.len(), 1, "{hooks:?}");
    let w = &hooks[0];
    assert_eq!(w.url, format!("{}/hooks/{NS}/release", op.url));
    assert_eq!(
        route.status.as_ref().unwrap().url.as_deref(),
        Some(w.url.as_str())
    );
    assert_eq!(w.secret, WEBHOOK_SECRET);
    assert_eq!(w.event_types, vec!["BUILD_UPLOAD_STATE_UPDATED"]);
    assert_eq!(
        (w.name.as_str(), w.enabled, w.app_id.as_str()),
        ("ios/release", true, APP_ID)
    );
    assert_eq!(webhook_id(&route), w.id);
    let status = asc_status(&route);
    assert!(status.observed_secret_version.is_some() && status.last_sync_time.is_some());
    // The ping went through the real receiver: signed with the secret, recorded as a delivery.
    let pings: Vec<_> = mock
        .deliveries()
        .into_iter()
        .filter(|d| d.event.ping)
        .collect();
    assert_eq!(pings.len(), 1);
    assert_eq!(pings[0].state, DeliveryState::Succeeded, "{:?}", pings[0]);
    wait_condition(&api, "release", "Ready", "True", "Ready").await;

    // Re-applying the same spec changes nothing in App Store Connect.
    edit_route(
        &api,
        "release",
        serde_json::json!({"metadata": {"labels": {"team": "ios"}}}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(mock.webhooks().len(), 1);
    assert_eq!(calls(&mock, "POST", "/v1/webhooks"), 1);

    // A restarted operator (same URL) trusts the synced status: no call at all until the slow re-read.
    let url = op.url.clone();
    op.stop().await;
    let before = webhook_calls(&mock).len();
    let op = restart_reachable(&api, &mock, &url, &[]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The one call a restart makes is catch-up's start-up read of the delivery log.
    let since: Vec<_> = webhook_calls(&mock)[before..].to_vec();
    assert!(
        since.len() <= 1 && since.iter().all(|r| r.path.contains("/deliveries")),
        "an idle route costs no App Store Connect call: {since:?}"
    );
    assert_eq!(mock.webhooks().len(), 1);
    let again =
        super::wait_condition(&api, "release", "WebhookVerified", "True", "PingReceived").await;
    assert_eq!(webhook_id(&again), w.id);
    op.stop().await;
}

#[tokio::test]
async fn a_restart_with_a_new_public_url_patches_the_url_of_the_same_webhook() {
    let (api, mock) = world().await;
    let op = start_reachable(&api, &mock, &[]).await;
    managed_route(&api, "release", "", RULES).await;
    let first = registered_and_verified(&api, "release").await;
    op.stop().await;
    let op = start_reachable(&api, &mock, &[]).await;
    let expected = format!("{}/hooks/{NS}/release", op.url);
    eventually("the webhook follows the new URL", WAIT, || {
        let ok = mock
            .webhook(&webhook_id(&first))
            .is_some_and(|w| w.url == expected);
        async move { ok.then_some(()) }
    })
    .await;
    assert_eq!(mock.webhooks().len(), 1);
    assert_eq!(calls(&mock, "POST", "/v1/webhooks"), 1);
    let route = wait_condition(&api, "release", "WebhookRegistered", "True", "Updated").await;
    assert!(
        condition(&route, "WebhookRegistered")
            .unwrap()
            .message
            .contains("url")
    );
    op.stop().await;
}

#[tokio::test]
async fn an_existing_webhook_with_the_routes_url_is_adopted_not_duplicated() {
    let (api, mock) = world().await;
    let op = start_reachable(&api, &mock, &[]).await;
    let made_by_hand = mock.add_webhook(ui_webhook(&format!("{}/hooks/{NS}/release", op.url)));
    managed_route(&api, "release", "", RULES).await;
    let route = wait_condition(&api, "release", "WebhookVerified", "True", "PingReceived").await;
    assert_eq!(webhook_id(&route), made_by_hand);
    assert_eq!(mock.webhooks().len(), 1);
    assert_eq!(calls(&mock, "POST", "/v1/webhooks"), 0);
    let w = mock.webhook(&made_by_hand).unwrap();
    assert_eq!(
        w.secret, WEBHOOK_SECRET,
        "an adopted webhook's unknown secret is replaced"
    );
    assert_eq!(w.event_types, vec!["BUILD_UPLOAD_STATE_UPDATED"]);
    assert_eq!(w.name, "ios/release");
    op.stop().await;
}

#[tokio::test]
async fn editing_a_rules_event_types_patches_event_types() {
    let (api, mock) = world().await;
    let op = start_reachable(&api, &mock, &[]).await;
    managed_route(&api, "release", "", RULES).await;
    let route = registered_and_verified(&api, "release").await;
    let id = webhook_id(&route);
    let first_ping = asc_status(&route).ping_requested_time;
    edit_route(
        &api,
        "release",
        serde_json::json!({"spec": {"rules": [{"name": "submit",
            "match": {"eventTypes": ["buildUploadStateUpdated", "appStoreVersionAppVersionStateUpdated"]},
            "http": {"urlSecretRef": {"name": "slack", "key": "url"}}}]}}),
    )
    .await;
    let route = wait_condition(&api, "release", "WebhookRegistered", "True", "Updated").await;
    let message = condition(&route, "WebhookRegistered").unwrap().message;
    assert!(message.contains("updated eventTypes of"), "{message}");
    let w = mock.webhook(&id).unwrap();
    assert_eq!(
        w.event_types,
        vec![
            "APP_STORE_VERSION_APP_VERSION_STATE_UPDATED",
            "BUILD_UPLOAD_STATE_UPDATED"
        ]
    );
    assert_eq!(calls(&mock, "PATCH", &format!("/v1/webhooks/{id}")), 1);
    assert_eq!(calls(&mock, "POST", "/v1/webhooks"), 1);
    // The change is verified again by a new ping.
    eventually("a second ping went through the receiver", WAIT, || {
        let pings = mock
            .deliveries()
            .iter()
            .filter(|d| d.event.ping && d.state == DeliveryState::Succeeded)
            .count();
        async move { (pings == 2).then_some(()) }
    })
    .await;
    let route = wait_condition(&api, "release", "WebhookVerified", "True", "PingReceived").await;
    assert!(asc_status(&route).ping_requested_time >= first_ping);
    assert_eq!(calls(&mock, "POST", "/v1/webhookPings"), 2);
    op.stop().await;
}

#[tokio::test]
async fn a_change_made_in_app_store_connect_is_repaired_on_the_next_read() {
    let (api, mock) = world().await;
    let op = start_reachable(&api, &mock, &["--webhook-resync-interval", "2s"]).await;
    managed_route(&api, "release", "", RULES).await;
    let route = registered_and_verified(&api, "release").await;
    let id = webhook_id(&route);
    assert!(mock.edit_webhook(&id, |w| {
        w.enabled = false;
        w.event_types.clear();
        w.name = "renamed in the UI".into();
    }));
    eventually("the drift is repaired", WAIT, || {
        let w = mock.webhook(&id).unwrap();
        async move {
            (w.enabled
                && w.event_types == ["BUILD_UPLOAD_STATE_UPDATED"]
                && w.name == "ios/release")
                .then_some(())
        }
    })
    .await;
    assert_eq!(mock.webhooks().len(), 1);
    op.stop().await;
}

#[tokio::test]
async fn a_webhook_deleted_in_app_store_connect_is_recreated() {
    let (api, mock) = world().await;
    let op = start_reachable(&api, &mock, &["--webhook-resync-interval", "2s"]).await;
    managed_route(&api, "release", "", RULES).await;
    let route = registered_and_verified(&api, "release").await;
    let old = webhook_id(&route);
    assert!(mock.delete_webhook(&old));
    let route = eventually("a new webhook is recorded", WAIT, || {
        let r = get_route(&api, "release");
        let old = old.clone();
        async move { (webhook_id(&r) != old).then_some(r) }
    })
    .await;
    let hooks = mock.webhooks();
    assert_eq!(hooks.len(), 1);
    assert_eq!(hooks[0].id, webhook_id(&route));
    assert_eq!(hooks[0].secret, WEBHOOK_SECRET);
    wait_event(&api, "WebhookRecreated").await;
    wait_condition(&api, "release", "WebhookVerified", "True", "PingReceived").await;
    op.stop().await;
}

fn secret_value(api: &FakeApiServer, name: &str) -> Option<(String, Secret)> {
    let s: Secret = serde_json::from_value(api.get_object("secrets", NS, name)?).unwrap();
    let v = String::from_utf8(s.data.clone()?.get("secret")?.0.clone()).unwrap();
    Some((v, s))
}

#[tokio::test]
async fn generate_secret_creates_the_secret_once_owned_by_the_route_and_never_overwrites() {
    let (api, mock) = world().await;
    let op = start_reachable(&api, &mock, &["--webhook-resync-interval", "1s"]).await;
    let yaml = format!(
        "apiVersion: asc.webhooks.dev/v1alpha1\nkind: WebhookRoute\nmetadata: {{name: gen, namespace: {NS}}}\nspec:\n  secretRef: {{name: gen-secret, key: secret}}\n  credentialRef: {{name: team}}\n  appStoreConnect: {{appId: \"{APP_ID}\", generateSecret: true}}\n  rules:\n{RULES}"
    );
    let route: WebhookRoute = create_yaml(&api, &yaml).await;
    wait_condition(&api, "gen", "WebhookVerified", "True", "PingReceived").await;
    let (value, secret) = secret_value(&api, "gen-secret").expect("the Secret was generated");
    assert_eq!(value.len(), 64);
    assert!(value.bytes().all(|b| b.is_ascii_hexdigit()), "{value}");
    let owner = &secret.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), Some(&owner.uid)),
        ("WebhookRoute", route.metadata.uid.as_ref())
    );
    let w = mock
        .webhooks()
        .into_iter()
        .find(|w| w.url.ends_with("/gen"))
        .unwrap();
    assert_eq!(w.secret, value);
    // Later passes (re-reads every second here) leave it alone.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (again, later) = secret_value(&api, "gen-secret").unwrap();
    assert_eq!(again, value);
    assert_eq!(
        later.metadata.resource_version,
        secret.metadata.resource_version
    );

    // A route whose Secret already exists keeps that Secret's value.
    managed_route(&api, "kept", ", generateSecret: true", RULES).await;
    wait_condition(&api, "kept", "WebhookVerified", "True", "PingReceived").await;
    assert_eq!(secret_value(&api, "hook-secret").unwrap().0, WEBHOOK_SECRET);
    let w = mock
        .webhooks()
        .into_iter()
        .find(|w| w.url.ends_with("/kept"))
        .unwrap();
    assert_eq!(w.secret, WEBHOOK_SECRET);
    assert_no_secret_leaks(&api, &op, &[&value, WEBHOOK_SECRET]).await;
    op.stop().await;
}

#[tokio::test]
async fn a_ping_that_never_arrives_turns_verified_false_with_the_likely_cause() {
    let (api, mock) = world().await;
    // The default test URL (https://hooks.example.com) is not reachable from the mock.
    let op = start_unreachable(&api, &mock, &["--webhook-verify-timeout", "2s"]).await;
    managed_route(&api, "release", "", RULES).await;
    wait_condition(&api, "release", "WebhookRegistered", "True", "Created").await;
    let route = wait_condition(
        &api,
        "release",
        "WebhookVerified",
        "False",
        "PingNotReceived",
    )
    .await;
    let message = condition(&route, "WebhookVerified").unwrap().message;
    for hint in [
        "internet",
        "Ingress",
        "TLS",
        "https://hooks.example.com/hooks/ios/release",
    ] {
        assert!(message.contains(hint), "{hint}: {message}");
    }
    eventually("the mock logged the failed ping", WAIT, || {
        let failed = mock
            .deliveries()
            .iter()
            .any(|d| d.event.ping && d.state == DeliveryState::Failed);
        async move { failed.then_some(()) }
    })
    .await;
    op.stop().await;
}

#[tokio::test]
async fn a_plain_http_public_url_is_refused_and_nothing_is_registered() {
    let (api, mock) = world().await;
    let op = start_unreachable(&api, &mock, &["--public-url", "http://hooks.example.com"]).await;
    managed_route(&api, "release", "", RULES).await;
    wait_condition(
        &api,
        "release",
        "WebhookRegistered",
        "False",
        "InsecurePublicUrl",
    )
    .await;
    wait_condition(&api, "release", "Ready", "False", "InsecurePublicUrl").await;
    assert!(webhook_calls(&mock).is_empty());
    op.stop().await;
}

//! Rotating the webhook secret: App Store Connect gets the new one, and deliveries signed with the old one
//! just before are accepted for the grace period only.

use super::*;
use testkit::asc_mock::DeliveryState;

const NEW_SECRET: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

fn build_event(id: &str) -> Vec<u8> {
    String::from_utf8(fixture("build-upload-complete"))
        .unwrap()
        .replace("0b7d3c1e-4a2f-4e6b-9d8c-5f1a2b3c4d5e", id)
        .into_bytes()
}

#[tokio::test]
async fn rotating_the_secret_patches_it_and_the_old_one_is_accepted_only_during_the_grace() {
    let (api, mock) = world().await;
    let op = start_reachable(
        &api,
        &mock,
        // Secrets are read by name, not watched: a rotation is noticed on the next re-check.
        &["--secret-rotation-grace", "3s", "--recheck-interval", "1s"],
    )
    .await;
    managed_route(&api, "release", "", RULES).await;
    let route = registered_and_verified(&api, "release").await;
    let id = webhook_id(&route);
    // Millisecond resolution: the rotation is now noticed within the second the webhook was registered
    // in, so the whole-second `pingRequestedTime` may not move.
    let first_ping = route.status.as_ref().and_then(|s| s.last_ping_time.clone());

    // In flight: signed by "Apple" with the old secret just before the rotation.
    let early = mock.sign_event(&id, &build_event("in-flight-1")).unwrap();
    let late = mock.sign_event(&id, &build_event("in-flight-2")).unwrap();

    put_secret(&api, "hook-secret", &[("secret", NEW_SECRET)]).await;
    eventually("App Store Connect has the new secret", WAIT, || {
        let rotated = mock.webhook(&id).is_some_and(|w| w.secret == NEW_SECRET);
        async move { rotated.then_some(()) }
    })
    .await;
    assert_eq!(calls(&mock, "POST", "/v1/webhooks"), 1, "rotated in place");
    // The ping after the change was signed with the new secret and reached the receiver, which has
    // therefore read the new value.
    eventually("the rotation is verified by a new ping", WAIT, || {
        let r = get_route(&api, "release");
        let first_ping = first_ping.clone();
        let pings = calls(&mock, "POST", "/v1/webhookPings");
        async move {
            let received = r.status.as_ref()?.last_ping_time.clone();
            let verified = condition(&r, "WebhookVerified")?;
            (pings >= 2 && received > first_ping && verified.is_true()).then_some(())
        }
    })
    .await;

    let accepted = mock.deliver(&early).await;
    assert_eq!(accepted.state, DeliveryState::Succeeded, "{accepted:?}");
    assert_eq!(accepted.response_status, Some(202));

    tokio::time::sleep(Duration::from_secs(4)).await;
    let refused = mock.deliver(&late).await;
    assert_eq!(refused.state, DeliveryState::Failed, "{refused:?}");
    assert_eq!(refused.response_status, Some(401));

    // New events, signed with the new secret, go through as ever.
    let fresh = mock
        .send_event(&id, &build_event("after-rotation"))
        .await
        .unwrap();
    assert_eq!(fresh.response_status, Some(202), "{fresh:?}");
    assert_no_secret_leaks(&api, &op, &[WEBHOOK_SECRET, NEW_SECRET]).await;
    op.stop().await;
}

#[tokio::test]
async fn a_route_not_managed_by_the_operator_never_accepts_the_old_secret() {
    let (api, mock) = world().await;
    let op = start_unreachable(&api, &mock, &["--secret-rotation-grace", "10m"]).await;
    route_with(&api, "manual", RULES, "").await;
    let body = build_event("manual-1");
    let (status, _) = op.post("manual", &body, WEBHOOK_SECRET).await;
    assert_eq!(status, 202);
    put_secret(&api, "hook-secret", &[("secret", NEW_SECRET)]).await;
    // A cached copy younger than a second is not re-read on a failed signature.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, _) = op
        .post("manual", &build_event("manual-2"), NEW_SECRET)
        .await;
    assert_eq!(status, 202, "the new secret applies at once");
    let (status, _) = op
        .post("manual", &build_event("manual-3"), WEBHOOK_SECRET)
        .await;
    assert_eq!(status, 401, "no grace without spec.appStoreConnect");
    op.stop().await;
}

#[tokio::test]
async fn a_rotated_secret_reaches_app_store_connect_within_seconds_without_a_short_recheck() {
    let (api, mock) = world().await;
    // Nothing re-reads the Secret for minutes, so the PATCH comes from noticing the change.
    let op = start_reachable(&api, &mock, &["--recheck-interval", "5m"]).await;
    managed_route(&api, "release", "", RULES).await;
    let route = registered_and_verified(&api, "release").await;
    let id = webhook_id(&route);
    put_secret(&api, "hook-secret", &[("secret", NEW_SECRET)]).await;
    eventually(
        "App Store Connect has the new secret",
        Duration::from_secs(10),
        || {
            let rotated = mock.webhook(&id).is_some_and(|w| w.secret == NEW_SECRET);
            async move { rotated.then_some(()) }
        },
    )
    .await;
    op.stop().await;
}

#[tokio::test]
async fn the_reconcile_requested_at_annotation_reads_the_webhook_back_and_catches_up_now() {
    let (api, mock) = world().await;
    let op = start_reachable(&api, &mock, &["--recheck-interval", "5m"]).await;
    managed_route(&api, "release", "", RULES).await;
    let id = webhook_id(&registered_and_verified(&api, "release").await);
    // Read-backs are due every 30 minutes and catch-up passes every 10: none comes by itself here.
    let read_backs = || calls(&mock, "GET", &format!("/v1/webhooks/{id}"));
    let passes = || calls(&mock, "GET", &format!("/v1/webhooks/{id}/deliveries"));
    let (reads_before, passes_before) = (read_backs() - passes(), passes());
    edit_route(
        &api,
        "release",
        serde_json::json!({"metadata": {"annotations": {
            "asc.webhooks.dev/reconcile-requested-at": "2026-12-04T19:00:00Z"}}}),
    )
    .await;
    eventually(
        "the webhook is read back and a catch-up pass made",
        Duration::from_secs(10),
        || {
            let (reads, passes) = (read_backs() - passes(), passes());
            async move { (reads > reads_before && passes > passes_before).then_some(()) }
        },
    )
    .await;
    op.stop().await;
}

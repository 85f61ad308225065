//! Events shaped as Apple's documentation shows them (restated in `tests/fixtures/asc/documented`):
//! a background-asset event (instance without a `data` wrapper), an event without `links.self`, an
//! alternative-distribution event (linking to Apple's other API host) and a beta feedback event each
//! enrich and match rules; the territory event, which names no object, says exactly why it cannot.

use super::*;

const RULES: &str = "    - name: enriched
      match: {eventTypes: [backgroundAssetVersionStateUpdated, appStoreVersionAppVersionStateUpdated, betaFeedbackCrashSubmissionCreated, alternativeDistributionPackageAvailableUpdated, alternativeDistributionTerritoryAvailabilityUpdated]}
      enrich: Required
      job: {template: {spec: {template: {spec: {restartPolicy: Never, containers: [{name: c, image: busybox}]}}}}}
    - name: left-the-marketplace
      match: {eventTypes: [alternativeDistributionTerritoryAvailabilityUpdated], newStates: [UNAVAILABLE]}
      enrich: Never
      job: {template: {spec: {template: {spec: {restartPolicy: Never, containers: [{name: c, image: busybox}]}}}}}
";

fn documented(name: &str, mock: &AscMock) -> Vec<u8> {
    let path =
        std::path::Path::new(ROOT).join(format!("tests/fixtures/asc/documented/{name}.json"));
    let text = std::fs::read_to_string(path).unwrap();
    text.replace("https://api.appstoreconnect.apple.com", &mock.url())
        .into_bytes()
}

fn delivery_of(
    api: &FakeApiServer,
    event_type: &str,
) -> Option<asc_webhook_operator::resources::WebhookDelivery> {
    deliveries(api)
        .into_iter()
        .find(|d| d.spec.event_type == event_type)
}

#[tokio::test]
async fn documented_events_enrich_and_match_rules_or_say_why_not() {
    let (api, mock) = world().await;
    let op = start_reachable(&api, &mock, &[]).await;
    managed_route(&api, "release", "", RULES).await;
    let id = webhook_id(&registered_and_verified(&api, "release").await);
    let enriched = [
        (
            "BACKGROUND_ASSET_VERSION_STATE_UPDATED",
            "backgroundAssetVersionStateUpdated",
            Some("FAILED"),
        ),
        (
            "APP_STORE_VERSION_APP_VERSION_STATE_UPDATED",
            "appStoreVersionAppVersionStateUpdated",
            Some("READY_FOR_DISTRIBUTION"),
        ),
        (
            "BETA_FEEDBACK_CRASH_SUBMISSION_CREATED",
            "betaFeedbackCrashSubmissionCreated",
            None,
        ),
        (
            "ALTERNATIVE_DISTRIBUTION_PACKAGE_AVAILABLE_UPDATED",
            "alternativeDistributionPackageAvailableUpdated",
            None,
        ),
    ];
    for (file, _, _) in &enriched {
        let sent = mock
            .send_event(&id, &documented(file, &mock))
            .await
            .expect(file);
        assert_eq!(sent.response_status, Some(202), "{file}: {sent:?}");
    }
    for (file, event_type, state) in enriched {
        let status = eventually(&format!("{event_type} is enriched"), WAIT, || {
            let d = delivery_of(&api, event_type);
            async move {
                let e = d?.status?.enrichment?;
                (!e.result.is_empty()).then_some(e)
            }
        })
        .await;
        assert_eq!(status.result, "Enriched", "{file}: {status:?}");
        assert_eq!(status.state.as_deref(), state, "{file}: {status:?}");
    }
    let asset = delivery_of(&api, "backgroundAssetVersionStateUpdated").unwrap();
    let e = asset.status.unwrap().enrichment.unwrap();
    assert_eq!(e.platform.as_deref(), Some("IOS"));
    assert_eq!(e.version.as_deref(), Some("3"));
    assert!(e.errors[0].starts_with("ASSET_PACK_INVALID"), "{e:?}");
    let crash = delivery_of(&api, "betaFeedbackCrashSubmissionCreated").unwrap();
    assert_eq!(
        crash
            .status
            .unwrap()
            .enrichment
            .unwrap()
            .platform
            .as_deref(),
        Some("IOS")
    );
    let package = delivery_of(&api, "alternativeDistributionPackageAvailableUpdated").unwrap();
    assert_eq!(package.spec.new_state.as_deref(), Some("AVAILABLE"));
    let fetched: Vec<String> = mock.requests().into_iter().map(|r| r.path).collect();
    assert!(
        fetched
            .iter()
            .any(|p| p == "/v1/appStoreVersions/b8e5c7d1-2f6a-4e9b-8c3d-7a1f5e0b9c24"),
        "the URL of an event without links.self is built from its type and id: {fetched:?}"
    );
    eventually("each enriched event runs its Job", WAIT, || {
        let n = jobs(&api).len();
        async move { (n == 4).then_some(()) }
    })
    .await;

    let territory = documented(
        "ALTERNATIVE_DISTRIBUTION_TERRITORY_AVAILABILITY_UPDATED",
        &mock,
    );
    mock.send_event(&id, &territory).await.unwrap();
    let d = eventually("the territory event's rules are decided", WAIT, || {
        let d = delivery_of(&api, "alternativeDistributionTerritoryAvailabilityUpdated");
        async move {
            let d = d?;
            let st = d.status.as_ref()?;
            let enriched = st.actions.iter().find(|a| a.rule == "enriched")?;
            (enriched.reason.as_deref() == Some("NothingToEnrich")).then_some(d)
        }
    })
    .await;
    let st = d.status.unwrap();
    assert_eq!(st.enrichment, None, "nothing was fetched: {st:?}");
    eventually("the state-matched rule runs its Job", WAIT, || {
        let n = jobs(&api).len();
        async move { (n == 5).then_some(()) }
    })
    .await;
    op.stop().await;
}

//! What the operator costs the API server: deliveries are counted from a watch, never listed, and a Ready
//! route's Secrets are not read again because its deliveries changed.

use crate::harness::*;
use std::time::Duration;
use testkit::apiserver::Verb;

#[tokio::test]
async fn counting_deliveries_lists_nothing_and_rereads_no_secret() {
    let api = fake_api().await;
    put_secret(&api, "hook-secret", &[("secret", WEBHOOK_SECRET)]).await;
    put_secret(&api, "slack", &[("url", "https://hooks.slack.example/x")]).await;
    let rules = "    - name: never\n      match: {eventTypes: [SOMETHING_ELSE]}\n      http: {urlSecretRef: {name: slack, key: url}}\n";
    route_with(&api, "counted", rules, "").await;
    let op = Operator::start(&api, &[]).await;
    wait_route_ready(&api, "counted").await;
    api.clear_request_log();
    for i in 0..5 {
        let body = format!(
            r#"{{"data":{{"type":"buildUploadStateUpdated","id":"cost-{i}","attributes":{{"newState":"PROCESSING"}}}}}}"#
        );
        assert_eq!(
            op.post("counted", body.as_bytes(), WEBHOOK_SECRET).await.0,
            202
        );
    }
    eventually(
        "the route counted all five",
        Duration::from_secs(15),
        || {
            let r = get_route(&api, "counted");
            async move {
                r.status
                    .filter(|s| s.deliveries.received == 5 && s.deliveries.no_match == 5)
                    .map(|_| ())
            }
        },
    )
    .await;
    let log = api.request_log();
    let lists: Vec<_> = log
        .iter()
        .filter(|r| r.verb == Verb::List)
        .map(|r| r.path.clone())
        .collect();
    assert!(lists.is_empty(), "no LIST while counting: {lists:?}");
    // The receiver reads the webhook secret (its cache is seconds long); the route controller reads neither
    // Secret again just because deliveries changed.
    let secret_reads: Vec<_> = log
        .iter()
        .filter(|r| r.resource == "secrets" && r.verb == Verb::Get)
        .map(|r| r.name.clone())
        .collect();
    assert!(
        !secret_reads.iter().any(|n| n.as_deref() == Some("slack")),
        "the Slack Secret was read again: {secret_reads:?}"
    );
    assert!(secret_reads.len() <= 1, "{secret_reads:?}");
    op.stop().await;
}

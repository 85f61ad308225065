//! A rule's `when`: CEL over the event and its enrichment, compiled with the route, bounded in cost.

use crate::harness::*;
use crate::world::World;
use asc_webhook_operator::resources::WebhookRoute;
use asc_webhook_operator::resources::delivery::{ActionState, Phase};
use std::time::Duration;

const JOB: &str = "      job:\n        template:\n          spec:\n            template:\n              spec:\n                restartPolicy: Never\n                containers: [{name: run, image: busybox}]\n";

fn rule(name: &str, when: &str) -> String {
    format!(
        "    - name: {name}\n      match: {{eventTypes: [BUILD_UPLOAD_STATE_UPDATED]}}\n      when: '{when}'\n{JOB}"
    )
}

async fn route(w: &World, name: &str, rules: &str) {
    let yaml = format!(
        "apiVersion: asc.webhooks.dev/v1alpha1\nkind: WebhookRoute\nmetadata:\n  name: {name}\n  namespace: {NS}\nspec:\n  secretRef: {{name: submit-after-processing-webhook-secret, key: secret}}\n  credentialRef: {{name: team-key}}\n  rules:\n{rules}"
    );
    create_yaml::<WebhookRoute>(&w.api, &yaml).await;
}

async fn ready_reason(w: &World, name: &str, wanted: &str) -> String {
    eventually(
        &format!("route {name} is Ready={wanted}"),
        Duration::from_secs(15),
        || {
            let r = get_route(&w.api, name);
            async move {
                let c = r
                    .status?
                    .conditions
                    .into_iter()
                    .find(|c| c.type_ == "Ready")?;
                (c.status == wanted).then(|| format!("{}: {}", c.reason, c.message))
            }
        },
    )
    .await
}

async fn deliver(w: &World, route: &str) -> String {
    let body = fixture_for_mock("build-upload-complete", &w.asc);
    let (status, answer) = w.op.post(route, &body, WEBHOOK_SECRET).await;
    assert_eq!(status, 202, "{answer}");
    answer["delivery"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn when_selects_between_two_rules_on_enriched_data() {
    let w = World::example("submit-after-processing", &[]).await;
    w.wait_route_ready().await;
    let rules = [
        rule(
            "ios",
            r#"instance.platform == "IOS" && event.oldState == "PROCESSING""#,
        ),
        rule("mac", r#"instance.platform == "MAC_OS""#),
    ]
    .concat();
    route(&w, "by-platform", &rules).await;
    ready_reason(&w, "by-platform", "True").await;
    let name = deliver(&w, "by-platform").await;
    let running = w.wait_phase(&name, Phase::Running).await.status.unwrap();
    assert_eq!(running.matched_rules, vec!["ios"]);
    assert_eq!(
        running.enrichment.as_ref().unwrap().platform.as_deref(),
        Some("IOS")
    );
    assert_eq!(running.actions.len(), 1, "{:?}", running.actions);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let made: Vec<String> = jobs(&w.api)
        .iter()
        .filter(|j| j.metadata.labels.as_ref().unwrap()["asc.webhooks.dev/route"] == "by-platform")
        .map(|j| j.metadata.labels.as_ref().unwrap()["asc.webhooks.dev/rule"].clone())
        .collect();
    assert_eq!(made, vec!["ios"]);
    w.op.stop().await;
}

#[tokio::test]
async fn an_invalid_when_is_reported_on_the_route() {
    let w = World::example("submit-after-processing", &[]).await;
    w.wait_route_ready().await;
    route(
        &w,
        "broken",
        &rule("ios", r#"instance.platform == "IOS" &&"#),
    )
    .await;
    let why = ready_reason(&w, "broken", "False").await;
    assert!(
        why.starts_with("InvalidRuleExpression: rule ios: when: invalid CEL expression"),
        "{why}"
    );
    w.op.stop().await;
}

#[tokio::test]
async fn a_when_over_the_cost_limit_fails_its_rule_not_the_operator() {
    let w = World::example("submit-after-processing", &[]).await;
    w.wait_route_ready().await;
    let list = format!(
        "[{}]",
        (0..60).map(|i| i.to_string()).collect::<Vec<_>>().join(",")
    );
    let costly = format!("{list}.all(a, {list}.all(b, {list}.all(c, a + b + c >= 0)))");
    let rules = [rule("costly", &costly), rule("cheap", "true")].concat();
    route(&w, "costly", &rules).await;
    ready_reason(&w, "costly", "True").await;
    let name = deliver(&w, "costly").await;
    let done = eventually("the costly rule fails", Duration::from_secs(20), || {
        let d = get_delivery(&w.api, &name);
        async move {
            let st = d?.status?;
            st.actions
                .iter()
                .any(|a| a.rule == "costly" && a.state == ActionState::Failed)
                .then_some(st)
        }
    })
    .await;
    let costly_action = done.actions.iter().find(|a| a.rule == "costly").unwrap();
    assert_eq!(
        costly_action.reason.as_deref(),
        Some("ExpressionCostExceeded")
    );
    assert!(costly_action.job_name.is_none());
    let cheap = done.actions.iter().find(|a| a.rule == "cheap").unwrap();
    assert!(
        cheap.job_name.is_some(),
        "the other rule still runs: {cheap:?}"
    );
    // The operator is still working: the main route still runs its rule.
    let d = deliver(&w, "submit-after-processing").await;
    w.wait_phase(&d, Phase::Running).await;
    w.op.stop().await;
}

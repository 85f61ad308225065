//! A rule's `when`: CEL over the event and its enrichment, compiled with the route, bounded in cost.

use crate::harness::*;
use crate::world::World;
use asc_webhook_operator::resources::delivery::{ActionState, Phase};
use std::time::Duration;

const JOB: &str = "      job:\n        template:\n          spec:\n            template:\n              spec:\n                restartPolicy: Never\n                containers: [{name: run, image: busybox}]\n";

fn rule(name: &str, when: &str) -> String {
    format!(
        "    - name: {name}\n      match: {{eventTypes: [BUILD_UPLOAD_STATE_UPDATED]}}\n      when: '{when}'\n{JOB}"
    )
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
    w.add_route("by-platform", &rules).await;
    w.route_ready("by-platform", "True").await;
    let name = w.deliver_to("by-platform", "build-upload-complete").await;
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
    w.add_route("broken", &rule("ios", r#"instance.platform == "IOS" &&"#))
        .await;
    let (reason, message) = w.route_ready("broken", "False").await;
    let why = format!("{reason}: {message}");
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
    w.add_route("costly", &rules).await;
    w.route_ready("costly", "True").await;
    let name = w.deliver_to("costly", "build-upload-complete").await;
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
    let d = w
        .deliver_to("submit-after-processing", "build-upload-complete")
        .await;
    w.wait_phase(&d, Phase::Running).await;
    w.op.stop().await;
}

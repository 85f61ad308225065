//! HTTP actions cannot reach the operator's own pod, loopback or cloud metadata addresses, however the
//! URL spells them, and `--http-action-deny-cidrs none` lifts the guard.

use crate::harness::*;
use crate::recorder::Recorder;
use asc_webhook_operator::actions::egress::DEFAULT_DENY_CIDRS;
use asc_webhook_operator::resources::delivery::{ActionStatus, Phase};
use std::time::Duration;
use testkit::apiserver::FakeApiServer;

/// A route with one HTTP rule per URL: a loopback literal, the metadata address, and a name that
/// resolves to loopback.
async fn guarded_world(hooks: &Recorder) -> FakeApiServer {
    let api = fake_api().await;
    put_secret(&api, "hook-secret", &[("secret", WEBHOOK_SECRET)]).await;
    let port = hooks.url.rsplit(':').next().unwrap().to_owned();
    let urls = [
        ("loopback", format!("http://127.0.0.1:{port}/loopback")),
        (
            "metadata",
            "http://169.254.169.254/latest/meta-data/".to_owned(),
        ),
        ("by-name", format!("http://localhost:{port}/by-name")),
    ];
    let mut rules = String::new();
    for (name, url) in &urls {
        put_secret(&api, &format!("url-{name}"), &[("url", url)]).await;
        rules.push_str(&format!(
            "    - name: {name}\n      match: {{}}\n      http: {{urlSecretRef: {{name: url-{name}, key: url}}, maxAttempts: 1, timeoutSeconds: 1}}\n"
        ));
    }
    route_with(&api, "egress", &rules, "").await;
    api
}

async fn deliver_and_finish(api: &FakeApiServer, op: &Operator) -> Vec<ActionStatus> {
    let (status, answer) = op
        .post("egress", &fixture("build-upload-failed"), WEBHOOK_SECRET)
        .await;
    assert_eq!(status, 202, "{answer}");
    let name = answer["delivery"].as_str().unwrap().to_owned();
    let done = eventually("the delivery finishes", Duration::from_secs(20), || {
        let d = get_delivery(api, &name);
        async move { d?.status.filter(|s| s.phase.is_terminal()) }
    })
    .await;
    let mut actions = done.actions;
    actions.sort_by(|a, b| a.rule.cmp(&b.rule));
    actions
}

#[tokio::test]
async fn loopback_metadata_and_names_resolving_to_loopback_are_egress_denied_by_default() {
    let hooks = Recorder::start().await;
    let api = guarded_world(&hooks).await;
    let op = Operator::start(&api, &["--http-action-deny-cidrs", DEFAULT_DENY_CIDRS]).await;
    let actions = deliver_and_finish(&api, &op).await;
    assert_eq!(actions.len(), 3);
    for a in &actions {
        assert_eq!(a.state.as_str(), "Failed", "{a:?}");
        assert_eq!(a.reason.as_deref(), Some("EgressDenied"), "{a:?}");
        let error = a.error.as_deref().unwrap_or_default();
        assert!(
            error.contains("--http-action-deny-cidrs"),
            "{}: {error}",
            a.rule
        );
        assert_eq!(a.attempts, 1, "never retried: {a:?}");
        assert_eq!(a.http_status_code, None);
    }
    assert!(
        actions[2]
            .error
            .as_deref()
            .unwrap()
            .contains("169.254.169.254"),
        "{:?}",
        actions[2]
    );
    assert!(
        hooks.requests().is_empty(),
        "nothing was sent: {:?}",
        hooks.requests()
    );
    let d = deliveries(&api).remove(0);
    assert_eq!(d.status.unwrap().phase, Phase::Failed);
    op.stop().await;
}

#[tokio::test]
async fn http_action_deny_cidrs_none_lets_the_same_actions_through() {
    let hooks = Recorder::start().await;
    let api = guarded_world(&hooks).await;
    let op = Operator::start(&api, &["--http-action-deny-cidrs", "none"]).await;
    let actions = deliver_and_finish(&api, &op).await;
    let by_rule = |r: &str| actions.iter().find(|a| a.rule == r).unwrap();
    assert_eq!(by_rule("loopback").state.as_str(), "Succeeded");
    assert_eq!(by_rule("by-name").state.as_str(), "Succeeded");
    // Nothing answers at the metadata address here; what matters is that it was tried.
    let metadata = by_rule("metadata");
    assert_ne!(
        metadata.reason.as_deref(),
        Some("EgressDenied"),
        "{metadata:?}"
    );
    assert_eq!(hooks.to("/loopback").len(), 1);
    assert_eq!(hooks.to("/by-name").len(), 1);
    op.stop().await;
}

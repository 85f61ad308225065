//! A route with `spec.appStoreConnect` registers, verifies and keeps its own webhook in the mock App Store
//! Connect, which delivers signed pings and events to the operator's receiver as Apple would.

mod catch_up;
mod catch_up_live;
mod catch_up_unstorable;
mod deletion;
mod doctor;
mod documented_events;
mod examples;
mod faults;
mod lifecycle;
mod ping_resend;
mod rotation;
mod token_scope;

use crate::harness::*;
use crate::world::test_key_pem;
use asc_webhook_operator::resources::{AscCredential, Condition, WebhookRoute};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use std::time::Duration;
use testkit::apiserver::FakeApiServer;
use testkit::asc_mock::{AscMock, MockWebhook, RecordedRequest, TEST_ISSUER_ID, TEST_KEY_ID};

pub const APP_ID: &str = "1234567890";
pub const WAIT: Duration = Duration::from_secs(20);

pub const RULES: &str = "    - name: submit\n      match: {eventTypes: [buildUploadStateUpdated]}\n      http: {urlSecretRef: {name: slack, key: url}}\n";

/// The fake API server with the credential `team` (pointing at the mock) and the Secret `hook-secret`.
pub async fn world() -> (FakeApiServer, AscMock) {
    let api = fake_api().await;
    let mock = asc_mock().await;
    put_secret(&api, "team-key", &[("AuthKey.p8", &test_key_pem())]).await;
    put_secret(&api, "hook-secret", &[("secret", WEBHOOK_SECRET)]).await;
    put_secret(&api, "slack", &[("url", "http://127.0.0.1:9/slack")]).await;
    let yaml = format!(
        "apiVersion: asc.webhooks.dev/v1alpha1\nkind: AscCredential\nmetadata: {{name: team, namespace: {NS}}}\nspec:\n  keyId: {TEST_KEY_ID}\n  issuerId: {TEST_ISSUER_ID}\n  apiUrl: {}\n  privateKeySecretRef: {{name: team-key, key: AuthKey.p8}}\n",
        mock.url()
    );
    create_yaml::<AscCredential>(&api, &yaml).await;
    (api, mock)
}

/// `extra` plus what lets the operator use the mock as App Store Connect.
fn with_origin(mock: &AscMock, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    v.extend(origin_flags(mock));
    v
}

/// [`Operator::start_reachable`] with the mock allowed as the credential's API.
pub async fn start_reachable(api: &FakeApiServer, mock: &AscMock, extra: &[&str]) -> Operator {
    let args = with_origin(mock, extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Operator::start_reachable(api, &args).await
}

/// [`Operator::restart_reachable`] with the mock allowed as the credential's API.
pub async fn restart_reachable(
    api: &FakeApiServer,
    mock: &AscMock,
    url: &str,
    extra: &[&str],
) -> Operator {
    let args = with_origin(mock, extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Operator::restart_reachable(api, url, &args).await
}

/// [`Operator::start`] (public URL `https://hooks.example.com`) with the mock allowed.
pub async fn start_unreachable(api: &FakeApiServer, mock: &AscMock, extra: &[&str]) -> Operator {
    let args = with_origin(mock, extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Operator::start(api, &args).await
}

/// A route named `name` whose webhook the operator manages; `asc` is the inside of `appStoreConnect`.
pub async fn managed_route(
    api: &FakeApiServer,
    name: &str,
    asc: &str,
    rules: &str,
) -> WebhookRoute {
    route_with(
        api,
        name,
        rules,
        &format!(
            "  credentialRef: {{name: team}}\n  appStoreConnect: {{appId: \"{APP_ID}\"{asc}}}\n"
        ),
    )
    .await
}

pub fn condition(route: &WebhookRoute, type_: &str) -> Option<Condition> {
    route
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .cloned()
}

/// Waits until the route's `type_` condition has `status` and `reason`.
pub async fn wait_condition(
    api: &FakeApiServer,
    name: &str,
    type_: &str,
    status: &str,
    reason: &str,
) -> WebhookRoute {
    eventually(
        &format!("{name}: {type_}={status} ({reason})"),
        WAIT,
        || {
            let route: Option<WebhookRoute> = api
                .get_object("webhookroutes", NS, name)
                .map(|v| serde_json::from_value(v).unwrap());
            async move {
                let route = route?;
                let c = condition(&route, type_)?;
                (c.status == status && c.reason == reason).then_some(route)
            }
        },
    )
    .await
}

pub fn webhook_id(route: &WebhookRoute) -> String {
    route
        .status
        .as_ref()
        .and_then(|s| s.app_store_connect.as_ref())
        .and_then(|a| a.webhook_id.clone())
        .expect("status.appStoreConnect.webhookId")
}

/// Requests to the webhook endpoints (not enrichment or credential checks).
pub fn webhook_calls(mock: &AscMock) -> Vec<RecordedRequest> {
    mock.requests()
        .into_iter()
        .filter(|r| {
            r.path.starts_with("/v1/webhook")
                || (r.path.starts_with("/v1/apps/") && r.path.contains("/webhooks"))
        })
        .collect()
}

pub fn calls(mock: &AscMock, method: &str, path_prefix: &str) -> usize {
    webhook_calls(mock)
        .iter()
        .filter(|r| r.method == method && r.path.starts_with(path_prefix))
        .count()
}

/// Registered and verified: the usual starting point.
pub async fn registered_and_verified(api: &FakeApiServer, name: &str) -> WebhookRoute {
    wait_condition(api, name, "WebhookVerified", "True", "PingReceived").await;
    wait_condition(api, name, "WebhookRegistered", "True", "Created").await
}

pub async fn edit_route(api: &FakeApiServer, name: &str, patch: serde_json::Value) {
    Api::<WebhookRoute>::namespaced(api.client(), NS)
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

pub async fn delete_route(api: &FakeApiServer, name: &str) {
    Api::<WebhookRoute>::namespaced(api.client(), NS)
        .delete(name, &DeleteParams::default())
        .await
        .unwrap();
}

pub async fn wait_route_gone(api: &FakeApiServer, name: &str) {
    eventually(&format!("route {name} is gone"), WAIT, || {
        let gone = api.get_object("webhookroutes", NS, name).is_none();
        async move { gone.then_some(()) }
    })
    .await;
}

pub async fn wait_event(api: &FakeApiServer, reason: &str) -> serde_json::Value {
    eventually(&format!("an Event {reason}"), WAIT, || {
        let found = api
            .list_objects("events", Some(NS))
            .into_iter()
            .find(|e| e["reason"] == reason);
        async move { found }
    })
    .await
}

/// A webhook as made by a person in the App Store Connect UI.
pub fn ui_webhook(url: &str) -> MockWebhook {
    MockWebhook {
        id: String::new(),
        app_id: APP_ID.into(),
        name: "made by hand".into(),
        url: url.into(),
        secret: "typed-in-by-hand".into(),
        event_types: vec!["APP_STORE_VERSION_APP_VERSION_STATE_UPDATED".into()],
        enabled: true,
    }
}

/// No secret value in any route status, Event, metric or captured log line.
pub async fn assert_no_secret_leaks(api: &FakeApiServer, op: &Operator, secrets: &[&str]) {
    let mut haystacks = vec![
        ("metrics".to_owned(), op.metrics().await),
        ("logs".to_owned(), crate::logs::captured()),
    ];
    for obj in api.list_objects("webhookroutes", Some(NS)) {
        haystacks.push((
            "route status".into(),
            obj.get("status").map(|s| s.to_string()).unwrap_or_default(),
        ));
    }
    for event in api.list_objects("events", Some(NS)) {
        haystacks.push(("Event".into(), event.to_string()));
    }
    for (what, text) in &haystacks {
        for secret in secrets {
            assert!(!text.contains(secret), "{what} contains a secret value");
        }
    }
}

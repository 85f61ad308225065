//! A route's status tells the truth about its Secrets within seconds, without waiting for a re-check:
//! deleted, restored, a key removed, on a Ready plain route; with `--secret-access get` from what the
//! receiver itself finds; and a person's `reconcile-requested-at` annotation re-reads at once.
//!
//! Built on [`World::example`], so these run on a real cluster too (`ASC_E2E_KUBECONFIG`). The default
//! re-check intervals stay (a Ready route re-reads its Secrets hourly): what these tests see within
//! [`SOON`] came from noticing the change, not from a re-check.

use crate::cluster::TestCluster;
use crate::harness::*;
use crate::recorder::Recorder;
use crate::world::{World, load_example};
use asc_webhook_operator::resources::WebhookRoute;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use std::time::Duration;

const ROUTE: &str = "submit-after-processing";
const SECRET: &str = "submit-after-processing-webhook-secret";
/// Far below any re-check interval (30 s for routes that are not Ready, 1 h for Ready ones), and
/// generous for a loaded 2-core machine: a status seen within it was corrected because of the change.
const SOON: Duration = Duration::from_secs(10);

async fn ready_is(world: &World, status: &str, reason: &str) -> String {
    eventually(
        &format!("route {ROUTE} is Ready={status} ({reason})"),
        SOON,
        || {
            let r = get_route(&world.api, ROUTE);
            async move {
                let c = r
                    .status?
                    .conditions
                    .into_iter()
                    .find(|c| c.type_ == "Ready")?;
                (c.status == status && c.reason == reason).then_some(c.message)
            }
        },
    )
    .await
}

async fn delete_secret(world: &World) {
    let secrets: Api<Secret> = Api::namespaced(world.api.client(), NS);
    secrets
        .delete(SECRET, &DeleteParams::default())
        .await
        .unwrap();
}

fn ready_series(status: &str) -> String {
    format!(
        r#"asc_webhook_route_condition{{namespace="{NS}",route="{ROUTE}",type="Ready",status="{status}"}} 1"#
    )
}

async fn warning_event(world: &World, reason: &str) -> serde_json::Value {
    eventually(&format!("a Warning Event {reason}"), SOON, || {
        let found = world
            .api
            .list_objects("events", Some(NS))
            .into_iter()
            .find(|e| e["reason"] == reason && e["type"] == "Warning");
        async move { found }
    })
    .await
}

#[tokio::test]
async fn a_ready_plain_route_turns_not_ready_within_seconds_of_its_secret_going_and_ready_again_when_it_returns()
 {
    let world = World::example(ROUTE, &[]).await;
    world.wait_route_ready().await;

    delete_secret(&world).await;
    let message = ready_is(&world, "False", "SecretNotFound").await;
    assert!(message.contains(SECRET), "{message}");
    warning_event(&world, "SecretNotFound").await;
    eventually("the gauge says not Ready", SOON, || async {
        world
            .op
            .metrics()
            .await
            .contains(&ready_series("False"))
            .then_some(())
    })
    .await;
    let body = fixture_for_mock("build-upload-complete", &world.asc);
    let (status, _) = world.op.post(ROUTE, &body, WEBHOOK_SECRET).await;
    assert_eq!(status, 503, "the receiver and the status agree");

    put_secret(&world.api, SECRET, &[("secret", WEBHOOK_SECRET)]).await;
    ready_is(&world, "True", "Ready").await;

    put_secret(&world.api, SECRET, &[("other", WEBHOOK_SECRET)]).await;
    let message = ready_is(&world, "False", "SecretKeyNotFound").await;
    assert!(message.contains("\"secret\""), "{message}");
    world.assert_no_secret_leaks().await;
}

#[tokio::test]
async fn with_get_only_access_what_the_receiver_finds_missing_or_back_corrects_the_status_at_once()
{
    let world = World::example(ROUTE, &["--secret-access", "get"]).await;
    world.wait_route_ready().await;
    let body = fixture_for_mock("build-upload-complete", &world.asc);

    delete_secret(&world).await;
    // No watch: the first request that finds the Secret gone (once the receiver's cache of a few seconds
    // expired) is what tells the controllers.
    eventually("the receiver answers 503", SOON, || async {
        let (status, _) = world.op.post(ROUTE, &body, WEBHOOK_SECRET).await;
        (status == 503).then_some(())
    })
    .await;
    ready_is(&world, "False", "SecretNotFound").await;

    put_secret(&world.api, SECRET, &[("secret", WEBHOOK_SECRET)]).await;
    eventually("the receiver accepts again", SOON, || async {
        let (status, _) = world.op.post(ROUTE, &body, WEBHOOK_SECRET).await;
        (status == 202 || status == 200).then_some(())
    })
    .await;
    ready_is(&world, "True", "Ready").await;
}

#[tokio::test]
async fn the_reconcile_requested_at_annotation_rereads_a_routes_secrets_at_once() {
    // With get-only access and no request reaching the receiver, only the annotation tells the route
    // controller to look before its hourly re-read.
    let world = World::example(ROUTE, &["--secret-access", "get"]).await;
    world.wait_route_ready().await;
    delete_secret(&world).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        get_route(&world.api, ROUTE)
            .status
            .unwrap()
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .unwrap()
            .status,
        "True",
        "nothing looked yet"
    );
    let routes: Api<asc_webhook_operator::resources::WebhookRoute> =
        Api::namespaced(world.api.client(), NS);
    let nudge = serde_json::json!({"metadata": {"annotations": {
        "asc.webhooks.dev/reconcile-requested-at": "2026-12-04T18:00:00Z"}}});
    routes
        .patch(ROUTE, &PatchParams::default(), &Patch::Merge(&nudge))
        .await
        .unwrap();
    ready_is(&world, "False", "SecretNotFound").await;
}

#[tokio::test]
async fn a_rule_naming_an_undocumented_type_or_state_stays_ready_but_is_named_with_the_nearest_known_one()
 {
    let world = World::example(ROUTE, &[]).await;
    world.wait_route_ready().await;
    world
        .add_route(
            "typo",
            "    - name: notify\n      match: {eventTypes: [buildUploadStateUpdatedd], newStates: [COMPLET]}\n      job: {template: {spec: {template: {spec: {restartPolicy: Never, containers: [{name: run, image: busybox}]}}}}}\n",
        )
        .await;
    // Ready as ever: Apple adds types and states, so the value is kept; only the wording warns.
    let (reason, message) = world.route_ready("typo", "True").await;
    assert_eq!(reason, "UnknownMatchValue");
    for named in [
        r#"match.eventTypes "buildUploadStateUpdatedd""#,
        r#"did you mean "buildUploadStateUpdated"?"#,
        r#"match.newStates "COMPLET""#,
        r#"did you mean "COMPLETE"?"#,
    ] {
        assert!(message.contains(named), "{named} in {message}");
    }
    let event = warning_event(&world, "UnknownMatchValue").await;
    // A real API server lists an events.k8s.io Event through core/v1, which calls its note `message`.
    let text = event["note"]
        .as_str()
        .or_else(|| event["message"].as_str())
        .unwrap_or_default();
    assert!(text.contains("buildUploadStateUpdatedd"), "{event}");
}

fn credential_ready(world: &World) -> Option<(String, String)> {
    let c = world.api.get_object("asccredentials", NS, "team-key")?;
    let ready = c["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")?
        .clone();
    Some((
        ready["status"].as_str()?.to_owned(),
        ready["reason"].as_str()?.to_owned(),
    ))
}

async fn credential_is(world: &World, status: &str, reason: &str) {
    eventually(
        &format!("credential team-key is Ready={status} ({reason})"),
        SOON,
        || {
            let now = credential_ready(world);
            async move { (now == Some((status.to_owned(), reason.to_owned()))).then_some(()) }
        },
    )
    .await;
}

fn verifications(world: &World) -> usize {
    world
        .asc
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path.starts_with("/v1/apps?limit=1"))
        .count()
}

#[tokio::test]
async fn a_ready_credential_follows_its_key_secret_within_seconds_and_verifies_again_when_asked() {
    let world = World::example(ROUTE, &[]).await;
    world.wait_route_ready().await;
    credential_is(&world, "True", "KeyUsable").await;
    eventually("the key is verified", SOON, || async {
        (verifications(&world) >= 1).then_some(())
    })
    .await;

    // A Ready credential re-reads its key every 10 minutes at most; these come from the change.
    let secrets: Api<Secret> = Api::namespaced(world.api.client(), NS);
    let key: Secret = secrets.get("asc-api-key").await.unwrap();
    secrets
        .delete("asc-api-key", &DeleteParams::default())
        .await
        .unwrap();
    credential_is(&world, "False", "SecretNotFound").await;
    ready_is(&world, "False", "CredentialNotReady").await;
    let restored = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("asc-api-key".into()),
            namespace: Some(NS.into()),
            ..Default::default()
        },
        data: key.data,
        ..Default::default()
    };
    secrets
        .create(&kube::api::PostParams::default(), &restored)
        .await
        .unwrap();
    credential_is(&world, "True", "KeyUsable").await;
    ready_is(&world, "True", "Ready").await;

    // Verification is due every 12 hours; the annotation asks for one now.
    let before = verifications(&world);
    let credentials: Api<asc_webhook_operator::resources::AscCredential> =
        Api::namespaced(world.api.client(), NS);
    let nudge = serde_json::json!({"metadata": {"annotations": {
        "asc.webhooks.dev/reconcile-requested-at": "2026-12-04T19:00:00Z"}}});
    credentials
        .patch("team-key", &PatchParams::default(), &Patch::Merge(&nudge))
        .await
        .unwrap();
    eventually("the key is verified again", SOON, || async {
        (verifications(&world) > before).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_rotated_webhook_secret_of_a_declared_route_reaches_app_store_connect_within_seconds() {
    // Like `apple_webhook::rotation`, but on `TestCluster`, so it runs on a real cluster too.
    let api = TestCluster::for_scenarios().await;
    let asc = asc_mock().await;
    let hooks = Recorder::start().await;
    load_example(&api, ROUTE, &asc, &hooks).await;
    put_secret(&api, "declared-secret", &[("secret", WEBHOOK_SECRET)]).await;
    let origin = origin_flags(&asc);
    // Nothing re-reads the Secret for minutes: a PATCH within SOON comes from noticing the change.
    let op = Operator::start_reachable(&api, &flags(&["--recheck-interval", "5m"], &origin)).await;
    let yaml = format!(
        "apiVersion: asc.webhooks.dev/v1alpha1\nkind: WebhookRoute\nmetadata:\n  name: declared\n  namespace: {NS}\nspec:\n  secretRef: {{name: declared-secret, key: secret}}\n  credentialRef: {{name: team-key}}\n  appStoreConnect: {{appId: \"1234567890\"}}\n  rules:\n    - name: notify\n      match: {{eventTypes: [buildUploadStateUpdated]}}\n      job: {{template: {{spec: {{template: {{spec: {{restartPolicy: Never, containers: [{{name: run, image: busybox}}]}}}}}}}}}}\n"
    );
    create_yaml::<WebhookRoute>(&api, &yaml).await;
    let id = eventually(
        "route declared is registered and verified",
        Duration::from_secs(30),
        || {
            let r = get_route(&api, "declared");
            async move {
                let status = r.status?;
                let verified = status
                    .conditions
                    .iter()
                    .any(|c| c.type_ == "WebhookVerified" && c.status == "True");
                verified.then_some(status.app_store_connect?.webhook_id?)
            }
        },
    )
    .await;
    put_secret(&api, "declared-secret", &[("secret", ROTATED_SECRET)]).await;
    eventually("App Store Connect has the rotated secret", SOON, || {
        let rotated = asc.webhook(&id).is_some_and(|w| w.secret == ROTATED_SECRET);
        async move { rotated.then_some(()) }
    })
    .await;
    op.stop().await;
}

const ROTATED_SECRET: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

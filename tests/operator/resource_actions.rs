//! `resource` actions: a Tekton-shaped `PipelineRun` and an Argo-shaped `Workflow` (their CRDs loaded from
//! `tests/fixtures/crds/`) created from events, followed through their status to the delivery's phase; an
//! unknown kind reported on the route; custom `succeededWhen`/`failedWhen`. They run on the fake API
//! server only: it loads the test CRDs at any moment and lets a test write an object's status as the
//! kind's controller would.

use crate::harness::*;
use crate::world::World;
use asc_webhook_operator::resources::WebhookRoute;
use asc_webhook_operator::resources::delivery::{ActionKind, ActionState, ActionStatus, Phase};
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;
use testkit::apiserver::FakeApiServer;

fn load_test_crd(w: &World, file: &str) {
    load_crd_file(w.fake(), file);
}

fn load_crd_file(api: &FakeApiServer, file: &str) {
    let yaml =
        std::fs::read_to_string(Path::new(ROOT).join("tests/fixtures/crds").join(file)).unwrap();
    assert_eq!(api.load_crds_from_yaml(&yaml).unwrap(), 1);
}

/// The stand-in CRDs of the kinds the examples create (Tekton's PipelineRun, Argo's Workflow).
pub fn load_pipeline_crds(api: &FakeApiServer) {
    for file in ["tekton-pipelinerun.yaml", "argo-workflow.yaml"] {
        load_crd_file(api, file);
    }
}

const PIPELINE_RUN: &str = r#"      resource:
        template: |
          apiVersion: tekton.dev/v1
          kind: PipelineRun
          metadata:
            labels: {team: ios}
          spec:
            pipelineRef: {name: submit-for-review}
            params:
              - name: version
                value: "{{ instance.version }}"
              - name: build-number
                value: "{{ instance.buildNumber }}"
"#;

const WORKFLOW: &str = r#"      resource:
        template:
          apiVersion: argoproj.io/v1alpha1
          kind: Workflow
          spec:
            workflowTemplateRef: {name: submit-for-review}
            arguments:
              parameters:
                - {name: state, value: "{{ event.newState }}"}
                - {name: version, value: "{{ instance.version | default('unknown') }}"}
"#;

fn rule(name: &str, action: &str) -> String {
    format!(
        "    - name: {name}\n      match: {{eventTypes: [BUILD_UPLOAD_STATE_UPDATED]}}\n{action}"
    )
}

async fn route(w: &World, name: &str, rules: &str) {
    let yaml = format!(
        "apiVersion: asc.webhooks.dev/v1alpha1\nkind: WebhookRoute\nmetadata:\n  name: {name}\n  namespace: {NS}\nspec:\n  secretRef: {{name: submit-after-processing-webhook-secret, key: secret}}\n  credentialRef: {{name: team-key}}\n  rules:\n{rules}"
    );
    create_yaml::<WebhookRoute>(&w.api, &yaml).await;
}

async fn ready(w: &World, name: &str, wanted: &str) -> (String, String) {
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
                (c.status == wanted).then_some((c.reason, c.message))
            }
        },
    )
    .await
}

async fn deliver(w: &World, route: &str, fixture: &str) -> String {
    let body = fixture_for_mock(fixture, &w.asc);
    let (status, answer) = w.op.post(route, &body, WEBHOOK_SECRET).await;
    assert_eq!(status, 202, "{answer}");
    answer["delivery"].as_str().unwrap().to_owned()
}

/// The delivery's only action, once `done` says it is where the test waits for it.
async fn action_when(
    w: &World,
    delivery: &str,
    what: &str,
    done: impl Fn(&ActionStatus) -> bool,
) -> ActionStatus {
    eventually(what, Duration::from_secs(20), || {
        let d = get_delivery(&w.api, delivery);
        let found = d
            .and_then(|d| d.status)
            .and_then(|s| s.actions.into_iter().next())
            .filter(&done);
        async move { found }
    })
    .await
}

/// The object the delivery's action created, as stored.
fn created(w: &World, plural: &str, a: &ActionStatus) -> Value {
    let name = &a
        .resource
        .as_ref()
        .expect("the action names its object")
        .name;
    w.fake()
        .get_object(plural, NS, name)
        .unwrap_or_else(|| panic!("{plural} {name} exists"))
}

fn set_status(w: &World, plural: &str, name: &str, status: Value) {
    w.fake()
        .patch_object(plural, NS, name, json!({ "status": status }))
        .unwrap();
}

#[tokio::test]
async fn a_pipeline_run_is_created_from_an_event_and_its_delivery_follows_it_to_success() {
    let w = World::example_on_fake("submit-after-processing", &[]).await;
    load_test_crd(&w, "tekton-pipelinerun.yaml");
    route(&w, "tekton", &rule("submit", PIPELINE_RUN)).await;
    ready(&w, "tekton", "True").await;
    let name = deliver(&w, "tekton", "build-upload-complete").await;
    let a = action_when(&w, &name, "the PipelineRun is created", |a| {
        a.state == ActionState::Running
    })
    .await;
    assert_eq!(a.kind, ActionKind::Resource);
    let r = a.resource.clone().unwrap();
    assert_eq!(
        (r.api_version.as_str(), r.kind.as_str()),
        ("tekton.dev/v1", "PipelineRun")
    );
    let run = created(&w, "pipelineruns", &a);
    let delivery = get_delivery(&w.api, &name).unwrap();
    let labels = &run["metadata"]["labels"];
    assert_eq!(labels["team"], "ios");
    assert_eq!(labels["asc.webhooks.dev/route"], "tekton");
    assert_eq!(labels["asc.webhooks.dev/rule"], "submit");
    assert_eq!(labels["asc.webhooks.dev/delivery"], name.as_str());
    assert_eq!(
        labels["app.kubernetes.io/managed-by"],
        "asc-webhook-operator"
    );
    let owner = &run["metadata"]["ownerReferences"][0];
    assert_eq!(owner["kind"], "WebhookDelivery");
    assert_eq!(
        owner["uid"],
        delivery.metadata.uid.clone().unwrap().as_str()
    );
    let enrichment = delivery.status.unwrap().enrichment.unwrap();
    assert_eq!(
        run["spec"]["params"][0]["value"],
        enrichment.version.unwrap().as_str()
    );
    assert_eq!(
        run["spec"]["params"][1]["value"],
        enrichment.build_number.unwrap().as_str()
    );

    // Tekton reports progress in its Succeeded condition; the delivery shows it and keeps running.
    set_status(
        &w,
        "pipelineruns",
        &r.name,
        json!({"conditions": [{"type": "Succeeded", "status": "Unknown", "reason": "Running", "message": "Tasks Completed: 1 (Failed: 0), Incomplete: 2"}]}),
    );
    let a = action_when(&w, &name, "the delivery shows the run's progress", |a| {
        a.resource.as_ref().and_then(|r| r.observed.as_deref())
            == Some("Succeeded=Unknown (Running): Tasks Completed: 1 (Failed: 0), Incomplete: 2")
    })
    .await;
    assert_eq!(a.state, ActionState::Running);
    // Let the delivery settle (its own status writes wake it a few times): from here on, only the
    // PipelineRun watch can wake it, as the safety-net re-check is minutes away.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let reads = || {
        w.fake().count_requests(|q| {
            q.resource == "pipelineruns" && q.method == "GET" && q.name.as_deref() == Some(&r.name)
        })
    };
    let settled = reads();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(reads(), settled, "a running PipelineRun is not polled");
    set_status(
        &w,
        "pipelineruns",
        &r.name,
        json!({"conditions": [{"type": "Succeeded", "status": "True", "reason": "Succeeded", "message": "All Tasks have completed executing"}]}),
    );
    let done = w.wait_phase(&name, Phase::Succeeded).await;
    assert_eq!(
        done.status.unwrap().actions[0].state,
        ActionState::Succeeded
    );
    let watches = w.fake().count_requests(|r| {
        r.resource == "pipelineruns"
            && r.query.contains("watch=true")
            && r.query.contains("labelSelector")
    });
    assert!(watches >= 1, "PipelineRuns are watched, selected by label");
    w.op.stop().await;
}

#[tokio::test]
async fn a_failed_pipeline_run_fails_its_delivery_with_tektons_reason() {
    let w = World::example_on_fake("submit-after-processing", &[]).await;
    load_test_crd(&w, "tekton-pipelinerun.yaml");
    route(&w, "tekton", &rule("submit", PIPELINE_RUN)).await;
    ready(&w, "tekton", "True").await;
    let name = deliver(&w, "tekton", "build-upload-complete").await;
    let a = action_when(&w, &name, "the PipelineRun is created", |a| {
        a.state == ActionState::Running
    })
    .await;
    set_status(
        &w,
        "pipelineruns",
        &a.resource.unwrap().name,
        json!({"conditions": [{"type": "Succeeded", "status": "False", "reason": "Failed", "message": "Tasks Completed: 2 (Failed: 1)"}]}),
    );
    let done = w.wait_phase(&name, Phase::Failed).await.status.unwrap();
    let a = &done.actions[0];
    assert_eq!(a.reason.as_deref(), Some("ResourceFailed"));
    assert_eq!(
        a.error.as_deref(),
        Some("PipelineRun failed: Succeeded=False (Failed): Tasks Completed: 2 (Failed: 1)")
    );
    assert!(done.message.unwrap().contains("rule submit"));
    w.op.stop().await;
}

#[tokio::test]
async fn argo_workflows_follow_their_phase_to_success_and_to_failure() {
    let w = World::example_on_fake("submit-after-processing", &[]).await;
    load_test_crd(&w, "argo-workflow.yaml");
    route(&w, "argo", &rule("run", WORKFLOW)).await;
    ready(&w, "argo", "True").await;
    let ok = deliver(&w, "argo", "build-upload-complete").await;
    let bad = deliver(&w, "argo", "build-upload-failed").await;
    let running = |a: &ActionStatus| a.state == ActionState::Running;
    let ok_action = action_when(&w, &ok, "the first Workflow is created", running).await;
    let bad_action = action_when(&w, &bad, "the second Workflow is created", running).await;
    let wf = created(&w, "workflows", &ok_action);
    assert_eq!(
        wf["spec"]["arguments"]["parameters"][0],
        json!({"name": "state", "value": "COMPLETE"})
    );
    let failed_wf = created(&w, "workflows", &bad_action);
    assert_eq!(
        failed_wf["spec"]["arguments"]["parameters"][0]["value"],
        "FAILED"
    );
    assert_ne!(wf["metadata"]["name"], failed_wf["metadata"]["name"]);

    set_status(
        &w,
        "workflows",
        &ok_action.resource.unwrap().name,
        json!({"phase": "Running"}),
    );
    action_when(&w, &ok, "the delivery shows the phase", |a| {
        a.resource.as_ref().and_then(|r| r.observed.as_deref()) == Some("phase Running")
    })
    .await;
    let wf_name = wf["metadata"]["name"].as_str().unwrap();
    set_status(&w, "workflows", wf_name, json!({"phase": "Succeeded"}));
    w.wait_phase(&ok, Phase::Succeeded).await;

    let failed_name = failed_wf["metadata"]["name"].as_str().unwrap();
    set_status(
        &w,
        "workflows",
        failed_name,
        json!({"phase": "Error", "message": "child 'submit' failed"}),
    );
    let done = w.wait_phase(&bad, Phase::Failed).await.status.unwrap();
    assert_eq!(
        done.actions[0].error.as_deref(),
        Some("Workflow failed: phase Error child 'submit' failed")
    );
    w.op.stop().await;
}

#[tokio::test]
async fn an_unknown_kind_makes_the_route_not_ready_until_its_crd_is_installed() {
    let w =
        World::example_on_fake("submit-after-processing", &["--recheck-interval", "300ms"]).await;
    route(&w, "tekton", &rule("submit", PIPELINE_RUN)).await;
    let (reason, message) = ready(&w, "tekton", "False").await;
    assert_eq!(reason, "UnknownKind");
    assert!(
        message.starts_with("rule submit: the API server does not serve tekton.dev/v1 PipelineRun"),
        "{message}"
    );
    eventually("a Warning Event says so", Duration::from_secs(10), || {
        let events = w.api.list_objects("events", Some(NS));
        async move {
            events
                .iter()
                .any(|e| e["reason"] == "UnknownKind" && e["type"] == "Warning")
                .then_some(())
        }
    })
    .await;
    // Installing the CRD is enough: the route looks again and an event now creates a PipelineRun.
    load_test_crd(&w, "tekton-pipelinerun.yaml");
    ready(&w, "tekton", "True").await;
    let name = deliver(&w, "tekton", "build-upload-complete").await;
    let a = action_when(&w, &name, "the PipelineRun is created", |a| {
        a.state == ActionState::Running
    })
    .await;
    created(&w, "pipelineruns", &a);
    w.op.stop().await;
}

#[tokio::test]
async fn a_custom_succeeded_when_decides_success() {
    let w = World::example_on_fake("submit-after-processing", &[]).await;
    load_test_crd(&w, "argo-workflow.yaml");
    let action = format!(
        "{WORKFLOW}        succeededWhen: 'has(object.status.nodes) && object.status.nodes.exists(n, n == \"submit\")'\n"
    );
    route(&w, "custom", &rule("run", &action)).await;
    ready(&w, "custom", "True").await;
    let name = deliver(&w, "custom", "build-upload-complete").await;
    let a = action_when(&w, &name, "the Workflow is created", |a| {
        a.state == ActionState::Running
    })
    .await;
    let wf = a.resource.unwrap().name;
    // The default would call this a success; the rule's own expression does not, yet.
    set_status(
        &w,
        "workflows",
        &wf,
        json!({"phase": "Succeeded", "nodes": {"build": {}}}),
    );
    action_when(&w, &name, "the phase is observed", |a| {
        a.resource.as_ref().and_then(|r| r.observed.as_deref()) == Some("phase Succeeded")
    })
    .await;
    assert_eq!(
        get_delivery(&w.api, &name).unwrap().status.unwrap().phase,
        Phase::Running
    );
    set_status(&w, "workflows", &wf, json!({"nodes": {"submit": {}}}));
    w.wait_phase(&name, Phase::Succeeded).await;
    w.op.stop().await;
}

#[tokio::test]
async fn a_failed_when_over_the_cost_limit_fails_the_action_not_the_operator() {
    let w = World::example_on_fake("submit-after-processing", &[]).await;
    load_test_crd(&w, "argo-workflow.yaml");
    let list = format!(
        "[{}]",
        (0..60).map(|i| i.to_string()).collect::<Vec<_>>().join(",")
    );
    let costly = format!("{list}.all(a, {list}.all(b, {list}.all(c, a + b + c >= 0)))");
    let action = format!("{WORKFLOW}        failedWhen: '{costly}'\n");
    route(&w, "costly", &rule("run", &action)).await;
    ready(&w, "costly", "True").await;
    let name = deliver(&w, "costly", "build-upload-complete").await;
    let done = w.wait_phase(&name, Phase::Failed).await.status.unwrap();
    let a = &done.actions[0];
    assert_eq!(a.reason.as_deref(), Some("ExpressionCostExceeded"));
    assert!(
        a.error
            .as_deref()
            .unwrap()
            .starts_with("failedWhen: the expression's cost bound is"),
        "{a:?}"
    );
    assert!(a.resource.is_some(), "the Workflow was created first");
    // The operator carries on: the example's own route still runs its rule.
    let d = deliver(&w, "submit-after-processing", "build-upload-complete").await;
    w.wait_phase(&d, Phase::Running).await;
    w.op.stop().await;
}

#[tokio::test]
async fn an_invalid_resource_rule_is_reported_on_the_route() {
    let w = World::example_on_fake("submit-after-processing", &[]).await;
    load_test_crd(&w, "argo-workflow.yaml");
    let bad_when = format!("{WORKFLOW}        succeededWhen: 'object.status.phase =='\n");
    route(&w, "bad-when", &rule("run", &bad_when)).await;
    let (reason, message) = ready(&w, "bad-when", "False").await;
    assert_eq!(reason, "InvalidRuleExpression");
    assert!(
        message.starts_with("rule run: succeededWhen: invalid CEL"),
        "{message}"
    );
    let no_kind =
        "      resource:\n        template: {apiVersion: argoproj.io/v1alpha1, spec: {}}\n";
    route(&w, "no-kind", &rule("run", no_kind)).await;
    let (reason, message) = ready(&w, "no-kind", "False").await;
    assert_eq!(reason, "InvalidResourceTemplate");
    assert!(message.contains("needs a non-empty kind"), "{message}");
    w.op.stop().await;
}

#[tokio::test]
async fn the_tekton_and_argo_examples_start_their_pipeline_on_a_completed_build_upload() {
    for (example, plural) in [
        ("tekton-submission", "pipelineruns"),
        ("argo-workflows-submission", "workflows"),
    ] {
        let staged = crate::world::stage(example).await;
        load_pipeline_crds(&staged.0);
        let w = World::start(staged, &[]).await;
        w.wait_route_ready().await;
        let name = w
            .deliver(&fixture_for_mock("build-upload-complete", &w.asc))
            .await;
        let a = action_when(&w, &name, "the pipeline object is created", |a| {
            a.state == ActionState::Running
        })
        .await;
        let obj = created(&w, plural, &a);
        let text = obj["spec"].to_string();
        let enrichment = get_delivery(&w.api, &name)
            .unwrap()
            .status
            .unwrap()
            .enrichment
            .unwrap();
        assert!(
            text.contains(&format!("\"{}\"", enrichment.version.unwrap())),
            "{example}: {text}"
        );
        w.op.stop().await;
    }
}

#[tokio::test]
async fn a_pipeline_run_is_created_as_the_routes_service_account_or_not_at_all() {
    let api = fake_api_with(|o| o.authorization(true)).await;
    load_pipeline_crds(&api);
    put_secret(&api, "hook-secret", &[("secret", WEBHOOK_SECRET)]).await;
    for sa in ["pipeliner", "intern"] {
        api.put_object(
            "serviceaccounts",
            json!({"metadata": {"name": sa, "namespace": NS}}),
        )
        .unwrap();
    }
    api.put_object(
        "roles.rbac.authorization.k8s.io",
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "run-pipelines", "namespace": NS},
            "rules": [{"apiGroups": ["tekton.dev"], "resources": ["pipelineruns"], "verbs": ["create"]}]}),
    )
    .unwrap();
    api.put_object(
        "rolebindings.rbac.authorization.k8s.io",
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "run-pipelines", "namespace": NS},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "run-pipelines"},
            "subjects": [{"kind": "ServiceAccount", "name": "pipeliner", "namespace": NS}]}),
    )
    .unwrap();
    let rules = format!(
        "    - name: submit\n      match: {{}}\n      enrich: Never\n{}",
        PIPELINE_RUN
            .replace("{{ instance.version }}", "1.0")
            .replace("{{ instance.buildNumber }}", "1")
    );
    for (route, sa) in [("allowed", "pipeliner"), ("refused", "intern")] {
        route_with(
            &api,
            route,
            &rules,
            &format!("  serviceAccountName: {sa}\n"),
        )
        .await;
    }
    let op = Operator::start(&api, &[]).await;
    for route in ["allowed", "refused"] {
        wait_route_ready(&api, route).await;
    }
    let mut outcomes = Vec::new();
    for route in ["allowed", "refused"] {
        let (status, answer) = op
            .post(route, &fixture("build-upload-complete"), WEBHOOK_SECRET)
            .await;
        assert_eq!(status, 202, "{answer}");
        let name = answer["delivery"].as_str().unwrap().to_owned();
        let a = eventually(
            &format!("{route}'s action starts or fails"),
            Duration::from_secs(20),
            || {
                let found = get_delivery(&api, &name)
                    .and_then(|d| d.status)
                    .and_then(|s| s.actions.into_iter().next())
                    .filter(|a| matches!(a.state, ActionState::Running | ActionState::Failed));
                async move { found }
            },
        )
        .await;
        outcomes.push(a);
    }
    assert_eq!(outcomes[0].state, ActionState::Running, "{:?}", outcomes[0]);
    let posts: Vec<Option<String>> = api
        .request_log()
        .into_iter()
        .filter(|r| r.resource == "pipelineruns" && r.method == "POST")
        .map(|r| r.impersonated_user)
        .collect();
    assert!(
        posts.contains(&Some(format!("system:serviceaccount:{NS}:pipeliner"))),
        "{posts:?}"
    );
    assert!(
        posts.iter().all(Option::is_some),
        "never in the operator's own name: {posts:?}"
    );
    let refused = &outcomes[1];
    assert_eq!(refused.state, ActionState::Failed);
    assert_eq!(refused.reason.as_deref(), Some("Forbidden"));
    assert!(
        refused
            .error
            .as_deref()
            .unwrap()
            .contains("pipelineruns.tekton.dev is forbidden"),
        "{refused:?}"
    );
    assert_eq!(
        api.list_objects("pipelineruns", Some(NS)).len(),
        1,
        "only the allowed route's PipelineRun exists"
    );
    op.stop().await;
}

#[tokio::test]
async fn a_pipeline_run_deleted_while_it_runs_fails_its_delivery() {
    let w = World::example_on_fake("submit-after-processing", &[]).await;
    load_test_crd(&w, "tekton-pipelinerun.yaml");
    route(&w, "tekton", &rule("submit", PIPELINE_RUN)).await;
    ready(&w, "tekton", "True").await;
    let name = deliver(&w, "tekton", "build-upload-complete").await;
    let a = action_when(&w, &name, "the PipelineRun is created", |a| {
        a.state == ActionState::Running
    })
    .await;
    let run = a.resource.unwrap().name;
    w.fake().delete_object("pipelineruns", NS, &run).unwrap();
    let done = w.wait_phase(&name, Phase::Failed).await.status.unwrap();
    assert_eq!(done.actions[0].reason.as_deref(), Some("ResourceDeleted"));
    assert_eq!(
        done.actions[0].error.as_deref(),
        Some(format!("PipelineRun {run} was deleted before it was seen to finish").as_str())
    );
    w.op.stop().await;
}

#[tokio::test]
async fn a_pipeline_run_of_the_same_name_that_is_not_the_deliverys_is_never_adopted() {
    let w = World::example_on_fake("submit-after-processing", &[]).await;
    load_test_crd(&w, "tekton-pipelinerun.yaml");
    route(&w, "tekton", &rule("submit", PIPELINE_RUN)).await;
    ready(&w, "tekton", "True").await;
    let event_id = "0b7d3c1e-4a2f-4e6b-9d8c-5f1a2b3c4d5e";
    let taken = asc_webhook_operator::naming::job_name("tekton", "submit", event_id);
    w.fake()
        .put_object(
            "pipelineruns",
            json!({"apiVersion": "tekton.dev/v1", "kind": "PipelineRun",
                "metadata": {"name": taken, "namespace": NS}, "spec": {}}),
        )
        .unwrap();
    let name = deliver(&w, "tekton", "build-upload-complete").await;
    let done = w.wait_phase(&name, Phase::Failed).await.status.unwrap();
    assert_eq!(done.actions[0].reason.as_deref(), Some("ResourceNameTaken"));
    assert!(done.actions[0].resource.is_none());
    let other = w.fake().get_object("pipelineruns", NS, &taken).unwrap();
    assert!(
        other["metadata"].get("ownerReferences").is_none(),
        "someone else's object is left alone"
    );
    w.op.stop().await;
}

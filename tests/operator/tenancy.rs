//! Sharing a cluster: a route's actions run as its ServiceAccount (or the default one), against the fake
//! API server with RBAC on, so what the account may not do, the route cannot do either.

use crate::harness::*;
use crate::recorder::Recorder;
use asc_webhook_operator::resources::delivery::{ActionState, ActionStatus, Phase};
use serde_json::json;
use std::time::Duration;
use testkit::apiserver::{FakeApiServer, Verb};

const JOB_RULE: &str = "    - name: build\n      match: {}\n      job:\n        template: {spec: {template: {spec: {restartPolicy: Never, containers: [{name: c, image: busybox}]}}}}\n";

/// `builder` may create Jobs; `intern` exists but may do nothing; `notifier` may read the Secrets named
/// `readable` and nothing else.
async fn cluster() -> FakeApiServer {
    let api = fake_api_with(|o| o.authorization(true)).await;
    put_secret(&api, "hook-secret", &[("secret", WEBHOOK_SECRET)]).await;
    for sa in ["builder", "intern", "notifier"] {
        api.put_object(
            "serviceaccounts",
            json!({"metadata": {"name": sa, "namespace": NS}}),
        )
        .unwrap();
    }
    let role = |name: &str, rules: serde_json::Value, sa: &str| {
        api.put_object(
            "roles.rbac.authorization.k8s.io",
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                "metadata": {"name": name, "namespace": NS}, "rules": rules}),
        )
        .unwrap();
        api.put_object(
            "rolebindings.rbac.authorization.k8s.io",
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"name": name, "namespace": NS},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
                "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": NS}]}),
        )
        .unwrap();
    };
    role(
        "create-jobs",
        json!([{"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create"]}]),
        "builder",
    );
    role(
        "read-notifier-secrets",
        json!([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"],
                "resourceNames": ["readable-url", "readable-headers"]}]),
        "notifier",
    );
    api
}

async fn deliver(api: &FakeApiServer, op: &Operator, route: &str) -> ActionStatus {
    let (status, answer) = op
        .post(route, &fixture("build-upload-complete"), WEBHOOK_SECRET)
        .await;
    assert_eq!(status, 202, "{answer}");
    let name = answer["delivery"].as_str().unwrap().to_owned();
    let st = eventually(
        &format!("{route}'s action starts or fails"),
        Duration::from_secs(20),
        || {
            let d = get_delivery(api, &name);
            async move {
                d?.status.filter(|s| {
                    s.actions.first().is_some_and(|a| {
                        !matches!(a.state, ActionState::Pending | ActionState::InFlight)
                            || a.job_name.is_some()
                    })
                })
            }
        },
    )
    .await;
    st.actions.into_iter().next().unwrap()
}

fn jobs_of(api: &FakeApiServer, route: &str) -> usize {
    jobs(api)
        .iter()
        .filter(|j| j.metadata.labels.as_ref().unwrap()["asc.webhooks.dev/route"] == route)
        .count()
}

/// Who the Job creations acted as.
/// Who created each Job. Only creates that made one count: a pass that worked from a stale copy may send a
/// second create, which the API server answers AlreadyExists.
fn job_creators(api: &FakeApiServer) -> Vec<Option<String>> {
    api.request_log()
        .into_iter()
        .filter(|r| r.verb == Verb::Create && r.resource == "jobs" && r.status == 201)
        .map(|r| r.impersonated_user)
        .collect()
}

#[tokio::test]
async fn a_route_gets_its_job_only_when_its_service_account_may_create_jobs() {
    let api = cluster().await;
    route_with(&api, "allowed", JOB_RULE, "  serviceAccountName: builder\n").await;
    route_with(&api, "refused", JOB_RULE, "  serviceAccountName: intern\n").await;
    let op = Operator::start(&api, &[]).await;

    let allowed = deliver(&api, &op, "allowed").await;
    assert_eq!(allowed.state.as_str(), "Running", "{allowed:?}");
    assert_eq!(jobs_of(&api, "allowed"), 1);
    assert_eq!(
        job_creators(&api),
        vec![Some("system:serviceaccount:ios:builder".to_owned())]
    );

    let refused = deliver(&api, &op, "refused").await;
    assert_eq!(refused.state.as_str(), "Failed");
    assert_eq!(refused.reason.as_deref(), Some("Forbidden"));
    assert!(
        refused.error.as_deref().unwrap().ends_with(
            "jobs.batch is forbidden: User \"system:serviceaccount:ios:intern\" cannot create resource \"jobs\" in API group \"batch\" in the namespace \"ios\""
        ),
        "the API server's message: {refused:?}"
    );
    assert_eq!(jobs_of(&api, "refused"), 0, "no Job");
    let d = deliveries(&api)
        .into_iter()
        .find(|d| d.spec.route == "refused")
        .unwrap();
    let phase = eventually(
        "the refused delivery is Failed",
        Duration::from_secs(10),
        || {
            let d = get_delivery(&api, &d.metadata.name.clone().unwrap());
            async move { d?.status.map(|s| s.phase).filter(|p| *p == Phase::Failed) }
        },
    )
    .await;
    assert_eq!(phase, Phase::Failed);
    op.stop().await;
}

#[tokio::test]
async fn with_a_default_service_account_a_route_without_its_own_acts_as_it() {
    let api = cluster().await;
    route_with(&api, "plain", JOB_RULE, "").await;
    route_with(&api, "own", JOB_RULE, "  serviceAccountName: intern\n").await;
    let op = Operator::start(&api, &["--default-service-account", "builder"]).await;

    let plain = deliver(&api, &op, "plain").await;
    assert_eq!(plain.state.as_str(), "Running", "{plain:?}");
    assert_eq!(
        job_creators(&api),
        vec![Some("system:serviceaccount:ios:builder".to_owned())],
        "the default account created the Job"
    );
    // A route's own account wins over the default.
    let own = deliver(&api, &op, "own").await;
    assert_eq!(own.state.as_str(), "Failed");
    assert_eq!(own.reason.as_deref(), Some("Forbidden"));
    assert!(
        own.error
            .as_deref()
            .unwrap()
            .contains("User \"system:serviceaccount:ios:intern\" cannot create"),
        "{own:?}"
    );
    assert_eq!(jobs_of(&api, "own"), 0);
    op.stop().await;
}

#[tokio::test]
async fn without_any_service_account_a_route_acts_as_the_operator() {
    let api = cluster().await;
    route_with(&api, "single-team", JOB_RULE, "").await;
    let op = Operator::start(&api, &[]).await;
    let a = deliver(&api, &op, "single-team").await;
    assert_eq!(a.state.as_str(), "Running", "{a:?}");
    assert_eq!(job_creators(&api), vec![None], "no impersonation");
    op.stop().await;
}

#[tokio::test]
async fn a_header_secret_the_service_account_cannot_read_fails_forbidden_and_nothing_is_sent() {
    let api = cluster().await;
    let hooks = Recorder::start().await;
    put_secret(
        &api,
        "readable-url",
        &[("url", &format!("{}/team", hooks.url))],
    )
    .await;
    put_secret(&api, "readable-headers", &[("X-Team", "ios")]).await;
    put_secret(
        &api,
        "prod-headers",
        &[("Authorization", "Bearer prod-admin-token-9f2c")],
    )
    .await;
    let rule = |headers: &str| {
        format!(
            "    - name: notify\n      match: {{}}\n      http: {{urlSecretRef: {{name: readable-url, key: url}}, headersSecretRef: {{name: {headers}}}, maxAttempts: 1}}\n"
        )
    };
    route_with(
        &api,
        "exfiltrate",
        &rule("prod-headers"),
        "  serviceAccountName: notifier\n",
    )
    .await;
    route_with(
        &api,
        "team",
        &rule("readable-headers"),
        "  serviceAccountName: notifier\n",
    )
    .await;
    let op = Operator::start(&api, &[]).await;

    let refused = deliver(&api, &op, "exfiltrate").await;
    assert_eq!(refused.state.as_str(), "Failed");
    assert_eq!(refused.reason.as_deref(), Some("Forbidden"));
    assert_eq!(
        refused.error.as_deref(),
        Some(
            "secrets \"prod-headers\" is forbidden: User \"system:serviceaccount:ios:notifier\" cannot get resource \"secrets\" in API group \"\" in the namespace \"ios\""
        )
    );
    assert!(hooks.requests().is_empty(), "nothing was sent");

    // The same account reads what it may, and that is sent.
    let sent = deliver(&api, &op, "team").await;
    assert_eq!(sent.state.as_str(), "Succeeded", "{sent:?}");
    let requests = hooks.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].headers["x-team"], "ios");
    for obj in api.list_objects("webhookdeliveries", Some(NS)) {
        assert!(!obj.to_string().contains("prod-admin-token"));
    }
    op.stop().await;
}

#[tokio::test]
async fn a_route_naming_a_missing_service_account_says_so() {
    let api = cluster().await;
    route_with(&api, "ghost", JOB_RULE, "  serviceAccountName: ghost\n").await;
    let op = Operator::start(&api, &[]).await;
    let ready = ready_condition(&api, "ghost", "the route reports the account").await;
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "ServiceAccountNotFound")
    );
    assert!(ready.message.contains("ios/ghost"), "{}", ready.message);
    op.stop().await;
}

#[tokio::test]
async fn the_multi_tenant_example_grants_jobs_and_its_named_secrets_and_nothing_else() {
    let api = fake_api_with(|o| o.authorization(true)).await;
    put_secret(&api, "hook-secret", &[("secret", WEBHOOK_SECRET)]).await;
    let path = std::path::Path::new(ROOT).join("examples/multi-tenant-rbac.yaml");
    for mut doc in crate::manifests::kubectl_reads_file(&path) {
        doc["metadata"]["namespace"] = json!(NS);
        let resource = match doc["kind"].as_str().unwrap() {
            "ServiceAccount" => "serviceaccounts",
            "Role" => "roles.rbac.authorization.k8s.io",
            "RoleBinding" => "rolebindings.rbac.authorization.k8s.io",
            other => panic!("unexpected {other}"),
        };
        api.put_object(resource, doc).unwrap();
    }
    let hooks = Recorder::start().await;
    put_secret(
        &api,
        "slack-webhook",
        &[("url", &format!("{}/slack", hooks.url))],
    )
    .await;
    put_secret(
        &api,
        "payments-webhook",
        &[("url", &format!("{}/payments", hooks.url))],
    )
    .await;
    route_with(&api, "build", JOB_RULE, "").await;
    let http = |secret: &str| {
        format!(
            "    - name: notify\n      match: {{}}\n      http: {{urlSecretRef: {{name: {secret}, key: url}}, maxAttempts: 1}}\n"
        )
    };
    route_with(&api, "slack", &http("slack-webhook"), "").await;
    route_with(&api, "sneaky", &http("payments-webhook"), "").await;
    let op = Operator::start(&api, &["--default-service-account", "asc-actions"]).await;

    assert_eq!(deliver(&api, &op, "build").await.state.as_str(), "Running");
    assert_eq!(
        deliver(&api, &op, "slack").await.state.as_str(),
        "Succeeded"
    );
    let sneaky = deliver(&api, &op, "sneaky").await;
    assert_eq!(sneaky.state.as_str(), "Failed");
    assert_eq!(sneaky.reason.as_deref(), Some("Forbidden"));
    assert!(
        sneaky
            .error
            .as_deref()
            .unwrap()
            .starts_with("secrets \"payments-webhook\" is forbidden"),
        "{sneaky:?}"
    );
    assert_eq!(hooks.to("/slack").len(), 1);
    assert!(hooks.to("/payments").is_empty());
    op.stop().await;
}

#[tokio::test]
async fn inject_api_key_needs_the_service_account_to_read_the_key_secret() {
    let api = cluster().await;
    put_secret(&api, "team-key", &[("AuthKey.p8", "not used")]).await;
    crate::harness::create_yaml::<asc_webhook_operator::resources::AscCredential>(
        &api,
        &format!(
            "apiVersion: asc.webhooks.dev/v1alpha1\nkind: AscCredential\nmetadata: {{name: team, namespace: {NS}}}\nspec:\n  keyId: K\n  privateKeySecretRef: {{name: team-key, key: AuthKey.p8}}\n"
        ),
    )
    .await;
    let rule = "    - name: build\n      match: {}\n      enrich: Never\n      job:\n        injectApiKey: true\n        template: {spec: {template: {spec: {restartPolicy: Never, containers: [{name: c, image: busybox}]}}}}\n";
    // builder may create Jobs but not read the key: its Job would otherwise mount it.
    route_with(
        &api,
        "fastlane",
        rule,
        "  serviceAccountName: builder\n  credentialRef: {name: team}\n",
    )
    .await;
    let op = Operator::start(&api, &[]).await;
    let a = deliver(&api, &op, "fastlane").await;
    assert_eq!(a.state.as_str(), "Failed");
    assert_eq!(a.reason.as_deref(), Some("Forbidden"));
    assert!(
        a.error.as_deref().unwrap().starts_with(
            "secrets \"team-key\" is forbidden: User \"system:serviceaccount:ios:builder\""
        ),
        "{a:?}"
    );
    assert_eq!(jobs_of(&api, "fastlane"), 0);
    op.stop().await;
}

//! RBAC for impersonated requests: allowed by a binding, or the real server's 403; the test's own client
//! and servers without authorization are unaffected.

use super::*;

fn as_user(server: &FakeApiServer, user: &str) -> Client {
    let mut config = server.config();
    config.auth_info.impersonate = Some(user.to_string());
    config.default_retry = false;
    Client::try_from(config).unwrap()
}

async fn authorizing_server() -> FakeApiServer {
    let server = FakeApiServer::start(
        FakeApiServerOptions {
            namespaces: vec!["default".into(), "ios".into(), "payments".into()],
            ..Default::default()
        }
        .authorization(true),
    )
    .await;
    let put = |resource: &str, obj: serde_json::Value| {
        server.put_object(resource, obj).unwrap();
    };
    put(
        "roles.rbac.authorization.k8s.io",
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "job-runner", "namespace": "ios"},
        "rules": [
            {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create"]},
            {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["slack"], "verbs": ["get"]},
        ]}),
    );
    put(
        "rolebindings.rbac.authorization.k8s.io",
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "builder-runs-jobs", "namespace": "ios"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "job-runner"},
            "subjects": [{"kind": "ServiceAccount", "name": "builder", "namespace": "ios"}]}),
    );
    put(
        "clusterroles.rbac.authorization.k8s.io",
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "configmap-reader"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}]}),
    );
    put(
        "rolebindings.rbac.authorization.k8s.io",
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "all-accounts-read-configmaps", "namespace": "ios"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "configmap-reader"},
            "subjects": [{"kind": "Group", "name": "system:serviceaccounts:ios"}]}),
    );
    server
}

fn job(name: &str) -> Job {
    serde_json::from_value(json!({"apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name},
        "spec": {"template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "c", "image": "busybox"}]}}}}))
    .unwrap()
}

#[tokio::test]
async fn a_bound_service_account_may_create_jobs_and_read_only_the_named_secret() {
    let server = authorizing_server().await;
    server
        .put_object(
            "secrets",
            json!({"metadata": {"name": "slack", "namespace": "ios"}, "stringData": {"url": "u"}}),
        )
        .unwrap();
    server
        .put_object(
            "secrets",
            json!({"metadata": {"name": "prod-db", "namespace": "ios"}, "stringData": {"p": "x"}}),
        )
        .unwrap();
    let builder = as_user(&server, "system:serviceaccount:ios:builder");
    Api::<Job>::namespaced(builder.clone(), "ios")
        .create(&PostParams::default(), &job("j1"))
        .await
        .unwrap();
    let secrets: Api<Secret> = Api::namespaced(builder.clone(), "ios");
    secrets.get("slack").await.unwrap();
    let e = api_err(secrets.get("prod-db").await.unwrap_err());
    assert_eq!((e.code, e.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        e.message,
        "secrets \"prod-db\" is forbidden: User \"system:serviceaccount:ios:builder\" cannot get resource \"secrets\" in API group \"\" in the namespace \"ios\""
    );
    // Group bindings reach the account through the groups the server derives for it.
    Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(builder.clone(), "ios")
        .list(&ListParams::default())
        .await
        .unwrap();
    // The Role is in ios only.
    let e = api_err(
        Api::<Job>::namespaced(builder, "payments")
            .create(&PostParams::default(), &job("j2"))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 403);
    let log = server.request_log();
    assert!(
        log.iter()
            .filter(|r| r.verb != Verb::Discovery)
            .all(|r| r.impersonated_user.as_deref() == Some("system:serviceaccount:ios:builder"))
    );
}

#[tokio::test]
async fn an_unbound_service_account_gets_the_real_forbidden_status() {
    let server = authorizing_server().await;
    let intern = as_user(&server, "system:serviceaccount:ios:intern");
    let e = api_err(
        Api::<Job>::namespaced(intern, "ios")
            .create(&PostParams::default(), &job("j1"))
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        e.message,
        "jobs.batch is forbidden: User \"system:serviceaccount:ios:intern\" cannot create resource \"jobs\" in API group \"batch\" in the namespace \"ios\""
    );
    let details = e.details.as_ref().unwrap();
    assert_eq!(
        (details.group.as_str(), details.kind.as_str()),
        ("batch", "jobs")
    );
    assert!(server.list_objects("jobs", Some("ios")).is_empty());
}

#[tokio::test]
async fn requests_that_impersonate_nobody_and_servers_without_authorization_allow_everything() {
    let server = authorizing_server().await;
    Api::<Job>::namespaced(server.client(), "ios")
        .create(&PostParams::default(), &job("admin"))
        .await
        .unwrap();
    let open = FakeApiServer::start(FakeApiServerOptions::default()).await;
    Api::<Job>::namespaced(
        as_user(&open, "system:serviceaccount:default:nobody"),
        "default",
    )
    .create(&PostParams::default(), &job("j"))
    .await
    .unwrap();
    assert_eq!(
        open.request_log()
            .iter()
            .find(|r| r.verb == Verb::Create)
            .unwrap()
            .impersonated_user
            .as_deref(),
        Some("system:serviceaccount:default:nobody"),
        "recorded even when not enforced"
    );
}

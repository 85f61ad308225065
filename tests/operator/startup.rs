//! Start-up against a cluster that is not set up yet: the operator says what is missing and recovers
//! by itself once it is fixed.

use crate::harness::*;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use std::path::Path;
use std::time::Duration;
use testkit::apiserver::{FakeApiServer, FakeApiServerOptions};

const RULE: &str = "    - name: notify\n      match: {eventTypes: [BUILD_UPLOAD_STATE_UPDATED]}\n      http: {urlSecretRef: {name: slack, key: url}}\n";

/// What `kubectl apply --server-side -f crds/` does.
async fn apply_crds(api: &FakeApiServer) {
    let crds: Api<CustomResourceDefinition> = Api::all(api.client());
    for entry in std::fs::read_dir(Path::new(ROOT).join("crds")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        let crd: CustomResourceDefinition = serde_yaml::from_str(&text).unwrap();
        let name = crd.metadata.name.clone().unwrap();
        crds.patch(
            &name,
            &PatchParams::apply("kubectl").force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap();
    }
}

#[tokio::test]
async fn without_crds_readiness_says_to_apply_them_and_recovers_once_they_are() {
    let api = FakeApiServer::start(FakeApiServerOptions {
        namespaces: vec!["default".into(), NS.into()],
        ..Default::default()
    })
    .await;
    let op = Operator::launch(&api, &[]).await;
    let (status, body) = eventually(
        "readiness names the missing CRDs",
        Duration::from_secs(10),
        || async {
            op.readyz()
                .await
                .filter(|(_, body)| body.contains("CustomResourceDefinitions"))
        },
    )
    .await;
    assert_eq!(status, 503);
    assert!(
        body.contains("kubectl apply --server-side -f crds/"),
        "{body}"
    );
    let metrics = op.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with(r#"asc_webhook_watch_errors_total{stream="receiver"}"#)),
        "{metrics}"
    );

    apply_crds(&api).await;
    put_secret(&api, "hook-secret", &[("secret", WEBHOOK_SECRET)]).await;
    route_with(&api, "release", RULE, "").await;
    // The watch retries with backoff (0.8 s doubling): recovery comes without a restart.
    eventually("the operator is ready", Duration::from_secs(30), || async {
        op.readyz().await.filter(|(s, _)| *s == 200)
    })
    .await;
    let (status, body) = eventually(
        "the route reached the receiver",
        Duration::from_secs(10),
        || async {
            let answer = op
                .post("release", &fixture("build-upload-complete"), WEBHOOK_SECRET)
                .await;
            (answer.0 != 404).then_some(answer)
        },
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(deliveries(&api).len(), 1);
    // The controllers recover too (their watches back off up to 30 s).
    eventually(
        "the delivery controller picks the delivery up",
        Duration::from_secs(40),
        || {
            let d = deliveries(&api);
            async move { d[0].status.clone() }
        },
    )
    .await;
    op.stop().await;
}

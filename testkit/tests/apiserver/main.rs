//! The fake API server driven by the real kube client, watcher, reflector and controller.

use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ObjectReference, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Client, CustomResource, CustomResourceExt, Resource, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;
use testkit::apiserver::{FakeApiServer, FakeApiServerOptions, Fault, FaultRule, Verb};

const WIDGET_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.test.testkit.dev
spec:
  group: test.testkit.dev
  names: { kind: Widget, plural: widgets, singular: widget, listKind: WidgetList, shortNames: [wd] }
  scope: Namespaced
  versions:
    - name: v1
      served: true
      storage: true
      subresources: { status: {} }
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              required: [replicas]
              properties:
                replicas: { type: integer, format: int32, minimum: 0 }
                image: { type: string }
                mode: { type: string, enum: [fast, slow], default: fast }
                extra: { type: object, x-kubernetes-preserve-unknown-fields: true }
            status:
              type: object
              properties:
                phase: { type: string }
                observedGeneration: { type: integer, format: int64 }
---
# not a CRD: skipped by the loader
apiVersion: v1
kind: ConfigMap
metadata: { name: ignored }
"#;

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "test.testkit.dev",
    version = "v1",
    kind = "Widget",
    namespaced,
    status = "WidgetStatus"
)]
struct WidgetSpec {
    replicas: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mode: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
struct WidgetStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    phase: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    observed_generation: Option<i64>,
}

async fn server() -> FakeApiServer {
    FakeApiServer::start(FakeApiServerOptions::default().crd_yaml(WIDGET_CRD)).await
}

fn widget(name: &str, replicas: i32) -> Widget {
    Widget::new(
        name,
        WidgetSpec {
            replicas,
            ..Default::default()
        },
    )
}

fn secret(name: &str, labels: &[(&str, &str)]) -> Secret {
    let mut s = Secret::default();
    s.metadata.name = Some(name.into());
    s.metadata.labels = Some(
        labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    s.string_data = Some([("key".to_string(), "value".to_string())].into());
    s
}

fn api_err(e: kube::Error) -> Box<kube::core::Status> {
    match e {
        kube::Error::Api(s) => s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn no_retry_client(server: &FakeApiServer) -> Client {
    let mut config = server.config();
    config.default_retry = false;
    Client::try_from(config).expect("client")
}

#[test]
fn handle_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<FakeApiServer>();
}

#[tokio::test]
async fn discovery_lists_builtins_and_crds() {
    let server = server().await;
    let client = server.client();
    let discovery = kube::Discovery::new(client.clone())
        .run()
        .await
        .expect("discovery");
    let (ar, caps) = discovery
        .groups()
        .flat_map(|g| g.recommended_resources())
        .find(|(ar, _)| ar.plural == "widgets")
        .expect("widgets discovered");
    assert_eq!(ar.group, "test.testkit.dev");
    assert!(caps.subresources.iter().any(|(s, _)| s.plural == "status"));
    assert!(discovery.has_group("batch") && discovery.has_group("coordination.k8s.io"));
    let version = client.apiserver_version().await.expect("version");
    assert_eq!(version.major, "1");
}

#[tokio::test]
async fn reflectors_converge_on_creates_updates_and_deletes() {
    let server = server().await;
    let client = server.client();
    let widgets: Api<Widget> = Api::namespaced(client.clone(), "default");
    let secrets: Api<Secret> = Api::all(client.clone());
    let secrets_ns: Api<Secret> = Api::namespaced(client.clone(), "apps");

    widgets
        .create(&PostParams::default(), &widget("pre-existing", 1))
        .await
        .expect("create");

    let (w_reader, w_writer) = reflector::store::<Widget>();
    let (s_reader, s_writer) = reflector::store::<Secret>();
    let w_stream = reflector(
        w_writer,
        watcher(widgets.clone(), watcher::Config::default()),
    )
    .applied_objects()
    .for_each(|_| async {});
    let s_stream = reflector(s_writer, watcher(secrets, watcher::Config::default()))
        .applied_objects()
        .for_each(|_| async {});
    let w_task = tokio::spawn(w_stream);
    let s_task = tokio::spawn(s_stream);

    eventually("initial widget", || w_reader.state().len() == 1).await;
    for i in 0..20 {
        widgets
            .create(&PostParams::default(), &widget(&format!("w{i}"), i))
            .await
            .expect("create");
    }
    secrets_ns
        .create(&PostParams::default(), &secret("s1", &[]))
        .await
        .expect("secret");
    widgets
        .patch(
            "w3",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 33}})),
        )
        .await
        .expect("patch");
    widgets
        .delete("w4", &DeleteParams::default())
        .await
        .expect("delete");
    secrets_ns
        .patch(
            "s1",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await
        .expect("patch secret");

    eventually("widgets to converge", || {
        let state = w_reader.state();
        state.len() == 20
            && state
                .iter()
                .any(|w| w.name_any() == "w3" && w.spec.replicas == 33)
            && !state.iter().any(|w| w.name_any() == "w4")
    })
    .await;
    eventually("secret label to arrive", || {
        s_reader
            .state()
            .iter()
            .any(|s| s.labels().get("x").map(String::as_str) == Some("y"))
    })
    .await;
    secrets_ns
        .delete("s1", &DeleteParams::default())
        .await
        .expect("delete secret");
    eventually("secret deletion", || s_reader.state().is_empty()).await;
    w_task.abort();
    s_task.abort();
}

mod authorization;
mod builtins;
mod outages;
mod runtime;
mod semantics;
mod watches;

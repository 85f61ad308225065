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

#[tokio::test]
async fn conflicts_already_exists_and_not_found() {
    let server = server().await;
    let widgets: Api<Widget> = Api::namespaced(server.client(), "default");
    let created = widgets
        .create(&PostParams::default(), &widget("a", 1))
        .await
        .expect("create");
    let mut stale = created.clone();
    let mut fresh = created.clone();
    fresh.spec.replicas = 2;
    widgets
        .replace("a", &PostParams::default(), &fresh)
        .await
        .expect("first replace");
    stale.spec.replicas = 3;
    let err = api_err(
        widgets
            .replace("a", &PostParams::default(), &stale)
            .await
            .expect_err("stale"),
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    assert!(
        err.message.contains("the object has been modified"),
        "{}",
        err.message
    );

    let err = api_err(
        widgets
            .create(&PostParams::default(), &widget("a", 1))
            .await
            .expect_err("dup"),
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "AlreadyExists"));

    let err = api_err(widgets.get("nope").await.expect_err("missing"));
    assert_eq!((err.code, err.reason.as_str()), (404, "NotFound"));
    assert!(err.is_not_found());
    assert_eq!(err.details.as_ref().map(|d| d.name.as_str()), Some("nope"));
    assert!(widgets.get_opt("nope").await.expect("get_opt").is_none());

    // Re-creating an object read back from the server (resourceVersion still set) fails.
    let mut copy = created.clone();
    copy.metadata.name = Some("copy".into());
    let err = api_err(
        widgets
            .create(&PostParams::default(), &copy)
            .await
            .expect_err("rv on create"),
    );
    assert_eq!(err.code, 500);

    // A merge patch that pins a stale resourceVersion conflicts too.
    let patch = json!({"metadata": {"resourceVersion": created.resource_version()}, "spec": {"replicas": 9}});
    let err = api_err(
        widgets
            .patch("a", &PatchParams::default(), &Patch::Merge(patch))
            .await
            .expect_err("stale patch"),
    );
    assert_eq!(err.code, 409);
}

#[tokio::test]
async fn status_subresource_and_generation() {
    let server = server().await;
    let widgets: Api<Widget> = Api::namespaced(server.client(), "default");
    let mut w = widget("g", 1);
    w.status = Some(WidgetStatus {
        phase: Some("ignored-on-create".into()),
        observed_generation: None,
    });
    let created = widgets
        .create(&PostParams::default(), &w)
        .await
        .expect("create");
    assert_eq!(created.metadata.generation, Some(1));
    assert!(created.status.is_none(), "create drops status");
    assert!(created.metadata.uid.is_some() && created.metadata.creation_timestamp.is_some());
    assert_eq!(
        created.spec.mode.as_deref(),
        Some("fast"),
        "schema default applied"
    );

    let st = widgets
        .patch_status(
            "g",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Ready"}, "spec": {"replicas": 50}})),
        )
        .await
        .expect("patch status");
    assert_eq!(
        st.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Ready")
    );
    assert_eq!(st.spec.replicas, 1, "status write leaves spec alone");
    assert_eq!(
        st.metadata.generation,
        Some(1),
        "status change keeps generation"
    );
    assert_ne!(st.resource_version(), created.resource_version());

    let mut replaced = st.clone();
    replaced.status = Some(WidgetStatus {
        phase: Some("Replaced".into()),
        observed_generation: Some(1),
    });
    let after = widgets
        .replace_status("g", &PostParams::default(), &replaced)
        .await
        .expect("replace_status");
    assert_eq!(
        after.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Replaced")
    );

    let mut main = after.clone();
    main.spec.replicas = 2;
    main.status = Some(WidgetStatus {
        phase: Some("Hacked".into()),
        observed_generation: None,
    });
    let updated = widgets
        .replace("g", &PostParams::default(), &main)
        .await
        .expect("replace");
    assert_eq!(
        updated.metadata.generation,
        Some(2),
        "spec change bumps generation"
    );
    assert_eq!(
        updated.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Replaced"),
        "main write ignores status"
    );

    // Writing the same thing again is a no-op: no new resourceVersion.
    let same = widgets
        .replace("g", &PostParams::default(), &updated)
        .await
        .expect("no-op replace");
    assert_eq!(same.resource_version(), updated.resource_version());
    assert_eq!(same.metadata.generation, Some(2));
}

#[tokio::test]
async fn server_side_apply_two_managers() {
    let server = server().await;
    let widgets: Api<Widget> = Api::namespaced(server.client(), "default");
    let apply = |v: serde_json::Value| Patch::Apply(v);
    let base = |spec: serde_json::Value| json!({"apiVersion": "test.testkit.dev/v1", "kind": "Widget", "metadata": {"name": "ssa"}, "spec": spec});

    let a = widgets
        .patch(
            "ssa",
            &PatchParams::apply("manager-a"),
            &apply(base(json!({"replicas": 1, "image": "img:a"}))),
        )
        .await
        .expect("apply creates");
    assert_eq!(a.spec.replicas, 1);

    let err = api_err(
        widgets
            .patch(
                "ssa",
                &PatchParams::apply("manager-b"),
                &apply(base(json!({"replicas": 2}))),
            )
            .await
            .expect_err("conflict"),
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    assert!(
        err.message.contains("manager-a") && err.message.contains(".spec.replicas"),
        "{}",
        err.message
    );

    // Same value as A: shared ownership, no conflict; B adds its own field.
    let shared = widgets
        .patch(
            "ssa",
            &PatchParams::apply("manager-b"),
            &apply(base(json!({"replicas": 1, "mode": "slow"}))),
        )
        .await
        .expect("agreeing apply");
    assert_eq!(
        (shared.spec.image.as_deref(), shared.spec.mode.as_deref()),
        (Some("img:a"), Some("slow"))
    );

    let forced = widgets
        .patch(
            "ssa",
            &PatchParams::apply("manager-b").force(),
            &apply(base(json!({"replicas": 2, "mode": "slow"}))),
        )
        .await
        .expect("forced apply");
    assert_eq!(forced.spec.replicas, 2);
    assert_eq!(
        forced.spec.image.as_deref(),
        Some("img:a"),
        "A's field survives"
    );
    let managers: Vec<_> = forced
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .map(|m| {
            (
                m.manager.clone().unwrap_or_default(),
                m.operation.clone().unwrap_or_default(),
            )
        })
        .collect();
    assert!(
        managers.contains(&("manager-a".into(), "Apply".into())),
        "{managers:?}"
    );
    assert!(
        managers.contains(&("manager-b".into(), "Apply".into())),
        "{managers:?}"
    );

    // A re-applies without replicas: it lost replicas already, so nothing conflicts; its image
    // stays since it still applies it.
    let a2 = widgets
        .patch(
            "ssa",
            &PatchParams::apply("manager-a"),
            &apply(base(json!({"image": "img:a2"}))),
        )
        .await
        .expect("A re-applies");
    assert_eq!(
        (a2.spec.replicas, a2.spec.image.as_deref()),
        (2, Some("img:a2"))
    );

    // Apply without a field manager is rejected, as by the real server.
    let err = api_err(
        widgets
            .patch(
                "ssa",
                &PatchParams::default(),
                &apply(base(json!({"replicas": 3}))),
            )
            .await
            .expect_err("needs fieldManager"),
    );
    assert_eq!(err.code, 422);
    // Strategic merge patch is not available for custom resources.
    let err = api_err(
        widgets
            .patch(
                "ssa",
                &PatchParams::default(),
                &Patch::Strategic(json!({"spec": {"replicas": 3}})),
            )
            .await
            .expect_err("no SMP on CRs"),
    );
    assert_eq!(err.code, 415);
}

#[tokio::test]
async fn invalid_custom_resources_get_422() {
    let server = server().await;
    let client = server.client();
    let raw: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client.clone(),
        "default",
        &kube::api::ApiResource::erase::<Widget>(&()),
    );
    let bad_type: kube::api::DynamicObject = serde_json::from_value(json!({
        "apiVersion": "test.testkit.dev/v1", "kind": "Widget",
        "metadata": {"name": "bad"}, "spec": {"replicas": "three"}
    }))
    .expect("dynamic object");
    let err = api_err(
        raw.create(&PostParams::default(), &bad_type)
            .await
            .expect_err("wrong type"),
    );
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
    assert!(err.message.contains("spec.replicas"), "{}", err.message);

    let missing: kube::api::DynamicObject = serde_json::from_value(json!({
        "apiVersion": "test.testkit.dev/v1", "kind": "Widget",
        "metadata": {"name": "bad"}, "spec": {"image": "x", "mode": "sideways"}
    }))
    .expect("dynamic object");
    let err = api_err(
        raw.create(&PostParams::default(), &missing)
            .await
            .expect_err("missing"),
    );
    assert_eq!(err.code, 422);
    assert!(
        err.message.contains("spec.replicas: Required value"),
        "{}",
        err.message
    );
    assert!(err.message.contains("spec.mode"), "{}", err.message);

    let bad_name = widget("Not_A_Name", 1);
    let widgets: Api<Widget> = Api::namespaced(client, "default");
    assert_eq!(
        api_err(
            widgets
                .create(&PostParams::default(), &bad_name)
                .await
                .expect_err("name")
        )
        .code,
        422
    );

    // Unknown fields are pruned, preserve-unknown-fields subtrees are kept.
    let pruned: kube::api::DynamicObject = serde_json::from_value(json!({
        "apiVersion": "test.testkit.dev/v1", "kind": "Widget", "metadata": {"name": "pruned"},
        "spec": {"replicas": 1, "bogus": true, "extra": {"any": {"thing": 1}}}, "topLevel": 1
    }))
    .expect("dynamic object");
    raw.create(&PostParams::default(), &pruned)
        .await
        .expect("create");
    let stored = server
        .get_object("widgets", "default", "pruned")
        .expect("stored");
    assert!(stored["spec"].get("bogus").is_none() && stored.get("topLevel").is_none());
    assert_eq!(stored["spec"]["extra"]["any"]["thing"], 1);
    assert!(server.count_requests(|r| r.status == 422) >= 3);
}

#[tokio::test]
async fn selectors_generate_name_finalizers_and_owner_cascade() {
    let server = server().await;
    let client = server.client();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    secrets
        .create(
            &PostParams::default(),
            &secret("s-a", &[("app", "web"), ("tier", "fe")]),
        )
        .await
        .expect("a");
    secrets
        .create(&PostParams::default(), &secret("s-b", &[("app", "db")]))
        .await
        .expect("b");
    secrets
        .create(&PostParams::default(), &secret("s-c", &[]))
        .await
        .expect("c");
    let names = |l: Vec<Secret>| l.into_iter().map(|s| s.name_any()).collect::<Vec<_>>();
    let q = |sel: &str| ListParams::default().labels(sel);
    assert_eq!(
        names(secrets.list(&q("app=web")).await.expect("list").items),
        ["s-a"]
    );
    assert_eq!(
        names(
            secrets
                .list(&q("app in (web,db)"))
                .await
                .expect("list")
                .items
        ),
        ["s-a", "s-b"]
    );
    assert_eq!(
        names(
            secrets
                .list(&q("app notin (web)"))
                .await
                .expect("list")
                .items
        ),
        ["s-b", "s-c"]
    );
    assert_eq!(
        names(secrets.list(&q("!app")).await.expect("list").items),
        ["s-c"]
    );
    assert_eq!(
        names(secrets.list(&q("app,tier!=be")).await.expect("list").items),
        ["s-a", "s-b"]
    );
    let by_name = ListParams::default().fields("metadata.name=s-b");
    assert_eq!(
        names(secrets.list(&by_name).await.expect("list").items),
        ["s-b"]
    );
    let page = secrets
        .list(&ListParams::default().limit(2))
        .await
        .expect("page 1");
    assert_eq!(page.items.len(), 2);
    let token = page.metadata.continue_.clone().expect("continue token");
    let rest = secrets
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .expect("page 2");
    assert_eq!(names(rest.items), ["s-c"]);
    assert!(rest.metadata.continue_.is_none());

    let s = secrets.get("s-a").await.expect("get");
    let data = s.data.expect("data");
    assert_eq!(data["key"].0, b"value", "stringData became data");

    let mut generated = Secret::default();
    generated.metadata.generate_name = Some("gen-".into());
    let g = secrets
        .create(&PostParams::default(), &generated)
        .await
        .expect("generateName");
    assert!(
        g.name_any().starts_with("gen-") && g.name_any().len() == 9,
        "{}",
        g.name_any()
    );

    // Finalizers hold deletion.
    let widgets: Api<Widget> = Api::namespaced(client.clone(), "default");
    let mut held = widget("held", 1);
    held.metadata.finalizers = Some(vec!["test/hold".into()]);
    widgets
        .create(&PostParams::default(), &held)
        .await
        .expect("create");
    let res = widgets
        .delete("held", &DeleteParams::default())
        .await
        .expect("delete");
    let pending = res
        .left()
        .expect("object returned while finalizers pending");
    assert!(pending.metadata.deletion_timestamp.is_some());
    let still = widgets.get("held").await.expect("still there");
    assert!(still.metadata.deletion_timestamp.is_some());
    let err = api_err(
        widgets
            .patch(
                "held",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"finalizers": ["test/hold", "test/new"]}})),
            )
            .await
            .expect_err("no new finalizers while deleting"),
    );
    assert_eq!(err.code, 422);
    widgets
        .patch(
            "held",
            &PatchParams::default(),
            &Patch::<()>::Json(
                serde_json::from_value(json!([
                    {"op": "test", "path": "/metadata/finalizers/0", "value": "test/hold"},
                    {"op": "remove", "path": "/metadata/finalizers/0"}
                ]))
                .expect("json patch"),
            ),
        )
        .await
        .expect("remove finalizer");
    assert!(
        widgets.get_opt("held").await.expect("get").is_none(),
        "gone once finalizers are cleared"
    );

    // Owner cascade: a Job owned by a Widget goes when the Widget does.
    let owner = widgets
        .create(&PostParams::default(), &widget("owner", 1))
        .await
        .expect("owner");
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let mut job: Job = serde_json::from_value(json!({
        "metadata": {"name": "child"},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}
    }))
    .expect("job");
    job.metadata.owner_references = Some(vec![owner.controller_owner_ref(&()).expect("owner ref")]);
    jobs.create(&PostParams::default(), &job)
        .await
        .expect("job");
    let mut orphan_job = job.clone();
    orphan_job.metadata.name = Some("other-owner".into());
    orphan_job.metadata.owner_references = Some(vec![OwnerReference {
        uid: "someone-else".into(),
        ..owner.controller_owner_ref(&()).expect("owner ref")
    }]);
    jobs.create(&PostParams::default(), &orphan_job)
        .await
        .expect("job 2");
    widgets
        .delete("owner", &DeleteParams::default())
        .await
        .expect("delete owner");
    assert!(
        jobs.get_opt("child").await.expect("get").is_none(),
        "dependent collected"
    );
    assert!(
        jobs.get_opt("other-owner").await.expect("get").is_some(),
        "unrelated job kept"
    );
}

#[tokio::test]
async fn expired_watch_gets_410_and_watcher_relists() {
    let server = server().await;
    let client = server.client();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    secrets
        .create(&PostParams::default(), &secret("first", &[]))
        .await
        .expect("create");
    let old_rv = server.resource_version().to_string();
    secrets
        .create(&PostParams::default(), &secret("second", &[]))
        .await
        .expect("create");

    // Resuming from a known version replays what came after it.
    let mut stream = secrets
        .watch(&WatchParams::default(), &old_rv)
        .await
        .expect("watch")
        .boxed();
    match stream.try_next().await.expect("event") {
        Some(WatchEvent::Added(s)) => assert_eq!(s.name_any(), "second"),
        other => panic!("expected ADDED second, got {other:?}"),
    }
    drop(stream);

    server.compact();
    let mut stream = secrets
        .watch(&WatchParams::default(), &old_rv)
        .await
        .expect("watch")
        .boxed();
    match stream.try_next().await.expect("event") {
        Some(WatchEvent::Error(status)) => {
            assert_eq!((status.code, status.reason.as_str()), (410, "Expired"))
        }
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }
    drop(stream);

    let (reader, writer) = reflector::store::<Secret>();
    let stream_errors = Arc::new(std::sync::Mutex::new(Vec::new()));
    let errors = stream_errors.clone();
    let task = tokio::spawn(
        reflector(
            writer,
            watcher(secrets.clone(), watcher::Config::default()).default_backoff(),
        )
        .applied_objects()
        .for_each(move |r| {
            if let Err(watcher::Error::WatchError(status)) = r {
                errors.lock().expect("lock").push(status.code);
            }
            async {}
        }),
    );
    eventually("initial sync", || reader.state().len() == 2).await;
    let lists_before = server.count_requests(|r| r.verb == Verb::List && r.resource == "secrets");
    secrets
        .create(&PostParams::default(), &secret("third", &[]))
        .await
        .expect("create");
    eventually("third seen", || reader.state().len() == 3).await;
    // Cut the watcher off, change things while it is away and expire the history: it resumes
    // from its last version, is told 410, and has to list again.
    server.set_refuse_connections(true);
    tokio::time::sleep(Duration::from_millis(50)).await;
    server
        .put_object(
            "secrets",
            serde_json::to_value(secret("fourth", &[])).expect("json"),
        )
        .expect("seed");
    server.compact();
    server.set_refuse_connections(false);
    eventually("relist after 410", || {
        server.count_requests(|r| r.verb == Verb::List && r.resource == "secrets") > lists_before
    })
    .await;
    assert!(
        stream_errors.lock().expect("lock").contains(&410),
        "the watcher saw the 410"
    );
    eventually("fourth seen", || reader.state().len() == 4).await;
    task.abort();
}

#[tokio::test]
async fn bookmarks_and_initial_events() {
    let server = FakeApiServer::start(
        FakeApiServerOptions::default()
            .crd_yaml(WIDGET_CRD)
            .bookmark_interval(Duration::from_millis(100)),
    )
    .await;
    let secrets: Api<Secret> = Api::namespaced(server.client(), "default");
    secrets
        .create(&PostParams::default(), &secret("x", &[]))
        .await
        .expect("create");
    let rv = server.resource_version().to_string();
    let mut stream = secrets
        .watch(&WatchParams::default(), &rv)
        .await
        .expect("watch")
        .boxed();
    match stream.try_next().await.expect("event") {
        Some(WatchEvent::Bookmark(b)) => assert_eq!(b.metadata.resource_version, rv),
        other => panic!("expected a bookmark, got {other:?}"),
    }
    drop(stream);

    let mut stream = secrets
        .watch(&WatchParams::default().initial_events(), "0")
        .await
        .expect("streaming list")
        .boxed();
    assert!(matches!(
        stream.try_next().await.expect("event"),
        Some(WatchEvent::Added(_))
    ));
    match stream.try_next().await.expect("event") {
        Some(WatchEvent::Bookmark(b)) => {
            assert_eq!(
                b.metadata
                    .annotations
                    .get("k8s.io/initial-events-end")
                    .map(String::as_str),
                Some("true")
            )
        }
        other => panic!("expected the initial-events-end bookmark, got {other:?}"),
    }
    // The streaming-list watcher strategy works too.
    let (reader, writer) = reflector::store::<Secret>();
    let task = tokio::spawn(
        reflector(
            writer,
            watcher(
                secrets.clone(),
                watcher::Config::default().streaming_lists(),
            ),
        )
        .applied_objects()
        .for_each(|_| async {}),
    );
    eventually("streaming list sync", || reader.state().len() == 1).await;
    secrets
        .create(&PostParams::default(), &secret("y", &[]))
        .await
        .expect("create");
    eventually("streamed update", || reader.state().len() == 2).await;
    task.abort();
}

#[tokio::test]
async fn injected_faults_and_refused_connections() {
    let server = server().await;
    let raw = no_retry_client(&server);
    let secrets: Api<Secret> = Api::namespaced(raw, "default");
    secrets
        .create(&PostParams::default(), &secret("s", &[]))
        .await
        .expect("create");

    server.fail_next(2, Fault::Status(503));
    for _ in 0..2 {
        let err = api_err(secrets.get("s").await.expect_err("injected"));
        assert_eq!((err.code, err.reason.as_str()), (503, "ServiceUnavailable"));
    }
    secrets.get("s").await.expect("third call succeeds");

    // kube's default client retries 503 by itself: one call, three requests.
    server.clear_request_log();
    server.fail_next(2, Fault::Status(503));
    let retrying: Api<Secret> = Api::namespaced(server.client(), "default");
    retrying.get("s").await.expect("retried through");
    assert_eq!(server.count_requests(|r| r.verb == Verb::Get), 3);
    assert_eq!(server.count_requests(|r| r.injected), 2);

    // Filtered rules: only creates of widgets fail.
    server.add_fault(
        FaultRule::new(Fault::Status(500))
            .verb(Verb::Create)
            .resource("widgets"),
    );
    let widgets: Api<Widget> = Api::namespaced(no_retry_client(&server), "default");
    secrets
        .create(&PostParams::default(), &secret("unaffected", &[]))
        .await
        .expect("secret create passes");
    let err = api_err(
        widgets
            .create(&PostParams::default(), &widget("w", 1))
            .await
            .expect_err("widget create fails"),
    );
    assert_eq!((err.code, err.reason.as_str()), (500, "InternalError"));
    widgets
        .create(&PostParams::default(), &widget("w", 1))
        .await
        .expect("rule used up");

    server.fail_next(1, Fault::Drop);
    assert!(matches!(secrets.get("s").await, Err(e) if !matches!(e, kube::Error::Api(_))));
    server.fail_next(1, Fault::Timeout);
    assert_eq!(
        api_err(secrets.get("s").await.expect_err("timeout")).code,
        504
    );

    server.set_refuse_connections(true);
    let fresh: Api<Secret> = Api::namespaced(no_retry_client(&server), "default");
    assert!(matches!(fresh.get("s").await, Err(e) if !matches!(e, kube::Error::Api(_))));
    server.set_refuse_connections(false);
    fresh.get("s").await.expect("recovered");
    secrets.get("s").await.expect("old client reconnects");

    server.set_latency(Duration::from_millis(150));
    let started = std::time::Instant::now();
    secrets.get("s").await.expect("slow get");
    assert!(started.elapsed() >= Duration::from_millis(150));
    server.set_latency(Duration::ZERO);

    server.clear_request_log();
    let _ = secrets.list(&ListParams::default()).await.expect("list");
    assert_eq!(
        server.count_requests(|r| r.verb.is_write()),
        0,
        "reads only"
    );

    server.pause();
    let pending = tokio::spawn({
        let secrets = secrets.clone();
        async move { secrets.get("s").await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!pending.is_finished(), "held while paused");
    server.resume();
    pending.await.expect("join").expect("answered after resume");

    server.shutdown();
    assert!(
        secrets.get("s").await.is_err(),
        "nothing answers after shutdown"
    );
    assert!(
        server.get_object("secrets", "default", "s").is_some(),
        "store outlives the listener"
    );
}

#[tokio::test]
async fn builtins_jobs_secrets_leases_events() {
    let server = server().await;
    let client = server.client();
    let jobs: Api<Job> = Api::namespaced(client.clone(), "ops");
    let job: Job = serde_json::from_value(json!({
        "metadata": {"name": "run-1", "labels": {"app": "asc"}},
        "spec": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}
    }))
    .expect("job");
    jobs.create(&PostParams::default(), &job)
        .await
        .expect("create job");
    let got = jobs.get("run-1").await.expect("get job");
    assert_eq!(got.spec.as_ref().and_then(|s| s.backoff_limit), Some(0));
    server
        .patch_object("jobs", "ops", "run-1", json!({"status": {"succeeded": 1}}))
        .expect("test sets job status");
    let done = jobs.get_status("run-1").await.expect("job status");
    assert_eq!(done.status.and_then(|s| s.succeeded), Some(1));

    let secrets: Api<Secret> = Api::namespaced(client.clone(), "ops");
    let s = secrets
        .create(&PostParams::default(), &secret("creds", &[]))
        .await
        .expect("secret");
    assert!(s.string_data.is_none());
    let raw = server
        .get_object("secrets", "ops", "creds")
        .expect("stored");
    assert_eq!(raw["data"]["key"], "dmFsdWU=");

    let leases: Api<Lease> = Api::namespaced(client.clone(), "ops");
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": "leader"}, "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}
    }))
    .expect("lease");
    let l1 = leases
        .create(&PostParams::default(), &lease)
        .await
        .expect("create lease");
    let mut l2 = l1.clone();
    l2.spec.as_mut().expect("spec").holder_identity = Some("b".into());
    leases
        .replace("leader", &PostParams::default(), &l2)
        .await
        .expect("replace lease");
    let mut l3 = l1.clone();
    l3.spec.as_mut().expect("spec").holder_identity = Some("c".into());
    let err = api_err(
        leases
            .replace("leader", &PostParams::default(), &l3)
            .await
            .expect_err("stale lease"),
    );
    assert_eq!(err.code, 409);
    leases
        .patch(
            "leader",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"holderIdentity": null}})),
        )
        .await
        .expect("SMP on a lease");
    assert!(
        leases
            .get("leader")
            .await
            .expect("get")
            .spec
            .and_then(|s| s.holder_identity)
            .is_none()
    );

    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "testkit".into(),
            instance: None,
        },
    );
    let reference = ObjectReference {
        kind: Some("Job".into()),
        api_version: Some("batch/v1".into()),
        name: Some("run-1".into()),
        namespace: Some("ops".into()),
        uid: got.metadata.uid.clone(),
        ..Default::default()
    };
    let ev = KubeEvent {
        type_: EventType::Normal,
        reason: "Started".into(),
        note: Some("job started".into()),
        action: "Run".into(),
        secondary: None,
    };
    recorder
        .publish(&ev, &reference)
        .await
        .expect("create event");
    recorder
        .publish(&ev, &reference)
        .await
        .expect("patch event (series)");
    let events = server.list_objects("events.events.k8s.io", Some("ops"));
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["series"]["count"], 2);
    assert_eq!(
        server.count_requests(|r| r.resource == "events" && r.verb == Verb::Patch),
        1
    );
}

#[tokio::test]
async fn controller_reconciles_against_the_fake() {
    use kube::runtime::finalizer::{Event as Finalizer, finalizer};
    let server = server().await;
    let client = server.client();
    let widgets: Api<Widget> = Api::all(client.clone());

    struct Ctx {
        client: Client,
        cleaned: std::sync::Mutex<Vec<String>>,
    }
    type Error = kube::runtime::finalizer::Error<kube::Error>;
    async fn reconcile(w: Arc<Widget>, ctx: Arc<Ctx>) -> Result<Action, Error> {
        let api: Api<Widget> =
            Api::namespaced(ctx.client.clone(), &w.namespace().unwrap_or_default());
        finalizer(&api, "test.testkit.dev/cleanup", w, |event| async {
            match event {
                Finalizer::Apply(w) => {
                    let status = json!({"apiVersion": "test.testkit.dev/v1", "kind": "Widget",
                        "status": {"phase": "Ready", "observedGeneration": w.metadata.generation}});
                    api.patch_status(
                        &w.name_any(),
                        &PatchParams::apply("widget-controller").force(),
                        &Patch::Apply(status),
                    )
                    .await?;
                    Ok(Action::await_change())
                }
                Finalizer::Cleanup(w) => {
                    ctx.cleaned.lock().expect("lock").push(w.name_any());
                    Ok(Action::await_change())
                }
            }
        })
        .await
    }
    fn on_error(_: Arc<Widget>, _: &Error, _: Arc<Ctx>) -> Action {
        Action::requeue(Duration::from_millis(100))
    }
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        cleaned: Default::default(),
    });
    let ctl = tokio::spawn(
        Controller::new(widgets, watcher::Config::default())
            .run(reconcile, on_error, ctx.clone())
            .for_each(|_| async {}),
    );
    let ns_api: Api<Widget> = Api::namespaced(client.clone(), "team");
    for i in 0..10 {
        ns_api
            .create(&PostParams::default(), &widget(&format!("c{i}"), i))
            .await
            .expect("create");
    }
    eventually("all widgets reconciled", || {
        let all = server.list_objects("widgets", Some("team"));
        all.len() == 10
            && all.iter().all(|w| {
                w["status"]["phase"] == "Ready"
                    && w["status"]["observedGeneration"] == w["metadata"]["generation"]
                    && w["metadata"]["finalizers"] == json!(["test.testkit.dev/cleanup"])
            })
    })
    .await;
    ns_api
        .patch(
            "c3",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 99}})),
        )
        .await
        .expect("spec change");
    eventually("re-reconciled after spec change", || {
        server
            .get_object("widgets", "team", "c3")
            .is_some_and(|w| w["status"]["observedGeneration"] == 2)
    })
    .await;
    // Deletion waits for the controller's cleanup, then the object goes.
    ns_api
        .delete("c5", &DeleteParams::default())
        .await
        .expect("delete");
    eventually("finalizer cleanup ran and released the object", || {
        server.get_object("widgets", "team", "c5").is_none()
    })
    .await;
    assert_eq!(*ctx.cleaned.lock().expect("lock"), ["c5"]);
    ctl.abort();
}

#[tokio::test]
async fn kubeconfig_and_crds_created_through_the_api() {
    let server = FakeApiServer::start(FakeApiServerOptions::default()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("kubeconfig");
    server.write_kubeconfig(&path).expect("write kubeconfig");
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).expect("read kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("config from kubeconfig");
    let client = Client::try_from(config).expect("client");

    // No CRD yet: the path is unknown.
    let widgets: Api<Widget> = Api::namespaced(client.clone(), "default");
    assert_eq!(
        api_err(
            widgets
                .list(&ListParams::default())
                .await
                .expect_err("no CRD")
        )
        .code,
        404
    );

    let crd = Widget::crd();
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(client.clone());
    let created = crds
        .create(&PostParams::default(), &crd)
        .await
        .expect("create CRD");
    let established = created
        .status
        .and_then(|s| s.conditions)
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Established" && c.status == "True");
    assert!(established);
    widgets
        .create(&PostParams::default(), &widget("via-api", 1))
        .await
        .expect("CR of the new type");
    assert_eq!(
        widgets
            .list(&ListParams::default())
            .await
            .expect("list")
            .items
            .len(),
        1
    );
    assert_eq!(Widget::kind(&()), "Widget");
}

#[tokio::test]
async fn lease_manager_elects_one_leader() {
    use kube_lease_manager::{LeaseCreateMode, LeaseManagerBuilder};
    let server = server().await;
    let build = |identity: &str| {
        LeaseManagerBuilder::new(server.client(), "leader")
            .with_namespace("default")
            .with_identity(identity)
            .with_field_manager(format!("lease-{identity}"))
            .with_duration(5)
            .with_grace(2)
            .with_create_mode(LeaseCreateMode::AutoCreate)
            .build()
    };
    let a = build("a").await.expect("manager a");
    let b = build("b").await.expect("manager b");
    assert!(a.changed().await.expect("a locks"), "a becomes leader");
    assert!(
        tokio::time::timeout(Duration::from_millis(800), b.changed())
            .await
            .is_err(),
        "b cannot take a held lease"
    );
    let lease = server
        .get_object("leases", "default", "leader")
        .expect("lease");
    assert_eq!(lease["spec"]["holderIdentity"], "a");
    a.release().await.expect("release");
    assert!(
        tokio::time::timeout(Duration::from_secs(8), b.changed())
            .await
            .expect("b acquires in time")
            .expect("b locks"),
        "b takes over after release"
    );
    assert_eq!(
        server
            .get_object("leases", "default", "leader")
            .expect("lease")["spec"]["holderIdentity"],
        "b"
    );
}

#[tokio::test]
async fn selector_watch_transitions_metadata_and_bulk_events() {
    let server = server().await;
    let client = server.client();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "bulk");
    secrets
        .create(&PostParams::default(), &secret("sel", &[("app", "web")]))
        .await
        .expect("create");
    let rv = server.resource_version().to_string();
    let mut stream = secrets
        .watch(
            &WatchParams::default().labels("app=web").disable_bookmarks(),
            &rv,
        )
        .await
        .expect("watch")
        .boxed();
    secrets
        .patch(
            "sel",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"app": "db"}}})),
        )
        .await
        .expect("relabel");
    secrets
        .patch(
            "sel",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"app": "web"}}})),
        )
        .await
        .expect("relabel back");
    assert!(
        matches!(
            stream.try_next().await.expect("event"),
            Some(WatchEvent::Deleted(_))
        ),
        "left the selector"
    );
    assert!(
        matches!(
            stream.try_next().await.expect("event"),
            Some(WatchEvent::Added(_))
        ),
        "came back"
    );
    drop(stream);

    // Metadata-only list and watch, as kube's metadata_watcher does.
    let metas = secrets
        .list_metadata(&ListParams::default())
        .await
        .expect("list metadata");
    assert_eq!(metas.items.len(), 1);

    // dryRun stores nothing.
    let dry = secrets
        .create(
            &PostParams {
                dry_run: true,
                ..Default::default()
            },
            &secret("dry", &[]),
        )
        .await
        .expect("dry run");
    assert_eq!(dry.name_any(), "dry");
    assert!(server.get_object("secrets", "bulk", "dry").is_none());

    // Hundreds of events through a reflector, in bounded time.
    let (reader, writer) = reflector::store::<Secret>();
    let task = tokio::spawn(
        reflector(writer, watcher(secrets.clone(), watcher::Config::default()))
            .applied_objects()
            .for_each(|_| async {}),
    );
    eventually("initial sync", || reader.state().len() == 1).await;
    let started = std::time::Instant::now();
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let api = secrets.clone();
            tokio::spawn(async move {
                for i in 0..150 {
                    api.create(&PostParams::default(), &secret(&format!("b{w}-{i}"), &[]))
                        .await
                        .expect("create");
                }
            })
        })
        .collect();
    for w in writers {
        w.await.expect("writer");
    }
    eventually("600 objects reflected", || reader.state().len() == 601).await;
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );

    let deleted = secrets
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels("app=web"),
        )
        .await
        .expect("deletecollection");
    assert_eq!(deleted.left().map(|l| l.items.len()), Some(1));
    eventually("collection delete reflected", || {
        reader.state().len() == 600
    })
    .await;
    task.abort();
}

#[tokio::test]
async fn project_crds_load_validate_and_default() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds");
    let server = FakeApiServer::start(FakeApiServerOptions::default().crd_dir(&dir)).await;
    let client = server.client();
    let discovery = kube::Discovery::new(client.clone())
        .run()
        .await
        .expect("discovery");
    let group = discovery
        .groups()
        .find(|g| g.name() == "asc.webhooks.dev")
        .expect("group served");
    let mut kinds: Vec<String> = group
        .recommended_resources()
        .into_iter()
        .map(|(ar, _)| ar.kind)
        .collect();
    kinds.sort();
    assert_eq!(kinds, ["AscCredential", "WebhookDelivery", "WebhookRoute"]);

    let (ar, _) = discovery
        .resolve_gvk(&kube::api::GroupVersionKind::gvk(
            "asc.webhooks.dev",
            "v1alpha1",
            "WebhookDelivery",
        ))
        .expect("delivery resolvable");
    let deliveries: Api<kube::api::DynamicObject> = Api::namespaced_with(client, "default", &ar);
    let delivery = |spec: serde_json::Value| -> kube::api::DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "asc.webhooks.dev/v1alpha1", "kind": "WebhookDelivery",
            "metadata": {"generateName": "d-"}, "spec": spec
        }))
        .expect("dynamic object")
    };
    let valid = json!({
        "eventId": "e1", "eventType": "buildUploadStateUpdated", "payload": "{}",
        "receivedAt": "2025-01-01T00:00:00Z", "route": "r", "instance": null, "unknownField": 1
    });
    let created = deliveries
        .create(&PostParams::default(), &delivery(valid.clone()))
        .await
        .expect("valid delivery");
    assert_eq!(created.data["spec"]["source"], "Webhook", "schema default");
    assert!(created.data["spec"].get("unknownField").is_none(), "pruned");

    let mut bad = valid;
    bad["eventType"] = json!("");
    bad.as_object_mut().expect("object").remove("route");
    let err = api_err(
        deliveries
            .create(&PostParams::default(), &delivery(bad))
            .await
            .expect_err("invalid"),
    );
    assert_eq!(err.code, 422);
    assert!(
        err.message.contains("spec.eventType") && err.message.contains("spec.route"),
        "{}",
        err.message
    );
}

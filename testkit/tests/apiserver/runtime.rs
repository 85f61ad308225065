//! kube::runtime and kube-lease-manager against the fake; the project CRDs.

use super::*;

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

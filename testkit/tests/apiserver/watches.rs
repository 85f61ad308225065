//! Selectors, finalizers, owner cascade and watches (410, bookmarks, initial events).

use super::*;

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

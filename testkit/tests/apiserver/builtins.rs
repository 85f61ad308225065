//! Fault injection and the built-in kinds the operator uses.

use super::*;

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

//! Write semantics: conflicts, status subresource, server-side apply, schema validation.

use super::*;

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
async fn objects_over_etcds_limit_are_refused_like_the_real_server() {
    let server = server().await;
    let client = no_retry_client(&server);
    let secrets: Api<Secret> = Api::namespaced(client, "default");
    let mut big = secret("big", &[]);
    // 1.2 MiB of text: under the 3 MiB body limit, over etcd's 1.5 MiB once base64-encoded in `data`.
    big.string_data = Some([("key".to_string(), "x".repeat(1_200_000))].into());
    let err = api_err(
        secrets
            .create(&PostParams::default(), &big)
            .await
            .expect_err("too large"),
    );
    assert_eq!(
        (err.code, err.reason.as_str(), err.message.as_str()),
        (500, "", "etcdserver: request is too large")
    );
    assert!(server.get_object("secrets", "default", "big").is_none());

    // Growing an existing object past the limit is refused the same way and keeps the old object.
    secrets
        .create(&PostParams::default(), &secret("grows", &[]))
        .await
        .expect("small create");
    let mut grown = secret("grows", &[]);
    grown.string_data = big.string_data.clone();
    let err = api_err(
        secrets
            .replace("grows", &PostParams::default(), &grown)
            .await
            .expect_err("too large"),
    );
    assert_eq!(err.code, 500);
    assert_eq!(
        server.get_object("secrets", "default", "grows").unwrap()["data"]["key"],
        "dmFsdWU="
    );

    let mut huge = secret("huge", &[]);
    huge.string_data = Some([("key".to_string(), "x".repeat(3_200_000))].into());
    let err = api_err(
        secrets
            .create(&PostParams::default(), &huge)
            .await
            .expect_err("body too large"),
    );
    assert_eq!(
        (err.code, err.reason.as_str(), err.message.as_str()),
        (
            413,
            "RequestEntityTooLarge",
            "Request entity too large: limit is 3145728"
        )
    );
}

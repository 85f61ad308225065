//! The faults a real control plane has: outages, slow writes, dropped watches, compacted history, and
//! who sent what.

use super::*;

fn is_connect_refused(e: &kube::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::ConnectionRefused;
        }
        source = s.source();
    }
    false
}

#[tokio::test]
async fn an_outage_refuses_connections_then_the_server_is_back_on_the_same_port_with_its_store() {
    let server = server().await;
    let secrets: Api<Secret> = Api::namespaced(no_retry_client(&server), "default");
    secrets
        .create(&PostParams::default(), &secret("kept", &[]))
        .await
        .expect("create");
    let addr = server.addr();

    server.begin_outage().await;
    assert!(server.in_outage());
    let refused = tokio::net::TcpStream::connect(addr).await;
    assert_eq!(
        refused.map(|_| ()).map_err(|e| e.kind()),
        Err(std::io::ErrorKind::ConnectionRefused),
        "a stopped API server refuses the connection, it does not accept and hang up"
    );
    let err = secrets.get("kept").await.expect_err("down");
    assert!(is_connect_refused(&err), "{err:?}");

    server.end_outage();
    assert_eq!(server.addr(), addr);
    let back = secrets.get("kept").await.expect("back on the same port");
    assert_eq!(back.metadata.name.as_deref(), Some("kept"));
}

/// A server holding secrets `a` and `b`, and the resourceVersion after `a` (before `b`).
async fn two_secrets_and_the_version_between() -> (FakeApiServer, Api<Secret>, u64) {
    let server = server().await;
    let secrets: Api<Secret> = Api::namespaced(no_retry_client(&server), "default");
    secrets
        .create(&PostParams::default(), &secret("a", &[]))
        .await
        .expect("create");
    let between = server.resource_version();
    server
        .put_object("secrets", json!({"metadata": {"name": "b"}}))
        .expect("seed");
    (server, secrets, between)
}

#[tokio::test]
async fn a_watch_from_before_an_outage_is_expired_with_the_real_status_body() {
    let (server, secrets, before) = two_secrets_and_the_version_between().await;
    server.begin_outage().await;
    server.end_outage();

    let mut stream = secrets
        .watch(&WatchParams::default(), &before.to_string())
        .await
        .expect("the watch itself is answered")
        .boxed();
    match stream.try_next().await.expect("an event") {
        Some(WatchEvent::Error(status)) => {
            assert_eq!((status.code, status.reason.as_str()), (410, "Expired"));
            assert!(
                status.message.starts_with("too old resource version"),
                "{}",
                status.message
            );
        }
        other => panic!("expected a 410 Expired event, got {other:?}"),
    }
}

#[tokio::test]
async fn an_exact_list_of_a_compacted_version_is_410_and_a_current_one_is_served() {
    let (server, secrets, old) = two_secrets_and_the_version_between().await;
    server.compact();

    let err = secrets
        .list(
            &ListParams::default()
                .at(&old.to_string())
                .matching(kube::api::VersionMatch::Exact),
        )
        .await
        .expect_err("compacted");
    let status = api_err(err);
    assert_eq!((status.code, status.reason.as_str()), (410, "Expired"));
    assert!(
        status.message.contains("too old resource version"),
        "{}",
        status.message
    );

    let now = server.resource_version().to_string();
    let list = secrets
        .list(
            &ListParams::default()
                .at(&now)
                .matching(kube::api::VersionMatch::Exact),
        )
        .await
        .expect("a version still held");
    assert_eq!(list.items.len(), 2);
}

#[tokio::test]
async fn write_latency_slows_writes_and_leaves_reads_fast() {
    let server = server().await;
    let secrets: Api<Secret> = Api::namespaced(no_retry_client(&server), "default");
    server.set_write_latency(Duration::from_millis(200));
    let started = std::time::Instant::now();
    secrets
        .create(&PostParams::default(), &secret("slow", &[]))
        .await
        .expect("create");
    assert!(started.elapsed() >= Duration::from_millis(200));
    let started = std::time::Instant::now();
    secrets.get("slow").await.expect("get");
    assert!(
        started.elapsed() < Duration::from_millis(200),
        "a read waits for no etcd write"
    );
}

#[tokio::test]
async fn dropped_watches_end_and_a_watcher_resumes_without_a_relist() {
    let server = server().await;
    let client = server.client();
    let secrets: Api<Secret> = Api::namespaced(client, "default");
    let (reader, writer) = reflector::store();
    let stream = reflector(writer, watcher(secrets.clone(), watcher::Config::default()))
        .default_backoff()
        .applied_objects();
    tokio::spawn(stream.for_each(|_| async {}));
    tokio::time::timeout(Duration::from_secs(5), reader.wait_until_ready())
        .await
        .expect("synced in time")
        .expect("synced");
    let watches = server.count_requests(|r| r.verb == Verb::Watch && r.resource == "secrets");
    let lists = server.count_requests(|r| r.verb == Verb::List && r.resource == "secrets");

    server.drop_watches();
    eventually("watch started again", || {
        server.count_requests(|r| r.verb == Verb::Watch && r.resource == "secrets") > watches
    })
    .await;
    secrets
        .create(&PostParams::default(), &secret("after", &[]))
        .await
        .expect("create");
    eventually("seen through the new watch", || reader.state().len() == 1).await;
    assert_eq!(
        server.count_requests(|r| r.verb == Verb::List && r.resource == "secrets"),
        lists,
        "a dropped watch resumes from its version: no new list"
    );
}

#[tokio::test]
async fn requests_are_counted_per_client() {
    let server = server().await;
    let mut config = server.config();
    config.default_retry = false;
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_static("builder/1.0 (controllers)"),
    ));
    let plain: Api<Secret> =
        Api::namespaced(Client::try_from(config.clone()).expect("client"), "default");
    config.auth_info.impersonate = Some("system:serviceaccount:ios:builder".into());
    let tenant: Api<Secret> = Api::namespaced(Client::try_from(config).expect("client"), "default");
    server.clear_request_log();
    plain
        .create(&PostParams::default(), &secret("a", &[]))
        .await
        .expect("create");
    plain.get("a").await.expect("get");
    tenant.get("a").await.expect("get as the tenant");

    let counts = server.requests_by_client(|r| r.verb != Verb::Discovery);
    assert_eq!(counts.get("system:serviceaccount:ios:builder"), Some(&1));
    assert_eq!(
        counts.get("builder/1.0 (controllers)"),
        Some(&2),
        "{counts:?}"
    );
    assert_eq!(counts.len(), 2, "{counts:?}");
    assert_eq!(
        server
            .requests_by_client(|r| r.verb.is_write())
            .values()
            .sum::<usize>(),
        1
    );
}

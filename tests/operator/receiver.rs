//! The receiver over real HTTP against the fake API server: one test per row of the receiver's answer
//! table (docs/RESOURCES.md), plus concurrency, secret rotation, API-server outages and `send`.

use crate::harness::*;
use std::time::Duration;
use testkit::apiserver::{Fault, FaultRule, Verb};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const RULE_ALL: &str = "    - name: notify\n      match: {eventTypes: [BUILD_UPLOAD_STATE_UPDATED]}\n      http: {urlSecretRef: {name: slack, key: url}}\n";

async fn setup(extra: &[&str]) -> (testkit::apiserver::FakeApiServer, Operator) {
    let api = fake_api().await;
    put_secret(&api, "hook-secret", &[("secret", WEBHOOK_SECRET)]).await;
    route_with(&api, "release", RULE_ALL, "").await;
    let op = Operator::start(&api, extra).await;
    (api, op)
}

fn delivery_creates(api: &testkit::apiserver::FakeApiServer) -> usize {
    api.count_requests(|r| r.verb == Verb::Create && r.resource == "webhookdeliveries")
}

#[tokio::test]
async fn new_valid_event_is_accepted_and_recorded_once() {
    let (api, op) = setup(&[]).await;
    let (status, body) = op
        .post("release", &fixture("build-upload-complete"), WEBHOOK_SECRET)
        .await;
    assert_eq!(status, 202, "{body}");
    let name = body["delivery"].as_str().unwrap().to_owned();
    let stored = deliveries(&api);
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].metadata.name.as_deref(), Some(name.as_str()));
    assert_eq!(
        stored[0].spec.payload.as_bytes(),
        fixture("build-upload-complete").as_slice()
    );
    assert_eq!(
        stored[0].spec.request_id.as_deref(),
        Some("2f1e5c8a-0000-4000-8000-000000000001")
    );
    op.stop().await;
}

#[tokio::test]
async fn same_event_again_answers_200_with_the_same_name() {
    let (api, op) = setup(&[]).await;
    let body = fixture("build-upload-complete");
    let (first, a) = op.post("release", &body, WEBHOOK_SECRET).await;
    let (second, b) = op.post("release", &body, WEBHOOK_SECRET).await;
    assert_eq!((first, second), (202, 200));
    assert_eq!(a["delivery"], b["delivery"]);
    assert_eq!(b["status"], "duplicate");
    assert_eq!(deliveries(&api).len(), 1);
    op.stop().await;
}

#[tokio::test]
async fn hundred_concurrent_copies_make_one_delivery_and_hundred_successes() {
    let (api, op) = setup(&[]).await;
    let body = fixture("build-upload-failed");
    let sends = (0..100).map(|_| op.post("release", &body, WEBHOOK_SECRET));
    let answers = futures::future::join_all(sends).await;
    let accepted = answers.iter().filter(|(s, _)| *s == 202).count();
    let duplicates = answers.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!((accepted, duplicates), (1, 99), "{answers:?}");
    let names: std::collections::BTreeSet<_> = answers
        .iter()
        .map(|(_, b)| b["delivery"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names.len(), 1);
    assert_eq!(deliveries(&api).len(), 1);
    op.stop().await;
}

#[tokio::test]
async fn other_methods_get_405_and_record_nothing() {
    let (api, op) = setup(&[]).await;
    for method in [
        reqwest::Method::GET,
        reqwest::Method::PUT,
        reqwest::Method::DELETE,
    ] {
        let resp = reqwest::Client::new()
            .request(method.clone(), format!("{}/hooks/{NS}/release", op.url))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 405, "{method}");
    }
    assert!(deliveries(&api).is_empty());
    assert_eq!(delivery_creates(&api), 0);
    op.stop().await;
}

#[tokio::test]
async fn unknown_route_gets_404_without_an_api_call() {
    let (api, op) = setup(&[]).await;
    api.clear_request_log();
    let (status, _) = op
        .post("nope", &fixture("build-upload-complete"), WEBHOOK_SECRET)
        .await;
    assert_eq!(status, 404);
    let (status, _) = op
        .post_raw("/hooks/other-ns/release", fixture("webhook-ping"), None)
        .await;
    assert_eq!(status, 404);
    let route_lookups = api.count_requests(|r| {
        r.resource == "webhookroutes" && matches!(r.verb, Verb::Get | Verb::List)
    });
    assert_eq!(route_lookups, 0, "the route store, not the API, answers");
    assert!(deliveries(&api).is_empty());
    op.stop().await;
}

#[tokio::test]
async fn oversized_body_gets_413() {
    let (api, op) = setup(&["--max-body-bytes", "1024"]).await;
    let mut big = fixture("build-upload-complete");
    big.extend(std::iter::repeat_n(b' ', 2048));
    let (status, _) = op.post("release", &big, WEBHOOK_SECRET).await;
    assert_eq!(status, 413);
    assert!(deliveries(&api).is_empty());
    op.stop().await;
}

#[tokio::test]
async fn body_sent_too_slowly_gets_408() {
    let (api, op) = setup(&["--body-timeout", "300ms"]).await;
    let addr = op.url.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /hooks/{NS}/release HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"data\""
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&answer[..n]);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(deliveries(&api).is_empty());
    op.stop().await;
}

#[tokio::test]
async fn missing_malformed_or_wrong_signatures_get_401_without_a_hint() {
    let (api, op) = setup(&[]).await;
    let body = fixture("build-upload-complete");
    let wrong = asc_webhook_operator::asc::signature::sign(b"another secret", &body);
    let mut bodies = vec![];
    for header in [
        None,
        Some("hmacsha256=zz"),
        Some("sha1=abc"),
        Some(wrong.as_str()),
    ] {
        let (status, answer) = op
            .post_raw(&format!("/hooks/{NS}/release"), body.clone(), header)
            .await;
        assert_eq!(status, 401, "{header:?}");
        bodies.push(answer);
    }
    assert!(
        bodies.windows(2).all(|w| w[0] == w[1]),
        "every refusal reads the same: {bodies:?}"
    );
    assert!(deliveries(&api).is_empty());
    assert_eq!(delivery_creates(&api), 0);
    let metrics = op.metrics().await;
    assert!(
        metrics.contains(&format!(
            "asc_webhook_receiver_signature_failures_total{{route=\"{NS}/release\"}} 4"
        )),
        "{metrics}"
    );
    op.stop().await;
}

#[tokio::test]
async fn signed_body_that_is_not_an_event_gets_400_with_the_reason() {
    let (api, op) = setup(&[]).await;
    let (status, body) = op
        .post("release", b"{\"data\": {\"type\": \"x\"}}", WEBHOOK_SECRET)
        .await;
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap().contains("data.id"),
        "{body}"
    );
    let (status, body) = op.post("release", b"not json", WEBHOOK_SECRET).await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("JSON"), "{body}");
    assert!(deliveries(&api).is_empty());
    op.stop().await;
}

#[tokio::test]
async fn unknown_type_is_accepted_and_ends_no_match() {
    let (api, op) = setup(&[]).await;
    let body = br#"{"data":{"type":"backgroundAssetVersionStateUpdated","id":"bg-1","version":1,"attributes":{"newState":"SHINY_NEW"}}}"#;
    let (status, answer) = op.post("release", body, WEBHOOK_SECRET).await;
    assert_eq!(status, 202);
    let name = answer["delivery"].as_str().unwrap().to_owned();
    let phase = eventually("the delivery ends NoMatch", Duration::from_secs(10), || {
        let d = get_delivery(&api, &name);
        async move {
            d.and_then(|d| d.status)
                .map(|s| s.phase)
                .filter(|p| p.is_terminal())
        }
    })
    .await;
    assert_eq!(
        phase,
        asc_webhook_operator::resources::delivery::Phase::NoMatch
    );
    op.stop().await;
}

#[tokio::test]
async fn missing_route_secret_gets_503_with_retry_after() {
    let api = fake_api().await;
    route_with(&api, "release", RULE_ALL, "").await;
    let op = Operator::start(&api, &[]).await;
    let resp = reqwest::Client::new()
        .post(format!("{}/hooks/{NS}/release", op.url))
        .header(
            asc_webhook_operator::asc::signature::HEADER,
            asc_webhook_operator::asc::signature::sign(b"x", b"{}"),
        )
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "5");
    assert!(deliveries(&api).is_empty());
    op.stop().await;
}

#[tokio::test]
async fn api_server_down_gets_503_and_the_same_request_succeeds_after_recovery() {
    let (api, op) = setup(&[]).await;
    let body = fixture("app-version-in-review");
    // Warm the secret cache, then make every delivery write fail.
    op.post("release", &fixture("webhook-ping"), WEBHOOK_SECRET)
        .await;
    api.add_fault(
        FaultRule::new(Fault::Status(503))
            .verb(Verb::Create)
            .resource("webhookdeliveries")
            .times(usize::MAX),
    );
    let (status, answer) = op.post("release", &body, WEBHOOK_SECRET).await;
    assert_eq!(status, 503, "{answer}");
    api.clear_faults();
    api.set_refuse_connections(true);
    let (status, _) = op.post("release", &body, WEBHOOK_SECRET).await;
    assert_eq!(status, 503);
    api.set_refuse_connections(false);
    let (status, answer) = op.post("release", &body, WEBHOOK_SECRET).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(
        deliveries(&api)
            .iter()
            .filter(|d| d.spec.event_type != "webhookPingCreated")
            .count(),
        1
    );
    op.stop().await;
}

#[tokio::test]
async fn too_many_failed_signatures_on_a_route_get_429() {
    let (api, op) = setup(&["--failed-signatures-per-minute", "3"]).await;
    let body = fixture("build-upload-complete");
    let mut codes = vec![];
    for _ in 0..5 {
        codes.push(op.post("release", &body, "wrong").await.0);
    }
    assert_eq!(codes, vec![401, 401, 401, 429, 429]);
    // Valid deliveries still get through while the route is being hammered.
    let (status, _) = op.post("release", &body, WEBHOOK_SECRET).await;
    assert_eq!(status, 202);
    assert_eq!(deliveries(&api).len(), 1);
    op.stop().await;
}

#[tokio::test]
async fn rotated_secret_applies_without_a_restart() {
    let (api, op) = setup(&["--secret-cache-ttl", "1s"]).await;
    assert_eq!(
        op.post("release", &fixture("webhook-ping"), WEBHOOK_SECRET)
            .await
            .0,
        202
    );
    put_secret(&api, "hook-secret", &[("secret", "the-new-secret")]).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let body = fixture("build-upload-complete");
    assert_eq!(
        op.post("release", &body, WEBHOOK_SECRET).await.0,
        401,
        "the old secret is refused"
    );
    assert_eq!(
        op.post("release", &body, "the-new-secret").await.0,
        202,
        "the new one accepted"
    );
    op.stop().await;
}

#[tokio::test]
async fn send_posts_every_fixture_and_gets_202() {
    let (api, op) = setup(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, format!("{WEBHOOK_SECRET}\n")).unwrap();
    let url = format!("{}/hooks/{NS}/release", op.url);
    let mut sent = 0;
    for entry in
        std::fs::read_dir(std::path::Path::new(ROOT).join("tests/fixtures/asc/events")).unwrap()
    {
        let path = entry.unwrap().path();
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_asc-webhook-operator"))
            .args(["send", "--url", &url, "--secret-file"])
            .arg(&secret_file)
            .arg("--event")
            .arg(&path)
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.starts_with("202 "),
            "{path:?}: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        sent += 1;
    }
    assert_eq!(sent, 10);
    assert_eq!(deliveries(&api).len(), 10);
    op.stop().await;
}

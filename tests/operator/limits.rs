//! Hostile and oversized input against the whole operator: stalled uploads cannot exhaust memory, and a
//! signed event that can never be stored gets one definite answer instead of a retry loop.

use crate::harness::*;
use std::time::{Duration, Instant};
use testkit::apiserver::{FakeApiServer, Verb};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const RULE: &str = "    - name: notify\n      match: {eventTypes: [BUILD_UPLOAD_STATE_UPDATED]}\n      http: {urlSecretRef: {name: slack, key: url}}\n";
/// The default `--max-body-bytes`.
const MAX_BODY: usize = 64 * 1024;
/// The default `--max-inflight-body-bytes`, of which seven eighths are open to large bodies.
const BUDGET: usize = 8 * 1024 * 1024;

async fn stage() -> FakeApiServer {
    let api = fake_api().await;
    put_secret(&api, "hook-secret", &[("secret", WEBHOOK_SECRET)]).await;
    route_with(&api, "release", RULE, "").await;
    api
}

fn delivery_creates(api: &FakeApiServer) -> usize {
    api.count_requests(|r| r.verb == Verb::Create && r.resource == "webhookdeliveries")
}

/// A signed ping whose body is `quotes` escaped quotes: each `\"` (2 bytes) becomes `\\\"` (4 bytes)
/// once the body is a JSON string in `spec.payload`.
fn quote_heavy_ping(id: &str, quotes: usize) -> Vec<u8> {
    format!(
        r#"{{"data":{{"type":"webhookPingCreated","id":"{id}","version":1,"attributes":{{"timestamp":"2026-01-01T00:00:00Z","note":"{}"}}}}}}"#,
        "\\\"".repeat(quotes)
    )
    .into_bytes()
}

/// Opens a connection and sends the head of a max-size upload.
async fn start_upload(addr: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /hooks/{NS}/release HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {MAX_BODY}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
}

/// Whatever the server has answered on `stream` so far.
async fn answered(stream: &mut TcpStream) -> Option<String> {
    let mut buf = vec![0u8; 1024];
    match tokio::time::timeout(Duration::from_millis(20), stream.read(&mut buf)).await {
        Ok(Ok(n)) if n > 0 => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        _ => None,
    }
}

/// The operator runs as its own process here: in-process, VmRSS would also count the fake API server,
/// the 200 client connections and every other test of this binary running in parallel.
#[tokio::test]
async fn two_hundred_stalled_max_size_uploads_stay_within_budget_and_events_still_get_in() {
    let api = stage().await;
    let dir = tempfile::tempdir().unwrap();
    // The body deadline outlasts the test, so every upload stays stalled while memory is measured.
    let op = Process::start(&api, dir.path(), &["--body-timeout", "120s"]).await;
    let addr = op.url.trim_start_matches("http://").to_owned();
    // Warm up: the API connection, the secret cache and the allocator's first arenas.
    let (status, _) = op
        .post("release", &fixture("webhook-ping"), WEBHOOK_SECRET)
        .await;
    assert_eq!(status, 202);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = op.rss_bytes();

    let mut uploads = Vec::new();
    for _ in 0..200 {
        uploads.push(start_upload(&addr).await);
    }
    // Everything but the last byte, slowly, so each upload holds a whole body's worth of memory.
    let chunk = vec![b' '; 8 * 1024];
    let mut sent = 0;
    while sent < MAX_BODY - 1 {
        let n = chunk.len().min(MAX_BODY - 1 - sent);
        for upload in &mut uploads {
            // Refused uploads are closed by the server: their writes may fail.
            let _ = upload.write_all(&chunk[..n]).await;
        }
        sent += n;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut busy = 0;
    let mut held = 0;
    for upload in &mut uploads {
        match answered(upload).await {
            Some(text) => {
                assert!(text.starts_with("HTTP/1.1 503"), "{text}");
                assert!(
                    text.to_ascii_lowercase().contains("retry-after: 5"),
                    "{text}"
                );
                busy += 1;
            }
            None => held += 1,
        }
    }
    let stalled = op.rss_bytes();

    let started = Instant::now();
    let (status, body) = op
        .post("release", &fixture("build-upload-complete"), WEBHOOK_SECRET)
        .await;
    let latency = started.elapsed();
    assert_eq!(status, 202, "{body}");
    let after = op.rss_bytes();
    let growth = stalled.max(after).saturating_sub(before);
    eprintln!(
        "stalled uploads: {held} held, {busy} answered 503; RSS {:.1} MiB -> {:.1} MiB (growth {:.1} MiB); valid event 202 in {latency:?}",
        before as f64 / 1048576.0,
        stalled.max(after) as f64 / 1048576.0,
        growth as f64 / 1048576.0
    );
    // Seven eighths of the budget admit 112 max-size bodies; the rest were refused unread.
    assert_eq!(held, BUDGET * 7 / 8 / MAX_BODY);
    assert_eq!(busy, 200 - held);
    assert!(growth < 32 * 1024 * 1024, "RSS grew by {growth} bytes");
    drop(uploads);
    op.kill().await;
}

#[tokio::test]
async fn a_signed_event_too_large_to_store_gets_413_before_any_write_every_time() {
    let api = stage().await;
    let op = Operator::start(&api, &["--max-body-bytes", "1048576"]).await;
    // 900 KiB of body; about 1.8 MiB as a JSON string inside the delivery.
    let body = quote_heavy_ping("too-big-1", 460_000);
    assert!(body.len() < 1_000_000);
    let mut answers = Vec::new();
    for _ in 0..3 {
        answers.push(op.post("release", &body, WEBHOOK_SECRET).await);
    }
    let (status, reason) = &answers[0];
    assert_eq!(*status, 413, "{reason}");
    let text = reason["error"].as_str().unwrap();
    assert!(
        text.contains("cannot be stored") && text.contains("1572864"),
        "{text}"
    );
    assert!(answers.iter().all(|a| a == &answers[0]), "{answers:?}");
    assert_eq!(delivery_creates(&api), 0, "refused before writing");
    assert!(deliveries(&api).is_empty());
    assert!(op.metrics().await.contains(
        r#"asc_webhook_receiver_requests_total{route="ios/release",outcome="unstorable"} 3"#
    ));
    op.stop().await;
}

#[tokio::test]
async fn an_api_server_size_refusal_is_a_final_413_not_a_503() {
    let api = stage().await;
    // An operator told the API server stores more than it does: the server's refusal decides.
    let op = Operator::start(
        &api,
        &[
            "--max-body-bytes",
            "1048576",
            "--max-object-bytes",
            "4000000",
        ],
    )
    .await;
    let body = quote_heavy_ping("too-big-2", 460_000);
    let mut answers = Vec::new();
    for _ in 0..3 {
        answers.push(op.post("release", &body, WEBHOOK_SECRET).await);
    }
    let (status, reason) = &answers[0];
    assert_eq!(*status, 413, "{reason}");
    assert!(
        reason["error"]
            .as_str()
            .unwrap()
            .contains("request is too large"),
        "{reason}"
    );
    assert!(answers.iter().all(|a| a == &answers[0]), "{answers:?}");
    assert!(deliveries(&api).is_empty(), "nothing stored");
    op.stop().await;
}

#[tokio::test]
async fn headers_that_do_not_arrive_in_time_close_the_connection() {
    let api = stage().await;
    let op = Operator::start(&api, &["--header-read-timeout", "300ms"]).await;
    let addr = op.url.trim_start_matches("http://").to_owned();
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    stream
        .write_all(b"POST /hooks/ios/release HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .expect("the server closes the connection")
        .unwrap_or(0);
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(n == 0 || text.starts_with("HTTP/1.1 408"), "{text}");
    let (status, _) = op
        .post("release", &fixture("webhook-ping"), WEBHOOK_SECRET)
        .await;
    assert_eq!(status, 202, "a prompt request is served");
    op.stop().await;
}

/// Sends one request on `stream` and reads its answer's status line; `None` when the server closed the
/// connection instead.
async fn exchange(stream: &mut TcpStream) -> Option<String> {
    let request = b"POST /hooks/ios/nowhere HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n";
    stream.write_all(request).await.ok()?;
    let mut buf = [0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .expect("an answer or a close")
        .ok()?;
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    text.lines()
        .next()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
}

/// A sender (Apple, an Ingress, a load balancer) keeps idle connections for its next request; were the
/// receiver to close one at the moment the next POST is sent on it, that request would be lost.
#[tokio::test]
async fn a_kept_alive_connection_outlives_the_header_timeout_and_closes_after_the_keep_alive_time()
{
    let api = stage().await;
    let op = Operator::start(
        &api,
        &[
            "--header-read-timeout",
            "300ms",
            "--keep-alive-timeout",
            "2s",
        ],
    )
    .await;
    let addr = op.url.trim_start_matches("http://").to_owned();
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    let first = exchange(&mut stream).await.expect("answered");
    assert!(first.starts_with("HTTP/1.1 404"), "{first}");
    // Idle for three header timeouts: still open, and the next request is served on it.
    tokio::time::sleep(Duration::from_millis(900)).await;
    let second = exchange(&mut stream).await;
    assert_eq!(
        second.as_deref(),
        Some(first.as_str()),
        "served on the kept connection"
    );
    // Idle past the keep-alive time: the receiver closes it.
    let mut buf = [0u8; 64];
    let started = Instant::now();
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
        .await
        .expect("closed within the keep-alive time")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    op.stop().await;
}

#[tokio::test]
async fn connections_over_the_limit_are_closed_and_counted() {
    let api = stage().await;
    let op = Operator::start(&api, &["--max-connections", "2"]).await;
    let addr = op.url.trim_start_matches("http://").to_owned();
    let held = [
        TcpStream::connect(&addr).await.unwrap(),
        TcpStream::connect(&addr).await.unwrap(),
    ];
    // Give the server time to accept both before the third arrives.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut third = TcpStream::connect(&addr).await.unwrap();
    let _ = third
        .write_all(b"GET /hooks/ios/release HTTP/1.1\r\nhost: x\r\n\r\n")
        .await;
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), third.read(&mut buf))
        .await
        .expect("closed at once")
        .unwrap_or(0);
    assert_eq!(n, 0, "no answer over the limit");
    assert!(
        op.metrics()
            .await
            .contains("asc_webhook_receiver_refused_connections_total 1"),
    );
    drop(held);
    let body = fixture("webhook-ping");
    let signed = asc_webhook_operator::asc::signature::sign(WEBHOOK_SECRET.as_bytes(), &body);
    eventually("a slot is free again", Duration::from_secs(5), || {
        let request = reqwest::Client::new()
            .post(format!("{}/hooks/{NS}/release", op.url))
            .header(asc_webhook_operator::asc::signature::HEADER, &signed)
            .body(body.clone());
        // Until the server has seen the held connections close, a new one may still be refused.
        async move {
            let status = request.send().await.ok()?.status();
            (status == 202).then_some(())
        }
    })
    .await;
    op.stop().await;
}

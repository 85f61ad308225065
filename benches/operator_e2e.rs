//! End-to-end latency and footprint of the real operator binary against the in-process fake API server.
//!
//! `cargo bench --bench operator_e2e` (the bench profile builds the binary with the release settings).
//!
//! 1. Footprint: starts the binary with 1,000 `WebhookRoute`s in the store and reads its resident memory
//!    (`VmRSS`) once idle; then pushes 10,000 deliveries through it and reads it again.
//! 2. Latency: 500 signed POSTs, each for a new event that a rule turns into a Job; the time from the
//!    start of the POST to the Job's ADDED event on a watch, p50/p99.
//! 3. Burst: 2,000 distinct events to Job rules, 50 in flight; Jobs per second until the last exists, and
//!    the peak resident memory meanwhile.
//!
//! The fake API server answers writes in microseconds from memory; a real API server adds its own write
//! latency (etcd commit, admission) to every step, typically a few milliseconds per write.

use asc_webhook_operator::asc::signature;
use futures::StreamExt;
use hdrhistogram::Histogram;
use k8s_openapi::api::batch::v1::Job;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};
use testkit::apiserver::{FakeApiServer, FakeApiServerOptions, Verb};

const NS: &str = "bench";
const SECRET: &str = "bench-webhook-secret";
const ROUTES: usize = 1_000;
const DELIVERIES: usize = 10_000;
const LATENCY_EVENTS: usize = 500;
const BURST: usize = 2_000;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn route(name: &str) -> serde_json::Value {
    json!({
        "apiVersion": "asc.webhooks.dev/v1alpha1", "kind": "WebhookRoute",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "secretRef": {"name": "hook", "key": "secret"},
            "deliveryHistoryLimit": 10000,
            "rules": [{
                "name": "build",
                "match": {"eventTypes": ["BUILD_UPLOAD_STATE_UPDATED"], "newStates": ["COMPLETE"]},
                "enrich": "Never",
                "job": {"template": {"spec": {"template": {"spec": {"restartPolicy": "Never",
                    "containers": [{"name": "lane", "image": "busybox", "command": ["true"]}]}}}}}
            }]
        }
    })
}

fn event(id: &str, new_state: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"data": {"type": "buildUploadStateUpdated", "id": id, "version": 1,
        "attributes": {"oldState": "PROCESSING", "newState": new_state},
        "relationships": {"instance": {"data": {"type": "buildUploads", "id": format!("b-{id}")}}}}}))
    .unwrap_or_default()
}

async fn post(client: &reqwest::Client, url: &str, body: Vec<u8>) -> u16 {
    let sig = signature::sign(SECRET.as_bytes(), &body);
    match client
        .post(url)
        .header(signature::HEADER, sig)
        .body(body)
        .send()
        .await
    {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

#[tokio::main]
async fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let opts = FakeApiServerOptions {
        namespaces: vec!["default".into(), NS.into()],
        history_limit: 50_000,
        ..Default::default()
    };
    let api = FakeApiServer::start(opts.crd_dir(root.join("crds"))).await;
    // A real API server's writes wait for etcd (≈ 5 ms with fsync); the fake answers in microseconds.
    let write_latency = std::env::var("E2E_WRITE_LATENCY_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5u64);
    api.set_write_latency(Duration::from_millis(write_latency));
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    api.put_object(
        "secrets",
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hook", "namespace": NS},
        "stringData": {"secret": SECRET}}),
    )
    .expect("secret");
    for i in 0..ROUTES {
        api.put_object("webhookroutes", route(&format!("route-{i}")))
            .expect("route");
    }

    let (public, admin) = (free_port(), free_port());
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_asc-webhook-operator"))
        .args([
            "run",
            "--listen-addr",
            &format!("127.0.0.1:{public}"),
            "--admin-addr",
            &format!("127.0.0.1:{admin}"),
        ])
        .args(["--log-filter", "warn"])
        .env("KUBECONFIG", &kubeconfig)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("operator binary starts");
    let pid = child.id();
    let http = reqwest::Client::new();
    let ready = format!("http://127.0.0.1:{admin}/readyz");
    let started = Instant::now();
    while !http
        .get(&ready)
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "operator never became ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Let the route controller settle every route's status before measuring "idle".
    tokio::time::sleep(Duration::from_secs(8)).await;
    let idle = rss_kib(pid);
    eprintln!(
        "idle with {ROUTES} routes: {idle} KiB after {:.1}s",
        started.elapsed().as_secs_f64()
    );

    // Latency: POST → Job ADDED, observed on a watch of Jobs.
    let jobs: Api<Job> = Api::namespaced(api.client(), NS);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    tokio::spawn(async move {
        let mut stream = watcher(jobs, watcher::Config::default())
            .applied_objects()
            .boxed();
        while let Some(Ok(job)) = stream.next().await {
            let delivery = job
                .metadata
                .labels
                .unwrap_or_default()
                .remove("asc.webhooks.dev/delivery")
                .unwrap_or_default();
            let _ = tx.send((delivery, Instant::now()));
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut latency = Histogram::<u64>::new(3).expect("histogram");
    api.clear_request_log();
    let url = format!("http://127.0.0.1:{public}/hooks/{NS}/route-0");
    for i in 0..LATENCY_EVENTS {
        let t0 = Instant::now();
        let status = post(&http, &url, event(&format!("lat-{i}"), "COMPLETE")).await;
        assert_eq!(status, 202, "event {i}");
        let (_, seen) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("Job appears")
            .expect("watch alive");
        latency
            .record(seen.duration_since(t0).as_micros() as u64)
            .ok();
    }

    eprintln!("latency measured over {} events", latency.len());
    let latency_calls = calls_per_delivery(&api, latency.len() as usize);
    api.clear_request_log();

    // Burst: 2,000 distinct events that a Job rule turns into Jobs, posted 50 at a time; time until every
    // Job exists, and the highest RSS meanwhile.
    let burst_start = Instant::now();
    let mut burst_rss = rss_kib(pid);
    let mut accepted = 0;
    for chunk in (0..BURST).collect::<Vec<_>>().chunks(50) {
        let sends = chunk.iter().map(|i| {
            let http = http.clone();
            let url = format!("http://127.0.0.1:{public}/hooks/{NS}/route-{}", i % ROUTES);
            async move { post(&http, &url, event(&format!("burst-{i}"), "COMPLETE")).await }
        });
        accepted += futures::future::join_all(sends)
            .await
            .into_iter()
            .filter(|s| *s == 202)
            .count();
        burst_rss = burst_rss.max(rss_kib(pid));
    }
    let mut seen = 0;
    while seen < accepted {
        match tokio::time::timeout(Duration::from_secs(1), rx.recv()).await {
            Ok(Some(_)) => seen += 1,
            Ok(None) => break,
            Err(_) => {
                burst_rss = burst_rss.max(rss_kib(pid));
                assert!(
                    burst_start.elapsed() < Duration::from_secs(300),
                    "only {seen} of {accepted} burst Jobs appeared"
                );
            }
        }
        if seen % 100 == 0 {
            burst_rss = burst_rss.max(rss_kib(pid));
        }
    }
    let burst_secs = burst_start.elapsed().as_secs_f64();
    burst_rss = burst_rss.max(rss_kib(pid));
    eprintln!("burst: {seen} Jobs in {burst_secs:.1}s");
    // Let the route controller's status writes of the burst land before counting them.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let burst_calls = calls_per_delivery(&api, seen);
    // Load: 10,000 deliveries across the routes (no rule matches, so each ends NoMatch).
    let load_start = Instant::now();
    let mut posted = 0;
    for chunk in (0..DELIVERIES).collect::<Vec<_>>().chunks(50) {
        let sends = chunk.iter().map(|i| {
            let http = http.clone();
            let url = format!("http://127.0.0.1:{public}/hooks/{NS}/route-{}", i % ROUTES);
            async move { post(&http, &url, event(&format!("load-{i}"), "PROCESSING")).await }
        });
        posted += futures::future::join_all(sends)
            .await
            .into_iter()
            .filter(|s| *s == 202)
            .count();
    }
    let load_secs = load_start.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after = rss_kib(pid);
    let _ = child.kill();
    let _ = child.wait();

    let binary = std::fs::metadata(env!("CARGO_BIN_EXE_asc-webhook-operator"))
        .map(|m| m.len())
        .unwrap_or(0);
    println!(
        "operator_e2e (fake API server in-process, every write delayed {write_latency} ms as etcd would; E2E_WRITE_LATENCY_MS)"
    );
    println!("| measure | value | goal |");
    println!("|---|---|---|");
    println!(
        "| signed POST → Job exists, p50 | {:.2} ms | < 50 ms |",
        latency.value_at_quantile(0.5) as f64 / 1000.0
    );
    println!(
        "| signed POST → Job exists, p99 | {:.2} ms | |",
        latency.value_at_quantile(0.99) as f64 / 1000.0
    );
    println!("| events measured | {} | ≥ 500 |", latency.len());
    println!(
        "| RSS idle, {ROUTES} routes | {:.1} MiB | < 25 MiB |",
        idle as f64 / 1024.0
    );
    println!(
        "| burst of {BURST} events to a Job rule: Jobs/s | {:.0} ({seen} Jobs in {burst_secs:.1} s) | ≥ 50 |",
        seen as f64 / burst_secs
    );
    println!(
        "| burst: peak RSS | {:.1} MiB | ≤ 64 MiB |",
        burst_rss as f64 / 1024.0
    );
    println!(
        "| RSS after {posted} deliveries ({:.0}/s) | {:.1} MiB | |",
        posted as f64 / load_secs,
        after as f64 / 1024.0
    );
    println!(
        "| binary size (bench profile = release settings) | {:.1} MiB | < 25 MiB |",
        binary as f64 / 1_048_576.0
    );
    println!("\nAPI requests per delivery, latency phase (one event at a time)\n{latency_calls}");
    println!("API requests per delivery, burst (2,000 events, 50 in flight)\n{burst_calls}");
}

/// The request log as a table of requests per delivery, by client (User-Agent), verb and resource, with
/// the conflicts (409) among them.
fn calls_per_delivery(api: &FakeApiServer, deliveries: usize) -> String {
    use std::collections::BTreeMap;
    let mut rows: BTreeMap<(String, String), (usize, usize)> = BTreeMap::new();
    for r in api.request_log() {
        if r.verb == Verb::Discovery || r.verb == Verb::Watch {
            continue;
        }
        let what = match r.subresource.as_str() {
            "" => format!("{:?} {}", r.verb, r.resource),
            sub => format!("{:?} {}/{sub}", r.verb, r.resource),
        };
        let row = rows.entry((r.client().to_string(), what)).or_default();
        row.0 += 1;
        row.1 += usize::from(r.status == 409);
    }
    let per = |n: usize| n as f64 / deliveries.max(1) as f64;
    let mut out =
        String::from("| client | request | per delivery | of which 409 |\n|---|---|---|---|\n");
    let (mut total, mut conflicts) = (0, 0);
    for ((client, what), (n, c)) in &rows {
        out += &format!("| {client} | {what} | {:.2} | {:.2} |\n", per(*n), per(*c));
        total += n;
        conflicts += c;
    }
    out += &format!(
        "| all | | **{:.2}** | {:.2} |\n",
        per(total),
        per(conflicts)
    );
    out
}

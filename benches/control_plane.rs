//! The operator binary against a real control plane (kube-apiserver + etcd + kube-controller-manager),
//! side by side with a bare client on the same server, and the API requests per delivery counted by the
//! API server itself.
//!
//! `E2E_KUBECONFIG=/path/admin.kubeconfig cargo bench --bench control_plane` (needs rights to apply CRDs
//! and create a namespace; it uses and then deletes namespace `asc-bench`). Without `E2E_KUBECONFIG` it
//! says so and measures nothing. There need be no kubelet: Jobs are marked complete through their status
//! subresource, as the Job controller would.
//!
//! 1. Bare client: one small create at a time (p50/p99), and 2,000 Jobs created 16 in flight (Jobs/s).
//!    1b. The same client doing what exactly-once needs, with no operator (`support/bare_pipeline.rs`):
//!    per event a delivery create, a Job create and one status apply; one at a time (delivery create →
//!    Job create, p50/p99) and 2,000 events 16 in flight (events/s), in a namespace of its own.
//! 2. Signed POST → Job exists, 200 events one at a time (p50/p99).
//! 3. A burst of 2,000 events to one Job rule, 16 senders (Jobs/s); then the same spread over 20 routes.
//! 4. Finishing: every Job marked complete, until every delivery is finished.
//! 5. Restart with those 4,200 finished deliveries: the next event → its Job, after ready.
//!
//! `E2E_CRASH_BURST=1` runs instead (after phase 1) exactly once through crashes
//! (`support/crash_burst.rs`): 400 events from 8 retrying senders, the operator SIGKILLed three times.
//!
//! Knobs, to look at one phase: `E2E_ONLY_ONE_AT_A_TIME=1` stops after phase 2, `E2E_ONLY_BURSTS=1`
//! after phase 3, `E2E_SKIP_BARE=1` leaves out phase 1, `E2E_LATENCY_EVENTS=N` sends N events in phase 2 (200), `E2E_LOG_FILTER=debug` puts the
//! operator's log at that filter on this bench's stderr, `E2E_KEEP=1` keeps the namespace.
//!
//! Requests per delivery come from `apiserver_request_total` (GET /metrics before and after each phase,
//! diffed per verb/resource/subresource, refusals such as 409 apart by their code). That metric does not
//! say which client sent a request, so the table keeps to the resources only the operator writes or reads
//! per delivery (`webhookdeliveries`,
//! `webhookroutes`, `jobs` without `jobs/status`, which the Job controller and this bench write, and
//! `events`, where the Job controller adds one `SuccessfulCreate` per Job); watches are left out.

#[path = "support/bare_pipeline.rs"]
mod bare_pipeline;
#[path = "support/crash_burst.rs"]
mod crash_burst;
#[path = "support/request_cost.rs"]
mod request_cost;
#[path = "support/request_total.rs"]
mod request_total;
#[path = "support/bench_results.rs"]
mod results;

use asc_webhook_operator::asc::signature;
use asc_webhook_operator::resources::{AscCredential, WebhookDelivery, WebhookRoute};
use futures::StreamExt;
use hdrhistogram::Histogram;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, CustomResourceExt};
use request_cost::{per_delivery, request_counts};
use results::Results;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const NS: &str = "asc-bench";
const SECRET: &str = "bench-webhook-secret";
const ROUTES: usize = 20;
const LATENCY_EVENTS: usize = 200;

/// The operator's log filter (`E2E_LOG_FILTER`, default `warn`): `debug` shows what each pass does.
fn log_filter() -> String {
    std::env::var("E2E_LOG_FILTER").unwrap_or_else(|_| "warn".into())
}

/// Events sent one at a time (`E2E_LATENCY_EVENTS`, default 200).
fn latency_events() -> usize {
    std::env::var("E2E_LATENCY_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(LATENCY_EVENTS)
}
const BURST: usize = 2_000;
const IN_FLIGHT: usize = 16;
const LABEL_DELIVERY: &str = "asc.webhooks.dev/delivery";

fn route(name: &str) -> Value {
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

fn event(id: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"data": {"type": "buildUploadStateUpdated", "id": id, "version": 1,
        "attributes": {"oldState": "PROCESSING", "newState": "COMPLETE"},
        "relationships": {"instance": {"data": {"type": "buildUploads", "id": format!("b-{id}")}}}}}))
    .unwrap_or_default()
}

/// `body` and its signature header value.
fn signed(body: Vec<u8>) -> (Vec<u8>, String) {
    let sig = signature::sign(SECRET.as_bytes(), &body);
    (body, sig)
}

/// POSTs until accepted (202) or known (200), as App Store Connect retries.
async fn post(http: &reqwest::Client, url: &str, body: Vec<u8>) {
    let (body, sig) = signed(body);
    for _ in 0..100 {
        let sent = http
            .post(url)
            .header(signature::HEADER, &sig)
            .body(body.clone())
            .send()
            .await;
        if sent.is_ok_and(|r| matches!(r.status().as_u16(), 200 | 202)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("event refused 100 times");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The operator binary, watching the bench namespace.
struct Operator {
    child: std::process::Child,
    url: String,
}

impl Operator {
    async fn start(kubeconfig: &str) -> Operator {
        let (public, admin) = (free_port(), free_port());
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_asc-webhook-operator"))
            .args(["run", "--namespace", NS, "--log-filter", &log_filter()])
            .args(["--listen-addr", &format!("127.0.0.1:{public}")])
            .args(["--admin-addr", &format!("127.0.0.1:{admin}")])
            .env("KUBECONFIG", kubeconfig)
            // Its log (stdout) only when asked for (`E2E_LOG_FILTER`), on this bench's stderr.
            .stdout(if std::env::var("E2E_LOG_FILTER").is_ok() {
                std::process::Stdio::from(std::io::stderr())
            } else {
                std::process::Stdio::null()
            })
            .spawn()
            .expect("operator binary starts");
        let http = reqwest::Client::new();
        let ready = format!("http://127.0.0.1:{admin}/readyz");
        let started = Instant::now();
        while !http
            .get(&ready)
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            assert!(started.elapsed() < Duration::from_secs(120), "never ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Operator {
            child,
            url: format!("http://127.0.0.1:{public}"),
        }
    }

    fn kill(self) {
        drop(self);
    }
}

/// An operator left running by a bench that panicked or was interrupted keeps reconciling the namespace
/// the next run recreates: every delivery then gets two passes from two processes, the second's Job create
/// and status write refused (409), which once passed for the operator's own cost. So the child never
/// outlives its handle.
impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Jobs as they appear (by delivery label) on a watch, with when.
struct JobWatch {
    seen: tokio::sync::mpsc::UnboundedReceiver<(String, Instant)>,
    latest: Arc<std::sync::Mutex<HashMap<String, Job>>>,
}

impl JobWatch {
    fn start(client: &Client) -> JobWatch {
        let jobs: Api<Job> = Api::namespaced(client.clone(), NS);
        let (tx, seen) = tokio::sync::mpsc::unbounded_channel();
        let latest: Arc<std::sync::Mutex<HashMap<String, Job>>> = Arc::default();
        let keep = latest.clone();
        tokio::spawn(async move {
            let mut stream = watcher(jobs, watcher::Config::default())
                .applied_objects()
                .boxed();
            while let Some(Ok(job)) = stream.next().await {
                let name = job.metadata.name.clone().unwrap_or_default();
                let delivery = job
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(LABEL_DELIVERY));
                let new = keep
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(name, job.clone())
                    .is_none();
                if let (true, Some(d)) = (new, delivery) {
                    let _ = tx.send((d.clone(), Instant::now()));
                }
            }
        });
        JobWatch { seen, latest }
    }

    /// Waits for `n` new Jobs; the time the last appeared.
    async fn wait(&mut self, n: usize) -> Instant {
        let mut last = Instant::now();
        for _ in 0..n {
            let (_, at) = tokio::time::timeout(Duration::from_secs(120), self.seen.recv())
                .await
                .expect("Jobs keep appearing")
                .expect("watch alive");
            last = at;
        }
        last
    }
}

/// GETs of Jobs this bench made itself (counted in the finishing phase's `GET jobs`).
static BENCH_JOB_READS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Marks `job` complete as the Job controller would (the status a 1.36 API server accepts): from the
/// watched copy, else (the Job controller set `startTime` since) from a fresh read.
async fn complete(jobs: &Api<Job>, job: &Job) {
    let name = job.metadata.name.clone().unwrap_or_default();
    let mut current = job.clone();
    for _ in 0..10 {
        let status = finished_status(&current);
        match jobs
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
            .await
        {
            Ok(_) => return,
            Err(kube::Error::Api(s)) if matches!(s.code, 409 | 422) => {
                BENCH_JOB_READS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                current = jobs.get(&name).await.expect("Job read");
            }
            Err(e) => panic!("completing Job {name}: {e}"),
        }
    }
    panic!("completing Job {name}: refused ten times");
}

fn finished_status(job: &Job) -> Value {
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let start = job
        .status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .map(|t| json!(t))
        .unwrap_or_else(|| json!(now));
    let condition = |t: &str| {
        json!({"type": t, "status": "True", "reason": "CompletionsReached",
            "lastProbeTime": now, "lastTransitionTime": now})
    };
    json!({"status": {"startTime": start, "active": 0, "ready": 0, "terminating": 0,
        "succeeded": 1, "completionTime": now, "uncountedTerminatedPods": {},
        "conditions": [condition("SuccessCriteriaMet"), condition("Complete")]}})
}

fn quantiles(h: &Histogram<u64>) -> String {
    format!(
        "{:.1} / {:.1} ms",
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0
    )
}

async fn setup(client: &Client) {
    let apply = PatchParams::apply("asc-webhook-bench").force();
    // A namespace left by an interrupted run holds its events: start empty.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let _ = namespaces.delete(NS, &DeleteParams::background()).await;
    while namespaces.get_opt(NS).await.ok().flatten().is_some() {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in [
        WebhookRoute::crd(),
        WebhookDelivery::crd(),
        AscCredential::crd(),
    ] {
        let name = crd.metadata.name.clone().unwrap_or_default();
        crds.patch(&name, &apply, &Patch::Apply(&crd))
            .await
            .expect("CRD applied");
    }
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}});
    namespaces
        .patch(NS, &apply, &Patch::Apply(&ns))
        .await
        .expect("namespace");
    let secret = json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "hook", "namespace": NS}, "stringData": {"secret": SECRET}});
    Api::<Secret>::namespaced(client.clone(), NS)
        .patch("hook", &apply, &Patch::Apply(&secret))
        .await
        .expect("secret");
    let routes: Api<WebhookRoute> = Api::namespaced(client.clone(), NS);
    for i in 0..ROUTES {
        let name = format!("route-{i}");
        routes
            .patch(&name, &apply, &Patch::Apply(&route(&name)))
            .await
            .expect("route");
    }
}

/// The bare client: one small create at a time, then 2,000 Jobs 16 in flight.
async fn bare(client: &Client) -> (Histogram<u64>, f64) {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    let mut one = Histogram::<u64>::new(3).expect("histogram");
    let latency_events = latency_events();
    for i in 0..latency_events {
        let cm: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": format!("bare-{i}"),
            "labels": {"bench": "bare"}}, "data": {"k": "v"}}))
            .expect("ConfigMap");
        let t0 = Instant::now();
        cms.create(&PostParams::default(), &cm)
            .await
            .expect("create");
        one.record(t0.elapsed().as_micros() as u64).ok();
    }
    let jobs: Api<Job> = Api::namespaced(client.clone(), NS);
    let t0 = Instant::now();
    futures::stream::iter(0..BURST)
        .for_each_concurrent(IN_FLIGHT, |i| {
            let jobs = jobs.clone();
            async move {
                let job: Job = serde_json::from_value(json!({"metadata": {"name": format!("bare-{i}"),
                    "labels": {"bench": "bare"}}, "spec": {"template": {"spec": {"restartPolicy": "Never",
                    "containers": [{"name": "lane", "image": "busybox", "command": ["true"]}]}}}}))
                .expect("Job");
                jobs.create(&PostParams::default(), &job).await.expect("create");
            }
        })
        .await;
    let rate = BURST as f64 / t0.elapsed().as_secs_f64();
    let bare = ListParams::default().labels("bench=bare");
    let background = DeleteParams::background();
    let _ = jobs.delete_collection(&background, &bare).await;
    let _ = cms.delete_collection(&background, &bare).await;
    // The garbage collector deletes the Jobs' Pods after them: wait, so that work does not land on
    // the operator's phases.
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let deadline = Instant::now() + Duration::from_secs(600);
    while pods
        .list_metadata(&ListParams::default())
        .await
        .map(|l| !l.items.is_empty())
        .unwrap_or(true)
    {
        assert!(
            Instant::now() < deadline,
            "the bare Jobs' Pods are not deleted"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    (one, rate)
}

/// A burst of `BURST` events, `IN_FLIGHT` at a time, to `routes` routes: Jobs/s.
async fn burst(op: &Operator, watch: &mut JobWatch, tag: &str, routes: usize) -> f64 {
    let http = reqwest::Client::new();
    let t0 = Instant::now();
    futures::stream::iter(0..BURST)
        .for_each_concurrent(IN_FLIGHT, |i| {
            let (http, url) = (
                http.clone(),
                format!("{}/hooks/{NS}/route-{}", op.url, i % routes),
            );
            async move { post(&http, &url, event(&format!("{tag}-{i}"))).await }
        })
        .await;
    let last = watch.wait(BURST).await;
    BURST as f64 / last.duration_since(t0).as_secs_f64()
}

/// Phase 2: `latency_events()` signed POSTs one at a time, each until its Job is seen.
async fn one_at_a_time(op: &Operator, watch: &mut JobWatch) -> Histogram<u64> {
    let http = reqwest::Client::new();
    let mut latency = Histogram::<u64>::new(3).expect("histogram");
    for i in 0..latency_events() {
        let t0 = Instant::now();
        post(
            &http,
            &format!("{}/hooks/{NS}/route-0", op.url),
            event(&format!("lat-{i}")),
        )
        .await;
        let at = watch.wait(1).await;
        latency
            .record(at.duration_since(t0).as_micros() as u64)
            .ok();
    }
    latency
}

/// Phase 4: every Job of the bursts completes; waits until every delivery is finished. How many.
async fn finish(client: &Client, watch: &JobWatch) -> usize {
    let jobs: Api<Job> = Api::namespaced(client.clone(), NS);
    let ours: Vec<Job> = watch
        .latest
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .values()
        .filter(|j| {
            j.metadata
                .labels
                .as_ref()
                .is_some_and(|l| l.contains_key(LABEL_DELIVERY))
        })
        .cloned()
        .collect();
    futures::stream::iter(ours.iter())
        .for_each_concurrent(IN_FLIGHT, |j| complete(&jobs, j))
        .await;
    let deliveries: Api<WebhookDelivery> = Api::namespaced(client.clone(), NS);
    let finished = ListParams::default().labels("asc.webhooks.dev/finished");
    let t0 = Instant::now();
    while deliveries
        .list_metadata(&finished)
        .await
        .map(|l| l.items.len())
        .unwrap_or(0)
        < ours.len()
    {
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "deliveries never finished"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    ours.len()
}

/// Phases 1 and 1b, unless `E2E_SKIP_BARE`.
async fn bare_phases(client: &Client, results: &mut Results) {
    if std::env::var("E2E_SKIP_BARE").is_ok() {
        return;
    }
    let (one, rate) = bare(client).await;
    results.one_create = Some(one);
    results.bare_rate = Some(rate);
    results.pipeline = Some(bare_pipeline::run(client, latency_events(), BURST, IN_FLIGHT).await);
}

#[tokio::main]
async fn main() {
    let Ok(kubeconfig) = std::env::var("E2E_KUBECONFIG") else {
        eprintln!("control_plane: set E2E_KUBECONFIG to a real cluster's kubeconfig to run it");
        return;
    };
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(&kubeconfig).expect("kubeconfig"),
        &Default::default(),
    )
    .await
    .expect("kube config");
    let client = Client::try_from(config).expect("client");
    setup(&client).await;
    let mut results = Results::default();
    bare_phases(&client, &mut results).await;

    let mut watch = JobWatch::start(&client);
    let op = Operator::start(&kubeconfig).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    if std::env::var("E2E_CRASH_BURST").is_ok() {
        let (op, found) = crash_burst::run(&client, &kubeconfig, op).await;
        op.kill();
        println!("three SIGKILLs during 400 events: {found}");
        return done(&client, &results).await;
    }
    let before = request_counts(&client).await;
    results.latency = Some(one_at_a_time(&op, &mut watch).await);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after_latency = request_counts(&client).await;
    results.tables.push(format!(
        "Requests per delivery, one at a time (apiserver_request_total)\n{}",
        per_delivery(&before, &after_latency, latency_events())
    ));
    if std::env::var("E2E_ONLY_ONE_AT_A_TIME").is_ok() {
        // To read one phase's requests (and the operator's log) alone.
        op.kill();
        return done(&client, &results).await;
    }
    results.one_rule = Some(burst(&op, &mut watch, "one", 1).await);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after_burst = request_counts(&client).await;
    results.tables.push(format!(
        "Requests per delivery, burst to one rule\n{}",
        per_delivery(&after_latency, &after_burst, BURST)
    ));
    results.spread = Some(burst(&op, &mut watch, "spread", ROUTES).await);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after_spread = request_counts(&client).await;
    results.tables.push(format!(
        "Requests per delivery, burst over {ROUTES} routes\n{}",
        per_delivery(&after_burst, &after_spread, BURST)
    ));
    if std::env::var("E2E_ONLY_BURSTS").is_ok() {
        op.kill();
        return done(&client, &results).await;
    }

    let before_finish = request_counts(&client).await;
    let finished = finish(&client, &watch).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after_finish = request_counts(&client).await;
    results.tables.push(format!(
        "Requests per delivery to finish (Job complete → delivery finished)\n{}\n(of the finishing phase's GET jobs, {} were this bench's own re-reads before marking a Job complete)",
        per_delivery(&before_finish, &after_finish, finished),
        BENCH_JOB_READS.load(std::sync::atomic::Ordering::Relaxed)
    ));

    // Restart with the finished history: the next event → its Job.
    op.kill();
    let op = Operator::start(&kubeconfig).await;
    let t0 = Instant::now();
    post(
        &reqwest::Client::new(),
        &format!("{}/hooks/{NS}/route-1", op.url),
        event("after-restart"),
    )
    .await;
    results.restart = Some((finished, watch.wait(1).await.duration_since(t0)));
    op.kill();
    done(&client, &results).await;
}

/// Prints `results` and, unless `E2E_KEEP`, deletes the bench namespace.
async fn done(client: &Client, results: &Results) {
    results.print();
    if std::env::var("E2E_KEEP").is_err() {
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let _ = namespaces.delete(NS, &DeleteParams::background()).await;
    }
}

//! What an idle operator costs the API server: requests per verb and resource over a minute with 1,000
//! Ready routes, and its resident memory meanwhile.
//!
//! `cargo bench --bench idle_requests` (the release binary against the in-process fake API server, whose
//! request log counts every call). `ASC_BENCH_IDLE_SECONDS` shortens the idle window (default 60).
//! `ASC_BENCH_ROUTES=declared` makes every route declare its Apple webhook (`spec.appStoreConnect`,
//! registered in the mock App Store Connect, ten per app as Apple allows): the window starts once all of
//! them are registered and verified by a ping, and App Store Connect calls are counted too.
//! `ASC_BENCH_SECRET_ACCESS=get` runs the operator with `--secret-access get`.
//!
//! `ASC_BENCH_KUBECONFIG=<path>` runs it against that real API server instead: CRDs applied server-side,
//! objects in namespace `ASC_BENCH_NAMESPACE` (default `bench`; use a fresh one per run, as routes with
//! `appStoreConnect` keep finalizers once the operator is gone), the operator watching that namespace
//! only. Requests are then the server's own `apiserver_request_total` over the window minus a window of
//! the same length with the operator not yet started (kube-controller-manager and the API server's own
//! loops); the kubeconfig needs admin rights. `ASC_BENCH_ROUTE_COUNT` changes the 1,000 routes.
//!
//! Each route refers to two Secrets (its webhook secret and a Slack URL), as a typical route does, and the
//! operator runs with leader election, as the chart installs it. Watches count when they are (re)opened.
//!
//! To see what the memory is, `ASC_BENCH_WRAPPER=heaptrack` runs the operator under that command (given
//! the binary and its arguments) and ends it with SIGKILL after the window, so the profile's "leaked"
//! bytes are the heap live at idle (`heaptrack_print -l`). The RSS line then reads the wrapper's process
//! unless the wrapper `exec`s the operator.

use serde_json::json;
use std::time::{Duration, Instant};
use testkit::apiserver::{FakeApiServer, FakeApiServerOptions};
use testkit::asc_mock::{AscMock, AscMockOptions, TEST_ISSUER_ID, TEST_KEY_ID};

#[path = "support/real_cluster.rs"]
mod real_cluster;
#[path = "support/request_total.rs"]
mod request_total;
use real_cluster::{Counts, RealCluster};

/// The namespace of every object (`ASC_BENCH_NAMESPACE`, default `bench`).
static NS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    std::env::var("ASC_BENCH_NAMESPACE").unwrap_or_else(|_| "bench".into())
});
const ROUTES: usize = 1_000;
/// Apple's limit of webhooks per app.
const WEBHOOKS_PER_APP: usize = 10;

/// Route `i`; `declared`: it declares its Apple webhook (in app `i / 10`) with the credential `team`.
fn route(i: usize, declared: bool) -> serde_json::Value {
    let mut route = json!({
        "apiVersion": "asc.webhooks.dev/v1alpha1", "kind": "WebhookRoute",
        "metadata": {"name": format!("route-{i}"), "namespace": *NS},
        "spec": {
            "secretRef": {"name": "hook", "key": "secret"},
            "rules": [{
                "name": "notify",
                "match": {"eventTypes": ["BUILD_UPLOAD_STATE_UPDATED"], "newStates": ["FAILED"]},
                "http": {"urlSecretRef": {"name": "slack", "key": "url"}}
            }]
        }
    });
    if declared {
        route["spec"]["credentialRef"] = json!({"name": "team"});
        route["spec"]["appStoreConnect"] = json!({"appId": app_id(i)});
    }
    route
}

fn app_id(route: usize) -> String {
    (1_000_000_000 + route / WEBHOOKS_PER_APP).to_string()
}

/// The credential `team` and its key's Secret, pointing at `mock`.
async fn credential(api: &Backend, mock: &AscMock, root: &std::path::Path) {
    let pem = std::fs::read_to_string(root.join("tests/fixtures/asc/keys/AuthKey_TEST2K9Q7X.p8"))
        .expect("test key");
    api.put(
        "secrets",
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "team-key", "namespace": *NS},
            "stringData": {"AuthKey.p8": pem}}),
    )
    .await;
    api.put(
        "asccredentials",
        json!({"apiVersion": "asc.webhooks.dev/v1alpha1", "kind": "AscCredential",
            "metadata": {"name": "team", "namespace": *NS},
            "spec": {"keyId": TEST_KEY_ID, "issuerId": TEST_ISSUER_ID, "apiUrl": mock.url(),
                "privateKeySecretRef": {"name": "team-key", "key": "AuthKey.p8"}}}),
    )
    .await;
}

/// Where the objects live and how requests are counted.
enum Backend {
    /// The in-process fake, whose request log names every call of the window.
    Fake(FakeApiServer),
    /// A real API server; `background` is what it served with the operator stopped.
    Real {
        cluster: RealCluster,
        background: Counts,
        before: Counts,
    },
}

impl Backend {
    async fn put(&self, resource: &str, obj: serde_json::Value) {
        match self {
            Backend::Fake(api) => {
                api.put_object(resource, obj).expect("object stored");
            }
            Backend::Real { cluster, .. } => cluster.apply(resource, obj).await,
        }
    }

    async fn routes(&self) -> Vec<serde_json::Value> {
        match self {
            Backend::Fake(api) => api.list_objects("webhookroutes", Some(&NS)),
            Backend::Real { cluster, .. } => cluster.routes(&NS).await,
        }
    }

    /// Starts counting the operator's requests.
    async fn start_window(&mut self) {
        match self {
            Backend::Fake(api) => api.clear_request_log(),
            Backend::Real {
                cluster, before, ..
            } => *before = cluster.request_counts().await,
        }
    }

    /// Requests per (verb, resource) since [`Backend::start_window`], the background subtracted.
    async fn window(&self) -> Counts {
        match self {
            Backend::Fake(api) => {
                let mut by = Counts::new();
                for r in &api.request_log() {
                    let resource = if r.subresource.is_empty() {
                        r.resource.clone()
                    } else {
                        format!("{}/{}", r.resource, r.subresource)
                    };
                    *by.entry((format!("{:?}", r.verb), resource)).or_default() += 1.0;
                }
                by
            }
            Backend::Real {
                cluster,
                background,
                before,
            } => {
                let gross = real_cluster::diff(before, &cluster.request_counts().await);
                let mut keys: Vec<_> = gross.keys().chain(background.keys()).cloned().collect();
                keys.sort();
                keys.dedup();
                keys.into_iter()
                    .map(|k| {
                        let net = gross.get(&k).copied().unwrap_or(0.0)
                            - background.get(&k).copied().unwrap_or(0.0);
                        (k, net)
                    })
                    .filter(|(_, n)| *n != 0.0)
                    .collect()
            }
        }
    }
}

fn secret_access() -> String {
    std::env::var("ASC_BENCH_SECRET_ACCESS").unwrap_or_else(|_| "watch".into())
}

/// The flags of the variant: Secret access, and with declared routes a public URL the mock can deliver
/// pings to and the mock as an allowed API origin.
fn mode_flags(mock: Option<&AscMock>, public: u16) -> Vec<String> {
    let mut flags = vec!["--secret-access".to_owned(), secret_access()];
    if let Some(mock) = mock {
        flags.extend([
            "--public-url".to_owned(),
            format!("http://127.0.0.1:{public}"),
            "--asc-api-origins".to_owned(),
            mock.url(),
        ]);
    }
    flags
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// Routes whose conditions `wanted` are all True.
async fn routes_with(api: &Backend, wanted: &[&str]) -> usize {
    api.routes()
        .await
        .iter()
        .filter(|r| {
            r["status"]["conditions"].as_array().is_some_and(|c| {
                wanted
                    .iter()
                    .all(|w| c.iter().any(|c| c["type"] == *w && c["status"] == "True"))
            })
        })
        .count()
}

/// The backend: the fake API server, or the real one of `ASC_BENCH_KUBECONFIG` with CRDs and namespace;
/// and the kubeconfig the operator uses.
async fn backend(root: &std::path::Path, dir: &std::path::Path) -> (Backend, std::path::PathBuf) {
    if let Ok(path) = std::env::var("ASC_BENCH_KUBECONFIG") {
        let path = std::path::PathBuf::from(path);
        let cluster = RealCluster::connect(&path)
            .await
            .unwrap_or_else(|e| panic!("ASC_BENCH_KUBECONFIG={}: {e}", path.display()));
        cluster.apply_crds(&root.join("crds")).await;
        cluster.ensure_namespace(&NS).await;
        let real = Backend::Real {
            cluster,
            background: Counts::new(),
            before: Counts::new(),
        };
        return (real, path);
    }
    let opts = FakeApiServerOptions {
        namespaces: vec!["default".into(), NS.clone()],
        ..Default::default()
    };
    let api = FakeApiServer::start(opts.crd_dir(root.join("crds"))).await;
    let kubeconfig = dir.join("kubeconfig");
    api.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    (Backend::Fake(api), kubeconfig)
}

/// On a real API server, what it serves over `secs` with the operator stopped.
async fn measure_background(api: &mut Backend, secs: u64) {
    if let Backend::Real {
        cluster,
        background,
        ..
    } = api
    {
        let before = cluster.request_counts().await;
        tokio::time::sleep(Duration::from_secs(secs)).await;
        *background = real_cluster::diff(&before, &cluster.request_counts().await);
    }
}

/// Routes in the run (`ASC_BENCH_ROUTE_COUNT`, default 1,000).
fn route_count() -> usize {
    std::env::var("ASC_BENCH_ROUTE_COUNT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(ROUTES)
}

/// The Secrets, the credential (with `declared`, and the mock it points at) and the routes.
async fn populate(api: &Backend, root: &std::path::Path, declared: bool) -> Option<AscMock> {
    for (name, key, value) in [
        ("hook", "secret", "bench-secret"),
        ("slack", "url", "https://hooks.slack.example/x"),
    ] {
        api.put(
            "secrets",
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": *NS},
                "stringData": {key: value}}),
        )
        .await;
    }
    let mock = if declared {
        let mock = AscMock::start(AscMockOptions::default())
            .await
            .expect("mock App Store Connect");
        for i in (0..route_count()).step_by(WEBHOOKS_PER_APP) {
            mock.add_app(&app_id(i));
        }
        credential(api, &mock, root).await;
        Some(mock)
    } else {
        None
    };
    for i in 0..route_count() {
        api.put("webhookroutes", route(i, declared)).await;
    }
    mock
}

/// The release operator (under `ASC_BENCH_WRAPPER` if set), leader election on, as the chart runs it.
/// On a real cluster it watches only [`NS`], so objects an earlier run left in other namespaces (routes
/// with finalizers, credentials pointing at a mock long gone) cost this one nothing.
fn spawn_operator(
    kubeconfig: &std::path::Path,
    mock: Option<&AscMock>,
    public: u16,
    wrapper: Option<&str>,
    real: bool,
) -> std::process::Child {
    let admin = free_port();
    let bin = env!("CARGO_BIN_EXE_asc-webhook-operator");
    let mut command = match wrapper {
        Some(w) => {
            let mut c = std::process::Command::new(w);
            c.arg(bin);
            c
        }
        None => std::process::Command::new(bin),
    };
    command
        .args([
            "run",
            "--listen-addr",
            &format!("127.0.0.1:{public}"),
            "--admin-addr",
            &format!("127.0.0.1:{admin}"),
            "--leader-election",
            "--lease-namespace",
            &NS,
            "--identity",
            "bench",
            "--log-filter",
            "warn",
        ])
        .args(mode_flags(mock, public))
        .args(if real {
            vec!["--namespace", &**NS]
        } else {
            vec![]
        })
        .env("KUBECONFIG", kubeconfig)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("operator binary starts")
}

#[tokio::main]
async fn main() {
    let idle_secs: u64 = std::env::var("ASC_BENCH_IDLE_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut api, kubeconfig) = backend(root, dir.path()).await;
    let declared = std::env::var("ASC_BENCH_ROUTES").is_ok_and(|v| v == "declared");
    let mock = populate(&api, root, declared).await;
    let routes = route_count();
    // Before the operator starts: what everyone else costs a real API server over the same length.
    measure_background(&mut api, idle_secs).await;

    let public = free_port();
    let wrapper = std::env::var("ASC_BENCH_WRAPPER").ok();
    let real = matches!(api, Backend::Real { .. });
    let mut child = spawn_operator(&kubeconfig, mock.as_ref(), public, wrapper.as_deref(), real);
    let pid = child.id();

    let wanted: &[&str] = if declared {
        &["Ready", "WebhookRegistered", "WebhookVerified"]
    } else {
        &["Ready"]
    };
    let patience = Duration::from_secs(if declared { 900 } else { 300 });
    let started = Instant::now();
    loop {
        let done = routes_with(&api, wanted).await;
        if done >= routes {
            break;
        }
        assert!(
            started.elapsed() < patience,
            "only {done} of {routes} routes became {wanted:?}; ping deliveries that failed: {:?}",
            failed_pings(mock.as_ref())
        );
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    let settled_after = started.elapsed();
    // Apple does not document retrying a failed delivery, and neither does the mock: each ping lost on the
    // way (and why) is worth seeing, even when its re-send verified the route in time.
    for failed in failed_pings(mock.as_ref()) {
        println!("idle_requests: a ping delivery failed: {failed}");
    }
    // Let the last status writes and their watch events pass before measuring "idle".
    tokio::time::sleep(Duration::from_secs(5)).await;
    api.start_window().await;
    let asc_before = mock.as_ref().map_or(0, |m| m.requests().len());
    let window = Instant::now();
    let mut rss_max = 0;
    while window.elapsed() < Duration::from_secs(idle_secs) {
        rss_max = rss_max.max(rss_kib(pid));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let elapsed = window.elapsed().as_secs_f64();
    let by = api.window().await;
    let asc_calls = mock.as_ref().map_or(0, |m| m.requests().len() - asc_before);
    if wrapper.is_some() {
        // The operator is the wrapper's descendant; its listen port names it alone.
        let _ = std::process::Command::new("pkill")
            .args([
                "-KILL",
                "-f",
                &format!("run --listen-addr 127.0.0.1:{public} "),
            ])
            .status();
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    let _ = child.kill();
    let _ = child.wait();

    let kind = if declared {
        "Ready routes with appStoreConnect, registered and verified,"
    } else {
        "Ready plain routes"
    };
    let server = match api {
        Backend::Fake(_) => "fake API server",
        Backend::Real { .. } => "real API server, background subtracted",
    };
    println!(
        "idle_requests: {routes} {kind} (settled after {:.1} s), {elapsed:.0} s idle, leader election on, --secret-access {}, {server}",
        settled_after.as_secs_f64(),
        secret_access()
    );
    report(&by, elapsed, declared.then_some(asc_calls), rss_max);
}

/// The mock's ping deliveries the receiver did not answer with 2xx: where, when, and what it got.
fn failed_pings(mock: Option<&AscMock>) -> Vec<String> {
    mock.map(|m| m.deliveries())
        .unwrap_or_default()
        .into_iter()
        .filter(|d| d.event.ping && d.state != testkit::asc_mock::DeliveryState::Succeeded)
        .map(|d| {
            format!(
                "{} at {}: {} (HTTP {:?}, body {:?})",
                d.request_url,
                d.created_date,
                d.error_message.unwrap_or_default(),
                d.response_status,
                d.response_body
            )
        })
        .collect()
}

fn report(by: &Counts, elapsed: f64, asc_calls: Option<usize>, rss_max: u64) {
    let lists: f64 = by
        .iter()
        .filter(|((verb, _), _)| verb.eq_ignore_ascii_case("list"))
        .map(|(_, n)| n)
        .sum();
    let watches: f64 = by
        .iter()
        .filter(|((verb, _), _)| verb.eq_ignore_ascii_case("watch"))
        .map(|(_, n)| n)
        .sum();
    let all: f64 = by.values().sum();
    println!("| verb | resource | requests | per second |");
    println!("|---|---|---|---|");
    for ((verb, resource), n) in by {
        println!("| {verb} | {resource} | {n} | {:.3} |", n / elapsed);
    }
    println!(
        "| **all** | | **{all}** | **{:.3}** (goal ≤ 1; of them watches (re)opened or ended: {watches}) |",
        all / elapsed
    );
    println!("| LIST | | {lists} | (goal 0) |");
    if let Some(asc_calls) = asc_calls {
        println!(
            "| App Store Connect | | {asc_calls} | {:.3} (goal 0 between catch-up passes and read-backs) |",
            asc_calls as f64 / elapsed
        );
    }
    println!(
        "| RSS, max over the window | | {:.1} MiB | (goal ≤ 25 MiB) |",
        rss_max as f64 / 1024.0
    );
}

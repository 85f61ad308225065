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
//! Each route refers to two Secrets (its webhook secret and a Slack URL), as a typical route does, and the
//! operator runs with leader election, as the chart installs it. Watches count when they are (re)opened.
//!
//! To see what the memory is, `ASC_BENCH_WRAPPER=heaptrack` runs the operator under that command (given
//! the binary and its arguments) and ends it with SIGKILL after the window, so the profile's "leaked"
//! bytes are the heap live at idle (`heaptrack_print -l`). The RSS line then reads the wrapper's process
//! unless the wrapper `exec`s the operator.

use serde_json::json;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use testkit::apiserver::{FakeApiServer, FakeApiServerOptions};
use testkit::asc_mock::{AscMock, AscMockOptions, TEST_ISSUER_ID, TEST_KEY_ID};

const NS: &str = "bench";
const ROUTES: usize = 1_000;
/// Apple's limit of webhooks per app.
const WEBHOOKS_PER_APP: usize = 10;

/// Route `i`; `declared`: it declares its Apple webhook (in app `i / 10`) with the credential `team`.
fn route(i: usize, declared: bool) -> serde_json::Value {
    let mut route = json!({
        "apiVersion": "asc.webhooks.dev/v1alpha1", "kind": "WebhookRoute",
        "metadata": {"name": format!("route-{i}"), "namespace": NS},
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
fn credential(api: &FakeApiServer, mock: &AscMock, root: &std::path::Path) {
    let pem = std::fs::read_to_string(root.join("tests/fixtures/asc/keys/AuthKey_TEST2K9Q7X.p8"))
        .expect("test key");
    api.put_object(
        "secrets",
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "team-key", "namespace": NS},
            "stringData": {"AuthKey.p8": pem}}),
    )
    .expect("key secret");
    api.put_object(
        "asccredentials",
        json!({"apiVersion": "asc.webhooks.dev/v1alpha1", "kind": "AscCredential",
            "metadata": {"name": "team", "namespace": NS},
            "spec": {"keyId": TEST_KEY_ID, "issuerId": TEST_ISSUER_ID, "apiUrl": mock.url(),
                "privateKeySecretRef": {"name": "team-key", "key": "AuthKey.p8"}}}),
    )
    .expect("credential");
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
fn routes_with(api: &FakeApiServer, wanted: &[&str]) -> usize {
    api.list_objects("webhookroutes", Some(NS))
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

#[tokio::main]
async fn main() {
    let idle_secs: u64 = std::env::var("ASC_BENCH_IDLE_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let opts = FakeApiServerOptions {
        namespaces: vec!["default".into(), NS.into()],
        ..Default::default()
    };
    let api = FakeApiServer::start(opts.crd_dir(root.join("crds"))).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    for (name, key, value) in [
        ("hook", "secret", "bench-secret"),
        ("slack", "url", "https://hooks.slack.example/x"),
    ] {
        api.put_object(
            "secrets",
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": NS},
                "stringData": {key: value}}),
        )
        .expect("secret");
    }
    let declared = std::env::var("ASC_BENCH_ROUTES").is_ok_and(|v| v == "declared");
    let mock = if declared {
        let mock = AscMock::start(AscMockOptions::default())
            .await
            .expect("mock App Store Connect");
        for i in (0..ROUTES).step_by(WEBHOOKS_PER_APP) {
            mock.add_app(&app_id(i));
        }
        credential(&api, &mock, root);
        Some(mock)
    } else {
        None
    };
    for i in 0..ROUTES {
        api.put_object("webhookroutes", route(i, declared))
            .expect("route");
    }

    let (public, admin) = (free_port(), free_port());
    let wrapper = std::env::var("ASC_BENCH_WRAPPER").ok();
    let bin = env!("CARGO_BIN_EXE_asc-webhook-operator");
    let mut command = match &wrapper {
        Some(w) => {
            let mut c = std::process::Command::new(w);
            c.arg(bin);
            c
        }
        None => std::process::Command::new(bin),
    };
    let mut child = command
        .args([
            "run",
            "--listen-addr",
            &format!("127.0.0.1:{public}"),
            "--admin-addr",
            &format!("127.0.0.1:{admin}"),
            "--leader-election",
            "--lease-namespace",
            NS,
            "--identity",
            "bench",
            "--log-filter",
            "warn",
        ])
        .args(mode_flags(mock.as_ref(), public))
        .env("KUBECONFIG", &kubeconfig)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("operator binary starts");
    let pid = child.id();

    let wanted: &[&str] = if declared {
        &["Ready", "WebhookRegistered", "WebhookVerified"]
    } else {
        &["Ready"]
    };
    let patience = Duration::from_secs(if declared { 600 } else { 120 });
    let started = Instant::now();
    while routes_with(&api, wanted) < ROUTES {
        assert!(
            started.elapsed() < patience,
            "only {} of {ROUTES} routes became {wanted:?}",
            routes_with(&api, wanted)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let settled_after = started.elapsed();
    // Let the last status writes and their watch events pass before measuring "idle".
    tokio::time::sleep(Duration::from_secs(5)).await;
    api.clear_request_log();
    let asc_before = mock.as_ref().map_or(0, |m| m.requests().len());
    let window = Instant::now();
    let mut rss_max = 0;
    while window.elapsed() < Duration::from_secs(idle_secs) {
        rss_max = rss_max.max(rss_kib(pid));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let elapsed = window.elapsed().as_secs_f64();
    let log = api.request_log();
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

    let mut by: BTreeMap<(String, String), usize> = BTreeMap::new();
    for r in &log {
        let resource = if r.subresource.is_empty() {
            r.resource.clone()
        } else {
            format!("{}/{}", r.resource, r.subresource)
        };
        *by.entry((format!("{:?}", r.verb), resource)).or_default() += 1;
    }
    let lists = by
        .iter()
        .filter(|((verb, _), _)| verb == "List")
        .map(|(_, n)| n)
        .sum::<usize>();
    let kind = if declared {
        "Ready routes with appStoreConnect, registered and verified,"
    } else {
        "Ready plain routes"
    };
    println!(
        "idle_requests: {ROUTES} {kind} (settled after {:.1} s), {elapsed:.0} s idle, leader election on, --secret-access {}",
        settled_after.as_secs_f64(),
        secret_access()
    );
    println!("| verb | resource | requests | per second |");
    println!("|---|---|---|---|");
    for ((verb, resource), n) in &by {
        println!("| {verb} | {resource} | {n} | {:.3} |", *n as f64 / elapsed);
    }
    println!(
        "| **all** | | **{}** | **{:.3}** (goal ≤ 1) |",
        log.len(),
        log.len() as f64 / elapsed
    );
    println!("| LIST | | {lists} | (goal 0) |");
    if declared {
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

//! A whole operator under test: the real `run` wiring (receiver, controllers, leader election) in-process
//! against the fake API server, plus the mock App Store Connect API and an HTTP recorder standing in for
//! Slack and Jira.

pub use crate::cluster::Cluster;
use asc_webhook_operator::asc::signature;
use asc_webhook_operator::cli::{Cli, Command, RunArgs};
use asc_webhook_operator::operator::{Listeners, run_with};
use asc_webhook_operator::resources::{WebhookDelivery, WebhookRoute};
use clap::Parser;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};
use testkit::apiserver::{FakeApiServer, FakeApiServerOptions};
use testkit::asc_mock::{AscMock, AscMockOptions};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub const ROOT: &str = env!("CARGO_MANIFEST_DIR");
pub const NS: &str = "ios";
pub const WEBHOOK_SECRET: &str = "k3tSx0mJ7vQ2pL9wR4zN8cF1bH6dY5aE";

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(ROOT)
            .join("tests/fixtures/asc/events")
            .join(format!("{name}.json")),
    )
    .unwrap()
}

/// The committed CRDs as `kubectl apply -f crds/` sends them (JSON, converted with YAML 1.1 rules).
pub fn crds_as_kubectl_sends_them() -> Vec<String> {
    static CRDS: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| {
        let mut files: Vec<_> = std::fs::read_dir(Path::new(ROOT).join("crds"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        files
            .iter()
            .flat_map(|f| crate::manifests::kubectl_reads_file(f))
            .map(|doc| doc.to_string())
            .collect()
    });
    CRDS.clone()
}

pub async fn fake_api() -> FakeApiServer {
    fake_api_with(|o| o).await
}

/// A fake API server with changed options (e.g. authorization on).
pub async fn fake_api_with(
    change: impl FnOnce(FakeApiServerOptions) -> FakeApiServerOptions,
) -> FakeApiServer {
    let opts = FakeApiServerOptions {
        namespaces: vec!["default".into(), NS.into(), "payments".into()],
        crd_yaml: crds_as_kubectl_sends_them(),
        ..Default::default()
    };
    FakeApiServer::start(change(opts)).await
}

/// One operator process, in-process.
pub struct Operator {
    pub url: String,
    pub admin_url: String,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Operator {
    /// Starts `run` with `extra` flags (on top of fast test settings) against `api`, and waits until
    /// it is ready.
    pub async fn start(api: &impl Cluster, extra: &[&str]) -> Operator {
        let op = Self::launch(api, extra).await;
        op.wait_ready().await;
        op
    }

    /// Starts `run` like [`Operator::start`] without waiting for readiness.
    pub async fn launch(api: &impl Cluster, extra: &[&str]) -> Operator {
        Self::launch_on(api, extra, None).await
    }

    /// Like [`start`](Self::start), with `--public-url` set to the operator's own listener, so the mock
    /// App Store Connect can deliver to it (plain HTTP on loopback is allowed for registration).
    pub async fn start_reachable(api: &impl Cluster, extra: &[&str]) -> Operator {
        let public = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let op = Self::launch_on(api, extra, Some(public)).await;
        op.wait_ready().await;
        op
    }

    /// Like [`start_reachable`](Self::start_reachable) on the public address `url` of an operator that
    /// was stopped, as a restarted pod keeps its URL.
    pub async fn restart_reachable(api: &impl Cluster, url: &str, extra: &[&str]) -> Operator {
        let addr = url.trim_start_matches("http://");
        let public = TcpListener::bind(addr).await.unwrap();
        let op = Self::launch_on(api, extra, Some(public)).await;
        op.wait_ready().await;
        op
    }

    async fn launch_on(
        api: &impl Cluster,
        extra: &[&str],
        public: Option<TcpListener>,
    ) -> Operator {
        crate::logs::init();
        let reachable = public.is_some();
        let public = match public {
            Some(p) => p,
            None => TcpListener::bind("127.0.0.1:0").await.unwrap(),
        };
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", public.local_addr().unwrap());
        let admin_url = format!("http://{}", admin.local_addr().unwrap());
        let public_url = if reachable {
            url.clone()
        } else {
            "https://hooks.example.com".to_owned()
        };
        let mut argv = vec!["asc-webhook-operator", "run"];
        if !extra.contains(&"--public-url") {
            argv.extend(["--public-url", public_url.as_str()]);
        }
        argv.extend([
            "--retry-base-delay",
            "100ms",
            "--retry-max-delay",
            "1s",
            "--asc-api-retry-base-delay",
            "50ms",
            "--asc-api-timeout",
            "2s",
        ]);
        argv.extend_from_slice(extra);
        argv.extend(test_defaults(extra));
        let cluster_flags = api.operator_flags();
        argv.extend(cluster_flags.iter().map(String::as_str));
        let Command::Run(args) = Cli::try_parse_from(argv).unwrap().command else {
            unreachable!()
        };
        let args: RunArgs = *args;
        let shutdown = CancellationToken::new();
        let config = api.config();
        let stop = shutdown.clone();
        let task = tokio::spawn(async move {
            run_with(config, args, Listeners { public, admin }, stop)
                .await
                .unwrap();
        });
        Operator {
            url,
            admin_url,
            shutdown,
            task,
        }
    }

    /// `/readyz`: status and body.
    #[allow(dead_code)]
    pub async fn readyz(&self) -> Option<(u16, String)> {
        let resp = reqwest::get(format!("{}/readyz", self.admin_url))
            .await
            .ok()?;
        let status = resp.status().as_u16();
        Some((status, resp.text().await.ok()?))
    }

    pub async fn wait_ready(&self) {
        let client = reqwest::Client::new();
        let url = format!("{}/readyz", self.admin_url);
        eventually("the operator is ready", Duration::from_secs(10), || {
            let client = client.clone();
            let url = url.clone();
            async move {
                client
                    .get(&url)
                    .send()
                    .await
                    .ok()
                    .filter(|r| r.status() == 200)
                    .map(|_| ())
            }
        })
        .await;
    }

    /// Stops gracefully and waits.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("operator stops")
            .unwrap();
    }

    /// Aborts without any shutdown work, like a killed process.
    #[allow(dead_code)]
    pub fn kill(self) {
        self.task.abort();
    }

    /// POSTs `body` signed with `secret` to `/hooks/{ns}/{route}`.
    pub async fn post(&self, route: &str, body: &[u8], secret: &str) -> (u16, Value) {
        let sig = signature::sign(secret.as_bytes(), body);
        self.post_raw(&format!("/hooks/{NS}/{route}"), body.to_vec(), Some(&sig))
            .await
    }

    pub async fn post_raw(
        &self,
        path: &str,
        body: Vec<u8>,
        signature_header: Option<&str>,
    ) -> (u16, Value) {
        let mut req = reqwest::Client::new()
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/json")
            .header(
                "x-apple-request-uuid",
                "2f1e5c8a-0000-4000-8000-000000000001",
            )
            .body(body);
        if let Some(s) = signature_header {
            req = req.header(signature::HEADER, s);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.admin_url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

/// Flags every test operator gets unless the test sets them itself: HTTP actions go to the loopback
/// recorder, so the egress guard is off unless a test turns it on.
fn test_defaults(extra: &[&str]) -> Vec<&'static str> {
    if extra.contains(&"--http-action-deny-cidrs") {
        Vec::new()
    } else {
        vec!["--http-action-deny-cidrs", "none"]
    }
}

/// `--asc-api-origins <mock>`: credentials in tests point at the mock, which the operator refuses
/// unless told otherwise.
pub fn origin_flags(asc: &AscMock) -> [String; 2] {
    ["--asc-api-origins".to_owned(), asc.url()]
}

/// `base` followed by `more`, as the `&[&str]` the start functions take.
pub fn flags<'a>(base: &'a [&'a str], more: &'a [String]) -> Vec<&'a str> {
    base.iter()
        .copied()
        .chain(more.iter().map(String::as_str))
        .collect()
}

/// Polls `check` until it yields a value, or panics naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    let deadline = started + timeout;
    loop {
        if let Some(v) = check().await {
            // Shown with `--nocapture`: how long each awaited state took, the figures a run against a
            // real cluster (`ASC_E2E_KUBECONFIG`) is read for.
            eprintln!("eventually: {what} after {:.2?}", started.elapsed());
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub async fn put_secret(api: &impl Cluster, name: &str, data: &[(&str, &str)]) {
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": NS},
        "stringData": data.iter().map(|(k, v)| (k.to_string(), Value::from(*v))).collect::<serde_json::Map<_, _>>(),
    }))
    .unwrap();
    let secrets: Api<Secret> = Api::namespaced(api.client(), NS);
    match secrets.create(&PostParams::default(), &secret).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.is_already_exists() => {
            let mut existing = secrets.get(name).await.unwrap();
            existing.data = None;
            existing.string_data = secret.string_data.clone();
            secrets
                .replace(name, &PostParams::default(), &existing)
                .await
                .unwrap();
        }
        Err(e) => panic!("creating Secret {name}: {e}"),
    }
}

/// Creates any namespaced object from YAML/JSON text through the API (so schema validation applies).
pub async fn create_yaml<K>(api: &impl Cluster, yaml: &str) -> K
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    // What kubectl would send (YAML 1.1 rules), posted as it is: a typed round trip would hide fields
    // the Rust types do not know.
    let doc = crate::manifests::kubectl_reads(yaml).remove(0);
    let obj: kube::api::DynamicObject = serde_json::from_value(doc).unwrap();
    let ns = obj
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| NS.to_owned());
    let resource = kube::api::ApiResource::erase::<K>(&());
    let created = Api::<kube::api::DynamicObject>::namespaced_with(api.client(), &ns, &resource)
        .create(&PostParams::default(), &obj)
        .await
        .unwrap();
    serde_json::from_value(serde_json::to_value(created).unwrap()).unwrap()
}

pub async fn route_with(
    api: &impl Cluster,
    name: &str,
    rules_yaml: &str,
    extra_spec: &str,
) -> WebhookRoute {
    let yaml = format!(
        "apiVersion: asc.webhooks.dev/v1alpha1\nkind: WebhookRoute\nmetadata:\n  name: {name}\n  namespace: {NS}\nspec:\n  secretRef: {{name: hook-secret, key: secret}}\n{extra_spec}  rules:\n{rules_yaml}"
    );
    create_yaml(api, &yaml).await
}

pub fn deliveries(api: &impl Cluster) -> Vec<WebhookDelivery> {
    api.list_objects("webhookdeliveries", Some(NS))
        .into_iter()
        .map(|v| serde_json::from_value(v).unwrap())
        .collect()
}

pub fn jobs(api: &impl Cluster) -> Vec<k8s_openapi::api::batch::v1::Job> {
    api.list_objects("jobs", Some(NS))
        .into_iter()
        .map(|v| serde_json::from_value(v).unwrap())
        .collect()
}

pub fn get_delivery(api: &impl Cluster, name: &str) -> Option<WebhookDelivery> {
    api.get_object("webhookdeliveries", NS, name)
        .map(|v| serde_json::from_value(v).unwrap())
}

pub fn get_route(api: &impl Cluster, name: &str) -> WebhookRoute {
    serde_json::from_value(
        api.get_object("webhookroutes", NS, name)
            .expect("route exists"),
    )
    .unwrap()
}

/// The route's `Ready` condition, once the route controller wrote one.
pub async fn ready_condition(
    api: &impl Cluster,
    name: &str,
    what: &str,
) -> asc_webhook_operator::resources::Condition {
    eventually(what, Duration::from_secs(10), || {
        let r = get_route(api, name);
        async move {
            r.status?
                .conditions
                .into_iter()
                .find(|c| c.type_ == "Ready")
        }
    })
    .await
}

/// Waits until route `name` is Ready.
pub async fn wait_route_ready(api: &impl Cluster, name: &str) {
    eventually("the route is Ready", Duration::from_secs(15), || {
        let r = get_route(api, name);
        async move {
            r.status?
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
                .then_some(())
        }
    })
    .await;
}

/// Marks a Job finished the way the Job controller would, with the status a real API server accepts
/// (1.36 validates it: `SuccessCriteriaMet`/`FailureTarget` before `Complete`/`Failed`, `startTime`,
/// `completionTime` only on success, no active Pods), so scenarios run unchanged on a real cluster.
pub async fn complete_job(api: &impl Cluster, name: &str, succeeded: bool) {
    let jobs: Api<k8s_openapi::api::batch::v1::Job> = Api::namespaced(api.client(), NS);
    let now = Value::from(
        jiff::Timestamp::now()
            .strftime("%Y-%m-%dT%H:%M:%SZ")
            .to_string(),
    );
    let condition = |type_: &str, reason: &str| {
        serde_json::json!({"type": type_, "status": "True", "reason": reason,
            "lastProbeTime": now, "lastTransitionTime": now})
    };
    // The Job controller writes this status too: retry on a conflict with it.
    for _ in 0..10 {
        let job = jobs.get(name).await.unwrap();
        let mut v = serde_json::to_value(&job).unwrap();
        let status = v["status"]
            .as_object_mut()
            .map(std::mem::take)
            .unwrap_or_default();
        let mut status = Value::Object(status);
        if status.get("startTime").is_none_or(Value::is_null) {
            status["startTime"] = now.clone();
        }
        for field in ["active", "ready", "terminating"] {
            status[field] = Value::from(0);
        }
        status["uncountedTerminatedPods"] = serde_json::json!({});
        let conditions = if succeeded {
            status["succeeded"] = Value::from(1);
            status["completionTime"] = now.clone();
            [
                condition("SuccessCriteriaMet", "CompletionsReached"),
                condition("Complete", "CompletionsReached"),
            ]
        } else {
            status["failed"] = Value::from(1);
            [
                condition("FailureTarget", "BackoffLimitExceeded"),
                condition("Failed", "BackoffLimitExceeded"),
            ]
        };
        status["conditions"] = Value::from(conditions.to_vec());
        v["status"] = status;
        let finished: k8s_openapi::api::batch::v1::Job = serde_json::from_value(v).unwrap();
        match jobs
            .replace_status(name, &PostParams::default(), &finished)
            .await
        {
            Ok(_) => return,
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) => panic!("finishing Job {name}: {e}"),
        }
    }
    panic!("finishing Job {name}: conflicts every time");
}

pub async fn asc_mock() -> AscMock {
    AscMock::start(AscMockOptions::default()).await.unwrap()
}

/// The payload of `fixture` with its `links.self` pointing at the mock instead of Apple.
pub fn fixture_for_mock(name: &str, mock: &AscMock) -> Vec<u8> {
    let text = String::from_utf8(fixture(name)).unwrap();
    text.replace("https://api.appstoreconnect.apple.com", &mock.url())
        .into_bytes()
}

async fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The real binary as a child process, for tests that kill it.
pub struct Process {
    child: tokio::process::Child,
    pub url: String,
    pub admin_url: String,
}

impl Process {
    pub async fn start(api: &FakeApiServer, dir: &Path, extra: &[&str]) -> Process {
        let kubeconfig = dir.join("kubeconfig");
        api.write_kubeconfig(&kubeconfig).unwrap();
        let (public, admin) = (free_port().await, free_port().await);
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_asc-webhook-operator"))
            .arg("run")
            .args([
                "--listen-addr",
                &format!("127.0.0.1:{public}"),
                "--admin-addr",
                &format!("127.0.0.1:{admin}"),
            ])
            .args([
                "--retry-base-delay",
                "100ms",
                "--retry-max-delay",
                "1s",
                "--log-format",
                "json",
            ])
            .args(extra)
            .args(test_defaults(extra))
            .env("KUBECONFIG", &kubeconfig)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.join(format!("operator-{public}.log"))).unwrap())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let p = Process {
            child,
            url: format!("http://127.0.0.1:{public}"),
            admin_url: format!("http://127.0.0.1:{admin}"),
        };
        let ready = format!("{}/readyz", p.admin_url);
        eventually(
            "the operator process is ready",
            Duration::from_secs(20),
            || {
                let ready = ready.clone();
                async move {
                    reqwest::get(&ready)
                        .await
                        .ok()
                        .filter(|r| r.status() == 200)
                        .map(|_| ())
                }
            },
        )
        .await;
        p
    }

    /// Resident memory of the operator process, from `/proc/<pid>/status`.
    #[allow(dead_code)]
    pub fn rss_bytes(&self) -> u64 {
        let pid = self.child.id().expect("running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/<pid>/status");
        kib * 1024
    }

    /// SIGKILL: no graceful shutdown, no lease release, no final status write.
    pub async fn kill(mut self) {
        self.child.kill().await.unwrap();
    }

    pub async fn post(&self, route: &str, body: &[u8], secret: &str) -> (u16, Value) {
        let resp = reqwest::Client::new()
            .post(format!("{}/hooks/{NS}/{route}", self.url))
            .header(signature::HEADER, signature::sign(secret.as_bytes(), body))
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }
}

impl Process {
    /// SIGTERM, then the exit status (graceful shutdown must finish within ten seconds).
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().expect("running");
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .expect("exits after SIGTERM")
            .unwrap()
    }
}

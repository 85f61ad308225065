//! The API server a scenario runs against: the in-process fake API server, or — with
//! `ASC_E2E_KUBECONFIG=<path>` — a real cluster (kind, k3d, a local kube-apiserver with etcd and
//! kube-controller-manager).
//!
//! Only scenarios built on [`crate::world::World::example`] switch to the real cluster: they need no fault
//! injection, so they say something about the operator on a real API server (watch timing, CEL
//! validation rules of the CRDs, RBAC-free admin access, the Job controller's status validation). Every
//! other test keeps its private fake API server, even in this mode.
//!
//! A real cluster is shared, so its scenarios run one at a time (a process-wide lock held by the world)
//! in namespace [`NS`], which is emptied of everything a scenario creates before each one starts. The
//! operator under test watches only that namespace and keeps its Lease there.

use crate::harness::NS;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::Value;
use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};
use testkit::apiserver::FakeApiServer;

/// The environment variable that points the scenarios at a real cluster.
pub const KUBECONFIG_ENV: &str = "ASC_E2E_KUBECONFIG";

/// What the harness needs from an API server, fake or real: clients for the operator and the test,
/// and synchronous reads for assertions.
pub trait Cluster {
    fn config(&self) -> kube::Config;
    fn client(&self) -> kube::Client;
    /// Every object of `resource` (plural name), in `ns` or in all namespaces.
    fn list_objects(&self, resource: &str, ns: Option<&str>) -> Vec<Value>;
    fn get_object(&self, resource: &str, ns: &str, name: &str) -> Option<Value>;
    /// Flags the operator under test needs on this cluster.
    fn operator_flags(&self) -> Vec<String> {
        Vec::new()
    }
}

impl Cluster for FakeApiServer {
    fn config(&self) -> kube::Config {
        FakeApiServer::config(self)
    }
    fn client(&self) -> kube::Client {
        FakeApiServer::client(self)
    }
    fn list_objects(&self, resource: &str, ns: Option<&str>) -> Vec<Value> {
        FakeApiServer::list_objects(self, resource, ns)
    }
    fn get_object(&self, resource: &str, ns: &str, name: &str) -> Option<Value> {
        FakeApiServer::get_object(self, resource, ns, name)
    }
}

/// The cluster of a [`crate::world::World`].
pub enum TestCluster {
    Fake(FakeApiServer),
    Real(RealCluster),
}

impl TestCluster {
    /// The real cluster when [`KUBECONFIG_ENV`] is set, else a fresh fake API server.
    pub async fn for_scenarios() -> TestCluster {
        match std::env::var_os(KUBECONFIG_ENV) {
            Some(path) => TestCluster::Real(RealCluster::connect(path.into()).await),
            None => TestCluster::Fake(crate::harness::fake_api().await),
        }
    }
}

impl Cluster for TestCluster {
    fn config(&self) -> kube::Config {
        match self {
            TestCluster::Fake(f) => Cluster::config(f),
            TestCluster::Real(r) => r.config(),
        }
    }
    fn client(&self) -> kube::Client {
        match self {
            TestCluster::Fake(f) => Cluster::client(f),
            TestCluster::Real(r) => r.client(),
        }
    }
    fn list_objects(&self, resource: &str, ns: Option<&str>) -> Vec<Value> {
        match self {
            TestCluster::Fake(f) => Cluster::list_objects(f, resource, ns),
            TestCluster::Real(r) => r.list_objects(resource, ns),
        }
    }
    fn get_object(&self, resource: &str, ns: &str, name: &str) -> Option<Value> {
        match self {
            TestCluster::Fake(f) => Cluster::get_object(f, resource, ns, name),
            TestCluster::Real(r) => r.get_object(resource, ns, name),
        }
    }
    fn operator_flags(&self) -> Vec<String> {
        match self {
            TestCluster::Fake(_) => Vec::new(),
            TestCluster::Real(r) => r.operator_flags(),
        }
    }
}

/// One scenario's hold on the real cluster.
pub struct RealCluster {
    shared: &'static Shared,
    _turn: tokio::sync::OwnedMutexGuard<()>,
}

/// The real cluster is driven from its own runtime: the assertions are synchronous, and blocking the
/// test's runtime on a client whose connections live on that same runtime would deadlock.
static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime for the real-cluster client")
});

/// One scenario at a time on the shared cluster.
static TURN: LazyLock<Arc<tokio::sync::Mutex<()>>> = LazyLock::new(Arc::default);

/// Set up once per kubeconfig and test process: the connection, discovery, CRDs and namespace.
static SHARED: LazyLock<Mutex<HashMap<PathBuf, &'static Shared>>> = LazyLock::new(Mutex::default);

struct Shared {
    config: kube::Config,
    client: kube::Client,
    /// Plural resource name → what discovery says about it (preferred version).
    resources: HashMap<String, ApiResource>,
}

/// Runs `fut` on the real-cluster runtime.
pub async fn on_runtime<T: Send + 'static>(fut: impl Future<Output = T> + Send + 'static) -> T {
    RUNTIME
        .spawn(fut)
        .await
        .expect("the real-cluster runtime finished the call")
}

/// Runs `fut` on the real-cluster runtime and waits for it on this thread.
fn block_on<T: Send + 'static>(fut: impl Future<Output = T> + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    RUNTIME.spawn(async move {
        let _ = tx.send(fut.await);
    });
    rx.recv()
        .expect("the real-cluster runtime finished the call")
}

impl RealCluster {
    /// Takes this scenario's turn, sets the cluster up on first use and empties the namespace.
    pub async fn connect(kubeconfig: PathBuf) -> RealCluster {
        let turn = TURN.clone().lock_owned().await;
        let known = SHARED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&kubeconfig)
            .copied();
        let shared = match known {
            Some(s) => s,
            None => {
                let s: &'static Shared =
                    Box::leak(Box::new(on_runtime(set_up(kubeconfig.clone())).await));
                SHARED
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(kubeconfig, s);
                s
            }
        };
        on_runtime(empty_namespace(shared.client.clone())).await;
        RealCluster {
            shared,
            _turn: turn,
        }
    }

    fn config(&self) -> kube::Config {
        self.shared.config.clone()
    }

    /// A client for the calling runtime (its connections are made on first use, there).
    fn client(&self) -> kube::Client {
        kube::Client::try_from(self.config()).expect("a client from the kubeconfig")
    }

    fn api(&self, resource: &str, ns: Option<&str>) -> Option<Api<DynamicObject>> {
        let ar = self.shared.resources.get(resource)?;
        let client = self.shared.client.clone();
        Some(match ns {
            Some(ns) => Api::namespaced_with(client, ns, ar),
            None => Api::all_with(client, ar),
        })
    }

    fn list_objects(&self, resource: &str, ns: Option<&str>) -> Vec<Value> {
        let Some(api) = self.api(resource, ns) else {
            return Vec::new();
        };
        let ar = self.shared.resources[resource].clone();
        let list = block_on(async move { api.list(&ListParams::default()).await })
            .unwrap_or_else(|e| panic!("listing {resource}: {e}"));
        list.items.into_iter().map(|o| typed_json(o, &ar)).collect()
    }

    fn get_object(&self, resource: &str, ns: &str, name: &str) -> Option<Value> {
        let api = self.api(resource, Some(ns))?;
        let ar = self.shared.resources[resource].clone();
        let name = name.to_owned();
        let what = format!("{resource} {ns}/{name}");
        block_on(async move { api.get_opt(&name).await })
            .unwrap_or_else(|e| panic!("reading {what}: {e}"))
            .map(|o| typed_json(o, &ar))
    }

    fn operator_flags(&self) -> Vec<String> {
        ["--namespace", NS, "--lease-namespace", NS]
            .map(str::to_owned)
            .to_vec()
    }
}

/// Items of a list come without `apiVersion`/`kind` from a real API server; the typed structs the
/// assertions read want them.
fn typed_json(obj: DynamicObject, ar: &ApiResource) -> Value {
    let mut v = serde_json::to_value(obj).expect("objects serialize");
    v["apiVersion"] = Value::from(ar.api_version.clone());
    v["kind"] = Value::from(ar.kind.clone());
    v
}

async fn set_up(kubeconfig: PathBuf) -> Shared {
    let file = Kubeconfig::read_from(&kubeconfig)
        .unwrap_or_else(|e| panic!("{KUBECONFIG_ENV}={}: {e}", kubeconfig.display()));
    let config = kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{KUBECONFIG_ENV}={}: {e}", kubeconfig.display()));
    let client = kube::Client::try_from(config.clone()).expect("a client from the kubeconfig");
    apply_crds(&client).await;
    let resources = discover(&client).await;
    ensure_namespace(&client).await;
    Shared {
        config,
        client,
        resources,
    }
}

/// `kubectl apply --server-side -f crds/`, then waits until each is Established.
async fn apply_crds(client: &kube::Client) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply("asc-webhook-operator-e2e").force();
    let mut names = Vec::new();
    for doc in crate::harness::crds_as_kubectl_sends_them() {
        let crd: Value = serde_json::from_str(&doc).expect("CRD JSON");
        let name = crd["metadata"]["name"]
            .as_str()
            .expect("CRD name")
            .to_owned();
        crds.patch(&name, &params, &Patch::Apply(&crd))
            .await
            .unwrap_or_else(|e| panic!("applying CRD {name}: {e}"));
        names.push(name);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for name in names {
        loop {
            let crd = crds.get(&name).await.expect("the applied CRD");
            let established = crd.status.and_then(|s| s.conditions).is_some_and(|cs| {
                cs.iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
            });
            if established {
                break;
            }
            assert!(Instant::now() < deadline, "CRD {name} is not Established");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

async fn discover(client: &kube::Client) -> HashMap<String, ApiResource> {
    let discovery = kube::Discovery::new(client.clone())
        .run()
        .await
        .expect("API discovery");
    let mut resources = HashMap::new();
    for group in discovery.groups() {
        for (ar, _caps) in group.recommended_resources() {
            resources.entry(ar.plural.clone()).or_insert(ar);
        }
    }
    resources
}

async fn ensure_namespace(client: &kube::Client) {
    use k8s_openapi::api::core::v1::Namespace;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}});
    namespaces
        .patch(
            NS,
            &PatchParams::apply("asc-webhook-operator-e2e"),
            &Patch::Apply(&ns),
        )
        .await
        .unwrap_or_else(|e| panic!("creating namespace {NS}: {e}"));
}

/// What a scenario leaves behind in [`NS`], oldest owners first; Jobs take their Pods with them.
const SCENARIO_KINDS: [(&str, &str, &str); 7] = [
    ("asc.webhooks.dev", "v1alpha1", "webhookroutes"),
    ("asc.webhooks.dev", "v1alpha1", "webhookdeliveries"),
    ("asc.webhooks.dev", "v1alpha1", "asccredentials"),
    ("batch", "v1", "jobs"),
    ("", "v1", "secrets"),
    ("", "v1", "events"),
    ("coordination.k8s.io", "v1", "leases"),
];

/// Deletes everything an earlier scenario created (finalizers included: no operator runs between
/// scenarios to release them), and waits until it is gone, so deterministic delivery names start fresh.
async fn empty_namespace(client: kube::Client) {
    for (group, version, plural) in SCENARIO_KINDS {
        let gvk = kube::api::GroupVersionKind::gvk(group, version, "");
        let ar = ApiResource::from_gvk_with_plural(&gvk, plural);
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), NS, &ar);
        let existing = api
            .list(&ListParams::default())
            .await
            .unwrap_or_else(|e| panic!("listing {plural} in {NS}: {e}"));
        for obj in existing.items {
            let name = obj.metadata.name.clone().unwrap_or_default();
            if obj
                .metadata
                .finalizers
                .as_ref()
                .is_some_and(|f| !f.is_empty())
            {
                let clear = serde_json::json!({"metadata": {"finalizers": null}});
                let _ = api
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&clear))
                    .await;
            }
            let _ = api.delete(&name, &DeleteParams::background()).await;
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = api
                .list(&ListParams::default())
                .await
                .map(|l| l.items.len());
            if left.is_ok_and(|n| n == 0) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{plural} in namespace {NS} are not deleted"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

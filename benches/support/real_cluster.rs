//! The idle benchmark on a real API server (`ASC_BENCH_KUBECONFIG`): objects are applied server-side,
//! and requests are counted from the server's own `apiserver_request_total`. That counter names no
//! client, so a window of the same length with the operator stopped measures everyone else
//! (kube-controller-manager, the API server's own loops) and is subtracted.

use super::request_total::samples;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// Requests per (verb, resource or resource/subresource), as the API server counts them.
pub type Counts = BTreeMap<(String, String), f64>;

const MANAGER: &str = "asc-webhook-operator-bench";

pub struct RealCluster {
    client: kube::Client,
}

impl RealCluster {
    pub async fn connect(kubeconfig: &Path) -> Result<RealCluster, Box<dyn std::error::Error>> {
        let file = Kubeconfig::read_from(kubeconfig)?;
        let config =
            kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default()).await?;
        Ok(RealCluster {
            client: kube::Client::try_from(config)?,
        })
    }

    /// `kubectl apply --server-side -f crds/`, then waits until each CRD is Established.
    pub async fn apply_crds(&self, dir: &Path) {
        let mut names = Vec::new();
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .expect("crds/")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .collect();
        files.sort();
        for file in files {
            let text = std::fs::read_to_string(&file).expect("CRD file");
            let crd: Value = serde_yaml::from_str(&text).expect("CRD YAML");
            names.push(crd["metadata"]["name"].as_str().expect("name").to_owned());
            self.apply_cluster_scoped("customresourcedefinitions", crd)
                .await;
        }
        let ar = ApiResource {
            group: "apiextensions.k8s.io".into(),
            version: "v1".into(),
            api_version: "apiextensions.k8s.io/v1".into(),
            kind: "CustomResourceDefinition".into(),
            plural: "customresourcedefinitions".into(),
        };
        let crds: Api<DynamicObject> = Api::all_with(self.client.clone(), &ar);
        let deadline = Instant::now() + Duration::from_secs(60);
        for name in names {
            loop {
                let crd = crds.get(&name).await.expect("the applied CRD");
                let established = crd.data["status"]["conditions"]
                    .as_array()
                    .is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c["type"] == "Established" && c["status"] == "True")
                    });
                if established {
                    break;
                }
                assert!(Instant::now() < deadline, "CRD {name} is not Established");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }

    pub async fn ensure_namespace(&self, ns: &str) {
        let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        self.apply_cluster_scoped("namespaces", namespace).await;
    }

    async fn apply_cluster_scoped(&self, plural: &str, obj: Value) {
        let ar = api_resource(&obj, plural);
        let name = obj["metadata"]["name"].as_str().expect("name").to_owned();
        Api::<DynamicObject>::all_with(self.client.clone(), &ar)
            .patch(
                &name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&obj),
            )
            .await
            .unwrap_or_else(|e| panic!("applying {plural} {name}: {e}"));
    }

    /// Server-side apply of a namespaced object (`plural` names its resource).
    pub async fn apply(&self, plural: &str, obj: Value) {
        let ar = api_resource(&obj, plural);
        let ns = obj["metadata"]["namespace"].as_str().expect("namespace");
        let name = obj["metadata"]["name"].as_str().expect("name").to_owned();
        Api::<DynamicObject>::namespaced_with(self.client.clone(), ns, &ar)
            .patch(
                &name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&obj),
            )
            .await
            .unwrap_or_else(|e| panic!("applying {plural} {ns}/{name}: {e}"));
    }

    /// Every WebhookRoute in `ns`, as JSON.
    pub async fn routes(&self, ns: &str) -> Vec<Value> {
        let ar = ApiResource {
            group: "asc.webhooks.dev".into(),
            version: "v1alpha1".into(),
            api_version: "asc.webhooks.dev/v1alpha1".into(),
            kind: "WebhookRoute".into(),
            plural: "webhookroutes".into(),
        };
        Api::<DynamicObject>::namespaced_with(self.client.clone(), ns, &ar)
            .list(&ListParams::default())
            .await
            .map(|l| {
                l.items
                    .into_iter()
                    .filter_map(|o| serde_json::to_value(o).ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The API server's `apiserver_request_total`, summed per verb and resource.
    pub async fn request_counts(&self) -> Counts {
        let request = http::Request::get("/metrics")
            .body(Vec::new())
            .expect("a GET request");
        let text = self
            .client
            .request_text(request)
            .await
            .expect("GET /metrics of the API server (needs the nonResourceURL /metrics)");
        parse_request_total(&text)
    }
}

fn api_resource(obj: &Value, plural: &str) -> ApiResource {
    let api_version = obj["apiVersion"].as_str().expect("apiVersion").to_owned();
    let (group, version) = match api_version.split_once('/') {
        Some((g, v)) => (g.to_owned(), v.to_owned()),
        None => (String::new(), api_version.clone()),
    };
    ApiResource {
        group,
        version,
        api_version,
        kind: obj["kind"].as_str().expect("kind").to_owned(),
        plural: plural.to_owned(),
    }
}

/// Sums `apiserver_request_total` samples per (verb, resource[/subresource]); requests for paths that
/// are not resources (`/metrics`, `/readyz`) have no resource and are left out.
pub fn parse_request_total(text: &str) -> Counts {
    let mut counts = Counts::new();
    for sample in samples(text) {
        let resource = sample.resource();
        if !resource.is_empty() {
            *counts.entry((sample.label("verb"), resource)).or_default() += sample.value;
        }
    }
    counts
}

/// `after - before`, per key, dropping keys that did not move.
pub fn diff(before: &Counts, after: &Counts) -> Counts {
    after
        .iter()
        .map(|(k, a)| (k.clone(), a - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, n)| *n > 0.0)
        .collect()
}

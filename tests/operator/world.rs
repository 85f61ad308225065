//! A world for whole-operator scenarios: fake API server, mock App Store Connect, a Slack/Jira recorder,
//! and one example of `examples/` loaded with test values in place of its placeholders.

use crate::cluster::TestCluster;
use crate::harness::*;
use crate::recorder::Recorder;
use asc_webhook_operator::resources::delivery::Phase;
use asc_webhook_operator::resources::{AscCredential, WebhookDelivery, WebhookRoute};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;
use testkit::apiserver::FakeApiServer;
use testkit::asc_mock::{AscMock, TEST_ISSUER_ID, TEST_KEY_ID};

pub struct World {
    /// The fake API server, or the real cluster of `ASC_E2E_KUBECONFIG` (see [`crate::cluster`]).
    pub api: TestCluster,
    pub asc: AscMock,
    pub hooks: Recorder,
    pub op: Operator,
    /// Every secret value placed in the cluster: none may ever show up in status, Events, metrics or logs.
    pub secret_values: Vec<String>,
}

pub fn test_key_pem() -> String {
    std::fs::read_to_string(Path::new(ROOT).join("tests/fixtures/asc/keys/AuthKey_TEST2K9Q7X.p8"))
        .unwrap()
}

/// The documents of an example file exactly as `kubectl apply` would send them (YAML 1.1 rules).
fn documents(path: &Path) -> Vec<Value> {
    crate::manifests::kubectl_reads_file(path)
}

/// Posts a document exactly as converted (no round trip through the Rust types, which would drop what
/// they do not know, as `kubectl apply` never does).
async fn post_as_is<K>(api: &impl Cluster, doc: Value)
where
    K: kube::Resource<DynamicType = ()>,
{
    let obj: kube::api::DynamicObject = serde_json::from_value(doc).unwrap();
    let resource = kube::api::ApiResource::erase::<K>(&());
    Api::<kube::api::DynamicObject>::namespaced_with(api.client(), NS, &resource)
        .create(&PostParams::default(), &obj)
        .await
        .unwrap_or_else(|e| panic!("creating {} {:?}: {e}", resource.kind, obj.metadata.name));
}

/// Loads `examples/<name>/` into namespace `NS`, swapping placeholders for test values: the webhook
/// secret, the test API key and mock API, and recorder URLs (`<recorder>/<secret name>`).
pub async fn load_example(
    api: &impl Cluster,
    name: &str,
    asc: &AscMock,
    hooks: &Recorder,
) -> Vec<String> {
    load_example_as(api, name, asc, hooks, false).await
}

/// Like [`load_example`]; with `keep_app_store_connect` the route keeps `spec.appStoreConnect` (and its
/// generated secret), exactly as written.
pub async fn load_example_as(
    api: &impl Cluster,
    name: &str,
    asc: &AscMock,
    hooks: &Recorder,
    keep_app_store_connect: bool,
) -> Vec<String> {
    let dir = Path::new(ROOT).join("examples").join(name);
    let mut secret_values = vec![WEBHOOK_SECRET.to_owned()];
    for file in ["secrets.yaml", "credential.yaml", "route.yaml"] {
        for mut doc in documents(&dir.join(file)) {
            doc["metadata"]["namespace"] = Value::from(NS);
            let kind = doc["kind"].as_str().unwrap().to_owned();
            let obj_name = doc["metadata"]["name"].as_str().unwrap().to_owned();
            match kind.as_str() {
                "Secret" => {
                    let data = doc["stringData"]
                        .as_object_mut()
                        .expect("example Secrets use stringData");
                    for (key, value) in data.iter_mut() {
                        let original = value.as_str().unwrap_or_default().to_owned();
                        let replaced = if key.ends_with(".p8") {
                            test_key_pem()
                        } else if key == "secret" {
                            WEBHOOK_SECRET.to_owned()
                        } else if original.starts_with("https://") {
                            format!("{}/{obj_name}", hooks.url)
                        } else {
                            format!("test-{obj_name}-{key}-value")
                        };
                        if !key.ends_with(".p8") {
                            secret_values.push(replaced.clone());
                        }
                        *value = Value::from(replaced);
                    }
                    post_as_is::<Secret>(api, doc).await;
                }
                "AscCredential" => {
                    doc["spec"]["keyId"] = Value::from(TEST_KEY_ID);
                    if doc["spec"].get("issuerId").is_some() {
                        doc["spec"]["issuerId"] = Value::from(TEST_ISSUER_ID);
                    }
                    doc["spec"]["apiUrl"] = Value::from(asc.url());
                    post_as_is::<AscCredential>(api, doc).await;
                }
                "WebhookRoute" => {
                    // These scenarios are about the rules: the route is registered by hand, with the
                    // test secret (registration itself is `apple_webhook`'s and
                    // `apple_webhook::examples`'s subject).
                    if !keep_app_store_connect {
                        if let Some(spec) = doc["spec"].as_object_mut() {
                            spec.remove("appStoreConnect");
                        }
                        let secret = doc["spec"]["secretRef"]["name"]
                            .as_str()
                            .unwrap()
                            .to_owned();
                        if api.get_object("secrets", NS, &secret).is_none() {
                            put_secret(api, &secret, &[("secret", WEBHOOK_SECRET)]).await;
                        }
                    }
                    post_as_is::<WebhookRoute>(api, doc).await;
                }
                other => panic!("unexpected {other} in examples/{name}"),
            }
        }
    }
    // The key's body lines are secret too.
    secret_values.extend(
        test_key_pem()
            .lines()
            .filter(|l| !l.starts_with("-----") && l.len() > 20)
            .map(str::to_owned),
    );
    secret_values
}

/// An example loaded into a fresh fake API server, with no operator running yet.
pub async fn stage(name: &str) -> (FakeApiServer, AscMock, Recorder, Vec<String>) {
    let api = fake_api().await;
    let asc = asc_mock().await;
    let hooks = Recorder::start().await;
    let secret_values = load_example(&api, name, &asc, &hooks).await;
    (api, asc, hooks, secret_values)
}

impl World {
    /// Example `name` loaded and the operator started with `extra` flags, on the fake API server or,
    /// with `ASC_E2E_KUBECONFIG` set, on that real cluster.
    pub async fn example(name: &str, extra: &[&str]) -> World {
        World::example_on(TestCluster::for_scenarios().await, name, extra).await
    }

    /// Example `name` loaded into `api` and the operator started on it.
    pub async fn example_on(api: TestCluster, name: &str, extra: &[&str]) -> World {
        let asc = asc_mock().await;
        let hooks = Recorder::start().await;
        let secret_values = load_example(&api, name, &asc, &hooks).await;
        World::start_on(api, asc, hooks, secret_values, extra).await
    }

    /// Like [`World::example`], always on the fake API server (for scenarios that inject faults).
    pub async fn example_on_fake(name: &str, extra: &[&str]) -> World {
        World::start(stage(name).await, extra).await
    }

    /// The fake API server of a world made by [`World::example_on_fake`] or [`World::start`].
    pub fn fake(&self) -> &FakeApiServer {
        match &self.api {
            TestCluster::Fake(f) => f,
            TestCluster::Real(_) => {
                panic!("this world runs on a real cluster: no faults to inject")
            }
        }
    }

    /// Starts the operator on a world from [`stage`] (possibly changed since): always the fake API
    /// server, whose faults the caller may use.
    pub async fn start(
        (api, asc, hooks, secret_values): (FakeApiServer, AscMock, Recorder, Vec<String>),
        extra: &[&str],
    ) -> World {
        World::start_on(TestCluster::Fake(api), asc, hooks, secret_values, extra).await
    }

    async fn start_on(
        api: TestCluster,
        asc: AscMock,
        hooks: Recorder,
        secret_values: Vec<String>,
        extra: &[&str],
    ) -> World {
        let origin = origin_flags(&asc);
        let op = Operator::start(&api, &flags(extra, &origin)).await;
        World {
            api,
            asc,
            hooks,
            op,
            secret_values,
        }
    }

    pub fn route_name(&self) -> String {
        let routes = self.api.list_objects("webhookroutes", Some(NS));
        routes[0]["metadata"]["name"].as_str().unwrap().to_owned()
    }

    pub async fn wait_route_ready(&self) -> WebhookRoute {
        let name = self.route_name();
        eventually("the route is Ready", Duration::from_secs(15), || {
            let r = get_route(&self.api, &name);
            async move {
                let ready = r
                    .status
                    .as_ref()?
                    .conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True");
                ready.then_some(r)
            }
        })
        .await
    }

    /// Signs and posts a fixture whose links point at the mock API; returns the delivery name.
    pub async fn deliver(&self, body: &[u8]) -> String {
        let (status, answer) = self.op.post(&self.route_name(), body, WEBHOOK_SECRET).await;
        assert_eq!(status, 202, "{answer}");
        answer["delivery"].as_str().unwrap().to_owned()
    }

    pub async fn wait_phase(&self, delivery: &str, wanted: Phase) -> WebhookDelivery {
        eventually(
            &format!("delivery {delivery} is {wanted:?}"),
            Duration::from_secs(20),
            || {
                let d = get_delivery(&self.api, delivery);
                async move { d.filter(|d| d.status.as_ref().is_some_and(|s| s.phase == wanted)) }
            },
        )
        .await
    }

    pub async fn wait_terminal(&self, delivery: &str) -> WebhookDelivery {
        eventually(&format!("delivery {delivery} finishes"), Duration::from_secs(30), || {
            let d = get_delivery(&self.api, delivery);
            async move { d.filter(|d| d.status.as_ref().is_some_and(|s| s.phase.is_terminal())) }
        })
        .await
    }

    /// Asserts no secret value appears in any stored status, Event, metric or captured log line.
    pub async fn assert_no_secret_leaks(&self) {
        let mut haystacks = vec![
            ("metrics".to_owned(), self.op.metrics().await),
            ("logs".to_owned(), crate::logs::captured()),
        ];
        for resource in ["webhookroutes", "webhookdeliveries", "asccredentials"] {
            for obj in self.api.list_objects(resource, Some(NS)) {
                haystacks.push((
                    format!("{resource} status"),
                    obj.get("status").map(Value::to_string).unwrap_or_default(),
                ));
            }
        }
        for event in self.api.list_objects("events", Some(NS)) {
            haystacks.push(("Event".into(), event.to_string()));
        }
        for (what, text) in &haystacks {
            for secret in &self.secret_values {
                assert!(
                    !text.contains(secret.as_str()),
                    "{what} contains the secret value {secret:?}"
                );
            }
        }
    }
}

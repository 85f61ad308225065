//! The committed CRDs and sample resources agree with each other and with the Rust types.

use asc_webhook_operator::resources::{AscCredential, WebhookDelivery, WebhookRoute};
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::path::Path;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The `openAPIV3Schema` of a committed CRD, as a JSON-schema validator.
fn validator(crd_file: &str) -> jsonschema::Validator {
    let crd = crate::manifests::kubectl_reads_file(&Path::new(ROOT).join("crds").join(crd_file))
        .remove(0);
    let schema = crd
        .pointer("/spec/versions/0/schema/openAPIV3Schema")
        .unwrap();
    jsonschema::validator_for(schema).unwrap()
}

/// A sample resource as kubectl would send it.
fn sample(name: &str) -> Value {
    crate::manifests::kubectl_reads_file(
        &Path::new(ROOT).join("tests/fixtures/resources").join(name),
    )
    .remove(0)
}

fn assert_valid<T: DeserializeOwned>(crd_file: &str, sample_file: &str) -> T {
    let value = sample(sample_file);
    let errors: Vec<String> = validator(crd_file)
        .iter_errors(&value)
        .map(|e| format!("{e} at {}", e.instance_path))
        .collect();
    assert!(errors.is_empty(), "{sample_file}: {errors:?}");
    serde_json::from_value(value)
        .unwrap_or_else(|e| panic!("{sample_file} does not deserialize: {e}"))
}

#[test]
fn sample_credential_deserializes_and_validates() {
    let c: AscCredential = assert_valid("asccredentials.yaml", "asccredential.yaml");
    assert_eq!(c.spec.key_id, "TEST2K9Q7X");
    assert_eq!(c.spec.api_url(), "https://api.appstoreconnect.apple.com");
}

#[test]
fn sample_route_deserializes_and_validates() {
    let r: WebhookRoute = assert_valid("webhookroutes.yaml", "webhookroute.yaml");
    assert_eq!(r.spec.rules.len(), 2);
    assert!(r.spec.rules[0].job.as_ref().unwrap().inject_api_key);
    assert_eq!(r.spec.history_limit(), 50);
}

#[test]
fn sample_delivery_deserializes_and_validates() {
    let d: WebhookDelivery = assert_valid("webhookdeliveries.yaml", "webhookdelivery.yaml");
    assert_eq!(d.spec.new_state.as_deref(), Some("FAILED"));
}

#[test]
fn schema_refuses_a_route_with_a_bad_rule_name_or_no_secret() {
    let v = validator("webhookroutes.yaml");
    let mut route = sample("webhookroute.yaml");
    route["spec"]["rules"][0]["name"] = Value::from("Not A DNS Label");
    assert!(!v.is_valid(&route));
    let mut route = sample("webhookroute.yaml");
    route["spec"].as_object_mut().unwrap().remove("secretRef");
    assert!(!v.is_valid(&route));
}

#[test]
fn schema_refuses_an_empty_key_id() {
    let mut c = sample("asccredential.yaml");
    c["spec"]["keyId"] = Value::from("");
    assert!(!validator("asccredentials.yaml").is_valid(&c));
}

/// `kubectl apply --dry-run=client -f crds/` against the fake API server (kubectl needs a server for
/// discovery even in client dry-run).
#[tokio::test]
async fn kubectl_client_dry_run_accepts_the_committed_crds() {
    let api = testkit::apiserver::FakeApiServer::start(Default::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig).unwrap();
    let kubectl = std::env::var("ASC_KUBECTL").unwrap_or_else(|_| "kubectl".into());
    let out = tokio::process::Command::new(&kubectl)
        .args(["apply", "--dry-run=client", "--validate=false", "-f"])
        .arg(Path::new(ROOT).join("crds"))
        .env("KUBECONFIG", &kubeconfig)
        .output()
        .await
        .unwrap_or_else(|e| panic!("{kubectl} not runnable ({e}): run the tests with `bash .ci/test`, which installs it"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in ["asccredentials", "webhookroutes", "webhookdeliveries"] {
        assert!(
            stdout.contains(&format!("{name}.asc.webhooks.dev created (dry run)")),
            "{stdout}"
        );
    }
}

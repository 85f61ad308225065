//! Manifests as kubectl, Helm and Argo CD see them, and the rule that keeps the two views equal.
//!
//! Those tools read YAML 1.1, where a bare `on`, `yes`, `no`, `y`, `n` (and `true`, `false`, `null`, `~`)
//! is not a string: a property named so silently becomes `"true"` or `"false"` on its way to the API
//! server. So every test that loads a file meant for `kubectl apply` converts it with kubectl itself
//! ([`kubectl_reads`]), and [`no_property_name_is_a_yaml_1_1_boolean_or_null`] refuses such names in every
//! schema, manifest, rendered chart and documented snippet of the repository.

use crate::harness::ROOT;
use asc_webhook_operator::resources::crds;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use testkit::kubectl::Kubectl;

/// One kubectl for the whole test binary, bound to a private fake API server that knows the committed CRDs.
pub fn kubectl() -> &'static Kubectl {
    static K: LazyLock<Kubectl> = LazyLock::new(|| {
        let bin = std::env::var("ASC_KUBECTL").unwrap_or_else(|_| "kubectl".into());
        let mut crds = Vec::new();
        // The project's CRDs, and stand-ins for the third-party kinds the chart can render.
        for dir in ["crds", "tests/fixtures/crds"] {
            for e in std::fs::read_dir(Path::new(ROOT).join(dir)).unwrap() {
                crds.push(std::fs::read_to_string(e.unwrap().path()).unwrap());
            }
        }
        Kubectl::start(bin, crds)
    });
    &K
}

/// The documents of YAML text as kubectl would send them to the API server.
pub fn kubectl_reads(yaml: &str) -> Vec<Value> {
    kubectl()
        .to_json(yaml)
        .unwrap_or_else(|e| panic!("{e}\n--- input ---\n{yaml}"))
}

/// The documents of a file as kubectl would send them to the API server.
pub fn kubectl_reads_file(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    kubectl()
        .to_json(&text)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Keys YAML 1.1 resolves to a boolean or null instead of a string.
const YAML_1_1_WORDS: &[&str] = &[
    "y", "n", "yes", "no", "on", "off", "true", "false", "null", "~",
];

fn is_yaml_1_1_word(key: &str) -> bool {
    YAML_1_1_WORDS.iter().any(|w| w.eq_ignore_ascii_case(key))
}

/// Every mapping key of a parsed document, with its path, that YAML 1.1 would not read as that string.
fn bad_keys(v: &serde_yaml::Value, at: &str, out: &mut Vec<String>) {
    match v {
        serde_yaml::Value::Mapping(m) => {
            for (k, child) in m {
                let name = match k {
                    serde_yaml::Value::String(s) => s.clone(),
                    // A YAML 1.2 parser already read it as something other than a string.
                    other => format!("{other:?}"),
                };
                let path = format!("{at}.{name}");
                if !matches!(k, serde_yaml::Value::String(_)) || is_yaml_1_1_word(&name) {
                    out.push(path.clone());
                }
                bad_keys(child, &path, out);
            }
        }
        serde_yaml::Value::Sequence(s) => {
            for (i, child) in s.iter().enumerate() {
                bad_keys(child, &format!("{at}[{i}]"), out);
            }
        }
        serde_yaml::Value::Tagged(t) => bad_keys(&t.value, at, out),
        _ => {}
    }
}

/// Property names in a JSON schema (`properties` maps, at any depth).
fn bad_schema_properties(v: &Value, at: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                if k == "properties"
                    && let Some(props) = child.as_object()
                {
                    for (name, schema) in props {
                        let path = format!("{at}.{name}");
                        if is_yaml_1_1_word(name) {
                            out.push(path.clone());
                        }
                        bad_schema_properties(schema, &path, out);
                    }
                } else {
                    bad_schema_properties(child, at, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|c| bad_schema_properties(c, at, out)),
        _ => {}
    }
}

fn yaml_docs_keys(text: &str, origin: &str, out: &mut Vec<String>) {
    use serde::Deserialize as _;
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let v = serde_yaml::Value::deserialize(doc)
            .unwrap_or_else(|e| panic!("{origin}: document {i} is not YAML: {e}"));
        bad_keys(&v, &format!("{origin}#{i}"), out);
    }
}

/// Every `*.yaml`/`*.yml` file under `dir` that is YAML on disk (chart templates are Go templates: their
/// rendered output is checked instead).
fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if name == "target" || name.starts_with('.') || name == "templates" || name == "corpus"
            {
                continue;
            }
            yaml_files(&path, out);
        } else if name.ends_with(".yaml") || name.ends_with(".yml") {
            out.push(path);
        }
    }
}

/// Markdown files of the repository (README, examples, docs).
fn markdown_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if name == "target" || name.starts_with('.') || name == "corpus" {
                continue;
            }
            markdown_files(&path, out);
        } else if name.ends_with(".md") {
            out.push(path);
        }
    }
}

/// The ```yaml fenced blocks of a Markdown text.
fn yaml_snippets(markdown: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        let trimmed = line.trim_start();
        match &mut current {
            None if trimmed.starts_with("```yaml") || trimmed.starts_with("```yml") => {
                current = Some(String::new())
            }
            Some(_) if trimmed.starts_with("```") => out.extend(current.take()),
            Some(buf) => {
                buf.push_str(line);
                buf.push('\n');
            }
            None => {}
        }
    }
    out
}

#[test]
fn no_property_name_is_a_yaml_1_1_boolean_or_null() {
    let mut bad = Vec::new();
    for (file, crd) in crds::all() {
        let v = serde_json::to_value(&crd).unwrap();
        bad_schema_properties(&v, &format!("generated {file}"), &mut bad);
    }
    let root = Path::new(ROOT);
    let mut files = Vec::new();
    yaml_files(root, &mut files);
    assert!(
        files
            .iter()
            .any(|f| f.ends_with("examples/submit-after-processing/route.yaml")),
        "the walk must reach the examples: {files:?}"
    );
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let origin = f.strip_prefix(root).unwrap().display().to_string();
        let mut found = Vec::new();
        yaml_docs_keys(&text, &origin, &mut found);
        if origin.contains("/github/workflows/") {
            // A GitHub Actions workflow is read by GitHub alone, whose parser takes its top-level `on`
            // (the documented trigger key) as a string; every other key is still checked.
            found.retain(|p| *p != format!("{origin}#0.on"));
        }
        bad.extend(found);
    }
    for (name, rendered) in crate::chart::rendered_outputs() {
        yaml_docs_keys(&rendered, &format!("helm template ({name})"), &mut bad);
    }
    let mut docs = Vec::new();
    markdown_files(root, &mut docs);
    let mut snippets = 0;
    for f in &docs {
        let text = std::fs::read_to_string(f).unwrap();
        let origin = f.strip_prefix(root).unwrap().display().to_string();
        for (i, s) in yaml_snippets(&text).iter().enumerate() {
            snippets += 1;
            yaml_docs_keys(s, &format!("{origin} snippet {i}"), &mut bad);
        }
    }
    assert!(snippets > 0, "the README's YAML snippets must be checked");
    assert!(
        bad.is_empty(),
        "property names YAML 1.1 tools (kubectl, Helm, Argo CD) read as booleans or null; rename them:\n{}",
        bad.join("\n")
    );
}

#[test]
fn the_key_check_catches_what_yaml_1_1_would_turn_into_a_boolean() {
    let mut bad = Vec::new();
    yaml_docs_keys(
        "spec:\n  rules:\n  - name: a\n    on: {eventTypes: [X]}\n    Yes: 1\n    match: {}\n",
        "t",
        &mut bad,
    );
    assert_eq!(bad, vec!["t#0.spec.rules[0].on", "t#0.spec.rules[0].Yes"]);
}

/// What the whole issue was about: kubectl turns a bare `on:` into `"true"`. If this ever stops being
/// true of the kubectl the tests run, the conversion above proves nothing.
#[test]
fn kubectl_reads_a_bare_on_key_as_true() {
    let docs = kubectl_reads(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: ios}\ndata:\n  on: a\n  match: b\n",
    );
    let data = docs[0]["data"].as_object().unwrap();
    assert!(data.contains_key("true"), "{data:?}");
    assert!(!data.contains_key("on"), "{data:?}");
    assert_eq!(data["match"], "b");
}

/// Use case 1 as a new user meets it: the example applied as kubectl sends it. A failed build must not
/// start a submission; a completed one starts exactly one.
#[tokio::test]
async fn submit_example_applied_as_kubectl_would_acts_only_on_completed_builds() {
    use crate::harness::*;
    use asc_webhook_operator::resources::delivery::Phase;
    let w = crate::world::World::example("submit-after-processing", &[]).await;
    let route = w.wait_route_ready().await;
    let filter = route.spec.rules[0]
        .filter
        .clone()
        .expect("the stored rule kept its filter");
    assert_eq!(filter.new_states, vec!["COMPLETE"]);

    let failed = w
        .deliver(&fixture_for_mock("build-upload-failed", &w.asc))
        .await;
    let d = w.wait_terminal(&failed).await;
    assert_eq!(d.status.unwrap().phase, Phase::NoMatch);
    assert!(jobs(&w.api).is_empty(), "a failed build started a Job");

    let complete = w
        .deliver(&fixture_for_mock("build-upload-complete", &w.asc))
        .await;
    w.wait_phase(&complete, Phase::Running).await;
    assert_eq!(jobs(&w.api).len(), 1);
}

/// A route still written with the old `on:` key reaches the API server as `"true": {...}` and without
/// `match`: the schema refuses it with a message that names the field, instead of storing a rule that
/// matches everything.
#[tokio::test]
async fn a_route_written_with_the_old_on_key_is_refused_naming_match() {
    use crate::harness::*;
    let api = fake_api().await;
    let yaml = format!(
        "apiVersion: asc.webhooks.dev/v1alpha1\nkind: WebhookRoute\nmetadata:\n  name: old\n  namespace: {NS}\nspec:\n  secretRef: {{name: hook-secret, key: secret}}\n  rules:\n  - name: submit\n    on: {{newStates: [COMPLETE]}}\n    http: {{urlSecretRef: {{name: slack, key: url}}}}\n"
    );
    let doc = kubectl_reads(&yaml).remove(0);
    assert!(doc["spec"]["rules"][0].get("true").is_some(), "{doc}");
    let obj: kube::api::DynamicObject = serde_json::from_value(doc).unwrap();
    let resource =
        kube::api::ApiResource::erase::<asc_webhook_operator::resources::WebhookRoute>(&());
    let err = kube::Api::<kube::api::DynamicObject>::namespaced_with(api.client(), NS, &resource)
        .create(&Default::default(), &obj)
        .await
        .expect_err("a rule without match must be refused");
    let kube::Error::Api(status) = err else {
        panic!("{err}")
    };
    assert_eq!(status.code, 422, "{status:?}");
    assert!(status.message.contains("match"), "{}", status.message);
}

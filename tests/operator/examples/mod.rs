//! `examples/`: every document is a resource of the right type that the committed CRD schemas accept, every
//! reference stays in the namespace and resolves inside the example, the rules keep the CRDs' CEL rules,
//! Jobs get event data only through the environment, HTTP bodies stay valid JSON whatever an event holds,
//! and each example reacts to the events its README names.

use asc_webhook_operator::actions::EventContext;
use asc_webhook_operator::actions::job::parse_template;
use asc_webhook_operator::actions::{resource, template, when};
use asc_webhook_operator::asc::enrich::Enrichment;
use asc_webhook_operator::asc::event::WebhookEvent;
use asc_webhook_operator::controllers::matching::{EventFacts, matching_rules};
use asc_webhook_operator::receiver::record::build_delivery;
use asc_webhook_operator::resources::route::{EnrichPolicy, Rule};
use asc_webhook_operator::resources::{AscCredential, WebhookRoute};
use k8s_openapi::api::batch::v1::JobTemplateSpec;
use k8s_openapi::api::core::v1::{Container, Secret};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// The namespace examples are applied to in these tests (the files themselves carry none).
const NS: &str = "ios";

pub(crate) const EXAMPLES: &[&str] = &[
    "submit-after-processing",
    "gitflow-merge-on-release",
    "release-message",
    "failure-notifier",
    "testflight-feedback",
    "github-actions-submission",
    "tekton-submission",
    "argo-workflows-submission",
];

// ---------------------------------------------------------------------------------------------------------
// Loading

/// An OpenAPI v3 (Kubernetes structural) schema as JSON Schema: `nullable: true` admits `null`.
fn openapi_to_json_schema(node: &Value) -> Value {
    let Some(m) = node.as_object() else {
        return node.clone();
    };
    let mut out = Map::new();
    for (k, v) in m {
        let converted = match k.as_str() {
            "nullable" => continue,
            "properties" => Value::Object(
                v.as_object()
                    .unwrap()
                    .iter()
                    .map(|(pk, pv)| (pk.clone(), openapi_to_json_schema(pv)))
                    .collect(),
            ),
            "items" | "additionalProperties" => openapi_to_json_schema(v),
            "allOf" | "anyOf" | "oneOf" => Value::Array(
                v.as_array()
                    .unwrap()
                    .iter()
                    .map(openapi_to_json_schema)
                    .collect(),
            ),
            _ => v.clone(),
        };
        out.insert(k.clone(), converted);
    }
    if m.get("nullable") == Some(&Value::Bool(true)) {
        return json!({"anyOf": [{"type": "null"}, Value::Object(out)]});
    }
    Value::Object(out)
}

fn crd_validator(file: &str) -> jsonschema::Validator {
    let crd =
        crate::manifests::kubectl_reads_file(&Path::new(ROOT).join("crds").join(file)).remove(0);
    let schema = crd
        .pointer("/spec/versions/0/schema/openAPIV3Schema")
        .expect("openAPIV3Schema");
    jsonschema::validator_for(&openapi_to_json_schema(schema)).unwrap()
}

fn schema_errors(v: &jsonschema::Validator, doc: &Value) -> Vec<String> {
    v.iter_errors(doc)
        .map(|e| format!("{e} at {}", e.instance_path))
        .collect()
}

/// The CEL rules of a CRD (`x-kubernetes-validations`), to check the Rust restatement below is complete.
fn cel_rules(file: &str) -> BTreeSet<String> {
    fn walk(v: &Value, out: &mut BTreeSet<String>) {
        match v {
            Value::Object(m) => {
                for (k, child) in m {
                    if k == "x-kubernetes-validations" {
                        for rule in child.as_array().unwrap() {
                            out.insert(rule["rule"].as_str().unwrap().to_owned());
                        }
                    } else {
                        walk(child, out);
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|c| walk(c, out)),
            _ => {}
        }
    }
    let crd =
        crate::manifests::kubectl_reads_file(&Path::new(ROOT).join("crds").join(file)).remove(0);
    let mut out = BTreeSet::new();
    walk(&crd, &mut out);
    out
}

/// One example directory, loaded and checked document by document.
struct Example {
    name: String,
    secrets: Vec<Secret>,
    credentials: Vec<AscCredential>,
    routes: Vec<WebhookRoute>,
}

/// The documents of an example file as `kubectl apply` would send them (YAML 1.1 rules).
fn docs_in(path: &Path) -> Vec<Value> {
    crate::manifests::kubectl_reads_file(path)
}

fn typed<T: DeserializeOwned>(doc: &Value, at: &str) -> T {
    serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{at}: {e}"))
}

fn load(name: &str) -> Example {
    let dir = Path::new(ROOT).join("examples").join(name);
    let routes_v = crd_validator("webhookroutes.yaml");
    let creds_v = crd_validator("asccredentials.yaml");
    let mut ex = Example {
        name: name.to_owned(),
        secrets: vec![],
        credentials: vec![],
        routes: vec![],
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    for file in files {
        let fname = file.file_name().unwrap().to_string_lossy().into_owned();
        for (i, doc) in docs_in(&file).into_iter().enumerate() {
            let at = format!("examples/{name}/{fname} document {i}");
            assert!(
                doc.pointer("/metadata/namespace").is_none(),
                "{at}: no metadata.namespace, so `kubectl apply -n` chooses it"
            );
            let (api_version, kind) = (
                doc["apiVersion"].as_str().unwrap_or_default(),
                doc["kind"].as_str().unwrap_or_default(),
            );
            let expected_file = match (api_version, kind) {
                ("v1", "Secret") => {
                    ex.secrets.push(typed(&doc, &at));
                    "secrets.yaml"
                }
                ("asc.webhooks.dev/v1alpha1", "AscCredential") => {
                    let errors = schema_errors(&creds_v, &doc);
                    assert!(errors.is_empty(), "{at}: {errors:?}");
                    ex.credentials.push(typed(&doc, &at));
                    "credential.yaml"
                }
                ("asc.webhooks.dev/v1alpha1", "WebhookRoute") => {
                    let errors = schema_errors(&routes_v, &doc);
                    assert!(errors.is_empty(), "{at}: {errors:?}");
                    ex.routes.push(typed(&doc, &at));
                    "route.yaml"
                }
                other => panic!("{at}: unexpected {other:?}"),
            };
            assert_eq!(
                fname, expected_file,
                "{at}: {kind} belongs in {expected_file}"
            );
        }
    }
    ex
}

fn all_examples() -> Vec<Example> {
    EXAMPLES.iter().map(|n| load(n)).collect()
}

fn route(ex: &Example) -> &WebhookRoute {
    assert_eq!(ex.routes.len(), 1, "{}: one route", ex.name);
    &ex.routes[0]
}

fn rule<'a>(r: &'a WebhookRoute, name: &str) -> &'a Rule {
    r.spec
        .rules
        .iter()
        .find(|x| x.name == name)
        .unwrap_or_else(|| panic!("rule {name}"))
}

fn containers(t: &JobTemplateSpec) -> Vec<Container> {
    let pod = t.spec.clone().unwrap().template.spec.unwrap();
    pod.containers
        .into_iter()
        .chain(pod.init_containers.into_iter().flatten())
        .collect()
}

// ---------------------------------------------------------------------------------------------------------
// Shape

#[test]
fn every_example_directory_has_its_four_files() {
    let on_disk: BTreeSet<String> = std::fs::read_dir(Path::new(ROOT).join("examples"))
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let listed: BTreeSet<String> = EXAMPLES.iter().map(|s| s.to_string()).collect();
    assert_eq!(on_disk, listed, "every example directory is tested here");
    for name in EXAMPLES {
        for file in ["secrets.yaml", "credential.yaml", "route.yaml", "README.md"] {
            assert!(
                Path::new(ROOT)
                    .join("examples")
                    .join(name)
                    .join(file)
                    .is_file(),
                "examples/{name}/{file}"
            );
        }
        let ex = load(name);
        assert_eq!(ex.credentials.len(), 1, "{name}");
        assert!(!route(&ex).spec.rules.is_empty(), "{name}");
        assert!(!ex.secrets.is_empty(), "{name}");
    }
}

#[test]
fn the_schema_check_is_not_vacuous() {
    // The same checks on broken copies must fail, or the acceptance above means nothing.
    let v = crd_validator("webhookroutes.yaml");
    let path = Path::new(ROOT).join("examples/failure-notifier/route.yaml");
    let good = docs_in(&path).remove(0);
    assert!(schema_errors(&v, &good).is_empty());
    let mut bad = good.clone();
    bad["spec"]["rules"][0]["name"] = json!("Not A Label");
    assert!(!schema_errors(&v, &bad).is_empty());
    let mut bad = good.clone();
    bad["spec"]["rules"][0]["enrich"] = json!("Sometimes");
    assert!(!schema_errors(&v, &bad).is_empty());
    let mut bad = good.clone();
    bad["spec"]["rules"][0]["http"]["method"] = json!("FETCH");
    assert!(!schema_errors(&v, &bad).is_empty());
    // `nullable` fields accept null, as the API server does.
    let mut ok = good;
    ok["spec"]["rules"][0]["http"]["method"] = Value::Null;
    assert!(schema_errors(&v, &ok).is_empty());
    let c = crd_validator("asccredentials.yaml");
    let path = Path::new(ROOT).join("examples/failure-notifier/credential.yaml");
    let mut bad = docs_in(&path).remove(0);
    bad["spec"]
        .as_object_mut()
        .unwrap()
        .remove("privateKeySecretRef");
    assert!(!schema_errors(&c, &bad).is_empty());
}

#[test]
fn secrets_hold_only_marked_placeholders() {
    for ex in all_examples() {
        for s in &ex.secrets {
            let name = s.metadata.name.clone().unwrap();
            assert!(
                s.data.is_none(),
                "{}/{name}: use stringData, readable placeholders",
                ex.name
            );
            let data = s.string_data.clone().unwrap_or_default();
            assert!(!data.is_empty(), "{}/{name}", ex.name);
            for (k, v) in data {
                assert!(
                    v.contains("REPLACE_ME"),
                    "{}/{name}.{k} must be a placeholder marked REPLACE_ME",
                    ex.name
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// References

/// Every reference stays in the namespace (no `namespace` field) and resolves to an object of the same
/// example, with the key it names.
#[test]
fn references_stay_in_the_namespace_and_resolve_within_the_example() {
    for ex in all_examples() {
        let secrets: BTreeMap<String, BTreeSet<String>> = ex
            .secrets
            .iter()
            .map(|s| {
                (
                    s.metadata.name.clone().unwrap(),
                    s.string_data
                        .clone()
                        .unwrap_or_default()
                        .into_keys()
                        .collect(),
                )
            })
            .collect();
        let credentials: BTreeSet<String> = ex
            .credentials
            .iter()
            .map(|c| c.metadata.name.clone().unwrap())
            .collect();
        let at = |what: &str| format!("examples/{}: {what}", ex.name);
        let key_ref = |what: &str, name: &str, key: &str, ns: &Option<String>| {
            assert!(ns.is_none(), "{}", at(&format!("{what} names a namespace")));
            let keys = secrets
                .get(name)
                .unwrap_or_else(|| panic!("{}", at(&format!("{what}: no Secret {name}"))));
            assert!(
                keys.contains(key),
                "{}",
                at(&format!("{what}: {name} has no key {key}"))
            );
        };
        for c in &ex.credentials {
            let r = &c.spec.private_key_secret_ref;
            key_ref("privateKeySecretRef", &r.name, &r.key, &r.namespace);
        }
        for r in &ex.routes {
            let s = &r.spec;
            // With generateSecret the operator creates the webhook Secret; an example must not ship one.
            let generated = s
                .app_store_connect
                .as_ref()
                .is_some_and(|a| a.generate_secret);
            if generated {
                assert!(
                    !secrets.contains_key(&s.secret_ref.name),
                    "{}",
                    at("secretRef is generated: no placeholder Secret for it")
                );
            } else {
                key_ref(
                    "secretRef",
                    &s.secret_ref.name,
                    &s.secret_ref.key,
                    &s.secret_ref.namespace,
                );
            }
            if let Some(c) = &s.credential_ref {
                assert!(
                    c.namespace.is_none(),
                    "{}",
                    at("credentialRef names a namespace")
                );
                assert!(
                    credentials.contains(&c.name),
                    "{}",
                    at("credentialRef resolves")
                );
            }
            for rule in &s.rules {
                if let Some(h) = &rule.http {
                    let u = &h.url_secret_ref;
                    key_ref("urlSecretRef", &u.name, &u.key, &u.namespace);
                    if let Some(hs) = &h.headers_secret_ref {
                        assert!(
                            hs.namespace.is_none(),
                            "{}",
                            at("headersSecretRef namespace")
                        );
                        assert!(secrets.contains_key(&hs.name), "{}", at("headersSecretRef"));
                    }
                }
                if let Some(j) = &rule.job {
                    let t: JobTemplateSpec = serde_json::from_value(j.template.clone()).unwrap();
                    for c in containers(&t) {
                        for e in c.env.into_iter().flatten() {
                            if let Some(sk) = e.value_from.and_then(|v| v.secret_key_ref) {
                                key_ref(&format!("env {}", e.name), &sk.name, &sk.key, &None);
                            }
                        }
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// The CRDs' CEL rules, restated

/// The CEL rules the CRDs carry; if one is added, restate it in `rules_keep_the_crd_validation_rules`.
#[test]
fn the_cel_rules_restated_here_are_all_there_is() {
    let mut all = cel_rules("webhookroutes.yaml");
    all.extend(cel_rules("asccredentials.yaml"));
    assert_eq!(
        all,
        BTreeSet::from([
            "[has(self.job), has(self.http), has(self.resource)].filter(x, x).size() == 1"
                .to_string(),
            "self.all(a, self.filter(b, b.name == a.name).size() == 1)".to_string(),
            "!has(self.appStoreConnect) || has(self.credentialRef)".to_string(),
        ])
    );
}

#[test]
fn rules_keep_the_crd_validation_rules() {
    for ex in all_examples() {
        for r in &ex.routes {
            // !has(self.appStoreConnect) || has(self.credentialRef)
            assert!(
                r.spec.app_store_connect.is_none() || r.spec.credential_ref.is_some(),
                "{}: appStoreConnect needs credentialRef",
                ex.name
            );
            let mut names = BTreeSet::new();
            for rule in &r.spec.rules {
                let at = format!("{}/{}", ex.name, rule.name);
                // [has(self.job), has(self.http), has(self.resource)].filter(x, x).size() == 1
                let actions = [
                    rule.job.is_some(),
                    rule.http.is_some(),
                    rule.resource.is_some(),
                ];
                assert_eq!(
                    actions.iter().filter(|x| **x).count(),
                    1,
                    "{at}: exactly one of job, http or resource"
                );
                // self.all(a, self.filter(b, b.name == a.name).size() == 1)
                assert!(names.insert(rule.name.clone()), "{at}: duplicate rule name");
                // What the controller checks before any event: the API key and enrichment need a credential.
                if rule.job.as_ref().is_some_and(|j| j.inject_api_key)
                    || rule.enrich == EnrichPolicy::Required
                {
                    assert!(r.spec.credential_ref.is_some(), "{at}: needs credentialRef");
                }
                if let Some(h) = &rule.http {
                    let body = h.body.as_deref().unwrap_or_default();
                    template::validate(body).unwrap_or_else(|e| panic!("{at}: template: {e}"));
                }
                // What the route controller checks: the template renders to an object of a kind, and the
                // expressions compile.
                if let Some(res) = &rule.resource {
                    resource::validate(res).unwrap_or_else(|e| panic!("{at}: {e}"));
                    for src in [&res.succeeded_when, &res.failed_when]
                        .into_iter()
                        .flatten()
                    {
                        when::compile(src).unwrap_or_else(|e| panic!("{at}: {e}"));
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Jobs

#[test]
fn job_templates_are_job_template_specs_that_read_event_data_from_the_environment() {
    let mut jobs = 0;
    for ex in all_examples() {
        for r in &ex.routes {
            for rule in &r.spec.rules {
                let Some(job) = &rule.job else { continue };
                jobs += 1;
                let at = format!("{}/{}", ex.name, rule.name);
                let t: JobTemplateSpec = serde_json::from_value(job.template.clone())
                    .unwrap_or_else(|e| panic!("{at}: not a JobTemplateSpec: {e}"));
                let cs = containers(&t);
                assert!(!cs.is_empty(), "{at}: at least one container");
                // The operator's own check of the template, as the controller runs it.
                parse_template(&job.template).unwrap_or_else(|e| panic!("{at}: {e}"));
                for c in cs {
                    assert!(c.image.as_deref().is_some_and(|i| !i.is_empty()), "{at}");
                    for word in c.command.iter().flatten().chain(c.args.iter().flatten()) {
                        // `$(VAR)` is expanded by the kubelet into the command line itself.
                        assert!(
                            !word.contains("$(ASC_"),
                            "{at}: $(ASC_…) splices event data"
                        );
                        assert!(!word.contains("{{"), "{at}: no templating in commands");
                        // In a shell script, event variables are only expanded inside double quotes.
                        for (i, _) in word
                            .match_indices("$ASC_")
                            .chain(word.match_indices("${ASC_"))
                        {
                            assert!(
                                word[..i].ends_with('"'),
                                "{at}: unquoted event variable in {word:?}"
                            );
                        }
                    }
                }
            }
        }
    }
    assert_eq!(
        jobs, 2,
        "submit-after-processing and gitflow-merge-on-release"
    );
}

#[test]
fn the_submission_job_gets_the_api_key_and_needs_enrichment() {
    let ex = load("submit-after-processing");
    let r = route(&ex);
    let submit = rule(r, "submit-for-review");
    assert_eq!(submit.enrich, EnrichPolicy::Required);
    let job = submit.job.as_ref().unwrap();
    assert!(job.inject_api_key);
    let t: JobTemplateSpec = serde_json::from_value(job.template.clone()).unwrap();
    let c = &containers(&t)[0];
    assert_eq!(
        c.command.clone().unwrap(),
        ["bundle", "exec", "fastlane", "ios", "submit_for_review"]
    );
}

#[test]
fn the_gitflow_job_takes_git_credentials_by_reference() {
    let ex = load("gitflow-merge-on-release");
    let r = route(&ex);
    let merge = rule(r, "merge-release");
    assert_eq!(
        merge.enrich,
        EnrichPolicy::Required,
        "the version comes from the API"
    );
    let t: JobTemplateSpec =
        serde_json::from_value(merge.job.as_ref().unwrap().template.clone()).unwrap();
    let c = &containers(&t)[0];
    let env = c.env.clone().unwrap();
    for name in ["GIT_USERNAME", "GIT_TOKEN"] {
        let e = env.iter().find(|e| e.name == name).unwrap();
        assert!(e.value.is_none(), "{name} never inline");
        assert_eq!(
            e.value_from
                .as_ref()
                .unwrap()
                .secret_key_ref
                .as_ref()
                .unwrap()
                .name,
            "git-credentials"
        );
    }
    let script = c.args.clone().unwrap().join("\n");
    assert!(
        script.contains("\"release/$version\"") || script.contains("\"origin/release/$version\"")
    );
    assert!(script.contains("main develop"));
}

// ---------------------------------------------------------------------------------------------------------
// Which events each example reacts to

mod behaviour;

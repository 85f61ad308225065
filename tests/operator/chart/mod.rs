//! The Helm chart (`charts/asc-webhook-operator`): it lints, its schema refuses typos, and what it renders
//! grants exactly the API calls the operator makes, runs non-root on a read-only root filesystem, and
//! passes every setting as an `ASC_*` variable the binary accepts.
//!
//! These tests run the real `helm` (from `ASC_HELM` or `PATH`); `bash .ci/test` installs it.

use asc_webhook_operator::cli::Cli;
use clap::CommandFactory;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, EnvVar, PodSpec, Service};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::rbac::v1::{PolicyRule, RoleBinding};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const RELEASE: &str = "asc";
const RELEASE_NAMESPACE: &str = "asc-system";
const ALL_OPTIONS: &str = "charts/asc-webhook-operator/ci/all-options-values.yaml";

fn chart_dir() -> PathBuf {
    Path::new(ROOT).join("charts/asc-webhook-operator")
}

/// `helm`, from `ASC_HELM` or `PATH`. Missing helm fails the test: the chart must not go untested.
fn helm() -> PathBuf {
    if let Some(p) = std::env::var_os("ASC_HELM").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("helm"))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "helm not found (neither ASC_HELM nor PATH has it): run the tests with `bash .ci/test`, which \
             installs helm into ~/.cache/asc-webhook-operator/bin, or set ASC_HELM=/path/to/helm"
        )
    })
}

fn run_helm(args: &[&str]) -> Output {
    let helm = helm();
    Command::new(&helm)
        .args(args)
        .current_dir(ROOT)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}; run `bash .ci/test`", helm.display()))
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Every document of `helm template`'s output, as kubectl would send it to the API server (YAML 1.1
/// rules, as `kubectl apply`, `helm install` and Argo CD apply it).
fn parse_docs(yaml: &str) -> Vec<Value> {
    crate::manifests::kubectl_reads(yaml)
}

/// `helm template`'s raw output with `args` (values files, `--set`), expecting success.
fn template_text(chart: &Path, args: &[&str]) -> String {
    let chart = chart.to_str().unwrap();
    let mut all = vec!["template", RELEASE, chart, "--namespace", RELEASE_NAMESPACE];
    all.extend_from_slice(args);
    let out = run_helm(&all);
    assert!(
        out.status.success(),
        "helm {all:?} failed:\n{}",
        stderr(&out)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `helm template` of the chart with `args`, parsed as kubectl would.
fn template_with(chart: &Path, args: &[&str]) -> Vec<Value> {
    parse_docs(&template_text(chart, args))
}

/// The raw rendered output with the default values and with every option set, for checks of the text
/// itself (the YAML 1.1 key rule).
pub fn rendered_outputs() -> Vec<(&'static str, String)> {
    vec![
        ("default values", template_text(&chart_dir(), &[])),
        (
            "all options",
            template_text(&chart_dir(), &["--values", ALL_OPTIONS]),
        ),
    ]
}

pub fn template(args: &[&str]) -> Vec<Value> {
    template_with(&chart_dir(), args)
}

fn default_render() -> &'static [Value] {
    static R: OnceLock<Vec<Value>> = OnceLock::new();
    R.get_or_init(|| template(&[]))
}

fn all_options_render() -> &'static [Value] {
    static R: OnceLock<Vec<Value>> = OnceLock::new();
    R.get_or_init(|| template(&["--values", ALL_OPTIONS]))
}

fn kind(v: &Value) -> &str {
    v["kind"].as_str().unwrap_or_default()
}

fn of_kind<T: DeserializeOwned>(docs: &[Value], k: &str) -> Vec<T> {
    docs.iter()
        .filter(|d| kind(d) == k)
        .map(|d| serde_json::from_value(d.clone()).unwrap_or_else(|e| panic!("{k}: {e}")))
        .collect()
}

fn one<T: DeserializeOwned>(docs: &[Value], k: &str) -> T {
    let mut all = of_kind::<T>(docs, k);
    assert_eq!(all.len(), 1, "expected exactly one {k}");
    all.remove(0)
}

fn deployment(docs: &[Value]) -> Deployment {
    one(docs, "Deployment")
}

fn pod_spec(d: &Deployment) -> PodSpec {
    d.spec.clone().unwrap().template.spec.unwrap()
}

fn operator_container(d: &Deployment) -> Container {
    let pod = pod_spec(d);
    assert_eq!(pod.containers.len(), 1, "one container");
    pod.containers[0].clone()
}

fn env_of(c: &Container) -> Vec<EnvVar> {
    c.env.clone().unwrap_or_default()
}

fn env_value(c: &Container, name: &str) -> Option<String> {
    env_of(c)
        .into_iter()
        .find(|e| e.name == name)
        .and_then(|e| e.value)
}

/// The port number after the last `:` of a listen address such as `0.0.0.0:9090` or `[::]:9090`.
fn addr_port(addr: &str) -> i32 {
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

/// The container port a (possibly named) port refers to.
fn resolve_port(c: &Container, port: &IntOrString) -> i32 {
    match port {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => {
            c.ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name))
                .unwrap_or_else(|| panic!("no container port named {name}"))
                .container_port
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// RBAC

/// `(apiGroup, resource)` → verbs, over every rule of every Role and ClusterRole rendered, with the kind and
/// namespace of the object granting it.
type Grants = BTreeMap<(String, String), BTreeSet<String>>;

fn rules_of(doc: &Value) -> Vec<PolicyRule> {
    match doc.get("rules") {
        Some(rules) => serde_json::from_value(rules.clone()).unwrap(),
        None => vec![],
    }
}

fn grants(rules: &[PolicyRule]) -> Grants {
    let mut g = Grants::new();
    for r in rules {
        for group in r.api_groups.iter().flatten() {
            for res in r.resources.iter().flatten() {
                g.entry((group.clone(), res.clone()))
                    .or_default()
                    .extend(r.verbs.iter().cloned());
            }
        }
    }
    g
}

fn expect(entries: &[(&str, &str, &[&str])]) -> Grants {
    entries
        .iter()
        .map(|(g, r, v)| {
            (
                (g.to_string(), r.to_string()),
                v.iter().map(|s| s.to_string()).collect(),
            )
        })
        .collect()
}

/// The contract: exactly the calls the operator's controllers and receiver make.
/// With `multi_tenant` (a `defaultServiceAccount` set) every route's Jobs are created by a ServiceAccount
/// the operator impersonates, so the operator loses `create` on Jobs.
fn operator_grants(multi_tenant: bool) -> Grants {
    const STATUS: &[&str] = &["get", "patch", "update"];
    let jobs: &[&str] = if multi_tenant {
        &["get", "list", "watch"]
    } else {
        &["get", "list", "watch", "create"]
    };
    expect(&[
        // patch: the finalizer of routes whose App Store Connect webhook the operator manages.
        (
            "asc.webhooks.dev",
            "webhookroutes",
            &["get", "list", "watch", "patch"],
        ),
        (
            "asc.webhooks.dev",
            "asccredentials",
            &["get", "list", "watch"],
        ),
        (
            "asc.webhooks.dev",
            "webhookdeliveries",
            &["get", "list", "watch", "create", "patch", "delete"],
        ),
        ("asc.webhooks.dev", "webhookroutes/status", STATUS),
        ("asc.webhooks.dev", "asccredentials/status", STATUS),
        ("asc.webhooks.dev", "webhookdeliveries/status", STATUS),
        // create: appStoreConnect.generateSecret makes the webhook Secret once; never update or delete.
        // list and watch: the metadata-only Secret watch of `secretAccess: watch` (the default).
        ("", "secrets", &["get", "list", "watch", "create"]),
        ("batch", "jobs", jobs),
        // Routes act as their ServiceAccount; its existence is checked for the route's status.
        ("", "serviceaccounts", &["get", "impersonate"]),
        ("events.k8s.io", "events", &["create", "patch"]),
    ])
}

/// `grants` as rendered with `secretAccess: get`: Secrets read by name (and created) only.
fn with_secret_access_get(mut grants: Grants) -> Grants {
    grants.extend(expect(&[("", "secrets", &["get", "create"])]));
    grants
}

fn lease_grants() -> Grants {
    expect(&[(
        "coordination.k8s.io",
        "leases",
        &["get", "create", "update", "patch"],
    )])
}

fn assert_nothing_broad(docs: &[Value]) {
    for doc in docs
        .iter()
        .filter(|d| matches!(kind(d), "Role" | "ClusterRole"))
    {
        let name = &doc["metadata"]["name"];
        assert!(
            doc.get("aggregationRule").is_none(),
            "{name}: no aggregation"
        );
        for r in rules_of(doc) {
            let all = r
                .api_groups
                .iter()
                .flatten()
                .chain(r.resources.iter().flatten())
                .chain(r.verbs.iter());
            for word in all {
                assert!(!word.contains('*'), "{name}: wildcard in {r:?}");
            }
            assert!(r.non_resource_urls.is_none(), "{name}: nonResourceURLs");
            for verb in &r.verbs {
                assert!(
                    !["escalate", "bind", "deletecollection"].contains(&verb.as_str()),
                    "{name}: {verb}"
                );
            }
            // Impersonation only of ServiceAccounts: never users or groups (system:masters).
            if r.verbs.iter().any(|v| v == "impersonate") {
                assert_eq!(
                    (r.api_groups.clone(), r.resources.clone()),
                    (
                        Some(vec![String::new()]),
                        Some(vec!["serviceaccounts".to_string()])
                    ),
                    "{name}: impersonate is for serviceaccounts only"
                );
            }
        }
    }
}

struct Rbac {
    /// Grants of ClusterRoles (cluster-wide).
    cluster: Grants,
    /// Grants of Roles, by namespace.
    namespaced: BTreeMap<String, Grants>,
}

fn rbac(docs: &[Value]) -> Rbac {
    let mut cluster_rules = vec![];
    let mut ns_rules: BTreeMap<String, Vec<PolicyRule>> = BTreeMap::new();
    for doc in docs {
        match kind(doc) {
            "ClusterRole" => cluster_rules.extend(rules_of(doc)),
            "Role" => {
                let ns = doc["metadata"]["namespace"].as_str().unwrap().to_owned();
                ns_rules.entry(ns).or_default().extend(rules_of(doc));
            }
            _ => {}
        }
    }
    Rbac {
        cluster: grants(&cluster_rules),
        namespaced: ns_rules.into_iter().map(|(k, v)| (k, grants(&v))).collect(),
    }
}

/// Every Role/ClusterRole is bound to the operator's ServiceAccount in the release namespace, and nothing
/// else is bound.
fn assert_bindings_name_the_service_account(docs: &[Value], sa: &str) {
    let roles: BTreeSet<(String, String, String)> = docs
        .iter()
        .filter(|d| matches!(kind(d), "Role" | "ClusterRole"))
        .map(|d| {
            (
                kind(d).to_owned(),
                d["metadata"]["namespace"].as_str().unwrap_or("").to_owned(),
                d["metadata"]["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let mut bound = BTreeSet::new();
    for doc in docs
        .iter()
        .filter(|d| matches!(kind(d), "RoleBinding" | "ClusterRoleBinding"))
    {
        // k8s-openapi checks `kind`, and a ClusterRoleBinding has the same fields as a RoleBinding.
        let mut as_role_binding = doc.clone();
        as_role_binding["kind"] = Value::from("RoleBinding");
        let b: RoleBinding = serde_json::from_value(as_role_binding).unwrap();
        let ns = b.metadata.namespace.clone().unwrap_or_default();
        let role_ns = if b.role_ref.kind == "Role" {
            ns
        } else {
            String::new()
        };
        bound.insert((b.role_ref.kind.clone(), role_ns, b.role_ref.name.clone()));
        let subjects = b.subjects.unwrap_or_default();
        assert_eq!(subjects.len(), 1, "{:?}", b.metadata.name);
        assert_eq!(subjects[0].kind, "ServiceAccount");
        assert_eq!(subjects[0].name, sa);
        assert_eq!(subjects[0].namespace.as_deref(), Some(RELEASE_NAMESPACE));
    }
    assert_eq!(
        bound, roles,
        "every role bound, every binding to a rendered role"
    );
}

mod deployment;
mod monitoring;
mod rbac;
mod values;

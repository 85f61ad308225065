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
use serde::Deserialize;
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

/// Every non-empty document of a multi-document YAML stream.
fn parse_docs(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("bad YAML from helm: {e}")))
        .filter(|v| !v.is_null())
        .collect()
}

/// `helm template` of the chart with `args` (values files, `--set`), expecting success.
fn template_with(chart: &Path, args: &[&str]) -> Vec<Value> {
    let chart = chart.to_str().unwrap();
    let mut all = vec!["template", RELEASE, chart, "--namespace", RELEASE_NAMESPACE];
    all.extend_from_slice(args);
    let out = run_helm(&all);
    assert!(
        out.status.success(),
        "helm {all:?} failed:\n{}",
        stderr(&out)
    );
    parse_docs(&String::from_utf8(out.stdout).unwrap())
}

fn template(args: &[&str]) -> Vec<Value> {
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
fn operator_grants() -> Grants {
    const STATUS: &[&str] = &["get", "patch", "update"];
    expect(&[
        (
            "asc.webhooks.dev",
            "webhookroutes",
            &["get", "list", "watch"],
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
        ("", "secrets", &["get"]),
        ("batch", "jobs", &["get", "list", "watch", "create"]),
        ("events.k8s.io", "events", &["create", "patch"]),
    ])
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
                    !["escalate", "bind", "impersonate", "deletecollection"]
                        .contains(&verb.as_str()),
                    "{name}: {verb}"
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

#[test]
fn default_rbac_is_a_cluster_role_with_exactly_the_operators_calls() {
    let docs = default_render();
    assert_nothing_broad(docs);
    let r = rbac(docs);
    assert_eq!(r.cluster, operator_grants());
    // Leader election is on by default: its Lease rights live in the release namespace only.
    assert_eq!(
        r.namespaced.keys().collect::<Vec<_>>(),
        vec![RELEASE_NAMESPACE]
    );
    assert_eq!(r.namespaced[RELEASE_NAMESPACE], lease_grants());
    assert!(!r.cluster.keys().any(|(g, _)| g == "coordination.k8s.io"));
    let sa = deployment(docs)
        .spec
        .unwrap()
        .template
        .spec
        .unwrap()
        .service_account_name
        .unwrap();
    assert_bindings_name_the_service_account(docs, &sa);
}

#[test]
fn secrets_are_only_read_by_name() {
    for docs in [default_render(), all_options_render()] {
        for doc in docs
            .iter()
            .filter(|d| matches!(kind(d), "Role" | "ClusterRole"))
        {
            for r in rules_of(doc) {
                if r.resources.iter().flatten().any(|res| res == "secrets") {
                    assert_eq!(r.verbs, vec!["get".to_string()], "secrets: get only");
                }
            }
        }
    }
}

#[test]
fn lease_updates_are_limited_to_the_one_lease() {
    let docs = all_options_render();
    let lease_rules: Vec<PolicyRule> = docs
        .iter()
        .filter(|d| kind(d) == "Role")
        .flat_map(rules_of)
        .filter(|r| r.resources.iter().flatten().any(|res| res == "leases"))
        .collect();
    assert!(!lease_rules.is_empty());
    let c = operator_container(&deployment(docs));
    let lease = env_value(&c, "ASC_LEASE_NAME").unwrap();
    assert_eq!(lease, "asc-hooks-leader");
    for r in lease_rules {
        if r.verbs != ["create"] {
            assert_eq!(
                r.resource_names,
                Some(vec![lease.clone()]),
                "get/update/patch only on the operator's Lease: {r:?}"
            );
        }
    }
}

#[test]
fn watch_namespace_gets_a_role_there_instead_of_a_cluster_role() {
    let docs = template(&["--set", "watchNamespace=ios"]);
    assert_nothing_broad(&docs);
    assert!(
        !docs
            .iter()
            .any(|d| matches!(kind(d), "ClusterRole" | "ClusterRoleBinding")),
        "no cluster-wide RBAC with watchNamespace"
    );
    let r = rbac(&docs);
    assert!(r.cluster.is_empty());
    assert_eq!(r.namespaced["ios"], operator_grants());
    assert_eq!(r.namespaced[RELEASE_NAMESPACE], lease_grants());
    let c = operator_container(&deployment(&docs));
    assert_eq!(env_value(&c, "ASC_NAMESPACE").as_deref(), Some("ios"));
    let sa = pod_spec(&deployment(&docs)).service_account_name.unwrap();
    assert_bindings_name_the_service_account(&docs, &sa);

    // The same with every option on.
    let r = rbac(all_options_render());
    assert!(r.cluster.is_empty());
    assert_eq!(r.namespaced["ios"], operator_grants());
    assert_eq!(r.namespaced[RELEASE_NAMESPACE], lease_grants());
}

#[test]
fn watch_namespace_equal_to_the_release_namespace_keeps_both_roles_apart() {
    let docs = template(&["--set", &format!("watchNamespace={RELEASE_NAMESPACE}")]);
    let r = rbac(&docs);
    let mut both = operator_grants();
    both.extend(lease_grants());
    assert_eq!(r.namespaced[RELEASE_NAMESPACE], both);
    assert!(r.cluster.is_empty());
}

#[test]
fn rbac_create_false_renders_no_rbac() {
    let docs = template(&[
        "--set",
        "rbac.create=false",
        "--set",
        "serviceAccount.create=false",
        "--set",
        "serviceAccount.name=existing",
    ]);
    assert!(!docs.iter().any(|d| matches!(
        kind(d),
        "Role" | "ClusterRole" | "RoleBinding" | "ClusterRoleBinding" | "ServiceAccount"
    )));
    assert_eq!(
        pod_spec(&deployment(&docs)).service_account_name.as_deref(),
        Some("existing")
    );
}

// ---------------------------------------------------------------------------------------------------------
// The Deployment

#[test]
fn every_container_runs_non_root_on_a_read_only_root_filesystem() {
    for docs in [default_render(), all_options_render()] {
        let d = deployment(docs);
        let pod = pod_spec(&d);
        let psc = pod.security_context.clone().expect("pod securityContext");
        assert_eq!(psc.run_as_non_root, Some(true));
        assert_eq!(psc.run_as_user, Some(65532));
        assert_eq!(
            psc.seccomp_profile.map(|s| s.type_),
            Some("RuntimeDefault".into())
        );
        assert_eq!(pod.automount_service_account_token, Some(true));
        assert!(pod.volumes.is_none(), "no writable volumes needed");
        assert!(pod.host_network.is_none() && pod.host_pid.is_none());
        let containers = pod
            .containers
            .iter()
            .chain(pod.init_containers.iter().flatten());
        for c in containers {
            let sc = c
                .security_context
                .clone()
                .unwrap_or_else(|| panic!("{}: securityContext", c.name));
            assert_eq!(sc.run_as_non_root, Some(true), "{}", c.name);
            assert_eq!(sc.run_as_user, Some(65532), "{}", c.name);
            assert_eq!(sc.read_only_root_filesystem, Some(true), "{}", c.name);
            assert_eq!(sc.allow_privilege_escalation, Some(false), "{}", c.name);
            assert_ne!(sc.privileged, Some(true), "{}", c.name);
            let caps = sc.capabilities.unwrap_or_default();
            assert_eq!(caps.drop, Some(vec!["ALL".to_string()]), "{}", c.name);
            assert!(caps.add.is_none(), "{}", c.name);
            assert_eq!(
                sc.seccomp_profile.map(|s| s.type_),
                Some("RuntimeDefault".into()),
                "{}",
                c.name
            );
            assert!(c.volume_mounts.is_none(), "{}", c.name);
        }
    }
}

#[test]
fn the_container_runs_the_run_subcommand_with_small_resources() {
    let c = operator_container(&deployment(default_render()));
    assert_eq!(c.args, Some(vec!["run".to_string()]));
    assert!(c.command.is_none(), "the image's entrypoint is the binary");
    let res = c.resources.unwrap();
    let requests = res.requests.unwrap();
    let limits = res.limits.unwrap();
    assert_eq!(requests["cpu"].0, "10m");
    assert_eq!(requests["memory"].0, "32Mi");
    assert_eq!(limits["memory"].0, "128Mi");
}

#[test]
fn image_tag_defaults_to_the_app_version_which_is_the_crate_version() {
    let chart: Value =
        serde_yaml::from_str(&std::fs::read_to_string(chart_dir().join("Chart.yaml")).unwrap())
            .unwrap();
    assert_eq!(chart["apiVersion"], "v2");
    assert_eq!(chart["appVersion"], env!("CARGO_PKG_VERSION"));
    let c = operator_container(&deployment(default_render()));
    assert_eq!(
        c.image.as_deref(),
        Some(concat!(
            "ghcr.io/asc-webhook-operator/asc-webhook-operator:",
            env!("CARGO_PKG_VERSION")
        ))
    );
    let c = operator_container(&deployment(all_options_render()));
    assert!(
        c.image
            .unwrap()
            .starts_with("registry.example.com/asc-webhook-operator@sha256:")
    );
}

#[test]
fn probes_use_the_admin_port_and_services_the_right_listeners() {
    for docs in [default_render(), all_options_render()] {
        let c = operator_container(&deployment(docs));
        let admin = addr_port(&env_value(&c, "ASC_ADMIN_ADDR").unwrap());
        let receiver = addr_port(&env_value(&c, "ASC_LISTEN_ADDR").unwrap());
        assert_ne!(admin, receiver);
        for (probe, path) in [
            (c.liveness_probe.clone(), "/healthz"),
            (c.readiness_probe.clone(), "/readyz"),
        ] {
            let get = probe
                .and_then(|p| p.http_get)
                .unwrap_or_else(|| panic!("{path} probe"));
            assert_eq!(get.path.as_deref(), Some(path));
            assert_eq!(
                resolve_port(&c, &get.port),
                admin,
                "{path} on the admin port"
            );
        }
        let services: Vec<Service> = of_kind(docs, "Service");
        assert_eq!(services.len(), 2);
        let target = |component: &str| -> Vec<i32> {
            let s = services
                .iter()
                .find(|s| {
                    s.metadata.labels.as_ref().unwrap()["app.kubernetes.io/component"] == component
                })
                .unwrap_or_else(|| panic!("{component} Service"));
            s.spec
                .as_ref()
                .unwrap()
                .ports
                .iter()
                .flatten()
                .map(|p| resolve_port(&c, p.target_port.as_ref().unwrap()))
                .collect()
        };
        assert_eq!(
            target("receiver"),
            vec![receiver],
            "public Service → receiver only"
        );
        assert_eq!(
            target("metrics"),
            vec![admin],
            "metrics Service → admin only"
        );
    }
}

#[test]
fn leader_election_is_on_whenever_several_replicas_run() {
    let check = |args: &[&str], on: bool| {
        let docs = template(args);
        let c = operator_container(&deployment(&docs));
        let expected = if on { "true" } else { "false" };
        assert_eq!(
            env_value(&c, "ASC_LEADER_ELECTION").as_deref(),
            Some(expected),
            "{args:?}"
        );
        let leases = rbac(&docs)
            .namespaced
            .get(RELEASE_NAMESPACE)
            .cloned()
            .unwrap_or_default();
        if on {
            assert_eq!(leases, lease_grants(), "{args:?}");
            assert_eq!(
                env_value(&c, "ASC_LEASE_NAMESPACE").as_deref(),
                Some(RELEASE_NAMESPACE)
            );
            let identity = env_of(&c)
                .into_iter()
                .find(|e| e.name == "ASC_IDENTITY")
                .and_then(|e| e.value_from)
                .and_then(|v| v.field_ref)
                .map(|f| f.field_path);
            assert_eq!(identity.as_deref(), Some("metadata.name"), "pod name");
        } else {
            assert!(leases.is_empty(), "no Lease rights without election");
        }
    };
    check(
        &[
            "--set",
            "replicas=2",
            "--set",
            "leaderElection.enabled=false",
        ],
        true,
    );
    check(
        &[
            "--set",
            "replicas=1",
            "--set",
            "leaderElection.enabled=false",
        ],
        false,
    );
    check(&["--set", "replicas=1"], true);
    check(&["--values", ALL_OPTIONS], true);
}

#[test]
fn pod_disruption_budget_comes_with_replicas() {
    let pdbs = |args: &[&str]| {
        template(args)
            .iter()
            .filter(|d| kind(d) == "PodDisruptionBudget")
            .count()
    };
    assert_eq!(pdbs(&[]), 0);
    assert_eq!(pdbs(&["--set", "replicas=2"]), 1);
    assert_eq!(
        pdbs(&[
            "--set",
            "replicas=2",
            "--set",
            "podDisruptionBudget.enabled=false"
        ]),
        0
    );
    assert_eq!(pdbs(&["--set", "podDisruptionBudget.enabled=true"]), 1);
    assert_eq!(
        all_options_render()
            .iter()
            .filter(|d| kind(d) == "PodDisruptionBudget")
            .count(),
        1
    );
}

/// Every `ASC_*` variable the chart sets is a flag of `run`, and its value parses as the binary would parse
/// it (durations, addresses, numbers, booleans).
#[test]
fn rendered_env_is_accepted_by_the_binary() {
    let cmd = Cli::command();
    let run = cmd.find_subcommand("run").expect("run subcommand");
    let flags: BTreeMap<String, (String, bool)> = run
        .get_arguments()
        .filter_map(|a| {
            let env = a.get_env()?.to_str()?.to_owned();
            let takes_value = a.get_action().takes_values();
            Some((env, (a.get_long()?.to_owned(), takes_value)))
        })
        .collect();
    for docs in [default_render(), all_options_render()] {
        let c = operator_container(&deployment(docs));
        let mut argv = vec!["asc-webhook-operator".to_string(), "run".to_string()];
        for e in env_of(&c) {
            let (long, takes_value) = flags
                .get(&e.name)
                .unwrap_or_else(|| panic!("{} is not a setting of `run`", e.name));
            // Values from the downward API are filled in by the kubelet.
            let value = e.value.unwrap_or_else(|| "pod-name".to_string());
            if *takes_value {
                argv.push(format!("--{long}={value}"));
            } else {
                match value.as_str() {
                    "true" => argv.push(format!("--{long}")),
                    "false" => {}
                    other => panic!("{}: boolean flag with value {other}", e.name),
                }
            }
        }
        <Cli as clap::Parser>::try_parse_from(&argv)
            .unwrap_or_else(|e| panic!("the binary refuses the chart's settings {argv:?}: {e}"));
    }
    // The chart passes the settings an operator needs to run in a cluster.
    let c = operator_container(&deployment(all_options_render()));
    for name in [
        "ASC_LISTEN_ADDR",
        "ASC_ADMIN_ADDR",
        "ASC_PUBLIC_URL",
        "ASC_NAMESPACE",
        "ASC_LOG_FORMAT",
        "ASC_LOG",
        "ASC_MAX_BODY_BYTES",
        "ASC_LEADER_ELECTION",
        "ASC_LEASE_NAME",
        "ASC_LEASE_NAMESPACE",
        "ASC_IDENTITY",
    ] {
        assert!(env_of(&c).iter().any(|e| e.name == name), "{name} not set");
    }
    assert_eq!(
        env_value(&c, "ASC_PUBLIC_URL").as_deref(),
        Some("https://asc-hooks.example.com")
    );
}

/// The chart can pass every setting of `run`, and its defaults are the binary's, except where it means to
/// differ. A flag added to the binary, or a default changed there, fails here until the chart follows.
#[test]
fn the_chart_covers_every_run_setting_with_the_binarys_defaults() {
    let cmd = Cli::command();
    let run = cmd.find_subcommand("run").expect("run subcommand");
    let settings: BTreeMap<String, Option<String>> = run
        .get_arguments()
        .filter_map(|a| {
            let env = a.get_env()?.to_str()?.to_owned();
            let default = a
                .get_default_values()
                .first()
                .map(|d| d.to_string_lossy().into_owned());
            Some((env, default))
        })
        .collect();
    let all = operator_container(&deployment(all_options_render()));
    let set: BTreeSet<String> = env_of(&all).into_iter().map(|e| e.name).collect();
    assert_eq!(
        set,
        settings.keys().cloned().collect::<BTreeSet<_>>(),
        "with every option on, the chart sets exactly the settings of `run`"
    );
    // Where the chart deliberately differs from the binary's defaults, and why.
    let deliberate: BTreeMap<&str, String> = BTreeMap::from([
        // Log pipelines read JSON.
        ("ASC_LOG_FORMAT", "json".to_string()),
        // A rolling update runs two pods for a moment.
        ("ASC_LEADER_ELECTION", "true".to_string()),
        ("ASC_LEASE_NAME", format!("{RELEASE}-asc-webhook-operator")),
        ("ASC_LEASE_NAMESPACE", RELEASE_NAMESPACE.to_string()),
    ]);
    let c = operator_container(&deployment(default_render()));
    for (env, default) in &settings {
        let Some(chart) = env_value(&c, env) else {
            continue;
        };
        match deliberate.get(env.as_str()) {
            Some(want) => assert_eq!(&chart, want, "{env}"),
            None => assert_eq!(
                Some(&chart),
                default.as_ref(),
                "{env}: the chart's default differs from the binary's; change values.yaml"
            ),
        }
    }
}

#[test]
fn public_url_defaults_to_the_ingress_host() {
    let docs = template(&[
        "--set",
        "ingress.enabled=true",
        "--set",
        "ingress.host=hooks.example.org",
    ]);
    let c = operator_container(&deployment(&docs));
    assert_eq!(
        env_value(&c, "ASC_PUBLIC_URL").as_deref(),
        Some("https://hooks.example.org")
    );
    let c = operator_container(&deployment(default_render()));
    assert_eq!(env_value(&c, "ASC_PUBLIC_URL"), None);
}

// ---------------------------------------------------------------------------------------------------------
// Secrets

/// Whether an environment value looks like a credential rather than a setting.
fn looks_like_a_secret(value: &str) -> bool {
    let token_like = value.len() >= 24
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+/=_-".contains(c))
        && value.chars().any(|c| c.is_ascii_digit())
        && value.chars().any(|c| c.is_ascii_alphabetic());
    let url_with_password = value.contains("://")
        && value.split("://").nth(1).is_some_and(|rest| {
            rest.split('/')
                .next()
                .is_some_and(|authority| authority.contains('@'))
        });
    value.contains("-----BEGIN") || token_like || url_with_password
}

#[test]
fn the_secret_detector_catches_credentials() {
    assert!(looks_like_a_secret("-----BEGIN PRIVATE KEY-----\nabc"));
    assert!(looks_like_a_secret("ghp_0123456789abcdefghijABCDEFGHIJ"));
    assert!(looks_like_a_secret("https://user:pw@example.com/x"));
    assert!(!looks_like_a_secret("0.0.0.0:8080"));
    assert!(!looks_like_a_secret("info,asc_webhook_operator=debug"));
    assert!(!looks_like_a_secret("https://asc-hooks.example.com"));
}

#[test]
fn no_secret_is_rendered_or_passed_in_the_environment() {
    for docs in [default_render(), all_options_render()] {
        assert!(
            !docs.iter().any(|d| kind(d) == "Secret"),
            "the chart renders no Secret"
        );
        let c = operator_container(&deployment(docs));
        for e in env_of(&c) {
            let from_secret = e
                .value_from
                .as_ref()
                .is_some_and(|v| v.secret_key_ref.is_some());
            assert!(
                !from_secret,
                "{}: the operator reads Secrets through the API",
                e.name
            );
            let value = e.value.unwrap_or_default();
            assert!(!looks_like_a_secret(&value), "{} = {value}", e.name);
        }
        assert!(c.env_from.is_none());
    }
}

// ---------------------------------------------------------------------------------------------------------
// Optional objects

#[test]
fn all_options_render_every_optional_object() {
    let docs = all_options_render();
    let kinds: BTreeSet<&str> = docs.iter().map(kind).collect();
    for k in [
        "Deployment",
        "Service",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "Ingress",
        "ServiceMonitor",
        "NetworkPolicy",
        "PodDisruptionBudget",
    ] {
        assert!(kinds.contains(k), "{k} missing from {kinds:?}");
    }
    let d = deployment(docs);
    assert_eq!(d.spec.as_ref().unwrap().replicas, Some(2));
    for doc in docs {
        if kind(doc) != "ClusterRole" && kind(doc) != "ClusterRoleBinding" {
            assert!(
                doc["metadata"]["namespace"].is_string(),
                "{} {} has a namespace",
                kind(doc),
                doc["metadata"]["name"]
            );
        }
    }
    let defaults: BTreeSet<&str> = default_render().iter().map(kind).collect();
    for k in [
        "Ingress",
        "ServiceMonitor",
        "NetworkPolicy",
        "PodDisruptionBudget",
    ] {
        assert!(!defaults.contains(k), "{k} is opt-in");
    }
}

#[test]
fn the_ingress_exposes_only_the_receiver_under_hooks() {
    let docs = all_options_render();
    let ing: Ingress = one(docs, "Ingress");
    let spec = ing.spec.unwrap();
    assert_eq!(spec.ingress_class_name.as_deref(), Some("nginx"));
    let tls = spec.tls.unwrap();
    assert_eq!(tls[0].secret_name.as_deref(), Some("asc-hooks-tls"));
    let rules = spec.rules.unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].host.as_deref(), Some("asc-hooks.example.com"));
    let paths = &rules[0].http.as_ref().unwrap().paths;
    assert_eq!(paths.len(), 1);
    assert_eq!(paths[0].path.as_deref(), Some("/hooks"));
    assert_eq!(paths[0].path_type, "Prefix");
    let backend = paths[0].backend.service.as_ref().unwrap();
    let services: Vec<Service> = of_kind(docs, "Service");
    let target = services
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some(backend.name.as_str()))
        .expect("backend Service exists");
    assert_eq!(
        target.metadata.labels.as_ref().unwrap()["app.kubernetes.io/component"],
        "receiver"
    );
    let port_name = backend.port.as_ref().unwrap().name.clone().unwrap();
    assert!(
        target
            .spec
            .as_ref()
            .unwrap()
            .ports
            .iter()
            .flatten()
            .any(|p| p.name.as_deref() == Some(port_name.as_str()))
    );
}

#[test]
fn the_service_monitor_scrapes_the_metrics_service() {
    let docs = all_options_render();
    let sm = docs.iter().find(|d| kind(d) == "ServiceMonitor").unwrap();
    assert_eq!(sm["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(sm["metadata"]["labels"]["release"], "prometheus");
    let selector = sm["spec"]["selector"]["matchLabels"].as_object().unwrap();
    let services: Vec<Service> = of_kind(docs, "Service");
    let selected: Vec<&Service> = services
        .iter()
        .filter(|s| {
            let labels = s.metadata.labels.as_ref().unwrap();
            selector
                .iter()
                .all(|(k, v)| labels.get(k).map(String::as_str) == v.as_str())
        })
        .collect();
    assert_eq!(selected.len(), 1, "selects the metrics Service only");
    assert!(
        selected[0]
            .metadata
            .name
            .as_ref()
            .unwrap()
            .ends_with("-metrics")
    );
    let endpoint = &sm["spec"]["endpoints"][0];
    assert_eq!(endpoint["path"], "/metrics");
    let port = endpoint["port"].as_str().unwrap();
    assert!(
        selected[0]
            .spec
            .as_ref()
            .unwrap()
            .ports
            .iter()
            .flatten()
            .any(|p| p.name.as_deref() == Some(port))
    );
}

#[test]
fn the_network_policy_opens_metrics_only_to_the_configured_peers() {
    let docs = all_options_render();
    let np: NetworkPolicy = one(docs, "NetworkPolicy");
    let c = operator_container(&deployment(docs));
    let admin = addr_port(&env_value(&c, "ASC_ADMIN_ADDR").unwrap());
    let receiver = addr_port(&env_value(&c, "ASC_LISTEN_ADDR").unwrap());
    let spec = np.spec.unwrap();
    assert_eq!(spec.policy_types, Some(vec!["Ingress".to_string()]));
    let rules = spec.ingress.unwrap();
    let mut seen = BTreeSet::new();
    for rule in &rules {
        let ports: Vec<i32> = rule
            .ports
            .iter()
            .flatten()
            .map(|p| resolve_port(&c, p.port.as_ref().unwrap()))
            .collect();
        assert_eq!(ports.len(), 1, "one port per rule: {rule:?}");
        let from = rule.from.clone().unwrap_or_default();
        if ports[0] == admin {
            assert!(!from.is_empty(), "the admin port is never open to everyone");
            let ns = from[0].namespace_selector.as_ref().unwrap();
            assert_eq!(
                ns.match_labels.as_ref().unwrap()["kubernetes.io/metadata.name"],
                "monitoring"
            );
        } else {
            assert_eq!(ports[0], receiver);
        }
        seen.insert(ports[0]);
    }
    assert_eq!(seen, BTreeSet::from([admin, receiver]));

    // Without peers for metrics, nothing but the receiver port is opened, to anyone.
    let docs = template(&["--set", "networkPolicy.enabled=true"]);
    let np: NetworkPolicy = one(&docs, "NetworkPolicy");
    let rules = np.spec.unwrap().ingress.unwrap();
    assert_eq!(rules.len(), 1);
    assert!(
        rules[0].from.is_none(),
        "receiver open to anyone by default"
    );
    let c = operator_container(&deployment(&docs));
    let port = resolve_port(
        &c,
        rules[0].ports.as_ref().unwrap()[0].port.as_ref().unwrap(),
    );
    assert_eq!(port, addr_port(&env_value(&c, "ASC_LISTEN_ADDR").unwrap()));
}

// ---------------------------------------------------------------------------------------------------------
// Lint, schema, CRDs, NOTES

#[test]
fn helm_lint_passes_with_default_and_all_option_values() {
    let chart = chart_dir();
    let chart = chart.to_str().unwrap();
    for args in [
        vec!["lint", "--strict", chart],
        vec!["lint", "--strict", chart, "--values", ALL_OPTIONS],
    ] {
        let out = run_helm(&args);
        assert!(
            out.status.success(),
            "helm {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            stderr(&out)
        );
    }
}

#[test]
fn a_misspelt_value_is_refused() {
    let chart = chart_dir();
    for (set, word) in [
        ("ingress.enabeld=true", "enabeld"),
        ("replica=2", "replica"),
        ("networkPolicy.metrics.form=x", "form"),
        ("log.format=yaml", "log.format"),
        (
            "podDisruptionBudget.enabled=sometimes",
            "podDisruptionBudget.enabled",
        ),
        ("receiver.bodyTimeout=10 seconds", "bodyTimeout"),
    ] {
        let out = run_helm(&["template", RELEASE, chart.to_str().unwrap(), "--set", set]);
        assert!(!out.status.success(), "--set {set} was accepted");
        let err = stderr(&out);
        assert!(
            err.contains("schema") && err.contains(word),
            "--set {set}: {err}"
        );
    }
}

/// Walks values.schema.json: every object level either closes its properties or says what its entries
/// are, so no misspelt key can slip through.
#[test]
fn the_values_schema_closes_every_object() {
    let text = std::fs::read_to_string(chart_dir().join("values.schema.json")).unwrap();
    let schema: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(schema["$schema"], "http://json-schema.org/draft-07/schema#");
    // Kubernetes types passed through as they are; everything else is closed.
    const PASS_THROUGH: &[&str] = &[
        "/properties/affinity/properties/nodeAffinity",
        "/properties/affinity/properties/podAffinity",
        "/properties/affinity/properties/podAntiAffinity",
    ];
    fn walk(node: &Value, path: &str, open: &mut Vec<String>) {
        let Some(m) = node.as_object() else { return };
        if m.get("type") == Some(&Value::from("object")) {
            match m.get("additionalProperties") {
                Some(Value::Bool(false)) | Some(Value::Object(_)) => {}
                _ => open.push(path.to_owned()),
            }
        }
        for (k, v) in m {
            match k.as_str() {
                "properties" | "definitions" => {
                    for (pk, pv) in v.as_object().into_iter().flatten() {
                        walk(pv, &format!("{path}/{k}/{pk}"), open);
                    }
                }
                "items" | "additionalProperties" => walk(v, &format!("{path}/{k}"), open),
                _ => {}
            }
        }
    }
    let mut open = vec![];
    walk(&schema, "", &mut open);
    assert_eq!(open, PASS_THROUGH, "objects without additionalProperties");

    // And every default value is described by it: each key of values.yaml is a property of the schema.
    let values: Value =
        serde_yaml::from_str(&std::fs::read_to_string(chart_dir().join("values.yaml")).unwrap())
            .unwrap();
    fn keys(v: &Value, s: &Value, root: &Value, path: &str) {
        let s = match s.get("$ref").and_then(Value::as_str) {
            Some(r) => root.pointer(r.trim_start_matches('#')).unwrap(),
            None => s,
        };
        let Some(obj) = v.as_object() else { return };
        let Some(props) = s.get("properties").and_then(Value::as_object) else {
            return;
        };
        for (k, child) in obj {
            let cs = props
                .get(k)
                .unwrap_or_else(|| panic!("values.yaml {path}.{k} is not in values.schema.json"));
            assert!(
                cs.get("type").is_some() || cs.get("$ref").is_some() || cs.get("enum").is_some(),
                "{path}.{k} has no type"
            );
            keys(child, cs, root, &format!("{path}.{k}"));
        }
    }
    keys(&values, &schema, &schema, "");
}

#[test]
fn chart_crds_are_copies_of_the_generated_crds() {
    let top = Path::new(ROOT).join("crds");
    let chart = chart_dir().join("crds");
    let names = |dir: &Path| -> BTreeSet<String> {
        std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    assert_eq!(
        names(&chart),
        names(&top),
        "copy crds/ into the chart: cp crds/*.yaml charts/asc-webhook-operator/crds/"
    );
    for name in names(&top) {
        let a = std::fs::read(top.join(&name)).unwrap();
        let b = std::fs::read(chart.join(&name)).unwrap();
        assert!(
            a == b,
            "charts/asc-webhook-operator/crds/{name} differs from crds/{name}: copy crds/ into the chart \
             (cp crds/*.yaml charts/asc-webhook-operator/crds/)"
        );
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// NOTES.txt, rendered: `helm template` does not print it, so a copy of the chart gets a template that
/// puts the same named template into a ConfigMap.
fn notes(args: &[&str]) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let chart = tmp.path().join("asc-webhook-operator");
    copy_dir(&chart_dir(), &chart);
    let notes_txt = std::fs::read_to_string(chart.join("templates/NOTES.txt")).unwrap();
    assert!(notes_txt.contains("include \"asc-webhook-operator.notes\""));
    std::fs::write(
        chart.join("templates/zz-rendered-notes.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: rendered-notes\ndata:\n  notes: \
         {{ include \"asc-webhook-operator.notes\" . | toJson }}\n",
    )
    .unwrap();
    let docs = template_with(&chart, args);
    docs.iter()
        .find(|d| d["metadata"]["name"] == "rendered-notes")
        .unwrap()["data"]["notes"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn notes_tell_the_url_to_paste_into_app_store_connect() {
    let text = notes(&["--values", ALL_OPTIONS]);
    for needle in [
        "https://asc-hooks.example.com/hooks/ios/<route name>",
        "Users and Access → Integrations → Webhooks",
        "kubectl get webhookroutes -A -o wide",
        "asc-webhook-operator send",
        "--example build-upload-complete",
    ] {
        assert!(text.contains(needle), "NOTES lack {needle:?}:\n{text}");
    }
    let text = notes(&[]);
    assert!(text.contains("WARNING"), "{text}");
    assert!(text.contains("publicUrl"), "{text}");
    assert!(
        text.contains("<publicUrl>/hooks/<namespace>/<route name>"),
        "{text}"
    );
}

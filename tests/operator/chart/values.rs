//! Values: defaults, the schema, secrets never rendered, optional objects.

use super::*;

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
        "PrometheusRule",
        "ConfigMap",
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
        "PrometheusRule",
        "ConfigMap",
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

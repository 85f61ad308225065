//! The chart's monitoring objects: `prometheusRule.enabled` renders the alert rules as a PrometheusRule,
//! `grafanaDashboard.enabled` the dashboard as a ConfigMap for Grafana's sidecar; each is opt-in, and what
//! they render is accepted by an API server (a server-side dry run on the fake API server, with the
//! PrometheusRule CRD installed) and is the same as the plain files.

use super::*;
use crate::monitoring::{DASHBOARD, RULES, check_and_test_rules};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};

const BOTH: &[&str] = &[
    "--set",
    "prometheusRule.enabled=true,grafanaDashboard.enabled=true",
];

fn prometheus_rule_crd() -> String {
    std::fs::read_to_string(Path::new(ROOT).join("tests/fixtures/crds/prometheusrule.yaml"))
        .unwrap()
}

fn prometheus_rule_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("monitoring.coreos.com", "v1", "PrometheusRule"),
        "prometheusrules",
    )
}

/// `doc` created with `dryRun=All` as a `resource` in the release namespace: the server's answer.
async fn dry_run(
    api: &testkit::apiserver::FakeApiServer,
    resource: &ApiResource,
    doc: &Value,
) -> Result<DynamicObject, kube::Error> {
    let obj: DynamicObject = serde_json::from_value(doc.clone()).unwrap();
    Api::<DynamicObject>::namespaced_with(api.client(), RELEASE_NAMESPACE, resource)
        .create(
            &PostParams {
                dry_run: true,
                ..Default::default()
            },
            &obj,
        )
        .await
}

fn only(docs: &[Value], k: &str) -> Value {
    let found: Vec<&Value> = docs.iter().filter(|d| kind(d) == k).collect();
    assert_eq!(found.len(), 1, "one {k}");
    found[0].clone()
}

#[test]
fn monitoring_objects_are_off_by_default_and_off_when_set_false() {
    for args in [
        &[][..],
        &[
            "--set",
            "prometheusRule.enabled=false,grafanaDashboard.enabled=false",
        ][..],
    ] {
        let docs = template(args);
        let kinds: BTreeSet<&str> = docs.iter().map(kind).collect();
        assert!(!kinds.contains("PrometheusRule"), "{args:?}: {kinds:?}");
        assert!(!kinds.contains("ConfigMap"), "{args:?}: {kinds:?}");
    }
}

#[tokio::test]
async fn the_rendered_rule_and_dashboard_pass_a_server_dry_run_with_the_prometheus_rule_crd() {
    let docs = template(BOTH);
    let api = crate::harness::fake_api_with(|mut o| {
        o.crd_yaml.push(prometheus_rule_crd());
        o.namespaces.push(RELEASE_NAMESPACE.into());
        o
    })
    .await;
    let rule = only(&docs, "PrometheusRule");
    dry_run(&api, &prometheus_rule_resource(), &rule)
        .await
        .expect("the API server accepts the PrometheusRule");
    let dashboard = only(&docs, "ConfigMap");
    dry_run(&api, &ApiResource::erase::<ConfigMap>(&()), &dashboard)
        .await
        .expect("the API server accepts the dashboard ConfigMap");
    assert!(
        api.list_objects("prometheusrules", Some(RELEASE_NAMESPACE))
            .is_empty(),
        "a dry run stores nothing"
    );

    // The CRD is strict enough to matter: a rule without an expression is refused.
    let mut broken = rule.clone();
    broken["spec"]["groups"][0]["rules"][0]
        .as_object_mut()
        .unwrap()
        .remove("expr");
    let refused = dry_run(&api, &prometheus_rule_resource(), &broken).await;
    assert!(
        matches!(&refused, Err(kube::Error::Api(s)) if s.code == 422),
        "{refused:?}"
    );
}

#[test]
fn the_prometheus_rule_holds_the_plain_rule_file_and_passes_promtool() {
    let rendered = only(&template(BOTH), "PrometheusRule");
    assert_eq!(rendered["apiVersion"], "monitoring.coreos.com/v1");
    let plain: Value =
        serde_yaml::from_str(&std::fs::read_to_string(Path::new(ROOT).join(RULES)).unwrap())
            .unwrap();
    assert_eq!(rendered["spec"], plain, "the same groups as the plain file");
    check_and_test_rules(&serde_yaml::to_string(&rendered["spec"]).unwrap());
}

#[test]
fn runbook_links_follow_runbook_base_url() {
    let docs = template(&[
        "--set",
        "prometheusRule.enabled=true,prometheusRule.runbookBaseUrl=https://git.example.com/p/blob/v1/docs/RUNBOOK.md/",
    ]);
    let rule = only(&docs, "PrometheusRule");
    for r in rule["spec"]["groups"][0]["rules"].as_array().unwrap() {
        let url = r["annotations"]["runbook_url"].as_str().unwrap();
        let alert = r["alert"].as_str().unwrap().to_lowercase();
        assert_eq!(
            url,
            format!("https://git.example.com/p/blob/v1/docs/RUNBOOK.md#{alert}")
        );
    }
}

#[test]
fn the_dashboard_config_map_carries_the_sidecar_label_and_the_dashboard() {
    let docs = template(&[
        "--set",
        "grafanaDashboard.enabled=true,grafanaDashboard.namespace=monitoring",
    ]);
    let cm: ConfigMap = serde_json::from_value(only(&docs, "ConfigMap")).unwrap();
    assert_eq!(cm.metadata.namespace.as_deref(), Some("monitoring"));
    assert_eq!(
        cm.metadata.labels.as_ref().unwrap()["grafana_dashboard"],
        "1"
    );
    let data = cm.data.unwrap();
    let json = &data["asc-webhook-operator.json"];
    assert!(json.len() < 1024 * 1024, "under the ConfigMap size limit");
    let shipped: Value =
        serde_json::from_str(&std::fs::read_to_string(Path::new(ROOT).join(DASHBOARD)).unwrap())
            .unwrap();
    assert_eq!(serde_json::from_str::<Value>(json).unwrap(), shipped);
}

#[test]
fn the_service_monitor_keeps_the_namespace_label_of_the_state_gauges() {
    let sm = only(all_options_render(), "ServiceMonitor");
    assert_eq!(sm["spec"]["endpoints"][0]["honorLabels"], true);
}

#[test]
fn release_timing_alerts_are_opt_in_take_their_thresholds_from_values_and_pass_promtool() {
    let plain = only(&template(BOTH), "PrometheusRule");
    assert_eq!(
        plain["spec"]["groups"].as_array().unwrap().len(),
        1,
        "off unless prometheusRule.releaseTiming.enabled"
    );
    let rule = crate::monitoring::release_timing_rule("");
    let groups = rule["spec"]["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2);
    let plain_groups: Value =
        serde_yaml::from_str(&std::fs::read_to_string(Path::new(ROOT).join(RULES)).unwrap())
            .unwrap();
    assert_eq!(
        groups[0], plain_groups["groups"][0],
        "the plain file's group unchanged"
    );
    let anchors = crate::monitoring::runbook_anchors();
    for r in groups[1]["rules"].as_array().unwrap() {
        let name = r["alert"].as_str().unwrap();
        let anchor = r["annotations"]["runbook_url"]
            .as_str()
            .unwrap()
            .strip_prefix("docs/RUNBOOK.md#")
            .unwrap();
        assert_eq!(anchor, name.to_lowercase(), "{name}: its own section");
        assert!(
            anchors.contains(anchor),
            "{name}: no RUNBOOK section {anchor}"
        );
    }
    crate::monitoring::check_and_test_rules_with(
        &serde_yaml::to_string(&rule["spec"]).unwrap(),
        crate::monitoring::RELEASE_TIMING_RULE_TESTS,
    );

    let tuned = crate::monitoring::release_timing_rule(
        ",prometheusRule.releaseTiming.waitingForReviewSeconds=86400,prometheusRule.releaseTiming.buildProcessingSeconds=1800,prometheusRule.runbookBaseUrl=https://git.example.com/RUNBOOK.md",
    );
    let rules = tuned["spec"]["groups"][1]["rules"].as_array().unwrap();
    assert!(
        rules[0]["expr"]
            .as_str()
            .unwrap()
            .trim_end()
            .ends_with("> 86400")
    );
    assert!(
        rules[1]["expr"]
            .as_str()
            .unwrap()
            .trim_end()
            .ends_with("> 1800")
    );
    assert_eq!(
        rules[1]["annotations"]["runbook_url"],
        "https://git.example.com/RUNBOOK.md#ascwebhookbuildprocessingtoolong"
    );
}

//! RBAC: exactly the API calls the operator makes, and nothing broader.

use super::*;

#[test]
fn default_rbac_is_a_cluster_role_with_exactly_the_operators_calls() {
    let docs = default_render();
    assert_nothing_broad(docs);
    let r = rbac(docs);
    assert_eq!(r.cluster, operator_grants(false));
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

/// Secrets are read by name and, for `generateSecret`, created: never listed or watched (the operator
/// never holds the cluster's Secrets), never updated or deleted (an existing Secret is never overwritten).
#[test]
fn secrets_are_only_read_by_name_or_created() {
    for docs in [default_render(), all_options_render()] {
        for doc in docs
            .iter()
            .filter(|d| matches!(kind(d), "Role" | "ClusterRole"))
        {
            for r in rules_of(doc) {
                if r.resources.iter().flatten().any(|res| res == "secrets") {
                    assert_eq!(
                        r.verbs,
                        vec!["get".to_string(), "create".to_string()],
                        "secrets: get and create only"
                    );
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
    assert_eq!(r.namespaced["ios"], operator_grants(false));
    assert_eq!(r.namespaced[RELEASE_NAMESPACE], lease_grants());
    let c = operator_container(&deployment(&docs));
    assert_eq!(env_value(&c, "ASC_NAMESPACE").as_deref(), Some("ios"));
    let sa = pod_spec(&deployment(&docs)).service_account_name.unwrap();
    assert_bindings_name_the_service_account(&docs, &sa);

    // The same with every option on, a default ServiceAccount included.
    let r = rbac(all_options_render());
    assert!(r.cluster.is_empty());
    assert_eq!(r.namespaced["ios"], operator_grants(true));
    assert_eq!(r.namespaced[RELEASE_NAMESPACE], lease_grants());
}

#[test]
fn watch_namespace_equal_to_the_release_namespace_keeps_both_roles_apart() {
    let docs = template(&["--set", &format!("watchNamespace={RELEASE_NAMESPACE}")]);
    let r = rbac(&docs);
    let mut both = operator_grants(false);
    both.extend(lease_grants());
    assert_eq!(r.namespaced[RELEASE_NAMESPACE], both);
    assert!(r.cluster.is_empty());
}

#[test]
fn a_default_service_account_drops_the_operators_own_right_to_create_jobs() {
    let docs = template(&["--set", "defaultServiceAccount=asc-actions"]);
    assert_nothing_broad(&docs);
    let r = rbac(&docs);
    assert_eq!(r.cluster, operator_grants(true));
    assert!(!r.cluster[&("batch".into(), "jobs".into())].contains("create"));
    let c = operator_container(&deployment(&docs));
    assert_eq!(
        env_value(&c, "ASC_DEFAULT_SERVICE_ACCOUNT").as_deref(),
        Some("asc-actions")
    );
    // Unset, routes without a ServiceAccount act as the operator, which then needs the right itself.
    let c = operator_container(&deployment(default_render()));
    assert_eq!(env_value(&c, "ASC_DEFAULT_SERVICE_ACCOUNT"), None);
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

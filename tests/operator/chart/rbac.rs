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

/// Secrets are read by name and, for `generateSecret`, created; never updated or deleted (an existing
/// Secret is never overwritten). Listed and watched (as metadata) only with `secretAccess: watch`, the
/// default; `get` keeps the least-privilege grant.
#[test]
fn secrets_are_read_by_name_or_created_and_watched_only_with_secret_access_watch() {
    let watch: Vec<String> = ["get", "list", "watch", "create"]
        .map(String::from)
        .to_vec();
    let by_name: Vec<String> = ["get", "create"].map(String::from).to_vec();
    let get_only = template(&["--set", "secretAccess=get"]);
    for (docs, want) in [
        (default_render(), &watch),
        (all_options_render(), &by_name),
        (get_only.as_slice(), &by_name),
    ] {
        let mut found = 0;
        for doc in docs
            .iter()
            .filter(|d| matches!(kind(d), "Role" | "ClusterRole"))
        {
            for r in rules_of(doc) {
                if r.resources.iter().flatten().any(|res| res == "secrets") {
                    assert_eq!(&r.verbs, want, "secrets");
                    found += 1;
                }
            }
        }
        assert_eq!(found, 1, "one rule for Secrets");
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

    // The same with every option on, a default ServiceAccount, get-only Secret access and extra kinds
    // included.
    let r = rbac(all_options_render());
    assert!(r.cluster.is_empty());
    let mut wanted = with_secret_access_get(operator_grants(true));
    wanted.extend(resource_grants(
        &[
            ("tekton.dev", "pipelineruns"),
            ("argoproj.io", "workflows"),
            ("argoproj.io", "cronworkflows"),
        ],
        true,
    ));
    assert_eq!(r.namespaced["ios"], wanted);
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

/// What following and creating an object of a kind takes (`src/controllers/resource_kinds.rs` and
/// `src/controllers/delivery/resources.rs`): list and watch (the metadata watch per kind), get (each
/// wake reads the object; a create that finds the name taken reads the owner), and create, which the
/// operator makes itself only for routes without a ServiceAccount. Discovery is a non-resource URL open
/// to every authenticated user.
fn resource_grants(kinds: &[(&str, &str)], multi_tenant: bool) -> Grants {
    let verbs: &[&str] = if multi_tenant {
        &["get", "list", "watch"]
    } else {
        &["get", "list", "watch", "create"]
    };
    expect(
        &kinds
            .iter()
            .map(|(g, r)| (*g, *r, verbs))
            .collect::<Vec<_>>(),
    )
}

#[test]
fn extra_resources_grant_exactly_what_following_and_creating_those_kinds_takes() {
    let kinds = r#"extraResources=[{"apiGroup":"tekton.dev","resources":["pipelineruns"]},{"apiGroup":"argoproj.io","resources":["workflows"]}]"#;
    let docs = template(&["--set-json", kinds]);
    assert_nothing_broad(&docs);
    let r = rbac(&docs);
    let mut wanted = operator_grants(false);
    let extra = resource_grants(
        &[("tekton.dev", "pipelineruns"), ("argoproj.io", "workflows")],
        false,
    );
    wanted.extend(extra.clone());
    assert_eq!(r.cluster, wanted);
    // Nothing of it without the value.
    for key in extra.keys() {
        assert!(!rbac(default_render()).cluster.contains_key(key), "{key:?}");
    }
    // With a default ServiceAccount, the ServiceAccounts create; the operator only follows.
    let docs = template(&[
        "--set-json",
        kinds,
        "--set",
        "defaultServiceAccount=asc-actions",
    ]);
    let r = rbac(&docs);
    let mut wanted = operator_grants(true);
    wanted.extend(resource_grants(
        &[("tekton.dev", "pipelineruns"), ("argoproj.io", "workflows")],
        true,
    ));
    assert_eq!(r.cluster, wanted);
}

#[test]
fn extra_resources_refuse_wildcards_and_stray_fields() {
    for bad in [
        r#"extraResources=[{"apiGroup":"*","resources":["pipelineruns"]}]"#,
        r#"extraResources=[{"apiGroup":"tekton.dev","resources":["*"]}]"#,
        r#"extraResources=[{"apiGroup":"tekton.dev","resources":[]}]"#,
        r#"extraResources=[{"apiGroup":"tekton.dev","resources":["pipelineruns"],"verbs":["delete"]}]"#,
    ] {
        let chart = chart_dir();
        let out = run_helm(&[
            "template",
            RELEASE,
            chart.to_str().unwrap(),
            "--set-json",
            bad,
        ]);
        assert!(!out.status.success(), "{bad} was accepted");
        let err = stderr(&out);
        assert!(
            err.contains("schema") && err.contains("extraResources"),
            "{bad}: {err}"
        );
    }
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

//! The Deployment: security context, probes, services, leader election, settings.

use super::*;

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
            let field = e
                .value_from
                .as_ref()
                .and_then(|v| v.field_ref.as_ref())
                .map(|f| f.field_path.clone());
            let value = e.value.clone().unwrap_or_else(|| match field.as_deref() {
                Some("status.podIPs") => "10.244.1.7,fd00:10:244:1::7".to_string(),
                _ => "pod-name".to_string(),
            });
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

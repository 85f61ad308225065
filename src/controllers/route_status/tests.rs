use super::*;
use crate::actions::resource::TypeRef;
use crate::controllers::resource_kinds::KindFact;
use crate::resources::AscCredential;
use crate::resources::route::{EnrichPolicy, EventFilter, HttpAction, JobAction, Rule};
use crate::resources::{
    AscCredentialSpec, AscCredentialStatus, LocalObjectReference, SecretKeySelector,
    WebhookRouteSpec,
};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};

fn sel(name: &str, key: &str) -> SecretKeySelector {
    SecretKeySelector {
        name: name.into(),
        key: key.into(),
        namespace: None,
    }
}

fn job_rule(name: &str, template: serde_json::Value) -> Rule {
    Rule {
        name: name.into(),
        filter: Some(EventFilter::default()),
        enrich: EnrichPolicy::Optional,
        when: None,
        job: Some(JobAction {
            template,
            inject_api_key: false,
        }),
        http: None,
        resource: None,
    }
}

fn good_template() -> serde_json::Value {
    json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "b"}]}}}})
}

fn route(rules: Vec<Rule>, credential: Option<&str>) -> WebhookRoute {
    let mut r = WebhookRoute::new(
        "release",
        WebhookRouteSpec {
            service_account_name: None,
            secret_ref: sel("hook", "secret"),
            credential_ref: credential.map(|c| LocalObjectReference {
                name: c.into(),
                namespace: None,
            }),
            rules,
            delivery_history_limit: Some(2),
            app_store_connect: None,
            suspend: false,
        },
    );
    r.metadata.namespace = Some("ios".into());
    r.metadata.generation = Some(3);
    r
}

fn facts_with(secrets: &[(&str, &[&str])]) -> RouteFacts {
    RouteFacts {
        secrets: secrets
            .iter()
            .map(|(n, keys)| {
                (
                    n.to_string(),
                    Some(keys.iter().map(|k| k.to_string()).collect()),
                )
            })
            .collect(),
        ..RouteFacts::default()
    }
}

fn credential(ready: bool) -> AscCredential {
    let mut c = AscCredential::new(
        "team",
        AscCredentialSpec {
            key_id: "K".into(),
            issuer_id: None,
            private_key_secret_ref: sel("k", "p8"),
            api_url: None,
            verify_interval_minutes: None,
        },
    );
    c.status = Some(AscCredentialStatus {
        conditions: vec![Condition::new(
            "Ready",
            ready,
            if ready { "KeyUsable" } else { "KeyInvalid" },
            "",
        )],
        ..Default::default()
    });
    c
}

#[test]
fn a_complete_route_is_ready_with_its_url() {
    let r = route(vec![job_rule("submit", good_template())], None);
    let p = problems(&r, &facts_with(&[("hook", &["secret"])]));
    assert!(p.is_empty(), "{p:?}");
    let s = desired_status(&r, &[], &[], &p, Some("https://hooks.example.com/"), "t");
    assert_eq!(
        s.url.as_deref(),
        Some("https://hooks.example.com/hooks/ios/release")
    );
    let ready = conditions::find(&s.conditions, "Ready").unwrap();
    assert!(ready.is_true());
    assert_eq!(ready.observed_generation, Some(3));
    assert_eq!(s.observed_generation, Some(3));
}

#[test]
fn a_suspended_route_stays_ready_and_shows_phase_suspended() {
    let mut r = route(vec![job_rule("submit", good_template())], None);
    r.spec.suspend = true;
    let p = problems(&r, &facts_with(&[("hook", &["secret"])]));
    let s = desired_status(&r, &[], &[], &p, None, "t1");
    assert_eq!(s.phase.as_deref(), Some("Suspended"));
    assert!(conditions::find(&s.conditions, "Ready").unwrap().is_true());
    let suspended = conditions::find(&s.conditions, "Suspended").unwrap();
    assert_eq!(
        (suspended.status.as_str(), suspended.reason.as_str()),
        ("True", "RouteSuspended")
    );

    r.spec.suspend = false;
    r.status = Some(s);
    let resumed = desired_status(&r, &[], &[], &p, None, "t2");
    assert_eq!(resumed.phase.as_deref(), Some("Ready"));
    let c = conditions::find(&resumed.conditions, "Suspended").unwrap();
    assert_eq!(
        (c.status.as_str(), c.last_transition_time.as_str()),
        ("False", "t2")
    );
}

#[test]
fn a_route_with_problems_is_not_ready_even_when_suspended() {
    let mut r = route(vec![job_rule("submit", good_template())], None);
    r.spec.suspend = true;
    let p = problems(&r, &facts_with(&[]));
    assert!(!p.is_empty());
    assert_eq!(route_phase(&r, &p), "NotReady");
}

#[test]
fn a_rule_whose_filter_did_not_survive_storage_is_an_invalid_rule() {
    // What the API server hands back for a route written with the old `on:` key through a YAML 1.1
    // tool: the filter is gone (pruned as an unknown property named "true").
    let mut rule = job_rule("submit", good_template());
    rule.filter = None;
    let r = route(vec![rule], None);
    let p = problems(&r, &facts_with(&[("hook", &["secret"])]));
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].reason, "InvalidRule");
    assert!(p[0].message.contains("rule submit"), "{}", p[0].message);
    assert!(p[0].message.contains("match"), "{}", p[0].message);
}

#[test]
fn missing_secret_and_missing_key_have_their_own_reasons() {
    let r = route(vec![], None);
    assert_eq!(
        problems(&r, &RouteFacts::default())[0].reason,
        "SecretNotFound"
    );
    assert_eq!(
        problems(&r, &facts_with(&[("hook", &["other"])]))[0].reason,
        "SecretKeyNotFound"
    );
}

#[test]
fn cross_namespace_references_are_refused_first() {
    let mut r = route(vec![], Some("team"));
    r.spec.secret_ref.namespace = Some("payments".into());
    let p = problems(&r, &facts_with(&[("hook", &["secret"])]));
    assert_eq!(p[0].reason, "CrossNamespaceReference");
    assert!(p[0].message.contains("payments"));
    let mut same = route(vec![], None);
    same.spec.secret_ref.namespace = Some("ios".into());
    assert!(problems(&same, &facts_with(&[("hook", &["secret"])])).is_empty());
}

#[test]
fn credential_must_exist_and_be_ready() {
    let r = route(vec![], Some("team"));
    let mut f = facts_with(&[("hook", &["secret"])]);
    f.credential = Some(None);
    assert_eq!(problems(&r, &f)[0].reason, "CredentialNotFound");
    f.credential = Some(Some(credential(false)));
    assert_eq!(problems(&r, &f)[0].reason, "CredentialNotReady");
    f.credential = Some(Some(credential(true)));
    assert!(problems(&r, &f).is_empty());
}

#[test]
fn invalid_job_and_http_templates_make_the_route_not_ready() {
    let bad_job = job_rule(
        "submit",
        json!({"spec": {"template": {"spec": {"containers": []}}}}),
    );
    let bad_http = Rule {
        name: "slack".into(),
        filter: Some(EventFilter::default()),
        enrich: EnrichPolicy::Optional,
        when: None,
        job: None,
        resource: None,
        http: Some(HttpAction {
            url_secret_ref: sel("slack", "url"),
            method: None,
            headers_secret_ref: None,
            body: Some("{{ event.newState ".into()),
            content_type: None,
            timeout_seconds: None,
            max_attempts: None,
        }),
    };
    let r = route(vec![bad_job, bad_http], None);
    let p = problems(
        &r,
        &facts_with(&[("hook", &["secret"]), ("slack", &["url"])]),
    );
    let reasons: Vec<_> = p.iter().map(|p| p.reason).collect();
    assert_eq!(reasons, vec!["InvalidJobTemplate", "InvalidHttpTemplate"]);
    let c = ready_condition(&p);
    assert_eq!(c.reason, "InvalidJobTemplate");
    assert!(c.message.contains("rule slack"));
}

fn delivery(name: &str, at: &str, phase: Phase, event_type: &str) -> DeliverySummary {
    DeliverySummary {
        name: name.into(),
        owner_uid: Some("uid-1".into()),
        event_type: event_type.into(),
        new_state: None,
        phase,
        received_at: at.into(),
        replay_wanted: false,
        replay_unseen: false,
        timing: None,
    }
}

#[test]
fn pruning_deletes_the_oldest_finished_deliveries_and_keeps_counting_them() {
    let r = route(vec![], None);
    // Names as the receiver makes them: the event key that pruning records ends each one.
    let name = |event: &str| crate::naming::delivery_name("release", event);
    let a = delivery(
        &name("a"),
        "2026-01-01T00:00:01Z",
        Phase::Succeeded,
        "buildUploadStateUpdated",
    );
    let b = delivery(
        &name("b"),
        "2026-01-01T00:00:02Z",
        Phase::Running,
        "buildUploadStateUpdated",
    );
    let c = delivery(
        &name("c"),
        "2026-01-01T00:00:03Z",
        Phase::Failed,
        "webhookPingCreated",
    );
    let d = delivery(
        &name("d"),
        "2026-01-01T00:00:04Z",
        Phase::NoMatch,
        "buildUploadStateUpdated",
    );
    let all = vec![&a, &b, &c, &d];
    let prune = to_prune(&all, 2);
    let names: Vec<_> = prune.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(
        names,
        vec![name("a"), name("c")],
        "running deliveries are never pruned"
    );
    let s = desired_status(&r, &all, &prune, &[], None, "t");
    assert_eq!(
        s.deliveries,
        DeliveryCounts {
            received: 4,
            succeeded: 1,
            failed: 1,
            no_match: 1,
            in_progress: 1,
            duplicate: 0,
        }
    );
    assert_eq!(s.last_delivery.as_ref().unwrap().name, name("d"));
    assert_eq!(s.last_ping_time.as_deref(), Some("2026-01-01T00:00:03Z"));

    let mut after = r.clone();
    after.status = Some(s);
    let remaining = vec![&b, &d];
    let s2 = desired_status(&after, &remaining, &[], &[], None, "t");
    assert_eq!(s2.deliveries.received, 4, "pruned deliveries stay counted");
    assert_eq!(
        s2.seen_events
            .keys()
            .iter()
            .map(|k| k.as_str())
            .collect::<Vec<_>>(),
        vec![
            crate::naming::event_key_of(&name("a")),
            crate::naming::event_key_of(&name("c"))
        ],
        "the pruned events are recorded in the same write that counts them, and kept"
    );
    assert_eq!(
        s2.last_ping_time.as_deref(),
        Some("2026-01-01T00:00:03Z"),
        "the last ping survives pruning"
    );
}

#[test]
fn a_delivery_waiting_for_its_replay_is_not_pruned() {
    let old = DeliverySummary {
        replay_wanted: true,
        ..delivery("a", "2026-01-01T00:00:01Z", Phase::Succeeded, "x")
    };
    let newer = delivery("b", "2026-01-01T00:00:02Z", Phase::Succeeded, "x");
    let all = vec![&old, &newer];
    let names: Vec<_> = to_prune(&all, 1).iter().map(|d| d.name.clone()).collect();
    assert_eq!(names, vec!["b"], "the newer one goes instead");
}

#[test]
fn a_when_that_does_not_compile_makes_the_route_not_ready() {
    let mut rule = job_rule("submit", good_template());
    rule.when = Some(r#"instance.platform == "IOS" &&"#.into());
    let mut fine = job_rule("other", good_template());
    fine.when = Some(r#"instance.platform == "IOS""#.into());
    let r = route(vec![rule, fine], None);
    let p = problems(&r, &facts_with(&[("hook", &["secret"])]));
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].reason, "InvalidRuleExpression");
    assert!(
        p[0].message
            .starts_with("rule submit: when: invalid CEL expression"),
        "{}",
        p[0].message
    );
}

#[test]
fn a_job_template_expanding_asc_variables_in_args_is_unsafe() {
    let template = |field: &str, value: &str, init: bool| {
        let container = json!({"name": "notify", "image": "alpine", field: ["sh", "-c", value]});
        let (containers, init_containers) = if init {
            (json!([{"name": "a", "image": "b"}]), json!([container]))
        } else {
            (json!([container]), json!([]))
        };
        json!({"spec": {"template": {"spec": {
            "containers": containers, "initContainers": init_containers}}}})
    };
    let facts = facts_with(&[("hook", &["secret"])]);
    for (field, init) in [("args", false), ("command", false), ("args", true)] {
        let r = route(
            vec![job_rule(
                "feedback",
                template(field, "echo $(ASC_INSTANCE)", init),
            )],
            None,
        );
        let p = problems(&r, &facts);
        assert_eq!(
            p.iter().map(|p| p.reason).collect::<Vec<_>>(),
            vec!["UnsafeJobTemplate"],
            "{field} (init: {init})"
        );
        let c = ready_condition(&p);
        assert!(!c.is_true());
        assert!(c.message.contains("rule feedback"), "{}", c.message);
        assert!(c.message.contains(field), "{}", c.message);
    }
    let safe = route(
        vec![job_rule(
            "feedback",
            template("args", "notify \"$ASC_INSTANCE\" $(OTHER)", false),
        )],
        None,
    );
    assert!(problems(&safe, &facts).is_empty());
}

#[test]
fn a_missing_service_account_is_reported_with_its_name() {
    let r = route(vec![job_rule("submit", good_template())], None);
    let facts = RouteFacts {
        missing_service_account: Some("builder".into()),
        ..facts_with(&[("hook", &["secret"])])
    };
    let p = problems(&r, &facts);
    assert_eq!(
        p.iter().map(|p| p.reason).collect::<Vec<_>>(),
        vec!["ServiceAccountNotFound"]
    );
    assert!(p[0].message.contains("ios/builder"), "{}", p[0].message);
}

fn resource_rule(name: &str, action: crate::resources::route::ResourceAction) -> Rule {
    Rule {
        job: None,
        resource: Some(action),
        ..job_rule(name, good_template())
    }
}

fn pipeline_run(succeeded_when: Option<&str>) -> crate::resources::route::ResourceAction {
    crate::resources::route::ResourceAction {
        template: json!("apiVersion: tekton.dev/v1\nkind: PipelineRun\nspec: {}\n"),
        succeeded_when: succeeded_when.map(str::to_owned),
        failed_when: None,
    }
}

fn tekton() -> TypeRef {
    TypeRef {
        api_version: "tekton.dev/v1".into(),
        kind: "PipelineRun".into(),
    }
}

#[test]
fn a_resource_rule_is_ready_only_when_its_kind_is_served_and_namespaced() {
    let r = route(vec![resource_rule("run", pipeline_run(None))], None);
    assert_eq!(
        resource_kinds(&r).into_iter().collect::<Vec<_>>(),
        vec![tekton()]
    );
    let with_kind = |fact: KindFact| RouteFacts {
        kinds: BTreeMap::from([(tekton(), fact)]),
        ..facts_with(&[("hook", &["secret"])])
    };
    let served = kube::api::ApiResource::from_gvk(&tekton().gvk());
    assert!(problems(&r, &with_kind(KindFact::Namespaced(served))).is_empty());
    let p = problems(&r, &with_kind(KindFact::Unknown("not served".into())));
    assert_eq!(
        (p[0].reason, p[0].message.as_str()),
        (
            "UnknownKind",
            "rule run: not served; install its CRD or fix apiVersion and kind"
        )
    );
    let p = problems(&r, &with_kind(KindFact::ClusterScoped));
    assert_eq!(p[0].reason, "ClusterScopedKind");
    // Not looked up (yet) is not Ready either.
    let p = problems(&r, &facts_with(&[("hook", &["secret"])]));
    assert_eq!(p[0].reason, "UnknownKind");
}

#[test]
fn a_resource_rule_with_a_broken_template_or_expression_says_which() {
    let facts = RouteFacts {
        kinds: BTreeMap::from([(
            tekton(),
            KindFact::Namespaced(kube::api::ApiResource::from_gvk(&tekton().gvk())),
        )]),
        ..facts_with(&[("hook", &["secret"])])
    };
    let r = route(
        vec![resource_rule("run", pipeline_run(Some("object.status ==")))],
        None,
    );
    let p = problems(&r, &facts);
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].reason, "InvalidRuleExpression");
    assert!(
        p[0].message.starts_with("rule run: succeededWhen: "),
        "{p:?}"
    );
    let no_kind = crate::resources::route::ResourceAction {
        template: json!({"apiVersion": "tekton.dev/v1"}),
        ..pipeline_run(None)
    };
    let r = route(vec![resource_rule("run", no_kind)], None);
    assert!(resource_kinds(&r).is_empty());
    let p = problems(&r, &facts);
    assert_eq!(p[0].reason, "InvalidResourceTemplate");
    assert!(p[0].message.contains("non-empty kind"), "{p:?}");
}

#[test]
fn readiness_reads_only_the_referenced_keys_so_the_cache_keeps_no_others() {
    let mut r = route(vec![], None);
    r.spec.rules.push(Rule {
        http: Some(HttpAction {
            url_secret_ref: sel("slack", "url"),
            method: None,
            headers_secret_ref: Some(LocalObjectReference {
                name: "headers".into(),
                namespace: None,
            }),
            body: None,
            content_type: None,
            timeout_seconds: None,
            max_attempts: None,
        }),
        job: None,
        ..job_rule("notify", json!({}))
    });
    let wanted = referenced_keys(&r);
    assert_eq!(wanted, BTreeSet::from(["secret", "url"]));
    for stored in [
        &[
            ("hook", &["secret", "x"][..]),
            ("slack", &["url", "y"]),
            ("headers", &["Authorization"]),
        ][..],
        &[
            ("hook", &["other"][..]),
            ("slack", &["y"]),
            ("headers", &[]),
        ],
        &[("hook", &["secret"][..])],
    ] {
        let full = facts_with(stored);
        let kept = RouteFacts {
            secrets: full
                .secrets
                .iter()
                .map(|(name, keys)| {
                    let keys = keys.as_ref().map(|k| {
                        k.iter()
                            .filter(|k| wanted.contains(k.as_str()))
                            .cloned()
                            .collect()
                    });
                    (name.clone(), keys)
                })
                .collect(),
            ..full.clone()
        };
        assert_eq!(problems(&r, &full), problems(&r, &kept), "{stored:?}");
    }
}

/// A build's state change as its delivery summary carries it, received at `at`.
fn build_change(event: &str, from: &str, state: &str, at: &str) -> DeliverySummary {
    DeliverySummary {
        new_state: Some(state.into()),
        timing: Some(Box::new(crate::timing::Observation {
            kind: crate::resources::release_timing::ItemKind::Build,
            id: "b-1".into(),
            state: state.into(),
            from: Some(from.into()),
            at: at.parse().unwrap(),
            source: crate::resources::release_timing::TimeSource::Received,
            name: None,
            actions_started: None,
        })),
        ..delivery(
            &crate::naming::delivery_name("release", event),
            at,
            Phase::Succeeded,
            "buildUploadStateUpdated",
        )
    }
}

#[test]
fn release_timing_outlives_pruning_and_a_pruned_event_that_comes_back_is_not_timed_again() {
    let r = route(vec![], None);
    let processing = build_change("p", "AWAITING_UPLOAD", "PROCESSING", "2026-12-01T10:00:00Z");
    let complete = build_change("c", "PROCESSING", "COMPLETE", "2026-12-01T10:20:00Z");
    let all = vec![&processing, &complete];
    let s = desired_status(&r, &all, &[&processing], &[], None, "t");
    let timed = &s.release_timing.items[0];
    assert_eq!(timed.processing_seconds, Some(1_200));

    // `processing` was pruned; App Store Connect sends its event again an hour later.
    let mut after = r.clone();
    after.status = Some(s.clone());
    let again = build_change("p", "AWAITING_UPLOAD", "PROCESSING", "2026-12-01T11:00:00Z");
    let s2 = desired_status(&after, &[&complete, &again], &[], &[], None, "t");
    assert_eq!(s2.release_timing, s.release_timing);
}

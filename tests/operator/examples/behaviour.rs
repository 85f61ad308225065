//! What each example does with events: which rules fire, and what their messages say.

use super::*;

fn fixture_event(name: &str) -> WebhookEvent {
    let raw = std::fs::read(Path::new(ROOT).join(format!("tests/fixtures/asc/events/{name}.json")))
        .unwrap_or_else(|e| panic!("fixture {name}: {e}"));
    WebhookEvent::parse(raw.into()).unwrap()
}

fn synthetic_event(event_type: &str, instance_type: &str) -> WebhookEvent {
    let body = json!({"data": {
        "type": event_type, "id": "3b0c2d1e-0f4a-4c55-9a61-2b7c8d9e0f11", "version": 1,
        "attributes": {"timestamp": "2026-01-05T10:00:00.000Z"},
        "relationships": {"instance": {
            "data": {"type": instance_type, "id": "AJzd7Mv0s3hS5Pzb1p3Y"},
            "links": {"self": format!("https://api.appstoreconnect.apple.com/v1/{instance_type}/AJzd7Mv0s3hS5Pzb1p3Y")}}}}});
    WebhookEvent::parse(serde_json::to_vec(&body).unwrap().into()).unwrap()
}

fn fired<'a>(r: &'a WebhookRoute, e: &WebhookEvent) -> Vec<&'a str> {
    let facts = EventFacts {
        event_type: e.event_type.as_str(),
        new_state: e.new_state.as_deref(),
        old_state: e.old_state.as_deref(),
    };
    matching_rules(&r.spec.rules, facts)
        .into_iter()
        .map(|r| r.name.as_str())
        .collect()
}

#[test]
fn each_example_reacts_to_its_events_and_only_those() {
    let crash = synthetic_event(
        "betaFeedbackCrashSubmissionCreated",
        "betaFeedbackCrashSubmissions",
    );
    let screenshot = synthetic_event(
        "betaFeedbackScreenshotSubmissionCreated",
        "betaFeedbackScreenshotSubmissions",
    );
    let named: Vec<(&str, WebhookEvent)> = asc_webhook_operator::examples::NAMES
        .iter()
        .copied()
        .map(|n| (n, fixture_event(n)))
        .chain([("crash", crash), ("screenshot", screenshot)])
        .collect();

    let expected: BTreeMap<(&str, &str), Vec<&str>> = BTreeMap::from([
        (
            ("submit-after-processing", "build-upload-complete"),
            vec!["submit-for-review"],
        ),
        (
            (
                "gitflow-merge-on-release",
                "app-version-ready-for-distribution",
            ),
            vec!["merge-release"],
        ),
        (
            ("release-message", "app-version-ready-for-distribution"),
            vec!["slack", "jira"],
        ),
        (
            ("failure-notifier", "build-upload-failed"),
            vec!["build-failed"],
        ),
        (
            ("failure-notifier", "app-version-developer-rejected"),
            vec!["version-rejected"],
        ),
        (
            ("github-actions-submission", "build-upload-complete"),
            vec!["dispatch-submission"],
        ),
        (
            ("tekton-submission", "build-upload-complete"),
            vec!["submit-for-review"],
        ),
        (
            ("argo-workflows-submission", "build-upload-complete"),
            vec!["submit-for-review"],
        ),
        (("testflight-feedback", "crash"), vec!["crash"]),
        (("testflight-feedback", "screenshot"), vec!["screenshot"]),
    ]);
    for ex in all_examples() {
        let r = route(&ex);
        for (event_name, event) in &named {
            let want = expected
                .get(&(ex.name.as_str(), *event_name))
                .cloned()
                .unwrap_or_default();
            assert_eq!(fired(r, event), want, "{} on {event_name}", ex.name);
        }
    }

    // The other rejection states of the failure notifier, from the same fixture with the state changed.
    let ex = load("failure-notifier");
    let raw = std::fs::read_to_string(
        Path::new(ROOT).join("tests/fixtures/asc/events/app-version-developer-rejected.json"),
    )
    .unwrap();
    for state in ["REJECTED", "METADATA_REJECTED", "INVALID_BINARY"] {
        let e = WebhookEvent::parse(raw.replace("DEVELOPER_REJECTED", state).into_bytes().into())
            .unwrap();
        assert_eq!(fired(route(&ex), &e), vec!["version-rejected"], "{state}");
    }
}

// ---------------------------------------------------------------------------------------------------------
// HTTP bodies

fn enrichment_for(e: &WebhookEvent) -> Option<Enrichment> {
    let i = e.instance.as_ref()?;
    let path = Path::new(ROOT).join(format!("tests/fixtures/asc/api/{}-{}.json", i.kind, i.id));
    let raw = std::fs::read(path).ok()?;
    Some(Enrichment::from_document(&serde_json::from_slice(&raw).unwrap()).unwrap())
}

/// The template context the delivery controller builds for `e` on `r`, with or without enrichment.
fn context(r: &WebhookRoute, e: &WebhookEvent, enrichment: Option<&Enrichment>) -> Value {
    let mut r = r.clone();
    r.metadata.namespace = Some(NS.into());
    r.metadata.uid = Some("route-uid".into());
    let d = build_delivery(&r, e, None, "2026-01-05T10:00:01Z");
    EventContext {
        delivery: &d,
        enrichment,
    }
    .template_values()
}

/// Renders a rule's body and parses it as JSON (every example uses the default JSON content type).
fn render_json(rule: &Rule, ctx: &Value) -> Value {
    let h = rule.http.as_ref().unwrap();
    let ct = h.content_type.as_deref().unwrap_or("application/json");
    assert!(template::is_json(ct), "{}: JSON body", rule.name);
    let body = template::render(h.body.as_deref().unwrap(), ctx, true)
        .unwrap_or_else(|e| panic!("{}: {e}", rule.name));
    serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("{}: body is not JSON ({e}):\n{body}", rule.name))
}

/// Replaces every string in `v` with text that breaks naive JSON splicing.
fn hostile(v: &Value) -> Value {
    match v {
        Value::String(s) => Value::String(format!("{s}\"}}, \"x\": [\"\\\n\t\u{1}")),
        Value::Array(a) => Value::Array(a.iter().map(hostile).collect()),
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), hostile(v))).collect()),
        other => other.clone(),
    }
}

#[test]
fn http_bodies_are_valid_json_whatever_the_event_holds() {
    let events = [
        fixture_event("build-upload-failed"),
        fixture_event("app-version-developer-rejected"),
        fixture_event("app-version-ready-for-distribution"),
        synthetic_event(
            "betaFeedbackCrashSubmissionCreated",
            "betaFeedbackCrashSubmissions",
        ),
        synthetic_event(
            "betaFeedbackScreenshotSubmissionCreated",
            "betaFeedbackScreenshotSubmissions",
        ),
    ];
    let mut rendered = 0;
    for ex in all_examples() {
        let r = route(&ex);
        for e in &events {
            let enriched = enrichment_for(e);
            for rule in matching_rules(
                &r.spec.rules,
                EventFacts {
                    event_type: e.event_type.as_str(),
                    new_state: e.new_state.as_deref(),
                    old_state: e.old_state.as_deref(),
                },
            ) {
                if rule.http.is_none() {
                    continue;
                }
                let mut contexts = vec![context(r, e, None)];
                if let Some(en) = &enriched {
                    contexts.push(context(r, e, Some(en)));
                }
                // An enrichment with every field an attacker-controlled string could reach.
                let mut feedback = contexts[0].clone();
                feedback["instance"] = json!({
                    "version": "1.0", "buildNumber": "7", "platform": "IOS", "state": "X",
                    "errors": ["ITMS-1: a", "ITMS-2: b"], "errorsText": "ITMS-1: a\nITMS-2: b",
                    "attributes": {"comment": "it crashed"}
                });
                contexts.push(feedback);
                let hostile_contexts: Vec<Value> = contexts.iter().map(hostile).collect();
                contexts.extend(hostile_contexts);
                for ctx in &contexts {
                    let v = render_json(rule, ctx);
                    assert!(v.is_object(), "{}/{}", ex.name, rule.name);
                    assert!(
                        v.get("x").is_none(),
                        "{}/{}: a value broke out",
                        ex.name,
                        rule.name
                    );
                    rendered += 1;
                }
            }
        }
    }
    assert!(rendered >= 30, "rendered {rendered} bodies");
}

#[test]
fn messages_carry_the_facts_people_need() {
    // Failure notifier: Apple's error text and the build.
    let ex = load("failure-notifier");
    let r = route(&ex);
    let e = fixture_event("build-upload-failed");
    let en = enrichment_for(&e).expect("API fixture");
    let text = render_json(rule(r, "build-failed"), &context(r, &e, Some(&en)))["text"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(text.contains("ITMS-90683"), "{text}");
    assert!(text.contains("1.101.0") && text.contains("(3)"), "{text}");
    let bare = render_json(rule(r, "build-failed"), &context(r, &e, None))["text"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        bare.contains("failed processing") && !bare.contains("```"),
        "{bare}"
    );

    let e = fixture_event("app-version-developer-rejected");
    let text = render_json(rule(r, "version-rejected"), &context(r, &e, None))["text"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        text.contains("WAITING_FOR_REVIEW") && text.contains("DEVELOPER_REJECTED"),
        "{text}"
    );

    // Release message: the version, to Slack and Jira.
    let ex = load("release-message");
    let r = route(&ex);
    let e = fixture_event("app-version-ready-for-distribution");
    let en = enrichment_for(&e).expect("API fixture");
    let version = en.version.clone().expect("fixture has a version");
    let ctx = context(r, &e, Some(&en));
    let slack = render_json(rule(r, "slack"), &ctx);
    assert!(
        slack["text"]
            .as_str()
            .unwrap()
            .contains(&format!("Version {version}"))
    );
    let jira = render_json(rule(r, "jira"), &ctx);
    assert_eq!(jira["data"]["version"], json!(version));
    assert_eq!(jira["data"]["state"], "READY_FOR_DISTRIBUTION");
    let h = rule(r, "jira").http.as_ref().unwrap();
    assert_eq!(
        h.headers_secret_ref.as_ref().unwrap().name,
        "jira-automation-headers"
    );
    assert_eq!(rule(r, "jira").enrich, EnrichPolicy::Required);

    // TestFlight: the feedback id without enrichment.
    let ex = load("testflight-feedback");
    let r = route(&ex);
    let e = synthetic_event(
        "betaFeedbackCrashSubmissionCreated",
        "betaFeedbackCrashSubmissions",
    );
    let text = render_json(rule(r, "crash"), &context(r, &e, None))["text"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(text.contains("AJzd7Mv0s3hS5Pzb1p3Y"), "{text}");
}

// ---------------------------------------------------------------------------------------------------------
// Objects of resource rules

/// The object `rule` of `r` creates for `e`, built as the delivery controller builds it.
fn built_object(r: &WebhookRoute, rule: &Rule, e: &WebhookEvent, en: Option<&Enrichment>) -> Value {
    let mut r = r.clone();
    r.metadata.namespace = Some(NS.into());
    r.metadata.uid = Some("route-uid".into());
    let mut d = build_delivery(&r, e, None, "2026-01-05T10:00:01Z");
    d.metadata.uid = Some("delivery-uid".into());
    let action = rule.resource.as_ref().unwrap();
    let checked = resource::validate(action).unwrap();
    let ctx = EventContext {
        delivery: &d,
        enrichment: en,
    };
    resource::build(&rule.name, action, &ctx, Some(&checked))
        .unwrap_or_else(|err| panic!("{}: {err}", rule.name))
        .1
}

/// Argument values of a PipelineRun (`spec.params`) or a Workflow (`spec.arguments.parameters`).
fn arguments(obj: &Value) -> BTreeMap<String, String> {
    let list = obj
        .pointer("/spec/params")
        .or_else(|| obj.pointer("/spec/arguments/parameters"))
        .and_then(Value::as_array)
        .expect("params or arguments");
    list.iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_owned(),
                p["value"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn pipeline_runs_and_workflows_carry_the_version_and_build_and_keep_their_shape() {
    let e = fixture_event("build-upload-complete");
    let en = enrichment_for(&e).expect("API fixture");
    for (name, kind) in [
        ("tekton-submission", "tekton.dev/v1 PipelineRun"),
        ("argo-workflows-submission", "argoproj.io/v1alpha1 Workflow"),
    ] {
        let ex = load(name);
        let r = route(&ex);
        let submit = rule(r, "submit-for-review");
        assert_eq!(submit.enrich, EnrichPolicy::Required, "{name}");
        let action = submit.resource.as_ref().expect("a resource rule");
        assert_eq!(resource::validate(action).unwrap().to_string(), kind);
        let obj = built_object(r, submit, &e, Some(&en));
        let args = arguments(&obj);
        assert_eq!(args["version"], en.version.clone().unwrap(), "{name}");
        assert_eq!(
            args["build-number"],
            en.build_number.clone().unwrap(),
            "{name}"
        );
        assert_eq!(args["event-id"], e.id, "{name}");
        assert_eq!(obj["metadata"]["namespace"], NS);
        assert_eq!(
            obj["metadata"]["labels"]["app.kubernetes.io/part-of"],
            "ios-release"
        );

        // Whatever Apple's object says, it stays a value of its parameter.
        let mut evil = en.clone();
        evil.version = Some("1.0\", \"injected\": \"x\n  extra: [1]".into());
        evil.build_number = Some("7'}, {name: injected, value: '".into());
        let hostile = built_object(r, submit, &e, Some(&evil));
        let hostile_args = arguments(&hostile);
        assert_eq!(hostile_args.len(), args.len(), "{name}: no parameter added");
        assert_eq!(hostile_args["version"], evil.version.clone().unwrap());
        assert_eq!(
            hostile_args["build-number"],
            evil.build_number.clone().unwrap()
        );
    }
}

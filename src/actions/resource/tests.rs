use super::*;
use crate::actions::context::tests::{delivery, enrichment};

fn action(template: Value) -> ResourceAction {
    ResourceAction {
        template,
        succeeded_when: None,
        failed_when: None,
    }
}

const PIPELINE_RUN: &str = r#"
apiVersion: tekton.dev/v1
kind: PipelineRun
metadata:
  name: ignored
  namespace: elsewhere
  labels: {team: ios}
  annotations: {note: "build {{ instance.buildNumber }}"}
spec:
  pipelineRef: {name: submit-for-review}
  params:
    - name: version
      value: "{{ instance.version }}"
    - name: state
      value: "{{ event.newState }}"
status: {conditions: [{type: Succeeded, status: "True"}]}
"#;

#[test]
fn a_yaml_template_renders_into_a_named_labelled_owned_object() {
    let d = delivery("build-upload-complete");
    let e = enrichment("buildUploads-3f1c2a9e-7b44-4d2e-9a51-0c8e2f6d1b77");
    let ctx = EventContext {
        delivery: &d,
        enrichment: Some(&e),
    };
    let a = action(Value::String(PIPELINE_RUN.into()));
    let expected = validate(&a).unwrap();
    assert_eq!(expected.to_string(), "tekton.dev/v1 PipelineRun");
    let (t, obj) = build("submit", &a, &ctx, Some(&expected)).unwrap();
    assert_eq!(t, expected);
    assert_eq!(
        obj["metadata"]["name"],
        naming::job_name("release", "submit", &d.spec.event_id)
    );
    assert_eq!(obj["metadata"]["namespace"], "ios");
    let labels = &obj["metadata"]["labels"];
    assert_eq!(labels["team"], "ios");
    assert_eq!(labels[LABEL_RULE], "submit");
    assert_eq!(labels[LABEL_ROUTE], "release");
    assert_eq!(labels[LABEL_DELIVERY], d.name_any());
    assert_eq!(labels[LABEL_MANAGED_BY], MANAGED_BY);
    let owner = &obj["metadata"]["ownerReferences"][0];
    assert_eq!(
        (&owner["kind"], &owner["uid"], &owner["controller"]),
        (
            &json!("WebhookDelivery"),
            &json!("delivery-uid"),
            &json!(true)
        )
    );
    assert_eq!(
        obj["metadata"]["annotations"]["note"],
        format!("build {}", e.build_number.clone().unwrap())
    );
    assert_eq!(
        obj["spec"]["params"][0]["value"],
        e.version.clone().unwrap()
    );
    assert_eq!(obj["spec"]["params"][1]["value"], "COMPLETE");
    assert!(obj.get("status").is_none(), "status is not the template's");
}

#[test]
fn the_object_form_is_a_template_too() {
    let d = delivery("build-upload-complete");
    let ctx = EventContext {
        delivery: &d,
        enrichment: None,
    };
    let a = action(json!({
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "spec": {"arguments": {"parameters": [
            {"name": "event", "value": "{{ event.id }}"},
            {"name": "fallback", "value": "{{ instance.version | default('none') }}"}
        ]}}
    }));
    assert_eq!(validate(&a).unwrap().kind, "Workflow");
    let (_, obj) = build("run", &a, &ctx, None).unwrap();
    let params = &obj["spec"]["arguments"]["parameters"];
    assert_eq!(params[0]["value"], d.spec.event_id.as_str());
    assert_eq!(params[1]["value"], "none");
}

fn hostile_delivery() -> WebhookDelivery {
    let mut d = delivery("build-upload-complete");
    d.spec.new_state = Some("x\", \"injected\": \"1\n  evil: true".into());
    d
}

#[test]
fn an_event_value_cannot_leave_its_double_quotes() {
    let d = hostile_delivery();
    let ctx = EventContext {
        delivery: &d,
        enrichment: None,
    };
    let a = action(Value::String(
        "apiVersion: v1\nkind: ConfigMap\ndata:\n  state: \"{{ event.newState }}\"\n".into(),
    ));
    let (_, obj) = build("r", &a, &ctx, None).unwrap();
    assert_eq!(obj["data"].as_object().unwrap().len(), 1);
    assert_eq!(obj["data"]["state"], d.spec.new_state.clone().unwrap());
}

#[test]
fn a_value_that_changes_the_structure_outside_quotes_is_refused() {
    let mut d = delivery("build-upload-complete");
    d.spec.new_state = Some("x', injected: 'y".into());
    let ctx = EventContext {
        delivery: &d,
        enrichment: None,
    };
    let a = action(Value::String(
        "apiVersion: v1\nkind: ConfigMap\ndata: {state: '{{ event.newState }}'}\n".into(),
    ));
    assert!(validate(&a).is_ok(), "the template itself is fine");
    assert_eq!(
        build("r", &a, &ctx, None).unwrap_err(),
        ResourceTemplateError::Breakout
    );
    // An ordinary value in the same place is fine.
    let plain = delivery("build-upload-complete");
    let ctx = EventContext {
        delivery: &plain,
        enrichment: None,
    };
    let (_, obj) = build("r", &a, &ctx, None).unwrap();
    assert_eq!(obj["data"]["state"], "COMPLETE");
}

#[test]
fn templates_without_a_kind_or_that_are_not_objects_are_refused() {
    for (text, wanted) in [
        (
            "kind: PipelineRun\n",
            ResourceTemplateError::Missing("apiVersion"),
        ),
        (
            "apiVersion: tekton.dev/v1\n",
            ResourceTemplateError::Missing("kind"),
        ),
    ] {
        assert_eq!(validate(&action(Value::String(text.into()))), Err(wanted));
    }
    assert!(matches!(
        validate(&action(Value::String("- a\n- b\n".into()))),
        Err(ResourceTemplateError::Shape(_))
    ));
    assert!(matches!(
        validate(&action(Value::String("{{ event.id ".into()))),
        Err(ResourceTemplateError::Render(_))
    ));
}

#[test]
fn a_kind_that_depends_on_the_event_is_refused() {
    let d = delivery("build-upload-complete");
    let ctx = EventContext {
        delivery: &d,
        enrichment: None,
    };
    let a = action(Value::String(
        "apiVersion: v1\nkind: \"Config{{ event.newState }}\"\n".into(),
    ));
    let checked = validate(&a).unwrap();
    assert!(matches!(
        build("r", &a, &ctx, Some(&checked)),
        Err(ResourceTemplateError::KindChanged(_))
    ));
}

#[test]
fn core_and_grouped_api_versions_become_kinds() {
    let t = TypeRef {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
    };
    assert_eq!(
        (t.gvk().group.as_str(), t.gvk().version.as_str()),
        ("", "v1")
    );
    let t = TypeRef {
        api_version: "tekton.dev/v1".into(),
        kind: "PipelineRun".into(),
    };
    assert_eq!(t.gvk().group, "tekton.dev");
}

fn with_status(kind: &str, status: Value) -> Value {
    json!({"apiVersion": "x/v1", "kind": kind, "status": status})
}

#[test]
fn the_succeeded_condition_decides_for_tekton_and_knative() {
    let running = with_status(
        "PipelineRun",
        json!({"conditions": [{"type": "Succeeded", "status": "Unknown", "reason": "Running", "message": "Tasks Completed: 1"}]}),
    );
    assert_eq!(default_outcome(&running), Outcome::Running);
    assert_eq!(
        summary(&running).as_deref(),
        Some("Succeeded=Unknown (Running): Tasks Completed: 1")
    );
    let ok = with_status(
        "PipelineRun",
        json!({"conditions": [{"type": "Succeeded", "status": "True"}]}),
    );
    assert_eq!(default_outcome(&ok), Outcome::Succeeded);
    let failed = with_status(
        "PipelineRun",
        json!({"conditions": [{"type": "Succeeded", "status": "False", "reason": "Failed", "message": "Tasks Completed: 2 (Failed: 1)"}]}),
    );
    assert_eq!(
        default_outcome(&failed),
        Outcome::Failed(
            "PipelineRun failed: Succeeded=False (Failed): Tasks Completed: 2 (Failed: 1)".into()
        )
    );
}

#[test]
fn complete_and_failed_conditions_decide_for_jobs() {
    let ok = with_status(
        "Job",
        json!({"conditions": [{"type": "Complete", "status": "True"}]}),
    );
    assert_eq!(default_outcome(&ok), Outcome::Succeeded);
    let failed = with_status(
        "Job",
        json!({"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]}),
    );
    assert!(
        matches!(default_outcome(&failed), Outcome::Failed(m) if m.contains("BackoffLimitExceeded"))
    );
    let not_yet = with_status(
        "Job",
        json!({"conditions": [{"type": "Failed", "status": "False"}]}),
    );
    assert_eq!(default_outcome(&not_yet), Outcome::Running);
}

#[test]
fn the_phase_decides_for_argo_workflows_and_pods() {
    assert_eq!(
        default_outcome(&with_status("Workflow", json!({"phase": "Running"}))),
        Outcome::Running
    );
    assert_eq!(
        default_outcome(&with_status("Workflow", json!({"phase": "Succeeded"}))),
        Outcome::Succeeded
    );
    for p in ["Failed", "Error"] {
        let obj = with_status("Workflow", json!({"phase": p, "message": "child failed"}));
        assert_eq!(
            default_outcome(&obj),
            Outcome::Failed(format!("Workflow failed: phase {p} child failed"))
        );
        assert_eq!(
            summary(&obj).as_deref(),
            Some(format!("phase {p}: child failed").as_str())
        );
    }
    assert_eq!(
        default_outcome(&json!({"kind": "Workflow"})),
        Outcome::Running
    );
    assert_eq!(summary(&json!({"kind": "Workflow"})), None);
}

#[test]
fn a_custom_succeeded_when_replaces_the_default() {
    let a = ResourceAction {
        succeeded_when: Some(r#"object.status.stage == "Done""#.into()),
        ..action(json!({}))
    };
    // The default would call this succeeded; the expression does not (yet).
    let half = with_status("Thing", json!({"phase": "Succeeded", "stage": "Building"}));
    assert_eq!(observe(&a, &half, 1000).unwrap().outcome, Outcome::Running);
    let done = with_status("Thing", json!({"stage": "Done"}));
    assert_eq!(
        observe(&a, &done, 1000).unwrap().outcome,
        Outcome::Succeeded
    );
    // A field not there yet is not a failure, just no match.
    let bare = json!({"kind": "Thing"});
    assert_eq!(observe(&a, &bare, 1000).unwrap().outcome, Outcome::Running);
    // The default still decides failures.
    let failed = with_status("Thing", json!({"phase": "Failed"}));
    assert!(matches!(
        observe(&a, &failed, 1000).unwrap().outcome,
        Outcome::Failed(_)
    ));
}

#[test]
fn a_failed_when_over_the_cost_limit_is_an_error_of_the_action() {
    let list = format!(
        "[{}]",
        (0..60).map(|i| i.to_string()).collect::<Vec<_>>().join(",")
    );
    let a = ResourceAction {
        failed_when: Some(format!(
            "{list}.all(a, {list}.all(b, {list}.all(c, a + b + c >= 0)))"
        )),
        ..action(json!({}))
    };
    let err = observe(&a, &with_status("Thing", json!({})), when::COST_LIMIT).unwrap_err();
    assert_eq!(err.reason(), "ExpressionCostExceeded");
    assert_eq!(err.field, "failedWhen");
    let not_bool = ResourceAction {
        failed_when: Some("object.kind".into()),
        ..action(json!({}))
    };
    let err = observe(&not_bool, &with_status("Thing", json!({})), 1000).unwrap_err();
    assert_eq!(err.reason(), "ExpressionError");
}

#[test]
fn a_true_failed_when_fails_with_what_the_object_said() {
    let a = ResourceAction {
        failed_when: Some(r#"object.status.phase == "Stuck""#.into()),
        ..action(json!({}))
    };
    let obj = with_status("Thing", json!({"phase": "Stuck"}));
    let o = observe(&a, &obj, 1000).unwrap();
    assert_eq!(
        o.outcome,
        Outcome::Failed("failedWhen is true (phase Stuck)".into())
    );
    assert_eq!(o.observed.as_deref(), Some("phase Stuck"));
}

#[test]
fn a_key_made_from_a_name_is_not_mistaken_for_a_breakout() {
    let d = delivery("build-upload-complete");
    let ctx = EventContext {
        delivery: &d,
        enrichment: None,
    };
    assert!(d.name_any().contains('-'));
    let a = action(Value::String(
        "apiVersion: v1\nkind: ConfigMap\ndata:\n  \"{{ event.delivery }}\": seen\n".into(),
    ));
    let (_, obj) = build("r", &a, &ctx, None).unwrap();
    assert_eq!(obj["data"][d.name_any()], "seen");
}

use super::*;
use crate::resources::route_asc::AppStoreConnectStatus;
use serde_json::json;

fn route(asc: serde_json::Value, rules: serde_json::Value) -> WebhookRoute {
    serde_json::from_value(json!({
        "apiVersion": "asc.webhooks.dev/v1alpha1", "kind": "WebhookRoute",
        "metadata": {"name": "release", "namespace": "ios", "uid": "u-1", "generation": 1},
        "spec": {"secretRef": {"name": "s", "key": "secret"}, "credentialRef": {"name": "team"},
                 "appStoreConnect": asc, "rules": rules}
    }))
    .unwrap()
}

fn job_rule(name: &str, types: serde_json::Value) -> serde_json::Value {
    json!({"name": name, "match": {"eventTypes": types}, "job": {"template": {"spec": {}}}})
}

const BASE: Option<&str> = Some("https://hooks.example.com/");

#[test]
fn event_types_come_from_the_rules_in_subscription_spelling() {
    let r = route(
        json!({"appId": "1"}),
        json!([
            job_rule("a", json!(["buildUploadStateUpdated"])),
            job_rule(
                "b",
                json!([
                    "APP_STORE_VERSION_APP_VERSION_STATE_UPDATED",
                    "buildUploadStateUpdated"
                ])
            )
        ]),
    );
    let d = desired(&r, BASE).unwrap();
    assert_eq!(
        d.attributes.event_types,
        vec![
            "APP_STORE_VERSION_APP_VERSION_STATE_UPDATED",
            "BUILD_UPLOAD_STATE_UPDATED"
        ]
    );
    assert_eq!(
        d.attributes.url,
        "https://hooks.example.com/hooks/ios/release"
    );
    assert_eq!(d.attributes.name, "ios/release");
    assert!(d.attributes.enabled);
}

#[test]
fn a_rule_without_event_types_subscribes_to_every_type() {
    let r = route(
        json!({"appId": "1"}),
        json!([
            job_rule("a", json!(["buildUploadStateUpdated"])),
            job_rule("all", json!([]))
        ]),
    );
    assert_eq!(
        desired(&r, BASE).unwrap().attributes.event_types.len(),
        EVENT_TYPES.len()
    );
}

#[test]
fn explicit_event_types_name_and_enabled_win() {
    let r = route(
        json!({"appId": "1", "name": "Release hooks", "enabled": false,
               "eventTypes": ["betaFeedbackCrashSubmissionCreated"]}),
        json!([job_rule("all", json!([]))]),
    );
    let d = desired(&r, BASE).unwrap();
    assert_eq!(
        d.attributes.event_types,
        vec!["BETA_FEEDBACK_CRASH_SUBMISSION_CREATED"]
    );
    assert_eq!(d.attributes.name, "Release hooks");
    assert!(!d.attributes.enabled);
}

#[test]
fn an_unknown_event_type_blocks_registration_and_names_the_rule() {
    let r = route(
        json!({"appId": "1"}),
        json!([job_rule("a", json!(["buildUploadStateUpdatd"]))]),
    );
    let b = desired(&r, BASE).unwrap_err();
    assert_eq!(b.reason, "InvalidEventType");
    assert!(b.message.contains("rule a"), "{}", b.message);
}

#[test]
fn without_a_public_url_registration_waits() {
    let r = route(json!({"appId": "1"}), json!([job_rule("a", json!([]))]));
    assert_eq!(desired(&r, None).unwrap_err().reason, "NoPublicUrl");
}

#[test]
fn plain_http_is_refused_unless_loopback() {
    let r = route(json!({"appId": "1"}), json!([job_rule("a", json!([]))]));
    assert_eq!(
        desired(&r, Some("http://hooks.example.com"))
            .unwrap_err()
            .reason,
        "InsecurePublicUrl"
    );
    for ok in [
        "http://127.0.0.1:8080",
        "http://localhost:1",
        "http://[::1]:2",
        "https://h",
    ] {
        assert!(desired(&r, Some(ok)).is_ok(), "{ok}");
    }
}

#[test]
fn a_credential_is_required() {
    let mut r = route(json!({"appId": "1"}), json!([job_rule("a", json!([]))]));
    r.spec.credential_ref = None;
    assert_eq!(desired(&r, BASE).unwrap_err().reason, "CredentialNotReady");
}

fn desired_one() -> Desired {
    let r = route(
        json!({"appId": "1"}),
        json!([job_rule("a", json!(["buildUploadStateUpdated"]))]),
    );
    desired(&r, BASE).unwrap()
}

fn synced(d: &Desired, at: &str) -> AppStoreConnectStatus {
    AppStoreConnectStatus {
        webhook_id: Some("w1".into()),
        app_id: Some(d.app_id.clone()),
        last_sync_time: Some(at.into()),
        observed_secret_version: Some("7".into()),
        registered: Some(d.registered()),
        ping_requested_time: None,
        ..Default::default()
    }
}

fn ts(s: &str) -> jiff::Timestamp {
    s.parse().unwrap()
}

#[test]
fn an_idle_route_needs_no_call_until_the_reread_is_due() {
    let d = desired_one();
    let s = synced(&d, "2026-12-01T10:00:00Z");
    let hour = Duration::from_secs(1800);
    assert_eq!(
        next_step(&d, Some(&s), "7", ts("2026-12-01T10:10:00Z"), hour),
        Step::Idle(Duration::from_secs(1200))
    );
    assert_eq!(
        next_step(&d, Some(&s), "7", ts("2026-12-01T10:30:00Z"), hour),
        Step::Read
    );
}

#[test]
fn a_spec_secret_or_url_change_needs_a_call_at_once() {
    let d = desired_one();
    let s = synced(&d, "2026-12-01T10:00:00Z");
    let now = ts("2026-12-01T10:00:05Z");
    let long = Duration::from_secs(1800);
    assert_eq!(
        next_step(&d, Some(&s), "8", now, long),
        Step::Read,
        "Secret rotated"
    );
    let mut other = d.clone();
    other.attributes.url = "https://new.example.com/hooks/ios/release".into();
    assert_eq!(
        next_step(&other, Some(&s), "7", now, long),
        Step::Read,
        "public URL moved"
    );
    other = d.clone();
    other
        .attributes
        .event_types
        .push("BUILD_BETA_DETAIL_EXTERNAL_BUILD_STATE_UPDATED".into());
    assert_eq!(
        next_step(&other, Some(&s), "7", now, long),
        Step::Read,
        "rules changed"
    );
    other = d.clone();
    other.app_id = "2".into();
    assert_eq!(
        next_step(&other, Some(&s), "7", now, long),
        Step::Read,
        "another app"
    );
    assert_eq!(
        next_step(&d, None, "7", now, long),
        Step::Read,
        "never synced"
    );
}

#[test]
fn rereads_are_spread_but_stable_per_route() {
    let i = Duration::from_secs(1800);
    assert_eq!(read_interval(i, "a"), read_interval(i, "a"));
    assert_ne!(read_interval(i, "a"), read_interval(i, "b"));
    for uid in ["a", "b", "c", "0f9e"] {
        let r = read_interval(i, uid);
        assert!(r <= i && r >= i.mul_f64(0.8), "{r:?}");
    }
}

fn webhook(id: &str, a: &WebhookAttributes) -> Webhook {
    Webhook {
        id: id.into(),
        attributes: a.clone(),
    }
}

#[test]
fn no_webhook_anywhere_is_created() {
    let d = desired_one();
    assert_eq!(plan(&d, None, &[], true), Plan::Create);
    assert_eq!(
        plan(&d, Some(None), &[], false),
        Plan::Create,
        "deleted in App Store Connect: re-created"
    );
}

#[test]
fn a_webhook_with_the_routes_url_is_adopted_and_gets_the_secret() {
    let d = desired_one();
    let mut theirs = d.attributes.clone();
    theirs.name = "made by hand".into();
    let other = WebhookAttributes {
        url: "https://elsewhere/x".into(),
        ..d.attributes.clone()
    };
    let p = plan(
        &d,
        None,
        &[webhook("x", &other), webhook("mine", &theirs)],
        false,
    );
    let Plan::Patch {
        id,
        change,
        send_secret,
        adopted,
    } = p
    else {
        panic!("{p:?}")
    };
    assert_eq!((id.as_str(), send_secret, adopted), ("mine", true, true));
    assert_eq!(change.fields(), vec!["name"]);
}

#[test]
fn only_what_differs_is_patched() {
    let d = desired_one();
    let mut drifted = d.attributes.clone();
    drifted.event_types = vec![];
    drifted.enabled = false;
    let w = webhook("w1", &drifted);
    let p = plan(&d, Some(Some(&w)), &[], false);
    let Plan::Patch {
        change,
        send_secret,
        adopted,
        ..
    } = p
    else {
        panic!("{p:?}")
    };
    assert_eq!(change.fields(), vec!["eventTypes", "enabled"]);
    assert!(!send_secret && !adopted);
}

#[test]
fn event_types_in_another_order_are_in_sync() {
    let mut d = desired_one();
    d.attributes.event_types = vec!["A".into(), "B".into()];
    let mut same = d.attributes.clone();
    same.event_types = vec!["B".into(), "A".into()];
    let w = webhook("w1", &same);
    assert_eq!(
        plan(&d, Some(Some(&w)), &[], false),
        Plan::InSync {
            id: "w1".into(),
            adopted: false
        }
    );
}

#[test]
fn a_rotated_secret_alone_is_a_patch_of_the_secret() {
    let d = desired_one();
    let w = webhook("w1", &d.attributes);
    let p = plan(&d, Some(Some(&w)), &[], true);
    assert!(
        matches!(p, Plan::Patch { send_secret: true, ref change, .. } if change.is_empty()),
        "{p:?}"
    );
}

#[test]
fn ten_foreign_webhooks_mean_the_limit_is_reached() {
    let d = desired_one();
    let others: Vec<Webhook> = (0..10)
        .map(|i| {
            webhook(
                &format!("o{i}"),
                &WebhookAttributes {
                    url: format!("https://other/{i}"),
                    ..d.attributes.clone()
                },
            )
        })
        .collect();
    assert_eq!(plan(&d, None, &others, true), Plan::LimitReached);
    assert_eq!(plan(&d, None, &others[..9], true), Plan::Create);
}

#[test]
fn the_url_matches_what_the_route_controller_writes() {
    let r = route(json!({"appId": "1"}), json!([]));
    let status = crate::controllers::route_status::desired_status(&r, &[], &[], &[], BASE, "t");
    assert_eq!(
        status.url.as_deref(),
        Some(route_url(BASE.unwrap(), &r).as_str())
    );
}

use super::*;
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::watcher;
use serde_json::json;

fn route(name: &str, ready: Option<&str>, asc: bool) -> WebhookRoute {
    let mut spec = json!({
        "secretRef": {"name": "hook", "key": "secret"},
        "rules": [],
    });
    if asc {
        spec["appStoreConnect"] = json!({"appId": "1234567890"});
    }
    let mut v = json!({
        "apiVersion": "asc.webhooks.dev/v1alpha1", "kind": "WebhookRoute",
        "metadata": {"name": name, "namespace": "ios"},
        "spec": spec,
    });
    if let Some(status) = ready {
        v["status"] = json!({
            "conditions": [{"type": "Ready", "status": status, "reason": "R", "message": "m",
                            "lastTransitionTime": "2026-12-01T10:00:00Z"}],
            "lastDelivery": {"name": "d", "eventType": "webhookPingCreated",
                             "receivedAt": "2026-12-01T10:00:00.500Z"},
        });
    }
    serde_json::from_value(v).unwrap()
}

fn credential(name: &str, ready: &str) -> AscCredential {
    serde_json::from_value(json!({
        "apiVersion": "asc.webhooks.dev/v1alpha1", "kind": "AscCredential",
        "metadata": {"name": name, "namespace": "ios"},
        "spec": {"keyId": "K", "issuerId": "I",
                 "privateKeySecretRef": {"name": "k", "key": "AuthKey.p8"}},
        "status": {"conditions": [{"type": "Ready", "status": ready, "reason": "R", "message": "m",
                                   "lastTransitionTime": "2026-12-01T10:00:00Z"}]},
    }))
    .unwrap()
}

struct Caches {
    routes: Writer<WebhookRoute>,
    credentials: Writer<AscCredential>,
    metrics: crate::metrics::Metrics,
    _exporting: Exporting,
}

fn caches() -> Caches {
    let (route_store, routes) = reflector::store();
    let (cred_store, credentials) = reflector::store();
    let metrics = crate::metrics::Metrics::new();
    let exporting = metrics.state.export_from(route_store, cred_store);
    Caches {
        routes,
        credentials,
        metrics,
        _exporting: exporting,
    }
}

fn lines_with(text: &str, needle: &str) -> Vec<String> {
    let mut out: Vec<String> = text
        .lines()
        .filter(|l| l.contains(needle) && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    out.sort();
    out
}

#[test]
fn a_flipped_condition_keeps_one_series_per_status_with_only_the_current_at_one() {
    let mut c = caches();
    c.routes.apply_watcher_event(&watcher::Event::Apply(route(
        "release",
        Some("True"),
        false,
    )));
    let text = c.metrics.encode();
    assert_eq!(
        lines_with(&text, "asc_webhook_route_condition{"),
        [
            r#"asc_webhook_route_condition{namespace="ios",route="release",type="Ready",status="False"} 0"#,
            r#"asc_webhook_route_condition{namespace="ios",route="release",type="Ready",status="True"} 1"#,
            r#"asc_webhook_route_condition{namespace="ios",route="release",type="Ready",status="Unknown"} 0"#,
        ]
    );
    assert_eq!(
        lines_with(&text, "route_last_event_timestamp_seconds{"),
        [
            r#"asc_webhook_route_last_event_timestamp_seconds{namespace="ios",route="release"} 1796119200.5"#
        ]
    );
    c.routes.apply_watcher_event(&watcher::Event::Apply(route(
        "release",
        Some("False"),
        false,
    )));
    let text = c.metrics.encode();
    let series = lines_with(&text, "asc_webhook_route_condition{");
    assert_eq!(series.len(), 3, "{series:?}");
    assert!(series.contains(
        &r#"asc_webhook_route_condition{namespace="ios",route="release",type="Ready",status="False"} 1"#
            .to_owned()
    ));
}

#[test]
fn a_deleted_route_or_credential_loses_every_series() {
    let mut c = caches();
    c.routes
        .apply_watcher_event(&watcher::Event::Apply(route("release", Some("True"), true)));
    c.routes
        .apply_watcher_event(&watcher::Event::Apply(route("beta", Some("False"), false)));
    c.credentials
        .apply_watcher_event(&watcher::Event::Apply(credential("team-key", "True")));
    let text = c.metrics.encode();
    // 3 conditions × 3 statuses, the last event time, 5 delivery phases.
    assert_eq!(lines_with(&text, r#"route="release""#).len(), 3 * 3 + 1 + 5);
    assert_eq!(lines_with(&text, "credential_condition{").len(), 3);
    let received = "2026-12-01T10:00:00.000Z";
    let started = crate::time::parse_ts("2026-12-01T10:00:00.250Z").unwrap();
    c.metrics
        .state
        .observe_start_lag("ios", "release", received, started);
    let text = c.metrics.encode();
    assert!(
        text.contains(
            r#"asc_webhook_delivery_start_lag_seconds_sum{namespace="ios",route="release"} 0.25"#
        ),
        "{text}"
    );
    c.routes.apply_watcher_event(&watcher::Event::Delete(route(
        "release",
        Some("True"),
        true,
    )));
    c.credentials
        .apply_watcher_event(&watcher::Event::Delete(credential("team-key", "True")));
    let text = c.metrics.encode();
    assert_eq!(
        lines_with(&text, r#"route="release""#),
        Vec::<String>::new()
    );
    assert_eq!(
        lines_with(&text, "credential_condition{"),
        Vec::<String>::new()
    );
    assert_eq!(lines_with(&text, r#"route="beta""#).len(), 3 + 1 + 5);
}

#[test]
fn webhook_conditions_not_written_yet_are_unknown_and_go_with_app_store_connect() {
    let mut c = caches();
    c.routes
        .apply_watcher_event(&watcher::Event::Apply(route("release", None, true)));
    let text = c.metrics.encode();
    for t in ["Ready", "WebhookRegistered", "WebhookVerified"] {
        assert!(
            text.contains(&format!(
                r#"asc_webhook_route_condition{{namespace="ios",route="release",type="{t}",status="Unknown"}} 1"#
            )),
            "{text}"
        );
    }
    assert!(lines_with(&text, "route_last_event_timestamp_seconds{").is_empty());
    c.routes
        .apply_watcher_event(&watcher::Event::Apply(route("release", None, false)));
    let text = c.metrics.encode();
    assert!(!text.contains("WebhookRegistered"), "{text}");
    assert_eq!(lines_with(&text, "route_condition{").len(), 3);
}

#[test]
fn losing_the_caches_removes_every_state_series_and_keeps_build_info() {
    let mut c = caches();
    c.routes.apply_watcher_event(&watcher::Event::Apply(route(
        "release",
        Some("True"),
        false,
    )));
    assert!(c.metrics.encode().contains(r#"route="release""#));
    let Caches {
        metrics,
        _exporting,
        ..
    } = c;
    drop(_exporting);
    let text = metrics.encode();
    assert!(!text.contains(r#"route="release""#), "{text}");
    assert!(
        text.contains(&format!(
            r#"asc_webhook_build_info{{version="{}",revision="#,
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
}

#[test]
fn a_credential_asked_to_verify_exports_verified_too() {
    let mut cred = credential("team-key", "False");
    assert_eq!(
        credential_state(&cred).conditions,
        [("Ready", "False")],
        "no verification asked for"
    );
    cred.spec.verify_interval_minutes = Some(60);
    assert_eq!(
        credential_state(&cred).conditions,
        [("Ready", "False"), ("Verified", "Unknown")]
    );
}

//! What an action knows about its event: the delivery's fields plus, when enrichment succeeded, the
//! App Store Connect object. The same facts reach Jobs (as `ASC_*` environment variables) and HTTP
//! templates (as `event`, `instance` and `route`).

use crate::asc::enrich::Enrichment;
use crate::resources::WebhookDelivery;
use kube::ResourceExt;
use serde_json::{Value, json};

/// The event facts shared by every action of one delivery.
#[derive(Debug, Clone)]
pub struct EventContext<'a> {
    /// The delivery being processed.
    pub delivery: &'a WebhookDelivery,
    /// The fetched object, when enrichment succeeded.
    pub enrichment: Option<&'a Enrichment>,
}

impl EventContext<'_> {
    /// `(name, value)` of every `ASC_*` variable, in a stable order. Empty values are kept so a script can
    /// rely on the variable being set.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let s = &self.delivery.spec;
        let instance = s.instance.as_ref();
        let mut env = vec![
            ("ASC_EVENT_TYPE", s.event_type.clone()),
            ("ASC_EVENT_ID", s.event_id.clone()),
            ("ASC_OLD_STATE", s.old_state.clone().unwrap_or_default()),
            ("ASC_NEW_STATE", s.new_state.clone().unwrap_or_default()),
            (
                "ASC_INSTANCE_TYPE",
                instance.map(|i| i.type_.clone()).unwrap_or_default(),
            ),
            (
                "ASC_INSTANCE_ID",
                instance.map(|i| i.id.clone()).unwrap_or_default(),
            ),
            (
                "ASC_INSTANCE_URL",
                instance.and_then(|i| i.url.clone()).unwrap_or_default(),
            ),
            ("ASC_PAYLOAD", s.payload.clone()),
        ];
        if let Some(e) = self.enrichment {
            env.extend([
                ("ASC_INSTANCE", e.instance.to_string()),
                ("ASC_VERSION", e.version.clone().unwrap_or_default()),
                (
                    "ASC_BUILD_NUMBER",
                    e.build_number.clone().unwrap_or_default(),
                ),
                ("ASC_PLATFORM", e.platform.clone().unwrap_or_default()),
                ("ASC_ERRORS", e.errors_text()),
            ]);
        }
        env
    }

    /// The template context: `event`, `instance` (absent without enrichment) and `route`.
    pub fn template_values(&self) -> Value {
        let d = self.delivery;
        let s = &d.spec;
        let event = json!({
            "id": s.event_id,
            "type": s.event_type,
            "oldState": s.old_state,
            "newState": s.new_state,
            "timestamp": payload_timestamp(&s.payload),
            "receivedAt": s.received_at,
            "delivery": d.name_any(),
            "instance": s.instance.as_ref().map(|i| json!({"type": i.type_, "id": i.id, "url": i.url})),
        });
        let route = json!({"name": s.route, "namespace": d.namespace()});
        let mut ctx = json!({"event": event, "route": route});
        if let Some(e) = self.enrichment {
            ctx["instance"] = json!({
                "type": e.instance_type,
                "id": e.instance_id,
                "version": e.version,
                "buildNumber": e.build_number,
                "platform": e.platform,
                "state": e.state,
                "errors": e.errors.iter().map(|i| i.render()).collect::<Vec<_>>(),
                "errorsText": e.errors_text(),
                "warnings": e.warnings.iter().map(|i| i.render()).collect::<Vec<_>>(),
                "infos": e.infos.iter().map(|i| i.render()).collect::<Vec<_>>(),
                "bundleId": e.bundle_id,
                "attributes": e.instance.get("attributes").cloned().unwrap_or(Value::Null),
            });
        }
        ctx
    }
}

fn payload_timestamp(payload: &str) -> Option<String> {
    let v: Value = serde_json::from_str(payload).ok()?;
    v.pointer("/data/attributes/timestamp")?
        .as_str()
        .map(str::to_owned)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::asc::event::WebhookEvent;
    use crate::receiver::record::build_delivery;

    pub(crate) fn delivery(fixture: &str) -> WebhookDelivery {
        let raw = std::fs::read(format!(
            "{}/tests/fixtures/asc/events/{fixture}.json",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let event = WebhookEvent::parse(raw.into()).unwrap();
        let route = crate::receiver::record::tests::route();
        let mut d = build_delivery(&route, &event, None, "2026-01-01T00:00:00Z");
        d.metadata.uid = Some("delivery-uid".into());
        d
    }

    pub(crate) fn enrichment(api_fixture: &str) -> Enrichment {
        let raw = std::fs::read(format!(
            "{}/tests/fixtures/asc/api/{api_fixture}.json",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        Enrichment::from_document(&serde_json::from_slice(&raw).unwrap()).unwrap()
    }

    #[test]
    fn unenriched_events_set_the_event_variables_only() {
        let d = delivery("build-upload-complete");
        let env = EventContext {
            delivery: &d,
            enrichment: None,
        }
        .env();
        let names: Vec<_> = env.iter().map(|(n, _)| *n).collect();
        assert_eq!(names.len(), 8);
        assert!(!names.contains(&"ASC_VERSION"));
        assert!(env.contains(&("ASC_NEW_STATE", "COMPLETE".into())));
        assert!(env.contains(&("ASC_INSTANCE_TYPE", "buildUploads".into())));
    }

    #[test]
    fn enriched_events_add_version_build_and_errors() {
        let d = delivery("build-upload-failed");
        let e = enrichment("buildUploads-9d0e4b12-5c3a-4f8e-b7a6-2e1f0c9d8a55");
        let env = EventContext {
            delivery: &d,
            enrichment: Some(&e),
        }
        .env();
        let get = |n: &str| {
            env.iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        assert_eq!(get("ASC_VERSION"), "1.101.0");
        assert_eq!(get("ASC_BUILD_NUMBER"), "3");
        assert!(get("ASC_ERRORS").contains("ITMS-90683"));
        assert!(get("ASC_INSTANCE").contains("\"buildUploads\""));
    }

    #[test]
    fn template_values_name_event_route_and_instance() {
        let d = delivery("app-version-ready-for-distribution");
        let e = enrichment("appStoreVersions-b8e5c7d1-2f6a-4e9b-8c3d-7a1f5e0b9c24");
        let v = EventContext {
            delivery: &d,
            enrichment: Some(&e),
        }
        .template_values();
        assert_eq!(v["event"]["newState"], "READY_FOR_DISTRIBUTION");
        assert_eq!(v["route"]["namespace"], "ios");
        assert!(v["instance"]["version"].is_string());
        let bare = EventContext {
            delivery: &d,
            enrichment: None,
        }
        .template_values();
        assert!(bare.get("instance").is_none());
    }
}

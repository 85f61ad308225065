//! The pure step from an accepted event to the `WebhookDelivery` that records it.

use crate::asc::event::WebhookEvent;
use crate::naming;
use crate::resources::delivery::{DeliverySource, InstanceReference};
use crate::resources::{WebhookDelivery, WebhookDeliverySpec, WebhookRoute};
use kube::api::ObjectMeta;
use kube::{Resource, ResourceExt};
use std::collections::BTreeMap;

/// Label carrying the route's name on deliveries and Jobs.
pub const LABEL_ROUTE: &str = "asc.webhooks.dev/route";
/// Label set on a delivery once it reached a terminal phase. The delivery controller watches only
/// deliveries without it, so its cache holds the work in flight, not the whole history.
pub const LABEL_FINISHED: &str = "asc.webhooks.dev/finished";
/// Label carrying the event type on deliveries and Jobs.
pub const LABEL_EVENT_TYPE: &str = "asc.webhooks.dev/event-type";

/// The delivery for `event` on `route`: deterministic name, owned by the route (so deleting a route deletes
/// its history), payload kept byte for byte.
pub fn build_delivery(
    route: &WebhookRoute,
    event: &WebhookEvent,
    request_id: Option<&str>,
    received_at: &str,
) -> WebhookDelivery {
    let route_name = route.name_any();
    let labels = BTreeMap::from([
        (LABEL_ROUTE.to_owned(), naming::label_value(&route_name)),
        (
            LABEL_EVENT_TYPE.to_owned(),
            naming::label_value(event.event_type.as_str()),
        ),
    ]);
    let mut delivery = WebhookDelivery::new(
        &naming::delivery_name(&route_name, &event.id),
        WebhookDeliverySpec {
            route: route_name,
            event_id: event.id.clone(),
            event_type: event.event_type.as_str().to_owned(),
            old_state: event.old_state.clone(),
            new_state: event.new_state.clone(),
            instance: event.instance.as_ref().map(|i| InstanceReference {
                type_: i.kind.clone(),
                id: i.id.clone(),
                url: i.url.clone(),
            }),
            received_at: received_at.to_owned(),
            source: DeliverySource::Webhook,
            request_id: request_id.map(str::to_owned),
            payload: event.raw_str().to_owned(),
        },
    );
    delivery.metadata = ObjectMeta {
        name: delivery.metadata.name.take(),
        namespace: route.namespace(),
        labels: Some(labels),
        owner_references: route.controller_owner_ref(&()).map(|o| vec![o]),
        ..ObjectMeta::default()
    };
    delivery
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::resources::{SecretKeySelector, WebhookRouteSpec};
    use bytes::Bytes;

    /// Route `ios/release` with uid `uid-1` and no rules.
    pub(crate) fn route() -> WebhookRoute {
        let mut r = WebhookRoute::new(
            "release",
            WebhookRouteSpec {
                secret_ref: SecretKeySelector {
                    name: "s".into(),
                    key: "k".into(),
                    namespace: None,
                },
                credential_ref: None,
                rules: vec![],
                delivery_history_limit: None,
                app_store_connect: None,
            },
        );
        r.metadata.namespace = Some("ios".into());
        r.metadata.uid = Some("uid-1".into());
        r
    }

    #[test]
    fn delivery_is_named_from_route_and_event_and_owned_by_the_route() {
        let raw = include_bytes!("../../tests/fixtures/asc/events/build-upload-complete.json");
        let event = WebhookEvent::parse(Bytes::from_static(raw)).unwrap();
        let d = build_delivery(&route(), &event, Some("req-1"), "2026-01-01T00:00:00Z");
        assert_eq!(
            d.metadata.name.as_deref(),
            Some(naming::delivery_name("release", &event.id).as_str())
        );
        assert_eq!(d.metadata.namespace.as_deref(), Some("ios"));
        let owner = &d.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("WebhookRoute", "uid-1")
        );
        assert_eq!(d.spec.payload.as_bytes(), raw);
        assert_eq!(d.spec.new_state.as_deref(), Some("COMPLETE"));
        assert_eq!(d.spec.instance.as_ref().unwrap().type_, "buildUploads");
        assert_eq!(d.labels()[LABEL_EVENT_TYPE], "buildUploadStateUpdated");
    }
}

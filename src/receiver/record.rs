//! The pure step from an accepted event to the `WebhookDelivery` that records it.

use crate::asc::event::WebhookEvent;
use crate::naming;
use crate::resources::delivery::{DeliverySource, InstanceReference};
use crate::resources::names::{LABEL_EVENT_TYPE, LABEL_ROUTE};
use crate::resources::{WebhookDelivery, WebhookDeliverySpec, WebhookRoute};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Resource;
use kube::api::ObjectMeta;
use std::collections::BTreeMap;

/// Bytes kept free below the API server's object limit for what is written after the create: server
/// metadata, managed fields and the delivery's status.
pub const STORE_HEADROOM_BYTES: usize = 32 * 1024;

/// A delivery the API server would refuse for its size.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "recorded as a WebhookDelivery it takes {size} bytes (the JSON-escaped payload is larger than the body); the API server stores objects up to {limit} bytes, of which {STORE_HEADROOM_BYTES} are kept for status"
)]
pub struct TooLargeToStore {
    /// Serialized size of the delivery.
    pub size: usize,
    /// The configured object limit.
    pub limit: usize,
}

/// Checks, before any write, that `delivery` fits in an object of `limit` bytes once serialized as the
/// API server stores custom resources (JSON). Returns the size.
pub fn check_fits(delivery: &WebhookDelivery, limit: usize) -> Result<usize, TooLargeToStore> {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Serializing our own type into a counter cannot fail; if it did, the API server decides.
    let size = match serde_json::to_writer(&mut count, delivery) {
        Ok(()) => count.0,
        Err(_) => 0,
    };
    if size.saturating_add(STORE_HEADROOM_BYTES) > limit {
        return Err(TooLargeToStore { size, limit });
    }
    Ok(size)
}

/// The delivery for `event` on `route`: deterministic name, owned by the route (so deleting a route deletes
/// its history), payload kept byte for byte.
pub fn build_delivery(
    route: &WebhookRoute,
    event: &WebhookEvent,
    request_id: Option<&str>,
    received_at: &str,
) -> WebhookDelivery {
    build_delivery_for(&RouteOwner::of(route), event, request_id, received_at)
}

/// What a delivery records of its route: the name it is filed under and the owner that deletes it with
/// the route. The receiver keeps only this of each route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteOwner {
    /// The route's namespace.
    pub namespace: String,
    /// The route's name.
    pub name: String,
    /// The route's uid (an owner reference needs it).
    pub uid: String,
}

impl RouteOwner {
    /// `route`'s identity.
    pub fn of(route: &WebhookRoute) -> Self {
        Self::of_meta(&route.metadata)
    }

    /// The identity in a route's `metadata`.
    pub fn of_meta(meta: &ObjectMeta) -> Self {
        RouteOwner {
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            uid: meta.uid.clone().unwrap_or_default(),
        }
    }

    /// The controlling owner reference to the route, as `Resource::controller_owner_ref` makes it; none
    /// without a uid (a route not read from the API server).
    fn owner_reference(&self) -> Option<OwnerReference> {
        if self.uid.is_empty() {
            return None;
        }
        Some(OwnerReference {
            api_version: WebhookRoute::api_version(&()).into_owned(),
            kind: WebhookRoute::kind(&()).into_owned(),
            name: self.name.clone(),
            uid: self.uid.clone(),
            controller: Some(true),
            block_owner_deletion: None,
        })
    }
}

/// [`build_delivery`] from the route's identity alone.
pub fn build_delivery_for(
    route: &RouteOwner,
    event: &WebhookEvent,
    request_id: Option<&str>,
    received_at: &str,
) -> WebhookDelivery {
    let route_name = route.name.clone();
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
            event_created_at: None,
            source: DeliverySource::Webhook,
            request_id: request_id.map(str::to_owned),
            payload: event.raw_str().to_owned(),
        },
    );
    delivery.metadata = ObjectMeta {
        name: delivery.metadata.name.take(),
        namespace: Some(route.namespace.clone()),
        labels: Some(labels),
        owner_references: route.owner_reference().map(|o| vec![o]),
        ..ObjectMeta::default()
    };
    delivery
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::resources::{SecretKeySelector, WebhookRouteSpec};
    use bytes::Bytes;
    use kube::ResourceExt;

    /// Route `ios/release` with uid `uid-1` and no rules.
    pub(crate) fn route() -> WebhookRoute {
        let mut r = WebhookRoute::new(
            "release",
            WebhookRouteSpec {
                service_account_name: None,
                secret_ref: SecretKeySelector {
                    name: "s".into(),
                    key: "k".into(),
                    namespace: None,
                },
                credential_ref: None,
                rules: vec![],
                delivery_history_limit: None,
                app_store_connect: None,
                suspend: false,
            },
        );
        r.metadata.namespace = Some("ios".into());
        r.metadata.uid = Some("uid-1".into());
        r
    }

    #[test]
    fn a_body_that_escapes_past_the_object_limit_does_not_fit() {
        // Quotes inside a JSON string are escaped once in the body and once more in `spec.payload`.
        let quotes = "\\\"".repeat(450_000);
        let raw = format!(
            r#"{{"data":{{"id":"e-1","type":"webhookPingCreated","attributes":{{"note":"{quotes}"}}}}}}"#
        );
        let event = WebhookEvent::parse(Bytes::from(raw.clone())).unwrap();
        let d = build_delivery(&route(), &event, None, "2026-01-01T00:00:00Z");
        let limit = 1_572_864;
        assert!(
            raw.len() < limit * 6 / 10,
            "the body itself is well below the limit"
        );
        let err = check_fits(&d, limit).unwrap_err();
        assert!(err.size > limit && err.size > 2 * raw.len() - 100, "{err}");
        assert!(err.to_string().contains("1572864"), "{err}");

        let small = WebhookEvent::parse(Bytes::from_static(include_bytes!(
            "../../tests/fixtures/asc/events/webhook-ping.json"
        )))
        .unwrap();
        let d = build_delivery(&route(), &small, None, "2026-01-01T00:00:00Z");
        let size = check_fits(&d, limit).unwrap();
        assert_eq!(size, serde_json::to_vec(&d).unwrap().len());
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
        assert_eq!(
            Some(owner),
            route().controller_owner_ref(&()).as_ref(),
            "the same reference kube makes from the whole route"
        );
        assert_eq!(d.spec.payload.as_bytes(), raw);
        assert_eq!(d.spec.new_state.as_deref(), Some("COMPLETE"));
        assert_eq!(d.spec.instance.as_ref().unwrap().type_, "buildUploads");
        assert_eq!(d.labels()[LABEL_EVENT_TYPE], "buildUploadStateUpdated");
    }
}

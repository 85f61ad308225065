//! Deliveries this process has just stored, as the API server returned them, for this process's own
//! delivery controller to start from.
//!
//! The controller's watch keeps a slim copy of each delivery, so a pass needs the whole object; without
//! this, the first pass over every new delivery read it back from the API server: on a real server a
//! quorum read through etcd, on the path from Apple's POST to the Job. The create's answer already is
//! that object. It is only ever used for the exact version the watch shows (same UID, same
//! `resourceVersion`), so it can never stand in for a changed delivery; on a replica that does not lead,
//! nothing takes it and it expires within seconds.

use crate::resources::WebhookDelivery;
use kube::ResourceExt;
use std::sync::Arc;
use std::time::Duration;

/// How long a stored delivery waits to be taken: the watch brings it to the leader within milliseconds;
/// a replica that does not lead must not hold a burst's worth for long.
const KEEP_FOR: Duration = Duration::from_secs(30);
/// Deliveries held at most (a few KiB each), whatever the burst.
const CAPACITY: u64 = 4_096;

/// The just-stored deliveries, by `namespace/name`. Cheap to clone; clones share the same deliveries.
#[derive(Clone)]
pub struct Handoff {
    fresh: moka::sync::Cache<String, Arc<WebhookDelivery>>,
}

impl Default for Handoff {
    fn default() -> Self {
        Handoff {
            fresh: moka::sync::Cache::builder()
                .max_capacity(CAPACITY)
                .time_to_live(KEEP_FOR)
                .build(),
        }
    }
}

fn key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

impl Handoff {
    /// Keeps what a create returned, without the server-side apply bookkeeping no pass reads.
    pub fn keep(&self, mut stored: WebhookDelivery) {
        stored.metadata.managed_fields = None;
        let k = key(&stored.namespace().unwrap_or_default(), &stored.name_any());
        self.fresh.insert(k, Arc::new(stored));
    }

    /// The stored delivery the watch shows as `watched`, if this process stored exactly that version;
    /// taken, so it is used once.
    pub fn take(&self, watched: &WebhookDelivery) -> Option<WebhookDelivery> {
        let k = key(
            &watched.namespace().unwrap_or_default(),
            &watched.name_any(),
        );
        let fresh = self.fresh.remove(&k)?;
        let same = fresh.uid() == watched.uid()
            && fresh.resource_version().is_some()
            && fresh.resource_version() == watched.resource_version();
        same.then(|| fresh.as_ref().clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::delivery::WebhookDeliverySpec;

    fn delivery(uid: &str, version: &str) -> WebhookDelivery {
        let spec = WebhookDeliverySpec::sample("r", "e", "webhookPingCreated", "{}");
        let mut d = WebhookDelivery::new("r-1", spec);
        d.metadata.namespace = Some("ios".into());
        d.metadata.uid = Some(uid.into());
        d.metadata.resource_version = Some(version.into());
        d.metadata.managed_fields = Some(vec![Default::default()]);
        d
    }

    #[test]
    fn the_stored_version_is_handed_over_once_without_its_bookkeeping() {
        let handoff = Handoff::default();
        handoff.keep(delivery("u1", "7"));
        let taken = handoff.take(&delivery("u1", "7")).expect("the stored copy");
        assert!(taken.metadata.managed_fields.is_none());
        assert_eq!(taken.spec.event_id, "e");
        assert!(handoff.take(&delivery("u1", "7")).is_none(), "used once");
    }

    #[test]
    fn a_delivery_changed_since_it_was_stored_is_not_handed_over() {
        let handoff = Handoff::default();
        handoff.keep(delivery("u1", "7"));
        assert!(handoff.take(&delivery("u1", "8")).is_none());
    }

    #[test]
    fn a_delivery_deleted_and_recreated_under_the_same_name_is_not_handed_over() {
        let handoff = Handoff::default();
        handoff.keep(delivery("u1", "7"));
        assert!(handoff.take(&delivery("u2", "7")).is_none());
    }

    #[test]
    fn a_delivery_this_process_did_not_store_is_not_there() {
        assert!(Handoff::default().take(&delivery("u1", "7")).is_none());
    }
}

//! Enrichments fetched by this process, per delivery.

use crate::asc::enrich::Enrichment;
use crate::resources::WebhookDelivery;
use kube::ResourceExt;
use std::time::Duration;

/// Enrichments kept in memory, so HTTP retries of one delivery do not call App Store Connect again.
const ENRICHMENT_CACHE: u64 = 1024;

/// Enrichment per delivery uid (bounded, and for an hour at most), so HTTP retries of one delivery do
/// not call App Store Connect again.
pub struct Enrichments {
    by_uid: moka::sync::Cache<String, Enrichment>,
}

impl Default for Enrichments {
    fn default() -> Self {
        Enrichments {
            by_uid: moka::sync::Cache::builder()
                .max_capacity(ENRICHMENT_CACHE)
                .time_to_live(Duration::from_secs(3600))
                .build(),
        }
    }
}

impl Enrichments {
    /// The enrichment fetched earlier for `d` by this process, if any.
    pub fn get(&self, d: &WebhookDelivery) -> Option<Enrichment> {
        let uid = d.uid()?;
        self.by_uid.get(&uid)
    }

    /// Remembers the enrichment of `d`.
    pub fn remember(&self, d: &WebhookDelivery, e: &Enrichment) {
        let Some(uid) = d.uid() else { return };
        self.by_uid.insert(uid, e.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::context::tests::{delivery, enrichment};

    #[test]
    fn an_enrichment_is_kept_per_delivery_uid() {
        let cache = Enrichments::default();
        let d = delivery("build-upload-complete");
        let e = enrichment("buildUploads-3f1c2a9e-7b44-4d2e-9a51-0c8e2f6d1b77");
        assert_eq!(cache.get(&d), None);
        cache.remember(&d, &e);
        assert_eq!(cache.get(&d), Some(e.clone()));
        let mut other = d.clone();
        other.metadata.uid = Some("another-uid".into());
        assert_eq!(cache.get(&other), None);
        let mut unsaved = d;
        unsaved.metadata.uid = None;
        cache.remember(&unsaved, &e);
        assert_eq!(
            cache.get(&unsaved),
            None,
            "nothing to key an unsaved delivery by"
        );
    }
}

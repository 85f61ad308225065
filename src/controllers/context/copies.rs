//! The full copy of each unfinished delivery as this term last read or wrote it, so a pass starts from
//! it instead of reading the delivery again.
//!
//! The watch cache keeps a slim copy (no payload, next to no status) to stay small through a burst; a
//! pass needs the whole object. Reading it at the start of every pass was a quorum read through etcd per
//! pass on a real API server. The copy kept here is what the last read or status write returned; it
//! stands in for a read only while the watch's version of the delivery is one this copy is known to be
//! at or after (the version read, or one of the versions this term's own writes went from and to), so a
//! change by anyone else (a replay, a person's edit) is read fresh. And every status write is fenced by
//! the copy's `resourceVersion`: should the copy be stale all the same, the write is refused with 409
//! and the pass starts over from a read.

use crate::receiver::handoff::Handoff;
use crate::resources::WebhookDelivery;
use crate::resources::names::ANNOTATION_LAST_APPLIED;
use kube::ResourceExt;
use std::sync::Arc;
use std::time::Duration;

/// The versions a chain of this term's writes went through, newest last; bounded, as a delivery whose
/// passes keep writing (an HTTP action retried many times) would otherwise grow it.
const CHAIN: usize = 8;

/// One delivery's copy and the versions it is at or after.
#[derive(Clone)]
struct Copy {
    delivery: Arc<WebhookDelivery>,
    versions: Vec<String>,
}

/// The full copies of unfinished deliveries, by `namespace/name`.
pub struct DeliveryCopies {
    copies: moka::sync::Cache<String, Copy>,
    /// What this process's receiver and catch-up just stored: a new delivery's first copy.
    handoff: Handoff,
}

impl Default for DeliveryCopies {
    fn default() -> Self {
        DeliveryCopies {
            // Unfinished deliveries only (a finished one is forgotten), a few KiB each; idle ones expire,
            // as a delivery waiting on a long Job is read again when it wakes.
            copies: moka::sync::Cache::builder()
                .max_capacity(20_000)
                .time_to_idle(Duration::from_secs(600))
                .build(),
            handoff: Handoff::default(),
        }
    }
}

fn key(d: &WebhookDelivery) -> String {
    format!("{}/{}", d.namespace().unwrap_or_default(), d.name_any())
}

/// Without what no pass reads: the server-side apply bookkeeping, as large as the object itself.
fn slim(mut d: WebhookDelivery) -> WebhookDelivery {
    d.metadata.managed_fields = None;
    if let Some(a) = d.metadata.annotations.as_mut() {
        a.remove(ANNOTATION_LAST_APPLIED);
    }
    d
}

impl DeliveryCopies {
    /// Copies that start, for a delivery this process stored itself, from what its create returned.
    pub fn with_handoff(handoff: Handoff) -> Self {
        DeliveryCopies {
            handoff,
            ..DeliveryCopies::default()
        }
    }

    /// The full copy of the delivery the watch shows as `watched`, when that copy is at least as new as
    /// the watch's version of it (see the module's comment), or, for a delivery this process just stored,
    /// what its create returned; `None`: read it.
    pub fn current(&self, watched: &WebhookDelivery) -> Option<WebhookDelivery> {
        if let Some(copy) = self.copies.get(&key(watched)) {
            let version = watched.resource_version()?;
            if copy.delivery.uid() == watched.uid() && copy.versions.contains(&version) {
                return Some(copy.delivery.as_ref().clone());
            }
        }
        let stored = self.handoff.take(watched)?;
        self.read(&stored);
        Some(stored)
    }

    /// Keeps what a read returned.
    pub fn read(&self, d: &WebhookDelivery) {
        let Some(version) = d.resource_version() else {
            return;
        };
        self.copies.insert(
            key(d),
            Copy {
                delivery: Arc::new(slim(d.clone())),
                versions: vec![version],
            },
        );
    }

    /// Keeps what a write decided on version `from` returned: the copy is at or after every version of
    /// the chain that led to `from`, and at `written`'s.
    pub fn wrote(&self, from: Option<&str>, written: &WebhookDelivery) {
        let Some(version) = written.resource_version() else {
            return;
        };
        let k = key(written);
        let mut versions = match (self.copies.get(&k), from) {
            (Some(c), Some(from)) if c.versions.last().map(String::as_str) == Some(from) => {
                c.versions
            }
            _ => from.map(str::to_owned).into_iter().collect(),
        };
        versions.push(version);
        if versions.len() > CHAIN {
            versions.drain(..versions.len() - CHAIN);
        }
        self.copies.insert(
            k,
            Copy {
                delivery: Arc::new(slim(written.clone())),
                versions,
            },
        );
    }

    /// Forgets a finished (or vanished) delivery.
    pub fn forget(&self, d: &WebhookDelivery) {
        self.copies.invalidate(&key(d));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::delivery::WebhookDeliverySpec;

    fn at(version: &str, payload: &str) -> WebhookDelivery {
        let mut d = WebhookDelivery::new(
            "r-1",
            WebhookDeliverySpec::sample("r", "e", "BUILD_UPLOAD_STATE_UPDATED", payload),
        );
        d.metadata.namespace = Some("ios".into());
        d.metadata.uid = Some("u1".into());
        d.metadata.resource_version = Some(version.into());
        d
    }

    #[test]
    fn nothing_kept_means_read() {
        assert!(DeliveryCopies::default().current(&at("1", "")).is_none());
    }

    #[test]
    fn a_read_stands_in_while_the_watch_shows_the_version_read() {
        let copies = DeliveryCopies::default();
        copies.read(&at("5", "full"));
        let got = copies.current(&at("5", "")).expect("the copy");
        assert_eq!(got.spec.payload, "full");
        assert!(copies.current(&at("6", "")).is_none(), "changed by someone");
    }

    #[test]
    fn own_writes_stand_in_while_the_watch_lags_behind_them() {
        let copies = DeliveryCopies::default();
        copies.read(&at("5", "full"));
        copies.wrote(Some("5"), &at("7", "full"));
        copies.wrote(Some("7"), &at("9", "full"));
        for lagging in ["5", "7", "9"] {
            let got = copies.current(&at(lagging, "")).expect("own chain");
            assert_eq!(got.resource_version().as_deref(), Some("9"));
        }
        assert!(copies.current(&at("10", "")).is_none());
    }

    #[test]
    fn a_write_from_a_version_not_kept_starts_a_new_chain() {
        let copies = DeliveryCopies::default();
        copies.read(&at("5", "full"));
        copies.wrote(Some("8"), &at("9", "full"));
        assert!(copies.current(&at("5", "")).is_none());
        assert!(copies.current(&at("8", "")).is_some());
    }

    #[test]
    fn a_recreated_delivery_of_the_same_name_is_read() {
        let copies = DeliveryCopies::default();
        copies.read(&at("5", "full"));
        let mut other = at("5", "");
        other.metadata.uid = Some("u2".into());
        assert!(copies.current(&other).is_none());
    }

    #[test]
    fn a_forgotten_delivery_is_read_and_the_chain_stays_bounded() {
        let copies = DeliveryCopies::default();
        copies.read(&at("0", "full"));
        for v in 1..20 {
            copies.wrote(Some(&(v - 1).to_string()), &at(&v.to_string(), "full"));
        }
        assert!(copies.current(&at("19", "")).is_some());
        assert!(
            copies.current(&at("3", "")).is_none(),
            "older than the chain"
        );
        copies.forget(&at("19", ""));
        assert!(copies.current(&at("19", "")).is_none());
    }
}

//! Deliveries this leader pruned.

use std::time::Duration;

/// Deliveries pruned by this leader, by `namespace/name`: catch-up re-reads Apple's log with an overlap,
/// and an event whose delivery was recorded and then pruned must not be recorded (and run) again.
pub struct PrunedEvents {
    names: moka::sync::Cache<String, ()>,
}

impl Default for PrunedEvents {
    fn default() -> Self {
        // A day covers the catch-up overlap and lookback many times over; 100,000 names are ~10 MiB.
        PrunedEvents {
            names: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(24 * 3600))
                .build(),
        }
    }
}

impl PrunedEvents {
    /// Remembers that delivery `namespace/name` was pruned.
    pub fn remember(&self, namespace: &str, name: &str) {
        self.names.insert(format!("{namespace}/{name}"), ());
    }

    /// Whether this leader pruned delivery `namespace/name` (within the last day).
    pub fn contains(&self, namespace: &str, name: &str) -> bool {
        self.names.contains_key(&format!("{namespace}/{name}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pruned_delivery_is_known_by_namespace_and_name() {
        let pruned = PrunedEvents::default();
        pruned.remember("team-a", "d1");
        assert!(pruned.contains("team-a", "d1"));
        assert!(!pruned.contains("team-b", "d1"));
        assert!(!pruned.contains("team-a", "d2"));
    }
}

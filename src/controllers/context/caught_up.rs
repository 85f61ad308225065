//! Routes this process made its start-up catch-up pass for.

use crate::controllers::digest::of as digest;
use std::collections::HashSet;
use std::sync::Mutex;

/// Routes this process made its start-up catch-up pass for, as 64-bit digests of their keys: a set
/// of 1,000 routes costs 16 KB, where a cache of strings cost a quarter of a megabyte. Two keys sharing
/// a digest would cost one route its start-up pass (its periodic passes still run). Bounded like the
/// route Secret facts: past that many routes all are forgotten, and each gets one more (idempotent)
/// pass.
#[derive(Default)]
pub struct CaughtUp {
    routes: Mutex<HashSet<u64>>,
}

/// Routes remembered before the set starts over.
const MAX_ROUTES: usize = 100_000;

impl CaughtUp {
    /// Whether this process already made a catch-up pass for `key` (each process makes one at start).
    pub fn contains(&self, key: &str) -> bool {
        self.routes().contains(&digest(key))
    }

    /// Notes a catch-up pass for `key`.
    pub fn mark(&self, key: &str) {
        let mut routes = self.routes();
        if routes.len() >= MAX_ROUTES {
            routes.clear();
        }
        routes.insert(digest(key));
    }

    /// Forgets that `key` was caught up, so it makes a pass on its next reconcile (a person asked).
    pub fn forget(&self, key: &str) {
        self.routes().remove(&digest(key));
    }

    /// Forgets which routes this process caught up, so each makes a pass on its next reconcile.
    pub fn forget_all(&self) {
        self.routes().clear();
    }

    fn routes(&self) -> std::sync::MutexGuard<'_, HashSet<u64>> {
        self.routes.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marked_route_is_caught_up_until_all_are_forgotten() {
        let caught_up = CaughtUp::default();
        assert!(!caught_up.contains("ns/r"));
        caught_up.mark("ns/r");
        assert!(caught_up.contains("ns/r"));
        assert!(!caught_up.contains("ns/other"));
        caught_up.forget_all();
        assert!(!caught_up.contains("ns/r"));
    }

    #[test]
    fn a_forgotten_route_is_no_longer_caught_up_and_others_stay() {
        let caught_up = CaughtUp::default();
        caught_up.mark("ns/r");
        caught_up.mark("ns/s");
        caught_up.forget("ns/r");
        assert!(!caught_up.contains("ns/r"));
        assert!(caught_up.contains("ns/s"));
    }
}

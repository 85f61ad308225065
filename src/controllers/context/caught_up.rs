//! Routes this process made its start-up catch-up pass for.

/// Routes this process made its start-up catch-up pass for. Bounded like the route Secret facts: past
/// that many routes, a forgotten one gets one more (idempotent) pass.
pub struct CaughtUp {
    routes: moka::sync::Cache<String, ()>,
}

impl Default for CaughtUp {
    fn default() -> Self {
        CaughtUp {
            routes: moka::sync::Cache::builder().max_capacity(100_000).build(),
        }
    }
}

impl CaughtUp {
    /// Whether this process already made a catch-up pass for `key` (each process makes one at start).
    pub fn contains(&self, key: &str) -> bool {
        self.routes.contains_key(key)
    }

    /// Notes a catch-up pass for `key`.
    pub fn mark(&self, key: &str) {
        self.routes.insert(key.to_owned(), ());
    }

    /// Forgets that `key` was caught up, so it makes a pass on its next reconcile (a person asked).
    pub fn forget(&self, key: &str) {
        self.routes.invalidate(key);
    }

    /// Forgets which routes this process caught up, so each makes a pass on its next reconcile.
    pub fn forget_all(&self) {
        self.routes.invalidate_all();
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
}

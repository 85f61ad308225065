//! Consecutive failed reconciles per object, behind the retry backoff.

use crate::retry::Backoff;
use std::time::Duration;

/// The longest wait after a failed reconcile, however often it failed.
const MAX_RECONCILE_BACKOFF: Duration = Duration::from_secs(60);

/// Consecutive failed reconciles per object; an object that stops failing (or is deleted) ages out.
pub struct Backoffs {
    backoff: Backoff,
    failures: moka::sync::Cache<String, u32>,
}

impl Backoffs {
    /// Failure counts that wait per `backoff` (at most a minute).
    pub fn new(backoff: Backoff) -> Self {
        Backoffs {
            backoff,
            failures: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(Duration::from_secs(3600))
                .build(),
        }
    }

    /// Counts a failed reconcile of `key` and returns the delay before the next try.
    pub fn failed(&self, key: &str) -> Duration {
        let n = self
            .failures
            .entry(key.to_owned())
            .and_upsert_with(|n| n.map_or(1, |e| e.into_value().saturating_add(1)))
            .into_value();
        self.backoff.delay(n).min(MAX_RECONCILE_BACKOFF)
    }

    /// Forgets the failures of `key` after a successful reconcile.
    pub fn succeeded(&self, key: &str) {
        self.failures.invalidate(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backoffs() -> Backoffs {
        Backoffs::new(Backoff {
            base: Duration::from_secs(2),
            max: Duration::from_secs(300),
        })
    }

    #[test]
    fn repeated_failures_wait_longer_but_never_over_a_minute() {
        let b = backoffs();
        let first = b.failed("k");
        let second = b.failed("k");
        assert!(second > first, "{second:?} after {first:?}");
        for _ in 0..20 {
            assert!(b.failed("k") <= MAX_RECONCILE_BACKOFF);
        }
    }

    #[test]
    fn a_success_starts_the_count_again() {
        let b = backoffs();
        for _ in 0..5 {
            b.failed("k");
        }
        b.succeeded("k");
        assert!(b.failed("k") <= Duration::from_millis(2400));
    }
}

//! Objects held back until their backoff ends.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Objects held back until a time while their inputs keep a fingerprint: a reconcile triggered by a
/// failure's own status write must not call an external API again before its backoff ends.
#[derive(Default)]
pub struct Holds {
    held: Mutex<HashMap<String, (u64, Instant)>>,
}

impl Holds {
    /// Holds `key` back until `until` while its inputs keep the `fingerprint`.
    pub fn hold(&self, key: &str, fingerprint: u64, until: Instant) {
        let mut holds = self.held.lock().unwrap_or_else(|p| p.into_inner());
        holds.retain(|_, (_, t)| *t > Instant::now());
        holds.insert(key.to_owned(), (fingerprint, until));
    }

    /// How long `key` is still held back, if its inputs still have the held `fingerprint`.
    pub fn held(&self, key: &str, fingerprint: u64) -> Option<Duration> {
        let holds = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let (f, until) = holds.get(key)?;
        (*f == fingerprint)
            .then(|| until.checked_duration_since(Instant::now()))
            .flatten()
            .filter(|d| !d.is_zero())
    }

    /// Ends the hold on `key`.
    pub fn release(&self, key: &str) {
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hold_lasts_while_the_fingerprint_is_unchanged() {
        let holds = Holds::default();
        holds.hold("r", 7, Instant::now() + Duration::from_secs(60));
        assert!(
            holds
                .held("r", 7)
                .is_some_and(|d| d <= Duration::from_secs(60))
        );
        assert_eq!(holds.held("r", 8), None, "changed inputs are not held");
        assert_eq!(holds.held("other", 7), None);
    }

    #[test]
    fn a_released_or_expired_hold_holds_nothing() {
        let holds = Holds::default();
        holds.hold("r", 1, Instant::now() + Duration::from_secs(60));
        holds.release("r");
        assert_eq!(holds.held("r", 1), None);
        holds.hold("past", 1, Instant::now());
        assert_eq!(holds.held("past", 1), None);
    }
}

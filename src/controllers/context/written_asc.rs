//! What the App Store Connect webhook reconciler last wrote for each route.

use crate::resources::Condition;
use crate::resources::route_asc::AppStoreConnectStatus;
use std::collections::HashMap;
use std::sync::Mutex;

/// What the App Store Connect webhook reconciler last wrote for a route: `status.appStoreConnect` and
/// its conditions.
pub type WrittenAsc = (Option<AppStoreConnectStatus>, Vec<Condition>);

/// The `status.appStoreConnect` this process last wrote, by route uid. Only the leader writes it, so
/// this is the truth even when a reconcile starts from a cached route that predates the write.
#[derive(Default)]
pub struct WrittenAscStatus {
    by_uid: Mutex<HashMap<String, WrittenAsc>>,
    /// Two controllers write a route's `status.appStoreConnect` (registration, and catch-up its
    /// `catchUp`): each reads what was last written and writes under the route's lock, so neither
    /// writes back what the other replaced. Striped by uid: bounded, and routes rarely share one.
    writing: [tokio::sync::Mutex<()>; 32],
}

impl WrittenAscStatus {
    /// Held while reading what was last written for route `uid` and writing anew.
    pub async fn lock(&self, uid: &str) -> tokio::sync::MutexGuard<'_, ()> {
        let stripe = (crate::controllers::digest::of(uid) % self.writing.len() as u64) as usize;
        self.writing[stripe].lock().await
    }

    /// What was last written for route `uid`.
    pub fn get(&self, uid: &str) -> Option<WrittenAsc> {
        self.by_uid
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(uid)
            .cloned()
    }

    /// Whether anything is remembered for route `uid`.
    pub fn holds(&self, uid: &str) -> bool {
        self.by_uid
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(uid)
    }

    /// Forgets what was written for route `uid` if `shown` says the route shows it; checked and
    /// forgotten at once, so a write remembered meanwhile is judged itself.
    pub fn forget_if(&self, uid: &str, shown: impl FnOnce(&WrittenAsc) -> bool) {
        let mut m = self.by_uid.lock().unwrap_or_else(|p| p.into_inner());
        if m.get(uid).is_some_and(shown) {
            m.remove(uid);
            if m.capacity() > 2 * m.len() + 16 {
                // Settled after a start-up burst: the table need not stay sized for it.
                m.shrink_to_fit();
            }
        }
    }

    /// Remembers (or, with `None`, forgets) what was written for route `uid`.
    pub fn remember(&self, uid: &str, status: Option<WrittenAsc>) {
        let mut m = self.by_uid.lock().unwrap_or_else(|p| p.into_inner());
        match status {
            Some(s) => {
                m.insert(uid.to_owned(), s);
            }
            None => {
                m.remove(uid);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_write_per_route_is_kept_until_forgotten() {
        let written = WrittenAscStatus::default();
        assert_eq!(written.get("uid-1"), None);
        written.remember("uid-1", Some((None, vec![])));
        assert_eq!(written.get("uid-1"), Some((None, vec![])));
        assert_eq!(written.get("uid-2"), None);
        written.remember("uid-1", None);
        assert_eq!(written.get("uid-1"), None);
    }

    #[test]
    fn a_write_is_forgotten_only_when_the_route_shows_it() {
        let written = WrittenAscStatus::default();
        written.remember("uid-1", Some((None, vec![])));
        written.forget_if("uid-1", |_| false);
        assert!(written.holds("uid-1"));
        written.forget_if("uid-1", |w| w == &(None, vec![]));
        assert!(!written.holds("uid-1"));
    }
}

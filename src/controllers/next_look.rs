//! When a controller looks at an object again, kept apart from kube's scheduler for the long waits.
//!
//! An idle route waits for its next look in three controllers (route status, App Store Connect
//! registration, catch-up). In kube's scheduler each wait is a full request kept twice (its map and its
//! delay queue), and both tables keep the size of the largest burst: ~1.4 MB for 1,000 idle routes. Here
//! a wait of at least [`SHORT`] is one small entry (a time, a digest and the name) in a timer that hands
//! the object back to the controller's triggers when due; kube keeps only the short ones (retries after a
//! lost write, a ping about to be re-sent), which come and go.

use super::digest;
use futures::{Stream, StreamExt};
use kube::Resource;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::time::Instant;

/// Waits shorter than this stay with kube's scheduler: retries after a lost write and the like, which
/// come and go within the second.
pub const SHORT: Duration = Duration::from_secs(1);

/// When a reconcile wants to see its object again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// When it (or something the controller follows for it) changes.
    Change,
    /// After this long, whatever happens meanwhile; a change before then looks earlier.
    After(Duration),
}

/// One controller's long waits.
#[derive(Default)]
pub struct NextLooks {
    state: Mutex<Waits>,
    earlier: tokio::sync::Notify,
}

#[derive(Default)]
struct Waits {
    /// By digest of namespace and name: a collision would let one of two routes wait for its next
    /// change instead of its next look.
    by_key: HashMap<u64, Wait>,
    due: BTreeSet<(Instant, u64)>,
}

struct Wait {
    at: Instant,
    name: Box<str>,
    namespace: Option<Box<str>>,
}

impl NextLooks {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn waits(&self) -> MutexGuard<'_, Waits> {
        // A panic while holding the lock leaves whole entries behind: still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What kube does after a reconcile of `obj` that asked for `next`: a long wait is kept here and kube
    /// waits for a change; a short one is kube's. Either way it replaces the wait `obj` had.
    pub fn action<K: Resource>(&self, obj: &K, next: Next) -> Action {
        let meta = obj.meta();
        let name = meta.name.as_deref().unwrap_or_default();
        let key = digest::of_name(meta.namespace.as_deref(), name);
        let mut waits = self.waits();
        if let Some(old) = waits.by_key.remove(&key) {
            waits.due.remove(&(old.at, key));
        }
        match next {
            Next::Change => Action::await_change(),
            Next::After(wait) if wait < SHORT => Action::requeue(wait),
            Next::After(wait) => {
                let at = Instant::now() + wait;
                let earliest = waits.due.first().is_none_or(|(first, _)| at < *first);
                waits.due.insert((at, key));
                let entry = Wait {
                    at,
                    name: name.into(),
                    namespace: meta.namespace.as_deref().map(Into::into),
                };
                waits.by_key.insert(key, entry);
                drop(waits);
                if earliest {
                    self.earlier.notify_one();
                }
                Action::await_change()
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.waits().by_key.len()
    }

    /// The objects whose wait is over, as they come due, for a controller's triggers.
    pub fn due<K>(self: Arc<Self>) -> impl Stream<Item = ObjectRef<K>> + Send + 'static
    where
        K: Resource<DynamicType = ()> + 'static,
    {
        futures::stream::unfold(self, |looks| async move {
            let batch = looks.next_batch().await;
            Some((futures::stream::iter(batch), looks))
        })
        .flatten()
        .map(|(name, namespace)| {
            let r = ObjectRef::new(&name);
            match namespace {
                Some(ns) => r.within(&ns),
                None => r,
            }
        })
    }

    async fn next_batch(&self) -> Vec<(Box<str>, Option<Box<str>>)> {
        loop {
            let earliest = {
                let mut waits = self.waits();
                let ready = waits.take_due(Instant::now());
                if !ready.is_empty() {
                    return ready;
                }
                waits.due.first().map(|(at, _)| *at)
            };
            match earliest {
                Some(at) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        () = self.earlier.notified() => {}
                    }
                }
                None => self.earlier.notified().await,
            }
        }
    }
}

impl Waits {
    fn take_due(&mut self, now: Instant) -> Vec<(Box<str>, Option<Box<str>>)> {
        let mut ready = Vec::new();
        while let Some(&(at, key)) = self.due.first() {
            if at > now {
                break;
            }
            self.due.pop_first();
            if let Some(w) = self.by_key.remove(&key) {
                ready.push((w.name, w.namespace));
            }
        }
        ready
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::WebhookRoute;

    fn route(name: &str) -> WebhookRoute {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "asc.webhooks.dev/v1alpha1", "kind": "WebhookRoute",
            "metadata": {"name": name, "namespace": "apps"},
            "spec": {"secretRef": {"name": "s", "key": "k"}, "rules": []}
        }))
        .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_wait_is_kept_here_and_hands_the_route_back_when_due() {
        let looks = NextLooks::new();
        let action = looks.action(&route("ios"), Next::After(Duration::from_secs(1800)));
        assert_eq!(action, Action::await_change(), "kube does not keep it");
        assert_eq!(looks.len(), 1);
        let mut due = Box::pin(looks.clone().due::<WebhookRoute>());
        let started = Instant::now();
        let r = due.next().await.unwrap();
        assert_eq!(r, ObjectRef::new("ios").within("apps"));
        assert_eq!(started.elapsed(), Duration::from_secs(1800));
        assert_eq!(looks.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn short_waits_and_changes_are_kubes_and_replace_a_long_wait() {
        let looks = NextLooks::new();
        let r = route("ios");
        looks.action(&r, Next::After(Duration::from_secs(1800)));
        assert_eq!(
            looks.action(&r, Next::After(Duration::from_millis(200))),
            Action::requeue(Duration::from_millis(200))
        );
        assert_eq!(looks.len(), 0, "the short retry replaced the long wait");
        looks.action(&r, Next::After(Duration::from_secs(60)));
        assert_eq!(looks.action(&r, Next::Change), Action::await_change());
        assert_eq!(looks.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_earlier_wait_is_handed_back_before_an_older_later_one() {
        let looks = NextLooks::new();
        looks.action(&route("late"), Next::After(Duration::from_secs(3600)));
        let mut due = Box::pin(looks.clone().due::<WebhookRoute>());
        // The stream is already waiting for the late one when the early one arrives.
        tokio::select! {
            _ = due.next() => panic!("nothing is due yet"),
            () = tokio::time::sleep(Duration::from_secs(10)) => {}
        }
        looks.action(&route("early"), Next::After(Duration::from_secs(30)));
        let started = Instant::now();
        assert_eq!(due.next().await.unwrap().name, "early");
        assert_eq!(started.elapsed(), Duration::from_secs(30));
        assert_eq!(due.next().await.unwrap().name, "late");
    }

    #[tokio::test(start_paused = true)]
    async fn a_rescheduled_route_is_handed_back_once_at_its_new_time() {
        let looks = NextLooks::new();
        let r = route("ios");
        looks.action(&r, Next::After(Duration::from_secs(60)));
        looks.action(&r, Next::After(Duration::from_secs(120)));
        looks.action(&route("other"), Next::After(Duration::from_secs(600)));
        let mut due = Box::pin(looks.clone().due::<WebhookRoute>());
        let started = Instant::now();
        assert_eq!(due.next().await.unwrap().name, "ios");
        assert_eq!(started.elapsed(), Duration::from_secs(120));
        assert_eq!(due.next().await.unwrap().name, "other");
        assert_eq!(started.elapsed(), Duration::from_secs(600));
    }
}

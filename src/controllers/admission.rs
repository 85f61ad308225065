//! Triggers enter a controller's queue only as fast as its reconciles start.
//!
//! kube's scheduler moves every due request it cannot start yet (all slots busy, or the cache not yet
//! synced) into a `pending` set, and its tables never shrink: the start-up burst (every route at once,
//! for each of the three route controllers) left each a table sized for every route, held for the whole
//! term though empty at idle. Here the burst waits in a queue this module owns, which gives its room back
//! once drained; the controller's own queue holds at most twice its concurrency of these triggers.
//! Nothing is dropped that the controller would not merge anyway: a trigger for an object already in the
//! controller's queue and not yet started folds into it (that reconcile reads the newest cached object).

use super::digest::of_name as digest;
use futures::{Stream, StreamExt};
use kube::Resource;
use kube::runtime::Controller;
use kube::runtime::reflector::{ObjectRef, Store};
use std::collections::{HashSet, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex};

/// The objects handed to one controller and not yet started, shared by its trigger stream and its
/// reconciles.
pub struct Admission {
    limit: usize,
    handed: Mutex<HashSet<u64>>,
    started: tokio::sync::Notify,
}

impl Admission {
    /// At most `limit` triggers handed to the controller and not yet started (0: no limit).
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Admission {
            limit,
            handed: Mutex::default(),
            started: tokio::sync::Notify::new(),
        })
    }

    /// The controller started (or, the object gone, dropped) its request for `namespace`/`name`.
    pub fn started(&self, namespace: Option<&str>, name: &str) {
        let mut handed = self.handed();
        if handed.remove(&digest(namespace, name)) {
            if handed.is_empty() {
                handed.shrink_to_fit();
            }
            drop(handed);
            self.started.notify_one();
        }
    }

    /// The controller starts reconciling `obj`.
    pub fn reconciling<K: Resource>(&self, obj: &K) {
        let meta = obj.meta();
        self.started(
            meta.namespace.as_deref(),
            meta.name.as_deref().unwrap_or_default(),
        );
    }

    fn handed(&self) -> std::sync::MutexGuard<'_, HashSet<u64>> {
        self.handed.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn ref_digest<K: kube::runtime::reflector::Lookup>(r: &ObjectRef<K>) -> u64
where
    K::DynamicType: Eq + Hash + Clone,
{
    digest(r.namespace.as_deref(), &r.name)
}

/// Triggers waiting for room, in arrival order, each once.
struct Waiting<K: kube::runtime::reflector::Lookup>
where
    K::DynamicType: Eq + Hash + Clone,
{
    queue: VecDeque<ObjectRef<K>>,
    keys: HashSet<u64>,
}

impl<K: kube::runtime::reflector::Lookup> Waiting<K>
where
    K::DynamicType: Eq + Hash + Clone,
{
    fn push(&mut self, r: ObjectRef<K>) {
        if self.keys.insert(ref_digest(&r)) {
            self.queue.push_back(r);
        }
    }

    /// The next trigger to hand over, if there is room; folds those already handed and not started.
    fn next(&mut self, admission: &Admission) -> Option<ObjectRef<K>> {
        let mut handed = admission.handed();
        let next = loop {
            let Some(front) = self.queue.front() else {
                break None;
            };
            let key = ref_digest(front);
            if handed.contains(&key) {
                self.keys.remove(&key);
                self.queue.pop_front();
                continue;
            }
            if admission.limit > 0 && handed.len() >= admission.limit {
                break None;
            }
            handed.insert(key);
            self.keys.remove(&key);
            break self.queue.pop_front();
        };
        if self.queue.is_empty() && self.queue.capacity() > 64 {
            // The burst is over: the room it took goes back.
            self.queue.shrink_to_fit();
            self.keys.shrink_to_fit();
        }
        next
    }
}

/// `triggers` handed on as [`Admission`] lets them: each as soon as fewer than its limit are handed
/// and not started. The input is always read at once, so a shared watch never waits on this controller.
pub fn admitted<K>(
    triggers: impl Stream<Item = ObjectRef<K>> + Send + 'static,
    admission: Arc<Admission>,
) -> impl Stream<Item = ObjectRef<K>> + Send + 'static
where
    K: kube::runtime::reflector::Lookup + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Send + Sync,
{
    let waiting = Waiting {
        queue: VecDeque::new(),
        keys: HashSet::new(),
    };
    let state = (triggers.boxed().fuse(), waiting, admission);
    futures::stream::unfold(state, |(mut input, mut waiting, admission)| async move {
        loop {
            if let Some(next) = waiting.next(&admission) {
                return Some((next, (input, waiting, admission)));
            }
            if input.is_done() && waiting.queue.is_empty() {
                return None;
            }
            tokio::select! {
                item = input.next(), if !input.is_done() => {
                    if let Some(r) = item {
                        waiting.push(r);
                    }
                }
                () = admission.started.notified() => {}
            }
        }
    })
}

/// `obj`'s reference as controllers queue it: namespace and name only. kube's own reference also keeps
/// the uid and resourceVersion (two more strings per object in each of a controller's queue tables, for
/// as long as the object waits for its next requeue); queue entries compare by namespace and name, and
/// nothing reads the rest.
pub fn queued<K: Resource<DynamicType = ()>>(obj: &K) -> ObjectRef<K> {
    let mut r = ObjectRef::from_obj(obj);
    r.extra = Default::default();
    r
}

/// The references of `changes`, as [`queued`] names them.
pub fn refs<K: Resource<DynamicType = ()> + Send + Sync + 'static>(
    changes: impl Stream<Item = Arc<K>> + Send + 'static,
) -> impl Stream<Item = ObjectRef<K>> + Send + 'static {
    changes.map(|obj| queued(obj.as_ref()))
}

/// A controller over `triggers`, admitted (see the module's comment) as fast as `concurrency`
/// reconciles start; its reconciles must report each start to the returned [`Admission`].
pub fn admitted_controller<K>(
    triggers: impl Stream<Item = ObjectRef<K>> + Send + 'static,
    store: Store<K>,
    concurrency: u16,
) -> (Controller<K>, Arc<Admission>)
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    K: Send + Sync + 'static,
{
    let admission = Admission::new(2 * usize::from(concurrency));
    // An empty stream of its own: the controller still ends when every trigger has.
    let controller = Controller::for_shared_stream(futures::stream::empty(), store)
        .reconcile_on(admitted(triggers, admission.clone()));
    (controller, admission)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::WebhookRoute;
    use std::time::Duration;

    fn r(name: &str) -> ObjectRef<WebhookRoute> {
        ObjectRef::new(name).within("apps")
    }

    async fn next_within(
        s: &mut (impl Stream<Item = ObjectRef<WebhookRoute>> + Unpin),
    ) -> Option<ObjectRef<WebhookRoute>> {
        tokio::time::timeout(Duration::from_millis(50), s.next())
            .await
            .ok()
            .flatten()
    }

    #[tokio::test]
    async fn no_more_than_the_limit_wait_in_the_controller_and_each_start_admits_one_more() {
        let admission = Admission::new(2);
        let (tx, rx) = futures::channel::mpsc::unbounded();
        for name in ["a", "b", "c", "d"] {
            tx.unbounded_send(r(name)).unwrap();
        }
        let mut out = Box::pin(admitted(rx, admission.clone()));
        assert_eq!(next_within(&mut out).await, Some(r("a")));
        assert_eq!(next_within(&mut out).await, Some(r("b")));
        assert_eq!(
            next_within(&mut out).await,
            None,
            "two handed, none started"
        );
        admission.started(Some("apps"), "a");
        assert_eq!(next_within(&mut out).await, Some(r("c")));
        assert_eq!(next_within(&mut out).await, None);
        admission.started(Some("apps"), "b");
        admission.started(Some("apps"), "c");
        assert_eq!(next_within(&mut out).await, Some(r("d")));
    }

    #[tokio::test]
    async fn a_trigger_for_an_object_handed_and_not_started_folds_into_it_but_not_once_started() {
        let admission = Admission::new(4);
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let mut out = Box::pin(admitted(rx, admission.clone()));
        tx.unbounded_send(r("a")).unwrap();
        assert_eq!(next_within(&mut out).await, Some(r("a")));
        tx.unbounded_send(r("a")).unwrap();
        tx.unbounded_send(r("b")).unwrap();
        assert_eq!(
            next_within(&mut out).await,
            Some(r("b")),
            "the second `a` folded"
        );
        admission.started(Some("apps"), "a");
        tx.unbounded_send(r("a")).unwrap();
        assert_eq!(
            next_within(&mut out).await,
            Some(r("a")),
            "a change after the start is a new trigger"
        );
    }

    #[tokio::test]
    async fn the_stream_ends_once_its_input_has_and_everything_waiting_was_handed() {
        let admission = Admission::new(1);
        let input = futures::stream::iter([r("a"), r("b")]);
        let mut out = Box::pin(admitted(input, admission.clone()));
        assert_eq!(next_within(&mut out).await, Some(r("a")));
        admission.started(Some("apps"), "a");
        assert_eq!(next_within(&mut out).await, Some(r("b")));
        assert_eq!(out.next().await, None);
    }
}

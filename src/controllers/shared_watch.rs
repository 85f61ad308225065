//! One watch and one cache of routes for every controller that follows routes (route status, App Store
//! Connect registration, and the delivery controller's resume trigger), instead of a watch and a full copy
//! of every route each.
//!
//! kube's own shared reflector (`store_shared` + `ReflectHandle`) is not used: its handle answers
//! `Pending` without a waker when an object is deleted before a subscriber reads it, which would stall that
//! controller's trigger stream. Here every subscriber gets its own bounded channel of the applied objects;
//! a full channel holds the watch back (backpressure) rather than dropping a trigger.

use futures::channel::mpsc;
use futures::{SinkExt, Stream, StreamExt};
use kube::Resource;
use kube::runtime::watcher;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

/// Triggers held per subscriber before the watch waits for it: room for a whole initial list of a
/// thousand objects, so start-up never waits on the slowest controller.
pub const SUBSCRIBER_BUFFER: usize = 1024;

/// Splits `applied` (the applied objects of a reflector) into `N` trigger streams. The returned future
/// drives the watch and must be polled for as long as the subscribers run; `on_error` sees each watch
/// error (the watch itself retries).
pub fn fan_out<K, S, const N: usize>(
    applied: S,
    mut on_error: impl FnMut(&watcher::Error) + Send + 'static,
) -> (
    impl Future<Output = ()> + Send + 'static,
    [mpsc::Receiver<Arc<K>>; N],
)
where
    K: Send + Sync + 'static,
    S: Stream<Item = Result<K, watcher::Error>> + Send + 'static,
{
    let mut senders = Vec::with_capacity(N);
    let receivers = std::array::from_fn(|_| {
        let (tx, rx) = mpsc::channel(SUBSCRIBER_BUFFER);
        senders.push(tx);
        rx
    });
    let drive = async move {
        let mut senders = senders;
        let mut applied = std::pin::pin!(applied);
        while let Some(item) = applied.next().await {
            match item {
                Ok(obj) => {
                    let obj = Arc::new(obj);
                    for tx in &mut senders {
                        // A subscriber that stopped (its controller shut down) no longer needs triggers.
                        let _ = tx.send(obj.clone()).await;
                    }
                }
                Err(e) => on_error(&e),
            }
        }
    };
    (drive, receivers)
}

/// Passes an object on when its `metadata.generation` differs from the last one seen for it (spec
/// changes; status writes do not bump the generation), as kube's `predicates::generation` filter does.
pub fn generation_changed<K: Resource>() -> impl FnMut(&Arc<K>) -> bool {
    let mut seen: HashMap<String, i64> = HashMap::new();
    move |obj| {
        let meta = obj.meta();
        let Some(generation) = meta.generation else {
            return true;
        };
        let key = meta.uid.clone().unwrap_or_else(|| {
            format!(
                "{}/{}",
                meta.namespace.as_deref().unwrap_or_default(),
                meta.name.as_deref().unwrap_or_default()
            )
        });
        seen.insert(key, generation) != Some(generation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::WebhookRoute;

    fn route(uid: &str, generation: i64) -> Arc<WebhookRoute> {
        let mut r: WebhookRoute = serde_json::from_value(serde_json::json!({
            "apiVersion": "asc.webhooks.dev/v1alpha1", "kind": "WebhookRoute",
            "metadata": {"name": uid, "namespace": "ns", "uid": uid},
            "spec": {"secretRef": {"name": "s", "key": "k"}, "rules": []}
        }))
        .unwrap();
        r.metadata.generation = Some(generation);
        Arc::new(r)
    }

    #[test]
    fn only_spec_changes_pass_the_generation_filter() {
        let mut changed = generation_changed::<WebhookRoute>();
        assert!(changed(&route("a", 1)), "first sight");
        assert!(!changed(&route("a", 1)), "a status write");
        assert!(changed(&route("b", 1)), "another route");
        assert!(changed(&route("a", 2)), "a spec change");
    }

    #[tokio::test]
    async fn every_subscriber_sees_every_applied_object_and_errors_are_reported() {
        let errors = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = errors.clone();
        let events = futures::stream::iter(vec![
            Ok(route("a", 1).as_ref().clone()),
            Err(watcher::Error::NoResourceVersion),
            Ok(route("b", 1).as_ref().clone()),
        ]);
        let (drive, subscribers): (_, [_; 2]) = fan_out(events, move |_| {
            counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        });
        drive.await;
        for rx in subscribers {
            let names: Vec<String> = rx
                .map(|r| r.metadata.name.clone().unwrap_or_default())
                .collect()
                .await;
            assert_eq!(names, ["a", "b"]);
        }
        assert_eq!(errors.load(std::sync::atomic::Ordering::Relaxed), 1);
    }
}

//! The receiver's routes, fed by a watch and prepared once per route: what every request would otherwise
//! compute again — the `namespace/name` label of metrics and the rate limit, the webhook Secret's cache
//! key — is made when the route arrives. Lookups borrow the request's path segments; nothing is allocated
//! per request.
//!
//! This is a second, differently slimmed copy of the routes next to the controllers' cache: the receiver
//! runs on every replica and needs a route's name, uid and `secretRef` only, while the controllers run on
//! the leader and need the whole spec. Sharing one store would make every replica hold every rule.

use super::backend::RouteLookup;
use super::secret_cache::SecretId;
use crate::resources::WebhookRoute;
use kube::ResourceExt;
use kube::runtime::watcher;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use tokio::sync::watch;

/// One route as the receiver keeps it.
#[derive(Debug)]
pub struct ReceiverRoute {
    /// The route, without what the receiver never reads (see [`slim`]).
    pub route: WebhookRoute,
    /// `namespace/name`: the route's metrics label and rate-limit key.
    pub label: Arc<str>,
    /// The route's webhook Secret, in the route's namespace.
    pub secret: SecretId,
}

impl ReceiverRoute {
    /// Prepares `route` for the receiver (and slims it).
    pub fn new(mut route: WebhookRoute) -> Self {
        slim(&mut route);
        let namespace = route.namespace().unwrap_or_default();
        let label = Arc::from(format!("{namespace}/{}", route.name_any()));
        let secret = SecretId::new(&namespace, &route.spec.secret_ref.name);
        ReceiverRoute {
            route,
            label,
            secret,
        }
    }
}

/// Drops what the receiver never reads: rules (Job templates are the bulk), status, managed fields and
/// annotations (kubectl's last-applied copy of the spec). Keeps 1,000 routes small.
pub fn slim(route: &mut WebhookRoute) {
    route.spec.rules.clear();
    route.status = None;
    route.metadata.managed_fields = None;
    route.metadata.annotations = None;
}

type ByName = HashMap<String, Arc<ReceiverRoute>>;

/// Routes by namespace, then name: two lookups with borrowed `&str`s.
pub struct RouteTable {
    routes: RwLock<HashMap<String, ByName>>,
    /// Routes listed since the watch (re)started, swapped in whole once the list is complete.
    relisting: std::sync::Mutex<Option<Vec<WebhookRoute>>>,
    ready: watch::Sender<bool>,
}

impl Default for RouteTable {
    fn default() -> Self {
        RouteTable {
            routes: RwLock::default(),
            relisting: std::sync::Mutex::default(),
            ready: watch::Sender::new(false),
        }
    }
}

impl RouteTable {
    /// Adds or replaces a route.
    pub fn insert(&self, route: WebhookRoute) {
        let prepared = Arc::new(ReceiverRoute::new(route));
        let namespace = prepared.route.namespace().unwrap_or_default();
        let name = prepared.route.name_any();
        self.write()
            .entry(namespace)
            .or_default()
            .insert(name, prepared);
    }

    /// Applies one watch event: the table follows the API server as a reflector store would.
    pub fn apply(&self, event: watcher::Event<WebhookRoute>) {
        match event {
            watcher::Event::Apply(route) => self.insert(route),
            watcher::Event::Delete(route) => {
                let namespace = route.namespace().unwrap_or_default();
                let mut routes = self.write();
                if let Some(names) = routes.get_mut(&namespace) {
                    names.remove(&route.name_any());
                    if names.is_empty() {
                        routes.remove(&namespace);
                    }
                }
            }
            watcher::Event::Init => *self.relisting() = Some(Vec::new()),
            watcher::Event::InitApply(mut route) => {
                slim(&mut route);
                self.relisting().get_or_insert_with(Vec::new).push(route);
            }
            watcher::Event::InitDone => {
                let listed = self.relisting().take().unwrap_or_default();
                let mut fresh: HashMap<String, ByName> = HashMap::new();
                for route in listed {
                    let prepared = Arc::new(ReceiverRoute::new(route));
                    fresh
                        .entry(prepared.route.namespace().unwrap_or_default())
                        .or_default()
                        .insert(prepared.route.name_any(), prepared);
                }
                *self.write() = fresh;
                self.ready.send_replace(true);
            }
        }
    }

    /// Routes held.
    pub fn len(&self) -> usize {
        self.read().values().map(HashMap::len).sum()
    }

    /// Whether no route is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits for the first complete list.
    pub async fn wait_until_ready(&self) {
        let mut ready = self.ready.subscribe();
        // The sender lives in `self`, so this ends only with the table.
        let _ = ready.wait_for(|r| *r).await;
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, ByName>> {
        self.routes.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, ByName>> {
        self.routes.write().unwrap_or_else(|p| p.into_inner())
    }

    fn relisting(&self) -> std::sync::MutexGuard<'_, Option<Vec<WebhookRoute>>> {
        self.relisting.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl RouteLookup for RouteTable {
    fn route(&self, namespace: &str, name: &str) -> Option<Arc<ReceiverRoute>> {
        self.read().get(namespace)?.get(name).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(ns: &str, name: &str) -> WebhookRoute {
        let mut r = crate::receiver::record::tests::route();
        r.metadata.namespace = Some(ns.into());
        r.metadata.name = Some(name.into());
        r
    }

    #[test]
    fn a_relist_replaces_the_table_and_prepares_label_and_secret_once() {
        let table = RouteTable::default();
        table.apply(watcher::Event::Apply(route("ios", "gone")));
        table.apply(watcher::Event::Init);
        table.apply(watcher::Event::InitApply(route("ios", "release")));
        assert!(
            table.route("ios", "gone").is_some(),
            "the old list serves until the new one is complete"
        );
        table.apply(watcher::Event::InitDone);
        assert!(table.route("ios", "gone").is_none());
        let r = table.route("ios", "release").unwrap();
        assert_eq!(&*r.label, "ios/release");
        assert_eq!((r.secret.namespace(), r.secret.name()), ("ios", "s"));
        table.apply(watcher::Event::Delete(route("ios", "release")));
        assert!(table.is_empty());
        assert!(table.route("ios", "release").is_none());
    }

    #[tokio::test]
    async fn ready_after_the_first_complete_list() {
        let table = Arc::new(RouteTable::default());
        let waiting = tokio::spawn({
            let table = table.clone();
            async move { table.wait_until_ready().await }
        });
        table.apply(watcher::Event::Init);
        assert!(!waiting.is_finished());
        table.apply(watcher::Event::InitDone);
        waiting.await.unwrap();
    }
}

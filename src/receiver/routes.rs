//! The receiver's routes, fed by a watch and prepared once per route: what every request would otherwise
//! compute again — the `namespace/name` label of metrics and the rate limit, the webhook Secret's cache
//! key — is made when the route arrives. Lookups borrow the request's path segments; nothing is allocated
//! per request.
//!
//! This is a second, differently slimmed copy of the routes next to the controllers' cache: the receiver
//! runs on every replica and needs a route's name, uid and `secretRef` only, while the controllers run on
//! the leader and need the whole spec. Sharing one store would make every replica hold every rule.

use super::backend::RouteLookup;
use super::record::RouteOwner;
use super::secret_cache::SecretId;
use crate::resources::WebhookRoute;
use kube::runtime::watcher;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use tokio::sync::watch;

/// One route as the receiver keeps it: the few strings a request reads, made once. Nothing of the parsed
/// object is kept (its rules, status and metadata would be most of the receiver's memory with many
/// routes).
#[derive(Debug)]
pub struct ReceiverRoute {
    /// What a delivery records of the route: name, namespace and the uid of its owner reference.
    pub owner: RouteOwner,
    /// `namespace/name`: the route's metrics label and rate-limit key.
    pub label: Arc<str>,
    /// The route's webhook Secret, in the route's namespace.
    pub secret: SecretId,
    /// The key of the webhook secret in that Secret.
    pub secret_key: Box<str>,
    /// Whether the operator registers the route's webhook in App Store Connect (and so rotates its secret,
    /// which opens a grace period for the previous one).
    pub managed_in_asc: bool,
}

impl ReceiverRoute {
    /// Prepares `route` for the receiver.
    pub fn new(route: &WebhookRoute) -> Self {
        let owner = RouteOwner::of(route);
        let label = Arc::from(format!("{}/{}", owner.namespace, owner.name));
        let secret = SecretId::new(&owner.namespace, &route.spec.secret_ref.name);
        ReceiverRoute {
            label,
            secret,
            secret_key: route.spec.secret_ref.key.as_str().into(),
            managed_in_asc: route.spec.app_store_connect.is_some(),
            owner,
        }
    }
}

type ByName = HashMap<String, Arc<ReceiverRoute>>;

/// Routes by namespace, then name: two lookups with borrowed `&str`s.
pub struct RouteTable {
    routes: RwLock<HashMap<String, ByName>>,
    /// Routes listed since the watch (re)started, swapped in whole once the list is complete.
    relisting: std::sync::Mutex<Option<Vec<ReceiverRoute>>>,
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
    pub fn insert(&self, route: &WebhookRoute) {
        let prepared = ReceiverRoute::new(route);
        let mut routes = self.write();
        let names = routes.entry(prepared.owner.namespace.clone()).or_default();
        names.insert(prepared.owner.name.clone(), Arc::new(prepared));
    }

    /// Applies one watch event: the table follows the API server as a reflector store would.
    pub fn apply(&self, event: watcher::Event<WebhookRoute>) {
        match event {
            watcher::Event::Apply(route) => self.insert(&route),
            watcher::Event::Delete(route) => {
                let gone = RouteOwner::of(&route);
                let mut routes = self.write();
                if let Some(names) = routes.get_mut(&gone.namespace) {
                    names.remove(&gone.name);
                    if names.is_empty() {
                        routes.remove(&gone.namespace);
                    }
                }
            }
            watcher::Event::Init => *self.relisting() = Some(Vec::new()),
            watcher::Event::InitApply(route) => {
                let prepared = ReceiverRoute::new(&route);
                self.relisting().get_or_insert_with(Vec::new).push(prepared);
            }
            watcher::Event::InitDone => {
                let listed = self.relisting().take().unwrap_or_default();
                let mut fresh: HashMap<String, ByName> = HashMap::new();
                for prepared in listed {
                    fresh
                        .entry(prepared.owner.namespace.clone())
                        .or_default()
                        .insert(prepared.owner.name.clone(), Arc::new(prepared));
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

    fn relisting(&self) -> std::sync::MutexGuard<'_, Option<Vec<ReceiverRoute>>> {
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

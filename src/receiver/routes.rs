//! The receiver's routes, fed by a watch and prepared once per route: what every request would otherwise
//! compute again — the `namespace/name` label of metrics and the rate limit, the webhook Secret's cache
//! key — is made when the route arrives. Lookups borrow the request's path segments; nothing is allocated
//! per request.
//!
//! This is a second, differently slimmed copy of the routes next to the controllers' cache: the receiver
//! runs on every replica and needs a route's name, uid and `secretRef` only, while the controllers run on
//! the leader and need the whole spec. Sharing one store would make every replica hold every rule.

use super::record::RouteOwner;
use super::secret_cache::SecretId;
use crate::resources::{SecretKeySelector, WebhookRoute};
use kube::api::ObjectMeta;
use kube::runtime::watcher;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use tokio::sync::watch;

/// The part of a `WebhookRoute` the receiver reads, and all its route watch parses: rules, status and
/// managed fields are skipped unparsed, so a route update (the leader writes status after deliveries)
/// costs every replica a few strings, and a rule the controllers refuse cannot stop the receiver's watch.
#[derive(kube::Resource, Clone, Debug, Deserialize)]
#[resource(inherit = "WebhookRoute")]
pub struct RouteForReceiver {
    /// Name, namespace, uid and resource version only (see [`slim_meta`]).
    #[serde(deserialize_with = "slim_meta")]
    pub metadata: ObjectMeta,
    /// What the receiver reads of the spec.
    pub spec: ReceiverSpec,
}

/// What the receiver reads of a route's spec.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReceiverSpec {
    /// The webhook secret.
    pub secret_ref: SecretKeySelector,
    /// Present when the operator registers the webhook in App Store Connect; its content is not read.
    #[serde(default)]
    pub app_store_connect: Option<serde::de::IgnoredAny>,
}

impl From<&WebhookRoute> for RouteForReceiver {
    fn from(route: &WebhookRoute) -> Self {
        let m = &route.metadata;
        RouteForReceiver {
            metadata: ObjectMeta {
                name: m.name.clone(),
                namespace: m.namespace.clone(),
                uid: m.uid.clone(),
                resource_version: m.resource_version.clone(),
                ..ObjectMeta::default()
            },
            spec: ReceiverSpec {
                secret_ref: route.spec.secret_ref.clone(),
                app_store_connect: route
                    .spec
                    .app_store_connect
                    .as_ref()
                    .map(|_| serde::de::IgnoredAny),
            },
        }
    }
}

/// Reads of `metadata` what the receiver and its watch use (the watch resumes from the resource version).
fn slim_meta<'de, D: serde::Deserializer<'de>>(d: D) -> Result<ObjectMeta, D::Error> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Slim {
        name: Option<String>,
        namespace: Option<String>,
        uid: Option<String>,
        resource_version: Option<String>,
    }
    let m = Slim::deserialize(d)?;
    Ok(ObjectMeta {
        name: m.name,
        namespace: m.namespace,
        uid: m.uid,
        resource_version: m.resource_version,
        ..ObjectMeta::default()
    })
}

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
    pub fn new(route: &RouteForReceiver) -> Self {
        let owner = RouteOwner::of_meta(&route.metadata);
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
        self.insert_slim(&RouteForReceiver::from(route));
    }

    fn insert_slim(&self, route: &RouteForReceiver) {
        let prepared = ReceiverRoute::new(route);
        let mut routes = self.write();
        let names = routes.entry(prepared.owner.namespace.clone()).or_default();
        names.insert(prepared.owner.name.clone(), Arc::new(prepared));
    }

    /// Applies one watch event: the table follows the API server as a reflector store would.
    pub fn apply(&self, event: watcher::Event<RouteForReceiver>) {
        match event {
            watcher::Event::Apply(route) => self.insert_slim(&route),
            watcher::Event::Delete(route) => {
                let gone = RouteOwner::of_meta(&route.metadata);
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

/// Finds routes without calling the API server (the operator's is [`RouteTable`]).
pub trait RouteLookup: Send + Sync + 'static {
    /// The route `namespace/name`, if it exists.
    fn route(&self, namespace: &str, name: &str) -> Option<Arc<ReceiverRoute>>;
}

impl RouteLookup for RouteTable {
    fn route(&self, namespace: &str, name: &str) -> Option<Arc<ReceiverRoute>> {
        self.read().get(namespace)?.get(name).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(ns: &str, name: &str) -> RouteForReceiver {
        let mut r = crate::receiver::record::tests::route();
        r.metadata.namespace = Some(ns.into());
        r.metadata.name = Some(name.into());
        RouteForReceiver::from(&r)
    }

    #[test]
    fn the_receiver_parses_only_identity_and_secret_and_a_rule_the_controllers_refuse_does_not_stop_it()
     {
        let stored = serde_json::json!({
            "apiVersion": "asc.webhooks.dev/v1alpha1", "kind": "WebhookRoute",
            "metadata": {
                "name": "release", "namespace": "ios", "uid": "u-1", "resourceVersion": "42",
                "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}],
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}
            },
            "spec": {
                "secretRef": {"name": "hook", "key": "secret"},
                "appStoreConnect": {"enabled": true},
                "rules": [{"name": 7, "true": {"eventTypes": "not a list"}}]
            },
            "status": {"conditions": "not a list either"}
        });
        let r: RouteForReceiver = serde_json::from_value(stored).unwrap();
        assert_eq!(r.metadata.resource_version.as_deref(), Some("42"));
        assert!(r.metadata.managed_fields.is_none() && r.metadata.annotations.is_none());
        let prepared = ReceiverRoute::new(&r);
        assert_eq!(
            prepared.owner,
            RouteOwner {
                namespace: "ios".into(),
                name: "release".into(),
                uid: "u-1".into()
            }
        );
        assert_eq!(&*prepared.label, "ios/release");
        assert_eq!(
            (prepared.secret.name(), &*prepared.secret_key),
            ("hook", "secret")
        );
        assert!(prepared.managed_in_asc);
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

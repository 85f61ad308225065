//! The kinds `resource` rules create: resolved by discovery (one request per group version, cached), and
//! followed by one metadata watch per kind in use, which wakes the owning delivery whenever one of its
//! objects changes. No polling: an idle kind costs one watch connection, and the watch carries only
//! metadata (no status, no spec), selected on the labels the operator puts on what it creates.

use crate::actions::resource::TypeRef;
use crate::metrics::Metrics;
use crate::resources::WebhookDelivery;
use crate::resources::names::{API_VERSION, LABEL_DELIVERY, LABEL_MANAGED_BY, MANAGED_BY};
use futures::channel::mpsc;
use futures::{SinkExt, StreamExt};
use kube::api::{ApiResource, DynamicObject};
use kube::core::PartialObjectMeta;
use kube::discovery::Scope;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

/// A kind once found is trusted this long; a CRD removed meanwhile shows up as failed creates and reads.
const FOUND_TTL: Duration = Duration::from_secs(600);

/// What discovery says about a kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KindFact {
    /// Served and namespaced: resource rules may create it.
    Namespaced(ApiResource),
    /// Served, but cluster-scoped: a route may not create it.
    ClusterScoped,
    /// Not served (its CRD is not installed, or the version is wrong); the message says what was asked.
    Unknown(String),
}

/// Where watch events go: the delivery controller's trigger stream.
pub type Wakeups = mpsc::Sender<ObjectRef<WebhookDelivery>>;

struct Running {
    client: Client,
    namespace: Option<String>,
    sink: Wakeups,
    metrics: Metrics,
}

#[derive(Default)]
struct Watches {
    /// Kinds wanted, by `apiVersion/kind`, also before the controllers run.
    wanted: BTreeMap<String, ApiResource>,
    /// Watch tasks running, by the same key.
    started: HashMap<String, tokio::task::AbortHandle>,
    running: Option<Running>,
}

/// Discovery results and the per-kind watches.
pub struct ResourceKinds {
    found: moka::sync::Cache<TypeRef, KindFact>,
    watches: Mutex<Watches>,
}

impl Default for ResourceKinds {
    fn default() -> Self {
        ResourceKinds {
            found: moka::sync::Cache::builder()
                .max_capacity(1_000)
                .time_to_live(FOUND_TTL)
                .build(),
            watches: Mutex::new(Watches::default()),
        }
    }
}

fn key(ar: &ApiResource) -> String {
    format!("{}/{}", ar.api_version, ar.kind)
}

impl ResourceKinds {
    /// What the API server serves for `t`. Found kinds are cached; unknown ones are asked again each
    /// time, so a CRD installed later is seen at the next route check.
    pub async fn lookup(&self, client: &Client, t: &TypeRef) -> Result<KindFact, kube::Error> {
        if let Some(f) = self.found.get(t) {
            return Ok(f);
        }
        let fact = match kube::discovery::pinned_kind(client, &t.gvk()).await {
            Ok((ar, caps)) if caps.scope == Scope::Namespaced => KindFact::Namespaced(ar),
            Ok(_) => KindFact::ClusterScoped,
            Err(kube::Error::Api(s)) if s.is_not_found() => KindFact::Unknown(format!(
                "the API server does not serve {} (no API group version {})",
                t, t.api_version
            )),
            Err(kube::Error::Discovery(_)) => KindFact::Unknown(format!(
                "the API server does not serve {t} (API group version {} has no kind {})",
                t.api_version, t.kind
            )),
            Err(e) => return Err(e),
        };
        if !matches!(fact, KindFact::Unknown(_)) {
            self.found.insert(t.clone(), fact.clone());
        }
        Ok(fact)
    }

    /// Makes sure objects of `ar` are watched (from now on, or once the controllers start).
    pub fn follow(&self, ar: &ApiResource) {
        let mut w = self.watches.lock().unwrap_or_else(|p| p.into_inner());
        let k = key(ar);
        w.wanted.entry(k.clone()).or_insert_with(|| ar.clone());
        if w.started.contains_key(&k) {
            return;
        }
        if let Some(r) = &w.running {
            let handle = spawn_watch(r, ar.clone());
            w.started.insert(k, handle);
        }
    }

    /// Starts the watches of every kind wanted so far and of those wanted later, sending the deliveries
    /// that own a changed object to `sink`.
    pub fn start(
        &self,
        client: Client,
        namespace: Option<String>,
        sink: Wakeups,
        metrics: Metrics,
    ) {
        let mut w = self.watches.lock().unwrap_or_else(|p| p.into_inner());
        let running = Running {
            client,
            namespace,
            sink,
            metrics,
        };
        let wanted: Vec<(String, ApiResource)> = w
            .wanted
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (k, ar) in wanted {
            w.started
                .entry(k)
                .or_insert_with(|| spawn_watch(&running, ar));
        }
        w.running = Some(running);
    }

    /// Ends every watch (the controllers stopped: leadership lost, or shutdown).
    pub fn stop(&self) {
        let mut w = self.watches.lock().unwrap_or_else(|p| p.into_inner());
        for (_, h) in w.started.drain() {
            h.abort();
        }
        w.running = None;
    }
}

fn spawn_watch(r: &Running, ar: ApiResource) -> tokio::task::AbortHandle {
    // Metadata only: the API server sends no spec or status, and the delivery reads its object itself.
    let api: Api<PartialObjectMeta<DynamicObject>> = match &r.namespace {
        Some(ns) => Api::namespaced_with(r.client.clone(), ns, &ar),
        None => Api::all_with(r.client.clone(), &ar),
    };
    let selector = format!("{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_DELIVERY}");
    let report = crate::watch_retry::reporter("resource", key(&ar), &r.metrics, |_| {});
    let stream = crate::watch_retry::retrying(
        watcher(api, watcher::Config::default().labels(&selector)),
        report,
    );
    let mut sink = r.sink.clone();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            let meta = match event {
                watcher::Event::Apply(m)
                | watcher::Event::InitApply(m)
                | watcher::Event::Delete(m) => m.metadata,
                watcher::Event::Init | watcher::Event::InitDone => continue,
            };
            let namespace = meta.namespace.clone().unwrap_or_default();
            for owner in meta.owner_references.iter().flatten() {
                if owner.kind == "WebhookDelivery" && owner.api_version == API_VERSION {
                    let delivery = ObjectRef::new(&owner.name).within(&namespace);
                    if sink.send(delivery).await.is_err() {
                        // The delivery controller is gone; so is the point of watching.
                        return;
                    }
                }
            }
        }
    })
    .abort_handle()
}

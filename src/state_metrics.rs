//! State as metrics: what `status` says about each route and credential, as gauges Prometheus can alert
//! on (the kube-state-metrics convention: one series per condition status, 1 for the current one, 0 for
//! the others, so a flip never leaves a stale series behind).
//!
//! The series are refreshed at each scrape from the leader's watched caches of routes and credentials:
//! those hold exactly what the three status writers (route, App Store Connect webhook and credential
//! reconcilers) last wrote, so no writer needs a hook, and an object gone from the cache (deleted) loses
//! its series at the next scrape. Only the leader has the caches: a follower exports none of these, so
//! two replicas never disagree about a route. Cardinality is bounded by the objects: a few series per
//! route and credential, never per event or delivery.

use crate::resources::conditions::{self, Condition};
use crate::resources::{AscCredential, WebhookRoute};
use kube::ResourceExt;
use kube::runtime::reflector::Store;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// The condition statuses every exported condition has one series for.
const STATUSES: [&str; 3] = ["True", "False", "Unknown"];
/// Route conditions exported: `Ready` always, the App Store Connect ones with `spec.appStoreConnect`.
const ROUTE_READY: &str = "Ready";
const WEBHOOK_CONDITIONS: [&str; 2] = [
    crate::resources::route_asc::WEBHOOK_REGISTERED,
    crate::resources::route_asc::WEBHOOK_VERIFIED,
];

/// Labels of a route condition.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteConditionLabels {
    /// The route's namespace.
    pub namespace: String,
    /// The route's name.
    pub route: String,
    /// `Ready`, `WebhookRegistered` or `WebhookVerified`.
    pub r#type: &'static str,
    /// `True`, `False` or `Unknown`.
    pub status: &'static str,
}

/// Labels of a credential condition.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CredentialConditionLabels {
    /// The credential's namespace.
    pub namespace: String,
    /// The credential's name.
    pub credential: String,
    /// `Ready` or `Verified`.
    pub r#type: &'static str,
    /// `True`, `False` or `Unknown`.
    pub status: &'static str,
}

/// Labels naming a route by namespace and name.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteObjectLabels {
    /// The route's namespace.
    pub namespace: String,
    /// The route's name.
    pub route: String,
}

/// Labels of a route's delivery count.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RoutePhaseLabels {
    /// The route's namespace.
    pub namespace: String,
    /// The route's name.
    pub route: String,
    /// `succeeded`, `failed`, `no_match`, `duplicate` or `in_progress`.
    pub phase: &'static str,
}

/// The phases of `status.deliveries` exported.
const PHASES: [&str; 5] = [
    "succeeded",
    "failed",
    "no_match",
    "duplicate",
    "in_progress",
];

/// Labels of accepted events.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    /// `namespace/route`, as the receiver's other series name it.
    pub route: Arc<str>,
    /// The payload's event type, or `other` for types this version does not know (bounded: the body
    /// chooses it).
    pub event_type: String,
}

/// Labels of App Store Connect API answers.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AscCallLabels {
    /// `GET`, `POST`, `PATCH`, `DELETE` (or `other`).
    pub method: &'static str,
    /// The HTTP status code Apple answered with.
    pub status: u16,
}

type AscCalls = Family<AscCallLabels, prometheus_client::metrics::counter::Counter>;

/// App Store Connect API answers of this process. One family for the process: API clients are made
/// deep inside the App Store Connect code, which knows nothing of the operator's registry, and a
/// counter shared by every registry that exports it stays correct.
fn asc_calls() -> &'static AscCalls {
    static CALLS: std::sync::OnceLock<AscCalls> = std::sync::OnceLock::new();
    CALLS.get_or_init(AscCalls::default)
}

/// Counts one answer of the App Store Connect API.
pub fn count_asc_call(method: &http::Method, status: http::StatusCode) {
    let method = match method.as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        _ => "other",
    };
    asc_calls()
        .get_or_create(&AscCallLabels {
            method,
            status: status.as_u16(),
        })
        .inc();
}

/// Labels of the leader gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReplicaLabels {
    /// The replica's identity (`--identity`, the pod name in the chart).
    pub replica: String,
}

/// Labels of `build_info`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    revision: &'static str,
}

/// What one object contributes: `(condition type, current status)` pairs and, for routes, the time of
/// the last event in seconds since the epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectState {
    /// Each exported condition type with its current status word.
    pub conditions: Vec<(&'static str, &'static str)>,
    /// `status.lastDelivery.receivedAt` as Unix seconds.
    pub last_event: Option<f64>,
    /// `status.deliveries` by phase (in [`PHASES`] order), for routes.
    pub deliveries: Option<[i64; 5]>,
}

fn status_word(c: Option<&Condition>) -> &'static str {
    match c.map(|c| c.status.as_str()) {
        Some("True") => "True",
        Some("False") => "False",
        _ => "Unknown",
    }
}

/// The series of a route (pure). A condition that applies but was not written yet is `Unknown`.
pub fn route_state(route: &WebhookRoute) -> ObjectState {
    let written = route
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let mut types = vec![ROUTE_READY];
    if route.spec.app_store_connect.is_some() {
        types.extend(WEBHOOK_CONDITIONS);
    }
    let last_event = route
        .status
        .as_ref()
        .and_then(|s| s.last_delivery.as_ref())
        .and_then(|d| crate::time::parse_ts(&d.received_at))
        .map(|t| t.as_millisecond() as f64 / 1000.0);
    let deliveries = route.status.as_ref().map(|s| {
        let d = &s.deliveries;
        [
            d.succeeded,
            d.failed,
            d.no_match,
            d.duplicate,
            d.in_progress,
        ]
    });
    ObjectState {
        conditions: types
            .into_iter()
            .map(|t| (t, status_word(conditions::find(written, t))))
            .collect(),
        last_event,
        deliveries,
    }
}

/// The series of a credential (pure): `Ready` always, `Verified` when verification is asked for.
pub fn credential_state(cred: &AscCredential) -> ObjectState {
    let written = cred
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let mut types = vec!["Ready"];
    if cred.spec.verify_interval_minutes.is_some() {
        types.push("Verified");
    }
    ObjectState {
        conditions: types
            .into_iter()
            .map(|t| (t, status_word(conditions::find(written, t))))
            .collect(),
        last_event: None,
        deliveries: None,
    }
}

/// 10 ms … ~25 min: an action starting at once and one held behind a retried API server both land inside.
fn start_lag_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 2.5, 12))
}

/// The caches the series come from while this replica leads.
struct Sources {
    routes: Store<WebhookRoute>,
    credentials: Store<AscCredential>,
}

/// `(namespace, name)` → condition types exported for it, per kind: what to remove when it goes.
#[derive(Default)]
struct Exported {
    routes: BTreeMap<(String, String), Vec<&'static str>>,
    credentials: BTreeMap<(String, String), Vec<&'static str>>,
}

/// The state gauges, registered once; cheap to clone.
#[derive(Clone)]
pub struct StateMetrics {
    route_condition: Family<RouteConditionLabels, Gauge>,
    credential_condition: Family<CredentialConditionLabels, Gauge>,
    route_last_event: Family<RouteObjectLabels, Gauge<f64, AtomicU64>>,
    start_lag: Family<RouteObjectLabels, Histogram>,
    route_deliveries: Family<RoutePhaseLabels, Gauge>,
    events: Family<EventLabels, prometheus_client::metrics::counter::Counter>,
    sources: Arc<Mutex<Option<Sources>>>,
    exported: Arc<Mutex<Exported>>,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl StateMetrics {
    /// Registers the state gauges and `build_info` (set to 1 once) in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let state = StateMetrics {
            route_condition: Family::default(),
            credential_condition: Family::default(),
            route_last_event: Family::default(),
            start_lag: Family::new_with_constructor(start_lag_histogram as fn() -> Histogram),
            route_deliveries: Family::default(),
            events: Family::default(),
            sources: Arc::default(),
            exported: Arc::default(),
        };
        registry.register(
            "route_condition",
            "Conditions of each WebhookRoute: 1 for the current status, 0 for the others",
            state.route_condition.clone(),
        );
        registry.register(
            "credential_condition",
            "Conditions of each AscCredential: 1 for the current status, 0 for the others",
            state.credential_condition.clone(),
        );
        registry.register(
            "route_last_event_timestamp_seconds",
            "When the route's last event was received (status.lastDelivery.receivedAt), Unix seconds",
            state.route_last_event.clone(),
        );
        registry.register(
            "receiver_events",
            "Events accepted and recorded (first deliveries, not duplicates), by route and event type",
            state.events.clone(),
        );
        registry.register(
            "asc_api_requests",
            "App Store Connect API answers, by method and HTTP status",
            asc_calls().clone(),
        );
        registry.register(
            "route_deliveries",
            "The route's deliveries by phase as status.deliveries counts them (pruned ones included)",
            state.route_deliveries.clone(),
        );
        registry.register(
            "delivery_start_lag_seconds",
            "Time from the receiver accepting a signed event to its delivery's first action starting, by route",
            state.start_lag.clone(),
        );
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
                // Set by the image build (`--build-arg REVISION`); a local build says `unknown`.
                revision: option_env!("ASC_BUILD_REVISION").unwrap_or("unknown"),
            })
            .set(1);
        registry.register(
            "build_info",
            "The operator's version and source revision (always 1)",
            build,
        );
        state
    }

    /// Exports the state of what these caches hold until the returned guard is dropped (when the
    /// controllers stop: leadership lost, shutdown), which removes every series again.
    pub fn export_from(
        &self,
        routes: Store<WebhookRoute>,
        credentials: Store<AscCredential>,
    ) -> Exporting {
        *locked(&self.sources) = Some(Sources {
            routes,
            credentials,
        });
        Exporting(self.clone())
    }

    /// Counts an event the receiver recorded for route `route` (`namespace/name`).
    pub fn count_event(&self, route: &Arc<str>, event_type: &crate::asc::event::EventType) {
        let event_type = match event_type {
            crate::asc::event::EventType::Other(_) => "other".to_owned(),
            known => known.as_str().to_owned(),
        };
        self.events
            .get_or_create(&EventLabels {
                route: route.clone(),
                event_type,
            })
            .inc();
    }

    /// Records that a delivery of route `namespace/route`, received at `received_at` (RFC 3339), started
    /// its first action at `now`. A replay is not a new event: callers record first runs only.
    pub fn observe_start_lag(
        &self,
        namespace: &str,
        route: &str,
        received_at: &str,
        now: jiff::Timestamp,
    ) {
        let Some(received) = crate::time::parse_ts(received_at) else {
            return;
        };
        let lag = now.duration_since(received).as_secs_f64().max(0.0);
        self.start_lag
            .get_or_create(&RouteObjectLabels {
                namespace: namespace.to_owned(),
                route: route.to_owned(),
            })
            .observe(lag);
    }

    /// Brings the series in line with the caches: called before each scrape is encoded.
    pub fn refresh(&self) {
        let (routes, credentials) = match &*locked(&self.sources) {
            Some(s) => (s.routes.state(), s.credentials.state()),
            None => (Vec::new(), Vec::new()),
        };
        let mut exported = locked(&self.exported);
        let routes = routes.iter().map(|r| (key_of(r.as_ref()), route_state(r)));
        let before = std::mem::take(&mut exported.routes);
        exported.routes = sync(before, routes, |key, state, before| {
            self.set_route(key, state, before)
        });
        let credentials = credentials
            .iter()
            .map(|c| (key_of(c.as_ref()), credential_state(c)));
        let before = std::mem::take(&mut exported.credentials);
        exported.credentials = sync(before, credentials, |key, state, before| {
            let labels = |t, s| credential_labels(key, t, s);
            let now = state.map(|s| s.conditions.as_slice()).unwrap_or_default();
            set_conditions(&self.credential_condition, labels, now, before);
        });
    }

    /// The route's series as `state` says (`None`: the route is gone).
    fn set_route(&self, key: &Key, state: Option<&ObjectState>, before: &[&'static str]) {
        let labels = |t, s| route_labels(key, t, s);
        let now = state.map(|s| s.conditions.as_slice()).unwrap_or_default();
        set_conditions(&self.route_condition, labels, now, before);
        let object = RouteObjectLabels {
            namespace: key.0.clone(),
            route: key.1.clone(),
        };
        match state.and_then(|s| s.last_event) {
            Some(t) => {
                self.route_last_event.get_or_create(&object).set(t);
            }
            None => {
                self.route_last_event.remove(&object);
            }
        }
        if state.is_none() {
            self.start_lag.remove(&object);
        }
        let counts = state.and_then(|s| s.deliveries);
        for (i, phase) in PHASES.into_iter().enumerate() {
            let labels = RoutePhaseLabels {
                namespace: key.0.clone(),
                route: key.1.clone(),
                phase,
            };
            match counts {
                Some(c) => {
                    self.route_deliveries.get_or_create(&labels).set(c[i]);
                }
                None => {
                    self.route_deliveries.remove(&labels);
                }
            }
        }
    }
}

type Key = (String, String);

fn key_of<K: ResourceExt>(obj: &K) -> Key {
    (obj.namespace().unwrap_or_default(), obj.name_any())
}

/// Calls `set` for every object now present (with the condition types it had before) and, with `None`,
/// for every object gone since; returns the condition types exported now.
fn sync(
    mut before: BTreeMap<Key, Vec<&'static str>>,
    now: impl Iterator<Item = (Key, ObjectState)>,
    set: impl Fn(&Key, Option<&ObjectState>, &[&'static str]),
) -> BTreeMap<Key, Vec<&'static str>> {
    let mut exported = BTreeMap::new();
    for (key, state) in now {
        let had = before.remove(&key).unwrap_or_default();
        set(&key, Some(&state), &had);
        exported.insert(key, state.conditions.iter().map(|c| c.0).collect());
    }
    for (key, had) in before {
        set(&key, None, &had);
    }
    exported
}

/// One series per status of each condition in `now` (1 for the current status); the series of types
/// exported `before` that no longer apply (appStoreConnect removed from the spec, object gone) go.
fn set_conditions<L: Clone + std::hash::Hash + Eq>(
    family: &Family<L, Gauge>,
    labels: impl Fn(&'static str, &'static str) -> L,
    now: &[(&'static str, &'static str)],
    before: &[&'static str],
) {
    for t in before.iter().filter(|t| !now.iter().any(|c| c.0 == **t)) {
        for s in STATUSES {
            family.remove(&labels(t, s));
        }
    }
    for (t, current) in now {
        for s in STATUSES {
            family
                .get_or_create(&labels(t, s))
                .set(i64::from(s == *current));
        }
    }
}

fn route_labels(key: &Key, t: &'static str, s: &'static str) -> RouteConditionLabels {
    RouteConditionLabels {
        namespace: key.0.clone(),
        route: key.1.clone(),
        r#type: t,
        status: s,
    }
}

fn credential_labels(key: &Key, t: &'static str, s: &'static str) -> CredentialConditionLabels {
    CredentialConditionLabels {
        namespace: key.0.clone(),
        credential: key.1.clone(),
        r#type: t,
        status: s,
    }
}

/// While alive, the state gauges follow the caches handed to [`StateMetrics::export_from`].
pub struct Exporting(StateMetrics);

impl Drop for Exporting {
    fn drop(&mut self) {
        *locked(&self.0.sources) = None;
        // The caches stop being updated with the controllers: their state is no longer the truth.
        self.0.refresh();
    }
}

#[cfg(test)]
mod tests;

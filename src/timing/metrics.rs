//! Release timing as metrics: histograms of what the route status learned (observed once, right after
//! the write that taught it), a counter of runner seconds saved, and a gauge of how long the items in
//! flight have been in their current state (read from the leader's route cache at each scrape, like the
//! state gauges). Labels are the route and Apple's state or result names: never a version, a build or
//! an instance id, so a route has a few dozen series at most.

use super::{Learned, in_flight};
use crate::resources::WebhookRoute;
use kube::ResourceExt;
use kube::runtime::reflector::Store;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Labels of build processing times.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProcessedLabels {
    /// The route's namespace.
    pub namespace: String,
    /// The route's name.
    pub route: String,
    /// `COMPLETE` or `FAILED`.
    pub result: String,
}

/// Labels of app version state durations.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    /// The route's namespace.
    pub namespace: String,
    /// The route's name.
    pub route: String,
    /// Apple's state name, e.g. `WAITING_FOR_REVIEW`.
    pub state: String,
}

/// Labels of the in-flight gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InStateLabels {
    /// The route's namespace.
    pub namespace: String,
    /// The route's name.
    pub route: String,
    /// `build` or `version`.
    pub kind: &'static str,
    /// Apple's state name.
    pub state: String,
}

/// Labels naming a route.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// The route's namespace.
    pub namespace: String,
    /// The route's name.
    pub route: String,
}

/// 1 min … 8 h, then a day: Apple processes most builds in 5 to 60 minutes.
const PROCESSING_BUCKETS: [f64; 14] = [
    60.0, 120.0, 300.0, 600.0, 900.0, 1200.0, 1800.0, 2700.0, 3600.0, 5400.0, 7200.0, 14400.0,
    28800.0, 86400.0,
];
/// 1 min … 30 days: minutes in review, days waiting for review or for the developer's release.
const STATE_BUCKETS: [f64; 15] = [
    60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 43200.0, 86400.0, 172800.0,
    345600.0, 604800.0, 1209600.0, 2592000.0,
];

type Key = (String, String);

/// The label values each route has series under, so a deleted route's series go with it.
#[derive(Default)]
struct Exported {
    results: BTreeSet<String>,
    states: BTreeSet<String>,
    saved: bool,
}

/// The release timing metrics, registered once; cheap to clone.
#[derive(Clone)]
pub struct ReleaseMetrics {
    processing: Family<ProcessedLabels, Histogram>,
    version_state: Family<StateLabels, Histogram>,
    in_state: Family<InStateLabels, Gauge<f64, AtomicU64>>,
    saved: Family<RouteLabels, Counter>,
    routes: Arc<Mutex<Option<Store<WebhookRoute>>>>,
    exported: Arc<Mutex<BTreeMap<Key, Exported>>>,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn processing_histogram() -> Histogram {
    Histogram::new(PROCESSING_BUCKETS)
}

fn state_histogram() -> Histogram {
    Histogram::new(STATE_BUCKETS)
}

impl ReleaseMetrics {
    /// Registers the families in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = ReleaseMetrics {
            processing: Family::new_with_constructor(processing_histogram as fn() -> Histogram),
            version_state: Family::new_with_constructor(state_histogram as fn() -> Histogram),
            in_state: Family::default(),
            saved: Family::default(),
            routes: Arc::default(),
            exported: Arc::default(),
        };
        registry.register(
            "release_build_processing_seconds",
            "Time App Store Connect took to process a build upload, from the first state seen to COMPLETE or FAILED, by route and result",
            m.processing.clone(),
        );
        registry.register(
            "release_version_state_seconds",
            "Time an app version spent in a state it left (WAITING_FOR_REVIEW, IN_REVIEW, ...), by route and state",
            m.version_state.clone(),
        );
        registry.register(
            "release_in_state_seconds",
            "How long the route's build uploads and app versions in flight have been in their current state (the longest per state)",
            m.in_state.clone(),
        );
        registry.register(
            "release_runner_saved_seconds",
            "Processing time a CI runner polling for the build would have waited, once per action a build reaching COMPLETE started",
            m.saved.clone(),
        );
        m
    }

    /// Observes what route `namespace/route`'s status just learned (see [`super::learned`]).
    pub fn record(&self, namespace: &str, route: &str, learned: &[Learned]) {
        if learned.is_empty() {
            return;
        }
        let mut exported = locked(&self.exported);
        let mine = exported
            .entry((namespace.to_owned(), route.to_owned()))
            .or_default();
        for l in learned {
            match l {
                Learned::VersionState { state, seconds } => {
                    mine.states.insert(state.clone());
                    self.version_state
                        .get_or_create(&state_labels(namespace, route, state))
                        .observe(*seconds);
                }
                Learned::BuildProcessed { result, seconds } => {
                    mine.results.insert(result.clone());
                    self.processing
                        .get_or_create(&processed_labels(namespace, route, result))
                        .observe(*seconds);
                }
                Learned::Saved { seconds } => {
                    mine.saved = true;
                    self.saved
                        .get_or_create(&route_labels(namespace, route))
                        .inc_by(u64::try_from(*seconds).unwrap_or(0));
                }
            }
        }
    }

    /// Follows `routes` for the in-flight gauge until the guard is dropped (leadership lost).
    pub fn export_from(&self, routes: Store<WebhookRoute>) -> Exporting {
        *locked(&self.routes) = Some(routes);
        Exporting(self.clone())
    }

    /// Sets the in-flight gauge from the route cache and drops the series of routes gone: called
    /// before each scrape is encoded.
    pub fn refresh(&self) {
        let routes = locked(&self.routes).as_ref().map(Store::state);
        let now = jiff::Timestamp::now();
        self.in_state.clear();
        let mut present = BTreeSet::new();
        for r in routes.iter().flatten() {
            let (namespace, route) = (r.namespace().unwrap_or_default(), r.name_any());
            if let Some(status) = &r.status {
                for (kind, state, seconds) in in_flight(&status.release_timing, now) {
                    let labels = InStateLabels {
                        namespace: namespace.clone(),
                        route: route.clone(),
                        kind: kind.label(),
                        state,
                    };
                    self.in_state.get_or_create(&labels).set(seconds);
                }
            }
            present.insert((namespace, route));
        }
        let Some(_) = routes else { return };
        let mut exported = locked(&self.exported);
        let gone: Vec<Key> = exported
            .keys()
            .filter(|k| !present.contains(*k))
            .cloned()
            .collect();
        for key @ (namespace, route) in gone.iter() {
            let Some(e) = exported.remove(key) else {
                continue;
            };
            for result in &e.results {
                self.processing
                    .remove(&processed_labels(namespace, route, result));
            }
            for state in &e.states {
                self.version_state
                    .remove(&state_labels(namespace, route, state));
            }
            if e.saved {
                self.saved.remove(&route_labels(namespace, route));
            }
        }
    }
}

fn processed_labels(namespace: &str, route: &str, result: &str) -> ProcessedLabels {
    ProcessedLabels {
        namespace: namespace.to_owned(),
        route: route.to_owned(),
        result: result.to_owned(),
    }
}

fn state_labels(namespace: &str, route: &str, state: &str) -> StateLabels {
    StateLabels {
        namespace: namespace.to_owned(),
        route: route.to_owned(),
        state: state.to_owned(),
    }
}

fn route_labels(namespace: &str, route: &str) -> RouteLabels {
    RouteLabels {
        namespace: namespace.to_owned(),
        route: route.to_owned(),
    }
}

/// While alive, the in-flight gauge follows the cache handed to [`ReleaseMetrics::export_from`].
pub struct Exporting(ReleaseMetrics);

impl Drop for Exporting {
    fn drop(&mut self) {
        *locked(&self.0.routes) = None;
        self.0.in_state.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape(registry: &Registry) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, registry).unwrap();
        out
    }

    #[test]
    fn what_was_learned_lands_in_the_route_series_and_only_there() {
        let mut registry = Registry::with_prefix("asc_webhook");
        let m = ReleaseMetrics::register(&mut registry);
        m.record(
            "ios",
            "release",
            &[
                Learned::BuildProcessed {
                    result: "COMPLETE".into(),
                    seconds: 1200.5,
                },
                Learned::VersionState {
                    state: "WAITING_FOR_REVIEW".into(),
                    seconds: 72000.0,
                },
                Learned::Saved { seconds: 2401 },
            ],
        );
        let text = scrape(&registry);
        for line in [
            r#"asc_webhook_release_build_processing_seconds_sum{namespace="ios",route="release",result="COMPLETE"} 1200.5"#,
            r#"asc_webhook_release_version_state_seconds_count{namespace="ios",route="release",state="WAITING_FOR_REVIEW"} 1"#,
            r#"asc_webhook_release_runner_saved_seconds_total{namespace="ios",route="release"} 2401"#,
        ] {
            assert!(text.contains(line), "{line}\n{text}");
        }
    }

    #[test]
    fn a_route_gone_from_the_cache_loses_its_series() {
        let mut registry = Registry::with_prefix("asc_webhook");
        let m = ReleaseMetrics::register(&mut registry);
        m.record("ios", "release", &[Learned::Saved { seconds: 5 }]);
        let (store, _writer) = kube::runtime::reflector::store::<WebhookRoute>();
        let guard = m.export_from(store);
        m.refresh();
        assert!(!scrape(&registry).contains("route=\"release\""));
        drop(guard);
    }
}

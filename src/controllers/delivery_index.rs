//! What the route controller knows about deliveries, fed by one watch instead of a LIST per reconcile.
//!
//! A route's status counts its deliveries by outcome, names the last one and prunes the oldest. Listing
//! them on every reconcile cost one LIST per route per re-check (33 LIST/s with 1,000 idle routes on a
//! real API server). Instead a single watch of all deliveries keeps, per route, a small summary of each
//! delivery (never its payload) and tells the route controller which route to look at again.

use crate::resources::delivery::Phase;
use crate::resources::{WebhookDelivery, WebhookRoute};
use futures::{Stream, StreamExt};
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

/// What the route controller needs of one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliverySummary {
    /// The delivery's name.
    pub name: String,
    /// The uid of the route that owns it: a route re-created under the same name must not inherit the
    /// history of the one it replaced.
    pub owner_uid: Option<String>,
    /// Event type.
    pub event_type: Box<str>,
    /// New state, if the event has one.
    pub new_state: Option<Box<str>>,
    /// Phase as last written by the delivery controller.
    pub phase: Phase,
    /// When the receiver accepted it (RFC 3339).
    pub received_at: Box<str>,
    /// A replay is asked for (annotation `asc.webhooks.dev/replay`) and not started yet: not pruned.
    pub replay_wanted: bool,
    /// ... and the delivery still carries the finished label, which keeps it out of the delivery
    /// controller's watch: the route controller removes the label.
    pub replay_unseen: bool,
    /// The state change of a build upload or app version it reports, for release timing.
    pub timing: Option<Box<crate::timing::Observation>>,
}

impl DeliverySummary {
    /// The summary of `d`.
    pub fn of(d: &WebhookDelivery) -> DeliverySummary {
        let replay_wanted = crate::controllers::delivery::replay::requested(d).is_some();
        DeliverySummary {
            name: d.name_any(),
            owner_uid: d
                .owner_references()
                .iter()
                .find(|o| o.kind == "WebhookRoute")
                .map(|o| o.uid.clone()),
            event_type: d.spec.event_type.as_str().into(),
            new_state: d.spec.new_state.as_deref().map(Into::into),
            phase: d.status.as_ref().map(|s| s.phase).unwrap_or_default(),
            received_at: d.spec.received_at.as_str().into(),
            replay_wanted,
            replay_unseen: replay_wanted
                && d.labels()
                    .contains_key(crate::resources::names::LABEL_FINISHED),
            timing: crate::timing::observe::observation(d).map(Box::new),
        }
    }
}

type RouteKey = (String, String);
type Deliveries = HashMap<RouteKey, Summaries>;

/// One route's deliveries, sorted by name. A vector rather than a `BTreeMap`: most routes hold a handful
/// (an idle route that declares its Apple webhook: its one verifying ping), and a `BTreeMap`'s first leaf
/// has room for eleven summaries, ~1.5 KiB per route for a single delivery.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Summaries(Vec<DeliverySummary>);

/// Up to this many deliveries a route's vector grows one slot at a time (no spare room).
const EXACT_UP_TO: usize = 8;

impl Summaries {
    fn position(&self, name: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|d| d.name.as_str().cmp(name))
    }

    fn get(&self, name: &str) -> Option<&DeliverySummary> {
        self.position(name).ok().map(|i| &self.0[i])
    }

    fn insert(&mut self, summary: DeliverySummary) {
        match self.position(&summary.name) {
            Ok(i) => self.0[i] = summary,
            Err(i) => {
                if self.0.len() < EXACT_UP_TO {
                    self.0.reserve_exact(1);
                }
                self.0.insert(i, summary);
            }
        }
    }

    /// Removes `name`; whether it was there.
    fn remove(&mut self, name: &str) -> bool {
        let Ok(i) = self.position(name) else {
            return false;
        };
        self.0.remove(i);
        if self.0.capacity() > 2 * self.0.len() + EXACT_UP_TO {
            self.0.shrink_to_fit();
        }
        true
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn values(&self) -> impl Iterator<Item = &DeliverySummary> {
        self.0.iter()
    }

    fn keys(&self) -> impl Iterator<Item = &String> {
        self.0.iter().map(|d| &d.name)
    }
}

#[derive(Default)]
struct State {
    /// False until the first complete list arrived: counts from a partial index would regress a status.
    ready: bool,
    by_route: Deliveries,
    /// A relist in progress (the watch restarted): built aside, swapped in when complete.
    relisting: Option<Deliveries>,
    /// Deliveries the route controller deleted (and counted as pruned) whose deletion the watch has not
    /// shown yet: left out of counts so a reconcile in between cannot count them twice.
    pruned: HashSet<(String, String)>,
}

/// Summaries of every delivery, by route. Cheap to clone; clones share the index.
#[derive(Clone, Default)]
pub struct DeliveryIndex {
    state: Arc<RwLock<State>>,
}

fn key_of(d: &WebhookDelivery) -> RouteKey {
    (d.namespace().unwrap_or_default(), d.spec.route.clone())
}

fn route_ref((namespace, name): &RouteKey) -> ObjectRef<WebhookRoute> {
    ObjectRef::new(name).within(namespace)
}

impl DeliveryIndex {
    /// Whether the index holds a complete list.
    pub fn is_ready(&self) -> bool {
        self.read().ready
    }

    /// The deliveries of route `namespace/name` owned by the route with `uid`.
    pub fn of_route(&self, namespace: &str, name: &str, uid: Option<&str>) -> Vec<DeliverySummary> {
        let state = self.read();
        state
            .by_route
            .get(&(namespace.to_owned(), name.to_owned()))
            .map(|m| {
                m.values()
                    .filter(|d| d.owner_uid.as_deref() == uid)
                    .filter(|d| {
                        !state
                            .pruned
                            .contains(&(namespace.to_owned(), d.name.clone()))
                    })
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Records that `names` of `namespace` were counted as pruned and are being deleted.
    pub fn mark_pruned(&self, namespace: &str, names: impl IntoIterator<Item = String>) {
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        for name in names {
            state.pruned.insert((namespace.to_owned(), name));
        }
    }

    /// Deliveries of route `namespace/name` counted as pruned that the watch still shows: their delete
    /// is still to happen or to be seen (a failed delete is retried from here).
    pub fn pending_prunes(&self, namespace: &str, name: &str) -> Vec<String> {
        let state = self.read();
        state
            .by_route
            .get(&(namespace.to_owned(), name.to_owned()))
            .map(|m| {
                m.keys()
                    .filter(|d| state.pruned.contains(&(namespace.to_owned(), (*d).clone())))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Applies one watch event; returns the routes whose deliveries changed.
    pub fn apply(&self, event: watcher::Event<WebhookDelivery>) -> Vec<ObjectRef<WebhookRoute>> {
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        match event {
            watcher::Event::Apply(d) => {
                let key = key_of(&d);
                let summary = DeliverySummary::of(&d);
                let routes = state.by_route.entry(key.clone()).or_default();
                if routes.get(&summary.name) == Some(&summary) {
                    return vec![];
                }
                routes.insert(summary);
                vec![route_ref(&key)]
            }
            watcher::Event::Delete(d) => {
                let key = key_of(&d);
                let Some(routes) = state.by_route.get_mut(&key) else {
                    return vec![];
                };
                let removed = routes.remove(&d.name_any());
                if routes.is_empty() {
                    state.by_route.remove(&key);
                }
                state.pruned.remove(&(key.0.clone(), d.name_any()));
                if removed {
                    vec![route_ref(&key)]
                } else {
                    vec![]
                }
            }
            watcher::Event::Init => {
                // The watch restarted and may have missed deletions and phase changes: counts wait for
                // the new list rather than come from what the old one last showed.
                state.ready = false;
                state.relisting = Some(HashMap::new());
                vec![]
            }
            watcher::Event::InitApply(d) => {
                let key = key_of(&d);
                let summary = DeliverySummary::of(&d);
                state
                    .relisting
                    .get_or_insert_with(HashMap::new)
                    .entry(key)
                    .or_default()
                    .insert(summary);
                vec![]
            }
            watcher::Event::InitDone => {
                let fresh = state.relisting.take().unwrap_or_default();
                let old = std::mem::replace(&mut state.by_route, fresh);
                state.ready = true;
                let present: HashSet<(String, String)> = state
                    .by_route
                    .iter()
                    .flat_map(|((ns, _), m)| m.keys().map(move |n| (ns.clone(), n.clone())))
                    .collect();
                state.pruned.retain(|k| present.contains(k));
                // Every route whose deliveries may differ after the relist.
                let mut changed: HashSet<&RouteKey> = HashSet::new();
                for (k, v) in &old {
                    if state.by_route.get(k) != Some(v) {
                        changed.insert(k);
                    }
                }
                for (k, v) in &state.by_route {
                    if old.get(k) != Some(v) {
                        changed.insert(k);
                    }
                }
                changed.into_iter().map(route_ref).collect()
            }
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Feeds the index from `events` (a delivery watch whose errors `watch_retry::retrying` took) and
    /// yields the routes to reconcile.
    pub fn follow<S>(self, events: S) -> impl Stream<Item = ObjectRef<WebhookRoute>> + Send
    where
        S: Stream<Item = watcher::Event<WebhookDelivery>> + Send + 'static,
    {
        events.flat_map(move |event| futures::stream::iter(self.apply(event)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::WebhookDeliverySpec;
    use crate::resources::delivery::WebhookDeliveryStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    fn delivery(name: &str, route: &str, phase: Phase) -> WebhookDelivery {
        let mut d = WebhookDelivery::new(
            name,
            WebhookDeliverySpec {
                route: route.into(),
                event_id: name.into(),
                event_type: "buildUploadStateUpdated".into(),
                old_state: None,
                new_state: Some("COMPLETE".into()),
                instance: None,
                received_at: "2026-01-01T00:00:00Z".into(),
                event_created_at: None,
                source: Default::default(),
                request_id: None,
                payload: "{\"big\": \"payload\"}".into(),
            },
        );
        d.metadata.namespace = Some("ios".into());
        d.metadata.owner_references = Some(vec![OwnerReference {
            kind: "WebhookRoute".into(),
            name: route.into(),
            uid: format!("uid-{route}"),
            api_version: "asc.webhooks.dev/v1alpha1".into(),
            ..Default::default()
        }]);
        d.status = Some(WebhookDeliveryStatus {
            phase,
            ..Default::default()
        });
        d
    }

    #[test]
    fn counts_are_withheld_until_the_first_list_is_complete() {
        let index = DeliveryIndex::default();
        assert!(!index.is_ready());
        index.apply(watcher::Event::Init);
        index.apply(watcher::Event::InitApply(delivery(
            "a",
            "r",
            Phase::Pending,
        )));
        assert!(!index.is_ready());
        let changed = index.apply(watcher::Event::InitDone);
        assert!(index.is_ready());
        assert_eq!(changed, vec![ObjectRef::new("r").within("ios")]);
        assert_eq!(index.of_route("ios", "r", Some("uid-r")).len(), 1);
    }

    #[test]
    fn counts_are_withheld_again_while_a_restarted_watch_lists_anew() {
        let index = DeliveryIndex::default();
        index.apply(watcher::Event::Init);
        index.apply(watcher::Event::InitDone);
        assert!(index.is_ready());
        index.apply(watcher::Event::Init);
        assert!(!index.is_ready(), "not ready while the new list arrives");
        index.apply(watcher::Event::InitApply(delivery(
            "a",
            "r",
            Phase::Succeeded,
        )));
        assert!(!index.is_ready());
        index.apply(watcher::Event::InitDone);
        assert!(index.is_ready());
        assert_eq!(index.of_route("ios", "r", Some("uid-r")).len(), 1);
    }

    #[test]
    fn a_phase_change_triggers_the_route_and_a_repeat_does_not() {
        let index = DeliveryIndex::default();
        index.apply(watcher::Event::InitDone);
        assert_eq!(
            index
                .apply(watcher::Event::Apply(delivery("a", "r", Phase::Pending)))
                .len(),
            1
        );
        assert!(
            index
                .apply(watcher::Event::Apply(delivery("a", "r", Phase::Pending)))
                .is_empty()
        );
        index.apply(watcher::Event::Apply(delivery("a", "r", Phase::Succeeded)));
        let got = index.of_route("ios", "r", Some("uid-r"));
        assert_eq!(got[0].phase, Phase::Succeeded);
        assert_eq!(
            index
                .apply(watcher::Event::Delete(delivery("a", "r", Phase::Succeeded)))
                .len(),
            1
        );
        assert!(index.of_route("ios", "r", Some("uid-r")).is_empty());
    }

    #[test]
    fn a_pruned_delivery_is_not_counted_again_before_its_deletion_is_seen() {
        let index = DeliveryIndex::default();
        index.apply(watcher::Event::InitDone);
        index.apply(watcher::Event::Apply(delivery("a", "r", Phase::Failed)));
        index.apply(watcher::Event::Apply(delivery("b", "r", Phase::Failed)));
        index.mark_pruned("ios", ["a".to_owned()]);
        let names: Vec<_> = index
            .of_route("ios", "r", Some("uid-r"))
            .into_iter()
            .map(|d| d.name)
            .collect();
        assert_eq!(names, vec!["b"]);
        assert_eq!(index.pending_prunes("ios", "r"), vec!["a"]);
        index.apply(watcher::Event::Delete(delivery("a", "r", Phase::Failed)));
        assert!(index.pending_prunes("ios", "r").is_empty());
        assert!(
            index.read().pruned.is_empty(),
            "marks do not outlive the deletion"
        );
    }

    #[test]
    fn a_recreated_route_does_not_inherit_the_old_history() {
        let index = DeliveryIndex::default();
        index.apply(watcher::Event::Apply(delivery("a", "r", Phase::Failed)));
        assert!(index.of_route("ios", "r", Some("uid-new")).is_empty());
    }

    #[test]
    fn a_relist_replaces_the_index_and_names_routes_that_lost_deliveries() {
        let index = DeliveryIndex::default();
        index.apply(watcher::Event::InitDone);
        index.apply(watcher::Event::Apply(delivery("a", "gone", Phase::Failed)));
        index.apply(watcher::Event::Init);
        index.apply(watcher::Event::InitApply(delivery(
            "b",
            "kept",
            Phase::Failed,
        )));
        let mut changed = index.apply(watcher::Event::InitDone);
        changed.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(
            changed,
            vec![
                ObjectRef::new("gone").within("ios"),
                ObjectRef::new("kept").within("ios")
            ]
        );
        assert!(index.of_route("ios", "gone", Some("uid-gone")).is_empty());
    }
}

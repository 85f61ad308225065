//! Prometheus metrics (the `prometheus-client` crate, maintained by the Prometheus project). Label values
//! are route names and fixed outcome words: never a secret, a URL or anything taken from a request body,
//! and unknown routes are counted under one label so an attacker cannot grow the series without bound.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::Arc;

/// Labels of receiver request counts.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `namespace/route`, or `unknown` for routes that do not exist (shared, made once per route).
    pub route: Arc<str>,
    /// `accepted`, `duplicate`, `bad_signature`, `bad_request`, `too_large`, `timeout`, `rate_limited`,
    /// `unavailable`, `busy` (body budget full), `unstorable` (too large to store), `refused` (the API
    /// server refused it for good), `not_found`.
    pub outcome: &'static str,
}

/// Labels naming a route.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// `namespace/route` (shared, made once per route).
    pub route: Arc<str>,
}

/// Labels of an outcome-only series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// A fixed outcome word.
    pub outcome: &'static str,
}

/// Labels of controller reconciles.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    /// `delivery`, `route` or `credential`.
    pub controller: &'static str,
    /// `ok` or `error`.
    pub result: &'static str,
}

/// Labels of failed reconciles.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileErrorLabels {
    /// The controller.
    pub controller: &'static str,
    /// What kind of failure (`controllers::error::Category::metric_label`).
    pub category: &'static str,
}

/// Labels of action executions.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    /// `job`, `http` or `resource`.
    pub kind: &'static str,
    /// `succeeded`, `failed`, `retry`, `created`.
    pub outcome: &'static str,
}

/// Labels naming a controller.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    /// `delivery`, `route` or `credential`.
    pub controller: &'static str,
}

/// Labels naming a watch stream.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WatchLabels {
    /// `receiver` (the route store every replica keeps) or the controller whose watches failed
    /// (`delivery`, `route`, `credential`), or `resource` (the watches of resource actions' kinds).
    pub stream: &'static str,
}

/// Labels of catch-up errors.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CatchUpErrorLabels {
    /// `namespace/route`.
    pub route: String,
    /// `unavailable` (429, 5xx, timeouts), `forbidden`, `not_found`, `rejected`, `malformed`, `other`
    /// (a pass was interrupted), `page_budget` (a pass read its page budget), `redelivery_refused`;
    /// for skipped log entries: `unknown_state`, `malformed`, `missing_event`, `invalid_payload`.
    pub reason: &'static str,
}

/// Every metric the operator exports, registered once at start-up.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    /// Receiver requests by route and outcome.
    pub requests: Family<RequestLabels, Counter>,
    /// Refused signatures by route.
    pub signature_failures: Family<RouteLabels, Counter>,
    /// Receiver request duration in seconds, by outcome.
    pub request_duration: Family<OutcomeLabels, Histogram>,
    /// Webhook-secret reads from the API server, by outcome (`ok`, `missing`, `error`).
    pub secret_fetches: Family<OutcomeLabels, Counter>,
    /// Reconciles by controller and result.
    pub reconciles: Family<ReconcileLabels, Counter>,
    /// Failed reconciles by controller and kind of failure.
    pub reconcile_errors: Family<ReconcileErrorLabels, Counter>,
    /// Reconcile duration in seconds, by controller.
    pub reconcile_duration: Family<ControllerLabels, Histogram>,
    /// Actions by kind and outcome.
    pub actions: Family<ActionLabels, Counter>,
    /// Action duration in seconds (one HTTP attempt, one Job create), by kind.
    pub action_duration: Family<ActionLabels, Histogram>,
    /// Connections the public listener closed at once because `--max-connections` were open.
    pub refused_connections: Counter,
    /// Errors of watch streams (routes, deliveries, Jobs, credentials), by resource.
    pub watch_errors: Family<WatchLabels, Counter>,
    /// 1 while this replica holds the leader Lease and runs the controllers (always 1 without election),
    /// by replica: a follower says 0, so "no leader" is a sum of 0, not a missing series.
    pub leader: Family<crate::state_metrics::ReplicaLabels, Gauge>,
    /// Route and credential conditions, last event times and build information.
    pub state: crate::state_metrics::StateMetrics,
    /// Build processing and app version review times, and runner time saved.
    pub release: crate::timing::metrics::ReleaseMetrics,
    /// Delivery status writes refused because the copy they were decided on was stale (a lagging cache).
    pub stale_writes: Counter,
    /// Events catch-up recorded (or had App Store Connect redeliver), by route.
    pub catch_up_recovered: Family<RouteLabels, Counter>,
    /// Catch-up errors by route and reason.
    pub catch_up_errors: Family<CatchUpErrorLabels, Counter>,
    /// Delivery-log entries catch-up could not use and skipped (the rest of the page was read), by
    /// route and reason.
    pub catch_up_entries_skipped: Family<CatchUpErrorLabels, Counter>,
    /// Seconds from App Store Connect's `createdDate` of a missed delivery to its recording by catch-up.
    pub catch_up_lag: Histogram,
    /// Deliveries that ran nothing because their event already ran and was pruned, by route.
    pub duplicate_events: Family<RouteLabels, Counter>,
    /// Replays started on request (annotation `asc.webhooks.dev/replay`).
    pub replays: Counter,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms … ~30 s: the receiver's fast path and the slowest retried HTTP action both land inside.
    Histogram::new(exponential_buckets(0.0005, 2.5, 13))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric under the `asc_webhook` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("asc_webhook");
        // Registration order is the order of the scrape output: the groups keep it as it was.
        let ReceiverFamilies {
            requests,
            signature_failures,
            request_duration,
            secret_fetches,
        } = ReceiverFamilies::register(&mut registry);
        let DeliveryFamilies {
            reconciles,
            reconcile_errors,
            reconcile_duration,
            actions,
            stale_writes,
            action_duration,
        } = DeliveryFamilies::register(&mut registry);
        let WatchFamilies {
            refused_connections,
            watch_errors,
            leader,
        } = WatchFamilies::register(&mut registry);
        let CatchUpFamilies {
            catch_up_recovered,
            catch_up_errors,
            catch_up_entries_skipped,
            catch_up_lag,
            duplicate_events,
            replays,
        } = CatchUpFamilies::register(&mut registry);
        let state = crate::state_metrics::StateMetrics::register(&mut registry);
        let release = crate::timing::metrics::ReleaseMetrics::register(&mut registry);
        Metrics {
            registry: Arc::new(registry),
            state,
            release,
            catch_up_recovered,
            catch_up_errors,
            catch_up_entries_skipped,
            catch_up_lag,
            duplicate_events,
            replays,
            refused_connections,
            watch_errors,
            leader,
            requests,
            signature_failures,
            request_duration,
            secret_fetches,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            actions,
            action_duration,
            stale_writes,
        }
    }

    /// The metrics in Prometheus text format.
    pub fn encode(&self) -> String {
        self.state.refresh();
        self.release.refresh();
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The receiver's metrics, registered together so `Metrics::new` stays a list of groups.
struct ReceiverFamilies {
    requests: Family<RequestLabels, Counter>,
    signature_failures: Family<RouteLabels, Counter>,
    request_duration: Family<OutcomeLabels, Histogram>,
    secret_fetches: Family<OutcomeLabels, Counter>,
}

impl ReceiverFamilies {
    /// Registers the receiver's request, signature and secret-read metrics, in their scrape order.
    fn register(registry: &mut Registry) -> Self {
        let requests = Family::<RequestLabels, Counter>::default();
        let signature_failures = Family::<RouteLabels, Counter>::default();
        let request_duration = Family::<OutcomeLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let secret_fetches = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "receiver_requests",
            "Webhook requests by route and outcome",
            requests.clone(),
        );
        registry.register(
            "receiver_signature_failures",
            "Requests refused for a missing, malformed or wrong signature",
            signature_failures.clone(),
        );
        registry.register(
            "receiver_request_duration_seconds",
            "Time from request to answer",
            request_duration.clone(),
        );
        registry.register(
            "receiver_secret_fetches",
            "Webhook secret reads from the API server",
            secret_fetches.clone(),
        );
        ReceiverFamilies {
            requests,
            signature_failures,
            request_duration,
            secret_fetches,
        }
    }
}

/// The metrics of delivery work (reconciles and actions), registered together for the same reason.
struct DeliveryFamilies {
    reconciles: Family<ReconcileLabels, Counter>,
    reconcile_errors: Family<ReconcileErrorLabels, Counter>,
    reconcile_duration: Family<ControllerLabels, Histogram>,
    actions: Family<ActionLabels, Counter>,
    stale_writes: Counter,
    action_duration: Family<ActionLabels, Histogram>,
}

impl DeliveryFamilies {
    /// Registers the reconcile, action and stale-write metrics, in their scrape order.
    fn register(registry: &mut Registry) -> Self {
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        let reconcile_duration = Family::<ControllerLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let actions = Family::<ActionLabels, Counter>::default();
        let action_duration = Family::<ActionLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "controller_reconciles",
            "Reconciles by controller and result",
            reconciles.clone(),
        );
        let reconcile_errors = Family::<ReconcileErrorLabels, Counter>::default();
        registry.register(
            "controller_reconcile_errors",
            "Failed reconciles by controller and kind of failure",
            reconcile_errors.clone(),
        );
        registry.register(
            "controller_reconcile_duration_seconds",
            "Reconcile duration by controller",
            reconcile_duration.clone(),
        );
        registry.register(
            "actions",
            "Actions run, by kind and outcome",
            actions.clone(),
        );
        let stale_writes = Counter::default();
        registry.register(
            "controller_stale_writes",
            "Delivery status writes refused because the cached copy was stale; the pass started again from a fresh read",
            stale_writes.clone(),
        );
        registry.register(
            "action_duration_seconds",
            "Duration of one action attempt",
            action_duration.clone(),
        );
        DeliveryFamilies {
            reconciles,
            reconcile_errors,
            reconcile_duration,
            actions,
            stale_writes,
            action_duration,
        }
    }
}

/// The liveness metrics (refused connections, watch errors, leadership), registered together.
struct WatchFamilies {
    refused_connections: Counter,
    watch_errors: Family<WatchLabels, Counter>,
    leader: Family<crate::state_metrics::ReplicaLabels, Gauge>,
}

impl WatchFamilies {
    /// Registers the connection-limit, watch-error and leader metrics, in their scrape order.
    fn register(registry: &mut Registry) -> Self {
        let refused_connections = Counter::default();
        let watch_errors = Family::<WatchLabels, Counter>::default();
        let leader = Family::<crate::state_metrics::ReplicaLabels, Gauge>::default();
        registry.register(
            "receiver_refused_connections",
            "Connections closed at once because the connection limit was reached",
            refused_connections.clone(),
        );
        registry.register(
            "watch_errors",
            "Errors of watch streams, by resource",
            watch_errors.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica runs the controllers",
            leader.clone(),
        );
        WatchFamilies {
            refused_connections,
            watch_errors,
            leader,
        }
    }
}

/// The metrics of App Store Connect catch-up, duplicates and replays, registered together.
struct CatchUpFamilies {
    catch_up_recovered: Family<RouteLabels, Counter>,
    catch_up_errors: Family<CatchUpErrorLabels, Counter>,
    catch_up_entries_skipped: Family<CatchUpErrorLabels, Counter>,
    catch_up_lag: Histogram,
    duplicate_events: Family<RouteLabels, Counter>,
    replays: Counter,
}

impl CatchUpFamilies {
    /// Registers the catch-up, duplicate-event and replay metrics, in their scrape order.
    fn register(registry: &mut Registry) -> Self {
        let catch_up_recovered = Family::<RouteLabels, Counter>::default();
        registry.register(
            "catch_up_recovered_events",
            "Events recovered from App Store Connect's delivery log by catch-up, by route",
            catch_up_recovered.clone(),
        );
        let catch_up_errors = Family::<CatchUpErrorLabels, Counter>::default();
        registry.register(
            "catch_up_errors",
            "Catch-up errors (interrupted passes, unusable log entries, refused redeliveries), by route and reason",
            catch_up_errors.clone(),
        );
        let catch_up_entries_skipped = Family::<CatchUpErrorLabels, Counter>::default();
        registry.register(
            "catch_up_entries_skipped",
            "Delivery-log entries catch-up skipped (unknown state, wrong field types, no event, no usable payload), by route and reason",
            catch_up_entries_skipped.clone(),
        );
        // 1 s … 3^11 s (about two days): a restart's gap of minutes and a weekend's both land inside.
        let catch_up_lag = Histogram::new(exponential_buckets(1.0, 3.0, 12));
        registry.register(
            "catch_up_lag_seconds",
            "Time from App Store Connect's createdDate of a missed delivery to its recording by catch-up",
            catch_up_lag.clone(),
        );
        let duplicate_events = Family::<RouteLabels, Counter>::default();
        registry.register(
            "duplicate_events",
            "Deliveries of an event that already ran and was pruned; nothing ran again",
            duplicate_events.clone(),
        );
        let replays = Counter::default();
        registry.register(
            "delivery_replays",
            "Replays started on request",
            replays.clone(),
        );
        CatchUpFamilies {
            catch_up_recovered,
            catch_up_errors,
            catch_up_entries_skipped,
            catch_up_lag,
            duplicate_events,
            replays,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_requests_show_up_in_the_text_format() {
        let m = Metrics::new();
        m.requests
            .get_or_create(&RequestLabels {
                route: "ios/release".into(),
                outcome: "accepted",
            })
            .inc();
        let text = m.encode();
        assert!(
            text.contains(
                r#"asc_webhook_receiver_requests_total{route="ios/release",outcome="accepted"} 1"#
            ),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }
}

//! `WebhookDelivery`: one accepted App Store Connect event and everything that happened because of it.
//! Its name is derived from the route and the event id, which is what makes a second delivery of the same
//! event a no-op, across restarts and replicas.

use super::Condition;
pub use super::names::ANNOTATION_REPLAY;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One event received on a route. Created by the receiver; its status is written by the delivery controller.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "asc.webhooks.dev",
    version = "v1alpha1",
    kind = "WebhookDelivery",
    plural = "webhookdeliveries",
    singular = "webhookdelivery",
    shortname = "ascdel",
    shortname = "whd",
    category = "asc",
    namespaced,
    status = "WebhookDeliveryStatus",
    printcolumn(name = "Route", type_ = "string", json_path = ".spec.route"),
    printcolumn(name = "Event", type_ = "string", json_path = ".spec.eventType"),
    printcolumn(name = "New State", type_ = "string", json_path = ".spec.newState"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Attempts",
        type_ = "integer",
        json_path = ".status.attempts",
        priority = 1
    ),
    printcolumn(
        name = "Event ID",
        type_ = "string",
        json_path = ".spec.eventId",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct WebhookDeliverySpec {
    /// Name of the `WebhookRoute` that received the event (same namespace).
    #[schemars(length(min = 1, max = 253))]
    pub route: String,
    /// Apple's event id (`data.id`): the same event delivered twice has the same id.
    #[schemars(length(min = 1, max = 256))]
    pub event_id: String,
    /// The event type (`data.type`), e.g. `buildUploadStateUpdated`.
    #[schemars(length(min = 1, max = 256))]
    pub event_type: String,
    /// The state before the change, if the event has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_state: Option<String>,
    /// The state after the change (`newState`, `newValue` or `newExternalBuildState`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_state: Option<String>,
    /// The App Store Connect object the event is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<InstanceReference>,
    /// When the receiver accepted the event (RFC 3339).
    pub received_at: String,
    /// When App Store Connect created the event, as its delivery log says (RFC 3339): set on events
    /// recovered by catch-up, which are recorded later than they happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_created_at: Option<String>,
    /// How the event arrived.
    #[serde(default)]
    pub source: DeliverySource,
    /// Apple's `x-apple-request-uuid` header, for correlating with Apple's delivery log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The request body exactly as received (the bytes the signature covered).
    #[schemars(length(max = 1048576))]
    pub payload: String,
}

/// Reference to the object an event is about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceReference {
    /// JSON:API type, e.g. `buildUploads` or `appStoreVersions`.
    #[serde(rename = "type")]
    pub type_: String,
    /// The object's id.
    pub id: String,
    /// The API URL of the object (`links.self`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// How an event reached the operator.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DeliverySource {
    /// POSTed by App Store Connect (or `asc-webhook-operator send`).
    #[default]
    Webhook,
    /// Fetched from App Store Connect's delivery list after a gap.
    CatchUp,
    /// Replayed on request.
    Replay,
}

/// Where a delivery is in its life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Phase {
    /// Accepted, not yet processed.
    #[default]
    Pending,
    /// Actions started, not all finished.
    Running,
    /// Every action succeeded.
    Succeeded,
    /// At least one action failed for good.
    Failed,
    /// No rule of the route matched the event.
    NoMatch,
    /// The event was already run by an earlier delivery that history pruning deleted (the route's
    /// `status.seenEvents`): nothing ran again.
    Duplicate,
}

impl Phase {
    /// Whether nothing more will happen to the delivery.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Phase::Succeeded | Phase::Failed | Phase::NoMatch | Phase::Duplicate
        )
    }

    /// The name shown in `kubectl get`.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Running => "Running",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
            Phase::NoMatch => "NoMatch",
            Phase::Duplicate => "Duplicate",
        }
    }
}

/// What the delivery controller did with the event.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookDeliveryStatus {
    /// `Pending`, `Running`, `Succeeded`, `Failed`, `NoMatch` or `Duplicate`.
    #[serde(default)]
    pub phase: Phase,
    /// Processing attempts so far (each retry after a transient failure counts).
    #[serde(default)]
    pub attempts: i32,
    /// Names of the rules that matched.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matched_rules: Vec<String>,
    /// What the App Store Connect API said about the event's object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrichment: Option<EnrichmentStatus>,
    /// One entry per action of each matched rule.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<ActionStatus>,
    /// A sentence about the outcome, for a person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the next retry is due, while one is scheduled (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_retry_time: Option<String>,
    /// When the delivery reached a terminal phase (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<String>,
    /// `Completed`: whether the delivery is finished, and how.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Replays run on request (annotation `asc.webhooks.dev/replay`): how many, and the value that
    /// asked for the last one. The fields above describe the current run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replays: Option<ReplayStatus>,
    /// Earlier runs of the delivery (the original, then each replay but the current one), oldest first,
    /// at most 20 and about 16 KiB (the newest is always kept).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub history: Vec<RunRecord>,
}

impl WebhookDeliveryStatus {
    /// Which run the status describes: 0 the original, n the n-th replay.
    pub fn replay_count(&self) -> i32 {
        self.replays.as_ref().map_or(0, |r| r.count)
    }
}

/// Replays of a delivery.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplayStatus {
    /// Replays started so far; the current run is this replay (0: the original run).
    #[serde(default)]
    pub count: i32,
    /// The annotation value the last replay was started for; setting the same value again runs nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_value: Option<String>,
    /// When the last replay started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_time: Option<String>,
}

/// The outcome of one earlier run of a delivery.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunRecord {
    /// Which run: 0 the original, n the n-th replay.
    pub replay: i32,
    /// How it ended.
    pub phase: Phase,
    /// Its sentence about the outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Its actions' outcomes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<ActionStatus>,
    /// When it ended (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<String>,
}

/// The enrichment summary kept in status (never the whole object).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnrichmentStatus {
    /// `Enriched`, `Failed` or `Skipped`.
    pub result: String,
    /// Marketing version (`versionString` or `cfBundleShortVersionString`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Build number (`cfBundleVersion`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_number: Option<String>,
    /// Platform, e.g. `IOS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// The object's own state, as the API reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Apple's errors, one line each (e.g. `ITMS-90683: Missing purpose string…`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    /// Why enrichment failed or was skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// What an action does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ActionKind {
    /// Creates a Job.
    #[default]
    Job,
    /// Sends an HTTP request.
    Http,
    /// Creates an object of any kind and follows it.
    Resource,
}

/// Where an action is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ActionState {
    /// Not started, or waiting for a retry.
    #[default]
    Pending,
    /// An HTTP request is being sent. Written before the request leaves, so an operator that finds it
    /// here on a fresh read knows the attempt was interrupted, and one working from a stale copy cannot
    /// write it at all (the write carries the resourceVersion it was decided on): no request is sent twice
    /// because a cache lagged.
    InFlight,
    /// Started: a Job (or a resource action's object) exists and has not finished.
    Running,
    /// Done.
    Succeeded,
    /// Failed for good.
    Failed,
}

impl ActionState {
    /// Whether nothing more will happen to the action.
    pub fn is_done(self) -> bool {
        matches!(self, ActionState::Succeeded | ActionState::Failed)
    }

    /// The name written in status.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionState::Pending => "Pending",
            ActionState::InFlight => "InFlight",
            ActionState::Running => "Running",
            ActionState::Succeeded => "Succeeded",
            ActionState::Failed => "Failed",
        }
    }
}

/// The outcome of one action.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActionStatus {
    /// The rule the action belongs to.
    pub rule: String,
    /// `Job`, `Http` or `Resource`.
    pub kind: ActionKind,
    /// `Pending`, `InFlight` (an HTTP request is being sent), `Running` (a Job or object runs),
    /// `Succeeded` or `Failed`.
    pub state: ActionState,
    /// Why the action failed or waits, as one CamelCase word (e.g. `Forbidden`, `JobNameTaken`,
    /// `QuotaExceeded`, `EndpointError`); `error` says it for a person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `ASC_*` variables left out of the Job because their value was too large for an environment
    /// variable (the container sees a marker instead, and `ASC_OMITTED` lists them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub omitted_env: Vec<String>,
    /// Name of the Job created, for Job actions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    /// The object created, for resource actions, and what it last said about itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<ResourceStatus>,
    /// Last HTTP status code received, for HTTP actions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status_code: Option<i32>,
    /// Attempts made for this action.
    #[serde(default)]
    pub attempts: i32,
    /// A short error, never containing secrets or response bodies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When the action last changed state (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
}

/// The object a resource action created.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceStatus {
    /// Its `apiVersion`, e.g. `tekton.dev/v1`.
    pub api_version: String,
    /// Its kind, e.g. `PipelineRun`.
    pub kind: String,
    /// Its name, in the delivery's namespace.
    pub name: String,
    /// What the object last said about itself: its `Succeeded` condition, `status.phase` or latest
    /// condition, e.g. `Succeeded=Unknown (Running): Tasks Completed: 1 (Failed: 0), Incomplete: 2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed: Option<String>,
}

#[cfg(test)]
impl WebhookDeliverySpec {
    /// A delivery's spec for unit tests: the given route, event and payload, the rest empty.
    pub fn sample(route: &str, event_id: &str, event_type: &str, payload: &str) -> Self {
        WebhookDeliverySpec {
            route: route.into(),
            event_id: event_id.into(),
            event_type: event_type.into(),
            old_state: None,
            new_state: None,
            instance: None,
            received_at: "2026-01-01T00:00:00Z".into(),
            event_created_at: None,
            source: Default::default(),
            request_id: None,
            payload: payload.into(),
        }
    }
}

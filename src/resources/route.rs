//! `WebhookRoute`: one App Store Connect webhook endpoint and what to do with each event it receives.

use super::release_timing::ReleaseTiming;
use super::route_asc::{AppStoreConnectStatus, AppStoreConnectWebhook};
use super::seen_events::SeenEvents;
use super::{Condition, LocalObjectReference, SecretKeySelector, common::open_object};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Deliveries kept per route when `deliveryHistoryLimit` is not set.
pub const DEFAULT_HISTORY_LIMIT: i32 = 100;

/// A webhook endpoint for App Store Connect: the secret it is signed with, an optional API credential for
/// enrichment, and rules that turn events into Jobs, HTTP calls or other objects (pipelines, workflows).
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "asc.webhooks.dev",
    version = "v1alpha1",
    kind = "WebhookRoute",
    plural = "webhookroutes",
    singular = "webhookroute",
    shortname = "ascroute",
    shortname = "whr",
    category = "asc",
    namespaced,
    status = "WebhookRouteStatus",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Last Event",
        type_ = "string",
        json_path = ".status.lastDelivery.eventType"
    ),
    printcolumn(
        name = "Last State",
        type_ = "string",
        json_path = ".status.lastDelivery.newState"
    ),
    printcolumn(
        name = "Received",
        type_ = "integer",
        json_path = ".status.deliveries.received"
    ),
    printcolumn(
        name = "URL",
        type_ = "string",
        json_path = ".status.url",
        priority = 1
    ),
    printcolumn(
        name = "Latest",
        type_ = "string",
        json_path = ".status.releaseTiming.items[0].title",
        priority = 1
    ),
    printcolumn(
        name = "State",
        type_ = "string",
        json_path = ".status.releaseTiming.items[0].state",
        priority = 1
    ),
    printcolumn(
        name = "Since",
        type_ = "date",
        json_path = ".status.releaseTiming.items[0].since",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!has(self.appStoreConnect) || has(self.credentialRef)",
    "message": "appStoreConnect needs a credentialRef"
}]))]
pub struct WebhookRouteSpec {
    /// The Secret key holding the webhook secret entered in App Store Connect; every request must carry a
    /// valid `x-apple-signature` made with it. Rotating the Secret takes effect within seconds.
    pub secret_ref: SecretKeySelector,
    /// The `AscCredential` used to fetch the object each event is about (version, build number, errors).
    /// Without it, rules run without enrichment; a rule with `enrich: Required` then fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_ref: Option<LocalObjectReference>,
    /// The ServiceAccount, in this namespace, whose rights the route's actions use: the operator creates
    /// the rules' Jobs and reads the HTTP actions' Secrets (and checks the credential's key Secret for
    /// `injectApiKey`) while impersonating `system:serviceaccount:<namespace>:<name>`, so a route can do
    /// only what this account may do. A refused call fails the action with reason `Forbidden`. Unset: the
    /// operator's `--default-service-account`, or, when that is unset too, the operator's own identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    #[schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"))]
    pub service_account_name: Option<String>,
    /// What to do with events. Every rule whose filter matches runs; an event no rule matches is recorded
    /// with phase `NoMatch`.
    #[schemars(length(max = 32))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.all(a, self.filter(b, b.name == a.name).size() == 1)",
        "message": "rule names must be unique within a route"
    }]))]
    pub rules: Vec<Rule>,
    /// How many `WebhookDelivery` objects to keep for this route; the oldest finished ones are deleted first.
    /// Defaults to 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub delivery_history_limit: Option<i32>,
    /// Let the operator register this route's webhook in App Store Connect and keep it in sync: URL,
    /// secret, event types and `enabled` follow the route, a ping proves the round trip, and the webhook
    /// is deleted with the route. Requires `credentialRef` (a key with the Account Holder, Admin or App
    /// Manager role).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_store_connect: Option<AppStoreConnectWebhook>,
    /// Pause the route's actions. Events are still verified, answered and recorded exactly as before, but
    /// their deliveries stay `Pending` (reason `RouteSuspended`) and start no Job or HTTP call; Jobs
    /// already running are still followed. Setting it back to false runs the waiting deliveries in the
    /// order they were received.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspend: bool,
}

impl WebhookRouteSpec {
    /// The history limit, defaulted.
    pub fn history_limit(&self) -> i32 {
        self.delivery_history_limit.unwrap_or(DEFAULT_HISTORY_LIMIT)
    }
}

/// One event filter and the single action it triggers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "[has(self.job), has(self.http), has(self.resource)].filter(x, x).size() == 1",
    "message": "each rule needs exactly one action: job, http or resource"
}]))]
// `match` is required by the schema, so the API server refuses a rule without it; the Rust side still
// reads it as optional, because an object stored before the rename (whose `on:` YAML 1.1 tools turned
// into a property named `"true"`) must surface as `InvalidRule`, not break the whole watch.
#[schemars(extend("required" = ["match", "name"]))]
pub struct Rule {
    /// Name of the rule, unique within the route; part of the names of the Jobs it creates, so keep it short.
    #[schemars(
        length(min = 1, max = 40),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// Which events this rule acts on; required. An empty filter (`match: {}`) matches every event except
    /// pings. (Named `match`, not `on`: YAML 1.1 tools such as kubectl, Helm and Argo CD read a bare `on`
    /// key as the boolean `true`.)
    #[serde(rename = "match", default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "EventFilter")]
    pub filter: Option<EventFilter>,
    /// Whether to fetch the event's object from the App Store Connect API first. `Optional` (default):
    /// enrich when a credential is configured and carry on without it if the API fails. `Required`: the
    /// delivery fails when enrichment fails. `Never`: do not call the API for this rule.
    #[serde(default)]
    pub enrich: EnrichPolicy,
    /// A CEL expression deciding, after `match` and after enrichment, whether the rule runs, e.g.
    /// `instance.platform == "IOS" && event.oldState == "IN_REVIEW"`. It sees `event` (`id`, `type`,
    /// `oldState`, `newState`, `timestamp`, `receivedAt`, `delivery`, `instance.{type,id,url}`, and the
    /// payload's `attributes`) and `instance` (`version`, `buildNumber`, `platform`, `state`, `errors`,
    /// `attributes`; null without enrichment). An expression that does not compile makes the route not
    /// Ready (`InvalidRuleExpression`); one whose cost bound is too high for the inputs fails the rule's
    /// action (`ExpressionCostExceeded`), as does one that fails to evaluate (`ExpressionError`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub when: Option<String>,
    /// Create a Job from this template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<JobAction>,
    /// Send an HTTP request (Slack, GitHub `repository_dispatch`, Jira, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpAction>,
    /// Create any namespaced object (a Tekton `PipelineRun`, an Argo `Workflow`, …) and follow it to its
    /// end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<ResourceAction>,
}

/// Conditions on an event, all of which must hold. Within one list any entry may match.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventFilter {
    /// Event types, as in the payload (`buildUploadStateUpdated`) or as the subscription name
    /// (`BUILD_UPLOAD_STATE_UPDATED`). Empty: any type except `webhookPingCreated`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub event_types: Vec<String>,
    /// New states (`newState`, `newValue` or `newExternalBuildState` of the event), e.g. `COMPLETE`,
    /// `READY_FOR_DISTRIBUTION`. Empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub new_states: Vec<String>,
    /// Previous states. Empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub old_states: Vec<String>,
}

/// Whether a rule fetches the event's object from the App Store Connect API.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum EnrichPolicy {
    /// Enrich when a credential is configured; run the action without enrichment if the API fails.
    #[default]
    Optional,
    /// Fail the delivery if enrichment is not possible.
    Required,
    /// Never call the API for this rule.
    Never,
}

/// Creates a `batch/v1` Job per matching event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobAction {
    /// A `batch/v1` JobTemplateSpec (`metadata` and `spec`), as in a CronJob's `jobTemplate`. Event data
    /// reaches the containers as `ASC_*` environment variables, never spliced into commands.
    #[schemars(schema_with = "open_object")]
    pub template: serde_json::Value,
    /// Add `APP_STORE_CONNECT_API_KEY_KEY_ID`, `APP_STORE_CONNECT_API_KEY_ISSUER_ID` and
    /// `APP_STORE_CONNECT_API_KEY_KEY` (by `secretKeyRef` to the credential's Secret) to every container,
    /// the variables fastlane reads. Requires `credentialRef`.
    #[serde(default)]
    pub inject_api_key: bool,
}

/// Creates one object of any namespaced kind per matching event, and follows it until it succeeds or
/// fails.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceAction {
    /// The object to create: `apiVersion`, `kind`, optional `metadata` (only `labels` and `annotations`
    /// are kept; name, namespace and owner are the operator's) and the rest as the kind wants it. Either
    /// an object or a string of YAML or JSON. It is a MiniJinja template, rendered like an HTTP body with
    /// `event`, `instance` and `route`, every `{{ value }}` JSON-escaped as the content of a string: put
    /// it inside double quotes (`value: "{{ instance.version }}"`) and an event value can never change
    /// the object's structure. In the object form, write string literals inside `{{ }}` with single
    /// quotes. `apiVersion` and `kind` must not depend on the event; the kind is looked up by discovery
    /// (`UnknownKind` until the API server serves it).
    #[schemars(schema_with = "any_value")]
    pub template: serde_json::Value,
    /// A CEL expression over `object` (the object as last read) that says it succeeded, e.g.
    /// `object.status.phase == "Succeeded"`. Unset: a `Succeeded` condition that is `True` (Tekton,
    /// Knative), a `Complete` condition (Job), or `status.phase` `Succeeded` (Argo Workflows, Pods).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub succeeded_when: Option<String>,
    /// A CEL expression over `object` that says it failed. Unset: a `Succeeded` condition that is
    /// `False`, a `Failed` condition (Job), or `status.phase` `Failed` or `Error`. Checked before
    /// `succeededWhen`. An expression that fails to evaluate (a field not there yet) counts as not
    /// matching; one over the cost limit, or not giving a bool, fails the action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub failed_when: Option<String>,
}

/// Any JSON value, kept as it is (the API server prunes nothing below it).
fn any_value(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// Sends one HTTP request per matching event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpAction {
    /// The Secret key holding the URL (a Slack webhook URL is itself a secret).
    pub url_secret_ref: SecretKeySelector,
    /// HTTP method. Defaults to POST.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^(GET|POST|PUT|PATCH|DELETE)$"))]
    pub method: Option<String>,
    /// A Secret whose every key is sent as a header of that name (for `Authorization` and the like).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers_secret_ref: Option<LocalObjectReference>,
    /// A MiniJinja template for the body, rendered with `event`, `instance` (enrichment, when available) and
    /// `route`. When the content type is JSON, every value printed with `{{ }}` is JSON-escaped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 65536))]
    pub body: Option<String>,
    /// `content-type` of the body. Defaults to `application/json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// Per-attempt timeout in seconds. Defaults to 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 300))]
    pub timeout_seconds: Option<i32>,
    /// Attempts before the action is marked failed (5xx, 429 and connection errors are retried with
    /// backoff). Defaults to 5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 20))]
    pub max_attempts: Option<i32>,
}

/// What the operator last observed about the route.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookRouteStatus {
    /// The URL to paste into App Store Connect (Users and Access → Integrations → Webhooks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// `Ready` (references resolve, every rule is valid), `NotReady` (the `Ready` condition says what to
    /// fix) or `Suspended` (ready, but `spec.suspend` holds actions back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// `Ready`: references resolve and every rule is valid (the route receives); otherwise the reason says
    /// what to fix. `Suspended`: whether `spec.suspend` holds actions back. With `appStoreConnect`:
    /// `WebhookRegistered` (the App Store Connect webhook matches the route) and `WebhookVerified` (a ping
    /// sent after the last change arrived).
    // A map keyed by type, so the route controller and the App Store Connect reconciler each own their own
    // conditions under server-side apply.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Counts of deliveries by outcome.
    #[serde(default)]
    pub deliveries: DeliveryCounts,
    /// The most recently received delivery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_delivery: Option<LastDelivery>,
    /// Deliveries deleted by history pruning, by outcome; already included in `deliveries`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pruned: Option<DeliveryCounts>,
    /// When App Store Connect last sent a test ping (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_ping_time: Option<String>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The App Store Connect webhook registered for this route (with `spec.appStoreConnect`).
    // Boxed: most routes have none, and the leader caches every route's status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_store_connect: Option<Box<AppStoreConnectStatus>>,
    /// Events whose deliveries history pruning deleted, newest last, at most 1,000: the 16 hex digits
    /// that end the delivery's name (a hash of route and event id). The same event brought back by
    /// catch-up or sent again by App Store Connect runs nothing again (its delivery ends `Duplicate`).
    #[serde(default, skip_serializing_if = "SeenEvents::is_empty")]
    pub seen_events: SeenEvents,
    /// How long Apple took with the build uploads and app versions the route's events are about: the
    /// last 10, each with the time spent in every state it left (from Apple's `timestamp` where the
    /// event has one), and the runner time the route's actions saved. `kubectl get -o wide` shows the
    /// most recently changed one, its state and since when.
    #[serde(default, skip_serializing_if = "ReleaseTiming::is_empty")]
    pub release_timing: ReleaseTiming,
}

/// Deliveries by outcome since the route was created (pruned deliveries stay counted).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryCounts {
    /// Events accepted.
    #[serde(default)]
    pub received: i64,
    /// Deliveries whose actions all succeeded.
    #[serde(default)]
    pub succeeded: i64,
    /// Deliveries with a failed action.
    #[serde(default)]
    pub failed: i64,
    /// Deliveries no rule matched.
    #[serde(default)]
    pub no_match: i64,
    /// Deliveries still pending or running.
    #[serde(default)]
    pub in_progress: i64,
    /// Deliveries of an event already run and pruned, which ran nothing again.
    #[serde(default)]
    pub duplicate: i64,
}

/// A summary of one delivery, for `kubectl get`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastDelivery {
    /// Name of the `WebhookDelivery`.
    pub name: String,
    /// The event type.
    pub event_type: String,
    /// The event's new state, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_state: Option<String>,
    /// The delivery's phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// When the receiver accepted it (RFC 3339).
    pub received_at: String,
}

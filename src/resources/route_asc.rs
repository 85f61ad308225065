//! `spec.appStoreConnect` / `status.appStoreConnect` of a `WebhookRoute`: the webhook the operator registers
//! and keeps in App Store Connect for the route.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Condition the App Store Connect webhook reconciler writes: the webhook exists in App Store Connect and
/// matches the route.
pub const WEBHOOK_REGISTERED: &str = "WebhookRegistered";
/// Condition the App Store Connect webhook reconciler writes: a ping sent after the last change reached
/// the receiver.
pub const WEBHOOK_VERIFIED: &str = "WebhookVerified";

/// The App Store Connect webhook the operator creates and maintains for this route.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppStoreConnectWebhook {
    /// The app's Apple ID (App Store Connect → App Information → Apple ID), e.g. `"1234567890"`.
    #[schemars(length(min = 1, max = 32), regex(pattern = r"^[0-9]+$"))]
    pub app_id: String,
    /// Name of the webhook in App Store Connect. Empty: `<namespace>/<route>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub name: Option<String>,
    /// Event types to subscribe to, as subscription names (`BUILD_UPLOAD_STATE_UPDATED`) or as in the
    /// payload (`buildUploadStateUpdated`). Empty: derived from the rules — the union of their
    /// `match.eventTypes`, and every type when a rule has none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub event_types: Vec<String>,
    /// Whether App Store Connect sends events to the webhook. Defaults to true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Create the `secretRef` Secret with 32 random bytes (hex) when it does not exist. The Secret is owned
    /// by the route; an existing Secret is never overwritten.
    #[serde(default)]
    pub generate_secret: bool,
    /// What happens to the App Store Connect webhook when the route is deleted: `Delete` (default) or
    /// `Retain`.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// Recovering events whose delivery failed (receiver down, Ingress or TLS broken) from App Store
    /// Connect's delivery log. On by default, every 10 minutes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catch_up: Option<CatchUp>,
}

/// How missed events are recovered from App Store Connect's delivery log.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CatchUp {
    /// Minutes between passes over the delivery log (also one at operator start). Defaults to 10; 0 turns
    /// catch-up off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1440))]
    pub interval_minutes: Option<i32>,
    /// `Record` (default): record each missed event as the receiver would, from the payload Apple's API
    /// returns. `Redeliver`: ask App Store Connect to send it again, signed.
    #[serde(default)]
    pub mode: CatchUpMode,
}

/// What catch-up does with a missed event.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum CatchUpMode {
    /// Record it directly (`spec.source: CatchUp`).
    #[default]
    Record,
    /// Have App Store Connect deliver it again through the signed path.
    Redeliver,
}

impl AppStoreConnectWebhook {
    /// Minutes between catch-up passes; `None` when catch-up is off.
    pub fn catch_up_interval_minutes(&self) -> Option<u64> {
        let m = self
            .catch_up
            .as_ref()
            .and_then(|c| c.interval_minutes)
            .unwrap_or(10);
        u64::try_from(m).ok().filter(|m| *m > 0)
    }
}

impl AppStoreConnectWebhook {
    /// `enabled`, defaulted.
    pub fn enabled(&self) -> bool {
        self.enabled.unwrap_or(true)
    }
}

/// What happens to the App Store Connect webhook when its route is deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DeletionPolicy {
    /// Delete the webhook in App Store Connect.
    #[default]
    Delete,
    /// Leave it; App Store Connect keeps sending to the (then unknown) route URL.
    Retain,
}

/// What the operator last registered in App Store Connect. Never the secret nor anything derived from it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppStoreConnectStatus {
    /// The webhook's id in App Store Connect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_id: Option<String>,
    /// The app the webhook belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
    /// When App Store Connect last confirmed the webhook matches the route (read or written; RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<String>,
    /// The `resourceVersion` of the Secret whose value was last sent to App Store Connect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_secret_version: Option<String>,
    /// The webhook's attributes as last registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registered: Option<RegisteredWebhook>,
    /// When the last test ping was requested (after a create or change; RFC 3339). A ping received
    /// after this verifies the webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ping_requested_time: Option<String>,
    /// How many times the test ping of `pingRequestedTime` was requested again because none had reached
    /// the receiver (at most `--webhook-ping-resends`, all before `--webhook-verify-timeout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ping_resends: Option<i32>,
    /// When the test ping was last requested again (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ping_resent_time: Option<String>,
    /// Progress of recovering missed events from the delivery log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catch_up: Option<CatchUpStatus>,
}

/// Where catch-up stands.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CatchUpStatus {
    /// When the last pass finished (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_check_time: Option<String>,
    /// Every delivery-log entry created before this time has been read; the next pass reads from here.
    /// It moves a whole `createdDate` window at a time, and after a complete pass to the pass start less
    /// two minutes (clock skew), so a restart or leader change neither re-reads the whole log nor skips
    /// an entry, whatever order App Store Connect lists it in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<String>,
    /// Set when a pass wanted to read from further back than App Store Connect keeps its delivery log
    /// (about ten days): the time it wanted (the checkpoint, or the lookback on a first pass). Events
    /// created between this and `clampedTo` could not be recovered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clamped_from: Option<String>,
    /// Where that pass read from instead (nine days before it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clamped_to: Option<String>,
    /// Events recovered by catch-up since the webhook was registered.
    #[serde(default)]
    pub recovered: i64,
}

/// The readable attributes of an App Store Connect webhook (the secret is write-only).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegisteredWebhook {
    /// Name shown in App Store Connect.
    pub name: String,
    /// Where App Store Connect sends events.
    pub url: String,
    /// Subscribed event types (subscription names, sorted).
    #[serde(default)]
    pub event_types: Vec<String>,
    /// Whether delivery is on.
    pub enabled: bool,
}

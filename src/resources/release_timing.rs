//! `status.releaseTiming` of a `WebhookRoute`: how long Apple took with the route's recent build uploads
//! and app versions, folded from the state changes its events reported.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Builds and versions kept in `status.releaseTiming.items`; the least recently changed go first.
pub const ITEM_LIMIT: usize = 10;
/// States kept per item; the oldest go first (a version rejected and resubmitted many times).
pub const STATE_LIMIT: usize = 16;

/// How long Apple took, from the state changes of the route's events.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseTiming {
    /// The last 10 build uploads and app versions the route heard of, the most recently changed first,
    /// with the time spent in each state they left.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub items: Vec<TimedItem>,
    /// Runner time the route's actions saved since the route was created, in seconds: for each action a
    /// build upload reaching `COMPLETE` started, the build's processing time (what a CI runner polling
    /// for the build would have waited).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub runner_seconds_saved: i64,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

impl ReleaseTiming {
    /// Whether nothing was timed yet (the field is then left out of the status).
    pub fn is_empty(&self) -> bool {
        self.items.is_empty() && self.runner_seconds_saved == 0
    }
}

/// What an item is.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub enum ItemKind {
    /// A build upload (`buildUploadStateUpdated`, instance type `buildUploads`).
    Build,
    /// An app version (`appStoreVersionAppVersionStateUpdated`, instance type `appStoreVersions`).
    Version,
}

impl ItemKind {
    /// The metric label value.
    pub fn label(self) -> &'static str {
        match self {
            ItemKind::Build => "build",
            ItemKind::Version => "version",
        }
    }
}

/// Where the time of a state change comes from.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum TimeSource {
    /// The event's own `timestamp` (app version events carry one).
    Apple,
    /// The `createdDate` App Store Connect's delivery log gives the event (events recovered by
    /// catch-up that carry no `timestamp`).
    DeliveryLog,
    /// When the receiver accepted the event (build upload events carry no `timestamp`).
    Received,
}

/// One build upload or app version and its states.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TimedItem {
    /// `Build` or `Version`.
    pub kind: ItemKind,
    /// The App Store Connect id of the build upload or app version.
    pub id: String,
    /// What to call it: version and build number (e.g. `1.4.0 (42)`) once enrichment fetched them
    /// (for an event a rule matched), else its id.
    pub title: String,
    /// The state it is in now (the last one known).
    pub state: String,
    /// When it entered that state (RFC 3339).
    pub since: String,
    /// Builds: seconds from the first state seen (`AWAITING_UPLOAD` or `PROCESSING`) to `COMPLETE` or
    /// `FAILED`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processing_seconds: Option<i64>,
    /// Builds: actions the `COMPLETE` event started, once its delivery finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actions_started: Option<i32>,
    /// Builds: `processingSeconds` × `actionsStarted`, added to `runnerSecondsSaved` once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds_saved: Option<i64>,
    /// The states seen, oldest first, at most 16.
    #[schemars(length(max = 16))]
    pub states: Vec<StateSpan>,
}

/// One state an item was in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StateSpan {
    /// The state, as Apple names it (`PROCESSING`, `WAITING_FOR_REVIEW`, …).
    pub state: String,
    /// When the item entered it (RFC 3339).
    pub entered_at: String,
    /// Where `enteredAt` comes from: `Apple`, `DeliveryLog` or `Received`.
    pub time_source: TimeSource,
    /// The state the event said the item left (`oldState` or `oldValue`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Seconds spent in the state, once the next state is known and says it came from this one (an
    /// event missed in between leaves it unset until catch-up brings it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<i64>,
}

//! The App Store Connect webhook event model.
//!
//! Apple adds event types and states without notice, so parsing is deliberately lenient about *what* an
//! event says and strict only about what makes it an event at all (`data.id` and `data.type`). Unknown types
//! and states are kept as strings rather than refused: a refused delivery is a lost one, since Apple documents
//! no retry policy.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::fmt;

/// The attribute names Apple uses for "the state after/before the change", per event family.
const NEW_STATE_KEYS: &[&str] = &["newState", "newValue", "newExternalBuildState"];
const OLD_STATE_KEYS: &[&str] = &["oldState", "oldValue", "oldExternalBuildState"];

/// Why a body is not an App Store Connect event.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// Not JSON at all (or not UTF-8).
    #[error("body is not valid JSON: {0}")]
    Json(#[source] serde_json::Error),
    /// Not UTF-8. serde_json does not validate the strings it skips, so this is checked up front: an
    /// accepted body must be storable as text, byte for byte.
    #[error("body is not UTF-8 (byte {0})")]
    NotUtf8(usize),
    /// JSON, but without the `data` object every ASC event has.
    #[error("body has no `data` object")]
    NoData,
    /// `data.id` or `data.type` is missing, empty or not a string.
    #[error("`data.{0}` is missing or not a non-empty string")]
    MissingField(&'static str),
}

/// An event type: the known ones by name, anything else kept verbatim.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EventType {
    /// `webhookPingCreated`: the test notification sent from App Store Connect.
    WebhookPing,
    /// `buildUploadStateUpdated`.
    BuildUploadStateUpdated,
    /// `appStoreVersionAppVersionStateUpdated`.
    AppStoreVersionStateUpdated,
    /// `buildBetaDetailExternalBuildStateUpdated`.
    BuildBetaDetailExternalBuildStateUpdated,
    /// `betaFeedbackCrashSubmissionCreated`.
    BetaFeedbackCrashSubmissionCreated,
    /// `betaFeedbackScreenshotSubmissionCreated`.
    BetaFeedbackScreenshotSubmissionCreated,
    /// Any other type (background assets, alternative distribution, future ones), as Apple spelled it.
    Other(String),
}

impl EventType {
    /// Parses Apple's `data.type` (camelCase) or its subscription name (SCREAMING_SNAKE).
    pub fn parse(s: &str) -> Self {
        const KNOWN: &[(&str, EventType)] = &[
            ("webhookPingCreated", EventType::WebhookPing),
            (
                "buildUploadStateUpdated",
                EventType::BuildUploadStateUpdated,
            ),
            (
                "appStoreVersionAppVersionStateUpdated",
                EventType::AppStoreVersionStateUpdated,
            ),
            (
                "buildBetaDetailExternalBuildStateUpdated",
                EventType::BuildBetaDetailExternalBuildStateUpdated,
            ),
            (
                "betaFeedbackCrashSubmissionCreated",
                EventType::BetaFeedbackCrashSubmissionCreated,
            ),
            (
                "betaFeedbackScreenshotSubmissionCreated",
                EventType::BetaFeedbackScreenshotSubmissionCreated,
            ),
        ];
        KNOWN
            .iter()
            .find(|(name, _)| same_type_name(name, s))
            .map(|(_, t)| t.clone())
            .unwrap_or_else(|| EventType::Other(s.to_owned()))
    }

    /// The camelCase name Apple puts in `data.type`.
    pub fn as_str(&self) -> &str {
        match self {
            EventType::WebhookPing => "webhookPingCreated",
            EventType::BuildUploadStateUpdated => "buildUploadStateUpdated",
            EventType::AppStoreVersionStateUpdated => "appStoreVersionAppVersionStateUpdated",
            EventType::BuildBetaDetailExternalBuildStateUpdated => {
                "buildBetaDetailExternalBuildStateUpdated"
            }
            EventType::BetaFeedbackCrashSubmissionCreated => "betaFeedbackCrashSubmissionCreated",
            EventType::BetaFeedbackScreenshotSubmissionCreated => {
                "betaFeedbackScreenshotSubmissionCreated"
            }
            EventType::Other(s) => s,
        }
    }

    /// Whether a filter entry written by a user (`buildUploadStateUpdated` or `BUILD_UPLOAD_STATE_UPDATED`)
    /// names this type.
    pub fn matches(&self, filter: &str) -> bool {
        same_type_name(self.as_str(), filter)
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// camelCase and SCREAMING_SNAKE spellings of one name compare equal once underscores and case are ignored.
fn same_type_name(a: &str, b: &str) -> bool {
    let mut a = a.bytes().filter(|c| *c != b'_');
    let mut b = b.bytes().filter(|c| *c != b'_');
    loop {
        match (a.next(), b.next()) {
            (None, None) => return true,
            (Some(x), Some(y)) if x.eq_ignore_ascii_case(&y) => {}
            _ => return false,
        }
    }
}

/// The App Store Connect object an event is about (`data.relationships.instance`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceRef {
    /// JSON:API type, e.g. `buildUploads`.
    pub kind: String,
    /// The object's id.
    pub id: String,
    /// `links.self`: where the API serves the object. Only ever followed after an origin check.
    pub url: Option<String>,
}

/// One parsed webhook notification, with the bytes it was parsed from.
#[derive(Debug, Clone)]
pub struct WebhookEvent {
    /// `data.id`: the same event delivered twice carries the same id.
    pub id: String,
    /// `data.type`.
    pub event_type: EventType,
    /// `data.version`, the payload schema version.
    pub version: Option<i64>,
    /// The state before the change, whichever attribute this event family uses for it.
    pub old_state: Option<String>,
    /// The state after the change (`newState`, `newValue` or `newExternalBuildState`).
    pub new_state: Option<String>,
    /// `attributes.timestamp`, when Apple sent one.
    pub timestamp: Option<String>,
    /// The related object, absent for pings.
    pub instance: Option<InstanceRef>,
    /// `data.attributes` as sent.
    pub attributes: Map<String, Value>,
    raw: Bytes,
}

#[derive(Deserialize)]
struct Envelope {
    data: Option<Data>,
}

#[derive(Deserialize)]
struct Data {
    id: Option<Value>,
    #[serde(rename = "type")]
    kind: Option<Value>,
    version: Option<Value>,
    #[serde(default)]
    attributes: Option<Map<String, Value>>,
    #[serde(default)]
    relationships: Option<Map<String, Value>>,
}

impl WebhookEvent {
    /// Parses a body that has already passed signature verification. The bytes are kept untouched.
    pub fn parse(raw: Bytes) -> Result<Self, EventError> {
        std::str::from_utf8(&raw).map_err(|e| EventError::NotUtf8(e.valid_up_to()))?;
        let envelope: Envelope = serde_json::from_slice(&raw).map_err(EventError::Json)?;
        let data = envelope.data.ok_or(EventError::NoData)?;
        let id = non_empty_string(data.id).ok_or(EventError::MissingField("id"))?;
        let kind = non_empty_string(data.kind).ok_or(EventError::MissingField("type"))?;
        let attributes = data.attributes.unwrap_or_default();
        let instance = data
            .relationships
            .as_ref()
            .and_then(|r| r.get("instance"))
            .and_then(instance_ref);
        Ok(WebhookEvent {
            id,
            event_type: EventType::parse(&kind),
            version: data.version.as_ref().and_then(Value::as_i64),
            old_state: state(&attributes, OLD_STATE_KEYS, "old"),
            new_state: state(&attributes, NEW_STATE_KEYS, "new"),
            timestamp: attributes
                .get("timestamp")
                .and_then(Value::as_str)
                .map(str::to_owned),
            instance,
            attributes,
            raw,
        })
    }

    /// The body exactly as received: what the signature covered.
    pub fn raw(&self) -> &Bytes {
        &self.raw
    }

    /// The body as text ([`parse`](Self::parse) refused anything that is not UTF-8).
    pub fn raw_str(&self) -> &str {
        std::str::from_utf8(&self.raw).unwrap_or_default()
    }
}

fn non_empty_string(v: Option<Value>) -> Option<String> {
    match v {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s),
        _ => None,
    }
}

/// Finds the state attribute: the known names first, then any `new…State`/`old…Value`-shaped attribute so
/// that future families (background assets, …) still get a state without a code change.
fn state(attributes: &Map<String, Value>, known: &[&str], prefix: &str) -> Option<String> {
    let as_state = |v: &Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_owned);
    known
        .iter()
        .find_map(|k| attributes.get(*k).and_then(as_state))
        .or_else(|| {
            attributes
                .iter()
                .filter(|(k, _)| {
                    k.starts_with(prefix)
                        && k[prefix.len()..].starts_with(|c: char| c.is_ascii_uppercase())
                        && (k.ends_with("State") || k.ends_with("Value"))
                })
                .find_map(|(_, v)| as_state(v))
        })
}

fn instance_ref(instance: &Value) -> Option<InstanceRef> {
    let data = instance.get("data")?;
    Some(InstanceRef {
        kind: data.get("type")?.as_str()?.to_owned(),
        id: data.get("id")?.as_str()?.to_owned(),
        url: instance
            .pointer("/links/self")
            .and_then(Value::as_str)
            .map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVENTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/asc/events");

    fn fixture(name: &str) -> WebhookEvent {
        let raw = std::fs::read(format!("{EVENTS}/{name}.json")).unwrap();
        WebhookEvent::parse(Bytes::from(raw)).unwrap()
    }

    #[test]
    fn every_fixture_parses_with_id_type_and_untouched_bytes() {
        let mut seen = 0;
        for entry in std::fs::read_dir(EVENTS).unwrap() {
            let path = entry.unwrap().path();
            let raw = std::fs::read(&path).unwrap();
            let event = WebhookEvent::parse(Bytes::from(raw.clone())).unwrap();
            assert!(!event.id.is_empty(), "{path:?}");
            assert_eq!(event.raw().as_ref(), raw.as_slice(), "{path:?}");
            assert!(!matches!(event.event_type, EventType::Other(_)), "{path:?}");
            if event.event_type != EventType::WebhookPing {
                assert!(event.new_state.is_some(), "{path:?} has no new state");
                assert!(event.instance.is_some(), "{path:?} has no instance");
            }
            seen += 1;
        }
        assert_eq!(seen, 10);
    }

    #[test]
    fn build_upload_states_come_from_old_and_new_state() {
        let e = fixture("build-upload-failed");
        assert_eq!(e.event_type, EventType::BuildUploadStateUpdated);
        assert_eq!(e.old_state.as_deref(), Some("PROCESSING"));
        assert_eq!(e.new_state.as_deref(), Some("FAILED"));
        let instance = e.instance.unwrap();
        assert_eq!(instance.kind, "buildUploads");
        assert_eq!(instance.id, "9d0e4b12-5c3a-4f8e-b7a6-2e1f0c9d8a55");
        assert_eq!(
            instance.url.as_deref(),
            Some(
                "https://api.appstoreconnect.apple.com/v1/buildUploads/9d0e4b12-5c3a-4f8e-b7a6-2e1f0c9d8a55"
            )
        );
    }

    #[test]
    fn version_states_come_from_old_and_new_value() {
        let e = fixture("app-version-developer-rejected");
        assert_eq!(e.event_type, EventType::AppStoreVersionStateUpdated);
        assert_eq!(e.old_state.as_deref(), Some("WAITING_FOR_REVIEW"));
        assert_eq!(e.new_state.as_deref(), Some("DEVELOPER_REJECTED"));
        assert_eq!(e.timestamp.as_deref(), Some("2025-12-18T03:50:30.552Z"));
        assert_eq!(e.version, Some(1));
    }

    #[test]
    fn ping_has_no_state_and_no_instance() {
        let e = fixture("webhook-ping");
        assert_eq!(e.event_type, EventType::WebhookPing);
        assert_eq!(e.new_state, None);
        assert_eq!(e.instance, None);
        assert_eq!(e.id, "65726e27-cb79-47f2-a3e4-c8ced9f356e8");
    }

    #[test]
    fn testflight_external_state_is_the_new_state() {
        let body = br#"{"data":{"type":"buildBetaDetailExternalBuildStateUpdated","id":"e1","attributes":{"oldExternalBuildState":"IN_BETA_REVIEW","newExternalBuildState":"BETA_APPROVED"},"relationships":{"instance":{"data":{"type":"buildBetaDetails","id":"b1"}}}}}"#;
        let e = WebhookEvent::parse(Bytes::from_static(body)).unwrap();
        assert_eq!(
            e.event_type,
            EventType::BuildBetaDetailExternalBuildStateUpdated
        );
        assert_eq!(e.old_state.as_deref(), Some("IN_BETA_REVIEW"));
        assert_eq!(e.new_state.as_deref(), Some("BETA_APPROVED"));
        assert_eq!(e.instance.unwrap().url, None);
    }

    #[test]
    fn unknown_type_and_state_are_kept_not_refused() {
        let body = br#"{"data":{"type":"backgroundAssetVersionStateUpdated","id":"x","attributes":{"oldAssetState":"A","newAssetState":"SOMETHING_NEW"}}}"#;
        let e = WebhookEvent::parse(Bytes::from_static(body)).unwrap();
        assert_eq!(
            e.event_type,
            EventType::Other("backgroundAssetVersionStateUpdated".into())
        );
        assert_eq!(e.new_state.as_deref(), Some("SOMETHING_NEW"));
        assert_eq!(e.old_state.as_deref(), Some("A"));
    }

    #[test]
    fn feedback_events_are_recognised_in_both_spellings() {
        assert_eq!(
            EventType::parse("BETA_FEEDBACK_CRASH_SUBMISSION_CREATED"),
            EventType::BetaFeedbackCrashSubmissionCreated
        );
        assert!(EventType::BuildUploadStateUpdated.matches("BUILD_UPLOAD_STATE_UPDATED"));
        assert!(EventType::BuildUploadStateUpdated.matches("buildUploadStateUpdated"));
        assert!(!EventType::BuildUploadStateUpdated.matches("BUILD_UPLOAD_STATE"));
        assert!(EventType::Other("fooBar".into()).matches("FOO_BAR"));
    }

    #[test]
    fn bodies_that_are_not_events_say_why() {
        let err = |b: &'static [u8]| {
            WebhookEvent::parse(Bytes::from_static(b))
                .unwrap_err()
                .to_string()
        };
        assert!(err(b"not json").contains("not valid JSON"));
        assert!(err(b"{}").contains("no `data`"));
        assert!(err(br#"{"data":{"type":"x"}}"#).contains("data.id"));
        assert!(err(br#"{"data":{"id":"x","type":""}}"#).contains("data.type"));
        assert!(err(br#"{"data":{"id":7,"type":"x"}}"#).contains("data.id"));
        assert!(err(b"[1,2]").contains("not valid JSON"));
        assert!(
            err(b"{\"data\":{\"id\":\"x\",\"type\":\"y\",\"skipped\":\"\xff\"}}")
                .contains("not UTF-8")
        );
    }
}

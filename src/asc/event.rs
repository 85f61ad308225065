//! The App Store Connect webhook event model.
//!
//! Apple adds event types and states without notice, so parsing is deliberately lenient about *what* an
//! event says and strict only about what makes it an event at all (`data.id` and `data.type`). Unknown types
//! and states are kept as strings rather than refused: a refused delivery is a lost one, since Apple documents
//! no retry policy.

mod wire;

use bytes::Bytes;
use std::borrow::Cow;
use std::fmt;

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
    raw: Bytes,
}

impl WebhookEvent {
    /// Parses a body that has already passed signature verification. The bytes are kept untouched.
    ///
    /// The body is read once into structures that borrow from it ([`wire`]): only the handful of
    /// fields the operator uses are decoded, every other attribute is skipped without allocating.
    pub fn parse(raw: Bytes) -> Result<Self, EventError> {
        std::str::from_utf8(&raw).map_err(|e| EventError::NotUtf8(e.valid_up_to()))?;
        let event = Self::fields(&raw)?;
        Ok(WebhookEvent { raw, ..event })
    }

    /// The fields of `raw`, decoded from borrowed structures; `raw` itself is left for the caller.
    fn fields(raw: &[u8]) -> Result<Self, EventError> {
        let envelope: wire::Envelope<'_> = serde_json::from_slice(raw).map_err(EventError::Json)?;
        let data = envelope.data.ok_or(EventError::NoData)?;
        let id = non_empty(data.id).ok_or(EventError::MissingField("id"))?;
        let kind = non_empty(data.kind).ok_or(EventError::MissingField("type"))?;
        let attributes = data.attributes.unwrap_or_default();
        let instance = data
            .relationships
            .as_ref()
            .and_then(|r| r.get("instance"))
            .and_then(instance_ref);
        Ok(WebhookEvent {
            id: id.into_owned(),
            event_type: EventType::parse(&kind),
            version: data.version.as_ref().and_then(wire::Loose::as_i64),
            old_state: attributes.old_state.map(Cow::into_owned),
            // Alternative-distribution events carry no state but whether the package is available:
            // that is what a rule wants to match.
            new_state: attributes.new_state.map(Cow::into_owned).or_else(|| {
                attributes
                    .available
                    .map(|a| if a { "AVAILABLE" } else { "UNAVAILABLE" }.to_owned())
            }),
            timestamp: attributes.timestamp.map(Cow::into_owned),
            instance,
            raw: Bytes::new(),
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

fn non_empty(v: Option<wire::Loose<'_>>) -> Option<Cow<'_, str>> {
    match v {
        Some(wire::Loose::Str(s)) if !s.trim().is_empty() => Some(s),
        _ => None,
    }
}

/// `relationships.instance`: `{data: {type, id}, links}` for most events, `{type, id, links}` without the
/// `data` wrapper for background-asset events.
fn instance_ref(instance: &wire::Loose<'_>) -> Option<InstanceRef> {
    let data = instance.get("data").unwrap_or(instance);
    Some(InstanceRef {
        kind: data.get("type")?.as_str()?.to_owned(),
        id: data.get("id")?.as_str()?.to_owned(),
        url: instance
            .get("links")
            .and_then(|l| l.get("self"))
            .and_then(wire::Loose::as_str)
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
    fn states_read_as_serde_json_would_repeated_names_escapes_and_odd_types() {
        let body = br#"{"data":{"type":"t","id":"i\u0031","version":"2","attributes":{"newState":"A","newState":"B","oldZState":"Z","oldAState":"Y","oldValue":7,"timestamp":"t\"1","skip":{"deep":["\u00e9"]}},"relationships":{"instance":"not an object"}}}"#;
        let e = WebhookEvent::parse(Bytes::from_static(body)).unwrap();
        assert_eq!(e.id, "i1", "escapes are decoded");
        assert_eq!(
            e.new_state.as_deref(),
            Some("B"),
            "the last of a repeated name"
        );
        // No known old-state name holds a string, so the state-shaped name that sorts first wins.
        assert_eq!(e.old_state.as_deref(), Some("Y"));
        assert_eq!(e.timestamp.as_deref(), Some("t\"1"));
        assert_eq!(e.version, None, "a string version is no version");
        assert_eq!(e.instance, None, "an odd instance is absent, not a refusal");
        let known_first = br#"{"data":{"type":"t","id":"i","attributes":{"newAState":"shaped","newValue":"known"}}}"#;
        let e = WebhookEvent::parse(Bytes::from_static(known_first)).unwrap();
        assert_eq!(e.new_state.as_deref(), Some("known"));
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

    /// The payloads of Apple's "Understanding webhook events" page, restated with our own ids: each of
    /// the twelve event types and the ping parses, with the instance (flat or under `data`) and the state
    /// a rule can match.
    #[test]
    fn every_documented_event_shape_parses_with_its_instance_and_state() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/asc/documented");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_stem().unwrap().to_str().unwrap().to_owned();
            let e = WebhookEvent::parse(Bytes::from(std::fs::read(&path).unwrap())).unwrap();
            seen += 1;
            let kind = e
                .raw_str()
                .split("\"type\" : \"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap();
            assert!(same_type_name(kind, &name), "{name}: {kind}");
            let has_instance = !matches!(
                name.as_str(),
                "WEBHOOK_PING_CREATED" | "ALTERNATIVE_DISTRIBUTION_TERRITORY_AVAILABILITY_UPDATED"
            );
            assert_eq!(
                e.instance.is_some(),
                has_instance,
                "{name}: {:?}",
                e.instance
            );
            if let Some(i) = &e.instance {
                assert!(!i.kind.is_empty() && !i.id.is_empty(), "{name}: {i:?}");
            }
            if name.ends_with("_STATE_UPDATED") || name.ends_with("AVAILABLE_UPDATED") {
                assert!(e.new_state.is_some(), "{name} has no state to match");
            }
        }
        assert_eq!(seen, 13, "twelve event types and the ping");
        let e = WebhookEvent::parse(Bytes::from(
            std::fs::read(format!("{dir}/BACKGROUND_ASSET_VERSION_STATE_UPDATED.json")).unwrap(),
        ))
        .unwrap();
        let i = e.instance.unwrap();
        assert_eq!(i.kind, "backgroundAssetVersions", "no `data` wrapper");
        assert!(i.url.unwrap().ends_with(&i.id));
        let available = |name: &str| {
            let raw = std::fs::read(format!("{dir}/{name}.json")).unwrap();
            WebhookEvent::parse(Bytes::from(raw)).unwrap().new_state
        };
        assert_eq!(
            available("ALTERNATIVE_DISTRIBUTION_PACKAGE_AVAILABLE_UPDATED").as_deref(),
            Some("AVAILABLE")
        );
        assert_eq!(
            available("ALTERNATIVE_DISTRIBUTION_TERRITORY_AVAILABILITY_UPDATED").as_deref(),
            Some("UNAVAILABLE")
        );
    }
}

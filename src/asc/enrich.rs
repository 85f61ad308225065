//! A small typed summary of the object an event points at (`GET links.self`), for delivery status and for
//! the `ASC_VERSION`/`ASC_BUILD_NUMBER`/`ASC_PLATFORM`/`ASC_ERRORS` variables.
//!
//! Attribute names differ per resource type (`versionString` on app store versions,
//! `cfBundleShortVersionString` on build uploads, ...). Extraction goes by attribute name rather than by a
//! closed list of types, so resource types Apple adds later still yield whatever fields they share.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// At most this many issues are kept, so a build with hundreds of warnings cannot bloat a status object.
pub const MAX_ISSUES: usize = 10;
/// Issue descriptions are cut to this many characters for the same reason.
pub const MAX_DESCRIPTION_CHARS: usize = 1000;

/// Why a fetched body could not be summarised.
#[derive(Debug, thiserror::Error)]
pub enum EnrichError {
    /// The body has no single-resource `data` object (e.g. it is a list, or an error document).
    #[error("ASC API response has no `data` object describing a single resource")]
    NotADocument,
    /// `data` lacks a required member.
    #[error("ASC API response has no string `{field}`")]
    MissingField {
        /// The JSON path of the missing member.
        field: &'static str,
    },
}

/// One error Apple reported on the object, e.g. code `90683` with its explanation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AscIssue {
    /// Apple's code, as given (`"90683"`, or a symbolic code).
    pub code: String,
    /// Apple's explanation, possibly shortened to [`MAX_DESCRIPTION_CHARS`].
    pub description: String,
}

impl AscIssue {
    /// `ITMS-90683: Missing purpose string…`: all-digit codes get the `ITMS-` prefix Apple's e-mails use.
    pub fn render(&self) -> String {
        let code = if !self.code.is_empty() && self.code.bytes().all(|b| b.is_ascii_digit()) {
            format!("ITMS-{}", self.code)
        } else {
            self.code.clone()
        };
        match (code.is_empty(), self.description.is_empty()) {
            (true, _) => self.description.clone(),
            (false, true) => code,
            (false, false) => format!("{code}: {}", self.description),
        }
    }
}

/// What the operator knows about an event's object after fetching it.
///
/// Serialised (camelCase) into a delivery's status; [`Enrichment::instance`] is not, it is only handed to
/// actions as `ASC_INSTANCE`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Enrichment {
    /// `data.type`, e.g. `buildUploads`.
    pub instance_type: String,
    /// `data.id`.
    pub instance_id: String,
    /// Marketing version, e.g. `1.101.0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Build number (`CFBundleVersion`), e.g. `3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_number: Option<String>,
    /// Platform, e.g. `IOS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// The object's current state as Apple reports it (may be newer than the event's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Bundle id (`buildBundleId` of beta feedback, `bundleId` of apps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle_id: Option<String>,
    /// Errors Apple attached to the object, at most [`MAX_ISSUES`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<AscIssue>,
    /// Warnings Apple attached (build uploads' `state.warnings`), at most [`MAX_ISSUES`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<AscIssue>,
    /// Notes Apple attached (build uploads' `state.infos`), at most [`MAX_ISSUES`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub infos: Vec<AscIssue>,
    /// How many further errors were dropped to respect [`MAX_ISSUES`].
    #[serde(default, skip_serializing_if = "is_zero")]
    pub omitted_errors: usize,
    /// The whole `data` object as fetched.
    #[serde(skip)]
    #[schemars(skip)]
    pub instance: Value,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Enrichment {
    /// Summarises a JSON:API single-resource document (`{"data": {"type", "id", "attributes"}}`).
    pub fn from_document(document: &Value) -> Result<Enrichment, EnrichError> {
        let data = document
            .get("data")
            .and_then(Value::as_object)
            .ok_or(EnrichError::NotADocument)?;
        let member = |name: &str, field| {
            data.get(name)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or(EnrichError::MissingField { field })
        };
        let instance_type = member("type", "data.type")?;
        let instance_id = member("id", "data.id")?;
        let empty = Map::new();
        let attributes = data
            .get("attributes")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        let text = |name: &str| scalar_text(attributes.get(name));

        // On `builds`, `version` is the build number; background-asset versions call their own version
        // `version`; the marketing version of a build lives on preReleaseVersions.
        let is_build = instance_type == "builds";
        let version = text("versionString")
            .or_else(|| text("cfBundleShortVersionString"))
            .or_else(|| (!is_build).then(|| text("version")).flatten());
        let build_number =
            text("cfBundleVersion").or_else(|| is_build.then(|| text("version")).flatten());
        let state_object = attributes.get("state").and_then(Value::as_object);
        let state = state_object
            .and_then(|s| scalar_text(s.get("state")))
            .or_else(|| text("state"))
            .or_else(|| text("appVersionState"))
            .or_else(|| text("appStoreState"))
            .or_else(|| text("externalBuildState"))
            .or_else(|| text("processingState"));
        // Build uploads report issues under `state`, background-asset versions under `stateDetails`.
        let details =
            state_object.or_else(|| attributes.get("stateDetails").and_then(Value::as_object));
        let (errors, omitted_errors) = issues(details, "errors");
        Ok(Enrichment {
            instance_type,
            instance_id,
            version,
            build_number,
            platform: platform(attributes),
            bundle_id: text("buildBundleId").or_else(|| text("bundleId")),
            state,
            omitted_errors,
            errors,
            warnings: issues(details, "warnings").0,
            infos: issues(details, "infos").0,
            instance: Value::Object(data.clone()),
        })
    }

    /// One rendered line per error (see [`AscIssue::render`]), for Slack messages and `ASC_ERRORS`.
    /// Empty when Apple reported no errors.
    pub fn errors_text(&self) -> String {
        let mut lines: Vec<String> = self.errors.iter().map(AscIssue::render).collect();
        if self.omitted_errors > 0 {
            lines.push(format!("(and {} more)", self.omitted_errors));
        }
        lines.join("\n")
    }
}

/// `platform`, the first of `platforms[]` (background-asset versions), or the `appPlatform` /
/// `devicePlatform` of beta feedback.
fn platform(attributes: &Map<String, Value>) -> Option<String> {
    let first = attributes
        .get("platforms")
        .and_then(Value::as_array)
        .and_then(|p| scalar_text(p.first()));
    scalar_text(attributes.get("platform"))
        .or(first)
        .or_else(|| scalar_text(attributes.get("appPlatform")))
        .or_else(|| scalar_text(attributes.get("devicePlatform")))
}

/// The issues listed under `key` of `details`, at most [`MAX_ISSUES`], and how many more there were.
fn issues(details: Option<&Map<String, Value>>, key: &str) -> (Vec<AscIssue>, usize) {
    let reported: Vec<&Value> = details
        .and_then(|s| s.get(key))
        .and_then(Value::as_array)
        .map(|list| list.iter().collect())
        .unwrap_or_default();
    let kept: Vec<AscIssue> = reported.iter().take(MAX_ISSUES).map(|e| issue(e)).collect();
    let omitted = reported.len() - kept.len();
    (kept, omitted)
}

/// A string attribute, or a number rendered as text (Apple is not consistent about build numbers).
fn scalar_text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn issue(error: &Value) -> AscIssue {
    let field = |names: &[&str]| {
        names
            .iter()
            .find_map(|name| scalar_text(error.get(*name)))
            .unwrap_or_default()
    };
    let description = field(&["description", "message", "detail"]);
    let description = match description.char_indices().nth(MAX_DESCRIPTION_CHARS) {
        Some((cut, _)) => format!("{}…", &description[..cut]),
        None => description,
    };
    AscIssue {
        code: field(&["code"]),
        description,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::asc::api::AscClient;
    use crate::asc::token::{ApiKey, TokenSource};
    use serde_json::json;
    use testkit::asc_mock::{AscMock, AscMockOptions};

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/asc");
    const FAILED_ID: &str = "9d0e4b12-5c3a-4f8e-b7a6-2e1f0c9d8a55";
    const COMPLETE_ID: &str = "3f1c2a9e-7b44-4d2e-9a51-0c8e2f6d1b77";
    const VERSION_ID: &str = "b8e5c7d1-2f6a-4e9b-8c3d-7a1f5e0b9c24";

    fn fixture(name: &str) -> Value {
        let path = format!("{FIXTURES}/{name}");
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
    }

    fn assert_failed_upload(e: &Enrichment) {
        assert_eq!(
            (e.instance_type.as_str(), e.instance_id.as_str()),
            ("buildUploads", FAILED_ID)
        );
        assert_eq!(e.version.as_deref(), Some("1.101.0"));
        assert_eq!(e.build_number.as_deref(), Some("3"));
        assert_eq!(e.state.as_deref(), Some("FAILED"));
        assert_eq!(e.errors.len(), 1);
        assert_eq!(e.errors[0].code, "90683");
        let text = e.errors_text();
        assert!(
            text.starts_with("ITMS-90683: Missing purpose string in Info.plist."),
            "{text}"
        );
        assert!(text.contains("NSMicrophoneUsageDescription"));
    }

    fn assert_complete_upload(e: &Enrichment) {
        assert_eq!(e.instance_id, COMPLETE_ID);
        assert_eq!(e.version.as_deref(), Some("1.101.0"));
        assert_eq!(e.build_number.as_deref(), Some("1"));
        assert_eq!(e.platform.as_deref(), Some("IOS"));
        assert_eq!(e.state.as_deref(), Some("COMPLETE"));
        assert!(e.errors.is_empty());
        assert_eq!(e.errors_text(), "");
    }

    fn assert_app_store_version(e: &Enrichment) {
        assert_eq!(
            (e.instance_type.as_str(), e.instance_id.as_str()),
            ("appStoreVersions", VERSION_ID)
        );
        assert_eq!(e.version.as_deref(), Some("1.101.0"));
        assert_eq!(e.platform.as_deref(), Some("IOS"));
        assert_eq!(e.state.as_deref(), Some("READY_FOR_DISTRIBUTION"));
        assert_eq!(e.build_number, None);
    }

    #[test]
    fn failed_build_upload_yields_itms_error_text() {
        let doc = fixture(&format!("api/buildUploads-{FAILED_ID}.json"));
        let enrichment = Enrichment::from_document(&doc).unwrap();
        assert_failed_upload(&enrichment);
        assert_eq!(enrichment.instance, doc["data"]);
    }

    #[test]
    fn completed_build_upload_yields_version_and_build() {
        assert_complete_upload(
            &Enrichment::from_document(&fixture(&format!("api/buildUploads-{COMPLETE_ID}.json")))
                .unwrap(),
        );
    }

    #[test]
    fn app_store_version_yields_version_string_platform_and_state() {
        assert_app_store_version(
            &Enrichment::from_document(&fixture(&format!(
                "api/appStoreVersions-{VERSION_ID}.json"
            )))
            .unwrap(),
        );
    }

    #[test]
    fn builds_and_beta_details_use_their_own_attribute_names() {
        let attributes = json!({"version": "42", "processingState": "VALID"});
        let build = json!({"data": {"type": "builds", "id": "b1", "attributes": attributes}});
        let build = Enrichment::from_document(&build).unwrap();
        assert_eq!(
            (build.build_number.as_deref(), build.version.as_deref()),
            (Some("42"), None)
        );
        assert_eq!(build.state.as_deref(), Some("VALID"));
        let attributes =
            json!({"externalBuildState": "BETA_APPROVED", "internalBuildState": "IN_BETA_TESTING"});
        let beta =
            json!({"data": {"type": "buildBetaDetails", "id": "d1", "attributes": attributes}});
        let beta = Enrichment::from_document(&beta).unwrap();
        assert_eq!(beta.state.as_deref(), Some("BETA_APPROVED"));
        let unknown = json!({"data": {"type": "somethingNew", "id": "n1"}});
        let unknown = Enrichment::from_document(&unknown).unwrap();
        assert_eq!((unknown.version, unknown.state), (None, None));
    }

    #[test]
    fn symbolic_codes_are_not_prefixed_and_long_lists_are_bounded() {
        let errors: Vec<Value> = (0..MAX_ISSUES + 3)
            .map(|i| {
                let code = if i == 0 {
                    "STATE_ERROR".to_owned()
                } else {
                    (90000 + i).to_string()
                };
                json!({"code": code, "description": "x".repeat(MAX_DESCRIPTION_CHARS + 50)})
            })
            .collect();
        let attributes = json!({"state": {"state": "FAILED", "errors": errors}});
        let doc = json!({"data": {"type": "buildUploads", "id": "u", "attributes": attributes}});
        let e = Enrichment::from_document(&doc).unwrap();
        assert_eq!((e.errors.len(), e.omitted_errors), (MAX_ISSUES, 3));
        assert_eq!(
            e.errors[0].description.chars().count(),
            MAX_DESCRIPTION_CHARS + 1
        );
        let text = e.errors_text();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("STATE_ERROR: xxx"));
        assert!(lines[1].starts_with("ITMS-90001: "));
        assert_eq!(lines.last(), Some(&"(and 3 more)"));
    }

    #[test]
    fn bodies_without_a_single_resource_are_refused() {
        for (body, expected) in [
            (json!({"errors": [{"status": "404"}]}), "no `data`"),
            (json!({"data": [{"type": "apps", "id": "1"}]}), "no `data`"),
            (json!({"data": {"id": "1"}}), "data.type"),
            (json!({"data": {"type": "apps"}}), "data.id"),
        ] {
            let err = Enrichment::from_document(&body).unwrap_err();
            assert!(err.to_string().contains(expected), "{body} → {err}");
        }
    }

    #[test]
    fn status_form_is_camel_case_small_and_round_trips() {
        let doc = fixture(&format!("api/buildUploads-{FAILED_ID}.json"));
        let enrichment = Enrichment::from_document(&doc).unwrap();
        let stored = serde_json::to_value(&enrichment).unwrap();
        assert_eq!(stored["instanceType"], "buildUploads");
        assert_eq!(stored["buildNumber"], "3");
        assert_eq!(stored["errors"][0]["code"], "90683");
        assert!(stored.get("instance").is_none() && stored.get("omittedErrors").is_none());
        let back: Enrichment = serde_json::from_value(stored).unwrap();
        assert_eq!(
            back,
            Enrichment {
                instance: Value::Null,
                ..enrichment
            }
        );
    }

    /// Follows every fixture event's `links.self`, moved to the mock's origin, as the operator will.
    #[tokio::test]
    async fn every_fixture_event_enriches_through_the_mock_api() {
        let mock = AscMock::start(AscMockOptions::default()).await.unwrap();
        let pem = std::fs::read(format!("{FIXTURES}/keys/AuthKey_TEST2K9Q7X.p8")).unwrap();
        let key = ApiKey::from_pem(
            "TEST2K9Q7X",
            Some("69a6de70-03db-47e3-e053-5b8c7c11a4d1".into()),
            &pem,
        )
        .unwrap();
        let client = AscClient::new(&mock.url(), TokenSource::new(key)).unwrap();

        let mut enriched = 0;
        for entry in std::fs::read_dir(format!("{FIXTURES}/events")).unwrap() {
            let path = entry.unwrap().path();
            let event: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            let Some(link) = event
                .pointer("/data/relationships/instance/links/self")
                .and_then(Value::as_str)
            else {
                continue;
            };
            let document = client
                .fetch_instance_of("buildUploads", "unused", Some(&mock.rewrite(link)))
                .await
                .unwrap();
            let e = Enrichment::from_document(&document).unwrap();
            assert_eq!(
                Some(e.instance_id.as_str()),
                event
                    .pointer("/data/relationships/instance/data/id")
                    .and_then(Value::as_str)
            );
            match path.file_name().and_then(|n| n.to_str()).unwrap() {
                "build-upload-failed.json" => assert_failed_upload(&e),
                "build-upload-complete.json" => assert_complete_upload(&e),
                name if name.starts_with("app-version-") => assert_app_store_version(&e),
                other => panic!("fixture {other} has an instance link but no expectation here"),
            }
            enriched += 1;
        }
        assert_eq!(
            enriched, 9,
            "two build uploads and seven app version events"
        );
        assert_eq!(mock.requests().len(), 9);
        assert!(mock.requests().iter().all(|r| r.auth.is_accepted()));
        mock.shutdown().await;
    }

    #[test]
    fn background_asset_versions_and_beta_feedback_yield_their_own_fields() {
        let asset = Enrichment::from_document(&fixture(
            "api/backgroundAssetVersions-5a0c7e21-93b4-4f6d-8e12-6b3f0d9a4c71.json",
        ))
        .unwrap();
        assert_eq!(asset.version.as_deref(), Some("3"));
        assert_eq!(
            asset.platform.as_deref(),
            Some("IOS"),
            "first of platforms[]"
        );
        assert_eq!(asset.state.as_deref(), Some("FAILED"));
        assert_eq!(asset.errors.len(), 1, "stateDetails.errors");
        assert!(asset.errors_text().starts_with("ASSET_PACK_INVALID: "));
        let crash = Enrichment::from_document(&fixture(
            "api/betaFeedbackCrashSubmissions-AQ3fZr-kT9wLm2pXv7bNcA.json",
        ))
        .unwrap();
        assert_eq!(crash.platform.as_deref(), Some("IOS"));
        assert_eq!(crash.bundle_id.as_deref(), Some("com.example.app"));
    }

    #[test]
    fn a_build_upload_keeps_warnings_and_infos_apart_from_errors() {
        let doc = json!({"data": {"type": "buildUploads", "id": "u", "attributes": {"state": {
            "state": "COMPLETE", "errors": [],
            "warnings": [{"code": "90725", "description": "SDK version issue"}],
            "infos": [{"code": "I1", "description": "note"}]}}}});
        let e = Enrichment::from_document(&doc).unwrap();
        assert!(e.errors.is_empty());
        assert_eq!(e.warnings[0].render(), "ITMS-90725: SDK version issue");
        assert_eq!(e.infos[0].code, "I1");
    }
}

//! `AscCredential`: an App Store Connect API key, by reference. The operator mints short-lived ES256 tokens
//! from it; the key itself never leaves its Secret and no token is ever written anywhere.

use super::{Condition, SecretKeySelector};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::names::DEFAULT_API_URL;

/// An App Store Connect API key (team or individual) the operator uses to fetch the object an event is about.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "asc.webhooks.dev",
    version = "v1alpha1",
    kind = "AscCredential",
    plural = "asccredentials",
    singular = "asccredential",
    shortname = "asccred",
    category = "asc",
    namespaced,
    status = "AscCredentialStatus",
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
    printcolumn(name = "Key ID", type_ = "string", json_path = ".spec.keyId"),
    printcolumn(name = "Type", type_ = "string", json_path = ".status.keyType"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct AscCredentialSpec {
    /// The key's ID, shown next to the key in App Store Connect (Users and Access → Integrations); becomes
    /// the token's `kid`.
    #[schemars(length(min = 1, max = 64))]
    pub key_id: String,
    /// The issuer ID shown above the team keys list. Leave it out for an individual key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub issuer_id: Option<String>,
    /// The Secret key holding the downloaded `.p8` file's contents (PKCS#8 PEM).
    pub private_key_secret_ref: SecretKeySelector,
    /// Base URL of the App Store Connect API. Enrichment only ever requests URLs of this origin. Defaults to
    /// `https://api.appstoreconnect.apple.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    pub api_url: Option<String>,
    /// When set, the operator makes a cheap authenticated API call this often (in minutes) and reports the
    /// result in the `Verified` condition, so a revoked key shows up before an event needs it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10080))]
    pub verify_interval_minutes: Option<i32>,
}

impl AscCredentialSpec {
    /// The API base URL, defaulted.
    pub fn api_url(&self) -> &str {
        self.api_url.as_deref().unwrap_or(DEFAULT_API_URL)
    }
}

/// What the operator last observed about the credential. Never the key or a token.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AscCredentialStatus {
    /// `Ready`: the key is readable and mints a token. `Verified`: the last verification call's result.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// `Team` (with an issuer ID) or `Individual`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_type: Option<String>,
    /// When the last verification call succeeded (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_verified_time: Option<String>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

//! Reference types shared by the resources. Every reference resolves in the referring object's own
//! namespace: there is deliberately no `namespace` field to set.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A key inside a Secret in the same namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeySelector {
    /// Name of the Secret, in the same namespace as this resource.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret's `data` whose value is used.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
    /// Leave empty. References resolve only in this resource's own namespace; any other value is refused
    /// with the reason `CrossNamespaceReference`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// A reference by name to an object in the same namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalObjectReference {
    /// Name of the referenced object, in the same namespace as this resource.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Leave empty. References resolve only in this resource's own namespace; any other value is refused
    /// with the reason `CrossNamespaceReference`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// Whether a reference written with an explicit `namespace` points outside `own`.
pub fn crosses_namespace(reference_namespace: Option<&str>, own: &str) -> bool {
    reference_namespace.is_some_and(|ns| !ns.is_empty() && ns != own)
}

/// A schema for fields kept as an open object (validated by the controller, not the API server), so the
/// CRD stays far below the 256 KiB limit of client-side `kubectl apply`.
pub(crate) fn open_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

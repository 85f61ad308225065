//! Status writes: server-side apply on the `/status` subresource with the operator's one field manager,
//! carrying `apiVersion` and `kind` as apply requires.

use crate::resources::FIELD_MANAGER;
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;

/// Applies `status` to the object `name`.
pub async fn apply<K>(api: &Api<K>, name: &str, status: &impl Serialize) -> Result<K, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
}

//! Status writes: server-side apply on the `/status` subresource with the operator's one field manager,
//! carrying `apiVersion` and `kind` as apply requires.

use crate::resources::names::FIELD_MANAGER;
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

/// Applies `status` only if the object is still at `resource_version`: a decision made on a stale
/// cached copy must not overwrite a newer one. `Ok(None)` means it was not: read again and decide anew.
pub async fn apply_if_unchanged<K>(
    api: &Api<K>,
    name: &str,
    resource_version: Option<&str>,
    status: &impl Serialize,
) -> Result<Option<K>, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let mut patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    if let Some(rv) = resource_version {
        patch["metadata"] = serde_json::json!({ "resourceVersion": rv });
    }
    match api
        .patch_status(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
    {
        Ok(obj) => Ok(Some(obj)),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::WebhookRoute;
    use crate::resources::route::WebhookRouteStatus;
    use http::{Request, Response};
    use http_body_util::BodyExt;
    use kube::client::Body;

    #[tokio::test]
    async fn status_is_server_side_applied_with_one_forced_field_manager_and_type_meta() {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let api: Api<WebhookRoute> = Api::namespaced(kube::Client::new(service, "default"), "ios");
        let verifier = tokio::spawn(async move {
            let (request, send) = handle.next_request().await.unwrap();
            assert_eq!(request.method(), http::Method::PATCH);
            assert_eq!(
                request.uri().path(),
                "/apis/asc.webhooks.dev/v1alpha1/namespaces/ios/webhookroutes/release/status"
            );
            let query = request.uri().query().unwrap_or_default().to_owned();
            assert!(
                query.contains("fieldManager=asc-webhook-operator") && query.contains("force=true"),
                "{query}"
            );
            assert_eq!(
                request.headers()["content-type"],
                "application/apply-patch+yaml"
            );
            let body: serde_json::Value =
                serde_json::from_slice(&request.into_body().collect().await.unwrap().to_bytes())
                    .unwrap();
            assert_eq!(body["apiVersion"], "asc.webhooks.dev/v1alpha1");
            assert_eq!(body["kind"], "WebhookRoute");
            assert_eq!(body["status"]["url"], "https://h/hooks/ios/release");
            assert!(
                body.get("spec").is_none(),
                "a status apply never carries the spec"
            );
            let answer = serde_json::json!({"apiVersion": "asc.webhooks.dev/v1alpha1", "kind": "WebhookRoute",
                "metadata": {"name": "release", "namespace": "ios"},
                "spec": {"secretRef": {"name": "s", "key": "k"}, "rules": []}});
            send.send_response(
                Response::builder()
                    .status(200)
                    .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                    .unwrap(),
            );
        });
        let status = WebhookRouteStatus {
            url: Some("https://h/hooks/ios/release".into()),
            ..Default::default()
        };
        apply(&api, "release", &status).await.unwrap();
        verifier.await.unwrap();
    }
}

//! The API-server implementations of the receiver's traits.

use super::backend::{
    DeliverySink, Recorded, SecretData, SecretSource, SecretSourceError, SinkError,
};
use super::handoff::Handoff;
use crate::resources::WebhookDelivery;
use crate::resources::names::FIELD_MANAGER;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, PostParams};

/// Reads Secrets with a GET per cache miss (the cache in front of it keeps that rare).
#[derive(Clone)]
pub struct KubeSecrets {
    client: Client,
}

impl KubeSecrets {
    /// Uses `client` for every read.
    pub fn new(client: Client) -> Self {
        KubeSecrets { client }
    }
}

impl SecretSource for KubeSecrets {
    fn secret<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<SecretData>, SecretSourceError>> {
        Box::pin(async move {
            let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
            let secret = api
                .get_opt(name)
                .await
                .map_err(|e| SecretSourceError::Unavailable {
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                    source: Box::new(e),
                })?;
            Ok(secret.map(|s| {
                s.data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0))
                    .collect()
            }))
        })
    }
}

/// Creates `WebhookDelivery` objects; AlreadyExists means the event was recorded before.
#[derive(Clone)]
pub struct KubeDeliveries {
    client: Client,
    handoff: Option<Handoff>,
}

impl KubeDeliveries {
    /// Uses `client` for every create.
    pub fn new(client: Client) -> Self {
        KubeDeliveries {
            client,
            handoff: None,
        }
    }

    /// Hands each created delivery to this process's delivery controller through `handoff`.
    pub fn with_handoff(mut self, handoff: Handoff) -> Self {
        self.handoff = Some(handoff);
        self
    }
}

impl DeliverySink for KubeDeliveries {
    fn record(&self, delivery: WebhookDelivery) -> BoxFuture<'_, Result<Recorded, SinkError>> {
        Box::pin(async move {
            let namespace = delivery.metadata.namespace.clone().unwrap_or_default();
            let api: Api<WebhookDelivery> = Api::namespaced(self.client.clone(), &namespace);
            let params = PostParams {
                field_manager: Some(FIELD_MANAGER.to_owned()),
                ..Default::default()
            };
            match api.create(&params, &delivery).await {
                Ok(created) => {
                    if let Some(handoff) = &self.handoff {
                        handoff.keep(created);
                    }
                    Ok(Recorded::Created)
                }
                Err(kube::Error::Api(s)) if s.is_already_exists() => Ok(Recorded::Duplicate),
                Err(e) => Err(classify(e)),
            }
        })
    }
}

/// Only refusals that a retry of the same event can never change are final; everything else (server
/// trouble, transport failures, 403 from missing RBAC or a quota, 404 from missing CRDs) can be fixed or
/// pass, so Apple is told to come back.
fn classify(e: kube::Error) -> SinkError {
    match &e {
        // kube-apiserver passes etcd's size refusal on as a 500 with etcd's message, not as a 413
        // (kubernetes/kubernetes#112152).
        kube::Error::Api(s) if s.code == 413 || s.message.contains(ETCD_TOO_LARGE) => {
            SinkError::TooLarge(Box::new(e))
        }
        kube::Error::Api(s) if matches!(s.code, 400 | 415 | 422) => SinkError::Refused(Box::new(e)),
        _ => SinkError::Unavailable(Box::new(e)),
    }
}

/// What etcd says about a write over its `--max-request-bytes`.
const ETCD_TOO_LARGE: &str = "request is too large";

#[cfg(test)]
mod tests {
    //! Request-level tests: the exact API calls, against a `tower-test` mock behind a real `kube::Client`.
    use super::*;
    use crate::resources::{WebhookDelivery, WebhookDeliverySpec};
    use http::{Request, Response};
    use http_body_util::BodyExt;
    use kube::client::Body;

    type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

    fn client() -> (Client, Handle) {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        (Client::new(service, "default"), handle)
    }

    fn delivery() -> WebhookDelivery {
        let mut d = WebhookDelivery::new(
            "release-abc",
            WebhookDeliverySpec::sample("release", "e1", "webhookPingCreated", "{}"),
        );
        d.metadata.namespace = Some("ios".into());
        d
    }

    fn status_body(code: u16, reason: &str) -> Body {
        Body::from(
            serde_json::to_vec(&serde_json::json!({
                "kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "reason": reason, "message": reason
            }))
            .unwrap(),
        )
    }

    async fn expect_create(handle: &mut Handle, answer: Response<Body>) -> serde_json::Value {
        let (request, send) = handle.next_request().await.expect("a request");
        assert_eq!(request.method(), http::Method::POST);
        assert_eq!(
            request.uri().path(),
            "/apis/asc.webhooks.dev/v1alpha1/namespaces/ios/webhookdeliveries"
        );
        assert!(
            request
                .uri()
                .query()
                .unwrap_or_default()
                .contains("fieldManager=asc-webhook-operator")
        );
        let body = request.into_body().collect().await.unwrap().to_bytes();
        send.send_response(answer);
        serde_json::from_slice(&body).unwrap()
    }

    #[tokio::test]
    async fn created_delivery_is_posted_once_to_its_namespace() {
        let (client, mut handle) = client();
        let verifier = tokio::spawn(async move {
            let body = expect_create(
                &mut handle,
                Response::builder()
                    .status(201)
                    .body(Body::from(serde_json::to_vec(&delivery()).unwrap()))
                    .unwrap(),
            )
            .await;
            assert_eq!(body["metadata"]["name"], "release-abc");
            assert_eq!(body["spec"]["eventId"], "e1");
        });
        assert_eq!(
            KubeDeliveries::new(client)
                .record(delivery())
                .await
                .unwrap(),
            Recorded::Created
        );
        verifier.await.unwrap();
    }

    #[tokio::test]
    async fn already_exists_means_duplicate() {
        let (client, mut handle) = client();
        let verifier = tokio::spawn(async move {
            expect_create(
                &mut handle,
                Response::builder()
                    .status(409)
                    .body(status_body(409, "AlreadyExists"))
                    .unwrap(),
            )
            .await;
        });
        assert_eq!(
            KubeDeliveries::new(client)
                .record(delivery())
                .await
                .unwrap(),
            Recorded::Duplicate
        );
        verifier.await.unwrap();
    }

    #[tokio::test]
    async fn too_large_answers_are_final_whatever_their_code() {
        let (client, mut handle) = client();
        let verifier = tokio::spawn(async move {
            let too_large = |code: u16, message: &str| {
                Response::builder()
                    .status(code)
                    .body(Body::from(
                        serde_json::to_vec(&serde_json::json!({
                            "kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "reason": "", "message": message
                        }))
                        .unwrap(),
                    ))
                    .unwrap()
            };
            expect_create(
                &mut handle,
                too_large(500, "etcdserver: request is too large"),
            )
            .await;
            expect_create(
                &mut handle,
                too_large(413, "Request entity too large: limit is 3145728"),
            )
            .await;
            expect_create(
                &mut handle,
                Response::builder()
                    .status(403)
                    .body(status_body(403, "Forbidden"))
                    .unwrap(),
            )
            .await;
        });
        let sink = KubeDeliveries::new(client);
        for _ in 0..2 {
            assert!(matches!(
                sink.record(delivery()).await,
                Err(SinkError::TooLarge(_))
            ));
        }
        assert!(
            matches!(
                sink.record(delivery()).await,
                Err(SinkError::Unavailable(_))
            ),
            "missing RBAC can be fixed: Apple should come back"
        );
        verifier.await.unwrap();
    }

    #[tokio::test]
    async fn server_errors_are_unavailable_and_validation_errors_refused() {
        let (client, mut handle) = client();
        let verifier = tokio::spawn(async move {
            expect_create(
                &mut handle,
                Response::builder()
                    .status(503)
                    .body(status_body(503, "ServiceUnavailable"))
                    .unwrap(),
            )
            .await;
            expect_create(
                &mut handle,
                Response::builder()
                    .status(422)
                    .body(status_body(422, "Invalid"))
                    .unwrap(),
            )
            .await;
        });
        let sink = KubeDeliveries::new(client);
        assert!(matches!(
            sink.record(delivery()).await,
            Err(SinkError::Unavailable(_))
        ));
        assert!(matches!(
            sink.record(delivery()).await,
            Err(SinkError::Refused(_))
        ));
        verifier.await.unwrap();
    }

    #[tokio::test]
    async fn missing_secret_is_none_and_present_one_is_decoded() {
        let (client, mut handle) = client();
        let verifier = tokio::spawn(async move {
            let (request, send) = handle.next_request().await.unwrap();
            assert_eq!(request.uri().path(), "/api/v1/namespaces/ios/secrets/hook");
            send.send_response(
                Response::builder()
                    .status(404)
                    .body(status_body(404, "NotFound"))
                    .unwrap(),
            );
            let (request, send) = handle.next_request().await.unwrap();
            assert_eq!(request.method(), http::Method::GET);
            let secret = serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hook", "namespace": "ios"}, "data": {"secret": "czNjcjN0"}});
            send.send_response(
                Response::builder()
                    .status(200)
                    .body(Body::from(serde_json::to_vec(&secret).unwrap()))
                    .unwrap(),
            );
        });
        let secrets = KubeSecrets::new(client);
        assert!(secrets.secret("ios", "hook").await.unwrap().is_none());
        let data = secrets.secret("ios", "hook").await.unwrap().unwrap();
        assert_eq!(data["secret"], b"s3cr3t");
        verifier.await.unwrap();
    }
}

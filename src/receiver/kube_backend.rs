//! The API-server implementations of the receiver's traits.

use super::backend::{
    DeliverySink, Recorded, SecretData, SecretSource, SecretSourceError, SinkError,
};
use crate::resources::{FIELD_MANAGER, WebhookDelivery};
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
}

impl KubeDeliveries {
    /// Uses `client` for every create.
    pub fn new(client: Client) -> Self {
        KubeDeliveries { client }
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
                Ok(_) => Ok(Recorded::Created),
                Err(kube::Error::Api(s)) if s.is_already_exists() => Ok(Recorded::Duplicate),
                Err(e) => Err(classify(e)),
            }
        })
    }
}

/// Server-side trouble and transport failures are worth a retry from Apple; anything else is a refusal.
fn classify(e: kube::Error) -> SinkError {
    match &e {
        kube::Error::Api(s)
            if s.code >= 500
                || s.code == 429
                || s.code == 403
                    && s.reason == "Forbidden"
                    && s.message.contains("being terminated") =>
        {
            SinkError::Unavailable(Box::new(e))
        }
        kube::Error::Api(_) => SinkError::Refused(Box::new(e)),
        _ => SinkError::Unavailable(Box::new(e)),
    }
}

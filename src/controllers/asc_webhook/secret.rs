//! The route's webhook secret, as the reconciler sends it to App Store Connect: read by name, or created
//! once when `generateSecret` asks for it. Its `resourceVersion` is what status records, never the value.
//! A read is kept ([`crate::controllers::context::WebhookSecrets`]) until the Secret is seen to change,
//! so an idle route's pass costs the API server nothing.

use super::plan::Blocked;
use crate::controllers::{Context, Error};
use crate::resources::WebhookRoute;
use crate::resources::common::crosses_namespace;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Resource, ResourceExt};
use std::collections::BTreeMap;

pub use crate::controllers::context::WebhookSecret;

/// A new Secret for `route` holding 32 random bytes as hex under its `secretRef` key, owned by the route
/// (so it goes with it). Pure apart from the randomness.
pub fn generated(route: &WebhookRoute) -> Secret {
    let value = hex::encode(rand::random::<[u8; 32]>());
    Secret {
        metadata: ObjectMeta {
            name: Some(route.spec.secret_ref.name.clone()),
            namespace: route.namespace(),
            labels: Some(BTreeMap::from([(
                crate::resources::names::LABEL_MANAGED_BY.to_owned(),
                crate::resources::names::MANAGED_BY.to_owned(),
            )])),
            owner_references: route.controller_owner_ref(&()).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(
            route.spec.secret_ref.key.clone(),
            ByteString(value.into_bytes()),
        )])),
        ..Secret::default()
    }
}

fn value_of(secret: &Secret, key: &str) -> Option<Vec<u8>> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| b.0.clone())
        .filter(|b| !b.is_empty())
}

/// The secret for `route` as last read while that read is trusted, else read (or generated) now.
pub async fn current(
    ctx: &Context,
    route: &WebhookRoute,
) -> Result<Result<WebhookSecret, Blocked>, Error> {
    if let Some(known) = ctx.webhook_secrets.get(route) {
        return Ok(Ok(known));
    }
    let read = read_or_generate(ctx, route).await?;
    if let Ok(secret) = &read {
        let trust = crate::controllers::route::jittered(ctx.settings.secret_recheck_interval);
        ctx.webhook_secrets.remember(route, secret.clone(), trust);
    }
    Ok(read)
}

/// The secret for `route`, creating the Secret first when it is missing and `generateSecret` is on. An
/// existing Secret is never changed, even when it lacks the key.
async fn read_or_generate(
    ctx: &Context,
    route: &WebhookRoute,
) -> Result<Result<WebhookSecret, Blocked>, Error> {
    let ns = route.namespace().unwrap_or_default();
    let selector = &route.spec.secret_ref;
    if crosses_namespace(selector.namespace.as_deref(), &ns) {
        return Ok(Err(Blocked {
            reason: "CrossNamespaceReference",
            message: format!("secretRef must stay in namespace {ns}"),
        }));
    }
    let generate = route
        .spec
        .app_store_connect
        .as_ref()
        .is_some_and(|a| a.generate_secret);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let mut secret = secrets.get_opt(&selector.name).await.map_err(Error::Kube)?;
    if secret.is_none() && generate {
        secret = Some(create(ctx, route, &secrets).await?);
    }
    let Some(secret) = secret else {
        return Ok(Err(Blocked {
            reason: "SecretNotFound",
            message: format!(
                "Secret {ns}/{} (webhook secret) does not exist; create it or set \
                 spec.appStoreConnect.generateSecret: true",
                selector.name
            ),
        }));
    };
    let Some(bytes) = value_of(&secret, &selector.key) else {
        return Ok(Err(Blocked {
            reason: "SecretKeyNotFound",
            message: format!(
                "Secret {ns}/{} has no key {:?}",
                selector.name, selector.key
            ),
        }));
    };
    let Ok(value) = String::from_utf8(bytes) else {
        return Ok(Err(Blocked {
            reason: "SecretNotText",
            message: format!(
                "Secret {ns}/{} key {:?} is not UTF-8 text; App Store Connect takes the secret as a string",
                selector.name, selector.key
            ),
        }));
    };
    Ok(Ok(WebhookSecret::new(
        value,
        secret.resource_version().unwrap_or_default(),
    )))
}

/// Creates the generated Secret, or reads the one someone else created first; apart from
/// [`read_or_generate`] so reading stays short and creating says what it did.
async fn create(
    ctx: &Context,
    route: &WebhookRoute,
    secrets: &Api<Secret>,
) -> Result<Secret, Error> {
    let ns = route.namespace().unwrap_or_default();
    let selector = &route.spec.secret_ref;
    match secrets
        .create(&PostParams::default(), &generated(route))
        .await
    {
        Ok(created) => {
            // The route controller checks Secrets rarely; this one it must see at once.
            ctx.route_secrets.forget(route);
            ctx.event(
                route,
                false,
                "SecretGenerated",
                format!(
                    "created Secret {ns}/{} with a random webhook secret",
                    selector.name
                ),
            )
            .await;
            Ok(created)
        }
        // Someone else created it first: theirs wins, it is never overwritten.
        Err(kube::Error::Api(s)) if s.is_already_exists() => {
            secrets.get(&selector.name).await.map_err(Error::Kube)
        }
        Err(e) => Err(Error::Kube(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_secret_is_32_random_bytes_in_hex_owned_by_the_route() {
        let route: WebhookRoute = serde_json::from_value(serde_json::json!({
            "apiVersion": "asc.webhooks.dev/v1alpha1", "kind": "WebhookRoute",
            "metadata": {"name": "r", "namespace": "ios", "uid": "u1"},
            "spec": {"secretRef": {"name": "hook", "key": "secret"}, "rules": []}
        }))
        .unwrap();
        let a = generated(&route);
        let b = generated(&route);
        let value = value_of(&a, "secret").unwrap();
        assert_eq!(value.len(), 64);
        assert!(value.iter().all(u8::is_ascii_hexdigit));
        assert_ne!(value, value_of(&b, "secret").unwrap(), "random each time");
        let owner = &a.metadata.owner_references.unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("WebhookRoute", "u1")
        );
        assert_eq!(a.metadata.name.as_deref(), Some("hook"));
    }
}

//! App Store Connect API clients per credential, their tokens inside.

use crate::asc::api::{AscClient, AscClientOptions};
use crate::asc::origins::AllowedOrigins;
use crate::asc::token::{ApiKey, TokenSource};
use crate::resources::{AscCredential, SecretKeySelector};
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client, ResourceExt};
use std::time::{Duration, Instant};

/// Why a credential cannot serve API calls right now.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CredentialProblem {
    /// Any reason, with whether trying again later may help.
    #[error("{reason}: {message}")]
    Unusable {
        /// Condition reason, e.g. `SecretNotFound`.
        reason: &'static str,
        /// For a person.
        message: String,
        /// Whether a retry may succeed without a change by the user (API server trouble).
        transient: bool,
    },
}

/// What a usable credential gives the delivery controller.
#[derive(Clone)]
pub struct ResolvedCredential {
    /// The API client (tokens cached inside).
    pub client: AscClient,
}

#[derive(Clone)]
struct CachedClient {
    fingerprint: String,
    client: AscClient,
    credential: AscCredential,
    read_at: Instant,
}

/// API clients per credential (their tokens inside), reused while neither the credential nor its Secret
/// changed; a credential unused for a day is forgotten.
pub struct AscClients {
    client: Client,
    origins: AllowedOrigins,
    options: AscClientOptions,
    cached: moka::sync::Cache<(String, String), CachedClient>,
}

impl AscClients {
    /// Clients that read credentials with `client`, talk only to `origins` and are made with `options`.
    pub fn new(client: Client, origins: AllowedOrigins, options: AscClientOptions) -> Self {
        AscClients {
            client,
            origins,
            options,
            cached: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_idle(Duration::from_secs(24 * 3600))
                .build(),
        }
    }

    /// Like [`resolve`](Self::resolve), without any API call while the client was resolved less than
    /// `trust` ago and not [forgotten](Self::forget) since: the App Store Connect webhook reconciler's idle
    /// passes (a catch-up pass every few minutes per route) must not read the credential and its Secret
    /// each time. The credential controller forgets a credential whenever it or its Secret changes.
    pub async fn resolve_trusted(
        &self,
        namespace: &str,
        name: &str,
        trust: Duration,
        watched: Option<&AscCredential>,
    ) -> Result<ResolvedCredential, CredentialProblem> {
        let key = (namespace.to_owned(), name.to_owned());
        // Only while the watch still shows the credential it was made from: a deleted or changed one is
        // read again at once.
        let same = |c: &AscCredential| {
            watched.is_some_and(|w| {
                w.uid() == c.uid() && w.metadata.generation == c.metadata.generation
            })
        };
        if let Some(cached) = self.cached.get(&key)
            && cached.read_at.elapsed() < trust
            && same(&cached.credential)
        {
            return Ok(ResolvedCredential {
                client: cached.client,
            });
        }
        self.resolve(namespace, name).await
    }

    /// Forgets the client of credential `name`, so the next use reads the credential and its key again.
    pub fn forget(&self, namespace: &str, name: &str) {
        self.cached
            .invalidate(&(namespace.to_owned(), name.to_owned()));
    }

    /// Resolves the credential `name` in `namespace` into an API client, reusing the cached client (and so
    /// its tokens) while neither the credential nor its Secret changed.
    pub async fn resolve(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<ResolvedCredential, CredentialProblem> {
        let creds: Api<AscCredential> = Api::namespaced(self.client.clone(), namespace);
        let credential = match creds.get_opt(name).await {
            Ok(Some(c)) => c,
            Ok(None) => {
                return Err(unusable(
                    "CredentialNotFound",
                    format!("AscCredential {namespace}/{name} does not exist"),
                    false,
                ));
            }
            Err(e) => {
                return Err(unusable(
                    "ApiServerUnavailable",
                    format!("cannot read AscCredential {namespace}/{name}: {e}"),
                    true,
                ));
            }
        };
        // Before the key is read: a refused origin never gets a token minted for it.
        self.origins
            .check(credential.spec.api_url())
            .map_err(|m| unusable("ApiUrlNotAllowed", m, false))?;
        let (secret, pem) = read_key(
            &self.client,
            namespace,
            &credential.spec.private_key_secret_ref,
        )
        .await?;
        let fingerprint = format!(
            "{}/{}/{}",
            credential.metadata.generation.unwrap_or_default(),
            credential.uid().unwrap_or_default(),
            secret.resource_version().unwrap_or_default()
        );
        let key = (namespace.to_owned(), name.to_owned());
        if let Some(cached) = self.cached.get(&key)
            && cached.fingerprint == fingerprint
        {
            self.cached.insert(
                key,
                CachedClient {
                    read_at: Instant::now(),
                    credential: credential.clone(),
                    ..cached.clone()
                },
            );
            return Ok(ResolvedCredential {
                client: cached.client,
            });
        }
        let api_key = ApiKey::from_pem(
            credential.spec.key_id.clone(),
            credential.spec.issuer_id.clone(),
            &pem,
        )
        .map_err(|e| unusable("KeyInvalid", e.to_string(), false))?;
        let client = AscClient::with_options(
            credential.spec.api_url(),
            TokenSource::new(api_key),
            self.options.clone(),
        )
        .map_err(|e| unusable("InvalidApiUrl", e.to_string(), false))?;
        self.cached.insert(
            key,
            CachedClient {
                fingerprint,
                client: client.clone(),
                credential: credential.clone(),
                read_at: Instant::now(),
            },
        );
        Ok(ResolvedCredential { client })
    }
}

/// Reads the private key of a credential from its Secret.
pub async fn read_key(
    client: &Client,
    namespace: &str,
    selector: &SecretKeySelector,
) -> Result<(Secret, Vec<u8>), CredentialProblem> {
    if crate::resources::common::crosses_namespace(selector.namespace.as_deref(), namespace) {
        return Err(unusable(
            "CrossNamespaceReference",
            format!("privateKeySecretRef must stay in namespace {namespace}"),
            false,
        ));
    }
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = match secrets.get_opt(&selector.name).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            return Err(unusable(
                "SecretNotFound",
                format!("Secret {namespace}/{} does not exist", selector.name),
                false,
            ));
        }
        Err(e) => {
            return Err(unusable(
                "ApiServerUnavailable",
                format!("cannot read Secret {namespace}/{}: {e}", selector.name),
                true,
            ));
        }
    };
    let pem = secret
        .data
        .as_ref()
        .and_then(|d| d.get(&selector.key))
        .map(|b| b.0.clone())
        .filter(|b| !b.is_empty())
        .ok_or_else(|| {
            unusable(
                "SecretKeyNotFound",
                format!(
                    "Secret {namespace}/{} has no key {:?}",
                    selector.name, selector.key
                ),
                false,
            )
        })?;
    Ok((secret, pem))
}

fn unusable(reason: &'static str, message: String, transient: bool) -> CredentialProblem {
    CredentialProblem::Unusable {
        reason,
        message,
        transient,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{Request, Response};
    use kube::client::Body;

    fn selector(namespace: Option<&str>) -> SecretKeySelector {
        SecretKeySelector {
            name: "key".into(),
            key: "p8".into(),
            namespace: namespace.map(str::to_owned),
        }
    }

    fn reason(r: Result<(Secret, Vec<u8>), CredentialProblem>) -> (&'static str, bool) {
        match r {
            Ok(_) => ("Ok", false),
            Err(CredentialProblem::Unusable {
                reason, transient, ..
            }) => (reason, transient),
        }
    }

    #[tokio::test]
    async fn a_key_in_another_namespace_is_refused_without_reading_it() {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        drop(handle); // any request would fail as ApiServerUnavailable
        let client = Client::new(service, "default");
        let r = read_key(&client, "ios", &selector(Some("other"))).await;
        assert_eq!(reason(r), ("CrossNamespaceReference", false));
    }

    #[tokio::test]
    async fn a_secret_without_the_key_is_a_lasting_problem_and_an_unreachable_one_a_passing_one() {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let server = tokio::spawn(async move {
            let (request, send) = handle.next_request().await.unwrap();
            assert_eq!(request.uri().path(), "/api/v1/namespaces/ios/secrets/key");
            let secret = serde_json::json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "key", "namespace": "ios"}, "data": {"other": "eA=="}});
            send.send_response(Response::new(Body::from(
                serde_json::to_vec(&secret).unwrap(),
            )));
            let (_, send) = handle.next_request().await.unwrap();
            let status = serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                "message": "unavailable", "reason": "ServiceUnavailable", "code": 503});
            let mut answer = Response::new(Body::from(serde_json::to_vec(&status).unwrap()));
            *answer.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
            send.send_response(answer);
        });
        let client = Client::new(service, "default");
        let missing = read_key(&client, "ios", &selector(None)).await;
        assert_eq!(reason(missing), ("SecretKeyNotFound", false));
        let unreachable = read_key(&client, "ios", &selector(None)).await;
        assert_eq!(reason(unreachable), ("ApiServerUnavailable", true));
        server.await.unwrap();
    }
}

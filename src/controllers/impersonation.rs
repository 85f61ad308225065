//! Acting as a route's ServiceAccount.
//!
//! Whoever may create a `WebhookRoute` in a namespace decides which Jobs get created there and which
//! Secrets get sent where. Done with the operator's own rights, that borrows the operator's ClusterRole (a
//! confused deputy). So a route's actions run as `system:serviceaccount:<namespace>:<name>`: the route's
//! `spec.serviceAccountName`, else `--default-service-account`, else — for a cluster with one team — the
//! operator itself. Only the `Impersonate-User` header is sent: the API server then adds the
//! ServiceAccount's groups (`system:serviceaccounts`, `system:serviceaccounts:<namespace>`,
//! `system:authenticated`) itself, so the operator needs `impersonate` on `serviceaccounts` and nothing
//! on `groups`.

use crate::resources::WebhookRoute;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client, ResourceExt};
use std::sync::Arc;

/// Who a route's actions run as.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identity {
    /// The operator's own identity (no ServiceAccount configured anywhere).
    Operator,
    /// A ServiceAccount of the route's namespace.
    ServiceAccount {
        /// Its namespace (always the route's).
        namespace: String,
        /// Its name.
        name: String,
    },
}

impl Identity {
    /// The identity of `route`'s actions: its own ServiceAccount, else the default one, else the operator.
    pub fn for_route(route: &WebhookRoute, default_service_account: Option<&str>) -> Identity {
        let name = route
            .spec
            .service_account_name
            .as_deref()
            .or(default_service_account)
            .filter(|n| !n.is_empty());
        match name {
            Some(name) => Identity::ServiceAccount {
                namespace: route.namespace().unwrap_or_default(),
                name: name.to_owned(),
            },
            None => Identity::Operator,
        }
    }

    /// The Kubernetes user name to impersonate, if any.
    pub fn username(&self) -> Option<String> {
        match self {
            Identity::Operator => None,
            Identity::ServiceAccount { namespace, name } => {
                Some(format!("system:serviceaccount:{namespace}:{name}"))
            }
        }
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Identity::Operator => f.write_str("the operator's own identity"),
            Identity::ServiceAccount { namespace, name } => {
                write!(f, "ServiceAccount {namespace}/{name}")
            }
        }
    }
}

/// Why no client could be built for an identity.
#[derive(Debug, thiserror::Error)]
pub enum ImpersonationError {
    /// The operator was started without a configuration to derive impersonating clients from.
    #[error("cannot act as {0}: impersonation is not configured in this process")]
    NotConfigured(Identity),
    /// The client for the identity could not be built.
    #[error("cannot build a client acting as {identity}")]
    Client {
        /// Whom the client was for.
        identity: Identity,
        /// kube's error.
        #[source]
        source: kube::Error,
    },
}

/// The configuration of a client acting as `username` (only `Impersonate-User`, see the module docs).
pub fn impersonated_config(base: &kube::Config, username: &str) -> kube::Config {
    let mut config = base.clone();
    config.auth_info.impersonate = Some(username.to_owned());
    config.auth_info.impersonate_groups = None;
    config
}

/// Builds a client from a configuration (tests substitute a tower-test service).
pub type MakeClient = dyn Fn(kube::Config) -> Result<Client, kube::Error> + Send + Sync;

/// Clients per identity: building one is costly (a TLS setup and a connection pool), so they are kept,
/// up to [`CACHE_LIMIT`] identities; the least used go first, and an identity unused for an hour is
/// forgotten.
pub struct ActionClients {
    operator: Client,
    config: Option<kube::Config>,
    make: Arc<MakeClient>,
    cache: moka::sync::Cache<String, Client>,
}

/// Identities whose clients are kept (clients are cheap to rebuild compared with holding thousands of
/// connection pools).
pub const CACHE_LIMIT: u64 = 256;

fn client_cache() -> moka::sync::Cache<String, Client> {
    moka::sync::Cache::builder()
        .max_capacity(CACHE_LIMIT)
        .time_to_idle(std::time::Duration::from_secs(3600))
        .build()
}

impl ActionClients {
    /// Only the operator's own client: impersonation fails with [`ImpersonationError::NotConfigured`].
    pub fn operator_only(operator: Client) -> Self {
        ActionClients {
            operator,
            config: None,
            make: Arc::new(Client::try_from),
            cache: client_cache(),
        }
    }

    /// Clients derived from the operator's configuration.
    pub fn from_config(operator: Client, config: kube::Config) -> Self {
        Self::with_factory(operator, config, Arc::new(Client::try_from))
    }

    /// Clients built by `make` from the operator's configuration plus impersonation.
    pub fn with_factory(operator: Client, config: kube::Config, make: Arc<MakeClient>) -> Self {
        ActionClients {
            operator,
            config: Some(config),
            make,
            cache: client_cache(),
        }
    }

    /// The client acting as `identity`.
    pub fn client_for(&self, identity: &Identity) -> Result<Client, ImpersonationError> {
        let Some(user) = identity.username() else {
            return Ok(self.operator.clone());
        };
        let Some(config) = &self.config else {
            return Err(ImpersonationError::NotConfigured(identity.clone()));
        };
        if let Some(client) = self.cache.get(&user) {
            return Ok(client);
        }
        let client = (self.make)(impersonated_config(config, &user)).map_err(|source| {
            ImpersonationError::Client {
                identity: identity.clone(),
                source,
            }
        })?;
        self.cache.insert(user, client.clone());
        Ok(client)
    }

    /// How many impersonating clients are kept now.
    pub fn cached(&self) -> usize {
        self.cache.run_pending_tasks();
        usize::try_from(self.cache.entry_count()).unwrap_or(usize::MAX)
    }
}

/// The API server's message when a call was refused (403), else `None` (other errors stay errors). The
/// message names the user, verb and resource, so it goes into the failed action as it is, with reason
/// `Forbidden`.
pub fn refusal(e: &kube::Error) -> Option<String> {
    match e {
        kube::Error::Api(s) if s.code == 403 => Some(s.message.clone()),
        _ => None,
    }
}

/// A Secret read as the route's identity. Outer error: the API server failed (retry); inner: the
/// identity may not read it (the API server's message; the action fails `Forbidden`).
pub async fn read_secret(
    client: Client,
    namespace: &str,
    name: &str,
) -> Result<Result<Option<Secret>, String>, kube::Error> {
    match Api::<Secret>::namespaced(client, namespace)
        .get_opt(name)
        .await
    {
        Ok(s) => Ok(Ok(s)),
        Err(e) => match refusal(&e) {
            Some(why) => Ok(Err(why)),
            None => Err(e),
        },
    }
}

#[cfg(test)]
mod tests;

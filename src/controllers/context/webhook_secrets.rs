//! The webhook secrets the App Store Connect reconciler last read, so an idle route's pass makes no API
//! call: a read is trusted until the Secret watch (or the receiver) says the Secret changed, the route's
//! spec changes, or `--secret-recheck-interval` passes.

use crate::resources::WebhookRoute;
use std::time::{Duration, Instant};

/// A webhook secret and the Secret version it came from. Never prints its value.
#[derive(Clone)]
pub struct WebhookSecret {
    value: String,
    /// The Secret's `resourceVersion`.
    pub version: String,
}

impl WebhookSecret {
    /// A secret read from the Secret at `version`.
    pub fn new(value: String, version: String) -> Self {
        WebhookSecret { value, version }
    }

    /// The value, for the API call only.
    pub fn expose(&self) -> &str {
        &self.value
    }
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSecret")
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
struct Read {
    secret: WebhookSecret,
    /// The route generation and Secret reference it was read for.
    generation: Option<i64>,
    reference: (String, String),
    fresh_until: Instant,
}

/// Webhook secrets by route uid; entries of deleted routes age out.
pub struct WebhookSecrets {
    reads: moka::sync::Cache<u64, Read>,
}

impl WebhookSecrets {
    /// Reads forgotten after `idle` unused (longer than any re-check).
    pub fn new(idle: Duration) -> Self {
        WebhookSecrets {
            reads: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(idle)
                .build(),
        }
    }

    /// The secret last read for `route`, while it is trusted.
    pub fn get(&self, route: &WebhookRoute) -> Option<WebhookSecret> {
        let read = self.reads.get(&key(route))?;
        (read.generation == route.metadata.generation
            && read.reference == reference(route)
            && read.fresh_until > Instant::now())
        .then_some(read.secret)
    }

    /// Remembers the secret read for `route`, trusted for `trust`.
    pub fn remember(&self, route: &WebhookRoute, secret: WebhookSecret, trust: Duration) {
        self.reads.insert(
            key(route),
            Read {
                secret,
                generation: route.metadata.generation,
                reference: reference(route),
                fresh_until: Instant::now() + trust,
            },
        );
    }

    /// Forgets what was read for `route`: its Secret changed, or a person asked for a fresh look.
    pub fn forget(&self, route: &WebhookRoute) {
        self.reads.invalidate(&key(route));
    }
}

fn reference(route: &WebhookRoute) -> (String, String) {
    (
        route.spec.secret_ref.name.clone(),
        route.spec.secret_ref.key.clone(),
    )
}

fn key(route: &WebhookRoute) -> u64 {
    super::route_secret_facts::facts_key(route)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(generation: i64, key: &str) -> WebhookRoute {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "asc.webhooks.dev/v1alpha1", "kind": "WebhookRoute",
            "metadata": {"name": "r", "namespace": "ns", "uid": "u1", "generation": generation},
            "spec": {"secretRef": {"name": "s", "key": key}, "rules": []}
        }))
        .unwrap()
    }

    #[test]
    fn a_read_is_trusted_for_its_route_generation_and_reference_until_forgotten_or_stale() {
        let secrets = WebhookSecrets::new(Duration::from_secs(60));
        let r = route(1, "k");
        secrets.remember(
            &r,
            WebhookSecret::new("v".into(), "7".into()),
            Duration::from_secs(60),
        );
        assert_eq!(secrets.get(&r).map(|s| s.version), Some("7".into()));
        assert!(secrets.get(&route(2, "k")).is_none(), "spec changed");
        assert!(secrets.get(&route(1, "other")).is_none(), "another key");
        secrets.forget(&r);
        assert!(secrets.get(&r).is_none());
        secrets.remember(
            &r,
            WebhookSecret::new("v".into(), "7".into()),
            Duration::ZERO,
        );
        assert!(secrets.get(&r).is_none(), "past its trust");
    }

    #[test]
    fn the_value_never_prints() {
        let s = WebhookSecret::new("hunter2".into(), "1".into());
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}

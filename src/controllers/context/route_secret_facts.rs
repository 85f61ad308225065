//! What was last read about each route's Secrets.

use crate::resources::WebhookRoute;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// What was read about a route's Secrets, and until when it is trusted. Kept for every route between
/// reconciles, so it holds only what readiness checks: per referenced Secret, whether it exists and
/// which of the keys the route names it has (not every key of a Secret that may hold many).
#[derive(Debug, Clone)]
pub struct SecretFacts {
    /// The route generation the Secrets were read for.
    pub generation: Option<i64>,
    /// Each referenced Secret as read.
    pub secrets: Box<[ReadSecret]>,
    /// The ServiceAccount the route's actions act as, when it does not exist (read by name like Secrets).
    pub missing_service_account: Option<String>,
    /// Until when the reading is trusted.
    pub fresh_until: Instant,
    /// Whether `fresh_until` was cut short because the route was not Ready.
    pub shortened: bool,
}

/// One referenced Secret as read: its name and, when it exists, the referenced keys it holds.
pub type ReadSecret = (Box<str>, Option<Box<[Box<str>]>>);

impl SecretFacts {
    /// The facts in the form readiness reads them.
    pub fn secrets(&self) -> BTreeMap<String, Option<BTreeSet<String>>> {
        self.secrets
            .iter()
            .map(|(name, keys)| {
                let keys = keys
                    .as_ref()
                    .map(|keys| keys.iter().map(|k| k.to_string()).collect());
                (name.to_string(), keys)
            })
            .collect()
    }
}

/// What was last read about each route's Secrets, by route uid. Bounded by the routes that exist;
/// entries of deleted routes age out.
pub struct RouteSecretFacts {
    facts: moka::sync::Cache<u64, SecretFacts>,
}

impl RouteSecretFacts {
    /// Facts that age out after `idle` unused (longer than any route's re-check).
    pub fn new(idle: Duration) -> Self {
        RouteSecretFacts {
            facts: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(idle)
                .build(),
        }
    }

    /// What was last read about `route`'s Secrets.
    pub fn get(&self, route: &WebhookRoute) -> Option<SecretFacts> {
        self.facts.get(&facts_key(route))
    }

    /// Remembers what was read about `route`'s Secrets.
    pub fn remember(&self, route: &WebhookRoute, facts: SecretFacts) {
        self.facts.insert(facts_key(route), facts);
    }

    /// Forgets what was read about `route`'s Secrets, so the next route reconcile reads them again (the
    /// operator itself just created one).
    pub fn forget(&self, route: &WebhookRoute) {
        self.facts.invalidate(&facts_key(route));
    }
}

/// The key a route's memories are kept under: a 64-bit digest of its uid (server-assigned, so no one
/// picks a colliding one), or of namespace/name before it has one. A string per route in two caches
/// held the whole term cost more than many of the facts themselves.
pub(crate) fn facts_key(route: &WebhookRoute) -> u64 {
    use crate::controllers::digest::of;
    match route.metadata.uid.as_deref() {
        Some(uid) => of(&(0u8, uid)),
        None => of(&(1u8, &route.metadata.namespace, &route.metadata.name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(uid: Option<&str>) -> WebhookRoute {
        let mut r: WebhookRoute = serde_json::from_value(serde_json::json!({
            "apiVersion": "asc.webhooks.dev/v1alpha1", "kind": "WebhookRoute",
            "metadata": {"name": "r", "namespace": "ns"},
            "spec": {"secretRef": {"name": "s", "key": "k"}, "rules": []}
        }))
        .unwrap();
        r.metadata.uid = uid.map(str::to_owned);
        r
    }

    fn facts(secret: &str, keys: Option<&[&str]>) -> SecretFacts {
        SecretFacts {
            generation: Some(1),
            secrets: vec![(
                secret.into(),
                keys.map(|k| k.iter().map(|k| Box::from(*k)).collect()),
            )]
            .into_boxed_slice(),
            missing_service_account: None,
            fresh_until: Instant::now(),
            shortened: false,
        }
    }

    #[test]
    fn facts_read_as_which_secrets_exist_with_which_keys() {
        let read = facts("hook", Some(&["secret"])).secrets();
        assert_eq!(read["hook"], Some(BTreeSet::from(["secret".to_owned()])));
        assert_eq!(facts("gone", None).secrets()["gone"], None);
    }

    #[test]
    fn facts_are_kept_per_route_until_forgotten() {
        let memory = RouteSecretFacts::new(Duration::from_secs(60));
        let (a, b) = (route(Some("uid-a")), route(Some("uid-b")));
        memory.remember(&a, facts("hook", None));
        assert!(memory.get(&a).is_some());
        assert!(
            memory.get(&b).is_none(),
            "same name, another uid: another route"
        );
        memory.forget(&a);
        assert!(memory.get(&a).is_none());
        let unsaved = route(None);
        memory.remember(&unsaved, facts("hook", None));
        assert!(memory.get(&unsaved).is_some());
    }
}

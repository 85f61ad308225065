//! Which value of the `asc.webhooks.dev/reconcile-requested-at` annotation each object was last answered
//! for, so a value asks for one fresh look and not one per reconcile.

use crate::resources::names::ANNOTATION_RECONCILE_REQUESTED_AT;
use kube::{Resource, ResourceExt};

/// The requested-at values answered, per controller and object uid. Lost on restart or a leader change:
/// the new leader reads everything at start anyway.
pub struct Nudges {
    answered: moka::sync::Cache<(&'static str, String), String>,
}

impl Default for Nudges {
    fn default() -> Self {
        Nudges {
            answered: moka::sync::Cache::builder().max_capacity(100_000).build(),
        }
    }
}

/// The requested-at value `obj` carries, if any.
pub fn requested_at<K: Resource>(obj: &K) -> Option<&str> {
    obj.annotations()
        .get(ANNOTATION_RECONCILE_REQUESTED_AT)
        .map(String::as_str)
}

impl Nudges {
    /// Whether `obj` carries a requested-at value that `controller` has not answered yet.
    pub fn pending<K: Resource>(&self, controller: &'static str, obj: &K) -> bool {
        let Some(value) = requested_at(obj) else {
            return false;
        };
        self.answered
            .get(&(controller, key(obj)))
            .is_none_or(|v| v != value)
    }

    /// Notes that `controller` read everything again for `obj`'s current requested-at value.
    pub fn answered<K: Resource>(&self, controller: &'static str, obj: &K) {
        if let Some(value) = requested_at(obj) {
            self.answered
                .insert((controller, key(obj)), value.to_owned());
        }
    }
}

fn key<K: Resource>(obj: &K) -> String {
    obj.uid()
        .unwrap_or_else(|| format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::WebhookRoute;

    fn route(requested: Option<&str>) -> WebhookRoute {
        let mut r: WebhookRoute = serde_json::from_value(serde_json::json!({
            "apiVersion": "asc.webhooks.dev/v1alpha1", "kind": "WebhookRoute",
            "metadata": {"name": "r", "namespace": "ns", "uid": "u1"},
            "spec": {"secretRef": {"name": "s", "key": "k"}, "rules": []}
        }))
        .unwrap();
        if let Some(v) = requested {
            r.annotations_mut()
                .insert(ANNOTATION_RECONCILE_REQUESTED_AT.into(), v.into());
        }
        r
    }

    #[test]
    fn each_new_value_is_pending_once_per_controller() {
        let nudges = Nudges::default();
        assert!(!nudges.pending("route", &route(None)), "no annotation");
        let first = route(Some("2026-01-01T00:00:00Z"));
        assert!(nudges.pending("route", &first));
        nudges.answered("route", &first);
        assert!(!nudges.pending("route", &first), "answered");
        assert!(nudges.pending("credential", &first), "per controller");
        assert!(
            nudges.pending("route", &route(Some("again"))),
            "a new value"
        );
    }
}

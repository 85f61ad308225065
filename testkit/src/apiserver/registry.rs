//! The set of served resource types (built-ins plus loaded CRDs) and the discovery documents
//! derived from it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use serde_json::{Value, json};

use super::schema::Schema;

#[derive(Debug)]
pub(crate) struct ResourceType {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub list_kind: String,
    pub plural: String,
    pub singular: String,
    pub short_names: Vec<String>,
    pub namespaced: bool,
    pub status_subresource: bool,
    pub schema: Option<Arc<Schema>>,
    pub is_crd: bool,
    /// Whether the real server answers a delete with the deleted object (custom resources) or a
    /// `Status` (most built-ins).
    pub returns_deleted_object: bool,
}

impl ResourceType {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// All served versions of a resource share one storage bucket, as with a CRD whose
    /// conversion strategy is `None`.
    pub fn storage_key(&self) -> String {
        format!("{}/{}", self.group, self.plural)
    }

    fn discovery_entries(&self) -> Vec<Value> {
        let mut main = json!({
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
        });
        if !self.short_names.is_empty() {
            main["shortNames"] = json!(self.short_names);
        }
        let mut out = vec![main];
        if self.status_subresource {
            out.push(json!({
                "name": format!("{}/status", self.plural),
                "singularName": "",
                "namespaced": self.namespaced,
                "kind": self.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
        out
    }
}

#[derive(Default)]
pub(crate) struct Registry {
    by_gvr: HashMap<(String, String, String), Arc<ResourceType>>,
    /// Storage key → the version objects are stored as (a CRD's `storage: true` version).
    storage_version: HashMap<String, Arc<ResourceType>>,
}

fn builtin(
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
    namespaced: bool,
    status: bool,
) -> ResourceType {
    ResourceType {
        group: group.into(),
        version: version.into(),
        kind: kind.into(),
        list_kind: format!("{kind}List"),
        plural: plural.into(),
        singular: kind.to_ascii_lowercase(),
        short_names: Vec::new(),
        namespaced,
        status_subresource: status,
        schema: None,
        is_crd: false,
        returns_deleted_object: false,
    }
}

impl Registry {
    pub fn with_builtins() -> Self {
        let mut r = Self::default();
        for rt in [
            builtin("", "v1", "Secret", "secrets", true, false),
            builtin("", "v1", "ConfigMap", "configmaps", true, false),
            builtin("", "v1", "Namespace", "namespaces", false, true),
            builtin("", "v1", "Pod", "pods", true, true),
            builtin("", "v1", "ServiceAccount", "serviceaccounts", true, false),
            builtin("", "v1", "Event", "events", true, false),
            builtin("events.k8s.io", "v1", "Event", "events", true, false),
            builtin("coordination.k8s.io", "v1", "Lease", "leases", true, false),
            builtin("batch", "v1", "Job", "jobs", true, true),
            // What the Helm chart renders: served so kubectl can map every kind of `helm template`.
            builtin("", "v1", "Service", "services", true, false),
            builtin("apps", "v1", "Deployment", "deployments", true, true),
            builtin(
                "rbac.authorization.k8s.io",
                "v1",
                "Role",
                "roles",
                true,
                false,
            ),
            builtin(
                "rbac.authorization.k8s.io",
                "v1",
                "RoleBinding",
                "rolebindings",
                true,
                false,
            ),
            builtin(
                "rbac.authorization.k8s.io",
                "v1",
                "ClusterRole",
                "clusterroles",
                false,
                false,
            ),
            builtin(
                "rbac.authorization.k8s.io",
                "v1",
                "ClusterRoleBinding",
                "clusterrolebindings",
                false,
                false,
            ),
            builtin(
                "networking.k8s.io",
                "v1",
                "Ingress",
                "ingresses",
                true,
                true,
            ),
            builtin(
                "networking.k8s.io",
                "v1",
                "NetworkPolicy",
                "networkpolicies",
                true,
                false,
            ),
            builtin(
                "policy",
                "v1",
                "PodDisruptionBudget",
                "poddisruptionbudgets",
                true,
                true,
            ),
            builtin(
                "apiextensions.k8s.io",
                "v1",
                "CustomResourceDefinition",
                "customresourcedefinitions",
                false,
                true,
            ),
        ] {
            r.insert(Arc::new(rt), true);
        }
        r
    }

    fn insert(&mut self, rt: Arc<ResourceType>, storage: bool) {
        if storage {
            self.storage_version.insert(rt.storage_key(), rt.clone());
        }
        self.by_gvr.insert(
            (rt.group.clone(), rt.version.clone(), rt.plural.clone()),
            rt,
        );
    }

    pub fn get(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceType>> {
        self.by_gvr
            .get(&(group.to_string(), version.to_string(), plural.to_string()))
            .cloned()
    }

    pub fn storage_type(&self, storage_key: &str) -> Option<Arc<ResourceType>> {
        self.storage_version.get(storage_key).cloned()
    }

    /// Finds a type by plural alone (optionally `plural.group`), for the test helpers.
    pub fn find(&self, resource: &str) -> Option<Arc<ResourceType>> {
        let (plural, group) = match resource.split_once('.') {
            Some((p, g)) => (p, Some(g)),
            None => (resource, None),
        };
        let mut matches: Vec<_> = self
            .storage_version
            .values()
            .filter(|rt| rt.plural == plural && group.is_none_or(|g| rt.group == g))
            .collect();
        // `events` exists in two groups; prefer the newer events.k8s.io, which kube's Recorder uses.
        matches.sort_by_key(|rt| rt.group.is_empty());
        matches.first().map(|rt| (*rt).clone())
    }

    /// Registers every served version of a `CustomResourceDefinition`.
    pub fn register_crd(&mut self, crd: &Value) -> Result<(), String> {
        let spec = crd.get("spec").ok_or("CRD has no spec")?;
        let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let group = s(spec, "group").ok_or("spec.group is required")?;
        let names = spec.get("names").ok_or("spec.names is required")?;
        let plural = s(names, "plural").ok_or("spec.names.plural is required")?;
        let kind = s(names, "kind").ok_or("spec.names.kind is required")?;
        let singular = s(names, "singular").unwrap_or_else(|| kind.to_ascii_lowercase());
        let list_kind = s(names, "listKind").unwrap_or_else(|| format!("{kind}List"));
        let short_names: Vec<String> = names
            .get("shortNames")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let namespaced = match s(spec, "scope").as_deref() {
            Some("Namespaced") => true,
            Some("Cluster") => false,
            other => {
                return Err(format!(
                    "spec.scope must be Namespaced or Cluster, got {other:?}"
                ));
            }
        };
        let versions = spec
            .get("versions")
            .and_then(Value::as_array)
            .filter(|v| !v.is_empty())
            .ok_or("spec.versions is required")?;
        let mut new_types = Vec::new();
        for v in versions {
            let name = s(v, "name").ok_or("spec.versions[].name is required")?;
            if v.get("served").and_then(Value::as_bool) == Some(false) {
                continue;
            }
            let storage = v
                .get("storage")
                .and_then(Value::as_bool)
                .unwrap_or(versions.len() == 1);
            let schema = match v.pointer("/schema/openAPIV3Schema") {
                Some(sc) => Some(Arc::new(
                    Schema::compile(sc).map_err(|e| format!("version {name}: {e}"))?,
                )),
                None => None,
            };
            let rt = ResourceType {
                group: group.clone(),
                version: name,
                kind: kind.clone(),
                list_kind: list_kind.clone(),
                plural: plural.clone(),
                singular: singular.clone(),
                short_names: short_names.clone(),
                namespaced,
                status_subresource: v.pointer("/subresources/status").is_some(),
                schema,
                is_crd: true,
                returns_deleted_object: true,
            };
            new_types.push((Arc::new(rt), storage));
        }
        if !new_types.iter().any(|(_, st)| *st) {
            return Err("exactly one served version must have storage: true".into());
        }
        for (rt, storage) in new_types {
            self.insert(rt, storage);
        }
        Ok(())
    }

    fn groups(&self) -> BTreeMap<String, BTreeSet<String>> {
        let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (group, version, _) in self.by_gvr.keys() {
            g.entry(group.clone()).or_default().insert(version.clone());
        }
        g
    }

    pub fn api_versions(&self, server_address: &str) -> Value {
        json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{ "clientCIDR": "0.0.0.0/0", "serverAddress": server_address }],
        })
    }

    pub fn api_group_list(&self) -> Value {
        let groups: Vec<Value> = self
            .groups()
            .into_iter()
            .filter(|(g, _)| !g.is_empty())
            .map(|(g, versions)| {
                let preferred = self
                    .storage_version
                    .values()
                    .find(|rt| rt.group == g)
                    .map(|rt| rt.version.clone())
                    .or_else(|| versions.iter().next().cloned())
                    .unwrap_or_default();
                let vs: Vec<Value> = versions
                    .iter()
                    .map(|v| json!({ "groupVersion": format!("{g}/{v}"), "version": v }))
                    .collect();
                json!({
                    "name": g,
                    "versions": vs,
                    "preferredVersion": { "groupVersion": format!("{g}/{preferred}"), "version": preferred },
                })
            })
            .collect();
        json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": groups })
    }

    pub fn api_group(&self, group: &str) -> Option<Value> {
        self.api_group_list()["groups"]
            .as_array()
            .and_then(|gs| gs.iter().find(|g| g["name"] == group).cloned())
            .map(|mut g| {
                g["kind"] = json!("APIGroup");
                g["apiVersion"] = json!("v1");
                g
            })
    }

    pub fn resource_list(&self, group: &str, version: &str) -> Option<Value> {
        let mut types: Vec<&Arc<ResourceType>> = self
            .by_gvr
            .values()
            .filter(|rt| rt.group == group && rt.version == version)
            .collect();
        if types.is_empty() {
            return None;
        }
        types.sort_by(|a, b| a.plural.cmp(&b.plural));
        let resources: Vec<Value> = types.iter().flat_map(|rt| rt.discovery_entries()).collect();
        let gv = if group.is_empty() {
            version.to_string()
        } else {
            format!("{group}/{version}")
        };
        Some(json!({
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": gv,
            "resources": resources,
        }))
    }
}

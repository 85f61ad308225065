//! Just enough authorization to test a controller that impersonates: the `Impersonate-User` and
//! `Impersonate-Group` headers, and RBAC (`Role`/`RoleBinding`, `ClusterRole`/`ClusterRoleBinding` of
//! `rbac.authorization.k8s.io/v1`, stored like any other object) deciding allow or a 403 `Forbidden` Status
//! worded as the real server words it.
//!
//! Only requests that impersonate someone are checked: the client a test builds (and the operator's own,
//! un-impersonated identity) stays a superuser, so turning authorization on changes nothing for them.
//! Impersonating a ServiceAccount user (`system:serviceaccount:<ns>:<name>`) without groups gets that
//! account's groups (`system:serviceaccounts`, `system:serviceaccounts:<ns>`) as the real server adds
//! them; every impersonated user is also in `system:authenticated`. Discovery is open to everyone.
//!
//! Rules match on API group, resource (`jobs`, or `jobs/status` for a subresource), verb and
//! `resourceNames` (which, as for the real server, never match a request without a name: create, list,
//! watch), with `*` as a wildcard in each. Aggregated ClusterRoles and `nonResourceURLs` are not modelled,
//! nor is the check that the impersonator itself may impersonate.

use serde_json::Value;

use super::error::{ApiError, Target};
use super::faults::{RequestRecord, Verb};
use super::store::Store;

/// Who a request is from, after impersonation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UserInfo {
    pub name: String,
    pub groups: Vec<String>,
}

/// The impersonated user of a request, if it impersonates anyone.
pub(crate) fn impersonated(headers: &http::HeaderMap) -> Option<UserInfo> {
    let name = headers.get("impersonate-user")?.to_str().ok()?.to_string();
    let mut groups: Vec<String> = headers
        .get_all("impersonate-group")
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_string))
        .collect();
    if groups.is_empty()
        && let Some(ns) = service_account_namespace(&name)
    {
        groups = vec![
            "system:serviceaccounts".to_string(),
            format!("system:serviceaccounts:{ns}"),
        ];
    }
    if !groups.iter().any(|g| g == "system:authenticated") {
        groups.push("system:authenticated".to_string());
    }
    Some(UserInfo { name, groups })
}

fn service_account_namespace(user: &str) -> Option<&str> {
    let rest = user.strip_prefix("system:serviceaccount:")?;
    rest.split_once(':').map(|(ns, _)| ns)
}

fn verb_name(v: Verb) -> &'static str {
    match v {
        Verb::Get => "get",
        Verb::List => "list",
        Verb::Watch => "watch",
        Verb::Create => "create",
        Verb::Update => "update",
        Verb::Patch => "patch",
        Verb::Delete => "delete",
        Verb::DeleteCollection => "deletecollection",
        Verb::Discovery => "get",
    }
}

fn strings(v: &Value, key: &str) -> Vec<String> {
    v.get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn rule_allows(rule: &Value, rec: &RequestRecord, verb: &str) -> bool {
    let has = |key: &str, want: &str| strings(rule, key).iter().any(|s| s == "*" || s == want);
    let resource = if rec.subresource.is_empty() {
        rec.resource.clone()
    } else {
        format!("{}/{}", rec.resource, rec.subresource)
    };
    let names = strings(rule, "resourceNames");
    let name_ok = names.is_empty()
        || rec
            .name
            .as_ref()
            .is_some_and(|n| names.iter().any(|x| x == n));
    has("apiGroups", &rec.group) && has("resources", &resource) && has("verbs", verb) && name_ok
}

fn subject_matches(subject: &Value, user: &UserInfo) -> bool {
    let field = |k: &str| subject.get(k).and_then(Value::as_str).unwrap_or_default();
    match field("kind") {
        "User" => field("name") == user.name,
        "Group" => user.groups.iter().any(|g| g == field("name")),
        "ServiceAccount" => {
            format!(
                "system:serviceaccount:{}:{}",
                field("namespace"),
                field("name")
            ) == user.name
        }
        _ => false,
    }
}

fn objects(store: &Store, resource: &str, ns: Option<&str>) -> Vec<Value> {
    let Some(rt) = store.registry.find(resource) else {
        return Vec::new();
    };
    store
        .list(&rt.storage_key(), ns)
        .map(|(_, o)| (**o).clone())
        .collect()
}

/// The rules bound to `user` that apply in `namespace` (cluster-wide ones always).
fn rules_for(store: &Store, user: &UserInfo, namespace: Option<&str>) -> Vec<Value> {
    let role_rules = |kind: &str, ns: &str, name: &str| -> Vec<Value> {
        let found = match kind {
            "ClusterRole" => store.get(&cluster_role_key(store), "", name),
            "Role" => store.get(&role_key(store), ns, name),
            _ => None,
        };
        found
            .and_then(|r| r.get("rules").and_then(Value::as_array).cloned())
            .unwrap_or_default()
    };
    let bound = |b: &Value| {
        b.get("subjects")
            .and_then(Value::as_array)
            .is_some_and(|s| s.iter().any(|s| subject_matches(s, user)))
    };
    let role_ref = |b: &Value| {
        let r = b.get("roleRef").cloned().unwrap_or_default();
        let f = |k: &str| {
            r.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        (f("kind"), f("name"))
    };
    let mut rules = Vec::new();
    for b in objects(store, "clusterrolebindings.rbac.authorization.k8s.io", None) {
        if bound(&b) {
            let (kind, name) = role_ref(&b);
            rules.extend(role_rules(&kind, "", &name));
        }
    }
    if let Some(ns) = namespace {
        for b in objects(store, "rolebindings.rbac.authorization.k8s.io", Some(ns)) {
            if bound(&b) {
                let (kind, name) = role_ref(&b);
                rules.extend(role_rules(&kind, ns, &name));
            }
        }
    }
    rules
}

fn role_key(store: &Store) -> String {
    store
        .registry
        .find("roles.rbac.authorization.k8s.io")
        .map(|rt| rt.storage_key())
        .unwrap_or_default()
}

fn cluster_role_key(store: &Store) -> String {
    store
        .registry
        .find("clusterroles.rbac.authorization.k8s.io")
        .map(|rt| rt.storage_key())
        .unwrap_or_default()
}

/// Allows the request, or the real server's 403 for it.
pub(crate) fn authorize(
    store: &Store,
    user: &UserInfo,
    rec: &RequestRecord,
) -> Result<(), ApiError> {
    if rec.verb == Verb::Discovery {
        return Ok(());
    }
    let verb = verb_name(rec.verb);
    let rules = rules_for(store, user, rec.namespace.as_deref());
    if rules.iter().any(|r| rule_allows(r, rec, verb)) {
        return Ok(());
    }
    let resource = if rec.subresource.is_empty() {
        rec.resource.clone()
    } else {
        format!("{}/{}", rec.resource, rec.subresource)
    };
    let scope = match &rec.namespace {
        Some(ns) => format!("in the namespace {ns:?}"),
        None => "at the cluster scope".to_string(),
    };
    let why = format!(
        "User {:?} cannot {verb} resource {resource:?} in API group {:?} {scope}",
        user.name, rec.group
    );
    Err(ApiError::forbidden(
        Target {
            group: &rec.group,
            kind: &rec.resource,
            name: rec.name.as_deref().unwrap_or_default(),
        },
        &why,
    ))
}

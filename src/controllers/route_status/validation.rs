//! Whether a route is usable, and if not, what a person should fix: the problems behind `Ready`. Pure.

use crate::actions::resource::{self, TypeRef};
use crate::actions::{job, template};
use crate::controllers::resource_kinds::KindFact;
use crate::resources::common::crosses_namespace;
use crate::resources::conditions::{self, Condition};
use crate::resources::route_asc::WEBHOOK_REGISTERED;
use crate::resources::{AscCredential, WebhookRoute};
use kube::ResourceExt;
use std::collections::{BTreeMap, BTreeSet};

/// What the route controller read from the API server about a route's references.
#[derive(Debug, Default, Clone)]
pub struct RouteFacts {
    /// Secrets by name: `None` when missing, else the keys they hold.
    pub secrets: BTreeMap<String, Option<BTreeSet<String>>>,
    /// The referenced credential: `None` when not referenced, `Some(None)` when missing.
    pub credential: Option<Option<AscCredential>>,
    /// The ServiceAccount the route's actions act as, when one is used and does not exist.
    pub missing_service_account: Option<String>,
    /// What discovery says about the kinds the route's resource rules create (absent: not looked up).
    pub kinds: BTreeMap<TypeRef, KindFact>,
}

/// One reason a route is not usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Condition reason.
    pub reason: &'static str,
    /// What to fix.
    pub message: String,
}

fn problem(reason: &'static str, message: String) -> Problem {
    Problem { reason, message }
}

/// Names of every Secret a route refers to (so the controller knows what to read).
pub fn referenced_secrets(route: &WebhookRoute) -> BTreeSet<String> {
    let mut names = BTreeSet::from([route.spec.secret_ref.name.clone()]);
    for rule in &route.spec.rules {
        if let Some(http) = &rule.http {
            names.insert(http.url_secret_ref.name.clone());
            if let Some(h) = &http.headers_secret_ref {
                names.insert(h.name.clone());
            }
        }
    }
    names
}

/// Every Secret key a route refers to, in whichever Secret: readiness asks only whether these exist.
pub fn referenced_keys(route: &WebhookRoute) -> BTreeSet<&str> {
    let mut keys = BTreeSet::from([route.spec.secret_ref.key.as_str()]);
    for rule in &route.spec.rules {
        if let Some(http) = &rule.http {
            keys.insert(http.url_secret_ref.key.as_str());
        }
    }
    keys
}

/// Every problem with the route, most fundamental first.
pub fn problems(route: &WebhookRoute, facts: &RouteFacts) -> Vec<Problem> {
    let ns = route.namespace().unwrap_or_default();
    let spec = &route.spec;
    let mut out = cross_namespace_problems(route, &ns);
    if !out.is_empty() {
        return out;
    }
    out.extend(secret_key_problem(
        facts,
        &ns,
        (&spec.secret_ref.name, &spec.secret_ref.key),
        "webhook secret",
        "SecretNotFound",
        "SecretKeyNotFound",
    ));
    out.extend(credential_problem(route, facts, &ns));
    if let Some(sa) = &facts.missing_service_account {
        // Deliveries still run (RBAC may name an account before it exists), but every action will most
        // likely be refused: say so before the first event does.
        out.push(problem(
            "ServiceAccountNotFound",
            format!(
                "ServiceAccount {ns}/{sa} does not exist; the route's actions act as it and will be refused \
                 (Forbidden) unless RBAC grants it what they do"
            ),
        ));
    }
    for rule in &spec.rules {
        out.extend(rule_problems(route, rule, facts, &ns));
    }
    out.extend(webhook_problem(route));
    out
}

/// References that leave the route's namespace.
fn cross_namespace_problems(route: &WebhookRoute, ns: &str) -> Vec<Problem> {
    let spec = &route.spec;
    let mut out = Vec::new();
    let mut refs: Vec<(&str, Option<&str>)> =
        vec![("secretRef", spec.secret_ref.namespace.as_deref())];
    if let Some(c) = &spec.credential_ref {
        refs.push(("credentialRef", c.namespace.as_deref()));
    }
    for rule in &spec.rules {
        if let Some(http) = &rule.http {
            refs.push((
                "http.urlSecretRef",
                http.url_secret_ref.namespace.as_deref(),
            ));
            if let Some(h) = &http.headers_secret_ref {
                refs.push(("http.headersSecretRef", h.namespace.as_deref()));
            }
        }
    }
    for (field, other) in refs {
        if crosses_namespace(other, ns) {
            out.push(problem(
                "CrossNamespaceReference",
                format!(
                    "{field} points to namespace {}; references must stay in namespace {ns}",
                    other.unwrap_or_default()
                ),
            ));
        }
    }
    out
}

/// Whether Secret `name` exists with `key` (`what` it is for the message).
fn secret_key_problem(
    facts: &RouteFacts,
    ns: &str,
    (name, key): (&str, &str),
    what: &str,
    missing: &'static str,
    missing_key: &'static str,
) -> Option<Problem> {
    match facts.secrets.get(name) {
        Some(Some(keys)) if keys.contains(key) => None,
        Some(Some(_)) => Some(problem(
            missing_key,
            format!("Secret {ns}/{name} has no key {key:?} ({what})"),
        )),
        _ => Some(problem(
            missing,
            format!("Secret {ns}/{name} ({what}) does not exist"),
        )),
    }
}

/// The referenced credential: missing, or not Ready.
fn credential_problem(route: &WebhookRoute, facts: &RouteFacts, ns: &str) -> Option<Problem> {
    match (&route.spec.credential_ref, &facts.credential) {
        (Some(c), Some(None)) | (Some(c), None) => Some(problem(
            "CredentialNotFound",
            format!("AscCredential {ns}/{} does not exist", c.name),
        )),
        (Some(c), Some(Some(cred))) => {
            let ready = cred
                .status
                .as_ref()
                .and_then(|s| conditions::find(&s.conditions, "Ready"));
            if ready.is_some_and(Condition::is_true) {
                return None;
            }
            let why = ready
                .map(|r| format!("{}: {}", r.reason, r.message))
                .unwrap_or_else(|| "not checked yet".into());
            Some(problem(
                "CredentialNotReady",
                format!("AscCredential {ns}/{} is not ready ({why})", c.name),
            ))
        }
        (None, _) => None,
    }
}

/// What is wrong with one rule: its filter, its `when`, its action, what it needs of the route.
fn rule_problems(
    route: &WebhookRoute,
    rule: &crate::resources::route::Rule,
    facts: &RouteFacts,
    ns: &str,
) -> Vec<Problem> {
    let spec = &route.spec;
    let mut out = Vec::new();
    if rule.filter.is_none() {
        out.push(problem(
            "InvalidRule",
            format!(
                "rule {} has no readable `match` filter; it acts on nothing until one is set \
                 (a route written with the old `on:` key arrives as a property named \"true\": rename it to `match:`)",
                rule.name
            ),
        ));
    }
    if let Some(when) = &rule.when
        && let Err(e) = crate::actions::when::compile(when)
    {
        out.push(problem(
            "InvalidRuleExpression",
            format!("rule {}: when: {e}", rule.name),
        ));
    }
    if let Some(j) = &rule.job {
        out.extend(job_problems(&rule.name, j, spec.credential_ref.is_some()));
    }
    if let Some(r) = &rule.resource {
        out.extend(resource_problems(&rule.name, r, facts));
    }
    if let Some(http) = &rule.http {
        out.extend(http_problems(&rule.name, http, facts, ns));
    }
    if rule.enrich == crate::resources::route::EnrichPolicy::Required
        && spec.credential_ref.is_none()
    {
        out.push(problem(
            "CredentialRequired",
            format!(
                "rule {} requires enrichment but the route has no credentialRef",
                rule.name
            ),
        ));
    }
    out
}

/// What is wrong with a Job rule: its template, and an API key it cannot have.
fn job_problems(
    rule: &str,
    j: &crate::resources::route::JobAction,
    has_credential: bool,
) -> Vec<Problem> {
    let mut out = Vec::new();
    if let Err(e) = job::parse_template(&j.template) {
        out.push(problem("InvalidJobTemplate", format!("rule {rule}: {e}")));
    }
    if let Some(e) = job::parse_template(&j.template)
        .ok()
        .and_then(|t| job::check_expansions(&t).err())
    {
        out.push(problem("UnsafeJobTemplate", format!("rule {rule}: {e}")));
    }
    if j.inject_api_key && !has_credential {
        out.push(problem(
            "CredentialRequired",
            format!("rule {rule} sets job.injectApiKey but the route has no credentialRef"),
        ));
    }
    out
}

/// What is wrong with an HTTP rule: its body template, and the Secrets it reads.
fn http_problems(
    rule: &str,
    http: &crate::resources::route::HttpAction,
    facts: &RouteFacts,
    ns: &str,
) -> Vec<Problem> {
    let mut out = Vec::new();
    if let Some(body) = &http.body
        && let Err(e) = template::validate(body)
    {
        out.push(problem(
            "InvalidHttpTemplate",
            format!("rule {rule}: body template: {e}"),
        ));
    }
    out.extend(secret_key_problem(
        facts,
        ns,
        (&http.url_secret_ref.name, &http.url_secret_ref.key),
        &format!("URL of rule {rule}"),
        "HttpSecretNotFound",
        "HttpSecretNotFound",
    ));
    if let Some(h) = &http.headers_secret_ref
        && !matches!(facts.secrets.get(&h.name), Some(Some(_)))
    {
        out.push(problem(
            "HttpSecretNotFound",
            format!(
                "Secret {ns}/{} (headers of rule {rule}) does not exist",
                h.name
            ),
        ));
    }
    out
}

/// What is wrong with a resource rule: its template, its kind (by discovery), its expressions.
fn resource_problems(
    rule: &str,
    r: &crate::resources::route::ResourceAction,
    facts: &RouteFacts,
) -> Vec<Problem> {
    let mut out = Vec::new();
    match resource::validate(r) {
        Err(e) => out.push(problem(e.reason(), format!("rule {rule}: {e}"))),
        Ok(t) => match facts.kinds.get(&t) {
            Some(KindFact::Namespaced(_)) => {}
            Some(KindFact::ClusterScoped) => out.push(problem(
                "ClusterScopedKind",
                format!(
                    "rule {rule}: {t} is cluster-scoped; resource actions create namespaced objects only"
                ),
            )),
            Some(KindFact::Unknown(why)) => out.push(problem(
                "UnknownKind",
                format!("rule {rule}: {why}; install its CRD or fix apiVersion and kind"),
            )),
            None => out.push(problem(
                "UnknownKind",
                format!("rule {rule}: {t} has not been looked up yet"),
            )),
        },
    }
    for (field, source) in [
        ("succeededWhen", &r.succeeded_when),
        ("failedWhen", &r.failed_when),
    ] {
        if let Some(src) = source
            && let Err(e) = crate::actions::when::compile(src)
        {
            out.push(problem(
                "InvalidRuleExpression",
                format!("rule {rule}: {field}: {e}"),
            ));
        }
    }
    out
}

/// The kinds the route's resource rules create (those whose template renders), for discovery.
pub fn resource_kinds(route: &WebhookRoute) -> BTreeSet<TypeRef> {
    route
        .spec
        .rules
        .iter()
        .filter_map(|r| r.resource.as_ref())
        .filter_map(|r| resource::validate(r).ok())
        .collect()
}

/// With `spec.appStoreConnect`, `Ready` also needs the webhook registered (read from the condition the
/// App Store Connect reconciler writes).
fn webhook_problem(route: &WebhookRoute) -> Option<Problem> {
    route.spec.app_store_connect.as_ref()?;
    let registered = route
        .status
        .as_ref()
        .and_then(|s| conditions::find(&s.conditions, WEBHOOK_REGISTERED));
    match registered {
        Some(c) if c.is_true() => None,
        Some(c) if c.status == conditions::FALSE => Some(Problem {
            reason: known_webhook_reason(&c.reason),
            message: format!("App Store Connect webhook: {}", c.message),
        }),
        _ => Some(problem(
            "WebhookNotRegistered",
            "the App Store Connect webhook is not registered yet".into(),
        )),
    }
}

/// `Problem::reason` is `&'static str`; the webhook reasons are a fixed set, so map back to them.
fn known_webhook_reason(reason: &str) -> &'static str {
    const KNOWN: &[&str] = &[
        "NoPublicUrl",
        "InsecurePublicUrl",
        "AppNotFound",
        "Forbidden",
        "CredentialNotReady",
        "AppStoreConnectUnavailable",
        "LimitReached",
        "Rejected",
        "InvalidEventType",
        "SecretNotFound",
        "SecretKeyNotFound",
        "SecretNotText",
        "CrossNamespaceReference",
    ];
    KNOWN
        .iter()
        .copied()
        .find(|k| *k == reason)
        .unwrap_or("WebhookNotRegistered")
}

//! The object a `resource` rule creates (a Tekton `PipelineRun`, an Argo `Workflow`, any namespaced kind)
//! and what its status says about the action.
//!
//! The template is text (a string, or the object form written as JSON) rendered like an HTTP body: every
//! `{{ value }}` is escaped as the content of a JSON string, so inside double quotes — in JSON and in YAML
//! alike — no event value can end the string. Outside double quotes (a YAML plain or single-quoted
//! scalar) it could: so each template is rendered a second time with every event string stripped of the
//! characters that mean something to YAML, and the two results must have the same shape. A value that
//! changed the structure is refused instead of creating an object nobody wrote.

use super::EventContext;
use super::template;
use super::when::{self, WhenError};
use crate::naming;
use crate::resources::WebhookDelivery;
use crate::resources::names::{
    LABEL_DELIVERY, LABEL_EVENT_TYPE, LABEL_MANAGED_BY, LABEL_ROUTE, LABEL_RULE, MANAGED_BY,
};
use crate::resources::route::ResourceAction;
use kube::api::GroupVersionKind;
use kube::{Resource, ResourceExt};
use serde_json::{Map, Value, json};

/// Why a resource template cannot become an object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResourceTemplateError {
    /// The MiniJinja template does not render.
    #[error("resource.template: {0}")]
    Render(String),
    /// The rendered text is not a YAML or JSON mapping.
    #[error("resource.template is not a YAML or JSON object: {0}")]
    Shape(String),
    /// `apiVersion` or `kind` is missing.
    #[error("resource.template needs a non-empty {0}")]
    Missing(&'static str),
    /// Event data changed the structure of the rendered object.
    #[error(
        "an event value changed the structure of the rendered object: put every {{{{ … }}}} inside double \
         quotes (value: \"{{{{ event.newState }}}}\"), where it is escaped"
    )]
    Breakout,
    /// `apiVersion`/`kind` rendered differently for this event than when the route was checked.
    #[error("resource.template's apiVersion and kind must not depend on the event (got {0})")]
    KindChanged(String),
}

impl ResourceTemplateError {
    /// The reason word for a status.
    pub fn reason(&self) -> &'static str {
        "InvalidResourceTemplate"
    }
}

/// The `apiVersion` and `kind` a template creates.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TypeRef {
    /// `group/version`, or `version` for the core group.
    pub api_version: String,
    /// The kind.
    pub kind: String,
}

impl TypeRef {
    /// As kube's group-version-kind.
    pub fn gvk(&self) -> GroupVersionKind {
        let (group, version) = match self.api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", self.api_version.as_str()),
        };
        GroupVersionKind::gvk(group, version, &self.kind)
    }
}

impl std::fmt::Display for TypeRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.api_version, self.kind)
    }
}

/// The template as text: a string as written, the object form as JSON.
fn template_text(action: &ResourceAction) -> String {
    match &action.template {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Renders and parses the template with `values` (the `event`/`instance`/`route` context).
fn render_object(text: &str, values: &Value) -> Result<Map<String, Value>, ResourceTemplateError> {
    let rendered = template::render(text, values, true)
        .map_err(|e| ResourceTemplateError::Render(e.to_string()))?;
    // YAML 1.2 reads JSON too.
    match serde_yaml::from_str::<Value>(&rendered) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(ResourceTemplateError::Shape(format!(
            "it renders to {}",
            kind_word(&other)
        ))),
        Err(e) => Err(ResourceTemplateError::Shape(e.to_string())),
    }
}

fn kind_word(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a bool",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn type_of(obj: &Map<String, Value>) -> Result<TypeRef, ResourceTemplateError> {
    let field = |name: &'static str| {
        obj.get(name)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .ok_or(ResourceTemplateError::Missing(name))
    };
    let t = TypeRef {
        api_version: field("apiVersion")?,
        kind: field("kind")?,
    };
    if let Some(m) = obj.get("metadata")
        && !m.is_object()
        && !m.is_null()
    {
        return Err(ResourceTemplateError::Shape(
            "metadata must be an object".into(),
        ));
    }
    Ok(t)
}

/// Checks a rule's template before any event needs it (rendered without event data) and says which
/// kind it creates.
pub fn validate(action: &ResourceAction) -> Result<TypeRef, ResourceTemplateError> {
    let obj = render_object(&template_text(action), &json!({}))?;
    type_of(&obj)
}

/// Every string of `v` without the characters that end or structure a YAML scalar, so a template
/// rendered with it has the shape the author wrote, and conditions on ordinary values still agree.
fn inert(v: &Value) -> Value {
    match v {
        // Names (`route.name`, `event.delivery`) keep their dashes, so a key made from one stays the
        // same key; only a leading dash could start a YAML list item.
        Value::String(s) => Value::String(
            s.chars()
                .filter(|c| !"'\"\\:,#{}[]&*!|>%@`?\n\r\t".contains(*c))
                .collect::<String>()
                .trim_start_matches('-')
                .to_owned(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(inert).collect()),
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), inert(v))).collect()),
        other => other.clone(),
    }
}

/// Same keys and list lengths all the way down; scalars may differ.
fn same_shape(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_shape(v, w)))
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(v, w)| same_shape(v, w))
        }
        (Value::Object(_) | Value::Array(_), _) | (_, Value::Object(_) | Value::Array(_)) => false,
        _ => true,
    }
}

/// The labels a resource action's object carries: the Jobs' labels, so one selector finds both.
pub fn labels(rule: &str, delivery: &WebhookDelivery) -> Map<String, Value> {
    let spec = &delivery.spec;
    [
        (LABEL_ROUTE, naming::label_value(&spec.route)),
        (LABEL_RULE, naming::label_value(rule)),
        (LABEL_EVENT_TYPE, naming::label_value(&spec.event_type)),
        (LABEL_DELIVERY, naming::label_value(&delivery.name_any())),
        (LABEL_MANAGED_BY, MANAGED_BY.to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), Value::String(v)))
    .collect()
}

/// The object `rule` creates for the delivery in `ctx`: rendered, named like its Job would be, in the
/// delivery's namespace, owned by the delivery and labelled. `expected` is the kind the route was
/// checked with.
pub fn build(
    rule: &str,
    action: &ResourceAction,
    ctx: &EventContext<'_>,
    expected: Option<&TypeRef>,
) -> Result<(TypeRef, Value), ResourceTemplateError> {
    let text = template_text(action);
    let values = ctx.template_values();
    let mut obj = render_object(&text, &values)?;
    let shadow = render_object(&text, &inert(&values))?;
    if !same_shape(&Value::Object(obj.clone()), &Value::Object(shadow)) {
        return Err(ResourceTemplateError::Breakout);
    }
    let t = type_of(&obj)?;
    if let Some(e) = expected
        && *e != t
    {
        return Err(ResourceTemplateError::KindChanged(t.to_string()));
    }
    let d = ctx.delivery;
    let written = match obj.remove("metadata") {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    let mut all_labels = match written.get("labels") {
        Some(Value::Object(l)) => l.clone(),
        _ => Map::new(),
    };
    all_labels.extend(labels(rule, d));
    // Each replay makes objects of its own, as it makes Jobs; earlier ones stay as they were.
    let run = d.status.as_ref().map_or(
        0,
        crate::resources::delivery::WebhookDeliveryStatus::replay_count,
    );
    let mut meta = json!({
        "name": naming::job_name_for_run(&d.spec.route, rule, &d.spec.event_id, run),
        "namespace": d.namespace(),
        "labels": all_labels,
        "ownerReferences": d.controller_owner_ref(&()).map(|o| vec![o]),
    });
    if let Some(a @ Value::Object(_)) = written.get("annotations") {
        meta["annotations"] = a.clone();
    }
    obj.insert("apiVersion".into(), Value::String(t.api_version.clone()));
    obj.insert("kind".into(), Value::String(t.kind.clone()));
    obj.insert("metadata".into(), meta);
    // Status belongs to whoever runs the object.
    obj.remove("status");
    Ok((t, Value::Object(obj)))
}

/// What an object's status says about its action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Not finished (or nothing says so yet).
    Running,
    /// Finished well.
    Succeeded,
    /// Finished badly; why, for a person.
    Failed(String),
}

/// An outcome plus what the object last said about itself, for the delivery's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// Running, succeeded or failed.
    pub outcome: Outcome,
    /// The deciding condition or phase, e.g. `Succeeded=True (Succeeded): All Tasks have completed`.
    pub observed: Option<String>,
}

/// Why a `succeededWhen`/`failedWhen` could not be used at all (the action fails).
#[derive(Debug, PartialEq, thiserror::Error)]
#[error("{field}: {error}")]
pub struct CompletionError {
    /// `succeededWhen` or `failedWhen`.
    pub field: &'static str,
    /// What went wrong.
    #[source]
    pub error: WhenError,
}

impl CompletionError {
    /// The reason word for a status.
    pub fn reason(&self) -> &'static str {
        self.error.reason()
    }
}

fn conditions(obj: &Value) -> Vec<&Map<String, Value>> {
    obj.pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
        .collect()
}

fn text<'a>(m: &'a Map<String, Value>, key: &str) -> &'a str {
    m.get(key).and_then(Value::as_str).unwrap_or_default()
}

fn describe(c: &Map<String, Value>) -> String {
    let mut s = format!("{}={}", text(c, "type"), text(c, "status"));
    if !text(c, "reason").is_empty() {
        s.push_str(&format!(" ({})", text(c, "reason")));
    }
    if !text(c, "message").is_empty() {
        s.push_str(&format!(": {}", text(c, "message")));
    }
    s
}

fn phase(obj: &Value) -> Option<&str> {
    obj.pointer("/status/phase")
        .and_then(Value::as_str)
        .filter(|p| !p.is_empty())
}

/// What the object says about itself, most telling first: its `Succeeded` condition, its phase, then
/// its latest condition.
pub fn summary(obj: &Value) -> Option<String> {
    let conds = conditions(obj);
    if let Some(c) = conds.iter().find(|c| text(c, "type") == "Succeeded") {
        return Some(crate::text::truncate(&describe(c), 512));
    }
    if let Some(p) = phase(obj) {
        let message = obj
            .pointer("/status/message")
            .and_then(Value::as_str)
            .filter(|m| !m.is_empty());
        let s = match message {
            Some(m) => format!("phase {p}: {m}"),
            None => format!("phase {p}"),
        };
        return Some(crate::text::truncate(&s, 512));
    }
    let latest = conds
        .iter()
        .max_by_key(|c| text(c, "lastTransitionTime").to_owned())?;
    Some(crate::text::truncate(&describe(latest), 512))
}

/// The conventions most kinds follow: a `Succeeded` condition (Tekton, Knative), `Complete`/`Failed`
/// conditions (Job), or `status.phase` (Argo Workflows, Pods).
pub fn default_outcome(obj: &Value) -> Outcome {
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("object");
    let conds = conditions(obj);
    let holding = |t: &str| {
        conds
            .iter()
            .find(|c| text(c, "type") == t && text(c, "status") == "True")
    };
    if let Some(c) = conds.iter().find(|c| text(c, "type") == "Succeeded") {
        match text(c, "status") {
            "True" => return Outcome::Succeeded,
            "False" => return Outcome::Failed(format!("{kind} failed: {}", describe(c))),
            _ => {}
        }
    }
    if holding("Complete").is_some() {
        return Outcome::Succeeded;
    }
    if let Some(c) = holding("Failed") {
        return Outcome::Failed(format!("{kind} failed: {}", describe(c)));
    }
    match phase(obj) {
        Some("Succeeded") => Outcome::Succeeded,
        Some(p @ ("Failed" | "Error")) => {
            let message = obj
                .pointer("/status/message")
                .and_then(Value::as_str)
                .unwrap_or_default();
            Outcome::Failed(
                format!("{kind} failed: phase {p} {message}")
                    .trim()
                    .to_owned(),
            )
        }
        _ => Outcome::Running,
    }
}

/// One expression over `object`: `Ok(None)` when it could not be evaluated on this version of the
/// object (a field not there yet), which counts as no match.
fn check(
    field: &'static str,
    source: &str,
    obj: &Value,
    limit: u64,
) -> Result<Option<bool>, CompletionError> {
    match when::evaluate_with(source, [("object", obj.clone())], limit) {
        Ok(b) => Ok(Some(b)),
        Err(WhenError::Failed(_)) => Ok(None),
        Err(error) => Err(CompletionError { field, error }),
    }
}

/// What `obj` says about the action: `failedWhen` first, then `succeededWhen`; each one unset falls back
/// to [`default_outcome`] for its side.
pub fn observe(
    action: &ResourceAction,
    obj: &Value,
    limit: u64,
) -> Result<Observation, CompletionError> {
    let default = default_outcome(obj);
    let failed = match &action.failed_when {
        Some(src) => check("failedWhen", src, obj, limit)? == Some(true),
        None => matches!(default, Outcome::Failed(_)),
    };
    let observed = summary(obj);
    if failed {
        let why = match (&action.failed_when, &default) {
            (None, Outcome::Failed(why)) => why.clone(),
            _ => format!(
                "failedWhen is true{}",
                observed
                    .as_deref()
                    .map(|o| format!(" ({o})"))
                    .unwrap_or_default()
            ),
        };
        return Ok(Observation {
            outcome: Outcome::Failed(why),
            observed,
        });
    }
    let succeeded = match &action.succeeded_when {
        Some(src) => check("succeededWhen", src, obj, limit)? == Some(true),
        None => default == Outcome::Succeeded,
    };
    Ok(Observation {
        outcome: if succeeded {
            Outcome::Succeeded
        } else {
            Outcome::Running
        },
        observed,
    })
}

#[cfg(test)]
mod tests;

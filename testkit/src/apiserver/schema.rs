//! CRD `openAPIV3Schema` handling: pruning, defaulting and validation.
//!
//! The real server works on the *structural* schema directly. Here pruning and defaulting walk
//! the structural schema as written in the CRD, and validation hands a JSON Schema (2020-12)
//! translation to the `jsonschema` crate. The translation:
//! - `nullable: true` adds `null` to the allowed types;
//! - `x-kubernetes-int-or-string` allows integers and strings;
//! - `x-kubernetes-preserve-unknown-fields` / `x-kubernetes-embedded-resource` only affect
//!   pruning (JSON Schema allows unknown properties anyway);
//! - OpenAPI 3.0 boolean `exclusiveMinimum/Maximum` become the 2020-12 numeric form;
//! - `format` is dropped (int32/int64/date-time are not range- or syntax-checked);
//! - every other `x-kubernetes-*` key is dropped, so `x-kubernetes-validations` (CEL) rules,
//!   list-type/map-keys uniqueness and `x-kubernetes-list-type: set` are NOT enforced.

use jsonschema::error::ValidationErrorKind;
use serde_json::{Map, Value, json};

pub(crate) struct Schema {
    structural: Value,
    validator: jsonschema::Validator,
}

impl std::fmt::Debug for Schema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Schema").finish_non_exhaustive()
    }
}

fn is_true(m: &Map<String, Value>, key: &str) -> bool {
    m.get(key).and_then(Value::as_bool).unwrap_or(false)
}

fn convert(node: &Value, root: bool) -> Value {
    let Some(m) = node.as_object() else {
        return node.clone();
    };
    let mut out = Map::new();
    for (k, v) in m {
        match k.as_str() {
            "nullable" | "format" | "example" | "externalDocs" | "discriminator" | "readOnly"
            | "writeOnly" | "xml" | "deprecated" | "exclusiveMinimum" | "exclusiveMaximum" => {}
            k if k.starts_with("x-kubernetes-") => {}
            "properties" | "patternProperties" | "definitions" => {
                let props = v
                    .as_object()
                    .map(|p| {
                        p.iter()
                            .map(|(pk, pv)| (pk.clone(), convert(pv, false)))
                            .collect()
                    })
                    .unwrap_or_default();
                out.insert(k.clone(), Value::Object(props));
            }
            "items" | "additionalProperties" | "not" => {
                out.insert(k.clone(), convert(v, false));
            }
            "allOf" | "anyOf" | "oneOf" => {
                let arr = v
                    .as_array()
                    .map(|a| a.iter().map(|x| convert(x, false)).collect())
                    .unwrap_or_default();
                out.insert(k.clone(), Value::Array(arr));
            }
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    for (flag, bound) in [
        ("exclusiveMinimum", "minimum"),
        ("exclusiveMaximum", "maximum"),
    ] {
        match m.get(flag) {
            Some(Value::Bool(true)) => {
                if let Some(b) = out.remove(bound) {
                    out.insert(flag.to_string(), b);
                }
            }
            Some(n @ Value::Number(_)) => {
                out.insert(flag.to_string(), n.clone());
            }
            _ => {}
        }
    }
    if is_true(m, "x-kubernetes-int-or-string") && !out.contains_key("type") {
        out.insert("type".into(), json!(["integer", "string"]));
        // k8s int-or-string schemas often carry an `anyOf` of the two types, which is redundant.
        out.remove("anyOf");
    }
    if root {
        // The server validates ObjectMeta itself; CRD schemas may only say `type: object` there.
        let props = out.entry("properties").or_insert_with(|| json!({}));
        if let Some(p) = props.as_object_mut() {
            p.insert("metadata".into(), json!({ "type": "object" }));
            p.insert("apiVersion".into(), json!({ "type": "string" }));
            p.insert("kind".into(), json!({ "type": "string" }));
        }
    }
    if is_true(m, "nullable") {
        match out.get("type").cloned() {
            Some(Value::String(t)) if !out.contains_key("enum") => {
                out.insert("type".into(), json!([t, "null"]));
            }
            _ => return json!({ "anyOf": [{ "type": "null" }, Value::Object(out)] }),
        }
    }
    Value::Object(out)
}

/// Fields the server always keeps on a resource root or an embedded resource.
const META_KEYS: [&str; 3] = ["apiVersion", "kind", "metadata"];

fn prune(schema: &Value, v: &mut Value, keep_meta: bool) {
    let Some(s) = schema.as_object() else { return };
    match v {
        Value::Object(obj) => {
            let preserve = is_true(s, "x-kubernetes-preserve-unknown-fields");
            let keep_meta = keep_meta || is_true(s, "x-kubernetes-embedded-resource");
            let props = s.get("properties").and_then(Value::as_object);
            let addl = s.get("additionalProperties");
            let addl_schema = addl.filter(|a| a.is_object());
            if let Some(props) = props {
                for (k, ps) in props {
                    if let Some(d) = ps.get("default")
                        && !obj.contains_key(k)
                    {
                        obj.insert(k.clone(), d.clone());
                    }
                }
            }
            let addl_allows = addl.is_some_and(|a| a.is_object() || a.as_bool() == Some(true));
            if !preserve && !addl_allows {
                obj.retain(|k, _| {
                    props.is_some_and(|p| p.contains_key(k))
                        || (keep_meta && META_KEYS.contains(&k.as_str()))
                });
            }
            for (k, child) in obj.iter_mut() {
                if keep_meta && META_KEYS.contains(&k.as_str()) {
                    continue;
                }
                if let Some(ps) = props.and_then(|p| p.get(k)) {
                    prune(ps, child, false);
                } else if let Some(a) = addl_schema {
                    prune(a, child, false);
                }
            }
        }
        Value::Array(items) => {
            if let Some(is) = s.get("items") {
                for item in items {
                    prune(is, item, false);
                }
            }
        }
        _ => {}
    }
}

/// `/spec/items/0/name` → `spec.items[0].name`, the way field errors name paths.
fn dotted(pointer: &str) -> String {
    let mut out = String::new();
    for seg in pointer.split('/').skip(1) {
        let seg = seg.replace("~1", "/").replace("~0", "~");
        if seg.parse::<usize>().is_ok() {
            out.push_str(&format!("[{seg}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&seg);
        }
    }
    out
}

impl Schema {
    pub fn compile(openapi: &Value) -> Result<Self, String> {
        let converted = convert(openapi, true);
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .build(&converted)
            .map_err(|e| format!("invalid openAPIV3Schema: {e}"))?;
        Ok(Self {
            structural: openapi.clone(),
            validator,
        })
    }

    /// Drops fields the schema does not declare and fills in `default`s, as the real server
    /// does on every write.
    pub fn prune_and_default(&self, obj: &mut Value) {
        prune(&self.structural, obj, true);
    }

    /// Field errors as `(field path, message)`.
    pub fn validate(&self, obj: &Value) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .validator
            .iter_errors(obj)
            .map(|e| {
                let path = dotted(e.instance_path.as_str());
                match &e.kind {
                    ValidationErrorKind::Required { property } => {
                        let prop = property
                            .as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| property.to_string());
                        let field = if path.is_empty() {
                            prop
                        } else {
                            format!("{path}.{prop}")
                        };
                        (field, "Required value".to_string())
                    }
                    _ => {
                        let shown = if path.is_empty() {
                            "<root>".to_string()
                        } else {
                            path.clone()
                        };
                        (
                            path,
                            format!("Invalid value: {}: {shown} in body: {e}", e.instance),
                        )
                    }
                }
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Schema {
        Schema::compile(&json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "required": ["count"],
                    "properties": {
                        "count": { "type": "integer", "format": "int32", "minimum": 1 },
                        "mode": { "type": "string", "enum": ["a", "b"], "default": "a" },
                        "note": { "type": "string", "nullable": true },
                        "port": { "x-kubernetes-int-or-string": true },
                        "free": { "type": "object", "x-kubernetes-preserve-unknown-fields": true },
                        "labels": { "type": "object", "additionalProperties": { "type": "string" } },
                        "lim": { "type": "integer", "maximum": 5, "exclusiveMaximum": true }
                    }
                },
                "status": { "type": "object", "properties": { "ok": { "type": "boolean" } } }
            }
        }))
        .expect("compiles")
    }

    #[test]
    fn prunes_defaults_and_validates() {
        let s = schema();
        let mut o = json!({
            "apiVersion": "x/v1", "kind": "X", "metadata": {"name": "a", "labels": {"k": "v"}},
            "spec": {"count": 2, "junk": 1, "port": "http", "note": null,
                     "free": {"any": {"thing": 1}}, "labels": {"a": "b"}},
            "status": {"ok": true, "junk": 2},
            "toplevel": 1
        });
        s.prune_and_default(&mut o);
        assert_eq!(o["spec"].get("junk"), None);
        assert_eq!(o.get("toplevel"), None);
        assert_eq!(o["status"].get("junk"), None);
        assert_eq!(o["spec"]["mode"], "a");
        assert_eq!(o["spec"]["free"]["any"]["thing"], 1);
        assert_eq!(o["metadata"]["labels"]["k"], "v");
        assert!(s.validate(&o).is_empty(), "{:?}", s.validate(&o));

        let bad = json!({"spec": {"count": "x", "mode": "c", "lim": 5}});
        let errs = s.validate(&bad);
        let fields: Vec<_> = errs.iter().map(|(f, _)| f.as_str()).collect();
        assert!(fields.contains(&"spec.count"), "{errs:?}");
        assert!(fields.contains(&"spec.mode"), "{errs:?}");
        assert!(fields.contains(&"spec.lim"), "{errs:?}");

        let missing = s.validate(&json!({"spec": {}}));
        assert_eq!(
            missing,
            vec![("spec.count".to_string(), "Required value".to_string())]
        );
    }
}

//! Admission: the checks and rewrites every create and update goes through (type/name/namespace
//! consistency, Secret `stringData`, CRD pruning/defaulting/validation, metadata syntax,
//! finalizer rules).

use base64::Engine as _;
use serde_json::{Map, Value, json};

use super::ctx::Ctx;
use super::error::ApiError;
use super::store::meta_str;

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn is_label_value(s: &str) -> bool {
    s.is_empty()
        || (s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && s.starts_with(|c: char| c.is_ascii_alphanumeric())
            && s.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

fn is_qualified_name(s: &str) -> bool {
    match s.rsplit_once('/') {
        Some((prefix, name)) => {
            is_dns_subdomain(prefix) && !name.is_empty() && is_label_value(name)
        }
        None => !s.is_empty() && is_label_value(s),
    }
}

/// The object's metadata map, created if missing. `None` only for a non-object body, which
/// `check_type_meta` rejects before anything calls this.
pub(crate) fn meta_mut(obj: &mut Value) -> Option<&mut Map<String, Value>> {
    let o = obj.as_object_mut()?;
    let meta = o.entry("metadata").or_insert_with(|| json!({}));
    if !meta.is_object() {
        *meta = json!({});
    }
    meta.as_object_mut()
}

pub(crate) fn check_type_meta(ctx: &Ctx, body: &Value) -> Result<(), ApiError> {
    if !body.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    if let Some(k) = body.get("kind").and_then(Value::as_str)
        && k != ctx.rt.kind
    {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({k}) does not match the expected kind ({})",
            ctx.rt.kind
        )));
    }
    if let Some(v) = body.get("apiVersion").and_then(Value::as_str)
        && v != ctx.rt.api_version()
    {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({v}) does not match the expected API version ({})",
            ctx.rt.api_version()
        )));
    }
    Ok(())
}

pub(crate) fn check_namespace(ctx: &Ctx, obj: &mut Value) -> Result<(), ApiError> {
    let Some(meta) = meta_mut(obj) else {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    };
    if !ctx.rt.namespaced {
        meta.remove("namespace");
        return Ok(());
    }
    match meta.get("namespace").and_then(Value::as_str) {
        Some(ns) if !ns.is_empty() && ns != ctx.ns => Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        )),
        _ => {
            meta.insert("namespace".into(), json!(ctx.ns));
            Ok(())
        }
    }
}

pub(crate) fn check_name(obj: &mut Value, path_name: &str) -> Result<(), ApiError> {
    let Some(meta) = meta_mut(obj) else {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    };
    match meta.get("name").and_then(Value::as_str) {
        Some(n) if n != path_name => Err(ApiError::bad_request(format!(
            "the name of the object ({n}) does not match the name on the URL ({path_name})"
        ))),
        _ => {
            meta.insert("name".into(), json!(path_name));
            Ok(())
        }
    }
}

fn convert_string_data(obj: &mut Value) -> Result<(), ApiError> {
    let Some(o) = obj.as_object_mut() else {
        return Ok(());
    };
    if let Some(Value::Object(sd)) = o.remove("stringData") {
        let data = o.entry("data").or_insert_with(|| json!({}));
        if !data.is_object() {
            *data = json!({});
        }
        for (k, v) in sd {
            let raw = v
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string());
            data[k.as_str()] = json!(base64::engine::general_purpose::STANDARD.encode(raw));
        }
    }
    if let Some(data) = o.get("data").and_then(Value::as_object) {
        for (k, v) in data {
            let ok = v
                .as_str()
                .is_some_and(|s| base64::engine::general_purpose::STANDARD.decode(s).is_ok());
            if !ok {
                return Err(ApiError::bad_request(format!(
                    "data[{k}]: illegal base64 data"
                )));
            }
        }
    }
    Ok(())
}

/// Validation that applies to every create and update.
pub(crate) fn admit(ctx: &Ctx, obj: &mut Value, old: Option<&Value>) -> Result<(), ApiError> {
    if ctx.rt.kind == "Secret" && ctx.rt.group.is_empty() {
        convert_string_data(obj)?;
    }
    if let Some(schema) = &ctx.rt.schema {
        schema.prune_and_default(obj);
    }
    let name = meta_str(obj, "name").unwrap_or_default().to_string();
    let mut causes = Vec::new();
    if !is_dns_subdomain(&name) {
        causes.push((
            "metadata.name".to_string(),
            format!(
                "Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
            ),
        ));
    }
    for (field, check) in [("labels", true), ("annotations", false)] {
        if let Some(m) = obj
            .pointer(&format!("/metadata/{field}"))
            .and_then(Value::as_object)
        {
            for (k, v) in m {
                if !is_qualified_name(k) {
                    causes.push((format!("metadata.{field}"), format!("Invalid value: {k:?}: name part must consist of alphanumeric characters, '-', '_' or '.'")));
                }
                if check && !v.as_str().is_some_and(is_label_value) {
                    causes.push(("metadata.labels".to_string(), format!("Invalid value: {v}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character")));
                }
            }
        }
    }
    if let Some(old) = old
        && old.pointer("/metadata/deletionTimestamp").is_some()
    {
        let before = old
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array);
        let added = obj
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|f| !before.is_some_and(|b| b.contains(f)));
        if added {
            causes.push((
                "metadata.finalizers".to_string(),
                "Forbidden: no new finalizers can be added if the object is being deleted"
                    .to_string(),
            ));
        }
    }
    if let Some(schema) = &ctx.rt.schema {
        causes.extend(schema.validate(obj));
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(ctx.kind_target(&name), causes))
    }
}

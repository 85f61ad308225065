//! Field ownership (`metadata.managedFields`) and the server-side-apply merge.
//!
//! A field path is a list of `fieldsV1` segments: `f:<name>` for a map key and `k:<json>` for an
//! item of a keyed list (a list of objects that all carry `name`, `type` or `uid`, see
//! [`super::patch::guess_list_key`]). Scalars, other lists and empty maps are leaves: they are
//! owned as a whole. Only leaves are recorded (no `"."` self markers are written; they are
//! accepted when reading).

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use super::patch::guess_list_key;

pub(crate) type Path = Vec<String>;
pub(crate) type FieldSet = BTreeSet<Path>;

#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub manager: String,
    pub operation: String,
    pub api_version: String,
    pub time: String,
    pub subresource: String,
    pub fields: FieldSet,
}

/// Which part of an object a write may touch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Scope {
    /// The main resource; `status` is excluded when the type has a status subresource.
    Main {
        has_status: bool,
    },
    Status,
}

impl Scope {
    pub fn subresource(self) -> &'static str {
        match self {
            Scope::Main { .. } => "",
            Scope::Status => "status",
        }
    }

    fn includes_top(self, key: &str) -> bool {
        match self {
            Scope::Status => key == "status",
            Scope::Main { has_status } => {
                !(matches!(key, "apiVersion" | "kind") || (has_status && key == "status"))
            }
        }
    }
}

/// The metadata fields that are user-owned; the rest is server-managed.
const OWNED_METADATA: [&str; 4] = ["labels", "annotations", "finalizers", "ownerReferences"];

fn key_segment(item: &Value, key: &str) -> String {
    let mut m = Map::new();
    m.insert(
        key.to_string(),
        item.get(key).cloned().unwrap_or(Value::Null),
    );
    format!("k:{}", Value::Object(m))
}

fn collect(v: &Value, prefix: &mut Path, out: &mut FieldSet) {
    match v {
        // An empty map owns nothing: a write that empties `spec` (a Lease release that nulls every
        // field) must not make its writer the owner of `.spec`, or every later apply into `spec` would
        // conflict with it. The real server's field sets do not let a parent path conflict with a
        // child either.
        Value::Null => {}
        Value::Object(m) if m.is_empty() => {}
        Value::Object(m) => {
            for (k, c) in m {
                prefix.push(format!("f:{k}"));
                collect(c, prefix, out);
                prefix.pop();
            }
        }
        Value::Array(items) if !items.is_empty() => match guess_list_key(items, &[]) {
            Some(key) => {
                for item in items {
                    prefix.push(key_segment(item, key));
                    collect(item, prefix, out);
                    prefix.pop();
                }
            }
            None => {
                out.insert(prefix.clone());
            }
        },
        _ => {
            out.insert(prefix.clone());
        }
    }
}

/// The leaf paths of `obj` that a writer in `scope` can own.
pub(crate) fn leaves(obj: &Value, scope: Scope) -> FieldSet {
    let mut out = FieldSet::new();
    let Some(m) = obj.as_object() else { return out };
    let mut prefix = Path::new();
    for (k, v) in m {
        if !scope.includes_top(k) {
            continue;
        }
        prefix.push(format!("f:{k}"));
        if k == "metadata" {
            if let Some(meta) = v.as_object() {
                for (mk, mv) in meta
                    .iter()
                    .filter(|(mk, _)| OWNED_METADATA.contains(&mk.as_str()))
                {
                    prefix.push(format!("f:{mk}"));
                    collect(mv, &mut prefix, &mut out);
                    prefix.pop();
                }
            }
        } else {
            collect(v, &mut prefix, &mut out);
        }
        prefix.pop();
    }
    out
}

fn item_matches(item: &Value, key: &Map<String, Value>) -> bool {
    key.iter().all(|(k, v)| item.get(k) == Some(v))
}

fn parse_key(seg: &str) -> Option<Map<String, Value>> {
    seg.strip_prefix("k:")
        .and_then(|j| serde_json::from_str::<Value>(j).ok())
        .and_then(|v| v.as_object().cloned())
}

pub(crate) fn get_at<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = v;
    for seg in path {
        cur = if let Some(name) = seg.strip_prefix("f:") {
            cur.get(name)?
        } else {
            let key = parse_key(seg)?;
            cur.as_array()?.iter().find(|i| item_matches(i, &key))?
        };
    }
    Some(cur)
}

/// Whether a map or keyed-list item has nothing left but its key fields.
fn is_hollow(v: &Value, key: Option<&Map<String, Value>>) -> bool {
    match v {
        Value::Object(m) => m.keys().all(|k| key.is_some_and(|key| key.contains_key(k))),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// Removes the field at `path`, then any maps/items that the removal left empty (but never a
/// top-level field such as `spec`).
fn remove_at(root: &mut Value, path: &[String]) {
    let Some((last, parent_path)) = path.split_last() else {
        return;
    };
    let Some(parent) = get_at_mut(root, parent_path) else {
        return;
    };
    if let Some(name) = last.strip_prefix("f:") {
        if let Some(m) = parent.as_object_mut() {
            m.remove(name);
        }
    } else if let (Some(key), Some(a)) = (parse_key(last), parent.as_array_mut()) {
        a.retain(|i| !item_matches(i, &key));
    }
    if parent_path.len() > 1 {
        let key = parent_path.last().and_then(|s| parse_key(s));
        if get_at(root, parent_path).is_some_and(|p| is_hollow(p, key.as_ref())) {
            remove_at(root, parent_path);
        }
    }
}

fn get_at_mut<'a>(v: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    let mut cur = v;
    for seg in path {
        cur = if let Some(name) = seg.strip_prefix("f:") {
            cur.get_mut(name)?
        } else {
            let key = parse_key(seg)?;
            cur.as_array_mut()?
                .iter_mut()
                .find(|i| item_matches(i, &key))?
        };
    }
    Some(cur)
}

/// Paths in `set` that overlap `p` (equal, an ancestor, or a descendant).
fn overlapping<'a>(set: &'a FieldSet, p: &'a Path) -> impl Iterator<Item = &'a Path> + 'a {
    let ancestors = (0..p.len()).filter_map(move |n| set.get(&p[..n].to_vec()));
    let descendants = set.range(p.clone()..).take_while(move |q| q.starts_with(p));
    ancestors.chain(descendants)
}

pub(crate) fn render_path(p: &Path) -> String {
    let mut s = String::new();
    for seg in p {
        if let Some(name) = seg.strip_prefix("f:") {
            s.push('.');
            s.push_str(name);
        } else if let Some(key) = parse_key(seg) {
            let inner: Vec<String> = key.iter().map(|(k, v)| format!("{k}={v}")).collect();
            s.push_str(&format!("[{}]", inner.join(",")));
        }
    }
    s
}

fn decode_fields(node: &Value, prefix: &mut Path, out: &mut FieldSet) {
    let Some(m) = node.as_object() else { return };
    if m.is_empty() {
        out.insert(prefix.clone());
        return;
    }
    for (k, child) in m {
        if k == "." {
            out.insert(prefix.clone());
            continue;
        }
        prefix.push(k.clone());
        decode_fields(child, prefix, out);
        prefix.pop();
    }
}

fn encode_fields(fields: &FieldSet) -> Value {
    let mut root = Map::new();
    for p in fields {
        let mut node = &mut root;
        for seg in p {
            let child = node.entry(seg.clone()).or_insert_with(|| json!({}));
            match child.as_object_mut() {
                Some(c) => node = c,
                None => break,
            }
        }
    }
    Value::Object(root)
}

pub(crate) fn decode(obj: &Value) -> Vec<Entry> {
    let Some(list) = obj
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    let s = |e: &Value, k: &str| {
        e.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    list.iter()
        .map(|e| {
            let mut fields = FieldSet::new();
            if let Some(f) = e.get("fieldsV1") {
                decode_fields(f, &mut Path::new(), &mut fields);
            }
            fields.remove(&Path::new());
            Entry {
                manager: s(e, "manager"),
                operation: s(e, "operation"),
                api_version: s(e, "apiVersion"),
                time: s(e, "time"),
                subresource: s(e, "subresource"),
                fields,
            }
        })
        .collect()
}

pub(crate) fn encode(entries: &[Entry]) -> Value {
    entries
        .iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            let mut v = json!({
                "manager": e.manager,
                "operation": e.operation,
                "apiVersion": e.api_version,
                "time": e.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": encode_fields(&e.fields),
            });
            if !e.subresource.is_empty() {
                v["subresource"] = json!(e.subresource);
            }
            v
        })
        .collect()
}

fn entry_index(
    entries: &mut Vec<Entry>,
    manager: &str,
    operation: &str,
    scope: Scope,
    api_version: &str,
    now: &str,
) -> usize {
    let sub = scope.subresource();
    if let Some(i) = entries
        .iter()
        .position(|e| e.manager == manager && e.operation == operation && e.subresource == sub)
    {
        return i;
    }
    entries.push(Entry {
        manager: manager.to_string(),
        operation: operation.to_string(),
        api_version: api_version.to_string(),
        time: now.to_string(),
        subresource: sub.to_string(),
        fields: FieldSet::new(),
    });
    entries.len() - 1
}

/// Ownership after a non-apply write (`Update` operation): the writer takes every field whose
/// value it changed, away from everyone else; removed fields are owned by nobody.
pub(crate) fn record_update(
    old: Option<&Value>,
    new: &Value,
    entries: &mut Vec<Entry>,
    manager: &str,
    scope: Scope,
    api_version: &str,
    now: &str,
) {
    let old_set = old.map(|o| leaves(o, scope)).unwrap_or_default();
    let new_set = leaves(new, scope);
    let changed: FieldSet = new_set
        .iter()
        .filter(|p| old.is_none_or(|o| get_at(o, p) != get_at(new, p)))
        .cloned()
        .collect();
    let removed: Vec<&Path> = old_set.difference(&new_set).collect();
    if changed.is_empty() && removed.is_empty() {
        return;
    }
    for e in entries.iter_mut() {
        let drop: Vec<Path> = changed
            .iter()
            .chain(removed.iter().copied())
            .flat_map(|p| overlapping(&e.fields, p).cloned().collect::<Vec<_>>())
            .collect();
        for q in drop {
            e.fields.remove(&q);
        }
    }
    if !changed.is_empty() {
        let i = entry_index(entries, manager, "Update", scope, api_version, now);
        entries[i].fields.extend(changed);
        entries[i].time = now.to_string();
        entries[i].api_version = api_version.to_string();
    }
    entries.retain(|e| !e.fields.is_empty());
}

pub(crate) struct Conflict {
    pub manager: String,
    pub api_version: String,
    pub path: Path,
}

/// `merge` for apply: maps merge recursively, keyed lists merge by key, `null` removes, anything
/// else replaces.
fn merge_apply(target: &mut Value, applied: &Value) {
    match (target, applied) {
        (Value::Object(t), Value::Object(a)) => {
            for (k, v) in a {
                if v.is_null() {
                    t.remove(k);
                } else if let Some(tv) = t.get_mut(k) {
                    merge_apply(tv, v);
                } else {
                    t.insert(k.clone(), v.clone());
                }
            }
        }
        (Value::Array(t), Value::Array(a)) if !t.is_empty() && guess_list_key(t, a).is_some() => {
            let key = guess_list_key(t, a).unwrap_or("name");
            for item in a {
                match t.iter_mut().find(|c| c.get(key) == item.get(key)) {
                    Some(existing) => merge_apply(existing, item),
                    None => t.push(item.clone()),
                }
            }
        }
        (t, a) => *t = a.clone(),
    }
}

/// Server-side apply of `applied` (already restricted to `scope`) by `manager` onto `live`
/// (`Value::Null` when the object does not exist yet). Returns the merged object and the new
/// ownership, or the conflicts when `force` is false.
pub(crate) fn apply(
    live: &Value,
    applied: &Value,
    manager: &str,
    force: bool,
    scope: Scope,
    api_version: &str,
    now: &str,
) -> Result<(Value, Vec<Entry>), Vec<Conflict>> {
    let mut entries = decode(live);
    let applied_set = leaves(applied, scope);
    let mut conflicts = Vec::new();
    for e in entries.iter_mut().filter(|e| e.manager != manager) {
        let mut lost = Vec::new();
        for p in &applied_set {
            for q in overlapping(&e.fields, p) {
                let shorter = if q.len() < p.len() { q } else { p };
                if get_at(live, shorter) != get_at(applied, shorter) {
                    lost.push(q.clone());
                    conflicts.push(Conflict {
                        manager: e.manager.clone(),
                        api_version: e.api_version.clone(),
                        path: q.clone(),
                    });
                }
            }
        }
        if force {
            for q in lost {
                e.fields.remove(&q);
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflicts);
    }
    let mut merged = if live.is_null() {
        json!({})
    } else {
        live.clone()
    };
    let me = entry_index(&mut entries, manager, "Apply", scope, api_version, now);
    let previous = std::mem::take(&mut entries[me].fields);
    for p in previous.difference(&applied_set) {
        let owned_elsewhere = entries
            .iter()
            .enumerate()
            .any(|(i, e)| i != me && overlapping(&e.fields, p).next().is_some());
        if !owned_elsewhere {
            remove_at(&mut merged, p);
        }
    }
    merge_apply(&mut merged, applied);
    if previous != applied_set {
        entries[me].time = now.to_string();
    }
    entries[me].fields = applied_set;
    entries[me].api_version = api_version.to_string();
    entries.retain(|e| !e.fields.is_empty());
    Ok((merged, entries))
}

pub(crate) fn conflict_message(conflicts: &[Conflict]) -> String {
    let n = conflicts.len();
    if n == 1 {
        let c = &conflicts[0];
        return format!(
            "Apply failed with 1 conflict: conflict with \"{}\" using {}: {}",
            c.manager,
            c.api_version,
            render_path(&c.path)
        );
    }
    let mut s = format!("Apply failed with {n} conflicts:");
    for c in conflicts {
        s.push_str(&format!(
            " conflict with \"{}\" using {}: {};",
            c.manager,
            c.api_version,
            render_path(&c.path)
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAIN: Scope = Scope::Main { has_status: true };

    fn with_entries(mut obj: Value, entries: &[Entry]) -> Value {
        obj["metadata"]["managedFields"] = encode(entries);
        obj
    }

    #[test]
    fn leaves_follow_keys_and_scope() {
        let o = json!({
            "apiVersion": "v1", "kind": "X",
            "metadata": {"name": "n", "labels": {"a": "b"}},
            "spec": {"x": 1, "c": [{"name": "c1", "image": "i"}], "args": ["a"]},
            "status": {"ok": true}
        });
        let l: Vec<String> = leaves(&o, MAIN).iter().map(render_path).collect();
        assert_eq!(
            l,
            vec![
                ".metadata.labels.a",
                ".spec.args",
                ".spec.c[name=\"c1\"].image",
                ".spec.c[name=\"c1\"].name",
                ".spec.x"
            ]
        );
        assert_eq!(leaves(&o, Scope::Status).len(), 1);
    }

    #[test]
    fn two_appliers_conflict_force_and_release() {
        let a = json!({"spec": {"x": 1, "y": 2}});
        let (live, e) = apply(&Value::Null, &a, "a", false, MAIN, "v1", "t")
            .map_err(|_| ())
            .expect("first apply");
        let live = with_entries(live, &e);
        // b agrees on x (shared) and adds z: no conflict.
        let (live, e) = apply(
            &live,
            &json!({"spec": {"x": 1, "z": 3}}),
            "b",
            false,
            MAIN,
            "v1",
            "t",
        )
        .map_err(|_| ())
        .expect("shared apply");
        let live = with_entries(live, &e);
        assert_eq!(live["spec"], json!({"x": 1, "y": 2, "z": 3}));
        let err = apply(
            &live,
            &json!({"spec": {"y": 9}}),
            "b",
            false,
            MAIN,
            "v1",
            "t",
        )
        .expect_err("conflict");
        assert!(conflict_message(&err).contains("conflict with \"a\""));
        let (live, e) = apply(
            &live,
            &json!({"spec": {"y": 9}}),
            "b",
            true,
            MAIN,
            "v1",
            "t",
        )
        .map_err(|_| ())
        .expect("forced");
        // b dropped x and z from its config: z is removed (b was its only owner), x stays (a owns it).
        assert_eq!(live["spec"], json!({"x": 1, "y": 9}));
        let owners: Vec<_> = e
            .iter()
            .map(|e| (e.manager.as_str(), e.fields.len()))
            .collect();
        assert_eq!(owners, vec![("a", 1), ("b", 1)]);
    }

    #[test]
    fn update_takes_ownership_of_changed_fields() {
        let old = json!({"spec": {"x": 1, "y": 2}});
        let mut e = Vec::new();
        record_update(None, &old, &mut e, "creator", MAIN, "v1", "t");
        let new = json!({"spec": {"x": 5, "y": 2}});
        record_update(Some(&old), &new, &mut e, "editor", MAIN, "v1", "t");
        let owners: Vec<_> = e
            .iter()
            .map(|e| (e.manager.as_str(), e.fields.len()))
            .collect();
        assert_eq!(owners, vec![("creator", 1), ("editor", 1)]);
    }

    #[test]
    fn an_update_that_empties_a_map_owns_nothing_and_blocks_no_apply() {
        // A Lease release: the holder's patch nulls every spec field.
        let held = json!({"spec": {"holderIdentity": "a", "renewTime": "t1"}});
        let mut e = Vec::new();
        record_update(None, &held, &mut e, "lease-a", MAIN, "v1", "t");
        let released = json!({"spec": {}});
        record_update(Some(&held), &released, &mut e, "lease-a", MAIN, "v1", "t");
        assert!(
            e.is_empty(),
            "{:?}",
            e.iter().map(|e| &e.fields).collect::<Vec<_>>()
        );
        let live = with_entries(released, &e);
        let taken = apply(
            &live,
            &json!({"spec": {"holderIdentity": "b"}}),
            "lease-b",
            false,
            MAIN,
            "v1",
            "t",
        );
        assert!(taken.is_ok(), "the released lease can be taken");
    }
}

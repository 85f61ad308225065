//! Non-apply patch types: JSON merge patch, a strategic-merge-patch approximation and JSON patch.

use serde_json::{Map, Value};

/// RFC 7386: objects merge recursively, `null` deletes, everything else (lists too) replaces.
pub(crate) fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// The key a list of objects is merged by, guessed from its items: `name`, else `type`
/// (conditions), else `uid` (ownerReferences). The real server takes it from the Go struct tags
/// (`patchMergeKey`), which agree with this guess for the common cases (containers, env,
/// volumes, conditions, ownerReferences) but not for e.g. `ports` (merged by `containerPort`).
pub(crate) fn guess_list_key(a: &[Value], b: &[Value]) -> Option<&'static str> {
    ["name", "type", "uid"].into_iter().find(|key| {
        let all = |l: &[Value]| {
            l.iter()
                .all(|i| i.get(*key).is_some_and(|k| !k.is_null() && !k.is_object()))
        };
        !(a.is_empty() && b.is_empty()) && all(a) && all(b)
    })
}

/// Strategic merge patch, approximated without the Go type information the real server uses:
/// - lists of objects whose items all carry `name`/`type`/`uid` are merged by that key, and an
///   item with `"$patch": "delete"` removes the matching item;
/// - `metadata.finalizers` is merged as a set (its real `patchStrategy` is `merge`), and
///   `$deleteFromPrimitiveList/finalizers` removes entries;
/// - every other list is replaced wholesale, `null` deletes, and other `$` directives
///   (`$retainKeys`, `$setElementOrder`, `$patch: replace`) are ignored.
pub(crate) fn strategic_merge_patch(target: &mut Value, patch: &Value, path: &[&str]) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(t) = target else { return };
    let in_metadata = path == ["metadata"];
    for (k, v) in p {
        if in_metadata && k == "$deleteFromPrimitiveList/finalizers" {
            if let (Some(Value::Array(cur)), Some(del)) = (t.get_mut("finalizers"), v.as_array()) {
                cur.retain(|f| !del.contains(f));
            }
            continue;
        }
        if k.starts_with('$') {
            continue;
        }
        if v.is_null() {
            t.remove(k);
            continue;
        }
        let slot = t.entry(k.clone()).or_insert(Value::Null);
        match (slot, v) {
            (Value::Array(cur), Value::Array(new)) if in_metadata && k == "finalizers" => {
                for f in new {
                    if !cur.contains(f) {
                        cur.push(f.clone());
                    }
                }
            }
            (Value::Array(cur), Value::Array(new)) => match guess_list_key(cur, new) {
                Some(key) => {
                    for item in new {
                        let pos = cur.iter().position(|c| c.get(key) == item.get(key));
                        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
                        match (pos, delete) {
                            (Some(i), true) => {
                                cur.remove(i);
                            }
                            (None, true) => {}
                            (Some(i), false) => strategic_merge_patch(&mut cur[i], item, &[]),
                            (None, false) => {
                                let mut fresh = Value::Object(Map::new());
                                strategic_merge_patch(&mut fresh, item, &[]);
                                cur.push(fresh);
                            }
                        }
                    }
                }
                None => *cur = new.clone(),
            },
            (slot, v) => {
                let mut child_path = path.to_vec();
                child_path.push(k);
                strategic_merge_patch(slot, v, &child_path);
            }
        }
    }
}

/// RFC 6902 with the leniency of the Go library the real server uses: a `test` for `null`
/// passes when the path does not exist (kube's finalizer helper relies on this).
pub(crate) fn json_patch(target: &mut Value, ops: &Value) -> Result<(), String> {
    let ops: Vec<json_patch::PatchOperation> =
        serde_json::from_value(ops.clone()).map_err(|e| format!("invalid JSON patch: {e}"))?;
    for op in ops {
        if let json_patch::PatchOperation::Test(t) = &op
            && t.value.is_null()
            && target.pointer(t.path.as_str()).is_none()
        {
            continue;
        }
        json_patch::patch(target, std::slice::from_ref(&op)).map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_replaces_lists_and_deletes_nulls() {
        let mut t = json!({"a": {"b": 1, "c": 2}, "l": [1, 2]});
        merge_patch(&mut t, &json!({"a": {"b": null, "d": 3}, "l": [3]}));
        assert_eq!(t, json!({"a": {"c": 2, "d": 3}, "l": [3]}));
    }

    #[test]
    fn strategic_merges_keyed_lists_and_finalizers() {
        let mut t = json!({
            "metadata": {"finalizers": ["a"]},
            "spec": {"containers": [{"name": "x", "image": "1"}, {"name": "y", "image": "2"}]}
        });
        strategic_merge_patch(
            &mut t,
            &json!({
                "metadata": {"finalizers": ["b"]},
                "spec": {"containers": [{"name": "y", "image": "3"}, {"name": "x", "$patch": "delete"}, {"name": "z"}]}
            }),
            &[],
        );
        assert_eq!(t["metadata"]["finalizers"], json!(["a", "b"]));
        assert_eq!(
            t["spec"]["containers"],
            json!([{"name": "y", "image": "3"}, {"name": "z"}])
        );
        strategic_merge_patch(
            &mut t,
            &json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}),
            &[],
        );
        assert_eq!(t["metadata"]["finalizers"], json!(["b"]));
    }

    #[test]
    fn json_patch_null_test_on_missing_path_passes() {
        let mut t = json!({"metadata": {}});
        json_patch(
            &mut t,
            &json!([{"op": "test", "path": "/metadata/finalizers", "value": null},
                    {"op": "add", "path": "/metadata/finalizers", "value": ["f"]}]),
        )
        .expect("applies");
        assert_eq!(t["metadata"]["finalizers"], json!(["f"]));
        assert!(
            json_patch(
                &mut t,
                &json!([{"op": "test", "path": "/metadata/finalizers/0", "value": "g"}])
            )
            .is_err()
        );
    }
}

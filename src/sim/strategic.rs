//! Strategic merge patch (`application/strategic-merge-patch+json`) for the built-in kinds the
//! simulator serves, with the patch strategies their Go types declare: maps merge (a `null`
//! deletes a key), `metadata.finalizers` merges as a set, `metadata.ownerReferences` by `uid`,
//! PVC `status.conditions` by `type`, every other list is replaced. The directives kubectl
//! sends are understood: `$patch: replace|delete|merge`, `$retainKeys`,
//! `$deleteFromPrimitiveList/FIELD` and `$setElementOrder/FIELD`.
//!
//! Custom resources (KubeVirt, CDI, Multus) take no strategic merge patch on a real cluster (the
//! API server answers 415), and the HTTP layer refuses it for them the same way.
//!
//! Pure; depends on nothing else in the crate.

use serde_json::{Map, Value};

/// Errors of a strategic merge patch, each a `400`/`422` on a real server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("unable to find api field in struct for the patch: the patch is not an object")]
    NotAnObject,
    #[error("invalid value for $patch: {0:?}")]
    BadDirective(String),
    #[error("{0} must be a list")]
    NotAList(String),
}

/// How a list at a path (field names from the root) merges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Strategy {
    Replace,
    /// A list of scalars merged as a set.
    Primitive,
    /// A list of objects merged by this key.
    Key(&'static str),
}

fn strategy(path: &[String]) -> Strategy {
    let p: Vec<&str> = path.iter().map(String::as_str).collect();
    match p.as_slice() {
        ["metadata", "finalizers"] => Strategy::Primitive,
        ["metadata", "ownerReferences"] => Strategy::Key("uid"),
        ["status", "conditions"] => Strategy::Key("type"),
        _ => Strategy::Replace,
    }
}

const PATCH: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList/";
const SET_ELEMENT_ORDER: &str = "$setElementOrder/";

/// Apply `patch` to `original`.
pub fn patch(original: &Value, patch: &Value) -> Result<Value, Error> {
    let (Some(orig), Some(p)) = (original.as_object(), patch.as_object()) else {
        return Err(Error::NotAnObject);
    };
    let mut out = orig.clone();
    merge_map(&mut out, p, &mut Vec::new())?;
    Ok(Value::Object(out))
}

fn merge_map(
    orig: &mut Map<String, Value>,
    patch: &Map<String, Value>,
    path: &mut Vec<String>,
) -> Result<(), Error> {
    match patch.get(PATCH).map(|v| v.as_str().unwrap_or_default()) {
        None | Some("merge") => {}
        Some("replace") => {
            *orig = patch.clone();
            orig.remove(PATCH);
            return Ok(());
        }
        Some("delete") => {
            orig.clear();
            return Ok(());
        }
        Some(other) => return Err(Error::BadDirective(other.to_string())),
    }
    for (k, v) in patch {
        if k == PATCH || k == RETAIN_KEYS || k.starts_with(SET_ELEMENT_ORDER) {
            continue;
        }
        if let Some(field) = k.strip_prefix(DELETE_FROM_PRIMITIVE_LIST) {
            let gone = v.as_array().ok_or_else(|| Error::NotAList(k.clone()))?;
            if let Some(Value::Array(list)) = orig.get_mut(field) {
                list.retain(|item| !gone.contains(item));
            }
            continue;
        }
        path.push(k.clone());
        match v {
            Value::Null => {
                orig.remove(k);
            }
            Value::Object(pm) => {
                let deleted = pm.get(PATCH).and_then(Value::as_str) == Some("delete");
                if deleted {
                    orig.remove(k);
                } else {
                    match orig.get_mut(k) {
                        Some(Value::Object(om)) => merge_map(om, pm, path)?,
                        _ => {
                            let mut fresh = Map::new();
                            merge_map(&mut fresh, pm, path)?;
                            orig.insert(k.clone(), Value::Object(fresh));
                        }
                    }
                }
            }
            Value::Array(items) => {
                let merged = merge_list(orig.get(k), items, strategy(path))?;
                orig.insert(k.clone(), Value::Array(merged));
            }
            scalar => {
                orig.insert(k.clone(), scalar.clone());
            }
        }
        path.pop();
    }
    if let Some(keep) = patch.get(RETAIN_KEYS).and_then(Value::as_array) {
        orig.retain(|k, _| keep.iter().any(|w| w.as_str() == Some(k)));
    }
    for (k, order) in patch {
        if let (Some(field), Some(order)) = (k.strip_prefix(SET_ELEMENT_ORDER), order.as_array())
            && let Some(Value::Array(list)) = orig.get_mut(field)
        {
            path.push(field.to_string());
            reorder(list, order, strategy(path));
            path.pop();
        }
    }
    Ok(())
}

fn merge_list(
    orig: Option<&Value>,
    patch: &[Value],
    strategy: Strategy,
) -> Result<Vec<Value>, Error> {
    let replace = patch
        .iter()
        .any(|i| i.get(PATCH).and_then(Value::as_str) == Some("replace"));
    let original = orig.and_then(Value::as_array);
    match (strategy, original) {
        (_, _) if replace => Ok(patch
            .iter()
            .filter(|i| i.get(PATCH).is_none())
            .cloned()
            .collect()),
        (Strategy::Replace, _) | (_, None) => Ok(patch
            .iter()
            .filter(|i| i.get(PATCH).is_none())
            .cloned()
            .collect()),
        (Strategy::Primitive, Some(list)) => {
            let mut out = list.clone();
            for item in patch {
                if !out.contains(item) {
                    out.push(item.clone());
                }
            }
            Ok(out)
        }
        (Strategy::Key(key), Some(list)) => {
            let mut out = list.clone();
            for item in patch {
                let Some(id) = item.get(key) else {
                    out.push(item.clone());
                    continue;
                };
                let at = out.iter().position(|o| o.get(key) == Some(id));
                let deleted = item.get(PATCH).and_then(Value::as_str) == Some("delete");
                match (at, item.as_object()) {
                    (Some(i), _) if deleted => {
                        out.remove(i);
                    }
                    (None, _) if deleted => {}
                    (Some(i), Some(pm)) => {
                        if let Value::Object(om) = &mut out[i] {
                            merge_map(om, pm, &mut Vec::new())?;
                        }
                    }
                    _ => out.push(item.clone()),
                }
            }
            Ok(out)
        }
    }
}

/// `$setElementOrder`: the listed items first, in that order, then the rest as they were.
fn reorder(list: &mut Vec<Value>, order: &[Value], strategy: Strategy) {
    let id = |item: &Value| match strategy {
        Strategy::Key(k) => item.get(k).cloned(),
        _ => Some(item.clone()),
    };
    let wanted: Vec<Value> = order.iter().filter_map(&id).collect();
    let mut out: Vec<Value> = Vec::with_capacity(list.len());
    for w in &wanted {
        if let Some(pos) = list.iter().position(|i| id(i).as_ref() == Some(w)) {
            out.push(list.remove(pos));
        }
    }
    out.append(list);
    *list = out;
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn maps_merge_and_null_deletes() {
        let orig = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "data": {"x": "1"}});
        let out = patch(
            &orig,
            &json!({"metadata": {"labels": {"a": null, "c": "3"}}, "data": {"$patch": "replace", "y": "2"}}),
        )
        .unwrap();
        assert_eq!(
            out,
            json!({"metadata": {"labels": {"b": "2", "c": "3"}}, "data": {"y": "2"}})
        );
    }

    #[test]
    fn lists_follow_their_strategy() {
        let orig = json!({
            "metadata": {"finalizers": ["a", "b"], "ownerReferences": [{"uid": "1", "name": "x"}, {"uid": "2"}]},
            "spec": {"accessModes": ["ReadWriteOnce"]},
        });
        let out = patch(
            &orig,
            &json!({
                "metadata": {
                    "finalizers": ["c"],
                    "$deleteFromPrimitiveList/finalizers": ["a"],
                    "ownerReferences": [{"uid": "1", "name": "y"}, {"uid": "2", "$patch": "delete"}],
                    "$setElementOrder/finalizers": ["c", "b"],
                },
                "spec": {"accessModes": ["ReadWriteMany"]},
            }),
        )
        .unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!(["c", "b"]));
        assert_eq!(
            out["metadata"]["ownerReferences"],
            json!([{"uid": "1", "name": "y"}])
        );
        assert_eq!(out["spec"]["accessModes"], json!(["ReadWriteMany"]));
        assert_eq!(
            patch(&orig, &json!({"metadata": {"$patch": "bogus"}})).unwrap_err(),
            Error::BadDirective("bogus".into())
        );
    }
}

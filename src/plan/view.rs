//! The live object as Wukong judges it: only what the fleet declares, plus what Wukong itself
//! set earlier and no longer declares (`kubevirt-facts.md` §6, "Principle").
//!
//! Other writers put fields into every object Wukong manages: KubeVirt's mutating webhook
//! re-serialises a VM's whole spec on every write (`domain.resources: {}`, `features.acpi`,
//! canonical quantities), its controllers add finalizers and annotations, KubeMacPool fills in
//! MAC addresses, people use `kubectl annotate`. None of that is drift. [`live_view`] projects a
//! live object onto the fields of the manifest Wukong would write:
//!
//! - maps by key: a key the manifest does not set is left out, unless Wukong's own field
//!   manager owns it in `metadata.managedFields` (FieldsV1) — then the fleet stopped declaring
//!   something Wukong set, and the field shows up as a difference (its removal);
//! - lists whose entries are named (`name`, or `metadata.name` for DataVolume templates) by
//!   name: entries the manifest does not name stay in the view, because KubeVirt's lists are
//!   atomic (the schemas declare no list type) and Wukong's next write replaces the whole list;
//!   keys inside an entry that the manifest does not set are left out (webhooks default them,
//!   and put them back after every write);
//! - quantities by value where KubeVirt writes them canonically (`2048Mi` is stored as `2Gi`);
//! - a list the manifest sends empty equals an absent one (Go's `omitempty` drops it), as do
//!   empty `labels`/`annotations` maps.
//!
//! Pure: no I/O. The planner compares the desired manifest with this view, so the plan only ever
//! judges what the fleet declares, and the executor takes held-back steps back to this view.

use serde_json::{Map, Value};

use crate::identity::FIELD_MANAGER;

/// The fields Wukong's field manager owns in a live object: the union of the FieldsV1 trees of
/// its `managedFields` entries, or `None` when it has none (an object Wukong never wrote, or a
/// snapshot taken without managed fields).
pub fn owned_fields(live: &Value) -> Option<Value> {
    let entries = live.pointer("/metadata/managedFields")?.as_array()?;
    let mut union: Option<Value> = None;
    for entry in entries {
        if entry.get("manager").and_then(Value::as_str) != Some(FIELD_MANAGER) {
            continue;
        }
        let Some(fields) = entry.get("fieldsV1") else {
            continue;
        };
        match &mut union {
            None => union = Some(fields.clone()),
            Some(u) => merge_fields(u, fields),
        }
    }
    union
}

fn merge_fields(into: &mut Value, from: &Value) {
    if let (Some(a), Some(b)) = (into.as_object_mut(), from.as_object()) {
        for (k, v) in b {
            match a.get_mut(k) {
                Some(existing) => merge_fields(existing, v),
                None => {
                    a.insert(k.clone(), v.clone());
                }
            }
        }
    }
}

/// The FieldsV1 set a server-side apply of `manifest` records for its manager: every map key,
/// lists whole (KubeVirt's lists declare no list type, so they are atomic). `apiVersion` and
/// `kind` are not fields. For models of the API server ([`super::converge`]) and tests.
pub fn applied_fields(manifest: &Value) -> Value {
    fn fields(v: &Value) -> Value {
        match v {
            Value::Object(m) => Value::Object(
                m.iter()
                    .map(|(k, v)| (format!("f:{k}"), fields(v)))
                    .collect(),
            ),
            _ => Value::Object(Map::new()),
        }
    }
    let mut f = fields(manifest);
    if let Some(m) = f.as_object_mut() {
        m.remove("f:apiVersion");
        m.remove("f:kind");
    }
    f
}

/// `live` as Wukong judges it against `declared` (the manifest it would write): see the module
/// documentation.
pub fn live_view(declared: &Value, live: &Value) -> Value {
    let owned = owned_fields(live);
    project(declared, live, owned.as_ref(), &mut Vec::new())
}

/// Keys Wukong writes for its own bookkeeping, never compared (a new Git revision is not a
/// change of the VM).
fn bookkeeping(path: &[&str], key: &str) -> bool {
    key == "managedFields" && path.len() == 1 && path[0] == "metadata"
}

fn project<'a>(d: &Value, l: &'a Value, owned: Option<&Value>, path: &mut Vec<&'a str>) -> Value {
    match (d, l) {
        (Value::Object(dm), Value::Object(lm)) => {
            let mut out = Map::new();
            for (k, dv) in dm {
                match lm.get_key_value(k) {
                    Some((lk, lv)) if !lv.is_null() => {
                        path.push(lk.as_str());
                        let child = owned.and_then(|o| o.get(format!("f:{k}")));
                        out.insert(k.clone(), project(dv, lv, child, path));
                        path.pop();
                    }
                    _ if empty_equals_absent(k, dv) => {
                        out.insert(k.clone(), dv.clone());
                    }
                    _ => {}
                }
            }
            // Keys the manifest no longer sets but Wukong's field manager owns: removals.
            if let Some(owned) = owned {
                for (k, lv) in lm {
                    if dm.contains_key(k) || lv.is_null() || bookkeeping(path, k) {
                        continue;
                    }
                    if let Some(child) = owned.get(format!("f:{k}")) {
                        out.insert(k.clone(), restrict(lv, child));
                    }
                }
            }
            Value::Object(out)
        }
        (Value::Array(da), Value::Array(la)) => project_list(da, la, path),
        (d, l) if is_quantity(path) && same_quantity(d, l) => d.clone(),
        (_, l) => l.clone(),
    }
}

/// A list: entries matched by name (keys inside them that the manifest does not set are left
/// out), entries the manifest does not name kept whole; unnamed lists element by element.
fn project_list<'a>(da: &[Value], la: &'a [Value], path: &mut Vec<&'a str>) -> Value {
    let key_of = match list_key(da, la) {
        Some(k) => k,
        None if da.len() == la.len() => {
            return Value::Array(
                da.iter()
                    .zip(la)
                    .map(|(d, l)| project(d, l, None, path))
                    .collect(),
            );
        }
        None => return Value::Array(la.to_vec()),
    };
    Value::Array(
        la.iter()
            .map(|l| {
                let name = key_of(l);
                match da.iter().find(|d| key_of(d) == name) {
                    Some(d) => project(d, l, None, path),
                    None => l.clone(),
                }
            })
            .collect(),
    )
}

type KeyFn = fn(&Value) -> Option<&str>;

/// How the entries of a list are named, when every entry of both lists is named the same way.
fn list_key(da: &[Value], la: &[Value]) -> Option<KeyFn> {
    let by_name: KeyFn = |v| v.get("name").and_then(Value::as_str);
    let by_meta_name: KeyFn = |v| v.pointer("/metadata/name").and_then(Value::as_str);
    let all =
        |f: KeyFn| !(da.is_empty() && la.is_empty()) && da.iter().chain(la).all(|v| f(v).is_some());
    if all(by_name) {
        Some(by_name)
    } else if all(by_meta_name) {
        Some(by_meta_name)
    } else {
        None
    }
}

/// The part of `live` that the FieldsV1 node `owned` covers: a leaf owns the whole value.
fn restrict(live: &Value, owned: &Value) -> Value {
    match (live, owned.as_object()) {
        (Value::Object(lm), Some(om)) if om.keys().any(|k| k.starts_with("f:")) => Value::Object(
            lm.iter()
                .filter_map(|(k, v)| {
                    owned
                        .get(format!("f:{k}"))
                        .map(|child| (k.clone(), restrict(v, child)))
                })
                .collect(),
        ),
        _ => live.clone(),
    }
}

/// A value the manifest sends that the API server may store as absent: an empty list (Go's
/// `omitempty` drops empty slices), or empty labels and annotations (empty maps).
fn empty_equals_absent(key: &str, d: &Value) -> bool {
    match d {
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.is_empty() && matches!(key, "labels" | "annotations"),
        Value::Null => true,
        _ => false,
    }
}

/// Whether the field at `path` is a Kubernetes quantity KubeVirt stores canonically.
fn is_quantity(path: &[&str]) -> bool {
    matches!(
        path,
        [.., "memory", "guest" | "maxGuest"]
            | [.., "hugepages", "pageSize"]
            | [.., "requests" | "limits" | "overhead" | "capacity", _]
    )
}

fn same_quantity(d: &Value, l: &Value) -> bool {
    let q = |v: &Value| -> Option<crate::quantity::Quantity> {
        match v {
            Value::String(s) => s.parse().ok(),
            Value::Number(n) => n.to_string().parse().ok(),
            _ => None,
        }
    };
    matches!((q(d), q(l)), (Some(a), Some(b)) if a == b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn managed(fields: Value) -> Value {
        json!([{"manager": "kubectl-edit", "operation": "Update", "fieldsV1": {"f:metadata": {"f:annotations": {"f:x": {}}}}},
               {"manager": FIELD_MANAGER, "operation": "Apply", "apiVersion": "kubevirt.io/v1", "fieldsV1": fields}])
    }

    #[test]
    fn fields_other_writers_add_are_not_in_the_view() {
        let declared = json!({
            "metadata": {"name": "vm", "labels": {"app": "db"}},
            "spec": {"template": {"spec": {
                "domain": {"cpu": {"sockets": 2}, "memory": {"guest": "2048Mi"},
                           "features": {},
                           "devices": {"interfaces": [{"name": "default", "masquerade": {}}]}},
                "networks": []}}}
        });
        let live = json!({
            "metadata": {"name": "vm", "uid": "u", "finalizers": ["kubevirt.io/virtualMachineControllerFinalize"],
                         "labels": {"app": "db", "team": "x"},
                         "annotations": {"kubevirt.io/latest-observed-api-version": "v1"}},
            "spec": {"template": {"metadata": {"annotations": {"kubevirt.io/pci-topology-version": "v3"}},
                                  "spec": {
                "architecture": "amd64",
                "domain": {"cpu": {"sockets": 2}, "memory": {"guest": "2Gi"}, "resources": {},
                           "features": {"acpi": {}},
                           "devices": {"interfaces": [{"name": "default", "masquerade": {}, "macAddress": "02:00:00:00:00:01"}]}}}}},
            "status": {"ready": true}
        });
        assert_eq!(live_view(&declared, &live), declared);
    }

    #[test]
    fn fields_wukong_set_and_no_longer_declares_are_removals() {
        let declared = json!({"metadata": {"name": "vm", "labels": {"app": "db"}}});
        let live = json!({"metadata": {
            "name": "vm",
            "labels": {"app": "db", "tier": "gold", "team": "x"},
            "annotations": {"x": "handmade"},
            "managedFields": managed(json!({"f:metadata": {"f:labels": {"f:app": {}, "f:tier": {}}}}))
        }});
        assert_eq!(
            live_view(&declared, &live),
            json!({"metadata": {"name": "vm", "labels": {"app": "db", "tier": "gold"}}})
        );
    }

    #[test]
    fn owned_subtrees_keep_only_what_wukong_owns() {
        let declared = json!({"spec": {}});
        let live = json!({
            "spec": {"template": {"spec": {"nodeSelector": {"zone": "a", "other": "b"}}}},
            "metadata": {"managedFields": managed(json!({"f:spec": {"f:template": {"f:spec": {"f:nodeSelector": {"f:zone": {}}}}}}))}
        });
        assert_eq!(
            live_view(&declared, &live),
            json!({"spec": {"template": {"spec": {"nodeSelector": {"zone": "a"}}}}})
        );
    }

    #[test]
    fn named_lists_match_by_name_and_keep_entries_the_manifest_drops() {
        let declared = json!({"disks": [{"name": "b", "disk": {}}, {"name": "a"}]});
        let live = json!({"disks": [{"name": "a", "disk": {"bus": "virtio"}},
                                    {"name": "b", "disk": {"bus": "virtio"}},
                                    {"name": "c"}]});
        assert_eq!(
            live_view(&declared, &live),
            json!({"disks": [{"name": "a"}, {"name": "b", "disk": {}}, {"name": "c"}]})
        );
    }

    #[test]
    fn data_volume_templates_match_by_metadata_name() {
        let declared = json!({"dataVolumeTemplates": [{"metadata": {"name": "vm-a"},
            "spec": {"storage": {"resources": {"requests": {"storage": "1024Mi"}}}}}]});
        let live = json!({"dataVolumeTemplates": [{"metadata": {"name": "vm-a", "creationTimestamp": null},
            "spec": {"storage": {"resources": {"requests": {"storage": "1Gi"}}}, "source": {"blank": {}}}}]});
        assert_eq!(live_view(&declared, &live), declared);
    }

    #[test]
    fn applied_fields_own_map_keys_and_whole_lists() {
        let m = json!({"apiVersion": "v1", "kind": "X",
                       "metadata": {"labels": {"a": "1"}},
                       "spec": {"list": [{"name": "x"}], "n": 1}});
        assert_eq!(
            applied_fields(&m),
            json!({"f:metadata": {"f:labels": {"f:a": {}}}, "f:spec": {"f:list": {}, "f:n": {}}})
        );
    }

    #[test]
    fn a_different_value_stays_different() {
        let declared = json!({"memory": {"guest": "4Gi"}, "sockets": 2, "bridge": {}});
        let live = json!({"memory": {"guest": "2Gi"}, "sockets": 4});
        assert_eq!(
            live_view(&declared, &live),
            json!({"memory": {"guest": "2Gi"}, "sockets": 4})
        );
    }

    #[test]
    fn quantities_compare_by_value_only_where_they_are_quantities() {
        let declared = json!({"labels": {"size": "1000m"}, "requests": {"cpu": "1000m"}});
        let live = json!({"labels": {"size": "1"}, "requests": {"cpu": "1"}});
        assert_eq!(
            live_view(&declared, &live),
            json!({"labels": {"size": "1"}, "requests": {"cpu": "1000m"}})
        );
    }
}

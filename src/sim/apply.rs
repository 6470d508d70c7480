//! Server-side apply and field ownership (`metadata.managedFields`), as the API server's field
//! manager does them: every write records which manager owns which fields (operation `Update`),
//! an apply (operation `Apply`) merges the applied configuration into the live object, takes
//! ownership of what it sets, removes what the same manager applied before and no longer applies
//! (unless another manager owns it too), and refuses with a conflict to change a value another
//! manager owns unless forced.
//!
//! Pure: takes objects and the managers' sets, returns the new object and sets. Depends only on
//! [`super::fieldpath`]; the store ([`super::store`]) calls it on every write.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use super::fieldpath::{
    self, Element, FieldSet, ListType, Path, Schema, field_set, item_element, path_string,
    remove_at, to_fields_v1, value_at,
};

/// Metadata the field manager never tracks (structured-merge-diff's stripped fields), plus the
/// server-owned deletion marks, which only the API server itself writes.
const UNTRACKED_METADATA: &[&str] = &[
    "name",
    "namespace",
    "creationTimestamp",
    "selfLink",
    "uid",
    "clusterName",
    "generation",
    "managedFields",
    "resourceVersion",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
];

/// Errors of tracking or applying.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Schema(#[from] fieldpath::Error),
    /// Another manager owns a field the apply would change. The message is the API server's.
    #[error("{message}")]
    Conflicts {
        message: String,
        /// (field path, "conflict with \"manager\"") per conflicting field.
        causes: Vec<(String, String)>,
    },
}

/// The operation of a managedFields entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Operation {
    Apply,
    Update,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Apply => "Apply",
            Operation::Update => "Update",
        }
    }
}

/// A manager's identity: its name, the operation, and the subresource it wrote through.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ManagerKey {
    pub manager: String,
    pub operation: Operation,
    /// `""` for the main resource, `"status"` for the status subresource.
    pub subresource: String,
}

/// What one manager owns.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub api_version: String,
    /// RFC 3339 time of the manager's last change.
    pub time: String,
    pub fields: FieldSet,
}

/// Every manager of one object.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Managers(pub BTreeMap<ManagerKey, Entry>);

impl Managers {
    /// The managers recorded in an object's `metadata.managedFields`.
    pub fn of(obj: &Value) -> Managers {
        let mut out = BTreeMap::new();
        let entries = obj
            .pointer("/metadata/managedFields")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for e in entries {
            let text = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or_default();
            let operation = match text("operation") {
                "Apply" => Operation::Apply,
                _ => Operation::Update,
            };
            out.insert(
                ManagerKey {
                    manager: text("manager").to_string(),
                    operation,
                    subresource: text("subresource").to_string(),
                },
                Entry {
                    api_version: text("apiVersion").to_string(),
                    time: text("time").to_string(),
                    fields: e
                        .get("fieldsV1")
                        .map(fieldpath::from_fields_v1)
                        .unwrap_or_default(),
                },
            );
        }
        Managers(out)
    }

    /// The `managedFields` list, ordered as the API server orders it (Apply before Update, then
    /// by time, manager and subresource).
    pub fn to_value(&self) -> Value {
        let mut entries: Vec<(&ManagerKey, &Entry)> = self.0.iter().collect();
        entries.sort_by(|(a, ea), (b, eb)| {
            (a.operation, &ea.time, &a.manager, &a.subresource).cmp(&(
                b.operation,
                &eb.time,
                &b.manager,
                &b.subresource,
            ))
        });
        Value::Array(
            entries
                .into_iter()
                .map(|(k, e)| {
                    let mut m = json!({
                        "manager": k.manager,
                        "operation": k.operation.as_str(),
                        "apiVersion": e.api_version,
                        "time": e.time,
                        "fieldsType": "FieldsV1",
                        "fieldsV1": to_fields_v1(&e.fields),
                    });
                    if !k.subresource.is_empty() {
                        m["subresource"] = json!(k.subresource);
                    }
                    m
                })
                .collect(),
        )
    }

    /// Write the managers into `obj.metadata.managedFields` (removed when there are none).
    pub fn store_in(&self, obj: &mut Value) {
        let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) else {
            return;
        };
        if self.0.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), self.to_value());
        }
    }
}

/// Which part of an object a write tracks.
#[derive(Debug, Clone)]
pub struct Scope {
    pub schema: Schema,
    /// The kind has a status subresource: main writes do not own `status`.
    pub status_subresource: bool,
    /// The write goes through the status subresource: it owns only `status`.
    pub status_write: bool,
    pub api_version: String,
}

impl Scope {
    fn subresource(&self) -> &'static str {
        if self.status_write { "status" } else { "" }
    }

    /// Is `path` tracked by writes of this scope?
    fn tracks(&self, path: &[Element]) -> bool {
        let field = |i: usize| match path.get(i) {
            Some(Element::Field(f)) => Some(f.as_str()),
            _ => None,
        };
        match field(0) {
            Some("apiVersion" | "kind") => false,
            Some("metadata") => {
                path.len() > 1 && !field(1).is_some_and(|f| UNTRACKED_METADATA.contains(&f))
            }
            Some("status") if self.status_subresource => self.status_write,
            _ => !self.status_write,
        }
    }

    fn fields(&self, obj: &Value) -> Result<FieldSet, Error> {
        Ok(field_set(obj, self.schema)?
            .into_iter()
            .filter(|p| self.tracks(p))
            .collect())
    }
}

/// What a write changed: fields added or given a new value, and fields removed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Change {
    pub set: FieldSet,
    pub removed: FieldSet,
}

impl Change {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.removed.is_empty()
    }
}

/// Compare two versions of an object within a scope.
pub fn compare(old: &Value, new: &Value, scope: &Scope) -> Result<Change, Error> {
    let before = scope.fields(old)?;
    let after = scope.fields(new)?;
    let mut set: FieldSet = after.difference(&before).cloned().collect();
    for p in before.intersection(&after) {
        // A list item is a member; its own fields say whether it changed.
        if matches!(p.last(), Some(Element::Key(_) | Element::Value(_))) {
            continue;
        }
        if value_at(old, scope.schema, p) != value_at(new, scope.schema, p) {
            set.insert(p.clone());
        }
    }
    let removed = before.difference(&after).cloned().collect();
    Ok(Change { set, removed })
}

/// Record a non-apply write (create, update, merge or JSON patch) by `manager` (`None`: an
/// internal write that nobody owns afterwards): the changed fields move to the writer, removed
/// fields leave every manager. A writer never conflicts. `old` is `None` for a create.
pub fn record_update(
    managers: &mut Managers,
    old: Option<&Value>,
    new: &Value,
    scope: &Scope,
    manager: Option<&str>,
    now: &str,
) -> Result<(), Error> {
    let empty = json!({});
    let change = compare(old.unwrap_or(&empty), new, scope)?;
    let key = manager.map(|m| ManagerKey {
        manager: m.to_string(),
        operation: Operation::Update,
        subresource: scope.subresource().to_string(),
    });
    take_from_others(managers, key.as_ref(), &change);
    if let Some(key) = key {
        let entry = managers.0.entry(key).or_insert_with(|| Entry {
            api_version: scope.api_version.clone(),
            time: now.to_string(),
            fields: FieldSet::new(),
        });
        let before = entry.fields.clone();
        entry.fields.retain(|p| !change.removed.contains(p));
        entry.fields.extend(change.set.iter().cloned());
        if entry.fields != before {
            entry.time = now.to_string();
        }
    }
    managers.0.retain(|_, e| !e.fields.is_empty());
    Ok(())
}

/// Remove changed and removed fields from every manager but `key`.
fn take_from_others(managers: &mut Managers, key: Option<&ManagerKey>, change: &Change) {
    for (k, e) in &mut managers.0 {
        if Some(k) == key {
            continue;
        }
        e.fields
            .retain(|p| !change.set.contains(p) && !change.removed.contains(p));
    }
}

/// An apply request.
#[derive(Debug, Clone, Copy)]
pub struct Apply<'a> {
    pub manager: &'a str,
    pub force: bool,
    pub now: &'a str,
}

/// Apply `config` to `live` (`None`: the object does not exist yet) and return the new object
/// (without managedFields; the caller stores `managers` in it). `config` must already have
/// what the scope does not track removed (the caller drops `status` from a main-resource apply).
pub fn apply(
    live: Option<&Value>,
    config: &Value,
    managers: &mut Managers,
    scope: &Scope,
    req: Apply<'_>,
) -> Result<Value, Error> {
    let mut merged = match live {
        Some(l) => merge(l, config, scope.schema)?,
        None => config.clone(),
    };
    let applied = scope.fields(config)?;
    let key = ManagerKey {
        manager: req.manager.to_string(),
        operation: Operation::Apply,
        subresource: scope.subresource().to_string(),
    };
    let previous = managers
        .0
        .get(&key)
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    managers.0.insert(
        key.clone(),
        Entry {
            api_version: scope.api_version.clone(),
            time: req.now.to_string(),
            fields: applied.clone(),
        },
    );
    // Remove what this manager applied last time and no longer applies, unless someone (this
    // manager included) still owns it or something below it.
    let owned: BTreeSet<&Path> = managers.0.values().flat_map(|e| &e.fields).collect();
    for gone in previous.difference(&applied) {
        if !owned.iter().any(|p| p.starts_with(gone)) {
            remove_at(&mut merged, scope.schema, gone);
        }
    }
    let empty = json!({});
    let change = compare(live.unwrap_or(&empty), &merged, scope)?;
    let mut conflicts: Vec<(&ManagerKey, &Entry, &Path)> = Vec::new();
    for (k, e) in &managers.0 {
        if *k == key {
            continue;
        }
        for p in e.fields.intersection(&change.set) {
            conflicts.push((k, e, p));
        }
    }
    if !conflicts.is_empty() && !req.force {
        return Err(conflict_error(&conflicts));
    }
    take_from_others(managers, Some(&key), &change);
    if previous == applied && change.is_empty() {
        // Nothing changed: keep the manager's time, so the write is a no-op.
        if let (Some(e), Some(before)) = (
            managers.0.get_mut(&key),
            live.map(Managers::of).and_then(|m| m.0.get(&key).cloned()),
        ) {
            e.time = before.time;
        }
    }
    managers.0.retain(|_, e| !e.fields.is_empty());
    Ok(merged)
}

/// How a conflict names a manager: `"kubectl"` for an applier, `"kubectl" using v1 at TIME` for
/// an updater.
fn print_manager(k: &ManagerKey, e: &Entry) -> String {
    match k.operation {
        Operation::Apply => format!("{:?}", k.manager),
        Operation::Update if e.time.is_empty() => {
            format!("{:?} using {}", k.manager, e.api_version)
        }
        Operation::Update => format!("{:?} using {} at {}", k.manager, e.api_version, e.time),
    }
}

/// The API server's apply-conflict message and causes.
fn conflict_error(conflicts: &[(&ManagerKey, &Entry, &Path)]) -> Error {
    let causes: Vec<(String, String)> = conflicts
        .iter()
        .map(|(k, e, p)| {
            (
                path_string(p),
                format!("conflict with {}", print_manager(k, e)),
            )
        })
        .collect();
    let message = match conflicts {
        [(k, e, p)] => format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            print_manager(k, e),
            path_string(p)
        ),
        many => {
            let mut lines = Vec::new();
            let mut last: Option<&ManagerKey> = None;
            for (k, e, p) in many {
                if last != Some(*k) {
                    lines.push(format!("conflicts with {}", print_manager(k, e)));
                    last = Some(*k);
                }
                lines.push(format!("- {}", path_string(p)));
            }
            format!(
                "Apply failed with {} conflicts: {}",
                many.len(),
                lines.join("\n")
            )
        }
    };
    Error::Conflicts { message, causes }
}

/// Merge an applied configuration into a live object: objects field by field, set and map
/// lists item by item (in the configuration's order, live-only items kept in place), anything
/// else (scalars, atomic lists) replaced.
pub fn merge(live: &Value, config: &Value, s: Schema) -> Result<Value, Error> {
    match (live, config) {
        (Value::Object(l), Value::Object(c)) if !s.atomic_map() => {
            let mut out = l.clone();
            for (k, cv) in c {
                let merged = match l.get(k) {
                    Some(lv) => merge(lv, cv, s.child(&Element::Field(k.clone())))?,
                    None => cv.clone(),
                };
                out.insert(k.clone(), merged);
            }
            Ok(Value::Object(out))
        }
        (Value::Array(l), Value::Array(c)) => {
            let list = s.list_type();
            if list == ListType::Atomic {
                Ok(config.clone())
            } else {
                merge_lists(l, c, &list, s).map(Value::Array)
            }
        }
        _ => Ok(config.clone()),
    }
}

/// structured-merge-diff's list merge: shared items in the configuration's order, items only
/// in the live list kept near where they were, new items where the configuration puts them.
fn merge_lists(
    lhs: &[Value],
    rhs: &[Value],
    list: &ListType,
    s: Schema,
) -> Result<Vec<Value>, Error> {
    let lhs_pes: Vec<Option<Element>> = lhs.iter().map(|i| item_element(i, list)).collect();
    let mut rhs_pes = Vec::with_capacity(rhs.len());
    for (index, item) in rhs.iter().enumerate() {
        match item_element(item, list) {
            Some(e) => rhs_pes.push(e),
            None => {
                let key = match list {
                    ListType::Map(keys) => keys
                        .iter()
                        .find(|k| item.get(k.as_str()).is_none())
                        .cloned()
                        .unwrap_or_default(),
                    _ => String::new(),
                };
                return Err(fieldpath::Error::MissingKey {
                    path: String::new(),
                    index,
                    key,
                }
                .into());
            }
        }
    }
    let observed_lhs: BTreeMap<&Element, usize> = lhs_pes
        .iter()
        .enumerate()
        .filter_map(|(i, e)| e.as_ref().map(|e| (e, i)))
        .collect();
    let observed_rhs: BTreeMap<&Element, usize> =
        rhs_pes.iter().enumerate().map(|(i, e)| (e, i)).collect();
    let mut shared: std::collections::VecDeque<&Element> = rhs_pes
        .iter()
        .filter(|e| observed_lhs.contains_key(e))
        .collect();
    let mut next_shared = shared.pop_front();
    let mut merged_rhs: BTreeSet<&Element> = BTreeSet::new();
    let mut out = Vec::with_capacity(lhs.len().max(rhs.len()));
    let child = |e: &Element| s.child(e);
    let merge_item = |pe: &Element, r: &Value| -> Result<Value, Error> {
        match observed_lhs.get(pe) {
            Some(&li) => merge(&lhs[li], r, child(pe)),
            None => Ok(r.clone()),
        }
    };
    let (mut li, mut ri) = (0, 0);
    while li < lhs.len() || ri < rhs.len() {
        if li < lhs.len() && ri < rhs.len() {
            if lhs_pes[li].as_ref() == Some(&rhs_pes[ri]) {
                let pe = &rhs_pes[ri];
                merged_rhs.insert(pe);
                out.push(merge(&lhs[li], &rhs[ri], child(pe))?);
                li += 1;
                ri += 1;
                next_shared = shared.pop_front();
                continue;
            }
            if let Some(pe) = &lhs_pes[li]
                && observed_rhs.contains_key(pe)
                && next_shared.is_some_and(|n| n != pe)
            {
                li += 1;
                continue;
            }
        }
        if li < lhs.len() {
            match &lhs_pes[li] {
                Some(pe) if observed_rhs.contains_key(pe) => {
                    if merged_rhs.contains(pe) {
                        li += 1;
                        continue;
                    }
                }
                _ => {
                    out.push(lhs[li].clone());
                    li += 1;
                    continue;
                }
            }
        }
        if ri < rhs.len() {
            let pe = &rhs_pes[ri];
            merged_rhs.insert(pe);
            out.push(merge_item(pe, &rhs[ri])?);
            ri += 1;
            if next_shared == Some(pe) {
                next_shared = shared.pop_front();
            }
        }
    }
    Ok(out)
}

/// Drop `metadata.labels` and `metadata.annotations` when they are empty, as the API server's
/// serializer does (`omitempty`).
pub fn drop_empty_metadata_maps(obj: &mut Map<String, Value>) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        for field in ["labels", "annotations"] {
            if meta
                .get(field)
                .is_some_and(|v| v.as_object().is_some_and(Map::is_empty) || v.is_null())
            {
                meta.remove(field);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::resources;

    fn scope() -> Scope {
        Scope {
            schema: Schema::Root(resources::find("kubevirt.io", "v1", "virtualmachines").unwrap()),
            status_subresource: true,
            status_write: false,
            api_version: "kubevirt.io/v1".into(),
        }
    }

    fn req(manager: &str, force: bool) -> Apply<'_> {
        Apply {
            manager,
            force,
            now: "2026-01-01T00:00:00Z",
        }
    }

    #[test]
    fn apply_owns_what_it_sets_and_prunes_what_it_drops() {
        let mut managers = Managers::default();
        let config = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"running": true},
                            "status": {"ignored": true}});
        let first = apply(None, &config, &mut managers, &scope(), req("m", false)).unwrap();
        let owned = &managers.0.values().next().unwrap().fields;
        assert_eq!(owned.len(), 3, "{owned:?}");
        let second = apply(
            Some(&first),
            &json!({"metadata": {"labels": {"a": "1"}}}),
            &mut managers,
            &scope(),
            req("m", false),
        )
        .unwrap();
        assert_eq!(second["metadata"]["labels"], json!({"a": "1"}));
        assert!(second.get("spec").unwrap().as_object().unwrap().is_empty());
    }

    #[test]
    fn apply_conflicts_with_another_managers_value_unless_forced() {
        let mut managers = Managers::default();
        let live = json!({"spec": {"runStrategy": "Always"}});
        record_update(
            &mut managers,
            None,
            &live,
            &scope(),
            Some("kubectl-edit"),
            "T0",
        )
        .unwrap();
        let config = json!({"spec": {"runStrategy": "Halted"}});
        let err = apply(
            Some(&live),
            &config,
            &mut managers.clone(),
            &scope(),
            req("wukong", false),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Apply failed with 1 conflict: conflict with \"kubectl-edit\" using kubevirt.io/v1 at T0: .spec.runStrategy"
        );
        // The same value is shared, not a conflict.
        let same = json!({"spec": {"runStrategy": "Always"}});
        apply(
            Some(&live),
            &same,
            &mut managers.clone(),
            &scope(),
            req("wukong", false),
        )
        .unwrap();
        let forced = apply(
            Some(&live),
            &config,
            &mut managers,
            &scope(),
            req("wukong", true),
        )
        .unwrap();
        assert_eq!(forced["spec"]["runStrategy"], "Halted");
        assert_eq!(managers.0.len(), 1, "the editor lost its only field");
    }

    #[test]
    fn set_lists_merge_by_value_in_config_order() {
        let mut managers = Managers::default();
        let live = json!({"metadata": {"finalizers": ["x", "a", "y"]}});
        record_update(&mut managers, None, &live, &scope(), Some("ctl"), "T0").unwrap();
        let merged = apply(
            Some(&live),
            &json!({"metadata": {"finalizers": ["y", "b"]}}),
            &mut managers,
            &scope(),
            req("m", false),
        )
        .unwrap();
        assert_eq!(
            merged["metadata"]["finalizers"],
            json!(["x", "a", "y", "b"])
        );
    }
}

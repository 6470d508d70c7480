//! Field paths and field sets as the API server's field manager (structured-merge-diff) knows
//! them: the elements of a path (`.spec.template`, `[name="default"]`, `[="x"]`), sets of paths,
//! their `FieldsV1` encoding in `metadata.managedFields`, and the schema facts that decide how a
//! list is merged (`x-kubernetes-list-type` atomic, set or map with its keys).
//!
//! The list types come from the vendored upstream OpenAPI documents (`schemas/`): KubeVirt's and
//! CDI's swagger for their kinds, and CDI's copy of the Kubernetes `ObjectMeta` and
//! `PersistentVolumeClaimSpec` for metadata and PVCs. A list the schema says nothing about is
//! atomic, as for every CRD on a real cluster; KubeVirt's own `disks`, `interfaces`, `networks`
//! and `volumes` carry no list type, so a real cluster (and this one) treats them as atomic.
//!
//! Pure; depends only on [`super::resources`].

use std::collections::BTreeSet;
use std::fmt;
use std::sync::OnceLock;

use serde_json::{Map, Value};

use super::resources::ResourceDef;

const KUBEVIRT_SWAGGER: &str = include_str!("../../schemas/kubevirt-swagger.json");
const CDI_SWAGGER: &str = include_str!("../../schemas/cdi-swagger.json");

/// One step of a path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Element {
    /// A field of a struct or a key of a map (`f:name`).
    Field(String),
    /// An item of a map-typed list, by its key fields as canonical JSON (`k:{"name":"x"}`).
    Key(String),
    /// An item of a set-typed list, by its value as JSON (`v:"x"`).
    Value(String),
    /// An item of a list by position (`i:0`); only read, never produced here.
    Index(usize),
}

/// A path from the object's root.
pub type Path = Vec<Element>;

/// A set of paths: the fields one manager owns.
pub type FieldSet = BTreeSet<Path>;

/// `.spec.template[name="a"].image`, as the API server prints a path in conflict messages.
pub fn path_string(path: &[Element]) -> String {
    let mut out = String::new();
    for e in path {
        match e {
            Element::Field(f) => {
                out.push('.');
                out.push_str(f);
            }
            Element::Key(k) => {
                let fields: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
                let parts: Vec<String> = fields.iter().map(|(n, v)| format!("{n}={v}")).collect();
                out.push('[');
                out.push_str(&parts.join(","));
                out.push(']');
            }
            Element::Value(v) => {
                out.push_str("[=");
                out.push_str(v);
                out.push(']');
            }
            Element::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

impl fmt::Display for Element {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Element::Field(n) => write!(f, "f:{n}"),
            Element::Key(k) => write!(f, "k:{k}"),
            Element::Value(v) => write!(f, "v:{v}"),
            Element::Index(i) => write!(f, "i:{i}"),
        }
    }
}

fn parse_element(s: &str) -> Option<Element> {
    let (kind, rest) = s.split_at_checked(2)?;
    match kind {
        "f:" => Some(Element::Field(rest.to_string())),
        "k:" => {
            let v: Value = serde_json::from_str(rest).ok()?;
            Some(Element::Key(canonical(&v)))
        }
        "v:" => {
            let v: Value = serde_json::from_str(rest).ok()?;
            Some(Element::Value(canonical(&v)))
        }
        "i:" => rest.parse().ok().map(Element::Index),
        _ => None,
    }
}

/// JSON with object keys sorted, so equal values have equal text.
pub fn canonical(v: &Value) -> String {
    fn sorted(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                let mut out = Map::new();
                for k in keys {
                    out.insert(k.clone(), sorted(&m[k]));
                }
                Value::Object(out)
            }
            Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    sorted(v).to_string()
}

/// The `FieldsV1` tree of a set: `{"f:spec":{"f:a":{}}}`, with `".":{}` on a member that also
/// has members below it (a list item and its fields).
pub fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut node = &mut root;
        for e in path {
            let entry = node
                .entry(e.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if !entry.is_object() {
                *entry = Value::Object(Map::new());
            }
            let Value::Object(next) = entry else { break };
            node = next;
        }
    }
    // A member that also has members below it gets a "." entry.
    fn mark(node: &mut Map<String, Value>, set: &FieldSet, path: &mut Path) {
        for (k, v) in node.iter_mut() {
            let Some(e) = parse_element(k) else { continue };
            path.push(e);
            if let Value::Object(child) = v {
                if !child.is_empty() && !child.contains_key(".") && set.contains(path) {
                    child.insert(".".into(), Value::Object(Map::new()));
                }
                mark(child, set, path);
            }
            path.pop();
        }
    }
    mark(&mut root, set, &mut Vec::new());
    Value::Object(root)
}

/// The set a `FieldsV1` tree describes; unreadable elements are skipped.
pub fn from_fields_v1(v: &Value) -> FieldSet {
    fn walk(node: &Map<String, Value>, path: &mut Path, out: &mut FieldSet) {
        for (k, v) in node {
            if k == "." {
                out.insert(path.clone());
                continue;
            }
            let Some(e) = parse_element(k) else { continue };
            path.push(e);
            match v.as_object() {
                Some(child) if !child.is_empty() => walk(child, path, out),
                _ => {
                    out.insert(path.clone());
                }
            }
            path.pop();
        }
    }
    let mut out = FieldSet::new();
    if let Some(m) = v.as_object() {
        walk(m, &mut Vec::new(), &mut out);
    }
    out
}

/// How a list merges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListType {
    /// Replaced as a whole; owned as one field.
    Atomic,
    /// Scalars merged by value.
    Set,
    /// Objects merged by these key fields.
    Map(Vec<String>),
}

/// Which schema document a cursor points into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Doc {
    KubeVirt,
    Cdi,
}

fn doc(which: Doc) -> Option<&'static Map<String, Value>> {
    static KUBEVIRT: OnceLock<Option<Value>> = OnceLock::new();
    static CDI: OnceLock<Option<Value>> = OnceLock::new();
    let (cell, text) = match which {
        Doc::KubeVirt => (&KUBEVIRT, KUBEVIRT_SWAGGER),
        Doc::Cdi => (&CDI, CDI_SWAGGER),
    };
    cell.get_or_init(|| serde_json::from_str(text).ok())
        .as_ref()
        .and_then(|d| d.get("definitions"))
        .and_then(Value::as_object)
}

/// A definition of KubeVirt's vendored OpenAPI document (`schemas/kubevirt-swagger.json`, from
/// KubeVirt's Go types), such as `v1.DomainSpec`; the webhooks' Go round trip walks these.
pub fn kubevirt_definition(name: &str) -> Option<&'static Value> {
    doc(Doc::KubeVirt).and_then(|d| d.get(name))
}

/// A position in a resource's schema while walking an object; `Unknown` where the schema says
/// nothing (every list below it is atomic, every object granular).
#[derive(Debug, Clone, Copy)]
pub enum Schema {
    /// The root of an object of a resource.
    Root(&'static ResourceDef),
    Node(Position),
    Unknown,
}

/// A schema node inside one of the vendored documents.
#[derive(Debug, Clone, Copy)]
pub struct Position {
    doc: Doc,
    node: &'static Value,
}

impl Schema {
    fn definition(which: Doc, name: &str) -> Schema {
        doc(which)
            .and_then(|d| d.get(name))
            .map_or(Schema::Unknown, |node| {
                Schema::Node(Position { doc: which, node })
            })
    }

    /// Follow `$ref` (also inside a one-element `allOf`).
    fn resolve(self) -> Schema {
        let Schema::Node(Position { doc: which, node }) = self else {
            return self;
        };
        let reference = node.get("$ref").or_else(|| {
            node.get("allOf")
                .and_then(Value::as_array)
                .and_then(|a| a.first())
                .and_then(|first| first.get("$ref"))
        });
        match reference.and_then(Value::as_str) {
            Some(r) => match r.strip_prefix("#/definitions/") {
                Some(name) => Schema::definition(which, name),
                None => Schema::Unknown,
            },
            None => self,
        }
    }

    /// The schema of a child.
    pub fn child(self, e: &Element) -> Schema {
        let field = match e {
            Element::Field(f) => Some(f.as_str()),
            _ => None,
        };
        match (self, field) {
            (Schema::Root(_), Some("metadata")) => Schema::definition(Doc::Cdi, "v1.ObjectMeta"),
            (Schema::Root(r), Some(f)) => root_child(r, f),
            (Schema::Root(_) | Schema::Unknown, _) => Schema::Unknown,
            (Schema::Node(Position { doc: which, node }), field) => {
                let next = match field {
                    Some(f) => node
                        .get("properties")
                        .and_then(|p| p.get(f))
                        .or_else(|| node.get("additionalProperties").filter(|a| a.is_object())),
                    None => node.get("items"),
                };
                match next {
                    Some(n) => Schema::Node(Position {
                        doc: which,
                        node: n,
                    })
                    .resolve(),
                    None => Schema::Unknown,
                }
            }
        }
    }

    /// How a list at this position merges.
    pub fn list_type(self) -> ListType {
        let Schema::Node(Position { node, .. }) = self else {
            return ListType::Atomic;
        };
        match node.get("x-kubernetes-list-type").and_then(Value::as_str) {
            Some("set") => ListType::Set,
            Some("map") => {
                let keys: Vec<String> = node
                    .get("x-kubernetes-list-map-keys")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .map(String::from)
                            .collect()
                    })
                    .unwrap_or_default();
                if keys.is_empty() {
                    ListType::Atomic
                } else {
                    ListType::Map(keys)
                }
            }
            _ => ListType::Atomic,
        }
    }

    /// Is an object at this position replaced as a whole (`x-kubernetes-map-type: atomic`)?
    pub fn atomic_map(self) -> bool {
        matches!(self, Schema::Node(Position { node, .. })
            if node.get("x-kubernetes-map-type").and_then(Value::as_str) == Some("atomic"))
    }
}

/// The schema of a top-level field of a resource's objects.
fn root_child(r: &ResourceDef, field: &str) -> Schema {
    let (which, definition) = match (r.group, r.plural) {
        ("kubevirt.io", "virtualmachines") => (Doc::KubeVirt, "v1.VirtualMachine"),
        ("kubevirt.io", "virtualmachineinstances") => (Doc::KubeVirt, "v1.VirtualMachineInstance"),
        ("kubevirt.io", "virtualmachineinstancemigrations") => {
            (Doc::KubeVirt, "v1.VirtualMachineInstanceMigration")
        }
        ("kubevirt.io", "kubevirts") => (Doc::KubeVirt, "v1.KubeVirt"),
        ("pool.kubevirt.io", "virtualmachinepools") => {
            (Doc::KubeVirt, "v1beta1.VirtualMachinePool")
        }
        ("cdi.kubevirt.io", "datavolumes") => (Doc::Cdi, "v1beta1.DataVolume"),
        ("", "persistentvolumeclaims") if field == "spec" => {
            return Schema::definition(Doc::Cdi, "v1.PersistentVolumeClaimSpec");
        }
        _ => return Schema::Unknown,
    };
    Schema::definition(which, definition).child(&Element::Field(field.to_string()))
}

/// The key element of a map-list item, if it has every key field.
pub fn item_key(item: &Value, keys: &[String]) -> Option<Element> {
    let mut m = Map::new();
    for k in keys {
        m.insert(k.clone(), item.get(k)?.clone());
    }
    Some(Element::Key(canonical(&Value::Object(m))))
}

/// The element naming a list item under a list type (atomic lists have no item elements).
pub fn item_element(item: &Value, list: &ListType) -> Option<Element> {
    match list {
        ListType::Atomic => None,
        ListType::Set => Some(Element::Value(canonical(item))),
        ListType::Map(keys) => item_key(item, keys),
    }
}

/// The value at `path`, if any.
pub fn value_at<'a>(root: &'a Value, schema: Schema, path: &[Element]) -> Option<&'a Value> {
    let mut v = root;
    let mut s = schema;
    for e in path {
        v = child_value(v, s, e)?;
        s = s.child(e);
    }
    Some(v)
}

fn child_value<'a>(v: &'a Value, s: Schema, e: &Element) -> Option<&'a Value> {
    match e {
        Element::Field(f) => v.get(f),
        Element::Index(i) => v.get(*i),
        Element::Key(_) | Element::Value(_) => {
            let list = s.list_type();
            v.as_array()?
                .iter()
                .find(|item| item_element(item, &list).as_ref() == Some(e))
        }
    }
}

/// Remove the value at `path`; true if something was removed.
pub fn remove_at(root: &mut Value, schema: Schema, path: &[Element]) -> bool {
    let Some((last, parent_path)) = path.split_last() else {
        return false;
    };
    let mut v = root;
    let mut s = schema;
    for e in parent_path {
        let next = match e {
            Element::Field(f) => v.get_mut(f.as_str()),
            Element::Index(i) => v.get_mut(*i),
            Element::Key(_) | Element::Value(_) => {
                let list = s.list_type();
                v.as_array_mut().and_then(|a| {
                    a.iter_mut()
                        .find(|item| item_element(item, &list).as_ref() == Some(e))
                })
            }
        };
        let Some(next) = next else { return false };
        v = next;
        s = s.child(e);
    }
    match last {
        Element::Field(f) => v.as_object_mut().and_then(|m| m.remove(f)).is_some(),
        Element::Index(i) => match v.as_array_mut() {
            Some(a) if *i < a.len() => {
                a.remove(*i);
                true
            }
            _ => false,
        },
        Element::Key(_) | Element::Value(_) => {
            let list = s.list_type();
            match v.as_array_mut() {
                Some(a) => {
                    let before = a.len();
                    a.retain(|item| item_element(item, &list).as_ref() != Some(last));
                    a.len() != before
                }
                None => false,
            }
        }
    }
}

/// Errors of walking an object against its schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error(
        "{path}: element {index}: associative list with keys has an element that omits key field {key:?}"
    )]
    MissingKey {
        path: String,
        index: usize,
        key: String,
    },
    #[error("{path}: duplicate entries for key {key}")]
    Duplicate { path: String, key: String },
}

/// The fields of `value`: every scalar, atomic list or atomic map, and every item of a set or
/// map list (structured-merge-diff's `ToFieldSet`).
pub fn field_set(value: &Value, schema: Schema) -> Result<FieldSet, Error> {
    let mut out = FieldSet::new();
    walk_set(value, schema, &mut Vec::new(), &mut out)?;
    Ok(out)
}

fn walk_set(v: &Value, s: Schema, path: &mut Path, out: &mut FieldSet) -> Result<(), Error> {
    match v {
        Value::Object(m) if !s.atomic_map() => {
            for (k, child) in m {
                let e = Element::Field(k.clone());
                let cs = s.child(&e);
                path.push(e);
                walk_set(child, cs, path, out)?;
                path.pop();
            }
            Ok(())
        }
        Value::Array(items) => {
            let list = s.list_type();
            if list == ListType::Atomic {
                out.insert(path.clone());
                return Ok(());
            }
            let mut seen = BTreeSet::new();
            for (index, item) in items.iter().enumerate() {
                let e = match (&list, item_element(item, &list)) {
                    (_, Some(e)) => e,
                    (ListType::Map(keys), None) => {
                        let key = keys
                            .iter()
                            .find(|k| item.get(k.as_str()).is_none())
                            .cloned()
                            .unwrap_or_default();
                        return Err(Error::MissingKey {
                            path: path_string(path),
                            index,
                            key,
                        });
                    }
                    _ => continue,
                };
                if !seen.insert(e.clone()) {
                    return Err(Error::Duplicate {
                        path: path_string(path),
                        key: e.to_string(),
                    });
                }
                let cs = s.child(&e);
                path.push(e);
                out.insert(path.clone());
                if matches!(list, ListType::Map(_)) {
                    walk_set(item, cs, path, out)?;
                }
                path.pop();
            }
            Ok(())
        }
        _ => {
            out.insert(path.clone());
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::sim::resources;

    fn vm() -> &'static ResourceDef {
        resources::find("kubevirt.io", "v1", "virtualmachines").unwrap()
    }

    fn f(name: &str) -> Element {
        Element::Field(name.into())
    }

    #[test]
    fn kubevirt_lists_follow_the_upstream_schema() {
        let spec = Schema::Root(vm())
            .child(&f("spec"))
            .child(&f("template"))
            .child(&f("spec"));
        let devices = spec.child(&f("domain")).child(&f("devices"));
        // No list type upstream: atomic, as on a real cluster.
        assert_eq!(
            devices.child(&f("interfaces")).list_type(),
            ListType::Atomic
        );
        assert_eq!(spec.child(&f("volumes")).list_type(), ListType::Atomic);
        assert_eq!(
            spec.child(&f("topologySpreadConstraints")).list_type(),
            ListType::Map(vec!["topologyKey".into(), "whenUnsatisfiable".into()])
        );
        let meta = Schema::Root(vm()).child(&f("metadata"));
        assert_eq!(meta.child(&f("finalizers")).list_type(), ListType::Set);
        assert_eq!(
            meta.child(&f("ownerReferences")).list_type(),
            ListType::Map(vec!["uid".into()])
        );
    }

    #[test]
    fn field_sets_round_trip_through_fields_v1() {
        let obj = json!({
            "metadata": {"labels": {"app": "web"}, "finalizers": ["a", "b"],
                         "ownerReferences": [{"uid": "u1", "name": "o"}]},
            "spec": {"runStrategy": "Always", "template": {"spec": {
                "domain": {"devices": {"interfaces": [{"name": "default"}]}},
                "topologySpreadConstraints": [
                    {"topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule", "maxSkew": 1}],
            }}},
        });
        let set = field_set(&obj, Schema::Root(vm())).unwrap();
        let v1 = to_fields_v1(&set);
        assert_eq!(
            v1,
            json!({
                "f:metadata": {
                    "f:labels": {"f:app": {}},
                    "f:finalizers": {"v:\"a\"": {}, "v:\"b\"": {}},
                    // OwnerReference is an atomic struct: its item is one field.
                    "f:ownerReferences": {"k:{\"uid\":\"u1\"}": {}},
                },
                "f:spec": {"f:runStrategy": {}, "f:template": {"f:spec": {
                    "f:domain": {"f:devices": {"f:interfaces": {}}},
                    "f:topologySpreadConstraints": {
                        "k:{\"topologyKey\":\"zone\",\"whenUnsatisfiable\":\"DoNotSchedule\"}": {
                            ".": {}, "f:maxSkew": {}, "f:topologyKey": {}, "f:whenUnsatisfiable": {}}},
                }}},
            })
        );
        assert_eq!(from_fields_v1(&v1), set);
        let owner = set
            .iter()
            .find(|p| p.len() == 3 && matches!(p[2], Element::Key(_)))
            .unwrap();
        assert_eq!(path_string(owner), ".metadata.ownerReferences[uid=\"u1\"]");
        let mut copy = obj.clone();
        assert!(remove_at(&mut copy, Schema::Root(vm()), owner));
        assert_eq!(copy["metadata"]["ownerReferences"], json!([]));
        assert_eq!(
            value_at(
                &obj,
                Schema::Root(vm()),
                &[f("metadata"), Element::Value("\"b\"".into())]
            ),
            None
        );
    }

    #[test]
    fn map_list_items_need_their_keys() {
        let obj = json!({"metadata": {"ownerReferences": [{"name": "o"}]}});
        let err = field_set(&obj, Schema::Root(vm())).unwrap_err();
        assert_eq!(
            err.to_string(),
            ".metadata.ownerReferences: element 0: associative list with keys has an element that omits key field \"uid\""
        );
    }
}

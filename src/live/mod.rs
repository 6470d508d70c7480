//! Live state: the cluster objects a plan is computed against.
//!
//! [`LiveState`] is a plain value (the objects of the kinds Wukong reads, indexed by identity)
//! so the planner stays pure: it can come from a cluster through kube-rs ([`read`]) or from a
//! snapshot file saved earlier ([`Snapshot`], for CI without credentials). This module owns the
//! indexing, the ownership test and the snapshot format; it knows nothing of fleets or plans.

pub mod read;
pub mod watch;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::identity::{
    FIELD_MANAGER, Kind, LABEL_FLEET, LABEL_MANAGED_BY, MANAGED_BY_VALUE, ObjectRef,
};

/// `apiVersion` of the snapshot file.
pub const SNAPSHOT_API_VERSION: &str = "wukong.novasphere.dev/v1alpha1";
/// `kind` of the snapshot file.
pub const SNAPSHOT_KIND: &str = "LiveSnapshot";

/// Namespace and name of an object that Wukong reads but does not render (VMIs, PVCs, …).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct NsName {
    pub namespace: String,
    pub name: String,
}

impl NsName {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        NsName {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl std::fmt::Display for NsName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The kinds read from the cluster, with what identifies them in a list response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LiveKind {
    VirtualMachine,
    VirtualMachineInstance,
    PersistentVolumeClaim,
    DataVolume,
    NetworkAttachmentDefinition,
    StorageClass,
    KubeVirt,
    /// Namespaces, read so the planner can say that a fleet's namespace does not exist.
    Namespace,
}

impl From<Kind> for LiveKind {
    /// The kind read from the cluster for an object Wukong writes.
    fn from(kind: Kind) -> LiveKind {
        match kind {
            Kind::VirtualMachine => LiveKind::VirtualMachine,
            Kind::NetworkAttachmentDefinition => LiveKind::NetworkAttachmentDefinition,
        }
    }
}

impl LiveKind {
    pub const ALL: [LiveKind; 8] = [
        LiveKind::VirtualMachine,
        LiveKind::VirtualMachineInstance,
        LiveKind::PersistentVolumeClaim,
        LiveKind::DataVolume,
        LiveKind::NetworkAttachmentDefinition,
        LiveKind::StorageClass,
        LiveKind::KubeVirt,
        LiveKind::Namespace,
    ];

    /// (group, version, kind, plural, namespaced)
    pub fn gvk(self) -> (&'static str, &'static str, &'static str, &'static str, bool) {
        match self {
            LiveKind::VirtualMachine => (
                "kubevirt.io",
                "v1",
                "VirtualMachine",
                "virtualmachines",
                true,
            ),
            LiveKind::VirtualMachineInstance => (
                "kubevirt.io",
                "v1",
                "VirtualMachineInstance",
                "virtualmachineinstances",
                true,
            ),
            LiveKind::PersistentVolumeClaim => (
                "",
                "v1",
                "PersistentVolumeClaim",
                "persistentvolumeclaims",
                true,
            ),
            LiveKind::DataVolume => (
                "cdi.kubevirt.io",
                "v1beta1",
                "DataVolume",
                "datavolumes",
                true,
            ),
            LiveKind::NetworkAttachmentDefinition => (
                "k8s.cni.cncf.io",
                "v1",
                "NetworkAttachmentDefinition",
                "network-attachment-definitions",
                true,
            ),
            LiveKind::StorageClass => (
                "storage.k8s.io",
                "v1",
                "StorageClass",
                "storageclasses",
                false,
            ),
            LiveKind::KubeVirt => ("kubevirt.io", "v1", "KubeVirt", "kubevirts", true),
            LiveKind::Namespace => ("", "v1", "Namespace", "namespaces", false),
        }
    }

    pub fn api_version(self) -> String {
        match self.gvk() {
            ("", v, ..) => v.to_owned(),
            (g, v, ..) => format!("{g}/{v}"),
        }
    }

    fn of(object: &Value) -> Option<LiveKind> {
        let api_version = object.get("apiVersion")?.as_str()?;
        let kind = object.get("kind")?.as_str()?;
        LiveKind::ALL
            .into_iter()
            .find(|k| k.gvk().2 == kind && k.api_version() == api_version)
    }
}

/// Errors of building live state from a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: not a live snapshot: {source}")]
    Parse {
        path: String,
        source: serde_json::Error,
    },
    #[error(
        "{path}: not a live snapshot: expected apiVersion {SNAPSHOT_API_VERSION} and kind {SNAPSHOT_KIND}"
    )]
    WrongKind { path: String },
    #[error("{path}: item {index} ({what}) is not a kind Wukong reads")]
    UnknownItem {
        path: String,
        index: usize,
        what: String,
    },
    #[error("{path}: item {index} has no metadata.name")]
    Unnamed { path: String, index: usize },
}

/// Everything Wukong reads from a cluster, indexed by identity. Pure data.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LiveState {
    /// VirtualMachines and NetworkAttachmentDefinitions, owned by Wukong or not.
    pub objects: BTreeMap<ObjectRef, Value>,
    pub vmis: BTreeMap<NsName, Value>,
    pub pvcs: BTreeMap<NsName, Value>,
    pub data_volumes: BTreeMap<NsName, Value>,
    pub storage_classes: BTreeMap<String, Value>,
    /// The KubeVirt CR (the cluster's configuration), if one could be read.
    pub kubevirt: Option<Value>,
    /// The cluster's namespaces by name, when they could be listed (`None`: unknown, e.g. a
    /// snapshot saved without them or a reader not allowed to list them).
    pub namespaces: Option<BTreeMap<String, Value>>,
}

impl LiveState {
    /// Index a list of objects (as read from the API or a snapshot). Of `managedFields` only
    /// Wukong's own entries are kept: the planner reads them to find fields Wukong set earlier.
    pub fn insert(&mut self, kind: LiveKind, object: Value) -> Result<(), &'static str> {
        let (_, _, kind_name, _, _) = kind.gvk();
        let mut object = slim(kind, object);
        if let Some(map) = object.as_object_mut() {
            map.insert("apiVersion".into(), kind.api_version().into());
            map.insert("kind".into(), kind_name.into());
        }
        let name = str_at(&object, &["metadata", "name"])
            .ok_or("no metadata.name")?
            .to_owned();
        let namespace = str_at(&object, &["metadata", "namespace"])
            .unwrap_or_default()
            .to_owned();
        match kind {
            LiveKind::VirtualMachine => {
                self.objects.insert(ObjectRef::vm(namespace, name), object);
            }
            LiveKind::NetworkAttachmentDefinition => {
                self.objects.insert(
                    ObjectRef::new(Kind::NetworkAttachmentDefinition, namespace, name),
                    object,
                );
            }
            LiveKind::VirtualMachineInstance => {
                self.vmis.insert(NsName::new(namespace, name), object);
            }
            LiveKind::PersistentVolumeClaim => {
                self.pvcs.insert(NsName::new(namespace, name), object);
            }
            LiveKind::DataVolume => {
                self.data_volumes
                    .insert(NsName::new(namespace, name), object);
            }
            LiveKind::StorageClass => {
                self.storage_classes.insert(name, object);
            }
            LiveKind::KubeVirt => {
                // A cluster has one KubeVirt CR; if several are listed, keep the first by name.
                if self.kubevirt.is_none() {
                    self.kubevirt = Some(object);
                }
            }
            LiveKind::Namespace => {
                self.namespaces
                    .get_or_insert_with(BTreeMap::new)
                    .insert(name, object);
            }
        }
        Ok(())
    }

    /// Forget the object of `kind` named `namespace`/`name` (`namespace` empty for cluster-scoped
    /// kinds), as when a watch reports it deleted. Returns whether it was there. The KubeVirt
    /// CR is removed only when it is the one held.
    pub fn remove(&mut self, kind: LiveKind, namespace: &str, name: &str) -> bool {
        let key = || NsName::new(namespace, name);
        match kind {
            LiveKind::VirtualMachine => self.objects.remove(&ObjectRef::vm(namespace, name)),
            LiveKind::NetworkAttachmentDefinition => self.objects.remove(&ObjectRef::new(
                Kind::NetworkAttachmentDefinition,
                namespace,
                name,
            )),
            LiveKind::VirtualMachineInstance => self.vmis.remove(&key()),
            LiveKind::PersistentVolumeClaim => self.pvcs.remove(&key()),
            LiveKind::DataVolume => self.data_volumes.remove(&key()),
            LiveKind::StorageClass => self.storage_classes.remove(name),
            LiveKind::KubeVirt => {
                let held = self.kubevirt.as_ref().is_some_and(|kv| {
                    str_at(kv, &["metadata", "name"]) == Some(name)
                        && str_at(kv, &["metadata", "namespace"]).unwrap_or_default() == namespace
                });
                if held { self.kubevirt.take() } else { None }
            }
            LiveKind::Namespace => self.namespaces.as_mut().and_then(|n| n.remove(name)),
        }
        .is_some()
    }

    /// Parse a snapshot file's text.
    pub fn from_snapshot(path: &str, text: &str) -> Result<LiveState, Error> {
        let snapshot: Snapshot = serde_json::from_str(text).map_err(|source| Error::Parse {
            path: path.to_owned(),
            source,
        })?;
        if snapshot.api_version != SNAPSHOT_API_VERSION || snapshot.kind != SNAPSHOT_KIND {
            return Err(Error::WrongKind {
                path: path.to_owned(),
            });
        }
        let mut live = LiveState::default();
        for (index, item) in snapshot.items.into_iter().enumerate() {
            let Some(kind) = LiveKind::of(&item) else {
                let what = format!(
                    "{} {}",
                    item.get("apiVersion")
                        .and_then(Value::as_str)
                        .unwrap_or("?"),
                    item.get("kind").and_then(Value::as_str).unwrap_or("?")
                );
                return Err(Error::UnknownItem {
                    path: path.to_owned(),
                    index,
                    what,
                });
            };
            live.insert(kind, item).map_err(|_| Error::Unnamed {
                path: path.to_owned(),
                index,
            })?;
        }
        Ok(live)
    }

    /// The snapshot of this state, in a stable order.
    pub fn to_snapshot(&self) -> Snapshot {
        let items = self
            .objects
            .values()
            .chain(self.vmis.values())
            .chain(self.pvcs.values())
            .chain(self.data_volumes.values())
            .chain(self.storage_classes.values())
            .chain(self.kubevirt.iter())
            .chain(self.namespaces.iter().flat_map(BTreeMap::values))
            .cloned()
            .collect();
        Snapshot {
            api_version: SNAPSHOT_API_VERSION.into(),
            kind: SNAPSHOT_KIND.into(),
            items,
        }
    }

    /// The live VM of that name, if any.
    pub fn vm(&self, namespace: &str, name: &str) -> Option<&Value> {
        self.objects.get(&ObjectRef::vm(namespace, name))
    }

    pub fn vmi(&self, namespace: &str, name: &str) -> Option<&Value> {
        self.vmis.get(&NsName::new(namespace, name))
    }

    pub fn pvc(&self, namespace: &str, name: &str) -> Option<&Value> {
        self.pvcs.get(&NsName::new(namespace, name))
    }

    pub fn data_volume(&self, namespace: &str, name: &str) -> Option<&Value> {
        self.data_volumes.get(&NsName::new(namespace, name))
    }

    /// Why objects cannot be created in `namespace`: it does not exist or is being deleted.
    /// `None` when it can, or when the namespaces are not known.
    pub fn namespace_missing(&self, namespace: &str) -> Option<String> {
        let namespaces = self.namespaces.as_ref()?;
        match namespaces.get(namespace) {
            None => Some(format!(
                "namespace `{namespace}` does not exist (Wukong does not create namespaces)"
            )),
            Some(ns) if str_at(ns, &["status", "phase"]) == Some("Terminating") => {
                Some(format!("namespace `{namespace}` is being deleted"))
            }
            Some(_) => None,
        }
    }
}

/// The fields kept of an object Wukong reads but never writes whole (instances, PVCs,
/// DataVolumes): what the planner's pre-checks and the executor's verification look at.
/// Dropping the rest keeps a 10,000-VM live state small. VMs, NADs, storage classes and the
/// KubeVirt CR are kept whole.
fn keep_paths(kind: LiveKind) -> Option<&'static [&'static [&'static str]]> {
    const META: &[&str] = &["metadata"];
    match kind {
        LiveKind::VirtualMachineInstance => Some(&[
            META,
            &["spec", "domain", "cpu"],
            &["spec", "domain", "memory"],
            &["status", "phase"],
            &["status", "conditions"],
            &["status", "currentCPUTopology"],
            &["status", "memory"],
            &["status", "interfaces"],
            &["status", "volumeStatus"],
            &["status", "migrationState"],
        ]),
        LiveKind::PersistentVolumeClaim => Some(&[
            META,
            &["spec", "storageClassName"],
            &["spec", "resources"],
            &["spec", "accessModes"],
            &["spec", "volumeMode"],
            &["status"],
        ]),
        LiveKind::DataVolume => Some(&[
            META,
            &["spec", "storage", "resources"],
            &["spec", "storage", "storageClassName"],
            &["spec", "pvc", "resources"],
            &["status", "phase"],
        ]),
        LiveKind::Namespace => Some(&[META, &["status", "phase"]]),
        _ => None,
    }
}

fn slim(kind: LiveKind, mut object: Value) -> Value {
    keep_own_managed_fields(&mut object);
    let Some(paths) = keep_paths(kind) else {
        return object;
    };
    let mut out = Value::Object(serde_json::Map::new());
    for path in paths {
        let pointer: String = path.iter().map(|k| format!("/{k}")).collect();
        let Some(value) = object.pointer_mut(&pointer).map(Value::take) else {
            continue;
        };
        let mut cur = &mut out;
        for (i, key) in path.iter().enumerate() {
            let Some(map) = cur.as_object_mut() else {
                break;
            };
            if i + 1 == path.len() {
                map.insert((*key).to_owned(), value);
                break;
            }
            cur = map
                .entry(*key)
                .or_insert_with(|| Value::Object(serde_json::Map::new()));
        }
    }
    out
}

/// `managedFields` keeps only Wukong's own entries: all the planner needs, and a fraction of
/// the size of every manager's field sets.
pub fn keep_own_managed_fields(object: &mut Value) {
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        let keep = match meta.get_mut("managedFields").map(Value::take) {
            Some(Value::Array(entries)) => entries
                .into_iter()
                .filter(|e| e.get("manager").and_then(Value::as_str) == Some(FIELD_MANAGER))
                .collect::<Vec<_>>(),
            _ => Vec::new(),
        };
        if keep.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(keep));
        }
    }
}

/// The snapshot file: a list of objects as the API returned them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    pub kind: String,
    pub items: Vec<Value>,
}

/// Ownership: an object is Wukong's, and this fleet's, only when it carries both labels.
/// Everything else is never changed or deleted.
pub fn owned_by(object: &Value, fleet: &str) -> bool {
    label(object, LABEL_MANAGED_BY) == Some(MANAGED_BY_VALUE)
        && label(object, LABEL_FLEET) == Some(fleet)
}

/// A label of an object.
pub fn label<'a>(object: &'a Value, key: &str) -> Option<&'a str> {
    object.get("metadata")?.get("labels")?.get(key)?.as_str()
}

/// The string at a path of keys.
pub fn str_at<'a>(object: &'a Value, path: &[&str]) -> Option<&'a str> {
    at(object, path)?.as_str()
}

/// The Kubernetes quantity at a path of keys: a string such as `4Gi`, or a plain number (the
/// API server accepts both).
pub fn quantity_at(object: &Value, path: &[&str]) -> Option<crate::quantity::Quantity> {
    match at(object, path)? {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.to_string().parse().ok(),
        _ => None,
    }
}

/// The value at a path of keys.
pub fn at<'a>(object: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(object, |v, k| v.get(k))
}

/// The condition of that type in `status.conditions`, if present.
pub fn condition<'a>(object: &'a Value, kind: &str) -> Option<&'a Value> {
    at(object, &["status", "conditions"])?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))
}

/// Whether the condition of that type is present with status "True".
pub fn condition_true(object: &Value, kind: &str) -> bool {
    condition(object, kind)
        .and_then(|c| c.get("status"))
        .and_then(Value::as_str)
        == Some("True")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vm(ns: &str, name: &str, labels: Value) -> Value {
        json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
               "metadata": {"name": name, "namespace": ns, "labels": labels,
                            "managedFields": [{"manager": "x"}]}})
    }

    #[test]
    fn snapshot_round_trips_and_drops_managed_fields() {
        let mut live = LiveState::default();
        live.insert(LiveKind::VirtualMachine, vm("db", "pg", json!({})))
            .unwrap();
        live.insert(
            LiveKind::StorageClass,
            json!({"metadata": {"name": "fast"}, "allowVolumeExpansion": true}),
        )
        .unwrap();
        let text = serde_json::to_string(&live.to_snapshot()).unwrap();
        assert!(!text.contains("managedFields"));
        let back = LiveState::from_snapshot("s.json", &text).unwrap();
        assert_eq!(back, live);
        assert_eq!(
            back.storage_classes["fast"]["apiVersion"],
            json!("storage.k8s.io/v1")
        );
    }

    #[test]
    fn only_wukongs_managed_fields_are_kept() {
        let entries = json!([{"manager": "kubectl"}, {"manager": FIELD_MANAGER, "fieldsV1": {}}]);
        let mut o = json!({"metadata": {"managedFields": entries}});
        keep_own_managed_fields(&mut o);
        assert_eq!(
            o["metadata"]["managedFields"],
            json!([{"manager": FIELD_MANAGER, "fieldsV1": {}}])
        );
        let mut o = json!({"metadata": {"managedFields": [{"manager": "kubectl"}]}});
        keep_own_managed_fields(&mut o);
        assert_eq!(o, json!({"metadata": {}}));
    }

    #[test]
    fn snapshot_errors_name_the_file_and_item() {
        let err = LiveState::from_snapshot("s.json", "[]").unwrap_err();
        assert!(err.to_string().starts_with("s.json: not a live snapshot"));
        let text = json!({"apiVersion": SNAPSHOT_API_VERSION, "kind": SNAPSHOT_KIND,
                          "items": [{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}}]});
        let err = LiveState::from_snapshot("s.json", &text.to_string()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "s.json: item 0 (v1 Pod) is not a kind Wukong reads"
        );
    }

    #[test]
    fn ownership_needs_both_labels() {
        let ours = vm(
            "db",
            "pg",
            json!({LABEL_MANAGED_BY: "wukong", LABEL_FLEET: "prod"}),
        );
        assert!(owned_by(&ours, "prod"));
        assert!(!owned_by(&ours, "staging"));
        assert!(!owned_by(
            &vm("db", "pg", json!({LABEL_FLEET: "prod"})),
            "prod"
        ));
        assert!(!owned_by(
            &vm("db", "pg", json!({LABEL_MANAGED_BY: "helm"})),
            "prod"
        ));
    }
}

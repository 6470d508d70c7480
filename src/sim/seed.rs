//! The objects a simulated KubeVirt cluster starts with: the `kubevirt` namespace, the KubeVirt
//! CR `kubevirt/kubevirt` configured for live updates as facts §10 recommends, and two
//! StorageClasses — a default one on shared block storage that allows expansion and a local one
//! that does not. Tests may change or delete them. [`set_version`] writes the KubeVirt CR's
//! status as virt-operator reports a deployed release.
//!
//! Depends only on [`super::store`], [`super::resources`] and [`super::version`].

use serde_json::{Value, json};

use super::controllers::storage::{DEFAULT_CLASS_ANNOTATION, DEFAULT_VIRT_CLASS_ANNOTATION};
use super::resources;
use super::store::{self, Store, Target};
use super::version::KubeVirtVersion;

/// The namespace KubeVirt is installed in.
pub const KUBEVIRT_NAMESPACE: &str = "kubevirt";
/// The default StorageClass: RWX block storage (CDI profile of Ceph RBD) with expansion.
pub const DEFAULT_STORAGE_CLASS: &str = "sim-shared";
/// A StorageClass of node-local RWO storage without expansion.
pub const LOCAL_STORAGE_CLASS: &str = "sim-local";

/// The seed objects, as (group, version, plural, namespace, object).
pub fn objects() -> Vec<(
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    Value,
)> {
    vec![
        (
            "",
            "v1",
            "namespaces",
            "",
            json!({"metadata": {"name": KUBEVIRT_NAMESPACE}}),
        ),
        (
            "kubevirt.io",
            "v1",
            "kubevirts",
            KUBEVIRT_NAMESPACE,
            json!({
                "apiVersion": "kubevirt.io/v1",
                "kind": "KubeVirt",
                "metadata": {"name": "kubevirt", "namespace": KUBEVIRT_NAMESPACE},
                "spec": {
                    "workloadUpdateStrategy": {"workloadUpdateMethods": ["LiveMigrate"]},
                    "configuration": {
                        "vmRolloutStrategy": "LiveUpdate",
                        "liveUpdateConfiguration": {"maxHotplugRatio": 4},
                    },
                },
                // virt-operator reports the version it deployed (kv:
                // `staging/src/kubevirt.io/api/core/v1/types.go` `KubeVirtStatus`).
                "status": {"observedKubeVirtVersion": "v1.9.0"},
            }),
        ),
        (
            "storage.k8s.io",
            "v1",
            "storageclasses",
            "",
            json!({
                "apiVersion": "storage.k8s.io/v1",
                "kind": "StorageClass",
                "metadata": {"name": DEFAULT_STORAGE_CLASS, "annotations": {
                    DEFAULT_CLASS_ANNOTATION: "true",
                    DEFAULT_VIRT_CLASS_ANNOTATION: "true",
                }},
                "provisioner": "rbd.csi.ceph.com",
                "reclaimPolicy": "Delete",
                "volumeBindingMode": "Immediate",
                "allowVolumeExpansion": true,
            }),
        ),
        (
            "storage.k8s.io",
            "v1",
            "storageclasses",
            "",
            json!({
                "apiVersion": "storage.k8s.io/v1",
                "kind": "StorageClass",
                "metadata": {"name": LOCAL_STORAGE_CLASS},
                "provisioner": "kubevirt.io.hostpath-provisioner",
                "reclaimPolicy": "Delete",
                "volumeBindingMode": "Immediate",
                "allowVolumeExpansion": false,
            }),
        ),
    ]
}

/// The KubeVirt CR's status for a deployed `version`, as virt-operator writes it (kv:
/// `staging/src/kubevirt.io/api/core/v1/types.go` `KubeVirtStatus`): phase `Deployed`, the
/// observed and target versions, and the default architecture (the control plane's).
pub fn kubevirt_status(version: KubeVirtVersion) -> Value {
    json!({
        "phase": "Deployed",
        "observedKubeVirtVersion": version.observed(),
        "targetKubeVirtVersion": version.observed(),
        "defaultArchitecture": "amd64",
        "conditions": [{"type": "Available", "status": "True", "reason": "AllComponentsReady",
                        "message": "All components are ready."}],
    })
}

/// Report `version` in the status of the KubeVirt CR `kubevirt/kubevirt`, if it exists.
pub fn set_version(store: &mut Store, version: KubeVirtVersion) -> Result<(), store::Error> {
    let Some(r) = resources::find("kubevirt.io", "v1", "kubevirts") else {
        return Ok(());
    };
    let Ok(mut cr) = store.get(r, KUBEVIRT_NAMESPACE, "kubevirt") else {
        return Ok(());
    };
    let mut status = kubevirt_status(version);
    if let Some(old) = cr.get("status") {
        // Keep what someone else set; the version fields are the operator's.
        if let (Some(o), Some(n)) = (old.as_object(), status.as_object_mut()) {
            for (k, v) in o {
                if !matches!(
                    k.as_str(),
                    "observedKubeVirtVersion" | "targetKubeVirtVersion"
                ) {
                    n.insert(k.clone(), v.clone());
                }
            }
        }
    }
    if cr.get("status") == Some(&status) {
        return Ok(());
    }
    cr["status"] = status;
    store.update(r, KUBEVIRT_NAMESPACE, "kubevirt", cr, Target::Status, false)?;
    Ok(())
}

/// Create the seed objects in `store` (those that already exist are left alone).
pub fn seed(store: &mut Store) -> Result<(), store::Error> {
    for (group, version, plural, namespace, object) in objects() {
        let Some(r) = resources::find(group, version, plural) else {
            continue;
        };
        let status = object.get("status").cloned();
        match store.create(r, namespace, object, false) {
            // A create ignores `status` of kinds with a status subresource: write it the way
            // their controller does.
            Ok(created) => {
                if let Some(status) = status
                    && r.status
                {
                    let mut with_status = created;
                    with_status["status"] = status;
                    let name = with_status["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned();
                    store.update(
                        r,
                        namespace,
                        &name,
                        with_status,
                        store::Target::Status,
                        false,
                    )?;
                }
            }
            Err(store::Error::AlreadyExists { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::store::ListOptions;

    #[test]
    fn seeds_the_kubevirt_cr_and_storage_classes_once() {
        let mut store = Store::new();
        seed(&mut store).unwrap();
        seed(&mut store).unwrap();
        set_version(&mut store, KubeVirtVersion::V1_8).unwrap();
        let kv = resources::find("kubevirt.io", "v1", "kubevirts").unwrap();
        let cr = store.get(kv, KUBEVIRT_NAMESPACE, "kubevirt").unwrap();
        assert_eq!(cr["status"]["observedKubeVirtVersion"], "v1.8.0");
        assert_eq!(
            cr["spec"]["workloadUpdateStrategy"]["workloadUpdateMethods"],
            json!(["LiveMigrate"])
        );
        let sc = resources::find("storage.k8s.io", "v1", "storageclasses").unwrap();
        let classes = store.list(sc, None, &ListOptions::default()).unwrap();
        assert_eq!(classes.items.len(), 2);
    }
}

//! CDI and the Kubernetes storage side, as pure functions: the DataVolume a VM's
//! `dataVolumeTemplates` entry creates ([`dv_from_template`]), the PVC CDI creates for a
//! DataVolume with defaults from the StorageClass' storage profile ([`pvc_for_dv`]), the
//! default StorageClass ([`default_class`]), and the VMI's `volumeStatus` entry of a claim
//! ([`claim_info`]; facts §4, §8).
//!
//! Pure; depends only on [`super::objects`].

use serde_json::{Value, json};

use super::objects::{self, CDI_API, array, text};

/// Annotation marking the cluster's default StorageClass.
pub const DEFAULT_CLASS_ANNOTATION: &str = "storageclass.kubernetes.io/is-default-class";
/// Annotation marking the default StorageClass for virtual machines (preferred by CDI).
pub const DEFAULT_VIRT_CLASS_ANNOTATION: &str = "storageclass.kubevirt.io/is-default-virt-class";
/// Filesystem overhead CDI reserves on Filesystem volumes (CDI's global default is 0.06;
/// KubeVirt's fallback 0.055, facts §4). Reported in `persistentVolumeClaimInfo`.
pub const FILESYSTEM_OVERHEAD: &str = "0.055";

/// The claim defaults CDI's StorageProfile gives a provisioner: (access modes, volume mode).
/// Shared block storage (Ceph RBD and friends) is RWX Block, local and host-path storage RWO
/// Filesystem, as CDI's built-in capabilities table says.
pub fn storage_profile(provisioner: &str) -> (&'static [&'static str], &'static str) {
    match provisioner {
        "rbd.csi.ceph.com"
        | "openshift-storage.rbd.csi.ceph.com"
        | "csi.trident.netapp.io"
        | "driver.longhorn.io" => (&["ReadWriteMany"], "Block"),
        "cephfs.csi.ceph.com" | "nfs.csi.k8s.io" => (&["ReadWriteMany"], "Filesystem"),
        _ => (&["ReadWriteOnce"], "Filesystem"),
    }
}

/// The StorageClass CDI uses when none is named: the default virt class, else the default class.
pub fn default_class(classes: &[Value]) -> Option<&Value> {
    let flagged = |annotation: &str| {
        classes.iter().find(|sc| {
            sc.pointer(&format!(
                "/metadata/annotations/{}",
                annotation.replace('/', "~1")
            ))
            .and_then(Value::as_str)
                == Some("true")
        })
    };
    flagged(DEFAULT_VIRT_CLASS_ANNOTATION).or_else(|| flagged(DEFAULT_CLASS_ANNOTATION))
}

/// The DataVolume for one `dataVolumeTemplates` entry of `vm`, owned by the VM.
pub fn dv_from_template(vm: &Value, template: &Value) -> Value {
    let mut metadata = template.get("metadata").cloned().unwrap_or(json!({}));
    if let Some(m) = metadata.as_object_mut() {
        m.insert("namespace".into(), json!(objects::namespace(vm)));
        m.insert(
            "ownerReferences".into(),
            json!([objects::controller_ref(vm)]),
        );
        m.remove("creationTimestamp");
    }
    json!({
        "apiVersion": CDI_API,
        "kind": "DataVolume",
        "metadata": metadata,
        "spec": template.get("spec").cloned().unwrap_or(json!({})),
    })
}

/// The PVC CDI creates for `dv` (same name, owned by the DV), or why it cannot yet.
pub fn pvc_for_dv(dv: &Value, classes: &[Value]) -> Result<Value, String> {
    let (claim, from_storage_api) = match (dv.pointer("/spec/storage"), dv.pointer("/spec/pvc")) {
        (Some(s), _) => (s.clone(), true),
        (None, Some(p)) => (p.clone(), false),
        (None, None) => return Err("missing storage/pvc spec".into()),
    };
    let class = match text(&claim, "/storageClassName") {
        Some(name) => classes.iter().find(|sc| objects::name(sc) == name),
        None => default_class(classes),
    };
    let class_name = text(&claim, "/storageClassName")
        .map(String::from)
        .or_else(|| class.map(|sc| objects::name(sc).to_string()));
    let (profile_modes, profile_mode) = storage_profile(
        class
            .and_then(|sc| text(sc, "/provisioner"))
            .unwrap_or_default(),
    );
    let mut spec = claim.clone();
    let Some(m) = spec.as_object_mut() else {
        return Err("storage spec is not an object".into());
    };
    if from_storage_api {
        if array(&claim, "/accessModes").is_empty() {
            m.insert("accessModes".into(), json!(profile_modes));
        }
        match text(&claim, "/volumeMode") {
            None | Some("FromStorageProfile") => {
                m.insert("volumeMode".into(), json!(profile_mode));
            }
            Some(_) => {}
        }
    } else if !m.contains_key("volumeMode") {
        m.insert("volumeMode".into(), json!("Filesystem"));
    }
    if let Some(name) = class_name {
        m.insert("storageClassName".into(), json!(name));
    }
    if objects::quantity(&spec, "/resources/requests/storage").is_none() {
        return Err("missing storage size".into());
    }
    let mut labels = json!({"app": "containerized-data-importer"});
    if let Some(l) = dv.pointer("/metadata/labels").and_then(Value::as_object) {
        for (k, v) in l {
            labels[k] = v.clone();
        }
    }
    Ok(json!({
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": objects::name(dv),
            "namespace": objects::namespace(dv),
            "labels": labels,
            "ownerReferences": [objects::controller_ref(dv)],
        },
        "spec": spec,
    }))
}

/// Whether a DataVolume is ready for a VM to start on it (`Succeeded`, `WaitForFirstConsumer`
/// or `PendingPopulation`).
pub fn dv_ready(dv: &Value) -> bool {
    matches!(
        text(dv, "/status/phase"),
        Some("Succeeded" | "WaitForFirstConsumer" | "PendingPopulation")
    )
}

/// Whether a DataVolume needs no data copied (blank disk): it succeeds as soon as it is bound.
pub fn dv_is_blank(dv: &Value) -> bool {
    dv.pointer("/spec/source/blank").is_some()
}

/// The VMI `volumeStatus[].persistentVolumeClaimInfo` of a PVC (kv: `storage.go`).
pub fn claim_info(pvc: &Value) -> Value {
    let mut info = json!({
        "claimName": objects::name(pvc),
        "accessModes": pvc.pointer("/status/accessModes")
            .or_else(|| pvc.pointer("/spec/accessModes"))
            .cloned()
            .unwrap_or(json!([])),
        "volumeMode": text(pvc, "/spec/volumeMode").unwrap_or("Filesystem"),
        "capacity": pvc.pointer("/status/capacity").cloned().unwrap_or(json!({})),
        "requests": pvc.pointer("/spec/resources/requests").cloned().unwrap_or(json!({})),
    });
    if text(pvc, "/spec/volumeMode").unwrap_or("Filesystem") == "Filesystem" {
        info["filesystemOverhead"] = json!(FILESYSTEM_OVERHEAD);
    }
    info
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classes() -> Vec<Value> {
        vec![
            json!({"metadata": {"name": "local", "annotations": {DEFAULT_CLASS_ANNOTATION: "true"}},
                   "provisioner": "kubevirt.io.hostpath-provisioner"}),
            json!({"metadata": {"name": "ceph", "annotations": {DEFAULT_VIRT_CLASS_ANNOTATION: "true"}},
                   "provisioner": "rbd.csi.ceph.com"}),
        ]
    }

    fn dv(storage: Value) -> Value {
        json!({"metadata": {"name": "root", "namespace": "default", "uid": "u-dv"},
               "kind": "DataVolume", "apiVersion": CDI_API,
               "spec": {"source": {"blank": {}}, "storage": storage}})
    }

    #[test]
    fn storage_api_claims_take_the_virt_default_class_and_its_profile() {
        let pvc = pvc_for_dv(
            &dv(json!({"resources": {"requests": {"storage": "10Gi"}}})),
            &classes(),
        )
        .unwrap();
        assert_eq!(pvc["spec"]["storageClassName"], "ceph");
        assert_eq!(pvc["spec"]["accessModes"], json!(["ReadWriteMany"]));
        assert_eq!(pvc["spec"]["volumeMode"], "Block");
        assert_eq!(pvc["metadata"]["ownerReferences"][0]["kind"], "DataVolume");
        let explicit = pvc_for_dv(
            &dv(
                json!({"storageClassName": "local", "accessModes": ["ReadWriteOnce"],
                       "resources": {"requests": {"storage": "1Gi"}}}),
            ),
            &classes(),
        )
        .unwrap();
        assert_eq!(explicit["spec"]["volumeMode"], "Filesystem");
        assert_eq!(explicit["spec"]["accessModes"], json!(["ReadWriteOnce"]));
        assert!(pvc_for_dv(&dv(json!({})), &classes()).is_err());
    }

    #[test]
    fn claim_info_reports_capacity_and_requests() {
        let pvc = json!({"metadata": {"name": "root"},
            "spec": {"accessModes": ["ReadWriteMany"], "volumeMode": "Block",
                     "resources": {"requests": {"storage": "20Gi"}}},
            "status": {"phase": "Bound", "capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteMany"]}});
        let info = claim_info(&pvc);
        assert_eq!(info["capacity"]["storage"], "10Gi");
        assert_eq!(info["requests"]["storage"], "20Gi");
        assert!(info.get("filesystemOverhead").is_none());
    }
}

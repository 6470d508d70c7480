//! The table of API resources the simulated cluster serves: group, version, plural, kind, scope,
//! status subresource and short names, as the real API server and KubeVirt's, CDI's and Multus'
//! CRDs declare them. Everything else (routes, discovery, store behaviour) is driven by it.
//!
//! Pure data; depends on nothing else in the crate.

/// One served resource (one group/version/plural).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceDef {
    /// API group; empty for the core group (`/api/v1`).
    pub group: &'static str,
    pub version: &'static str,
    /// Lower-case plural, the URL segment (`virtualmachines`).
    pub plural: &'static str,
    /// Lower-case singular (`virtualmachine`).
    pub singular: &'static str,
    pub kind: &'static str,
    /// Namespaced (true) or cluster-scoped (false).
    pub namespaced: bool,
    /// Has a `status` subresource: main-resource writes keep the stored status, `/status`
    /// writes change only the status.
    pub status: bool,
    /// A custom resource (CRD): `metadata.generation` is tracked, as for every CR.
    pub custom: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
}

impl ResourceDef {
    /// `apiVersion` of the resource's objects (`v1`, `kubevirt.io/v1`).
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The group-qualified resource as Kubernetes prints it in messages
    /// (`virtualmachines.kubevirt.io`, `persistentvolumeclaims`).
    pub fn qualified_plural(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// The group-qualified kind as Kubernetes prints it in validation messages
    /// (`VirtualMachine.kubevirt.io`, `PersistentVolumeClaim`).
    pub fn qualified_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.to_string()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }
}

#[allow(clippy::too_many_arguments)] // a table row; positional keeps the table readable
const fn def(
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
    namespaced: bool,
    status: bool,
    short_names: &'static [&'static str],
) -> ResourceDef {
    ResourceDef {
        group,
        version,
        plural,
        singular,
        kind,
        namespaced,
        status,
        custom: false,
        short_names,
        categories: &[],
    }
}

#[allow(clippy::too_many_arguments)] // a table row; positional keeps the table readable
const fn crd(
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
    status: bool,
    short_names: &'static [&'static str],
    categories: &'static [&'static str],
) -> ResourceDef {
    ResourceDef {
        group,
        version,
        plural,
        singular,
        kind,
        namespaced: true,
        status,
        custom: true,
        short_names,
        categories,
    }
}

/// Every resource the simulator serves. The status-subresource flags follow the real
/// definitions: KubeVirt's VirtualMachineInstance CRD has none (virt-handler writes whole
/// objects), the NetworkAttachmentDefinition CRD has no status at all.
pub const RESOURCES: &[ResourceDef] = &[
    def(
        "",
        "v1",
        "namespaces",
        "namespace",
        "Namespace",
        false,
        true,
        &["ns"],
    ),
    def(
        "",
        "v1",
        "persistentvolumeclaims",
        "persistentvolumeclaim",
        "PersistentVolumeClaim",
        true,
        true,
        &["pvc"],
    ),
    def(
        "",
        "v1",
        "configmaps",
        "configmap",
        "ConfigMap",
        true,
        false,
        &["cm"],
    ),
    def("", "v1", "secrets", "secret", "Secret", true, false, &[]),
    def("", "v1", "events", "event", "Event", true, false, &["ev"]),
    // Pods are served (and stay empty: no virt-launcher pods are simulated) so that
    // `kubectl describe pvc`, which lists the pods using a claim, works.
    def("", "v1", "pods", "pod", "Pod", true, true, &["po"]),
    def(
        "storage.k8s.io",
        "v1",
        "storageclasses",
        "storageclass",
        "StorageClass",
        false,
        false,
        &["sc"],
    ),
    def(
        "coordination.k8s.io",
        "v1",
        "leases",
        "lease",
        "Lease",
        true,
        false,
        &[],
    ),
    crd(
        "kubevirt.io",
        "v1",
        "virtualmachines",
        "virtualmachine",
        "VirtualMachine",
        true,
        &["vm", "vms"],
        &["all"],
    ),
    crd(
        "kubevirt.io",
        "v1",
        "virtualmachineinstances",
        "virtualmachineinstance",
        "VirtualMachineInstance",
        false,
        &["vmi", "vmis"],
        &["all"],
    ),
    crd(
        "kubevirt.io",
        "v1",
        "virtualmachineinstancemigrations",
        "virtualmachineinstancemigration",
        "VirtualMachineInstanceMigration",
        true,
        &["vmim", "vmims"],
        &["all"],
    ),
    crd(
        "kubevirt.io",
        "v1",
        "kubevirts",
        "kubevirt",
        "KubeVirt",
        true,
        &["kv", "kvs"],
        &["all"],
    ),
    crd(
        "pool.kubevirt.io",
        "v1beta1",
        "virtualmachinepools",
        "virtualmachinepool",
        "VirtualMachinePool",
        true,
        &["vmpool", "vmpools"],
        &["all"],
    ),
    crd(
        "cdi.kubevirt.io",
        "v1beta1",
        "datavolumes",
        "datavolume",
        "DataVolume",
        true,
        &["dv", "dvs"],
        &["all"],
    ),
    crd(
        "k8s.cni.cncf.io",
        "v1",
        "network-attachment-definitions",
        "network-attachment-definition",
        "NetworkAttachmentDefinition",
        false,
        &["net-attach-def"],
        &[],
    ),
];

/// The resource served at `group/version/plural`, if any.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static ResourceDef> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Fields besides `metadata.name` and `metadata.namespace` that list and watch requests may
/// select on, as the built-in kinds declare them (kubectl describe selects events by
/// `involvedObject`).
pub fn selectable_fields(r: &ResourceDef) -> &'static [&'static str] {
    match (r.group, r.plural) {
        ("", "events") => &[
            "involvedObject.apiVersion",
            "involvedObject.fieldPath",
            "involvedObject.kind",
            "involvedObject.name",
            "involvedObject.namespace",
            "involvedObject.resourceVersion",
            "involvedObject.uid",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        ("", "namespaces") => &["status.phase"],
        ("", "secrets") => &["type"],
        _ => &[],
    }
}

/// Does a successful DELETE answer with the deleted object (true) or a `Success` Status? The
/// API server returns the object for namespaces, PVCs and custom resources, a Status for the
/// plain built-in kinds.
pub fn delete_returns_object(r: &ResourceDef) -> bool {
    r.custom
        || matches!(
            (r.group, r.plural),
            ("", "namespaces" | "persistentvolumeclaims")
        )
}

/// The resource of `namespaces` (used for namespace existence checks).
pub fn namespaces() -> &'static ResourceDef {
    &RESOURCES[0]
}

/// Served group/versions in table order, each once: `("", "v1")`, `("storage.k8s.io", "v1")`, …
pub fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&'static str, &'static str)> = Vec::new();
    for r in RESOURCES {
        if !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_is_first_and_table_is_unique() {
        assert_eq!(namespaces().plural, "namespaces");
        for (i, a) in RESOURCES.iter().enumerate() {
            for b in &RESOURCES[i + 1..] {
                assert!(
                    (a.group, a.version, a.plural) != (b.group, b.version, b.plural),
                    "{} twice",
                    a.plural
                );
            }
        }
    }

    #[test]
    fn qualified_names_follow_kubernetes_messages() {
        let vm = find("kubevirt.io", "v1", "virtualmachines").unwrap();
        assert_eq!(vm.qualified_plural(), "virtualmachines.kubevirt.io");
        assert_eq!(vm.qualified_kind(), "VirtualMachine.kubevirt.io");
        assert_eq!(vm.api_version(), "kubevirt.io/v1");
        let pvc = find("", "v1", "persistentvolumeclaims").unwrap();
        assert_eq!(pvc.qualified_plural(), "persistentvolumeclaims");
        assert_eq!(pvc.api_version(), "v1");
        assert_eq!(group_versions()[0], ("", "v1"));
    }
}

//! The one identity type for Kubernetes objects: group, kind, namespace and name, totally
//! ordered so that every map keyed by it iterates in a stable order.

use std::fmt;

/// Identity of a namespaced Kubernetes object.
///
/// Ordering is by namespace, then kind (which implies the API group), then name: the order in which
/// rendered objects are printed and plans are grouped.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct ObjectRef {
    pub namespace: String,
    pub kind: Kind,
    pub name: String,
}

/// The kinds Wukong renders and owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Kind {
    /// `k8s.cni.cncf.io/v1 NetworkAttachmentDefinition` (ordered first: VMs depend on them).
    NetworkAttachmentDefinition,
    /// `kubevirt.io/v1 VirtualMachine`.
    VirtualMachine,
}

impl Kind {
    /// `apiVersion` of objects of this kind.
    pub fn api_version(self) -> &'static str {
        match self {
            Kind::NetworkAttachmentDefinition => "k8s.cni.cncf.io/v1",
            Kind::VirtualMachine => "kubevirt.io/v1",
        }
    }

    /// The `kind` field of objects of this kind.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::NetworkAttachmentDefinition => "NetworkAttachmentDefinition",
            Kind::VirtualMachine => "VirtualMachine",
        }
    }
}

impl ObjectRef {
    pub fn new(kind: Kind, namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ObjectRef {
            namespace: namespace.into(),
            kind,
            name: name.into(),
        }
    }

    pub fn vm(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self::new(Kind::VirtualMachine, namespace, name)
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plural = match self.kind {
            Kind::NetworkAttachmentDefinition => "network-attachment-definitions",
            Kind::VirtualMachine => "vms",
        };
        write!(f, "{plural}/{}/{}", self.namespace, self.name)
    }
}

/// Field manager of everything Wukong writes. The planner reads this manager's entry in
/// `metadata.managedFields` to find fields Wukong set earlier and the fleet no longer declares.
pub const FIELD_MANAGER: &str = "wukong";

/// Marks every object Wukong renders; Wukong changes or deletes nothing without it.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Value of [`LABEL_MANAGED_BY`] on Wukong's objects.
pub const MANAGED_BY_VALUE: &str = "wukong";
/// Prefix of Wukong's own labels and annotations; fleet documents may not set keys under it.
pub const WUKONG_PREFIX: &str = "wukong.novasphere.dev/";
/// The fleet an object belongs to.
pub const LABEL_FLEET: &str = "wukong.novasphere.dev/fleet";
/// The WukongSet a VM belongs to.
pub const LABEL_SET: &str = "wukong.novasphere.dev/set";
/// A set member's index.
pub const LABEL_INDEX: &str = "wukong.novasphere.dev/index";
/// The Git revision that last changed the object.
pub const ANNOTATION_REVISION: &str = "wukong.novasphere.dev/revision";

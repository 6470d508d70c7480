//! What the cluster allows, read from live objects: the KubeVirt CR's rollout settings, a
//! running instance's hot-plug limits and migratability, storage classes' expansion. These are
//! the pre-checks that decide whether a change can be live (`kubevirt-facts.md` §0–§6). And
//! what the cluster lacks ([`Availability`]): a namespace, a storage class or a network
//! attachment an object needs, without which a step could only fail or hang.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::identity::{Kind, ObjectRef};

use crate::live::{LiveState, at, condition, condition_true, quantity_at, str_at};
use crate::quantity::Quantity;

/// Cluster-wide settings of the KubeVirt CR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeVirtConfig {
    /// `vmRolloutStrategy` is LiveUpdate (also when unset: the default since v1.6).
    pub live_update: bool,
    /// `workloadUpdateMethods` lists LiveMigrate: needed for every migration-based change.
    pub live_migrate: bool,
    /// Whether the CR could be read at all (else the defaults above are assumed).
    pub known: bool,
}

impl KubeVirtConfig {
    pub fn of(live: &LiveState) -> KubeVirtConfig {
        match &live.kubevirt {
            None => KubeVirtConfig {
                // KubeVirt's own defaults: LiveUpdate, and no workload update methods.
                live_update: true,
                live_migrate: false,
                known: false,
            },
            Some(kv) => KubeVirtConfig {
                live_update: str_at(kv, &["spec", "configuration", "vmRolloutStrategy"])
                    .is_none_or(|s| s == "LiveUpdate"),
                live_migrate: at(
                    kv,
                    &["spec", "workloadUpdateStrategy", "workloadUpdateMethods"],
                )
                .and_then(Value::as_array)
                .is_some_and(|m| m.iter().any(|v| v.as_str() == Some("LiveMigrate"))),
                known: true,
            },
        }
    }

    /// Why a migration-based live change cannot happen on this cluster, if it cannot.
    pub fn live_blocker(&self) -> Option<String> {
        if !self.live_update {
            Some(
                "the cluster's vmRolloutStrategy is Stage: template changes wait for a restart"
                    .into(),
            )
        } else if !self.known {
            Some("the KubeVirt CR cannot be read, so LiveMigrate in workloadUpdateMethods cannot be confirmed".into())
        } else if !self.live_migrate {
            Some("the KubeVirt CR's workloadUpdateMethods does not list LiveMigrate, so no hot-plug migration would run".into())
        } else {
            None
        }
    }
}

/// What the running instance of a VM allows.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    pub running: bool,
    pub paused: bool,
    /// `LiveMigratable` condition: `Ok(())`, or the reason it is not.
    pub migratable: Result<(), String>,
    /// Sockets in use (`status.currentCPUTopology`, else the spec).
    pub sockets: u32,
    pub max_sockets: Option<u32>,
    pub guest_at_boot: Option<Quantity>,
    pub max_guest: Option<Quantity>,
    /// A memory hot-plug failed on this instance (`HotMemoryChange=False`).
    pub memory_hotplug_failed: bool,
}

impl Instance {
    pub fn of(vmi: &Value) -> Instance {
        let q = |path: &[&str]| quantity_at(vmi, path);
        let u = |path: &[&str]| {
            at(vmi, path)
                .and_then(Value::as_u64)
                .and_then(|n| u32::try_from(n).ok())
        };
        let migratable = match condition(vmi, "LiveMigratable") {
            Some(c) if c.get("status").and_then(Value::as_str) == Some("True") => Ok(()),
            Some(c) => Err(c
                .get("message")
                .and_then(Value::as_str)
                .or_else(|| c.get("reason").and_then(Value::as_str))
                .unwrap_or("LiveMigratable is False")
                .to_owned()),
            None => Err("the instance does not report LiveMigratable".to_owned()),
        };
        Instance {
            running: str_at(vmi, &["status", "phase"]) == Some("Running"),
            paused: condition_true(vmi, "Paused"),
            migratable,
            sockets: u(&["status", "currentCPUTopology", "sockets"])
                .or_else(|| u(&["spec", "domain", "cpu", "sockets"]))
                .unwrap_or(1),
            max_sockets: u(&["spec", "domain", "cpu", "maxSockets"]),
            guest_at_boot: q(&["status", "memory", "guestAtBoot"]),
            max_guest: q(&["spec", "domain", "memory", "maxGuest"]),
            memory_hotplug_failed: condition(vmi, "HotMemoryChange")
                .and_then(|c| c.get("status"))
                .and_then(Value::as_str)
                == Some("False"),
        }
    }
}

/// Whether a PVC's storage class allows expansion: `Err` names why not.
pub fn expansion_allowed(live: &LiveState, pvc: &Value) -> Result<(), String> {
    let class = match str_at(pvc, &["spec", "storageClassName"]) {
        Some(c) => Some(c.to_owned()),
        None => live
            .storage_classes
            .iter()
            .find(|(_, sc)| {
                str_at(
                    sc,
                    &[
                        "metadata",
                        "annotations",
                        "storageclass.kubernetes.io/is-default-class",
                    ],
                ) == Some("true")
            })
            .map(|(n, _)| n.clone()),
    };
    let Some(class) = class else {
        return Err("the PVC has no storage class and the cluster has no default one".into());
    };
    match live.storage_classes.get(&class) {
        None => Err(format!("storage class `{class}` is not in the cluster")),
        Some(sc) if sc.get("allowVolumeExpansion").and_then(Value::as_bool) == Some(true) => Ok(()),
        Some(_) => Err(format!(
            "storage class `{class}` does not allow volume expansion (allowVolumeExpansion is not true)"
        )),
    }
}

/// What the cluster lacks for the fleet's objects. A VM whose namespace does not exist cannot
/// be created; one whose disk names a storage class the cluster does not have is created but
/// never runs (its PVC stays Pending), and one whose network names a missing attachment never
/// starts: each such step is `blocked` with the reason, rather than tried and left to hang.
pub struct Availability<'a> {
    live: &'a LiveState,
    /// Network attachments the plan creates, as (namespace, name).
    created: BTreeSet<(&'a str, &'a str)>,
    /// The namespaces whose network attachments were read (the fleet's allowlist); empty: all.
    allowlist: &'a [String],
}

impl<'a> Availability<'a> {
    pub fn new(
        live: &'a LiveState,
        desired: impl IntoIterator<Item = &'a ObjectRef>,
        allowlist: &'a [String],
    ) -> Availability<'a> {
        Availability {
            live,
            created: desired
                .into_iter()
                .filter(|id| id.kind == Kind::NetworkAttachmentDefinition)
                .map(|id| (id.namespace.as_str(), id.name.as_str()))
                .collect(),
            allowlist,
        }
    }

    /// Why nothing can be created in `namespace` (it does not exist or is being deleted).
    pub fn namespace(&self, namespace: &str) -> Option<String> {
        self.live.namespace_missing(namespace)
    }

    /// Why a disk of storage class `class` (`None`: the cluster's default) cannot be provisioned.
    pub fn storage_class(&self, class: Option<&str>) -> Option<String> {
        match class {
            Some(c) if self.live.storage_classes.contains_key(c) => None,
            Some(c) => Some(format!(
                "storage class `{c}` does not exist, so its PVC would stay Pending"
            )),
            None if self.live.storage_classes.values().any(|sc| {
                [
                    "storageclass.kubernetes.io/is-default-class",
                    "storageclass.kubevirt.io/is-default-virt-class",
                ]
                .iter()
                .any(|a| str_at(sc, &["metadata", "annotations", a]) == Some("true"))
            }) =>
            {
                None
            }
            None => Some(
                "no storage class is named and the cluster has no default one, so its PVC would stay Pending".into(),
            ),
        }
    }

    /// Why a VM in `vm_namespace` cannot use the network attachment `network` (`name` or
    /// `namespace/name`): it does not exist and the plan does not create it. Attachments in
    /// namespaces that were not read are not judged.
    pub fn network(&self, vm_namespace: &str, network: &str) -> Option<String> {
        let (ns, name) = network.split_once('/').unwrap_or((vm_namespace, network));
        let read = self.allowlist.is_empty() || self.allowlist.iter().any(|a| a == ns);
        let id = ObjectRef::new(Kind::NetworkAttachmentDefinition, ns, name);
        if !read || self.live.objects.contains_key(&id) || self.created.contains(&(ns, name)) {
            return None;
        }
        Some(format!(
            "network attachment {ns}/{name} does not exist, so the VM could not start"
        ))
    }
}

/// The RestartRequired condition's message, when the VM has one.
pub fn restart_required(vm: &Value) -> Option<String> {
    condition_true(vm, "RestartRequired").then(|| {
        condition(vm, "RestartRequired")
            .and_then(|c| c.get("message"))
            .and_then(Value::as_str)
            .unwrap_or("RestartRequired")
            .to_owned()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::LiveKind;
    use serde_json::json;

    #[test]
    fn kubevirt_defaults_when_the_cr_is_missing() {
        let c = KubeVirtConfig::of(&LiveState::default());
        assert!(c.live_update && !c.live_migrate && !c.known);
        assert!(c.live_blocker().unwrap().contains("cannot be read"));
    }

    #[test]
    fn kubevirt_rollout_and_methods() {
        let mut live = LiveState::default();
        live.insert(
            LiveKind::KubeVirt,
            json!({"metadata": {"name": "kubevirt", "namespace": "kubevirt"},
                   "spec": {"workloadUpdateStrategy": {"workloadUpdateMethods": ["LiveMigrate"]}}}),
        )
        .unwrap();
        assert_eq!(KubeVirtConfig::of(&live).live_blocker(), None);
        live.kubevirt.as_mut().unwrap()["spec"]["configuration"] =
            json!({"vmRolloutStrategy": "Stage"});
        assert!(
            KubeVirtConfig::of(&live)
                .live_blocker()
                .unwrap()
                .contains("Stage")
        );
    }

    #[test]
    fn instance_limits() {
        let vmi = json!({
            "spec": {"domain": {"cpu": {"sockets": 4, "maxSockets": 16},
                                "memory": {"guest": "4Gi", "maxGuest": "16Gi"}}},
            "status": {"phase": "Running",
                       "currentCPUTopology": {"sockets": 2, "cores": 1, "threads": 1},
                       "memory": {"guestAtBoot": "2Gi"},
                       "conditions": [{"type": "LiveMigratable", "status": "False",
                                       "message": "cannot migrate VMI: PVC data is not shared"}]}
        });
        let i = Instance::of(&vmi);
        assert!(i.running && !i.paused);
        assert_eq!(i.sockets, 2);
        assert_eq!(i.max_sockets, Some(16));
        assert_eq!(i.guest_at_boot, Some("2Gi".parse().unwrap()));
        assert_eq!(
            i.migratable,
            Err("cannot migrate VMI: PVC data is not shared".into())
        );
    }

    #[test]
    fn expansion_follows_the_storage_class() {
        let mut live = LiveState::default();
        live.insert(
            LiveKind::StorageClass,
            json!({"metadata": {"name": "fast", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
                   "allowVolumeExpansion": true}),
        )
        .unwrap();
        live.insert(
            LiveKind::StorageClass,
            json!({"metadata": {"name": "slow"}}),
        )
        .unwrap();
        let pvc = |sc: Value| json!({"spec": {"storageClassName": sc}});
        assert_eq!(expansion_allowed(&live, &pvc(json!("fast"))), Ok(()));
        assert_eq!(expansion_allowed(&live, &pvc(Value::Null)), Ok(()));
        assert!(
            expansion_allowed(&live, &pvc(json!("slow")))
                .unwrap_err()
                .contains("does not allow")
        );
        assert!(
            expansion_allowed(&live, &pvc(json!("gone")))
                .unwrap_err()
                .contains("not in the cluster")
        );
    }
}

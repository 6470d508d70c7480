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

/// A KubeVirt release, `vMAJOR.MINOR.PATCH` (a pre-release such as `v1.10.0-alpha.0` counts as
/// its release: KubeVirt's changes land on main before the first tag of the release).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl Version {
    pub const fn new(major: u32, minor: u32, patch: u32) -> Version {
        Version {
            major,
            minor,
            patch,
        }
    }

    /// Parse `v1.9.0`, `1.9.0` or `v1.10.0-alpha.0.12+abc`.
    pub fn parse(s: &str) -> Option<Version> {
        let s = s.trim().strip_prefix('v').unwrap_or(s.trim());
        let core = s.split(['-', '+']).next()?;
        let mut parts = core.split('.').map(|p| p.parse::<u32>().ok());
        let v = Version::new(
            parts.next()??,
            parts.next()??,
            parts.next().flatten().unwrap_or(0),
        );
        Some(v)
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "v{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// The oldest KubeVirt whose rules Wukong plans with (the first with LiveUpdate as the default
/// rollout strategy, facts §0). When the cluster reports no version its rules are assumed:
/// they are the most conservative (RestartRequired sticky until a restart, no NAD swap, disk
/// expansion behind a feature gate).
pub const OLDEST_SUPPORTED: Version = Version::new(1, 6, 0);

/// The message of a RestartRequired that KubeVirt sets because a field that cannot change live
/// differs from the running instance's (`syncRestartRequired`, kv:`pkg/virt-controller/watch/vm/vm.go`
/// L3058-3060). The CPU and memory handlers set other messages (facts §1, §2).
pub const NON_LIVE_CHANGE: &str = "a non-live-updatable field was changed in the template spec";

/// Cluster-wide settings of the KubeVirt CR, and the KubeVirt version whose rules apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeVirtConfig {
    /// `vmRolloutStrategy` is LiveUpdate (also when unset: the default since v1.6).
    pub live_update: bool,
    /// `workloadUpdateMethods` lists LiveMigrate: needed for every migration-based change.
    pub live_migrate: bool,
    /// Whether the CR could be read at all (else the defaults above are assumed).
    pub known: bool,
    /// `status.observedKubeVirtVersion`, or [`OLDEST_SUPPORTED`] when it is not reported.
    pub version: Version,
    /// Whether [`Self::version`] was reported by the cluster (else assumed).
    pub version_reported: bool,
    /// `developerConfiguration.featureGates`.
    pub feature_gates: Vec<String>,
    /// `developerConfiguration.disabledFeatureGates` (Beta gates are on unless listed here).
    pub disabled_gates: Vec<String>,
}

impl KubeVirtConfig {
    pub fn of(live: &LiveState) -> KubeVirtConfig {
        let Some(kv) = &live.kubevirt else {
            // KubeVirt's own defaults: LiveUpdate, and no workload update methods.
            return KubeVirtConfig {
                live_update: true,
                live_migrate: false,
                known: false,
                version: OLDEST_SUPPORTED,
                version_reported: false,
                feature_gates: Vec::new(),
                disabled_gates: Vec::new(),
            };
        };
        let reported = str_at(kv, &["status", "observedKubeVirtVersion"]).and_then(Version::parse);
        let version = reported.unwrap_or(OLDEST_SUPPORTED);
        let gates = |key: &str| -> Vec<String> {
            at(
                kv,
                &["spec", "configuration", "developerConfiguration", key],
            )
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
        };
        KubeVirtConfig {
            // Unset means LiveUpdate from v1.6.0 on (`48c28a5532`), Stage before (facts §0).
            live_update: match str_at(kv, &["spec", "configuration", "vmRolloutStrategy"]) {
                Some(s) => s == "LiveUpdate",
                None => version >= Version::new(1, 6, 0),
            },
            live_migrate: at(
                kv,
                &["spec", "workloadUpdateStrategy", "workloadUpdateMethods"],
            )
            .and_then(Value::as_array)
            .is_some_and(|m| m.iter().any(|v| v.as_str() == Some("LiveMigrate"))),
            known: true,
            version,
            version_reported: reported.is_some(),
            feature_gates: gates("featureGates"),
            disabled_gates: gates("disabledFeatureGates"),
        }
    }

    /// The version the plan follows, as the plan states it.
    pub fn describe(&self) -> String {
        if self.version_reported {
            format!("KubeVirt {}", self.version)
        } else if self.known {
            format!(
                "KubeVirt {} assumed (the KubeVirt CR reports no status.observedKubeVirtVersion; the oldest supported version's rules are the most conservative)",
                self.version
            )
        } else {
            format!(
                "KubeVirt {} assumed (the KubeVirt CR cannot be read; the oldest supported version's rules are the most conservative)",
                self.version
            )
        }
    }

    /// Why a migration-based live change cannot happen on this cluster, if it cannot.
    pub fn live_blocker(&self) -> Option<String> {
        if !self.live_update {
            Some(
                "the cluster's vmRolloutStrategy is Stage: template changes wait for a restart"
                    .into(),
            )
        } else {
            self.migration_blocker()
        }
    }

    /// Why KubeVirt's workload updater would not migrate a VM for a change, if it would not
    /// (facts §0: it migrates only with LiveMigrate in `workloadUpdateMethods`).
    pub fn migration_blocker(&self) -> Option<String> {
        if !self.known {
            Some("the KubeVirt CR cannot be read, so LiveMigrate in workloadUpdateMethods cannot be confirmed".into())
        } else if !self.live_migrate {
            Some("the KubeVirt CR's workloadUpdateMethods does not list LiveMigrate, so no hot-plug migration would run".into())
        } else {
            None
        }
    }

    /// Whether KubeVirt recomputes RestartRequired on every reconcile, so that a RestartRequired
    /// set by the CPU or memory handler blocks nothing and only a real non-live difference
    /// holds live changes back: from v1.8.0 (`6fbd89c579`), backported to v1.7.1 and v1.6.4
    /// (facts §1 "VM controller flow", §6 "RestartRequired lifecycle"). Before, any
    /// RestartRequired stays until a restart and blocks every live CPU and memory change.
    pub fn restart_required_recomputed(&self) -> bool {
        let v = self.version;
        v >= Version::new(1, 8, 0)
            || (v >= Version::new(1, 7, 1) && v < Version::new(1, 8, 0))
            || (v >= Version::new(1, 6, 4) && v < Version::new(1, 7, 0))
    }

    /// Whether a RestartRequired with `message` holds live CPU, memory and scheduling changes
    /// back on this version.
    pub fn blocks_live_changes(&self, message: &str) -> bool {
        !self.restart_required_recomputed() || message == NON_LIVE_CHANGE
    }

    /// Whether a grown PVC reaches the VM: ExpandDisks is GA from v1.9.0 (`1c4c7d9c27`), an
    /// Alpha gate before, which virt-launcher checks for online and offline expansion alike
    /// (facts §0, §4). `Err` says why not.
    pub fn expand_disks(&self) -> Result<(), String> {
        if self.version >= Version::new(1, 9, 0)
            || self.feature_gates.iter().any(|g| g == "ExpandDisks")
        {
            Ok(())
        } else {
            Err(format!(
                "{} passes a grown disk to the VM only with the ExpandDisks feature gate (GA from v1.9.0), and the KubeVirt CR does not list it in developerConfiguration.featureGates",
                self.describe()
            ))
        }
    }

    /// Whether changing a secondary interface's NetworkAttachmentDefinition can happen without
    /// a restart: `LiveUpdateNADRef`, Beta (on unless disabled) in v1.8, GA in v1.9 (facts §0,
    /// §3 "NAD swap"). Before v1.8 KubeVirt marks it RestartRequired.
    pub fn nad_swap_live(&self) -> bool {
        let v = self.version;
        v >= Version::new(1, 9, 0)
            || (v >= Version::new(1, 8, 0)
                && !self.disabled_gates.iter().any(|g| g == "LiveUpdateNADRef"))
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
    /// Guest memory the instance runs with: the last hot-plug KubeVirt applied
    /// (`status.memory.guestRequested`, set at boot too; facts §2), else what it booted with.
    pub guest: Option<Quantity>,
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
            guest: q(&["status", "memory", "guestRequested"])
                .or_else(|| q(&["status", "memory", "guestAtBoot"])),
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
    fn versions_parse_and_order() {
        assert_eq!(Version::parse("v1.9.0"), Some(Version::new(1, 9, 0)));
        assert_eq!(
            Version::parse("v1.10.0-alpha.0.45+0123abcd"),
            Some(Version::new(1, 10, 0))
        );
        assert_eq!(Version::parse("1.8"), Some(Version::new(1, 8, 0)));
        assert_eq!(Version::parse("latest"), None);
        assert!(Version::new(1, 10, 0) > Version::new(1, 9, 3));
    }

    fn with_version(version: Option<&str>, gates: Value) -> KubeVirtConfig {
        let mut live = LiveState::default();
        let mut kv = json!({"metadata": {"name": "kubevirt", "namespace": "kubevirt"},
                            "spec": {"configuration": {"developerConfiguration": gates}}});
        if let Some(v) = version {
            kv["status"] = json!({"observedKubeVirtVersion": v});
        }
        live.insert(LiveKind::KubeVirt, kv).unwrap();
        KubeVirtConfig::of(&live)
    }

    #[test]
    fn rules_follow_the_reported_version() {
        let v = |s| with_version(Some(s), json!({}));
        // RestartRequired recomputed from v1.8.0, v1.7.1 and v1.6.4.
        for (version, recomputed) in [
            ("v1.6.3", false),
            ("v1.6.4", true),
            ("v1.7.0", false),
            ("v1.7.1", true),
            ("v1.8.0", true),
            ("v1.9.0", true),
        ] {
            assert_eq!(
                v(version).restart_required_recomputed(),
                recomputed,
                "{version}"
            );
        }
        assert!(
            v("v1.7.0").blocks_live_changes("Reduction of CPU socket count requires a restart")
        );
        assert!(
            !v("v1.8.0").blocks_live_changes("Reduction of CPU socket count requires a restart")
        );
        assert!(v("v1.8.0").blocks_live_changes(NON_LIVE_CHANGE));
        // ExpandDisks: a gate before v1.9.0.
        assert!(
            v("v1.8.4")
                .expand_disks()
                .unwrap_err()
                .contains("ExpandDisks")
        );
        assert!(
            with_version(Some("v1.8.4"), json!({"featureGates": ["ExpandDisks"]}))
                .expand_disks()
                .is_ok()
        );
        assert!(v("v1.9.0").expand_disks().is_ok());
        // NAD swap: Beta in v1.8 (unless disabled), GA in v1.9.
        assert!(!v("v1.7.2").nad_swap_live());
        assert!(v("v1.8.0").nad_swap_live());
        assert!(
            !with_version(
                Some("v1.8.0"),
                json!({"disabledFeatureGates": ["LiveUpdateNADRef"]})
            )
            .nad_swap_live()
        );
        assert!(
            with_version(
                Some("v1.9.0"),
                json!({"disabledFeatureGates": ["LiveUpdateNADRef"]})
            )
            .nad_swap_live()
        );
    }

    #[test]
    fn an_unreported_version_assumes_the_oldest_supported_and_says_so() {
        let c = with_version(None, json!({}));
        assert_eq!(c.version, OLDEST_SUPPORTED);
        assert!(!c.restart_required_recomputed() && !c.nad_swap_live());
        assert!(c.expand_disks().is_err());
        assert!(c.describe().contains("assumed"), "{}", c.describe());
        assert_eq!(
            with_version(Some("v1.9.0"), json!({})).describe(),
            "KubeVirt v1.9.0"
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

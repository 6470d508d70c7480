//! Reading and writing the parts of KubeVirt, CDI and core objects the simulated controllers
//! look at, as `serde_json::Value`s: quantities, conditions, owner references, the run strategy
//! and the cluster-wide settings of the KubeVirt CR ([`KvConfig`]).
//!
//! Pure; depends only on [`crate::quantity`].

use serde_json::{Map, Value, json};

use crate::quantity::Quantity;
use crate::sim::version::KubeVirtVersion;

/// The API version of KubeVirt's core kinds.
pub const KUBEVIRT_API: &str = "kubevirt.io/v1";
/// The API version of CDI's kinds.
pub const CDI_API: &str = "cdi.kubevirt.io/v1beta1";

/// KubeVirt's default `maxHotplugRatio` (kv: `virt-config.go` `DefaultMaxHotplugRatio`).
pub const DEFAULT_MAX_HOTPLUG_RATIO: u64 = 4;
/// The most vCPUs `maxSockets` defaulting allows (kv: `defaults.go` `maxSockets*cores*threads > 512`).
pub const MAX_DEFAULT_VCPUS: u64 = 512;
/// Memory hot-plug block alignment: 2 MiB (`HotplugBlockAlignmentBytes`).
pub const HOTPLUG_BLOCK_ALIGNMENT: u64 = 0x20_0000;
/// Memory hot-plug block alignment with 1Gi huge pages.
pub const HOTPLUG_1G_HUGEPAGE_ALIGNMENT: u64 = 0x4000_0000;
/// Smallest guest memory that supports memory hot-plug: 1 GiB (`requiredMinGuestMemory`).
pub const MIN_HOTPLUG_GUEST: u64 = 0x4000_0000;

/// The string at a JSON pointer.
pub fn text<'a>(obj: &'a Value, pointer: &str) -> Option<&'a str> {
    obj.pointer(pointer).and_then(Value::as_str)
}

/// The unsigned number at a JSON pointer.
pub fn number(obj: &Value, pointer: &str) -> Option<u64> {
    obj.pointer(pointer).and_then(Value::as_u64)
}

/// The quantity (string or number) at a JSON pointer.
pub fn quantity(obj: &Value, pointer: &str) -> Option<Quantity> {
    match obj.pointer(pointer)? {
        Value::String(s) => Quantity::parse(s).ok(),
        Value::Number(n) => Quantity::parse(&n.to_string()).ok(),
        _ => None,
    }
}

/// Bytes of the quantity at a JSON pointer (whole units only).
pub fn bytes(obj: &Value, pointer: &str) -> Option<u64> {
    quantity(obj, pointer).and_then(|q| q.as_u64())
}

/// A byte count as a quantity string in its natural binary unit (`2Gi`, `1536Mi`).
pub fn bytes_text(b: u64) -> String {
    Quantity::from_bytes(b).to_string()
}

/// The array at a JSON pointer, or empty.
pub fn array<'a>(obj: &'a Value, pointer: &str) -> &'a [Value] {
    obj.pointer(pointer)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// `metadata.name`, `metadata.namespace`, `metadata.uid` (empty when missing).
pub fn name(obj: &Value) -> &str {
    text(obj, "/metadata/name").unwrap_or_default()
}
pub fn namespace(obj: &Value) -> &str {
    text(obj, "/metadata/namespace").unwrap_or_default()
}
pub fn uid(obj: &Value) -> &str {
    text(obj, "/metadata/uid").unwrap_or_default()
}

/// The `pointer` object of `obj`, created (with every missing parent) when absent; anything
/// else in the way is replaced by an object.
pub fn object_at<'a>(obj: &'a mut Value, pointer: &str) -> &'a mut Map<String, Value> {
    let mut cur = ensure_object(obj);
    for seg in pointer.split('/').skip(1) {
        cur = ensure_object(
            cur.entry(seg.to_string())
                .or_insert_with(|| Value::Object(Map::new())),
        );
    }
    cur
}

fn ensure_object(v: &mut Value) -> &mut Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => {
            *other = Value::Object(Map::new());
            ensure_object(other)
        }
    }
}

/// The condition of `type_` in `obj.status.conditions`.
pub fn condition<'a>(obj: &'a Value, type_: &str) -> Option<&'a Value> {
    array(obj, "/status/conditions")
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(type_))
}

/// The status (`True`/`False`/`Unknown`) of a condition.
pub fn condition_status<'a>(obj: &'a Value, type_: &str) -> Option<&'a str> {
    condition(obj, type_).and_then(|c| c.get("status").and_then(Value::as_str))
}

/// Whether a condition is present with status `True`.
pub fn is_true(obj: &Value, type_: &str) -> bool {
    condition_status(obj, type_) == Some("True")
}

/// A condition as KubeVirt writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub type_: String,
    pub status: &'static str,
    pub reason: String,
    pub message: String,
}

impl Condition {
    pub fn new(type_: &str, status: bool, reason: &str, message: &str) -> Self {
        Self {
            type_: type_.to_string(),
            status: if status { "True" } else { "False" },
            reason: reason.to_string(),
            message: message.to_string(),
        }
    }
}

/// Write `wanted` as the complete condition list of `status`, keeping each unchanged
/// condition's `lastTransitionTime` (and stamping `now` on new or changed ones).
pub fn set_conditions(status: &mut Map<String, Value>, wanted: &[Condition], now: &str) {
    let old: Vec<Value> = status
        .get("conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let list: Vec<Value> = wanted
        .iter()
        .map(|c| {
            let previous = old
                .iter()
                .find(|o| o.get("type").and_then(Value::as_str) == Some(c.type_.as_str()));
            let same_status =
                previous.and_then(|p| p.get("status").and_then(Value::as_str)) == Some(c.status);
            let transition = match previous {
                Some(p) if same_status => {
                    p.get("lastTransitionTime").cloned().unwrap_or(Value::Null)
                }
                _ => json!(now),
            };
            let mut v = json!({
                "type": c.type_,
                "status": c.status,
                "lastProbeTime": null,
                "lastTransitionTime": transition,
            });
            if !c.reason.is_empty() {
                v["reason"] = json!(c.reason);
            }
            if !c.message.is_empty() {
                v["message"] = json!(c.message);
            }
            v
        })
        .collect();
    if list.is_empty() {
        status.remove("conditions");
    } else {
        status.insert("conditions".into(), Value::Array(list));
    }
}

/// The conditions of an object as [`Condition`]s.
pub fn conditions(obj: &Value) -> Vec<Condition> {
    array(obj, "/status/conditions")
        .iter()
        .filter_map(|c| {
            let type_ = c.get("type")?.as_str()?;
            let status = c.get("status").and_then(Value::as_str) == Some("True");
            let mut cond = Condition::new(
                type_,
                status,
                c.get("reason").and_then(Value::as_str).unwrap_or_default(),
                c.get("message").and_then(Value::as_str).unwrap_or_default(),
            );
            if c.get("status").and_then(Value::as_str) == Some("Unknown") {
                cond.status = "Unknown";
            }
            Some(cond)
        })
        .collect()
}

/// An owner reference to `owner` as its controller.
pub fn controller_ref(owner: &Value) -> Value {
    json!({
        "apiVersion": owner.get("apiVersion").cloned().unwrap_or(Value::Null),
        "kind": owner.get("kind").cloned().unwrap_or(Value::Null),
        "name": name(owner),
        "uid": uid(owner),
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

/// The uid of `obj`'s controller owner of `kind`, if any.
pub fn controller_uid<'a>(obj: &'a Value, kind: &str) -> Option<&'a str> {
    array(obj, "/metadata/ownerReferences")
        .iter()
        .find(|r| {
            r.get("kind").and_then(Value::as_str) == Some(kind)
                && r.get("controller").and_then(Value::as_bool) == Some(true)
        })
        .and_then(|r| r.get("uid").and_then(Value::as_str))
}

/// A VM's run strategy: `spec.runStrategy`, or `spec.running` (true: Always, false: Halted).
pub fn run_strategy(vm: &Value) -> &str {
    if let Some(s) = text(vm, "/spec/runStrategy") {
        return s;
    }
    match vm.pointer("/spec/running").and_then(Value::as_bool) {
        Some(true) => "Always",
        _ => "Halted",
    }
}

/// The cluster-wide settings of the KubeVirt CR that the controllers and webhooks use, with the
/// operator's defaults for unset fields (facts §0).
#[derive(Debug, Clone, PartialEq)]
pub struct KvConfig {
    /// `vmRolloutStrategy` is LiveUpdate (also when unset).
    pub live_update: bool,
    /// `workloadUpdateMethods` lists `LiveMigrate`.
    pub live_migrate: bool,
    /// `workloadUpdateMethods` lists `Evict`.
    pub evict: bool,
    pub max_hotplug_ratio: u64,
    pub max_cpu_sockets: Option<u64>,
    pub max_guest: Option<u64>,
    /// The release the cluster runs (`status.observedKubeVirtVersion`; the newest the simulator
    /// knows when missing or unknown).
    pub version: KubeVirtVersion,
    /// `developerConfiguration.featureGates` and `.disabledFeatureGates`.
    pub feature_gates: Vec<String>,
    pub disabled_feature_gates: Vec<String>,
    /// `status.defaultArchitecture` (virt-operator reports the control plane's; `amd64` here).
    pub default_architecture: String,
    /// `configuration.machineType` (deprecated cluster-wide override) and
    /// `configuration.architectureConfiguration.<arch>.machineType`.
    pub machine_type: Option<String>,
    pub arch_machine_types: Vec<(String, String)>,
    /// `configuration.emulatedMachines` (deprecated) and
    /// `configuration.architectureConfiguration.<arch>.emulatedMachines`.
    pub emulated_machines: Option<Vec<String>>,
    pub arch_emulated_machines: Vec<(String, Vec<String>)>,
    /// `configuration.network.permitBridgeInterfaceOnPodNetwork` (default true).
    pub permit_bridge_on_pod_network: bool,
}

impl Default for KvConfig {
    /// A cluster without a KubeVirt CR: the API defaults.
    fn default() -> Self {
        Self::from_cr(None)
    }
}

impl KvConfig {
    pub fn from_cr(kv: Option<&Value>) -> Self {
        let null = Value::Null;
        let kv = kv.unwrap_or(&null);
        let methods: Vec<&str> = array(kv, "/spec/workloadUpdateStrategy/workloadUpdateMethods")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let live = "/spec/configuration/liveUpdateConfiguration";
        let arch_config = "/spec/configuration/architectureConfiguration";
        Self {
            live_update: text(kv, "/spec/configuration/vmRolloutStrategy")
                .is_none_or(|s| s == "LiveUpdate"),
            live_migrate: methods.contains(&"LiveMigrate"),
            evict: methods.contains(&"Evict"),
            max_hotplug_ratio: number(kv, &format!("{live}/maxHotplugRatio"))
                .filter(|r| *r > 0)
                .unwrap_or(DEFAULT_MAX_HOTPLUG_RATIO),
            max_cpu_sockets: number(kv, &format!("{live}/maxCpuSockets")),
            max_guest: bytes(kv, &format!("{live}/maxGuest")),
            version: text(kv, "/status/observedKubeVirtVersion")
                .and_then(|v| KubeVirtVersion::parse(v).ok())
                .unwrap_or_default(),
            feature_gates: strings(
                kv,
                "/spec/configuration/developerConfiguration/featureGates",
            ),
            disabled_feature_gates: strings(
                kv,
                "/spec/configuration/developerConfiguration/disabledFeatureGates",
            ),
            default_architecture: text(kv, "/status/defaultArchitecture")
                .filter(|a| !a.is_empty())
                .unwrap_or("amd64")
                .to_string(),
            machine_type: text(kv, "/spec/configuration/machineType")
                .filter(|m| !m.is_empty())
                .map(String::from),
            arch_machine_types: ARCHITECTURES
                .iter()
                .filter_map(|a| {
                    text(kv, &format!("{arch_config}/{a}/machineType"))
                        .filter(|m| !m.is_empty())
                        .map(|m| (a.to_string(), m.to_string()))
                })
                .collect(),
            emulated_machines: kv
                .pointer("/spec/configuration/emulatedMachines")
                .and_then(Value::as_array)
                .map(|_| strings(kv, "/spec/configuration/emulatedMachines")),
            arch_emulated_machines: ARCHITECTURES
                .iter()
                .filter_map(|a| {
                    let pointer = format!("{arch_config}/{a}/emulatedMachines");
                    kv.pointer(&pointer)
                        .and_then(Value::as_array)
                        .map(|_| (a.to_string(), strings(kv, &pointer)))
                })
                .collect(),
            permit_bridge_on_pod_network: kv
                .pointer("/spec/configuration/network/permitBridgeInterfaceOnPodNetwork")
                .and_then(Value::as_bool)
                .unwrap_or(true),
        }
    }

    /// Whether a feature gate is on in this cluster (its release's maturity and the CR's lists).
    pub fn gate(&self, name: &str) -> bool {
        self.version
            .gate_enabled(name, &self.feature_gates, &self.disabled_feature_gates)
    }

    /// `ClusterConfig.GetMachineType(arch)` (kv: `pkg/virt-config/virt-config.go` L162-175, the
    /// defaults L58-60): the cluster-wide override, else the architecture's.
    pub fn machine_type(&self, arch: &str) -> String {
        if let Some(m) = &self.machine_type {
            return m.clone();
        }
        let arch = normalized_arch(arch);
        if let Some((_, m)) = self.arch_machine_types.iter().find(|(a, _)| a == arch) {
            return m.clone();
        }
        match arch {
            "arm64" => "virt",
            "s390x" => "s390-ccw-virtio",
            _ => "q35",
        }
        .to_string()
    }

    /// `ClusterConfig.GetEmulatedMachines(arch)` (virt-config.go L193-206, defaults L63-65).
    pub fn emulated_machines(&self, arch: &str) -> Vec<String> {
        if let Some(m) = &self.emulated_machines {
            return m.clone();
        }
        let arch = normalized_arch(arch);
        if let Some((_, m)) = self.arch_emulated_machines.iter().find(|(a, _)| a == arch) {
            return m.clone();
        }
        let defaults: &[&str] = match arch {
            "arm64" => &["virt*"],
            "s390x" => &["s390-ccw-virtio*"],
            _ => &["q35*", "pc-q35*"],
        };
        defaults.iter().map(|s| s.to_string()).collect()
    }
}

/// The architectures KubeVirt configures per architecture (`ArchConfiguration`).
const ARCHITECTURES: [&str; 3] = ["amd64", "arm64", "s390x"];

/// The architecture configuration `GetMachineType` and `GetEmulatedMachines` pick: arm64 and
/// s390x their own, anything else amd64's.
fn normalized_arch(arch: &str) -> &str {
    match arch {
        "arm64" | "s390x" => arch,
        _ => "amd64",
    }
}

/// The strings of the array at a JSON pointer.
fn strings(obj: &Value, pointer: &str) -> Vec<String> {
    array(obj, pointer)
        .iter()
        .filter_map(Value::as_str)
        .map(String::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_config_defaults_follow_the_operator() {
        let none = KvConfig::default();
        assert!(none.live_update && !none.live_migrate);
        assert_eq!(none.max_hotplug_ratio, 4);
        let kv = json!({"spec": {
            "workloadUpdateStrategy": {"workloadUpdateMethods": ["LiveMigrate"]},
            "configuration": {"vmRolloutStrategy": "Stage",
                "liveUpdateConfiguration": {"maxHotplugRatio": 2, "maxGuest": "16Gi"}}}});
        let c = KvConfig::from_cr(Some(&kv));
        assert!(!c.live_update && c.live_migrate && !c.evict);
        assert_eq!(c.max_hotplug_ratio, 2);
        assert_eq!(c.max_guest, Some(16 << 30));
    }

    #[test]
    fn conditions_keep_their_transition_time_while_unchanged() {
        let mut status = Map::new();
        set_conditions(&mut status, &[Condition::new("Ready", true, "", "")], "t1");
        set_conditions(
            &mut status,
            &[
                Condition::new("Ready", true, "", ""),
                Condition::new("Paused", true, "PausedByUser", "VMI was paused by user"),
            ],
            "t2",
        );
        let v = json!({"status": status.clone()});
        assert_eq!(condition(&v, "Ready").unwrap()["lastTransitionTime"], "t1");
        assert_eq!(condition(&v, "Paused").unwrap()["lastTransitionTime"], "t2");
        set_conditions(&mut status, &[Condition::new("Ready", false, "", "")], "t3");
        let v = json!({"status": status});
        assert_eq!(condition(&v, "Ready").unwrap()["lastTransitionTime"], "t3");
        assert!(condition(&v, "Paused").is_none());
    }

    #[test]
    fn run_strategy_reads_the_deprecated_running_field() {
        assert_eq!(run_strategy(&json!({"spec": {"running": true}})), "Always");
        assert_eq!(run_strategy(&json!({"spec": {"running": false}})), "Halted");
        assert_eq!(
            run_strategy(&json!({"spec": {"runStrategy": "Manual"}})),
            "Manual"
        );
        assert_eq!(bytes_text(3 << 30), "3Gi");
    }

    #[test]
    fn object_at_creates_parents() {
        let mut v = json!({"a": 1});
        object_at(&mut v, "/spec/domain/cpu").insert("sockets".into(), json!(2));
        assert_eq!(v["spec"]["domain"]["cpu"]["sockets"], 2);
    }
}

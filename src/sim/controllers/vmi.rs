//! The VirtualMachineInstance as KubeVirt builds it: the instance a VM's template starts
//! ([`from_vm`]), the defaults the VMI mutating webhook writes at creation
//! ([`apply_defaults`]: CPU topology, `maxSockets`, `memory.guest`, `maxGuest`, and the initial
//! `currentCPUTopology` and `status.memory`; facts §1, §2), the memory hot-plug validation
//! ([`validate_live_update_memory`]) and live-migratability ([`live_migratable`], facts §0).
//!
//! Pure; depends only on [`super::objects`], [`super::vm`]'s finalizer and firmware helpers and
//! [`crate::sim::version`].

use serde_json::{Map, Value, json};

use crate::sim::version::PciTopologyDefault;

use super::objects::{
    self, Condition, HOTPLUG_1G_HUGEPAGE_ALIGNMENT, HOTPLUG_BLOCK_ALIGNMENT, KUBEVIRT_API,
    KvConfig, MAX_DEFAULT_VCPUS, MIN_HOTPLUG_GUEST, bytes, bytes_text, number, text,
};

/// Annotation carrying the VM generation a VMI reflects (`kubevirt.io/vm-generation`).
pub const VM_GENERATION_ANNOTATION: &str = "kubevirt.io/vm-generation";
/// The annotation naming a VMI's PCI topology scheme (kv: types.go L1262-1276).
pub const PCI_TOPOLOGY_ANNOTATION: &str = "kubevirt.io/pci-topology-version";
/// Annotation that allows live migration with a bridge-bound pod network.
pub const ALLOW_POD_BRIDGE_MIGRATION: &str = "kubevirt.io/allow-pod-bridge-network-live-migration";

/// The CPU topology (sockets, cores, threads) of a `domain.cpu` object, each defaulting to 1.
pub fn topology(cpu: Option<&Value>) -> (u64, u64, u64) {
    let get = |k: &str| {
        cpu.and_then(|c| c.get(k))
            .and_then(Value::as_u64)
            .filter(|n| *n > 0)
            .unwrap_or(1)
    };
    (get("sockets"), get("cores"), get("threads"))
}

/// vCPUs of a topology.
pub fn vcpus(cpu: Option<&Value>) -> u64 {
    let (s, c, t) = topology(cpu);
    s * c * t
}

/// `defaults.SupportsPCIeHotplug` (kv: `pkg/defaults/defaults.go` L385-398): amd64 or arm64 (or
/// none) on a q35 or virt machine.
pub fn supports_pcie_hotplug(spec: &Value) -> bool {
    if !matches!(
        text(spec, "/architecture").unwrap_or(""),
        "amd64" | "arm64" | ""
    ) {
        return false;
    }
    match spec.pointer("/domain/machine") {
        Some(m) if !m.is_null() => {
            let t = text(m, "/type").unwrap_or("");
            t.contains("q35") || t.starts_with("virt")
        }
        _ => true,
    }
}

/// The new VMI for `vm` (vm.go `startVMI`, L1265-1320): the template's metadata and
/// spec, owned by the VM, with the controller's finalizer (L1306-1308) and a stable firmware
/// UUID (`setupStableFirmwareUUID`, L1941-1956: the template's, else the legacy name-derived
/// one), then the mutating webhook's defaults.
pub fn from_vm(vm: &Value, kv: &KvConfig) -> Value {
    let template = vm.pointer("/spec/template").cloned().unwrap_or(json!({}));
    let mut labels = template
        .pointer("/metadata/labels")
        .cloned()
        .unwrap_or(json!({}));
    if let Some(m) = labels.as_object_mut() {
        m.insert("kubevirt.io/vm".into(), json!(objects::name(vm)));
    }
    let mut annotations = template
        .pointer("/metadata/annotations")
        .cloned()
        .unwrap_or(json!({}));
    if let Some(m) = annotations.as_object_mut() {
        let generation = number(vm, "/metadata/generation").unwrap_or(1);
        m.insert(
            VM_GENERATION_ANNOTATION.into(),
            json!(generation.to_string()),
        );
        // The VM's own annotation is how KubeVirt allows pod-bridge migration.
        if let Some(v) = vm.pointer(&format!(
            "/metadata/annotations/{}",
            ALLOW_POD_BRIDGE_MIGRATION.replace('/', "~1")
        )) {
            m.insert(ALLOW_POD_BRIDGE_MIGRATION.into(), v.clone());
        }
    }
    let mut vmi = json!({
        "apiVersion": KUBEVIRT_API,
        "kind": "VirtualMachineInstance",
        "metadata": {
            "name": objects::name(vm),
            "namespace": objects::namespace(vm),
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [objects::controller_ref(vm)],
        },
        "spec": template.get("spec").cloned().unwrap_or(json!({})),
    });
    super::vm::add_finalizer(&mut vmi);
    let uuid = text(&vmi, "/spec/domain/firmware/uuid")
        .filter(|u| !u.is_empty())
        .map_or_else(
            || super::vm::legacy_firmware_uuid(objects::name(vm)),
            String::from,
        );
    objects::object_at(&mut vmi, "/spec/domain/firmware").insert("uuid".into(), json!(uuid));
    apply_defaults(&mut vmi, kv);
    vmi
}

/// The VMI mutating webhook: spec defaults, the PCI topology annotation and the initial status
/// (facts §1, §2; kv: `pkg/virt-api/webhooks/mutating-webhook/mutators/vmi-mutator.go` L52-70).
pub fn apply_defaults(vmi: &mut Value, kv: &KvConfig) {
    let spec = objects::object_at(vmi, "/spec");
    if spec
        .get("architecture")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        spec.insert("architecture".into(), json!(kv.default_architecture));
    }
    let arch = spec
        .get("architecture")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let arm = spec.get("architecture").and_then(Value::as_str) == Some("arm64");
    let mut spec_value = Value::Object(std::mem::take(spec));
    default_cpu(&mut spec_value, kv, arm);
    default_memory(&mut spec_value, kv, arm);
    {
        let machine = objects::object_at(&mut spec_value, "/domain/machine");
        if machine
            .get("type")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            machine.insert("type".into(), json!(kv.machine_type(&arch)));
        }
    }
    // `setDefaultPciTopologyVersion` on the new VMI: every VMI in v1.8.0 (kv@v1.8.0
    // vmi-mutator.go L60), those that support PCIe hot-plug from v1.9.0 (L61-63), none before.
    let pci = match kv.version.pci_topology_default() {
        PciTopologyDefault::Never => false,
        PciTopologyDefault::Always => true,
        PciTopologyDefault::PcieHotplugOnly => supports_pcie_hotplug(&spec_value),
    };
    let cpu = spec_value.pointer("/domain/cpu").cloned();
    let guest = text(&spec_value, "/domain/memory/guest").map(String::from);
    *objects::object_at(vmi, "/spec") = match spec_value {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    if pci {
        objects::object_at(vmi, "/metadata/annotations")
            .entry(PCI_TOPOLOGY_ANNOTATION)
            .or_insert_with(|| json!("v3"));
    }
    let status = objects::object_at(vmi, "/status");
    if !status.contains_key("phase") {
        status.insert("phase".into(), json!("Pending"));
    }
    if !status.contains_key("currentCPUTopology") {
        let (s, c, t) = topology(cpu.as_ref());
        status.insert(
            "currentCPUTopology".into(),
            json!({"sockets": s, "cores": c, "threads": t}),
        );
    }
    if let Some(g) = guest
        && !status.contains_key("memory")
    {
        status.insert(
            "memory".into(),
            json!({"guestAtBoot": g, "guestCurrent": g, "guestRequested": g}),
        );
    }
}

fn default_cpu(spec: &mut Value, kv: &KvConfig, arm: bool) {
    let has_topology = spec.pointer("/domain/cpu").is_some_and(|c| {
        ["sockets", "cores", "threads"]
            .iter()
            .any(|k| c.get(*k).is_some())
    });
    let from_resources = ["limits", "requests"]
        .iter()
        .find_map(|k| objects::quantity(spec, &format!("/domain/resources/{k}/cpu")))
        .map(|q| u64::try_from((q.millis() + 999) / 1000).unwrap_or(1).max(1));
    let cpu = objects::object_at(spec, "/domain/cpu");
    if !has_topology {
        cpu.insert("sockets".into(), json!(from_resources.unwrap_or(1)));
    }
    for k in ["sockets", "cores", "threads"] {
        if cpu.get(k).and_then(Value::as_u64).is_none_or(|n| n == 0) {
            cpu.insert(k.into(), json!(1));
        }
    }
    if !kv.live_update || arm {
        return;
    }
    let (sockets, cores, threads) = topology(Some(&Value::Object(cpu.clone())));
    if cpu.get("maxSockets").and_then(Value::as_u64).unwrap_or(0) == 0 {
        let max = match kv.max_cpu_sockets {
            Some(m) => m.max(sockets),
            None => {
                let m = sockets * kv.max_hotplug_ratio;
                if m * cores * threads > MAX_DEFAULT_VCPUS {
                    (MAX_DEFAULT_VCPUS / (cores * threads)).max(sockets)
                } else {
                    m
                }
            }
        };
        cpu.insert("maxSockets".into(), json!(max));
    }
}

fn default_memory(spec: &mut Value, kv: &KvConfig, arm: bool) {
    let guest = text(spec, "/domain/memory/guest")
        .map(String::from)
        .or_else(|| text(spec, "/domain/resources/requests/memory").map(String::from))
        .or_else(|| text(spec, "/domain/resources/limits/memory").map(String::from));
    let Some(guest) = guest else { return };
    objects::object_at(spec, "/domain/memory").insert("guest".into(), json!(guest));
    if !kv.live_update || arm || spec.pointer("/domain/memory/maxGuest").is_some() {
        return;
    }
    let Some(guest_bytes) = bytes(spec, "/domain/memory/guest") else {
        return;
    };
    let max = kv
        .max_guest
        .unwrap_or(guest_bytes.saturating_mul(kv.max_hotplug_ratio));
    // An invalid configuration leaves maxGuest unset: memory hot-plug silently disabled.
    if validate_live_update_memory(spec, Some(max)).is_ok() {
        objects::object_at(spec, "/domain/memory")
            .insert("maxGuest".into(), json!(bytes_text(max)));
    }
}

/// `memory.ValidateLiveUpdateMemory` over a VMI spec (or a VM template's spec), with the
/// `maxGuest` to check (facts §2). The error texts are KubeVirt's.
pub fn validate_live_update_memory(spec: &Value, max_guest: Option<u64>) -> Result<(), String> {
    if spec
        .pointer("/domain/cpu/realtime")
        .is_some_and(|v| !v.is_null())
    {
        return Err("Memory hotplug is not compatible with realtime VMs".into());
    }
    if spec
        .pointer("/domain/cpu/numa/guestMappingPassthrough")
        .is_some_and(|v| !v.is_null())
    {
        return Err("Memory hotplug is not compatible with guest mapping passthrough".into());
    }
    if spec
        .pointer("/domain/launchSecurity")
        .is_some_and(|v| !v.is_null())
    {
        return Err("Memory hotplug is not compatible with encrypted VMs".into());
    }
    let alignment = if text(spec, "/domain/memory/hugepages/pageSize") == Some("1Gi") {
        HOTPLUG_1G_HUGEPAGE_ALIGNMENT
    } else {
        HOTPLUG_BLOCK_ALIGNMENT
    };
    let Some(guest) = bytes(spec, "/domain/memory/guest") else {
        return Err("Guest memory must be configured when memory hotplug is enabled".into());
    };
    let Some(max) = max_guest else {
        return Err("Max guest memory must be configured when memory hotplug is enabled".into());
    };
    if guest > max {
        return Err("Guest memory is greater than the configured maxGuest memory".into());
    }
    if !guest.is_multiple_of(alignment) {
        return Err(format!(
            "Guest memory must be {} aligned",
            bytes_text(alignment)
        ));
    }
    if !max.is_multiple_of(alignment) {
        return Err(format!(
            "MaxGuest must be {} aligned",
            bytes_text(alignment)
        ));
    }
    if text(spec, "/architecture").unwrap_or("amd64") != "amd64" {
        return Err("Memory hotplug is only available for x86_64 VMs".into());
    }
    if guest < MIN_HOTPLUG_GUEST {
        return Err(
            "Memory hotplug is only available for VMs with at least 1Gi of guest memory".into(),
        );
    }
    Ok(())
}

/// The network of an interface (by name) in a VMI or template spec.
pub fn network_of<'a>(spec: &'a Value, iface: &str) -> Option<&'a Value> {
    objects::array(spec, "/networks")
        .iter()
        .find(|n| n.get("name").and_then(Value::as_str) == Some(iface))
}

/// Whether a network is the pod network (or a Multus default network).
pub fn is_default_network(net: &Value) -> bool {
    net.get("pod").is_some()
        || net.pointer("/multus/default").and_then(Value::as_bool) == Some(true)
}

/// The claim names of a spec's PVC and DataVolume volumes, with the volume names.
pub fn claims(spec: &Value) -> Vec<(String, String)> {
    objects::array(spec, "/volumes")
        .iter()
        .filter_map(|v| {
            let volume = v.get("name")?.as_str()?.to_string();
            let claim = v
                .pointer("/persistentVolumeClaim/claimName")
                .or_else(|| v.pointer("/dataVolume/name"))?
                .as_str()?
                .to_string();
            Some((volume, claim))
        })
        .collect()
}

/// The `LiveMigratable` condition of a VMI (kv: `calculateLiveMigrationCondition`): every
/// PVC must be ReadWriteMany and the pod network must use masquerade (or bridge with the
/// allow annotation). `access_modes` gives a claim's access modes, `None` when unknown.
pub fn live_migratable(
    vmi: &Value,
    access_modes: impl Fn(&str) -> Option<Vec<String>>,
) -> Condition {
    let spec = vmi.get("spec").unwrap_or(&Value::Null);
    let bridge_allowed = vmi
        .pointer(&format!(
            "/metadata/annotations/{}",
            ALLOW_POD_BRIDGE_MIGRATION.replace('/', "~1")
        ))
        .is_some();
    for iface in objects::array(spec, "/domain/devices/interfaces") {
        let Some(name) = iface.get("name").and_then(Value::as_str) else {
            continue;
        };
        let on_pod = network_of(spec, name).is_some_and(|n| n.get("pod").is_some());
        let migratable = iface.get("masquerade").is_some()
            || iface.get("passtBinding").is_some()
            || (iface.get("bridge").is_some() && bridge_allowed);
        if on_pod && !migratable {
            return Condition::new(
                "LiveMigratable",
                false,
                "InterfaceNotLiveMigratable",
                &format!(
                    "cannot migrate VMI which does not use masquerade, bridge with {ALLOW_POD_BRIDGE_MIGRATION} VM annotation or a migratable plugin to connect to the pod network"
                ),
            );
        }
    }
    for (_, claim) in claims(spec) {
        let shared = access_modes(&claim).map(|m| m.iter().any(|a| a == "ReadWriteMany"));
        let message = match shared {
            Some(true) => continue,
            Some(false) => format!(
                "cannot migrate VMI: PVC {claim} is not shared, live migration requires that all PVCs must be shared (using ReadWriteMany access mode)"
            ),
            None => format!(
                "cannot migrate VMI: Unable to determine if PVC {claim} is shared, live migration requires that all PVCs must be shared (using ReadWriteMany access mode)"
            ),
        };
        return Condition::new("LiveMigratable", false, "DisksNotLiveMigratable", &message);
    }
    for v in objects::array(spec, "/volumes") {
        if v.get("hostDisk").is_some()
            && v.pointer("/hostDisk/shared").and_then(Value::as_bool) != Some(true)
        {
            return Condition::new(
                "LiveMigratable",
                false,
                "DisksNotLiveMigratable",
                "cannot migrate VMI with non-shared HostDisk",
            );
        }
    }
    Condition::new("LiveMigratable", true, "", "")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(domain: Value) -> Value {
        json!({
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
            "metadata": {"name": "vm1", "namespace": "default", "uid": "u-vm1", "generation": 3},
            "spec": {"runStrategy": "Always", "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"architecture": "amd64", "domain": domain}}},
        })
    }

    #[test]
    fn max_sockets_and_max_guest_default_from_the_hotplug_ratio() {
        let vmi = from_vm(
            &vm(json!({"cpu": {"sockets": 2, "cores": 2}, "memory": {"guest": "2Gi"}})),
            &KvConfig::default(),
        );
        assert_eq!(vmi["spec"]["domain"]["cpu"]["maxSockets"], 8);
        assert_eq!(vmi["spec"]["domain"]["cpu"]["threads"], 1);
        assert_eq!(vmi["spec"]["domain"]["memory"]["maxGuest"], "8Gi");
        assert_eq!(
            vmi["status"]["currentCPUTopology"],
            json!({"sockets": 2, "cores": 2, "threads": 1})
        );
        assert_eq!(vmi["status"]["memory"]["guestAtBoot"], "2Gi");
        assert_eq!(
            vmi["metadata"]["annotations"][VM_GENERATION_ANNOTATION],
            "3"
        );
        assert_eq!(vmi["metadata"]["labels"]["app"], "web");
        assert_eq!(vmi["metadata"]["ownerReferences"][0]["uid"], "u-vm1");
    }

    #[test]
    fn max_sockets_is_capped_at_512_vcpus_and_taken_from_the_cluster() {
        let vmi = from_vm(
            &vm(json!({"cpu": {"sockets": 4, "cores": 32, "threads": 2}})),
            &KvConfig::default(),
        );
        assert_eq!(vmi["spec"]["domain"]["cpu"]["maxSockets"], 8);
        let kv = KvConfig {
            max_cpu_sockets: Some(3),
            ..KvConfig::default()
        };
        let vmi = from_vm(&vm(json!({"cpu": {"sockets": 4}})), &kv);
        assert_eq!(
            vmi["spec"]["domain"]["cpu"]["maxSockets"], 4,
            "raised to sockets"
        );
    }

    #[test]
    fn topology_defaults_from_the_cpu_request() {
        let vmi = from_vm(
            &vm(json!({"resources": {"requests": {"cpu": "5000m", "memory": "512Mi"}}})),
            &KvConfig::default(),
        );
        assert_eq!(vmi["spec"]["domain"]["cpu"]["sockets"], 5);
        assert_eq!(vmi["spec"]["domain"]["cpu"]["maxSockets"], 20);
        assert_eq!(vmi["spec"]["domain"]["memory"]["guest"], "512Mi");
        // 512Mi is below the hot-plug minimum: maxGuest stays unset.
        assert!(vmi["spec"]["domain"]["memory"].get("maxGuest").is_none());
    }

    #[test]
    fn nothing_is_defaulted_for_hotplug_under_stage() {
        let kv = KvConfig {
            live_update: false,
            ..KvConfig::default()
        };
        let vmi = from_vm(
            &vm(json!({"cpu": {"sockets": 2}, "memory": {"guest": "2Gi"}})),
            &kv,
        );
        assert!(vmi["spec"]["domain"]["cpu"].get("maxSockets").is_none());
        assert!(vmi["spec"]["domain"]["memory"].get("maxGuest").is_none());
    }

    #[test]
    fn memory_validation_messages() {
        let spec =
            |guest: &str| json!({"architecture": "amd64", "domain": {"memory": {"guest": guest}}});
        assert_eq!(
            validate_live_update_memory(&spec("2Gi"), Some(8 << 30)),
            Ok(())
        );
        assert_eq!(
            validate_live_update_memory(&spec("1025Mi"), Some(8 << 30)).unwrap_err(),
            "Guest memory must be 2Mi aligned"
        );
        assert_eq!(
            validate_live_update_memory(&spec("512Mi"), Some(8 << 30)).unwrap_err(),
            "Memory hotplug is only available for VMs with at least 1Gi of guest memory"
        );
        assert_eq!(
            validate_live_update_memory(&spec("2Gi"), Some(1 << 30)).unwrap_err(),
            "Guest memory is greater than the configured maxGuest memory"
        );
        let arm = json!({"architecture": "arm64", "domain": {"memory": {"guest": "2Gi"}}});
        assert_eq!(
            validate_live_update_memory(&arm, Some(8 << 30)).unwrap_err(),
            "Memory hotplug is only available for x86_64 VMs"
        );
    }

    #[test]
    fn live_migratable_needs_rwx_claims_and_masquerade() {
        let vmi = |binding: &str| {
            json!({"metadata": {}, "spec": {
                "domain": {"devices": {"interfaces": [{"name": "default", binding: {}}]}},
                "networks": [{"name": "default", "pod": {}}],
                "volumes": [{"name": "root", "dataVolume": {"name": "root-dv"}}]}})
        };
        let rwx = |_: &str| Some(vec!["ReadWriteMany".to_string()]);
        let rwo = |_: &str| Some(vec!["ReadWriteOnce".to_string()]);
        assert!(live_migratable(&vmi("masquerade"), rwx).status == "True");
        let c = live_migratable(&vmi("masquerade"), rwo);
        assert_eq!(c.reason, "DisksNotLiveMigratable");
        assert!(c.message.contains("PVC root-dv is not shared"));
        let c = live_migratable(&vmi("bridge"), rwx);
        assert_eq!(
            (c.status, c.reason.as_str()),
            ("False", "InterfaceNotLiveMigratable")
        );
    }
}

//! KubeVirt's VM controller decisions, as pure functions over `serde_json::Value`s: whether to
//! start or stop the instance ([`run_action`], run strategies and `status.stateChangeRequests`,
//! facts §5), what a template change means for a running instance ([`live_update`]:
//! RestartRequired, CPU/memory hot-plug, NIC hot(un)plug, facts §1–§3, §6), and the VM's
//! `status` ([`printable_status`], [`status`]).
//!
//! Pure; depends only on [`super::objects`] and [`super::vmi`].

use serde_json::{Map, Value, json};

use super::objects::{self, Condition, KvConfig, array, bytes, is_true, text};
use super::vmi;

/// RestartRequired message of a non-live-updatable template change (kv: `vm.go`).
pub const NON_LIVE_CHANGE: &str = "a non-live-updatable field was changed in the template spec";
pub const CPU_ABOVE_MAX: &str =
    "CPU sockets updated in template spec to a value higher than what's available";
pub const CPU_REDUCTION: &str = "Reduction of CPU socket count requires a restart";
pub const CPU_ARM: &str = "ARM doesn't support CPU hotplug";
pub const MEMORY_FAILED: &str = "memory updated in template spec. Memory-hotplug failed and is not available for this VM configuration";
pub const MEMORY_NOT_MIGRATABLE: &str =
    "memory updated in template spec. Memory-hotplug is only available for migratable VMs";
pub const MEMORY_UNAVAILABLE: &str =
    "memory updated in template spec. Memory-hotplug is not available for this VM configuration";
pub const MEMORY_BELOW_BOOT: &str =
    "memory updated in template spec to a value lower than what the VM started with";
pub const MEMORY_ABOVE_MAX: &str =
    "memory updated in template spec to a value higher than what's available";

/// virt-controller's finalizer on every VM and on the VMIs it creates (kv:
/// `staging/src/kubevirt.io/api/core/v1/types.go` L1253).
pub const FINALIZER: &str = "kubevirt.io/virtualMachineControllerFinalize";
/// The API version annotations every KubeVirt controller writes on its objects (types.go
/// L1140-1141; both `v1`, `register.go` L35-37).
pub const LATEST_API_ANNOTATION: &str = "kubevirt.io/latest-observed-api-version";
pub const STORAGE_API_ANNOTATION: &str = "kubevirt.io/storage-observed-api-version";
pub const API_VERSION: &str = "v1";
/// The namespace of the legacy, name-derived firmware UUIDs (kv:
/// `pkg/virt-controller/watch/vm/firmware.go` L83-89, `magicUUID`).
const LEGACY_UUID_NAMESPACE: [u8; 16] = [
    0x6a, 0x1a, 0x24, 0xa1, 0x40, 0x61, 0x46, 0x07, 0x8b, 0xf4, 0xa3, 0x96, 0x3d, 0x0c, 0x58, 0x95,
];

/// `controller.ObservedLatestApiVersionAnnotation` (kv: `pkg/controller/controller.go`
/// L240-251).
pub fn observed_latest_api_version(obj: &Value) -> bool {
    annotation(obj, LATEST_API_ANNOTATION) == Some(API_VERSION)
}

/// `controller.SetLatestApiVersionAnnotation` (controller.go L253-262), which the VM controller
/// writes as the first step of a reconcile whenever the latest one is missing (vm.go
/// L374-384).
pub fn set_api_version_annotations(obj: &mut Value) {
    let annotations = objects::object_at(obj, "/metadata/annotations");
    annotations.insert(LATEST_API_ANNOTATION.into(), json!(API_VERSION));
    annotations.insert(STORAGE_API_ANNOTATION.into(), json!(API_VERSION));
}

fn annotation<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj.pointer("/metadata/annotations")
        .and_then(|a| a.get(key))
        .and_then(Value::as_str)
}

/// Whether `obj` carries `finalizer`.
pub fn has_finalizer(obj: &Value, finalizer: &str) -> bool {
    array(obj, "/metadata/finalizers")
        .iter()
        .any(|f| f.as_str() == Some(finalizer))
}

/// Append the controller's finalizer (`addVMFinalizer`, vm.go L2370-2390); whether it was
/// missing.
pub fn add_finalizer(obj: &mut Value) -> bool {
    if has_finalizer(obj, FINALIZER) {
        return false;
    }
    let meta = objects::object_at(obj, "/metadata");
    match meta.get_mut("finalizers").and_then(Value::as_array_mut) {
        Some(list) => list.push(json!(FINALIZER)),
        None => {
            meta.insert("finalizers".into(), json!([FINALIZER]));
        }
    }
    true
}

/// Remove the controller's finalizer (`removeVMFinalizer` / `removeVMIFinalizer`, vm.go
/// L2322-2368); whether it was there.
pub fn remove_finalizer(obj: &mut Value) -> bool {
    if !has_finalizer(obj, FINALIZER) {
        return false;
    }
    if let Some(list) = obj
        .pointer_mut("/metadata/finalizers")
        .and_then(Value::as_array_mut)
    {
        list.retain(|f| f.as_str() != Some(FINALIZER));
    }
    true
}

/// `CalculateLegacyUUID` (firmware.go L87-89): a version-5 UUID of the VM's name.
pub fn legacy_firmware_uuid(name: &str) -> String {
    use sha1::{Digest, Sha1};
    let mut hasher = Sha1::new();
    hasher.update(LEGACY_UUID_NAMESPACE);
    hasher.update(name.as_bytes());
    let digest = hasher.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest[..16]);
    b[6] = (b[6] & 0x0f) | 0x50;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// The firmware synchronizer (`FirmwareController.Sync`, firmware.go L48-66): a template
/// without a firmware UUID (an UPDATE dropped the one the webhook set at CREATE) gets the legacy
/// name-derived UUID. Returns whether the template changed.
pub fn sync_firmware_uuid(vm: &mut Value) -> bool {
    let pointer = "/spec/template/spec/domain/firmware/uuid";
    if vm
        .pointer(pointer)
        .and_then(Value::as_str)
        .is_some_and(|u| !u.is_empty())
    {
        return false;
    }
    let uuid = legacy_firmware_uuid(objects::name(vm));
    objects::object_at(vm, "/spec/template/spec/domain/firmware")
        .insert("uuid".into(), json!(uuid));
    true
}

/// `syncPCITopologyAnnotationsToVM` (vm.go L3198-3221; v1.8.0 and later): a template without a
/// PCI topology annotation gets the running VMI's, and its interface slot count. Returns whether
/// the template changed.
pub fn sync_pci_topology(vm: &mut Value, vmi: &Value) -> bool {
    const VERSION: &str = "kubevirt.io/pci-topology-version";
    const SLOTS: &str = "kubevirt.io/pci-interface-slot-count";
    let Some(version) = annotation(vmi, VERSION).filter(|v| !v.is_empty()) else {
        return false;
    };
    let has = vm
        .pointer("/spec/template/metadata/annotations")
        .and_then(|a| a.get(VERSION))
        .and_then(Value::as_str)
        .is_some_and(|v| !v.is_empty());
    if has {
        return false;
    }
    let slots = annotation(vmi, SLOTS).map(String::from);
    let version = version.to_string();
    let annotations = objects::object_at(vm, "/spec/template/metadata/annotations");
    annotations.insert(VERSION.into(), json!(version));
    if let Some(count) = slots {
        annotations.insert(SLOTS.into(), json!(count));
    }
    true
}

/// Millicores added per hot-plugged vCPU: 1000 / the default `cpuAllocationRatio` (10).
const MILLICORES_PER_VCPU: i128 = 100;

/// What the VM controller does about the instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunAction {
    None,
    /// Create the VMI (paused when asked by a start request).
    Start {
        paused: bool,
    },
    /// Stop (gracefully delete) the VMI.
    Stop,
}

/// Whether a VMI phase is final.
pub fn is_final(vmi: &Value) -> bool {
    matches!(text(vmi, "/status/phase"), Some("Succeeded" | "Failed"))
}

/// Start or stop, and the `stateChangeRequests` left afterwards. `stopping`: the VMI is
/// already shutting down.
pub fn run_action(vm: &Value, vmi: Option<&Value>, stopping: bool) -> (RunAction, Vec<Value>) {
    let mut requests: Vec<Value> = array(vm, "/status/stateChangeRequests").to_vec();
    // State change requests come first, oldest first.
    if let Some(first) = requests.first().cloned() {
        match (text(&first, "/action"), vmi) {
            (Some("Stop"), Some(i)) => {
                let for_this = text(&first, "/uid").is_none_or(|u| u == objects::uid(i));
                if for_this {
                    let action = if stopping {
                        RunAction::None
                    } else {
                        RunAction::Stop
                    };
                    return (action, requests);
                }
                requests.remove(0);
                return run_action_after(vm, vmi, stopping, requests);
            }
            (Some("Stop"), None) => {
                requests.remove(0);
                return run_action_after(vm, vmi, stopping, requests);
            }
            (Some("Start"), None) => {
                let paused = text(&first, "/data/paused") == Some("true");
                requests.remove(0);
                return (RunAction::Start { paused }, requests);
            }
            (Some("Start"), Some(_)) => return (RunAction::None, requests),
            _ => {
                requests.remove(0);
                return run_action_after(vm, vmi, stopping, requests);
            }
        }
    }
    let strategy = objects::run_strategy(vm);
    let previous = text(vm, "/status/runStrategy");
    let action = match (strategy, vmi) {
        (_, Some(_)) if stopping => RunAction::None,
        ("Always", None) => RunAction::Start { paused: false },
        ("Always", Some(i)) if is_final(i) => RunAction::Stop,
        ("Halted", Some(_)) => RunAction::Stop,
        ("RerunOnFailure", Some(i)) if text(i, "/status/phase") == Some("Failed") => {
            RunAction::Stop
        }
        // Manual-start strategies start on their own only when the VM just switched to them.
        ("RerunOnFailure" | "Once", None) if previous != Some(strategy) => {
            RunAction::Start { paused: false }
        }
        _ => RunAction::None,
    };
    (action, requests)
}

fn run_action_after(
    vm: &Value,
    vmi: Option<&Value>,
    stopping: bool,
    requests: Vec<Value>,
) -> (RunAction, Vec<Value>) {
    let mut rest = vm.clone();
    objects::object_at(&mut rest, "/status").insert("stateChangeRequests".into(), json!(requests));
    run_action(&rest, vmi, stopping)
}

/// The start-revision spec with the live-updatable fields taken from `current`, as
/// `syncRestartRequired` builds it (kv: `pkg/virt-controller/watch/vm/vm.go` L3024-3056; facts
/// §6): under LiveUpdate `domain.cpu.sockets` (when both have a `cpu`), `domain.memory.guest`
/// (when the current one has it), `nodeSelector`, `affinity` and `tolerations`; from v1.8.0 a
/// firmware UUID equal to the running VMI's. Interfaces and networks are left out of both sides
/// here; [`nic_restart_required`] judges them (L3043-3046).
fn comparable(spec: &Value, current: &Value, vmi_spec: &Value, kv: &KvConfig) -> Value {
    let mut s = spec.clone();
    if let Some(domain) = s
        .pointer_mut("/domain/devices")
        .and_then(Value::as_object_mut)
    {
        domain.remove("interfaces");
    }
    if let Some(m) = s.as_object_mut() {
        m.remove("networks");
    }
    if kv.version.ignores_matching_firmware_uuid()
        && let Some(uuid) = current.pointer("/domain/firmware/uuid")
        && vmi_spec.pointer("/domain/firmware/uuid") == Some(uuid)
    {
        objects::object_at(&mut s, "/domain/firmware").insert("uuid".into(), uuid.clone());
    }
    if !kv.live_update {
        return s;
    }
    if s.pointer("/domain/cpu").is_some() && current.pointer("/domain/cpu").is_some() {
        let sockets = current
            .pointer("/domain/cpu/sockets")
            .cloned()
            .unwrap_or(Value::Null);
        objects::object_at(&mut s, "/domain/cpu").insert("sockets".into(), sockets);
    }
    if let Some(guest) = current.pointer("/domain/memory/guest") {
        objects::object_at(&mut s, "/domain/memory").insert("guest".into(), guest.clone());
    }
    for field in ["nodeSelector", "affinity", "tolerations"] {
        if let Some(m) = s.as_object_mut() {
            match current.get(field) {
                Some(v) => m.insert(field.into(), v.clone()),
                None => m.remove(field),
            };
        }
    }
    s
}

/// Whether the template differs from the spec the VMI `started` from in a field that is not
/// live-updatable (`syncRestartRequired`, vm.go L2996-3072; kv@v1.7.0
/// `addRestartRequiredIfNeeded`), NIC changes that need a restart included.
pub fn non_live_changed(current: &Value, started: &Value, vmi_spec: &Value, kv: &KvConfig) -> bool {
    let mut a = comparable(current, current, vmi_spec, kv);
    let mut b = comparable(started, current, vmi_spec, kv);
    for x in [&mut a, &mut b] {
        strip_nulls(x);
    }
    a != b || nic_restart_required(current, vmi_spec)
}

fn strip_nulls(v: &mut Value) {
    if let Value::Object(m) = v {
        m.retain(|_, x| !x.is_null());
        for x in m.values_mut() {
            strip_nulls(x);
        }
    } else if let Value::Array(a) = v {
        for x in a {
            strip_nulls(x);
        }
    }
}

fn by_name<'a>(list: &'a [Value], name: &str) -> Option<&'a Value> {
    list.iter()
        .find(|x| x.get("name").and_then(Value::as_str) == Some(name))
}

fn without(v: &Value, key: &str) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove(key);
    }
    v
}

/// Whether the template's interfaces or networks changed in a way that needs a restart
/// (kv: `netvmliveupdate.IsRestartRequired`): an interface of the running VMI removed from the
/// template instead of marked `absent`, or changed in anything but its state.
pub fn nic_restart_required(template: &Value, vmi_spec: &Value) -> bool {
    let t_ifaces = array(template, "/domain/devices/interfaces");
    let t_nets = array(template, "/networks");
    if t_ifaces.is_empty() && t_nets.is_empty() {
        // The VMI got the default pod interface from the webhook; nothing to compare.
        return false;
    }
    for iface in array(vmi_spec, "/domain/devices/interfaces") {
        let name = text(iface, "/name").unwrap_or_default();
        match by_name(t_ifaces, name) {
            None => return true,
            Some(t) if without(t, "state") != without(iface, "state") => return true,
            Some(_) => {}
        }
    }
    for net in array(vmi_spec, "/networks") {
        let name = text(net, "/name").unwrap_or_default();
        match by_name(t_nets, name) {
            None => return true,
            Some(t) if t != net => return true,
            Some(_) => {}
        }
    }
    false
}

/// Apply the template's NIC hot(un)plug requests to the VMI spec (kv: controllers/vm.go
/// `applyDynamicIfaceRequestOnVMI`): new bridge/SR-IOV interfaces are added with their
/// network, `absent` ones are marked absent. Returns whether the spec changed.
pub fn sync_interfaces(template: &Value, vmi_spec: &mut Value) -> bool {
    let mut changed = false;
    for iface in array(template, "/domain/devices/interfaces") {
        let Some(name) = text(iface, "/name") else {
            continue;
        };
        let absent = text(iface, "/state") == Some("absent");
        let existing = by_name(array(vmi_spec, "/domain/devices/interfaces"), name).cloned();
        match existing {
            None if !absent && (iface.get("bridge").is_some() || iface.get("sriov").is_some()) => {
                let Some(net) = by_name(array(template, "/networks"), name).cloned() else {
                    continue;
                };
                push(vmi_spec, "/domain/devices", "interfaces", iface.clone());
                push(vmi_spec, "", "networks", net);
                changed = true;
            }
            Some(e) if absent && text(&e, "/state") != Some("absent") => {
                if let Some(list) = vmi_spec
                    .pointer_mut("/domain/devices/interfaces")
                    .and_then(Value::as_array_mut)
                {
                    for i in list.iter_mut() {
                        if text(i, "/name") == Some(name) {
                            i["state"] = json!("absent");
                        }
                    }
                }
                changed = true;
            }
            _ => {}
        }
    }
    changed
}

fn push(spec: &mut Value, parent: &str, key: &str, item: Value) {
    let obj = objects::object_at(spec, parent);
    match obj.get_mut(key).and_then(Value::as_array_mut) {
        Some(list) => list.push(item),
        None => {
            obj.insert(key.into(), json!([item]));
        }
    }
}

/// Remove `absent` interfaces (and their networks) from the VM template once the VMI no longer
/// has them, or right away when there is no VMI (kv: `clearDetachedIfacesFromVM`). Returns
/// whether the template changed.
pub fn clear_detached_interfaces(template: &mut Value, vmi_spec: Option<&Value>) -> bool {
    let detached: Vec<String> = array(template, "/domain/devices/interfaces")
        .iter()
        .filter(|i| text(i, "/state") == Some("absent"))
        .filter_map(|i| text(i, "/name"))
        .filter(|name| {
            vmi_spec.is_none_or(|s| by_name(array(s, "/domain/devices/interfaces"), name).is_none())
        })
        .map(String::from)
        .collect();
    if detached.is_empty() {
        return false;
    }
    remove_named(template, "/domain/devices/interfaces", &detached);
    remove_named(template, "/networks", &detached);
    true
}

/// Remove the named entries of the list at `pointer`.
pub fn remove_named(spec: &mut Value, pointer: &str, names: &[String]) {
    if let Some(list) = spec.pointer_mut(pointer).and_then(Value::as_array_mut) {
        list.retain(|x| !text(x, "/name").is_some_and(|n| names.iter().any(|d| d == n)));
    }
}

/// What [`live_update`] decided.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LiveUpdate {
    /// The RestartRequired message, if a restart is needed.
    pub restart_required: Option<String>,
    /// A `Failure` condition (reason, message) for a sync error.
    pub failure: Option<(String, String)>,
    /// The VMI spec, when it is to be patched.
    pub vmi_spec: Option<Value>,
}

/// The VM controller's reaction to the template of a running VM (facts §1–§3, §6), one
/// reconcile of vm.go `sync` (L3303-3385): NIC hot(un)plug (never gated), then
/// `syncRestartRequired` against the template the VMI `started` from, then — under LiveUpdate,
/// when no non-live field differs and no RestartRequired stands — the CPU, affinity and
/// node-selector, tolerations and memory handlers, in that order; a handler's error stops the
/// rest, a handler's RestartRequired does not. `existing_rr` is the VM's current
/// RestartRequired message.
///
/// Per release ([`crate::sim::version::KubeVirtVersion::recomputes_restart_required`]): from
/// v1.8.0 `syncRestartRequired` removes RestartRequired whenever no non-live field differs
/// (L3063-3069), so a handler's RestartRequired is re-decided every reconcile and blocks
/// nothing; in v1.7.0 it stays until a stop, start or restart and closes the gate (kv@v1.7.0
/// vm.go L3229).
pub fn live_update(
    vm: &Value,
    vmi: &Value,
    started: &Value,
    kv: &KvConfig,
    existing_rr: Option<&str>,
) -> LiveUpdate {
    let null = Value::Null;
    let template = vm.pointer("/spec/template/spec").unwrap_or(&null);
    let vmi_spec = vmi.get("spec").unwrap_or(&null);
    let mut out = LiveUpdate::default();
    let mut new_spec = vmi_spec.clone();
    // NIC hot(un)plug is not gated by the rollout strategy nor by RestartRequired.
    let nics_changed = sync_interfaces(template, &mut new_spec);

    if non_live_changed(template, started, vmi_spec, kv) {
        // `setRestartRequired`: an existing True condition keeps its message (kv:
        // `pkg/controller/conditions.go` L127-141).
        out.restart_required = Some(existing_rr.unwrap_or(NON_LIVE_CHANGE).to_string());
    } else if let Some(rr) = existing_rr
        && !kv.version.recomputes_restart_required()
    {
        out.restart_required = Some(rr.to_string());
    } else if kv.live_update {
        cpu_change(template, vmi, &mut new_spec, &mut out);
        if out.failure.is_none() {
            scheduling_change(template, vmi, &mut new_spec, &mut out);
        }
        if out.failure.is_none() {
            memory_change(template, vmi, &mut new_spec, &mut out);
        }
    }
    if nics_changed || new_spec != *vmi_spec {
        out.vmi_spec = Some(new_spec);
    }
    out
}

/// `handleAffinityChangeRequest` and `handleTolerationsChangeRequest` (vm.go L749-806): the
/// template's node selector, affinity and tolerations are copied into the VMI spec (they apply
/// at its next migration or start); not while it migrates.
fn scheduling_change(template: &Value, vmi: &Value, new_spec: &mut Value, out: &mut LiveUpdate) {
    let clean = |v: Option<&Value>| {
        v.filter(|x| !x.is_null()).map(|x| {
            let mut x = x.clone();
            strip_nulls(&mut x);
            x
        })
    };
    let differs = |field: &str, spec: &Value| clean(template.get(field)) != clean(spec.get(field));
    let copy = |field: &str, spec: &mut Value| {
        if let Some(m) = spec.as_object_mut() {
            match template.get(field).filter(|v| !v.is_null()) {
                Some(v) => m.insert(field.into(), v.clone()),
                None => m.remove(field),
            };
        }
    };
    if differs("nodeSelector", new_spec) || differs("affinity", new_spec) {
        if migrating(vmi) {
            out.failure = Some((
                "AffinityChangeError".into(),
                "Node affinity should not be changed during VMI migration".into(),
            ));
            return;
        }
        copy("affinity", new_spec);
        copy("nodeSelector", new_spec);
    }
    if differs("tolerations", new_spec) {
        if migrating(vmi) {
            out.failure = Some((
                "TolerationsChangeError".into(),
                "tolerations should not be changed during VMI migration".into(),
            ));
            return;
        }
        copy("tolerations", new_spec);
    }
}

fn sockets(spec: &Value) -> Option<u64> {
    spec.pointer("/domain/cpu")
        .map(|c| c.get("sockets").and_then(Value::as_u64).unwrap_or(1))
}

fn restart(out: &mut LiveUpdate, message: &str) {
    if out.restart_required.is_none() {
        out.restart_required = Some(message.to_string());
    }
}

fn migrating(vmi: &Value) -> bool {
    vmi.pointer("/status/migrationState")
        .and_then(Value::as_object)
        .is_some_and(|m| m.get("completed").and_then(Value::as_bool) != Some(true))
}

/// `handleCPUChangeRequest` (facts §1).
fn cpu_change(template: &Value, vmi: &Value, new_spec: &mut Value, out: &mut LiveUpdate) {
    let (Some(want), Some(have)) = (sockets(template), sockets(new_spec)) else {
        return;
    };
    if want == have {
        return;
    }
    if is_true(vmi, "HotVCPUChange") {
        out.failure = Some((
            "HotPlugCPUError".into(),
            "another CPU hotplug is in progress".into(),
        ));
        return;
    }
    if migrating(vmi) {
        out.failure = Some((
            "HotPlugCPUError".into(),
            "CPU hotplug is not allowed while VMI is migrating".into(),
        ));
        return;
    }
    let max = objects::number(new_spec, "/domain/cpu/maxSockets").unwrap_or(0);
    if want > max {
        return restart(out, CPU_ABOVE_MAX);
    }
    if want < have {
        return restart(out, CPU_REDUCTION);
    }
    if text(new_spec, "/architecture") == Some("arm64") {
        return restart(out, CPU_ARM);
    }
    let (_, cores, threads) = vmi::topology(new_spec.pointer("/domain/cpu"));
    let added_vcpus = i128::from((want - have) * cores * threads);
    objects::object_at(new_spec, "/domain/cpu").insert("sockets".into(), json!(want));
    for kind in ["requests", "limits"] {
        let pointer = format!("/domain/resources/{kind}/cpu");
        if template.pointer(&pointer).is_none() {
            continue;
        }
        if let Some(q) = objects::quantity(new_spec, &pointer) {
            let millis = q.millis() + added_vcpus * MILLICORES_PER_VCPU;
            objects::object_at(new_spec, &format!("/domain/resources/{kind}"))
                .insert("cpu".into(), json!(format!("{millis}m")));
        }
    }
}

/// `handleMemoryHotplugRequest` (facts §2; steps 7 and 8 ahead of 6, see below).
fn memory_change(template: &Value, vmi: &Value, new_spec: &mut Value, out: &mut LiveUpdate) {
    let Some(want) = bytes(template, "/domain/memory/guest") else {
        return;
    };
    if objects::condition_status(vmi, "HotMemoryChange") == Some("False") {
        return restart(out, MEMORY_FAILED);
    }
    let have = bytes(new_spec, "/domain/memory/guest");
    if have == Some(want) {
        return;
    }
    if !is_true(vmi, "LiveMigratable") {
        return restart(out, MEMORY_NOT_MIGRATABLE);
    }
    let Some(max) = bytes(new_spec, "/domain/memory/maxGuest") else {
        return restart(out, MEMORY_UNAVAILABLE);
    };
    if is_true(vmi, "HotMemoryChange") {
        out.failure = Some((
            "HotPlugMemoryError".into(),
            "another memory hotplug is in progress".into(),
        ));
        return;
    }
    if migrating(vmi) {
        out.failure = Some((
            "HotPlugMemoryError".into(),
            "memory hotplug is not allowed while VMI is migrating".into(),
        ));
        return;
    }
    // The bounds are checked before the general validation so that their specific messages
    // are the ones reported (the validation would also refuse a guest above maxGuest).
    if let Some(at_boot) = bytes(vmi, "/status/memory/guestAtBoot")
        && want < at_boot
    {
        return restart(out, MEMORY_BELOW_BOOT);
    }
    if want > max {
        return restart(out, MEMORY_ABOVE_MAX);
    }
    let mut candidate = new_spec.clone();
    objects::object_at(&mut candidate, "/domain/memory")
        .insert("guest".into(), json!(objects::bytes_text(want)));
    if let Err(e) = vmi::validate_live_update_memory(&candidate, Some(max)) {
        return restart(out, &format!("memory hotplug not supported, {e}"));
    }
    let current = bytes(vmi, "/status/memory/guestCurrent")
        .or(have)
        .unwrap_or(want);
    let delta = i128::from(want) - i128::from(current);
    let guest_text = template
        .pointer("/domain/memory/guest")
        .cloned()
        .unwrap_or(json!(objects::bytes_text(want)));
    objects::object_at(new_spec, "/domain/memory").insert("guest".into(), guest_text);
    for kind in ["requests", "limits"] {
        let pointer = format!("/domain/resources/{kind}/memory");
        if let Some(q) = objects::bytes(new_spec, &pointer) {
            let mut value = i128::from(q) + delta;
            if kind == "requests" {
                value = value.max(i128::from(want));
            }
            let value = u64::try_from(value.max(0)).unwrap_or(0);
            objects::object_at(new_spec, &format!("/domain/resources/{kind}"))
                .insert("memory".into(), json!(objects::bytes_text(value)));
        }
    }
}

/// What the VM's volumes look like, for the printable status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Volumes {
    pub pvc_missing: bool,
    pub dv_failed: bool,
    pub dv_provisioning: bool,
    pub pvc_pending: bool,
}

/// `status.printableStatus` with KubeVirt's precedence (facts §6).
pub fn printable_status(
    vm: &Value,
    vmi: Option<&Value>,
    stopping: bool,
    volumes: Volumes,
) -> &'static str {
    if vm.pointer("/metadata/deletionTimestamp").is_some() {
        return "Terminating";
    }
    if let Some(i) = vmi {
        if stopping || i.pointer("/metadata/deletionTimestamp").is_some() {
            return "Stopping";
        }
        if migrating(i) {
            return "Migrating";
        }
        if text(i, "/status/phase") == Some("Running") {
            return if is_true(i, "Paused") {
                "Paused"
            } else {
                "Running"
            };
        }
    }
    if volumes.pvc_missing && vmi.is_some() {
        return "ErrorPvcNotFound";
    }
    if volumes.dv_failed {
        return "DataVolumeError";
    }
    if volumes.dv_provisioning {
        return "Provisioning";
    }
    if volumes.pvc_pending && vmi.is_some() {
        return "WaitingForVolumeBinding";
    }
    match vmi {
        Some(i) if !is_final(i) => "Starting",
        Some(_) => "Stopped",
        None if objects::run_strategy(vm) == "WaitAsReceiver" => "WaitingForReceiver",
        None => "Stopped",
    }
}

/// VM conditions the controller owns rather than copies from the VMI.
const VM_OWNED_CONDITIONS: &[&str] = &["Ready", "Failure", "RestartRequired"];

/// The VM's new `status` (facts §6): everything KubeVirt's VM controller writes.
pub struct StatusInput<'a> {
    pub vmi: Option<&'a Value>,
    pub printable: &'a str,
    pub restart_required: Option<&'a str>,
    pub failure: Option<&'a (String, String)>,
    pub requests: Vec<Value>,
    pub observed_generation: Option<u64>,
}

pub fn status(vm: &Value, input: &StatusInput<'_>, now: &str) -> Value {
    let mut status: Map<String, Value> = vm
        .get("status")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut wanted = Vec::new();
    match input.vmi {
        Some(i) => match objects::conditions(i)
            .into_iter()
            .find(|c| c.type_ == "Ready")
        {
            Some(ready) => wanted.push(ready),
            None => wanted.push(Condition::new(
                "Ready",
                false,
                "VMIConditionMissing",
                "VMI is missing the Ready condition",
            )),
        },
        None => wanted.push(Condition::new(
            "Ready",
            false,
            "VMINotExists",
            "VMI does not exist",
        )),
    }
    if let Some(i) = input.vmi {
        wanted.extend(
            objects::conditions(i)
                .into_iter()
                .filter(|c| !VM_OWNED_CONDITIONS.contains(&c.type_.as_str())),
        );
    }
    if let Some((reason, message)) = input.failure {
        wanted.push(Condition::new("Failure", true, reason, message));
    }
    if let Some(message) = input.restart_required {
        wanted.push(Condition::new("RestartRequired", true, "", message));
    }
    objects::set_conditions(&mut status, &wanted, now);
    let ready = input
        .vmi
        .is_some_and(|i| text(i, "/status/phase") == Some("Running") && is_true(i, "Ready"));
    set_or_remove(
        &mut status,
        "created",
        input.vmi.is_some().then_some(json!(true)),
    );
    set_or_remove(&mut status, "ready", ready.then_some(json!(true)));
    status.insert("printableStatus".into(), json!(input.printable));
    status.insert("runStrategy".into(), json!(objects::run_strategy(vm)));
    set_or_remove(
        &mut status,
        "stateChangeRequests",
        (!input.requests.is_empty()).then(|| json!(input.requests)),
    );
    set_or_remove(
        &mut status,
        "desiredGeneration",
        objects::number(vm, "/metadata/generation").map(|g| json!(g)),
    );
    set_or_remove(
        &mut status,
        "observedGeneration",
        input.observed_generation.map(|g| json!(g)),
    );
    Value::Object(status)
}

fn set_or_remove(m: &mut Map<String, Value>, key: &str, v: Option<Value>) {
    match v {
        Some(v) => m.insert(key.into(), v),
        None => m.remove(key),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(strategy: &str, template: Value) -> Value {
        json!({"metadata": {"name": "vm1", "uid": "u1", "generation": 1},
               "spec": {"runStrategy": strategy, "template": {"spec": template}}})
    }

    fn running_vmi(spec: Value) -> Value {
        let mut v = json!({"metadata": {"name": "vm1", "uid": "i1"}, "spec": spec,
            "status": {"phase": "Running", "conditions": [
                {"type": "Ready", "status": "True"},
                {"type": "LiveMigratable", "status": "True"}]}});
        vmi::apply_defaults(&mut v, &KvConfig::default());
        v
    }

    #[test]
    fn run_strategies_start_and_stop() {
        let always = vm("Always", json!({}));
        assert_eq!(
            run_action(&always, None, false).0,
            RunAction::Start { paused: false }
        );
        let vmi = running_vmi(json!({}));
        assert_eq!(run_action(&always, Some(&vmi), false).0, RunAction::None);
        assert_eq!(
            run_action(&vm("Halted", json!({})), Some(&vmi), false).0,
            RunAction::Stop
        );
        assert_eq!(
            run_action(&vm("Manual", json!({})), None, false).0,
            RunAction::None
        );
        let mut rerun = vm("RerunOnFailure", json!({}));
        assert_eq!(
            run_action(&rerun, None, false).0,
            RunAction::Start { paused: false }
        );
        rerun["status"] = json!({"runStrategy": "RerunOnFailure"});
        assert_eq!(
            run_action(&rerun, None, false).0,
            RunAction::None,
            "stopped by request"
        );
    }

    #[test]
    fn restart_requests_stop_then_start() {
        let mut v = vm("Always", json!({}));
        v["status"] = json!({"stateChangeRequests": [
            {"action": "Stop", "uid": "i1"}, {"action": "Start"}]});
        let vmi = running_vmi(json!({}));
        let (action, left) = run_action(&v, Some(&vmi), false);
        assert_eq!(action, RunAction::Stop);
        assert_eq!(left.len(), 2);
        assert_eq!(run_action(&v, Some(&vmi), true).0, RunAction::None);
        let (action, left) = run_action(&v, None, false);
        assert_eq!(action, RunAction::Start { paused: false });
        assert!(left.is_empty());
        v["status"] =
            json!({"stateChangeRequests": [{"action": "Start", "data": {"paused": "true"}}]});
        assert_eq!(
            run_action(&v, None, false).0,
            RunAction::Start { paused: true }
        );
    }

    fn spec(sockets: u64, cores: u64, guest: &str) -> Value {
        json!({"architecture": "amd64", "domain": {
            "cpu": {"sockets": sockets, "cores": cores, "threads": 1},
            "memory": {"guest": guest}}})
    }

    #[test]
    fn socket_increase_is_hot_plugged_and_decrease_needs_a_restart() {
        let started = spec(1, 2, "2Gi");
        let vmi = running_vmi(started.clone());
        let kv = KvConfig::default();
        let up = live_update(&vm("Always", spec(2, 2, "2Gi")), &vmi, &started, &kv, None);
        assert_eq!(up.restart_required, None);
        assert_eq!(up.vmi_spec.unwrap()["domain"]["cpu"]["sockets"], 2);

        let mut grown = running_vmi(spec(2, 2, "2Gi"));
        grown["status"]["currentCPUTopology"]["sockets"] = json!(2);
        let down = live_update(
            &vm("Always", spec(1, 2, "2Gi")),
            &grown,
            &started,
            &kv,
            None,
        );
        assert_eq!(down.restart_required.as_deref(), Some(CPU_REDUCTION));
        assert!(down.vmi_spec.is_none());

        let over = live_update(&vm("Always", spec(5, 2, "2Gi")), &vmi, &started, &kv, None);
        assert_eq!(over.restart_required.as_deref(), Some(CPU_ABOVE_MAX));

        let cores = live_update(&vm("Always", spec(1, 4, "2Gi")), &vmi, &started, &kv, None);
        assert_eq!(cores.restart_required.as_deref(), Some(NON_LIVE_CHANGE));
    }

    #[test]
    fn restart_required_is_recomputed_from_1_8_and_sticky_in_1_7() {
        use crate::sim::version::KubeVirtVersion;
        let started = spec(1, 2, "2Gi");
        let vmi = running_vmi(started.clone());
        let v19 = KvConfig::default();
        // v1.8+: a handler's RestartRequired from an earlier reconcile blocks nothing.
        let live = live_update(
            &vm("Always", spec(2, 2, "2Gi")),
            &vmi,
            &started,
            &v19,
            Some(MEMORY_FAILED),
        );
        assert_eq!(live.restart_required, None);
        assert_eq!(live.vmi_spec.unwrap()["domain"]["cpu"]["sockets"], 2);
        // ... and goes once the template is back to what runs.
        let reverted = live_update(
            &vm("Always", started.clone()),
            &vmi,
            &started,
            &v19,
            Some(CPU_REDUCTION),
        );
        assert_eq!(reverted.restart_required, None);
        // v1.7.0: it stays until a restart and blocks every live update meanwhile.
        let v17 = KvConfig {
            version: KubeVirtVersion::V1_7,
            ..KvConfig::default()
        };
        let blocked = live_update(
            &vm("Always", spec(2, 2, "2Gi")),
            &vmi,
            &started,
            &v17,
            Some(MEMORY_FAILED),
        );
        assert_eq!(blocked.restart_required.as_deref(), Some(MEMORY_FAILED));
        assert!(blocked.vmi_spec.is_none());
        let sticky = live_update(
            &vm("Always", started.clone()),
            &vmi,
            &started,
            &v17,
            Some(CPU_REDUCTION),
        );
        assert_eq!(sticky.restart_required.as_deref(), Some(CPU_REDUCTION));
    }

    #[test]
    fn scheduling_fields_are_live_and_a_dropped_firmware_uuid_is_not() {
        let started = spec(1, 1, "2Gi");
        let vmi = running_vmi(started.clone());
        let kv = KvConfig::default();
        let mut placed = spec(1, 1, "2Gi");
        placed["nodeSelector"] = json!({"zone": "b"});
        placed["tolerations"] = json!([{"key": "k", "operator": "Exists"}]);
        let up = live_update(&vm("Always", placed), &vmi, &started, &kv, None);
        assert_eq!(up.restart_required, None);
        let new_spec = up.vmi_spec.unwrap();
        assert_eq!(new_spec["nodeSelector"], json!({"zone": "b"}));
        assert_eq!(new_spec["tolerations"][0]["key"], "k");

        let mut with_uuid = started.clone();
        with_uuid["domain"]["firmware"] = json!({"uuid": "11111111-1111-4111-8111-111111111111"});
        let mut vmi = running_vmi(with_uuid.clone());
        vmi["spec"]["domain"]["firmware"]["uuid"] = json!("11111111-1111-4111-8111-111111111111");
        let mut legacy = with_uuid.clone();
        legacy["domain"]["firmware"]["uuid"] = json!(legacy_firmware_uuid("vm1"));
        let r = live_update(&vm("Always", legacy), &vmi, &with_uuid, &kv, None);
        assert_eq!(r.restart_required.as_deref(), Some(NON_LIVE_CHANGE));
    }

    #[test]
    fn legacy_firmware_uuids_are_name_based_version_5() {
        let a = legacy_firmware_uuid("vm1");
        // RFC 4122 version 5 of "vm1" in KubeVirt's namespace (Python's uuid.uuid5 agrees).
        assert_eq!(a, "133bf63e-9459-5126-9b21-b56e9b3d17b3");
        assert_ne!(a, legacy_firmware_uuid("vm2"));
        assert_eq!(&a[14..15], "5");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"));
    }

    #[test]
    fn memory_hot_plug_rules() {
        let started = spec(1, 1, "2Gi");
        let vmi = running_vmi(started.clone());
        let kv = KvConfig::default();
        let up = live_update(&vm("Always", spec(1, 1, "4Gi")), &vmi, &started, &kv, None);
        assert_eq!(up.restart_required, None);
        assert_eq!(up.vmi_spec.unwrap()["domain"]["memory"]["guest"], "4Gi");
        let below = live_update(&vm("Always", spec(1, 1, "1Gi")), &vmi, &started, &kv, None);
        assert_eq!(below.restart_required.as_deref(), Some(MEMORY_BELOW_BOOT));
        let above = live_update(&vm("Always", spec(1, 1, "10Gi")), &vmi, &started, &kv, None);
        assert_eq!(above.restart_required.as_deref(), Some(MEMORY_ABOVE_MAX));
        let mut not_migratable = vmi.clone();
        not_migratable["status"]["conditions"][1]["status"] = json!("False");
        let r = live_update(
            &vm("Always", spec(1, 1, "4Gi")),
            &not_migratable,
            &started,
            &kv,
            None,
        );
        assert_eq!(r.restart_required.as_deref(), Some(MEMORY_NOT_MIGRATABLE));
        let stage = KvConfig {
            live_update: false,
            ..KvConfig::default()
        };
        let r = live_update(
            &vm("Always", spec(1, 1, "4Gi")),
            &vmi,
            &started,
            &stage,
            None,
        );
        assert_eq!(r.restart_required.as_deref(), Some(NON_LIVE_CHANGE));
    }

    #[test]
    fn nic_plug_and_unplug() {
        let nets = |extra: Value| {
            let mut ifaces = vec![json!({"name": "default", "masquerade": {}})];
            let mut networks = vec![json!({"name": "default", "pod": {}})];
            if !extra.is_null() {
                ifaces.push(extra);
                networks.push(json!({"name": "net1", "multus": {"networkName": "br10"}}));
            }
            json!({"domain": {"devices": {"interfaces": ifaces}}, "networks": networks})
        };
        let started = nets(Value::Null);
        let vmi = running_vmi(started.clone());
        let kv = KvConfig::default();
        let plug = live_update(
            &vm("Always", nets(json!({"name": "net1", "bridge": {}}))),
            &vmi,
            &started,
            &kv,
            None,
        );
        assert_eq!(plug.restart_required, None);
        let new_spec = plug.vmi_spec.unwrap();
        assert_eq!(array(&new_spec, "/networks").len(), 2);

        let plugged = running_vmi(new_spec);
        let unplug = live_update(
            &vm(
                "Always",
                nets(json!({"name": "net1", "bridge": {}, "state": "absent"})),
            ),
            &plugged,
            &started,
            &kv,
            None,
        );
        assert_eq!(unplug.restart_required, None);
        assert_eq!(
            unplug.vmi_spec.unwrap()["domain"]["devices"]["interfaces"][1]["state"],
            "absent"
        );
        // Removing the entries instead of marking them absent needs a restart.
        let removed = live_update(
            &vm("Always", started.clone()),
            &plugged,
            &started,
            &kv,
            None,
        );
        assert_eq!(removed.restart_required.as_deref(), Some(NON_LIVE_CHANGE));

        let mut template = nets(json!({"name": "net1", "bridge": {}, "state": "absent"}));
        assert!(!clear_detached_interfaces(
            &mut template,
            Some(&plugged["spec"])
        ));
        assert!(clear_detached_interfaces(&mut template, Some(&vmi["spec"])));
        assert_eq!(template, started);
    }

    #[test]
    fn printable_status_precedence() {
        let v = vm("Always", json!({}));
        let none = Volumes::default();
        assert_eq!(printable_status(&v, None, false, none), "Stopped");
        let provisioning = Volumes {
            dv_provisioning: true,
            ..none
        };
        assert_eq!(
            printable_status(&v, None, false, provisioning),
            "Provisioning"
        );
        let mut vmi = running_vmi(json!({}));
        assert_eq!(printable_status(&v, Some(&vmi), false, none), "Running");
        assert_eq!(printable_status(&v, Some(&vmi), true, none), "Stopping");
        vmi["status"]["conditions"] = json!([{"type": "Paused", "status": "True"}]);
        assert_eq!(printable_status(&v, Some(&vmi), false, none), "Paused");
        vmi["status"]["migrationState"] = json!({"completed": false});
        assert_eq!(printable_status(&v, Some(&vmi), false, none), "Migrating");
        vmi["status"]["phase"] = json!("Scheduling");
        vmi["status"]["migrationState"] = Value::Null;
        assert_eq!(printable_status(&v, Some(&vmi), false, none), "Starting");
    }

    #[test]
    fn vm_status_copies_vmi_conditions() {
        let vmi = json!({"status": {"phase": "Running", "conditions": [
            {"type": "Ready", "status": "True"},
            {"type": "AgentConnected", "status": "True"},
            {"type": "RestartRequired", "status": "True"}]}});
        let v = vm("Always", json!({}));
        let s = status(
            &v,
            &StatusInput {
                vmi: Some(&vmi),
                printable: "Running",
                restart_required: None,
                failure: None,
                requests: vec![],
                observed_generation: Some(1),
            },
            "now",
        );
        let types: Vec<_> = array(&s, "/conditions")
            .iter()
            .map(|c| c["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["Ready", "AgentConnected"]);
        assert_eq!(s["ready"], true);
        assert_eq!(s["runStrategy"], "Always");
        assert_eq!(s["desiredGeneration"], 1);
    }
}

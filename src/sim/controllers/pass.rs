//! One reconcile pass of every simulated controller over the store, in the order a real
//! cluster's controllers would settle: garbage collection, CDI and the PV binder/resizer, the
//! VM controller, virt-handler's VMI lifecycle, the workload updater, the migration controller.
//! The decisions are the pure functions of [`super::vm`], [`super::vmi`] and [`super::storage`];
//! this module reads the objects, keeps the timers and writes the results.
//!
//! Synchronous: the caller holds the store for the whole pass, so a pass sees one consistent
//! state and API requests never interleave with it.

use std::collections::BTreeSet;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::objects::{self, Condition, KvConfig, array, bytes, is_true, text};
use super::{Faults, Memory, storage, vm, vmi};
use crate::sim::clock::{SimMillis, Timing};
use crate::sim::resources::{self, ResourceDef};
use crate::sim::store::{ListOptions, Preconditions, Store, Target};

/// Names of the simulated nodes VMIs run on and migrate between.
const NODES: &[&str] = &["sim-node-1", "sim-node-2", "sim-node-3"];

/// The workload updater's annotation on the migrations it creates.
pub const WORKLOAD_UPDATE_ANNOTATION: &str = "kubevirt.io/workloadUpdateMigration";

/// What a pass needs besides the store.
pub struct Pass<'a> {
    pub now: SimMillis,
    pub timing: &'a Timing,
    /// RFC 3339 wall-clock time for condition and migration time stamps.
    pub stamp: String,
    pub faults: &'a Faults,
    pub default_agent: bool,
    pub mem: &'a mut Memory,
}

/// The resources the controllers touch.
struct Defs {
    vm: &'static ResourceDef,
    vmi: &'static ResourceDef,
    vmim: &'static ResourceDef,
    kv: &'static ResourceDef,
    dv: &'static ResourceDef,
    pvc: &'static ResourceDef,
    sc: &'static ResourceDef,
}

impl Defs {
    fn get() -> Option<Self> {
        Some(Self {
            vm: resources::find("kubevirt.io", "v1", "virtualmachines")?,
            vmi: resources::find("kubevirt.io", "v1", "virtualmachineinstances")?,
            vmim: resources::find("kubevirt.io", "v1", "virtualmachineinstancemigrations")?,
            kv: resources::find("kubevirt.io", "v1", "kubevirts")?,
            dv: resources::find("cdi.kubevirt.io", "v1beta1", "datavolumes")?,
            pvc: resources::find("", "v1", "persistentvolumeclaims")?,
            sc: resources::find("storage.k8s.io", "v1", "storageclasses")?,
        })
    }
}

fn list(store: &Store, r: &'static ResourceDef) -> Vec<Value> {
    store
        .list(r, None, &ListOptions::default())
        .map(|p| p.items)
        .unwrap_or_default()
}

fn get(store: &Store, r: &'static ResourceDef, namespace: &str, name: &str) -> Option<Value> {
    store.get(r, namespace, name).ok()
}

/// Write `after` over `before` (main resource and, for kinds with one, the status
/// subresource); returns the stored object, or `None` when the write failed.
fn save(
    store: &mut Store,
    r: &'static ResourceDef,
    before: &Value,
    after: &Value,
) -> Option<Value> {
    if before == after {
        return Some(before.clone());
    }
    let (ns, name) = (objects::namespace(after), objects::name(after));
    let without_status = |v: &Value| {
        let mut v = v.clone();
        if r.status
            && let Some(m) = v.as_object_mut()
        {
            m.remove("status");
        }
        v
    };
    let mut current = before.clone();
    if without_status(before) != without_status(after) {
        match store.update(r, ns, name, after.clone(), Target::Main, false) {
            Ok(v) => current = v,
            Err(error) => {
                tracing::warn!(%error, kind = r.kind, name, "controller write failed");
                return None;
            }
        }
    }
    if r.status && before.get("status") != after.get("status") {
        let mut s = after.clone();
        s["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"].clone();
        match store.update(r, ns, name, s, Target::Status, false) {
            Ok(v) => current = v,
            Err(error) => {
                tracing::warn!(%error, kind = r.kind, name, "controller status write failed");
                return None;
            }
        }
    }
    Some(current)
}

fn create(store: &mut Store, r: &'static ResourceDef, obj: Value) -> Option<Value> {
    let ns = objects::namespace(&obj).to_string();
    match store.create(r, &ns, obj, false) {
        Ok(v) => Some(v),
        Err(error) => {
            tracing::warn!(%error, kind = r.kind, "controller create failed");
            None
        }
    }
}

fn delete(store: &mut Store, r: &'static ResourceDef, obj: &Value) {
    let (ns, name) = (objects::namespace(obj), objects::name(obj));
    if let Err(error) = store.delete(r, ns, name, &Preconditions::default(), false) {
        tracing::debug!(%error, kind = r.kind, name, "controller delete failed");
    }
}

/// A stable pseudo-random number for an object (node placement, MACs, IPs).
fn hash(parts: &[&str]) -> [u8; 32] {
    Sha256::digest(parts.join("/")).into()
}

fn node_for(uid: &str) -> &'static str {
    NODES[usize::from(hash(&[uid])[0]) % NODES.len()]
}

/// One pass of every controller.
pub fn reconcile(store: &mut Store, p: &mut Pass<'_>) {
    let Some(d) = Defs::get() else {
        return;
    };
    let kv_cr = list(store, d.kv).into_iter().min_by_key(|k| {
        (
            objects::namespace(k) != "kubevirt",
            objects::name(k) != "kubevirt",
        )
    });
    let kv = KvConfig::from_cr(kv_cr.as_ref());
    collect_garbage(store, &d);
    storage_pass(store, &d, p);
    vm_pass(store, &d, p, &kv);
    stop_pass(store, &d, p);
    vmi_pass(store, &d, p);
    guest_disk_pass(store, &d, p, &kv);
    workload_updater(store, &d, p, &kv);
    migration_pass(store, &d, p);

    let mut live = BTreeSet::new();
    for r in [d.vm, d.vmi, d.vmim, d.dv, d.pvc] {
        for obj in list(store, r) {
            live.insert(objects::uid(&obj).to_string());
        }
    }
    p.mem.timers.retain_uids(&live);
    p.mem.started.retain(|uid, _| live.contains(uid));
    p.mem.stopping.retain(|uid| live.contains(uid));
    p.mem.start_paused.retain(|uid| live.contains(uid));
    p.mem.guest_disks.retain(|uid, _| live.contains(uid));
}

/// virt-launcher's disk sizes (facts §4): a claim-backed disk has, in the guest, the size of
/// `min(requests, capacity)` of its claim (kv: `pkg/storage/types/pvc.go` L296-318
/// `GetDiskCapacity`) when the domain starts; a claim grown later reaches the running guest only
/// through online expansion (`expandDisksOnline`, kv: `pkg/virt-launcher/virtwrap/
/// disk_expansion.go` L67-104), which v1.8.x and older skip unless the KubeVirt CR lists the
/// ExpandDisks gate (GA in v1.9.0). The simulated guest grows its filesystem with its disk.
fn guest_disk_pass(store: &Store, d: &Defs, p: &mut Pass<'_>, kv: &KvConfig) {
    let expand = kv.gate(crate::sim::version::EXPAND_DISKS);
    for vmi in list(store, d.vmi) {
        if text(&vmi, "/status/phase") != Some("Running") {
            continue;
        }
        let disks = p
            .mem
            .guest_disks
            .entry(objects::uid(&vmi).to_string())
            .or_default();
        for status in array(&vmi, "/status/volumeStatus") {
            let (Some(volume), Some(info)) = (
                text(status, "/name"),
                status.get("persistentVolumeClaimInfo"),
            ) else {
                continue;
            };
            let (Some(capacity), Some(request)) = (
                bytes(info, "/capacity/storage"),
                bytes(info, "/requests/storage"),
            ) else {
                continue;
            };
            let size = capacity.min(request);
            match disks.get_mut(volume) {
                None => {
                    disks.insert(volume.to_string(), size);
                }
                Some(seen) if expand && size > *seen => *seen = size,
                Some(_) => {}
            }
        }
    }
}

/// Delete what the controllers created for an owner that is gone (the garbage collector's
/// ownerReference cascade, for the kinds the controllers own).
fn collect_garbage(store: &mut Store, d: &Defs) {
    let vms: BTreeSet<String> = list(store, d.vm)
        .iter()
        .map(|v| objects::uid(v).to_string())
        .collect();
    for (r, owner) in [(d.vmi, "VirtualMachine"), (d.dv, "VirtualMachine")] {
        for obj in list(store, r) {
            if objects::controller_uid(&obj, owner).is_some_and(|u| !vms.contains(u)) {
                if r.plural == d.vmi.plural {
                    // The VMI controller drops the VM controller's finalizer of a VMI whose VM
                    // is gone (kv: `pkg/virt-controller/watch/vmi/lifecycle.go` L475-478).
                    finish_vmi(store, d, &obj);
                } else {
                    delete(store, r, &obj);
                }
            }
        }
    }
    let dvs: BTreeSet<String> = list(store, d.dv)
        .iter()
        .map(|v| objects::uid(v).to_string())
        .collect();
    for pvc in list(store, d.pvc) {
        if objects::controller_uid(&pvc, "DataVolume").is_some_and(|u| !dvs.contains(u)) {
            delete(store, d.pvc, &pvc);
        }
    }
}

/// Whether a VM is about to run (for lazy DataVolume creation).
fn wants_to_run(vm: &Value) -> bool {
    !matches!(objects::run_strategy(vm), "Halted" | "Manual")
        || array(vm, "/status/stateChangeRequests")
            .iter()
            .any(|r| text(r, "/action") == Some("Start"))
}

/// CDI (DataVolumes and their PVCs) and the PV binder and resizer.
fn storage_pass(store: &mut Store, d: &Defs, p: &mut Pass<'_>) {
    let classes = list(store, d.sc);
    for vm in list(store, d.vm) {
        let ns = objects::namespace(&vm).to_string();
        let lazy = text(
            &vm,
            "/metadata/annotations/kubevirt.io~1immediate-data-volume-creation",
        ) == Some("false");
        if lazy && !wants_to_run(&vm) {
            continue;
        }
        for template in array(&vm, "/spec/dataVolumeTemplates") {
            let Some(name) = text(template, "/metadata/name") else {
                continue;
            };
            if get(store, d.dv, &ns, name).is_none() {
                create(store, d.dv, storage::dv_from_template(&vm, template));
            }
        }
    }
    for dv in list(store, d.dv) {
        let (ns, name) = (objects::namespace(&dv), objects::name(&dv));
        let pvc = match get(store, d.pvc, ns, name) {
            Some(pvc) => Some(pvc),
            None => match storage::pvc_for_dv(&dv, &classes) {
                Ok(new) => create(store, d.pvc, new),
                Err(reason) => {
                    tracing::debug!(dv = name, %reason, "no PVC for the DataVolume yet");
                    None
                }
            },
        };
        let mut after = dv.clone();
        after["status"] = dv_status(&dv, pvc.as_ref(), p);
        save(store, d.dv, &dv, &after);
    }
    for pvc in list(store, d.pvc) {
        let mut after = pvc.clone();
        pvc_progress(&mut after, &classes, p);
        save(store, d.pvc, &pvc, &after);
    }
}

fn dv_status(dv: &Value, pvc: Option<&Value>, p: &mut Pass<'_>) -> Value {
    let uid = objects::uid(dv);
    let name = objects::name(dv);
    let bound = pvc.is_some_and(|c| text(c, "/status/phase") == Some("Bound"));
    let (phase, progress) = if !bound {
        ("Pending", "N/A".to_string())
    } else if storage::dv_ready(dv)
        || storage::dv_is_blank(dv)
        || p.mem.timers.due(uid, "import", p.timing.import, p.now)
    {
        ("Succeeded", "100.0%".to_string())
    } else {
        let total = crate::sim::clock::millis(p.timing.import).max(1);
        let done = p.mem.timers.elapsed(uid, "import", p.now).unwrap_or(0);
        (
            "ImportInProgress",
            format!("{}.00%", (done * 100 / total).min(99)),
        )
    };
    let claim_phase = pvc
        .and_then(|c| text(c, "/status/phase"))
        .unwrap_or("Pending");
    let mut status = serde_json::Map::new();
    status.insert("claimName".into(), json!(name));
    status.insert("phase".into(), json!(phase));
    status.insert("progress".into(), json!(progress));
    let succeeded = phase == "Succeeded";
    let conditions = [
        Condition::new(
            "Bound",
            bound,
            if bound { "Bound" } else { "Pending" },
            &format!("PVC {name} {claim_phase}"),
        ),
        Condition::new(
            "Ready",
            succeeded,
            if succeeded { "" } else { "TransferRunning" },
            "",
        ),
        Condition::new(
            "Running",
            phase == "ImportInProgress",
            if succeeded { "Completed" } else { "" },
            "",
        ),
    ];
    let mut old = dv
        .get("status")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    objects::set_conditions(&mut old, &conditions, &p.stamp);
    if let Some(c) = old.get("conditions") {
        status.insert("conditions".into(), c.clone());
    }
    Value::Object(status)
}

/// Dynamic provisioning (bind after a delay) and online expansion of a PVC.
fn pvc_progress(pvc: &mut Value, classes: &[Value], p: &mut Pass<'_>) {
    let uid = objects::uid(pvc).to_string();
    if text(pvc, "/status/phase") != Some("Bound") {
        let class_exists = text(pvc, "/spec/storageClassName")
            .is_some_and(|n| classes.iter().any(|c| objects::name(c) == n));
        let static_volume = text(pvc, "/spec/volumeName").is_some();
        if !(class_exists || static_volume)
            || !p.mem.timers.due(&uid, "bind", p.timing.pvc_bind, p.now)
        {
            return;
        }
        p.mem.timers.clear(&uid, "bind");
        if !static_volume {
            objects::object_at(pvc, "/spec")
                .insert("volumeName".into(), json!(format!("pvc-{uid}")));
        }
        let request = pvc
            .pointer("/spec/resources/requests/storage")
            .cloned()
            .unwrap_or(json!("0"));
        let modes = pvc
            .pointer("/spec/accessModes")
            .cloned()
            .unwrap_or(json!([]));
        pvc["status"] =
            json!({"phase": "Bound", "accessModes": modes, "capacity": {"storage": request}});
        return;
    }
    let request = objects::quantity(pvc, "/spec/resources/requests/storage");
    let capacity = objects::quantity(pvc, "/status/capacity/storage");
    let (Some(request), Some(capacity)) = (request, capacity) else {
        return;
    };
    let status = objects::object_at(pvc, "/status");
    if request <= capacity {
        status.remove("allocatedResourceStatuses");
        return;
    }
    let request_text = json!(request.to_string());
    if p.mem.timers.due(&uid, "resize", p.timing.resize, p.now) {
        p.mem.timers.clear(&uid, "resize");
        status.insert("capacity".into(), json!({"storage": request_text}));
        status.insert(
            "allocatedResources".into(),
            json!({"storage": request_text}),
        );
        status.remove("allocatedResourceStatuses");
        objects::set_conditions(status, &[], &p.stamp);
    } else {
        status.insert(
            "allocatedResources".into(),
            json!({"storage": request_text}),
        );
        status.insert(
            "allocatedResourceStatuses".into(),
            json!({"storage": "ControllerResizeInProgress"}),
        );
        objects::set_conditions(
            status,
            &[Condition::new("Resizing", true, "", "")],
            &p.stamp,
        );
    }
}

/// The state of a VM's volumes, for starting and the printable status.
fn volume_state(store: &Store, d: &Defs, vm: &Value) -> vm::Volumes {
    let ns = objects::namespace(vm);
    let template = vm.pointer("/spec/template/spec").unwrap_or(&Value::Null);
    let mut v = vm::Volumes::default();
    for volume in array(template, "/volumes") {
        if let Some(name) = text(volume, "/dataVolume/name") {
            match get(store, d.dv, ns, name) {
                Some(dv) if text(&dv, "/status/phase") == Some("Failed") => v.dv_failed = true,
                Some(dv) if !storage::dv_ready(&dv) => v.dv_provisioning = true,
                Some(_) => {}
                None => {
                    let templated = array(vm, "/spec/dataVolumeTemplates")
                        .iter()
                        .any(|t| text(t, "/metadata/name") == Some(name));
                    if templated {
                        v.dv_provisioning = true;
                    } else if get(store, d.pvc, ns, name).is_none() {
                        v.pvc_missing = true;
                    }
                }
            }
        } else if let Some(claim) = text(volume, "/persistentVolumeClaim/claimName") {
            match get(store, d.pvc, ns, claim) {
                None => v.pvc_missing = true,
                Some(pvc) if text(&pvc, "/status/phase") != Some("Bound") => v.pvc_pending = true,
                Some(_) => {}
            }
        }
    }
    v
}

fn strip_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, x)| !x.is_null())
                .map(|(k, x)| (k.clone(), strip_nulls(x)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_nulls).collect()),
        other => other.clone(),
    }
}

/// What the VM controller writes into the VM object itself before it looks at the instance
/// (vm.go `execute` L374-384, `sync` L3243-3262, L3331-3356): the API version annotations
/// (alone, as the first write of a reconcile), the finalizer (or, for a VM being deleted whose
/// instance is gone, its removal), the legacy firmware UUID of a template without one, and the
/// running VMI's PCI topology annotations (v1.8.0 and later). Returns the VM as stored, or
/// `None` when this reconcile wrote the annotations or let a deleted VM go.
fn vm_object_sync(
    store: &mut Store,
    d: &Defs,
    kv: &KvConfig,
    vm: Value,
    vmi: Option<&Value>,
) -> Option<Value> {
    if !vm::observed_latest_api_version(&vm) {
        let mut after = vm.clone();
        vm::set_api_version_annotations(&mut after);
        save(store, d.vm, &vm, &after);
        return None;
    }
    let mut after = vm.clone();
    if vm.pointer("/metadata/deletionTimestamp").is_some() {
        // L3243-3249: the finalizer goes once no instance is left (or dependents are orphaned).
        let orphan = vm::has_finalizer(&vm, "orphan");
        if vmi.is_none() || orphan {
            vm::remove_finalizer(&mut after);
            save(store, d.vm, &vm, &after);
            return None;
        }
        return Some(vm);
    }
    vm::add_finalizer(&mut after);
    vm::sync_firmware_uuid(&mut after);
    if kv.version.syncs_pci_topology_to_vm()
        && let Some(i) = vmi
    {
        vm::sync_pci_topology(&mut after, i);
    }
    save(store, d.vm, &vm, &after)
}

/// KubeVirt's VM controller.
fn vm_pass(store: &mut Store, d: &Defs, p: &mut Pass<'_>, kv: &KvConfig) {
    for vm in list(store, d.vm) {
        let ns = objects::namespace(&vm).to_string();
        let name = objects::name(&vm).to_string();
        let vm_uid = objects::uid(&vm).to_string();
        let vmi = get(store, d.vmi, &ns, &name)
            .filter(|i| objects::controller_uid(i, "VirtualMachine").is_none_or(|u| u == vm_uid));
        let Some(vm) = vm_object_sync(store, d, kv, vm, vmi.as_ref()) else {
            continue;
        };
        let terminating = vm.pointer("/metadata/deletionTimestamp").is_some();
        let template = vm
            .pointer("/spec/template/spec")
            .cloned()
            .unwrap_or(json!({}));
        let mut stopping = vmi
            .as_ref()
            .is_some_and(|i| p.mem.stopping.contains(objects::uid(i)));
        let volumes = volume_state(store, d, &vm);
        let original_requests = array(&vm, "/status/stateChangeRequests").to_vec();
        let (mut action, mut requests) = vm::run_action(&vm, vmi.as_ref(), stopping);
        if terminating {
            // L3250-3256: a VM being deleted has its instance stopped, never started.
            action = match &vmi {
                Some(_) if !stopping => vm::RunAction::Stop,
                _ => vm::RunAction::None,
            };
        }
        let mut vmi_now = vmi.clone();
        match action {
            vm::RunAction::Start { paused } => {
                if volumes.dv_provisioning || volumes.dv_failed {
                    // KubeVirt waits for every DataVolume before it starts the VMI.
                    requests = original_requests;
                } else if let Some(created) = create(store, d.vmi, vmi::from_vm(&vm, kv)) {
                    let uid = objects::uid(&created).to_string();
                    p.mem.started.insert(uid.clone(), template.clone());
                    if paused || text(&template, "/startStrategy") == Some("Paused") {
                        p.mem.start_paused.insert(uid);
                    }
                    vmi_now = Some(created);
                }
            }
            vm::RunAction::Stop => {
                if let Some(i) = &vmi {
                    p.mem.stopping.insert(objects::uid(i).to_string());
                    stopping = true;
                }
            }
            vm::RunAction::None => {}
        }

        let existing_rr = objects::condition(&vm, "RestartRequired")
            .and_then(|c| c.get("message").and_then(Value::as_str))
            .map(String::from);
        let mut restart_required = None;
        let mut failure = None;
        if let Some(i) = vmi_now.clone()
            && !stopping
            && !vm::is_final(&i)
        {
            let started = p
                .mem
                .started
                .get(objects::uid(&i))
                .cloned()
                .unwrap_or_else(|| template.clone());
            if text(&i, "/status/phase") == Some("Running") {
                let lu = vm::live_update(&vm, &i, &started, kv, existing_rr.as_deref());
                restart_required = lu.restart_required;
                failure = lu.failure;
                if let Some(spec) = lu.vmi_spec {
                    let mut after = i.clone();
                    after["spec"] = spec;
                    vmi_now = save(store, d.vmi, &i, &after).or(vmi_now);
                }
            } else if vm::non_live_changed(
                &template,
                &started,
                i.get("spec").unwrap_or(&Value::Null),
                kv,
            ) {
                restart_required = Some(
                    existing_rr
                        .clone()
                        .unwrap_or_else(|| vm::NON_LIVE_CHANGE.into()),
                );
            }
            // The VMI reflects the VM generation only while the template is what it started from.
            if let Some(current) = vmi_now.clone()
                && strip_nulls(&template) == strip_nulls(&started)
            {
                let generation = objects::number(&vm, "/metadata/generation").unwrap_or(1);
                let mut after = current.clone();
                objects::object_at(&mut after, "/metadata/annotations").insert(
                    vmi::VM_GENERATION_ANNOTATION.into(),
                    json!(generation.to_string()),
                );
                vmi_now = save(store, d.vmi, &current, &after).or(vmi_now);
            }
        }

        let mut vm_now = vm.clone();
        let mut new_template = template.clone();
        if vm::clear_detached_interfaces(
            &mut new_template,
            vmi_now.as_ref().and_then(|i| i.get("spec")),
        ) {
            let mut after = vm.clone();
            after["spec"]["template"]["spec"] = new_template;
            vm_now = save(store, d.vm, &vm, &after).unwrap_or(vm_now);
        }

        let observed = vmi_now.as_ref().and_then(|i| {
            text(
                i,
                &format!(
                    "/metadata/annotations/{}",
                    vmi::VM_GENERATION_ANNOTATION.replace('/', "~1")
                ),
            )
            .and_then(|g| g.parse().ok())
        });
        let printable = vm::printable_status(&vm_now, vmi_now.as_ref(), stopping, volumes);
        let status = vm::status(
            &vm_now,
            &vm::StatusInput {
                vmi: vmi_now.as_ref(),
                printable,
                restart_required: restart_required.as_deref(),
                failure: failure.as_ref(),
                requests,
                observed_generation: observed,
            },
            &p.stamp,
        );
        let mut after = vm_now.clone();
        after["status"] = status;
        save(store, d.vm, &vm_now, &after);
    }
}

/// Graceful shutdown of stopping VMIs: gone after the shutdown delay.
fn stop_pass(store: &mut Store, d: &Defs, p: &mut Pass<'_>) {
    for vmi in list(store, d.vmi) {
        let uid = objects::uid(&vmi).to_string();
        if vmi.pointer("/metadata/deletionTimestamp").is_some() {
            // Deleted by someone: virt-handler shuts the guest down first.
            p.mem.stopping.insert(uid.clone());
        }
        if p.mem.stopping.contains(&uid)
            && p.mem.timers.due(&uid, "shutdown", p.timing.shutdown, p.now)
        {
            finish_vmi(store, d, &vmi);
            p.mem.stopping.remove(&uid);
        }
    }
}

/// A VMI whose guest is gone: delete it and, as the VM controller does once it recorded the
/// final state (vm.go L2510-2518, `removeVMIFinalizer`), drop the controller's finalizer so
/// the deletion completes.
fn finish_vmi(store: &mut Store, d: &Defs, vmi: &Value) {
    delete(store, d.vmi, vmi);
    let (ns, name) = (objects::namespace(vmi), objects::name(vmi));
    if let Some(current) = get(store, d.vmi, ns, name)
        && objects::uid(&current) == objects::uid(vmi)
    {
        let mut after = current.clone();
        if vm::remove_finalizer(&mut after) {
            save(store, d.vmi, &current, &after);
        }
    }
}

/// Whether every claim of a VMI exists and is bound (else the launcher pod cannot schedule).
fn claims_bound(store: &Store, d: &Defs, vmi: &Value) -> bool {
    let ns = objects::namespace(vmi);
    let spec = vmi.get("spec").unwrap_or(&Value::Null);
    vmi::claims(spec).iter().all(|(_, claim)| {
        get(store, d.pvc, ns, claim).is_some_and(|c| text(&c, "/status/phase") == Some("Bound"))
    })
}

/// virt-controller and virt-handler: a VMI's phases, conditions, interfaces and volumes.
fn vmi_pass(store: &mut Store, d: &Defs, p: &mut Pass<'_>) {
    for vmi in list(store, d.vmi) {
        let uid = objects::uid(&vmi).to_string();
        if p.mem.stopping.contains(&uid) {
            continue;
        }
        let mut after = vmi.clone();
        let t = p.timing;
        match text(&vmi, "/status/phase").unwrap_or("Pending") {
            "Pending"
                if claims_bound(store, d, &vmi)
                    && p.mem.timers.due(&uid, "scheduling", t.schedule, p.now) =>
            {
                objects::object_at(&mut after, "/status")
                    .insert("phase".into(), json!("Scheduling"));
            }
            "Scheduling" if p.mem.timers.due(&uid, "scheduled", t.schedule, p.now) => {
                let node = node_for(&uid);
                let status = objects::object_at(&mut after, "/status");
                status.insert("phase".into(), json!("Scheduled"));
                status.insert("nodeName".into(), json!(node));
                objects::object_at(&mut after, "/metadata/labels")
                    .insert("kubevirt.io/nodeName".into(), json!(node));
            }
            "Scheduled" if p.mem.timers.due(&uid, "boot", t.boot, p.now) => {
                objects::object_at(&mut after, "/status").insert("phase".into(), json!("Running"));
                let paused = p.mem.start_paused.remove(&uid);
                running_status(store, d, p, &mut after, true, paused);
            }
            "Running" => running_status(store, d, p, &mut after, false, false),
            _ => {}
        }
        let volume_status = volume_status(store, d, &after);
        objects::object_at(&mut after, "/status").insert("volumeStatus".into(), volume_status);
        save(store, d.vmi, &vmi, &after);
    }
}

/// `status.volumeStatus` of a VMI: one entry per volume, with the PVC's claim info.
fn volume_status(store: &Store, d: &Defs, vmi: &Value) -> Value {
    let ns = objects::namespace(vmi);
    let spec = vmi.get("spec").unwrap_or(&Value::Null);
    let disks = array(spec, "/domain/devices/disks");
    let entries: Vec<Value> = array(spec, "/volumes")
        .iter()
        .filter_map(|v| {
            let name = text(v, "/name")?;
            let mut entry = json!({"name": name});
            if let Some(idx) = disks
                .iter()
                .position(|disk| text(disk, "/name") == Some(name))
            {
                let letter = char::from(b'a' + u8::try_from(idx % 26).unwrap_or(0));
                entry["target"] = json!(format!("vd{letter}"));
            }
            let claim =
                text(v, "/persistentVolumeClaim/claimName").or_else(|| text(v, "/dataVolume/name"));
            if let Some(pvc) = claim.and_then(|c| get(store, d.pvc, ns, c)) {
                entry["persistentVolumeClaimInfo"] = storage::claim_info(&pvc);
            }
            Some(entry)
        })
        .collect();
    Value::Array(entries)
}

fn agent_connected(p: &Pass<'_>, vmi: &Value) -> bool {
    let vm_name = array(vmi, "/metadata/ownerReferences")
        .iter()
        .find(|r| text(r, "/kind") == Some("VirtualMachine"))
        .and_then(|r| text(r, "/name"))
        .unwrap_or_else(|| objects::name(vmi));
    p.faults
        .guest_agent(objects::namespace(vmi), vm_name)
        .unwrap_or(p.default_agent)
}

/// One `status.interfaces` entry (facts §3).
fn interface_status(
    uid: &str,
    idx: usize,
    iface: &Value,
    net: Option<&Value>,
    agent: bool,
) -> Value {
    let name = text(iface, "/name").unwrap_or_default();
    let h = hash(&[uid, name]);
    let mac = text(iface, "/macAddress").map_or_else(
        || {
            format!(
                "02:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                h[0], h[1], h[2], h[3], h[4]
            )
        },
        String::from,
    );
    let on_pod = net.is_some_and(|n| n.get("pod").is_some());
    let mut sources = vec!["domain"];
    if agent {
        sources.push("guest-agent");
    }
    if !on_pod {
        sources.push("multus-status");
    }
    let mut entry = json!({
        "name": name,
        "mac": mac,
        "infoSource": sources.join(", "),
        "queueCount": 1,
        "podInterfaceName": if on_pod {
            "eth0".to_string()
        } else {
            format!("pod{}", h[5..11].iter().map(|b| format!("{b:02x}")).collect::<String>())
        },
    });
    if on_pod {
        let ip = format!("10.244.{}.{}", h[6], h[7].max(2));
        entry["ipAddress"] = json!(ip);
        entry["ipAddresses"] = json!([ip]);
    }
    if agent {
        entry["interfaceName"] = json!(format!("eth{idx}"));
    }
    entry
}

/// The status of a running VMI: conditions, and interfaces with in-place hot(un)plug.
fn running_status(
    store: &Store,
    d: &Defs,
    p: &mut Pass<'_>,
    vmi: &mut Value,
    booting: bool,
    start_paused: bool,
) {
    let uid = objects::uid(vmi).to_string();
    let ns = objects::namespace(vmi).to_string();
    let agent = agent_connected(p, vmi)
        && p.mem
            .timers
            .due(&uid, "agent", p.timing.agent_connect, p.now);
    if !agent_connected(p, vmi) {
        p.mem.timers.clear(&uid, "agent");
    }

    // Interfaces: present at boot, hot-plugged in place (bridge), unplugged (absent).
    let spec = vmi.get("spec").cloned().unwrap_or(json!({}));
    let old: Vec<Value> = array(vmi, "/status/interfaces").to_vec();
    let mut interfaces = Vec::new();
    let mut unplugged = Vec::new();
    for (idx, iface) in array(&spec, "/domain/devices/interfaces")
        .iter()
        .enumerate()
    {
        let name = text(iface, "/name").unwrap_or_default();
        let key = format!("{uid}/{name}");
        let known = old.iter().any(|o| text(o, "/name") == Some(name));
        let absent = text(iface, "/state") == Some("absent");
        let net = vmi::network_of(&spec, name);
        if absent {
            if known && !p.mem.timers.due(&key, "unplug", p.timing.nic_plug, p.now) {
                interfaces.push(interface_status(&uid, idx, iface, net, agent));
            } else {
                p.mem.timers.clear(&key, "unplug");
                unplugged.push(name.to_string());
            }
            continue;
        }
        let present = booting
            || known
            || (iface.get("bridge").is_some()
                && p.mem.timers.due(&key, "plug", p.timing.nic_plug, p.now));
        if present {
            p.mem.timers.clear(&key, "plug");
            interfaces.push(interface_status(&uid, idx, iface, net, agent));
        }
    }
    if !unplugged.is_empty()
        && let Some(s) = vmi.get_mut("spec")
    {
        vm::remove_named(s, "/domain/devices/interfaces", &unplugged);
        vm::remove_named(s, "/networks", &unplugged);
    }
    let sriov_pending = array(&spec, "/domain/devices/interfaces").iter().any(|i| {
        i.get("sriov").is_some()
            && text(i, "/state") != Some("absent")
            && !interfaces
                .iter()
                .any(|s| text(s, "/name") == text(i, "/name"))
    });

    let access_modes = |claim: &str| {
        get(store, d.pvc, &ns, claim).map(|c| {
            array(&c, "/status/accessModes")
                .iter()
                .chain(if array(&c, "/status/accessModes").is_empty() {
                    array(&c, "/spec/accessModes").iter()
                } else {
                    [].iter()
                })
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
    };
    let mut wanted = vec![
        Condition::new("Ready", true, "", ""),
        vmi::live_migratable(vmi, access_modes),
    ];
    if agent {
        wanted.push(Condition::new("AgentConnected", true, "", ""));
    }
    let existing = objects::conditions(vmi);
    if let Some(paused) = existing
        .iter()
        .find(|c| c.type_ == "Paused" && c.status == "True")
    {
        wanted.push(paused.clone());
    } else if start_paused {
        wanted.push(Condition::new(
            "Paused",
            true,
            "PausedByUser",
            "VMI was paused by user",
        ));
    }
    let current = vmi.pointer("/status/currentCPUTopology").cloned();
    if vmi::vcpus(spec.pointer("/domain/cpu")) != vmi::vcpus(current.as_ref()) {
        wanted.push(Condition::new("HotVCPUChange", true, "", ""));
    }
    if let Some(failed) = existing
        .iter()
        .find(|c| c.type_ == "HotMemoryChange" && c.status == "False")
    {
        wanted.push(failed.clone());
    } else if let Some(guest) = bytes(&spec, "/domain/memory/guest")
        && bytes(vmi, "/status/memory/guestRequested").is_some_and(|r| r != guest)
    {
        wanted.push(Condition::new("HotMemoryChange", true, "", ""));
    }
    if sriov_pending {
        wanted.push(Condition::new(
            "MigrationRequired",
            true,
            "AutoMigrationDueToLiveUpdate",
            "",
        ));
    }
    let status = objects::object_at(vmi, "/status");
    objects::set_conditions(status, &wanted, &p.stamp);
    status.insert("interfaces".into(), Value::Array(interfaces));
}

/// The workload updater: a migration for every running VMI with a hot-plug in progress.
fn workload_updater(store: &mut Store, d: &Defs, p: &mut Pass<'_>, kv: &KvConfig) {
    let migrations = list(store, d.vmim);
    for vmi in list(store, d.vmi) {
        let uid = objects::uid(&vmi).to_string();
        if text(&vmi, "/status/phase") != Some("Running") || p.mem.stopping.contains(&uid) {
            continue;
        }
        let needs = ["HotVCPUChange", "HotMemoryChange", "MigrationRequired"]
            .iter()
            .any(|c| is_true(&vmi, c));
        let active = migrations.iter().any(|m| {
            objects::namespace(m) == objects::namespace(&vmi)
                && text(m, "/spec/vmiName") == Some(objects::name(&vmi))
                && !matches!(text(m, "/status/phase"), Some("Succeeded" | "Failed"))
        });
        if !needs || active {
            continue;
        }
        if kv.live_migrate && is_true(&vmi, "LiveMigratable") {
            create(
                store,
                d.vmim,
                json!({
                    "apiVersion": objects::KUBEVIRT_API,
                    "kind": "VirtualMachineInstanceMigration",
                    "metadata": {
                        "generateName": "kubevirt-workload-update-",
                        "namespace": objects::namespace(&vmi),
                        "annotations": {WORKLOAD_UPDATE_ANNOTATION: ""},
                    },
                    "spec": {"vmiName": objects::name(&vmi)},
                }),
            );
        } else if kv.evict {
            p.mem.stopping.insert(uid);
        }
    }
}

/// The migration controller and the target virt-handler.
fn migration_pass(store: &mut Store, d: &Defs, p: &mut Pass<'_>) {
    for vmim in list(store, d.vmim) {
        let phase = text(&vmim, "/status/phase").unwrap_or_default().to_string();
        if matches!(phase.as_str(), "Succeeded" | "Failed") {
            continue;
        }
        let uid = objects::uid(&vmim).to_string();
        let ns = objects::namespace(&vmim).to_string();
        let vmi = text(&vmim, "/spec/vmiName").and_then(|n| get(store, d.vmi, &ns, n));
        let runnable = vmi.as_ref().is_some_and(|i| {
            text(i, "/status/phase") == Some("Running") && !p.mem.stopping.contains(objects::uid(i))
        });
        let mut next = phase.clone();
        let t = p.timing;
        match (phase.as_str(), vmi) {
            (_, Some(i)) if runnable => match phase.as_str() {
                "" => next = "Pending".into(),
                "Pending" if p.mem.timers.due(&uid, "pending", t.schedule, p.now) => {
                    next = "Scheduling".into();
                }
                "Scheduling" if p.mem.timers.due(&uid, "scheduling", t.schedule, p.now) => {
                    next = "Scheduled".into();
                }
                "Scheduled" => {
                    let source = text(&i, "/status/nodeName").unwrap_or(NODES[0]).to_string();
                    let target = NODES
                        .iter()
                        .cycle()
                        .skip_while(|n| **n != source)
                        .nth(1)
                        .unwrap_or(&NODES[0]);
                    let mut after = i.clone();
                    objects::object_at(&mut after, "/status").insert(
                        "migrationState".into(),
                        json!({
                            "migrationUid": uid,
                            "sourceNode": source,
                            "targetNode": target,
                            "startTimestamp": p.stamp,
                            "mode": "PreCopy",
                            "completed": false,
                        }),
                    );
                    save(store, d.vmi, &i, &after);
                    next = "Running".into();
                }
                "Running"
                    if !p.faults.migrations_stuck()
                        && p.mem.timers.due(&uid, "migrate", t.migration, p.now) =>
                {
                    let mut after = i.clone();
                    complete_migration(&mut after, p);
                    save(store, d.vmi, &i, &after);
                    next = "Succeeded".into();
                }
                _ => {}
            },
            _ => next = "Failed".into(),
        }
        if next != phase {
            let mut after = vmim.clone();
            let status = objects::object_at(&mut after, "/status");
            status.insert("phase".into(), json!(next));
            let mut transitions = status
                .get("phaseTransitionTimestamps")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            transitions.push(json!({"phase": next, "phaseTransitionTimestamp": p.stamp}));
            status.insert(
                "phaseTransitionTimestamps".into(),
                Value::Array(transitions),
            );
            save(store, d.vmim, &vmim, &after);
        }
    }
}

/// What the target virt-handler does after a migration: the new node, the hot-plugged CPUs
/// and memory (or the memory hot-plug failure fault), SR-IOV interfaces attached.
fn complete_migration(vmi: &mut Value, p: &mut Pass<'_>) {
    let uid = objects::uid(vmi).to_string();
    let spec = vmi.get("spec").cloned().unwrap_or(json!({}));
    let target = text(vmi, "/status/migrationState/targetNode")
        .unwrap_or(NODES[0])
        .to_string();
    let agent = agent_connected(p, vmi);
    objects::object_at(vmi, "/metadata/labels")
        .insert("kubevirt.io/nodeName".into(), json!(target));
    let (s, c, th) = vmi::topology(spec.pointer("/domain/cpu"));
    let mut interfaces: Vec<Value> = array(vmi, "/status/interfaces").to_vec();
    for (idx, iface) in array(&spec, "/domain/devices/interfaces")
        .iter()
        .enumerate()
    {
        let name = text(iface, "/name");
        if iface.get("sriov").is_some()
            && text(iface, "/state") != Some("absent")
            && !interfaces.iter().any(|x| text(x, "/name") == name)
        {
            let net = name.and_then(|n| vmi::network_of(&spec, n));
            interfaces.push(interface_status(&uid, idx, iface, net, agent));
        }
    }
    let guest = text(&spec, "/domain/memory/guest").map(String::from);
    let requested = text(vmi, "/status/memory/guestRequested").map(String::from);
    let memory_change = guest.is_some() && guest != requested;
    let fail_memory = memory_change && p.faults.take_memory_hotplug_failure();
    let mut conditions = objects::conditions(vmi);
    let status = objects::object_at(vmi, "/status");
    status.insert("nodeName".into(), json!(target));
    status.insert(
        "currentCPUTopology".into(),
        json!({"sockets": s, "cores": c, "threads": th}),
    );
    status.insert("interfaces".into(), Value::Array(interfaces));
    if let Some(m) = status
        .get_mut("migrationState")
        .and_then(Value::as_object_mut)
    {
        m.insert("completed".into(), json!(true));
        m.insert("endTimestamp".into(), json!(p.stamp));
    }
    if let Some(g) = guest.filter(|_| memory_change && !fail_memory) {
        let memory = status.entry("memory").or_insert_with(|| json!({}));
        memory["guestRequested"] = json!(g);
        memory["guestCurrent"] = json!(g);
    }
    conditions.retain(|c| {
        !matches!(
            c.type_.as_str(),
            "HotVCPUChange" | "HotMemoryChange" | "MigrationRequired"
        )
    });
    if fail_memory {
        conditions.push(Condition::new(
            "HotMemoryChange",
            false,
            "Memory Hotplug Failed",
            "memory hotplug failed, the VM configuration is not supported",
        ));
    }
    objects::set_conditions(status, &conditions, &p.stamp);
}

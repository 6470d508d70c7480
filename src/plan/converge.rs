//! The live state a plan leads to, computed without a cluster: a pure model of what applying
//! the plan and KubeVirt's controllers do to the objects the planner reads (the VM as written,
//! with the fields KubeVirt's webhooks add; its instance rebooted or hot-plugged; PVCs grown;
//! unplugs finished; pauses taken).
//!
//! It serves the property "re-planning against the state a plan leads to yields no step that
//! acts", test fixtures ("a cluster where this fleet was applied"), and the benchmark's 10,000-VM
//! live snapshot. It is not the simulated cluster (`sim`), which runs controllers over time
//! behind a real API; this is one synchronous step, good enough for the planner's inputs.

use serde_json::{Value, json};

use super::shape::set_pointer as set;
use super::volumes::{self, ANNOTATION_DISK_SIZE};
use super::{Change, Class, Plan};
use crate::identity::{Kind, ObjectRef};
use crate::live::{LiveKind, LiveState, NsName, at, quantity_at, str_at};
use crate::quantity::Quantity;

/// KubeVirt's default `maxHotplugRatio`: maxSockets and maxGuest of an instance whose VM sets
/// none (`kubevirt-facts.md` §1, §2).
const MAX_HOTPLUG_RATIO: u32 = 4;
/// Memory hot-plug needs at least this much guest memory (facts §2).
const HOTPLUG_MIN_GUEST: u64 = 1 << 30;
/// …aligned to 2 MiB (facts §2).
const HOTPLUG_ALIGNMENT: u64 = 2 << 20;

/// The cluster configuration a test or benchmark starts from: KubeVirt with LiveUpdate and
/// LiveMigrate (facts §10) and one default storage class that can expand volumes.
pub fn base_cluster(storage_classes: &[&str]) -> LiveState {
    let mut live = LiveState::default();
    let _ = live.insert(
        LiveKind::KubeVirt,
        json!({"metadata": {"name": "kubevirt", "namespace": "kubevirt", "resourceVersion": "1"},
               "spec": {"workloadUpdateStrategy": {"workloadUpdateMethods": ["LiveMigrate"]},
                        "configuration": {"vmRolloutStrategy": "LiveUpdate"}},
               "status": {"observedKubeVirtVersion": "v1.9.0"}}),
    );
    for (i, sc) in storage_classes.iter().enumerate() {
        let mut annotations = serde_json::Map::new();
        if i == 0 {
            annotations.insert(
                "storageclass.kubernetes.io/is-default-class".into(),
                "true".into(),
            );
        }
        let _ = live.insert(
            LiveKind::StorageClass,
            json!({"metadata": {"name": sc, "annotations": annotations},
                   "provisioner": "sim.csi", "allowVolumeExpansion": true}),
        );
    }
    live
}

/// Apply `plan` to `live` the way Wukong's executor and KubeVirt would.
pub fn after(plan: &Plan, live: &LiveState) -> LiveState {
    let mut next = live.clone();
    let acting = |id: &ObjectRef, change: Change| {
        plan.steps
            .iter()
            .any(|s| &s.target == id && s.change == change && s.acts())
    };
    for step in plan.steps.iter().filter(|s| s.class == Class::Delete) {
        let id = &step.target;
        next.objects.remove(id);
        if id.kind == Kind::VirtualMachine {
            next.vmis.remove(&NsName::new(&id.namespace, &id.name));
        }
    }
    for (id, write) in &plan.writes {
        match id.kind {
            Kind::NetworkAttachmentDefinition => {
                let _ = next.insert(LiveKind::NetworkAttachmentDefinition, write.clone());
            }
            Kind::VirtualMachine => {
                let restarted = acting(id, Change::Restart) || acting(id, Change::Start);
                let disks: Vec<(String, Quantity)> = plan
                    .steps
                    .iter()
                    .filter(|s| &s.target == id && s.change == Change::Disk && s.acts())
                    .filter_map(|s| Some((s.item.clone()?, s.to.as_deref()?.parse().ok()?)))
                    .collect();
                converge_vm(&mut next, id, write, restarted, &disks);
            }
        }
    }
    next
}

fn revision_of(object: Option<&Value>) -> u64 {
    object
        .and_then(|o| str_at(o, &["metadata", "resourceVersion"]))
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn converge_vm(
    next: &mut LiveState,
    id: &ObjectRef,
    write: &Value,
    restarted: bool,
    grown: &[(String, Quantity)],
) {
    let old = next.objects.get(id).cloned();
    let mut vm = write.clone();
    set(
        &mut vm,
        "/metadata/resourceVersion",
        (revision_of(old.as_ref()) + 1).to_string().into(),
    );
    // What KubeVirt's mutating webhook writes into a new VM (facts §6), kept from then on.
    let firmware = old
        .as_ref()
        .and_then(|o| o.pointer("/spec/template/spec/domain/firmware"))
        .cloned()
        .unwrap_or_else(|| json!({"uuid": format!("uuid-{}-{}", id.namespace, id.name), "serial": format!("serial-{}", id.name)}));
    set(&mut vm, "/spec/template/spec/domain/firmware", firmware);
    set(&mut vm, "/spec/template/spec/architecture", "amd64".into());
    set(
        &mut vm,
        "/spec/template/spec/domain/machine",
        json!({"type": "q35"}),
    );
    // The API server records the apply under Wukong's field manager, before the webhook runs,
    // so what the webhook and controllers add below is nobody's (facts §6).
    set(
        &mut vm,
        "/metadata/managedFields",
        json!([{"manager": crate::identity::FIELD_MANAGER, "operation": "Apply",
                "apiVersion": "kubevirt.io/v1", "fieldsType": "FieldsV1",
                "fieldsV1": super::view::applied_fields(write)}]),
    );
    kubevirt_writes(&mut vm);
    // KubeVirt finishes unplugs and drops the absent interfaces from the VM.
    super::shape::without_absent_nics(&mut vm);

    // Disks: DataVolumes and PVCs are created once, then only grown.
    let volumes = vm
        .pointer("/spec/template/spec/volumes")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut access_rwx = true;
    for template in vm
        .pointer("/spec/dataVolumeTemplates")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
    {
        let Some(name) = str_at(&template, &["metadata", "name"]) else {
            continue;
        };
        let key = NsName::new(&id.namespace, name);
        let size = str_at(
            &template,
            &["spec", "storage", "resources", "requests", "storage"],
        )
        .unwrap_or("1Gi")
        .to_owned();
        let modes = at(&template, &["spec", "storage", "accessModes"])
            .cloned()
            .unwrap_or_else(|| json!(["ReadWriteMany"]));
        access_rwx &= modes
            .as_array()
            .is_some_and(|m| m.iter().any(|m| m == "ReadWriteMany"));
        if !next.data_volumes.contains_key(&key) {
            let mut dv = json!({"metadata": {"name": name, "namespace": id.namespace, "resourceVersion": "1"},
                                "spec": template.get("spec").cloned().unwrap_or(Value::Null),
                                "status": {"phase": "Succeeded", "claimName": name}});
            if let Some(labels) = template.pointer("/metadata/labels") {
                set(&mut dv, "/metadata/labels", labels.clone());
            }
            let _ = next.insert(LiveKind::DataVolume, dv);
        }
        if !next.pvcs.contains_key(&key) {
            let class = str_at(&template, &["spec", "storage", "storageClassName"])
                .map(str::to_owned)
                .or_else(|| next.storage_classes.keys().next().cloned());
            // CDI's PVC: the DataVolume's labels, controlled by the DataVolume (facts §8).
            let _ = next.insert(
                LiveKind::PersistentVolumeClaim,
                json!({"metadata": {"name": name, "namespace": id.namespace, "resourceVersion": "1",
                                    "labels": template.pointer("/metadata/labels").cloned().unwrap_or(Value::Null),
                                    "ownerReferences": [{"apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume",
                                                         "name": name, "uid": format!("uid-dv-{}-{name}", id.namespace),
                                                         "controller": true}]},
                       "spec": {"accessModes": modes, "storageClassName": class,
                                "resources": {"requests": {"storage": size}}},
                       "status": {"phase": "Bound", "accessModes": modes,
                                  "capacity": {"storage": size}}}),
            );
        }
    }
    for (disk, size) in grown {
        let Some(volume) = volumes
            .iter()
            .find(|v| v.get("name").and_then(Value::as_str) == Some(disk))
            .and_then(|v| str_at(v, &["dataVolume", "name"]))
        else {
            continue;
        };
        let vmi = next
            .vmis
            .get(&NsName::new(&id.namespace, &id.name))
            .cloned();
        if let Some(pvc) = next.pvcs.get_mut(&NsName::new(&id.namespace, volume)) {
            // The executor asks for the padded size (see `volumes`).
            let request = volumes::padded(*size, volumes::overhead(pvc, vmi.as_ref()));
            let s = size.to_string();
            set(
                pvc,
                "/spec/resources/requests/storage",
                request.to_string().into(),
            );
            set(pvc, "/status/capacity/storage", request.to_string().into());
            set(
                pvc,
                &format!(
                    "/metadata/annotations/{}",
                    ANNOTATION_DISK_SIZE.replace('/', "~1")
                ),
                s.into(),
            );
        }
    }

    // The instance.
    let key = NsName::new(&id.namespace, &id.name);
    let runs = str_at(&vm, &["spec", "runStrategy"]) != Some("Halted");
    let tspec = vm
        .pointer("/spec/template/spec")
        .cloned()
        .unwrap_or(Value::Null);
    let start_paused = str_at(&tspec, &["startStrategy"]) == Some("Paused");
    let mut conditions = Vec::new();
    if !runs {
        next.vmis.remove(&key);
    } else {
        let fresh = restarted || !next.vmis.contains_key(&key);
        let old_vmi = next.vmis.get(&key).cloned();
        let vmi = instance(
            &id.namespace,
            &id.name,
            &tspec,
            old_vmi.as_ref(),
            fresh,
            access_rwx,
            start_paused,
        );
        conditions = vmi
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        // KubeVirt marks a running VM RestartRequired for a new startStrategy (any
        // non-live template field); a restart clears it.
        let old_start_paused = old
            .as_ref()
            .and_then(|o| str_at(o, &["spec", "template", "spec", "startStrategy"]))
            == Some("Paused");
        let pending = old
            .as_ref()
            .is_some_and(|o| crate::live::condition_true(o, "RestartRequired"));
        if !fresh && (pending || old_start_paused != start_paused) {
            conditions.push(json!({"type": "RestartRequired", "status": "True",
                                   "message": "a non-live-updatable field was changed in the template spec"}));
        }
        let _ = next.insert(LiveKind::VirtualMachineInstance, vmi);
    }
    let paused = conditions
        .iter()
        .any(|c| c["type"] == "Paused" && c["status"] == "True");
    let printable = match (runs, paused) {
        (false, _) => "Stopped",
        (true, true) => "Paused",
        (true, false) => "Running",
    };
    set(
        &mut vm,
        "/status",
        json!({"printableStatus": printable, "ready": runs, "created": runs, "conditions": conditions}),
    );
    let _ = next.insert(LiveKind::VirtualMachine, vm);
}

/// What KubeVirt writes into every VM besides the fields above (`kubevirt-facts.md` §6): the
/// mutating webhook's Go re-serialisation (`domain.resources: {}`, `template.metadata`, the
/// PCI topology annotation on the template), the VM controller's finalizer and observed-API
/// annotations. The planner must not take any of it for drift.
fn kubevirt_writes(vm: &mut Value) {
    if vm.pointer("/spec/template/spec/domain/resources").is_none() {
        set(vm, "/spec/template/spec/domain/resources", json!({}));
    }
    set(
        vm,
        "/spec/template/metadata/annotations/kubevirt.io~1pci-topology-version",
        "v3".into(),
    );
    set(
        vm,
        "/metadata/finalizers",
        json!(["kubevirt.io/virtualMachineControllerFinalize"]),
    );
    for key in [
        "latest-observed-api-version",
        "storage-observed-api-version",
    ] {
        set(
            vm,
            &format!("/metadata/annotations/kubevirt.io~1{key}"),
            "v1".into(),
        );
    }
}

/// The instance of a VM: started afresh from the template, or the running one after the
/// plan's live changes.
fn instance(
    ns: &str,
    name: &str,
    tspec: &Value,
    old: Option<&Value>,
    fresh: bool,
    migratable: bool,
    start_paused: bool,
) -> Value {
    let topology = |k: &str| {
        tspec
            .pointer(&format!("/domain/cpu/{k}"))
            .and_then(Value::as_u64)
            .unwrap_or(1)
    };
    let (sockets, cores, threads) = (topology("sockets"), topology("cores"), topology("threads"));
    let guest = quantity_at(tspec, &["domain", "memory", "guest"]);
    let interfaces: Vec<Value> = tspec
        .pointer("/domain/devices/interfaces")
        .and_then(Value::as_array)
        .map(|ifaces| {
            ifaces
                .iter()
                .map(|i| json!({"name": i["name"], "mac": i.get("macAddress"), "infoSource": "domain, guest-agent, multus-status"}))
                .collect()
        })
        .unwrap_or_default();
    let keep = |pointer: &str| old.and_then(|o| o.pointer(pointer)).cloned();
    let max_sockets = if fresh {
        tspec
            .pointer("/domain/cpu/maxSockets")
            .cloned()
            .unwrap_or_else(|| json!(sockets * u64::from(MAX_HOTPLUG_RATIO)))
    } else {
        keep("/spec/domain/cpu/maxSockets").unwrap_or(Value::Null)
    };
    let max_guest = if fresh {
        tspec
            .pointer("/domain/memory/maxGuest")
            .and_then(Value::as_str)
            .map(|s| Value::String(s.to_owned()))
            .or_else(|| {
                let g = guest?.as_u64()?;
                (g >= HOTPLUG_MIN_GUEST && g % HOTPLUG_ALIGNMENT == 0).then(|| {
                    Value::String(
                        Quantity::from_bytes(g * u64::from(MAX_HOTPLUG_RATIO)).to_string(),
                    )
                })
            })
            .unwrap_or(Value::Null)
    } else {
        keep("/spec/domain/memory/maxGuest").unwrap_or(Value::Null)
    };
    let guest_s = guest.map(|g| g.to_string());
    let at_boot = if fresh {
        guest_s.clone().map(Value::String).unwrap_or(Value::Null)
    } else {
        keep("/status/memory/guestAtBoot").unwrap_or(Value::Null)
    };
    // The plan pauses a VM declared suspended (or it starts paused) and resumes the others.
    let paused = start_paused;
    // A running instance keeps its migratability; a new one gets it from its volumes.
    let kept_migratable = (!fresh)
        .then(|| crate::live::condition(old?, "LiveMigratable").cloned())
        .flatten();
    let mut conditions = vec![
        json!({"type": "Ready", "status": if paused { "False" } else { "True" }}),
        if let Some(c) = kept_migratable {
            c
        } else if migratable {
            json!({"type": "LiveMigratable", "status": "True"})
        } else {
            json!({"type": "LiveMigratable", "status": "False", "reason": "DisksNotLiveMigratable",
                   "message": "cannot migrate VMI: PVC is not shared, live migration requires that all PVCs must be shared (using ReadWriteMany access mode)"})
        },
    ];
    if paused {
        conditions.push(json!({"type": "Paused", "status": "True", "reason": "PausedByUser"}));
    }
    json!({
        "metadata": {"name": name, "namespace": ns, "resourceVersion": "1"},
        "spec": {"domain": {"cpu": {"sockets": sockets, "cores": cores, "threads": threads, "maxSockets": max_sockets},
                            "memory": {"guest": guest_s, "maxGuest": max_guest}}},
        "status": {"phase": "Running",
                   "currentCPUTopology": {"sockets": sockets, "cores": cores, "threads": threads},
                   "memory": {"guestAtBoot": at_boot, "guestRequested": guest_s, "guestCurrent": guest_s},
                   "interfaces": interfaces,
                   "conditions": conditions}
    })
}

//! The fleet as it runs (seed designs: status aggregation and query): per WukongSet how many
//! members exist, are ready and match the fleet, and the revisions they were written at; per VM
//! its power state and what its running instance reports — CPU, memory, disks, NICs — beside
//! what the fleet declares, and what is still to do (the plan's steps, a pending RestartRequired).
//!
//! Pure: the fleet, the live state and the plan in, one document out. `wukong status` prints it
//! and the daemon's `/status` serves it. Depends on [`crate::fleet`], [`crate::live`] (data
//! only) and [`crate::plan`]'s output type.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::fleet::Fleet;
use crate::identity::{ANNOTATION_REVISION, Kind, LABEL_SET, ObjectRef};
use crate::live::{self, LiveState, at, condition, condition_true, quantity_at, str_at};
use crate::plan::Plan;

/// The whole document.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FleetStatus {
    pub fleet: String,
    /// The revision of the fleet the status compares against.
    pub revision: String,
    /// The KubeVirt version the plan followed.
    pub kubevirt: String,
    pub sets: Vec<SetStatus>,
    pub vms: Vec<VmStatus>,
}

/// One WukongSet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SetStatus {
    pub namespace: String,
    pub name: String,
    /// Replicas the fleet declares.
    pub replicas: u32,
    /// Members present in the cluster.
    pub current: u32,
    /// Members KubeVirt reports ready.
    pub ready: u32,
    /// Members present with nothing left to do: they match the fleet.
    pub updated: u32,
    /// How many members were last written at each revision.
    pub revisions: BTreeMap<String, u32>,
}

/// One VM: declared by the fleet, or owned by it in the cluster (removed from Git, not pruned).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VmStatus {
    pub namespace: String,
    pub name: String,
    pub set: Option<String>,
    /// Declared by the fleet.
    pub desired: bool,
    /// Present in the cluster.
    pub exists: bool,
    /// KubeVirt's `printableStatus` (`Running`, `Paused`, `Stopped`, `Provisioning`, …).
    pub printable_status: Option<String>,
    /// KubeVirt's `status.ready`.
    pub ready: bool,
    /// It has a running instance: the `running` values below are what that instance reports.
    pub running: bool,
    /// The revision that last wrote the VM (its revision annotation).
    pub revision: Option<String>,
    pub cpu: Compared<u32>,
    pub memory: Compared<String>,
    pub disks: Vec<DiskStatus>,
    pub nics: Vec<NicStatus>,
    /// KubeVirt's RestartRequired message, when the VM has one.
    pub restart_required: Option<String>,
    /// The plan's steps for this VM: `change [class]`, with the item.
    pub pending: Vec<String>,
}

/// What the fleet declares beside what the running instance reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compared<T> {
    pub declared: Option<T>,
    pub running: Option<T>,
}

/// One disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DiskStatus {
    pub name: String,
    /// The size the fleet declares.
    pub declared: Option<String>,
    /// The PVC's `status.capacity`.
    pub volume: Option<String>,
    /// The capacity the running instance reports for it.
    pub instance: Option<String>,
}

/// One network interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NicStatus {
    pub name: String,
    pub declared: bool,
    /// In the running instance, attached to its domain.
    pub attached: bool,
    pub ip: Option<String>,
}

/// The status of `fleet` on `live`, with `plan` (computed from the same two) for what is left.
pub fn of(fleet: &Fleet, live: &LiveState, plan: &Plan) -> FleetStatus {
    let mut pending: BTreeMap<&ObjectRef, Vec<String>> = BTreeMap::new();
    for s in &plan.steps {
        let item = s
            .item
            .as_deref()
            .map(|i| format!(" {i}"))
            .unwrap_or_default();
        pending.entry(&s.target).or_default().push(format!(
            "{}{item} [{}]",
            s.change.as_str(),
            s.class.as_str()
        ));
    }
    let mut ids: BTreeMap<ObjectRef, ()> = fleet.vms.keys().map(|id| (id.clone(), ())).collect();
    for (id, object) in &live.objects {
        if id.kind == Kind::VirtualMachine && live::owned_by(object, &fleet.settings.name) {
            ids.insert(id.clone(), ());
        }
    }
    let vms: Vec<VmStatus> = ids
        .into_keys()
        .map(|id| {
            let mut v = vm(fleet, live, &id);
            v.pending = pending.remove(&id).unwrap_or_default();
            v
        })
        .collect();
    let mut sets: BTreeMap<(&str, &str), SetStatus> = fleet
        .sets
        .values()
        .map(|s| {
            (
                (s.namespace.as_str(), s.name.as_str()),
                SetStatus {
                    namespace: s.namespace.clone(),
                    name: s.name.clone(),
                    replicas: s.replicas,
                    current: 0,
                    ready: 0,
                    updated: 0,
                    revisions: BTreeMap::new(),
                },
            )
        })
        .collect();
    for v in vms.iter().filter(|v| v.exists) {
        let Some(set) = v.set.as_deref() else {
            continue;
        };
        let Some(s) = sets.get_mut(&(v.namespace.as_str(), set)) else {
            continue;
        };
        s.current += 1;
        s.ready += u32::from(v.ready);
        s.updated += u32::from(v.desired && v.pending.is_empty());
        if let Some(r) = &v.revision {
            *s.revisions.entry(r.clone()).or_default() += 1;
        }
    }
    FleetStatus {
        fleet: fleet.settings.name.clone(),
        revision: plan.revision.clone(),
        kubevirt: plan.kubevirt.clone(),
        sets: sets.into_values().collect(),
        vms,
    }
}

fn vm(fleet: &Fleet, live: &LiveState, id: &ObjectRef) -> VmStatus {
    let declared = fleet.vms.get(id);
    let object = live.objects.get(id);
    let vmi = live.vmi(&id.namespace, &id.name);
    let running = vmi.is_some_and(|i| str_at(i, &["status", "phase"]) == Some("Running"));
    let instance = vmi.filter(|_| running);
    let u = |v: &Value, path: &[&str]| at(v, path).and_then(Value::as_u64);
    let cpu = Compared {
        declared: declared.map(|d| d.spec.cpu),
        running: instance.and_then(|i| {
            let t = |k: &str| u(i, &["status", "currentCPUTopology", k]);
            let vcpus = t("sockets")? * t("cores").unwrap_or(1) * t("threads").unwrap_or(1);
            u32::try_from(vcpus).ok()
        }),
    };
    let memory = Compared {
        declared: declared.map(|d| d.spec.memory.to_string()),
        running: instance
            .and_then(|i| {
                quantity_at(i, &["status", "memory", "guestRequested"])
                    .or_else(|| quantity_at(i, &["status", "memory", "guestAtBoot"]))
            })
            .map(|q| q.to_string()),
    };
    let disks = disks(declared, object, live, instance, &id.namespace);
    let nics = nics(declared, object, instance);
    VmStatus {
        namespace: id.namespace.clone(),
        name: id.name.clone(),
        set: declared
            .and_then(|d| d.set.as_ref().map(|m| m.set.clone()))
            .or_else(|| {
                object
                    .and_then(|o| live::label(o, LABEL_SET))
                    .map(str::to_owned)
            }),
        desired: declared.is_some(),
        exists: object.is_some(),
        printable_status: object
            .and_then(|o| str_at(o, &["status", "printableStatus"]))
            .map(str::to_owned),
        ready: object
            .and_then(|o| at(o, &["status", "ready"]))
            .and_then(Value::as_bool)
            == Some(true),
        running,
        revision: object
            .and_then(|o| str_at(o, &["metadata", "annotations", ANNOTATION_REVISION]))
            .map(str::to_owned),
        cpu,
        memory,
        disks,
        nics,
        restart_required: object
            .filter(|o| condition_true(o, "RestartRequired"))
            .map(|o| {
                condition(o, "RestartRequired")
                    .and_then(|c| str_at(c, &["message"]))
                    .unwrap_or("RestartRequired")
                    .to_owned()
            }),
        pending: Vec::new(),
    }
}

/// The disks the fleet declares, then any other disk the live VM has.
fn disks(
    declared: Option<&crate::fleet::Vm>,
    object: Option<&Value>,
    live: &LiveState,
    instance: Option<&Value>,
    namespace: &str,
) -> Vec<DiskStatus> {
    // (disk name, volume name) of the live VM's DataVolume-backed disks.
    let live_volumes: Vec<(String, String)> = object
        .and_then(|o| at(o, &["spec", "template", "spec", "volumes"]))
        .and_then(Value::as_array)
        .map(|vols| {
            vols.iter()
                .filter_map(|v| {
                    let claim = str_at(v, &["dataVolume", "name"])
                        .or_else(|| str_at(v, &["persistentVolumeClaim", "claimName"]))?;
                    Some((str_at(v, &["name"])?.to_owned(), claim.to_owned()))
                })
                .collect()
        })
        .unwrap_or_default();
    let mut out: Vec<DiskStatus> = Vec::new();
    let mut push = |name: &str, size: Option<String>, volume: Option<&str>| {
        let capacity = volume
            .and_then(|v| live.pvc(namespace, v))
            .and_then(|p| quantity_at(p, &["status", "capacity", "storage"]))
            .map(|q| q.to_string());
        let in_instance = volume.and_then(|v| {
            instance?
                .pointer("/status/volumeStatus")?
                .as_array()?
                .iter()
                .find(|s| str_at(s, &["persistentVolumeClaimInfo", "claimName"]) == Some(v))
                .and_then(|s| quantity_at(s, &["persistentVolumeClaimInfo", "capacity", "storage"]))
                .map(|q| q.to_string())
        });
        out.push(DiskStatus {
            name: name.to_owned(),
            declared: size,
            volume: capacity,
            instance: in_instance,
        });
    };
    if let Some(d) = declared {
        for disk in &d.spec.disks {
            push(
                &disk.name,
                Some(disk.size.to_string()),
                Some(&disk.volume_name),
            );
        }
    }
    for (name, volume) in &live_volumes {
        if !declared.is_some_and(|d| d.spec.disks.iter().any(|k| &k.name == name)) {
            push(name, None, Some(volume));
        }
    }
    out
}

/// The interfaces the fleet declares, then any other the VM or its instance has.
fn nics(
    declared: Option<&crate::fleet::Vm>,
    object: Option<&Value>,
    instance: Option<&Value>,
) -> Vec<NicStatus> {
    let reported = |name: &str| {
        instance
            .and_then(|i| at(i, &["status", "interfaces"]))
            .and_then(Value::as_array)
            .and_then(|l| l.iter().find(|n| str_at(n, &["name"]) == Some(name)))
    };
    let status = |name: &str, declared: bool| {
        let r = reported(name);
        NicStatus {
            name: name.to_owned(),
            declared,
            attached: r
                .and_then(|n| str_at(n, &["infoSource"]))
                .is_some_and(|s| s.split(',').any(|p| p.trim() == "domain")),
            ip: r.and_then(|n| str_at(n, &["ipAddress"])).map(str::to_owned),
        }
    };
    let mut out: Vec<NicStatus> = declared
        .map(|d| {
            d.spec
                .networks
                .iter()
                .map(|n| status(&n.name, true))
                .collect()
        })
        .unwrap_or_default();
    let live_names = object
        .and_then(|o| {
            at(
                o,
                &[
                    "spec",
                    "template",
                    "spec",
                    "domain",
                    "devices",
                    "interfaces",
                ],
            )
        })
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|i| str_at(i, &["name"]));
    for name in live_names {
        if !out.iter().any(|n| n.name == name) {
            out.push(status(name, false));
        }
    }
    out
}

/// The document as a terminal table: the sets, then the VMs.
pub fn text(status: &FleetStatus) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Fleet {} at revision {}, {}\n",
        status.fleet, status.revision, status.kubevirt
    );
    if !status.sets.is_empty() {
        let rows: Vec<[String; 6]> = status
            .sets
            .iter()
            .map(|s| {
                [
                    format!("{}/{}", s.namespace, s.name),
                    format!("{}/{}", s.ready, s.replicas),
                    s.updated.to_string(),
                    s.current.to_string(),
                    s.replicas.to_string(),
                    s.revisions
                        .iter()
                        .map(|(r, n)| format!("{r}×{n}"))
                        .collect::<Vec<_>>()
                        .join(" "),
                ]
            })
            .collect();
        table(
            &mut out,
            &[
                "SET",
                "READY",
                "UPDATED",
                "CURRENT",
                "REPLICAS",
                "REVISIONS",
            ],
            &rows,
        );
        out.push('\n');
    }
    // A running VM shows what its instance reports (and the fleet's value where they differ);
    // any other shows what the fleet declares, which it starts with.
    let show = |running: bool, c: &Compared<String>| match (&c.running, &c.declared) {
        (_, Some(d)) if !running => d.clone(),
        (Some(r), Some(d)) if r == d => r.clone(),
        (r, d) => format!(
            "{} (fleet {})",
            r.as_deref().unwrap_or("-"),
            d.as_deref().unwrap_or("-")
        ),
    };
    let rows: Vec<[String; 8]> = status
        .vms
        .iter()
        .map(|v| {
            let cpu = Compared {
                declared: v.cpu.declared.map(|c| c.to_string()),
                running: v.cpu.running.map(|c| c.to_string()),
            };
            let disks = v
                .disks
                .iter()
                .map(|d| {
                    let have = d.instance.as_ref().or(d.volume.as_ref());
                    match (have, &d.declared) {
                        (None, Some(w)) if !v.exists => format!("{}={w}", d.name),
                        (Some(h), Some(w)) if h == w => format!("{}={h}", d.name),
                        (h, w) => format!(
                            "{}={} (fleet {})",
                            d.name,
                            h.map_or("-", String::as_str),
                            w.as_deref().unwrap_or("-")
                        ),
                    }
                })
                .collect::<Vec<_>>()
                .join(" ");
            let nics = v
                .nics
                .iter()
                .map(|n| {
                    let mark = match (n.declared, n.attached || !v.running) {
                        (true, true) => "",
                        (true, false) => " (not attached)",
                        (false, _) => " (not in the fleet)",
                    };
                    format!("{}{mark}", n.name)
                })
                .collect::<Vec<_>>()
                .join(",");
            let mut pending = v.pending.join("; ");
            if let Some(r) = &v.restart_required
                && v.pending.is_empty()
            {
                pending = format!("RestartRequired: {r}");
            }
            if !v.desired {
                pending = format!("not in the fleet {pending}").trim().to_owned();
            }
            [
                format!("{}/{}", v.namespace, v.name),
                v.printable_status
                    .clone()
                    .unwrap_or_else(|| "absent".into()),
                if v.ready { "yes" } else { "no" }.into(),
                show(v.running, &cpu),
                show(v.running, &v.memory),
                disks,
                nics,
                if pending.is_empty() {
                    "-".into()
                } else {
                    pending
                },
            ]
        })
        .collect();
    table(
        &mut out,
        &[
            "VM", "STATUS", "READY", "VCPUS", "MEMORY", "DISKS", "NICS", "PENDING",
        ],
        &rows,
    );
    out
}

/// Columns padded to their widest cell (by characters).
fn table<const N: usize>(out: &mut String, head: &[&str; N], rows: &[[String; N]]) {
    let mut widths: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                l.push_str(cell);
            } else {
                l.push_str(cell);
                l.push_str(&" ".repeat(w - cell.chars().count() + 2));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(head.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::SourceFile;
    use serde_json::json;

    fn fleet(yaml: &str) -> Fleet {
        crate::fleet::load(&[SourceFile {
            path: "fleet.yaml".into(),
            text: yaml.into(),
        }])
        .unwrap()
    }

    fn live_vm(name: &str, set: Option<&str>, ready: bool, owned: bool) -> Value {
        let mut labels = json!({});
        if owned {
            labels["app.kubernetes.io/managed-by"] = json!("wukong");
            labels["wukong.novasphere.dev/fleet"] = json!("default");
        }
        if let Some(set) = set {
            labels["wukong.novasphere.dev/set"] = json!(set);
        }
        json!({
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
            "metadata": {"name": name, "namespace": "default", "labels": labels,
                         "annotations": {"wukong.novasphere.dev/revision": "abc"}},
            "status": {"printableStatus": if ready {"Running"} else {"Starting"}, "ready": ready}
        })
    }

    #[test]
    fn sets_aggregate_their_members_and_strays_show_as_undesired() {
        let fleet = fleet(
            "apiVersion: vm.novasphere.dev/v1alpha1\nkind: WukongSet\nmetadata: {name: web}\n\
             spec:\n  replicas: 3\n  template:\n    spec: {cpu: 1, memory: 1Gi}\n",
        );
        let mut live = LiveState::default();
        for vm in [
            live_vm("web-0", Some("web"), true, true),
            live_vm("web-1", Some("web"), false, true),
            live_vm("web-3", Some("web"), true, true),
            live_vm("unmanaged", None, true, false),
        ] {
            live.insert(crate::live::LiveKind::VirtualMachine, vm)
                .unwrap();
        }
        let templates = crate::render::Templates::builtin().unwrap();
        let rendered = crate::render::render(&fleet, &templates, "abc").unwrap();
        let plan = crate::plan::plan(&fleet, &rendered, &live, "abc");
        let FleetStatus { vms, sets, .. } = of(&fleet, &live, &plan);
        let names: Vec<_> = vms
            .iter()
            .map(|v| (v.name.as_str(), v.desired, v.exists, v.ready))
            .collect();
        assert_eq!(
            names,
            [
                ("web-0", true, true, true),
                ("web-1", true, true, false),
                ("web-2", true, false, false),
                ("web-3", false, true, true),
            ]
        );
        assert_eq!(vms[0].revision.as_deref(), Some("abc"));
        assert_eq!(vms[0].printable_status.as_deref(), Some("Running"));
        assert_eq!(
            sets,
            [SetStatus {
                namespace: "default".into(),
                name: "web".into(),
                replicas: 3,
                current: 3,
                ready: 2,
                updated: 0,
                revisions: [("abc".to_owned(), 3)].into(),
            }]
        );
    }

    #[test]
    fn a_fleet_that_runs_as_declared_is_updated_and_reports_its_instances() {
        let fleet = fleet(
            "apiVersion: vm.novasphere.dev/v1alpha1\nkind: WukongSet\nmetadata: {name: web}\n\
             spec:\n  replicas: 2\n  template:\n    spec:\n      cpu: 2\n      memory: 2Gi\n      \
             disks: [{name: data, size: 10Gi}]\n",
        );
        let templates = crate::render::Templates::builtin().unwrap();
        let rendered = crate::render::render(&fleet, &templates, "abc").unwrap();
        let base = crate::plan::converge::base_cluster(&["fast"]);
        let first = crate::plan::plan(&fleet, &rendered, &base, "abc");
        let live = crate::plan::converge::after(&first, &base);
        let plan = crate::plan::plan(&fleet, &rendered, &live, "abc");
        let status = of(&fleet, &live, &plan);
        assert_eq!(status.sets[0].updated, 2, "{status:#?}");
        assert_eq!(status.sets[0].revisions, [("abc".to_owned(), 2)].into());
        let vm = &status.vms[0];
        assert!(vm.running && vm.pending.is_empty());
        assert_eq!(
            vm.cpu,
            Compared {
                declared: Some(2),
                running: Some(2)
            }
        );
        assert_eq!(vm.memory.running.as_deref(), Some("2Gi"));
        assert_eq!(vm.disks[0].volume.as_deref(), Some("10Gi"));
        assert!(
            vm.nics.iter().all(|n| n.declared && n.attached),
            "{:?}",
            vm.nics
        );
        let text = text(&status);
        assert!(
            text.contains("default/web  2/2    2        2        2         abc×2"),
            "{text}"
        );
    }
}

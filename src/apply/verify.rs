//! Wait conditions: pure predicates over live objects that say whether a step's change has
//! happened on the running VM, using the status fields that prove it (`kubevirt-facts.md` §6).
//! The executor polls them under a timeout; they never do I/O themselves.

use serde_json::Value;

use crate::live::{at, condition, condition_true, quantity_at, str_at};
use crate::quantity::Quantity;

/// What a predicate sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The change is visible on the running VM.
    Done,
    /// Not yet; says what is still missing (reported on timeout).
    Pending(String),
    /// It will not happen without something else: KubeVirt asks for a restart, or reports a
    /// failure.
    Failed(String),
}

impl Verdict {
    fn pending(why: impl Into<String>) -> Verdict {
        Verdict::Pending(why.into())
    }
}

/// The message of a RestartRequired that KubeVirt sets because a field that cannot change live
/// differs (`syncRestartRequired`, facts §6).
const NON_LIVE_CHANGE: &str = crate::plan::cluster::NON_LIVE_CHANGE;

/// Which change a RestartRequired message can be about.
#[derive(Debug, Clone, Copy)]
enum About {
    /// The CPU handler's messages (kv:`pkg/virt-controller/watch/vm/vm.go` L622-673, facts §1).
    Cpu,
    /// The memory handler's, all starting `memory` (vm.go L3452-3519, facts §2).
    Memory,
    /// NICs have no handler message: only the non-live difference (facts §3).
    Nic,
}

impl About {
    fn matches(self, message: &str) -> bool {
        message == NON_LIVE_CHANGE
            || match self {
                About::Cpu => message.contains("CPU"),
                About::Memory => message.starts_with("memory"),
                About::Nic => false,
            }
    }
}

/// A change KubeVirt turned into `RestartRequired` instead of applying it live: the condition
/// is there once KubeVirt has reconciled the VM as written (`status.desiredGeneration` caught
/// up with `metadata.generation`, facts §6 "How a tool should decide", 1.), with a message
/// about this change. Since v1.8 the memory handler re-sets its RestartRequired on every
/// reconcile without stopping a CPU hot-plug, so another change's message is not this one's
/// failure.
fn restart_required(vm: Option<&Value>, about: About) -> Option<Verdict> {
    let vm = vm?;
    if !condition_true(vm, "RestartRequired") {
        return None;
    }
    let generation = at(vm, &["metadata", "generation"]).and_then(Value::as_u64);
    let desired = at(vm, &["status", "desiredGeneration"]).and_then(Value::as_u64);
    if let (Some(g), Some(d)) = (generation, desired)
        && d < g
    {
        return None;
    }
    let msg = condition(vm, "RestartRequired")
        .and_then(|c| c.get("message"))
        .and_then(Value::as_str)
        .unwrap_or("RestartRequired");
    about
        .matches(msg)
        .then(|| Verdict::Failed(format!("KubeVirt requires a restart: {msg}")))
}

/// CPU hot-plug: `status.currentCPUTopology.sockets` reached `sockets` and `HotVCPUChange` is gone.
pub fn cpu(vm: Option<&Value>, vmi: Option<&Value>, sockets: u32) -> Verdict {
    if let Some(v) = restart_required(vm, About::Cpu) {
        return v;
    }
    let Some(vmi) = vmi else {
        return Verdict::pending("no instance");
    };
    let current = at(vmi, &["status", "currentCPUTopology", "sockets"]).and_then(Value::as_u64);
    if current != Some(u64::from(sockets)) {
        return Verdict::pending(format!(
            "currentCPUTopology.sockets is {}, want {sockets}",
            current.map_or("unset".into(), |c| c.to_string())
        ));
    }
    if condition_true(vmi, "HotVCPUChange") {
        return Verdict::pending("HotVCPUChange is still True");
    }
    Verdict::Done
}

/// Memory hot-plug: `status.memory.guestRequested` equals `guest` and `HotMemoryChange` is
/// gone; `HotMemoryChange=False` is KubeVirt's report of a failed hot-plug.
pub fn memory(vm: Option<&Value>, vmi: Option<&Value>, guest: Quantity) -> Verdict {
    if let Some(vmi) = vmi
        && let Some(c) = condition(vmi, "HotMemoryChange")
        && c.get("status").and_then(Value::as_str) == Some("False")
    {
        let why = c
            .get("message")
            .or_else(|| c.get("reason"))
            .and_then(Value::as_str)
            .unwrap_or("memory hot-plug failed");
        return Verdict::Failed(format!("memory hot-plug failed: {why}"));
    }
    if let Some(v) = restart_required(vm, About::Memory) {
        return v;
    }
    let Some(vmi) = vmi else {
        return Verdict::pending("no instance");
    };
    let requested = quantity_at(vmi, &["status", "memory", "guestRequested"]);
    if requested != Some(guest) {
        return Verdict::pending(format!(
            "status.memory.guestRequested is {}, want {guest}",
            requested.map_or("unset".into(), |q| q.to_string())
        ));
    }
    if condition_true(vmi, "HotMemoryChange") {
        return Verdict::pending("HotMemoryChange is still True");
    }
    Verdict::Done
}

fn interface<'a>(vmi: &'a Value, name: &str) -> Option<&'a Value> {
    at(vmi, &["status", "interfaces"])?
        .as_array()?
        .iter()
        .find(|i| i.get("name").and_then(Value::as_str) == Some(name))
}

/// NIC hot-plug: the interface is in the instance's status with `infoSource` naming `domain`
/// (attached to the libvirt domain).
pub fn nic_attached(vm: Option<&Value>, vmi: Option<&Value>, name: &str) -> Verdict {
    let Some(vmi) = vmi else {
        return Verdict::pending("no instance");
    };
    match interface(vmi, name) {
        Some(i)
            if str_at(i, &["infoSource"])
                .is_some_and(|s| s.split(',').any(|p| p.trim() == "domain")) =>
        {
            Verdict::Done
        }
        Some(i) => Verdict::pending(format!(
            "interface {name} reported by {}",
            str_at(i, &["infoSource"]).unwrap_or("nothing yet")
        )),
        None => restart_required(vm, About::Nic).unwrap_or_else(|| {
            Verdict::pending(format!("interface {name} not in the instance yet"))
        }),
    }
}

/// The `uid` of the instance's latest migration (`status.migrationState.migrationUid`).
pub fn migration_uid(vmi: Option<&Value>) -> Option<String> {
    str_at(vmi?, &["status", "migrationState", "migrationUid"]).map(str::to_owned)
}

/// NAD swap: KubeVirt copies the new `networkName` into the instance's spec at once, but only
/// a migration moves the VM onto the new attachment (facts §3 "NAD swap"): done once
/// `MigrationRequired` is gone and a migration newer than `before` (the instance's latest
/// migration when the VM was written) has completed without failing. The instance's
/// `status.interfaces` has no NAD field, so "interface present" proves nothing here.
pub fn nad_swapped(
    vm: Option<&Value>,
    vmi: Option<&Value>,
    name: &str,
    nad: &str,
    before: Option<&str>,
) -> Verdict {
    if let Some(v) = restart_required(vm, About::Nic) {
        return v;
    }
    let Some(vmi) = vmi else {
        return Verdict::pending("no instance");
    };
    let in_spec = at(vmi, &["spec", "networks"])
        .and_then(Value::as_array)
        .and_then(|nets| {
            nets.iter()
                .find(|n| n.get("name").and_then(Value::as_str) == Some(name))
        })
        .and_then(|n| str_at(n, &["multus", "networkName"]));
    if in_spec != Some(nad) {
        return Verdict::pending(format!(
            "the instance's network {name} still names {}",
            in_spec.unwrap_or("nothing")
        ));
    }
    if condition_true(vmi, "MigrationRequired") {
        return Verdict::pending("MigrationRequired is True: the migration has not run yet");
    }
    let state = at(vmi, &["status", "migrationState"]);
    let uid = state.and_then(|s| str_at(s, &["migrationUid"]));
    if uid.is_none() || uid == before {
        return Verdict::pending("no migration since the VM was written");
    }
    let flag = |k: &str| state.and_then(|s| s.get(k)).and_then(Value::as_bool) == Some(true);
    if flag("failed") {
        return Verdict::Failed(format!("the migration that moves {name} to {nad} failed"));
    }
    if !flag("completed") {
        return Verdict::pending("the migration is still running");
    }
    Verdict::Done
}

/// NIC unplug: gone from the instance's status and from the VM's spec (KubeVirt drops the
/// `absent` entry once the unplug is done).
pub fn nic_detached(vm: Option<&Value>, vmi: Option<&Value>, name: &str) -> Verdict {
    if vmi.and_then(|v| interface(v, name)).is_some() {
        return Verdict::pending(format!("interface {name} still in the instance"));
    }
    let in_spec = vm
        .and_then(|v| v.pointer("/spec/template/spec/domain/devices/interfaces"))
        .and_then(Value::as_array)
        .is_some_and(|l| {
            l.iter()
                .any(|i| i.get("name").and_then(Value::as_str) == Some(name))
        });
    if in_spec {
        return Verdict::pending(format!("interface {name} still in the VM spec"));
    }
    Verdict::Done
}

/// Disk growth: the PVC's `status.capacity` reached `size`, and, on a running VM, the
/// instance's `volumeStatus[].persistentVolumeClaimInfo.capacity` too.
pub fn disk(pvc: Option<&Value>, vmi: Option<&Value>, claim: &str, size: Quantity) -> Verdict {
    let Some(pvc) = pvc else {
        return Verdict::Failed(format!("PVC {claim} is gone"));
    };
    let have = quantity_at(pvc, &["status", "capacity", "storage"]);
    if have.is_none_or(|h| h < size) {
        return Verdict::pending(format!(
            "PVC {claim} capacity is {}, want {size}",
            have.map_or("unset".into(), |h| h.to_string())
        ));
    }
    let Some(vmi) = vmi else {
        return Verdict::Done;
    };
    let seen = at(vmi, &["status", "volumeStatus"])
        .and_then(Value::as_array)
        .and_then(|l| {
            l.iter()
                .find(|v| str_at(v, &["persistentVolumeClaimInfo", "claimName"]) == Some(claim))
        })
        .and_then(|v| quantity_at(v, &["persistentVolumeClaimInfo", "capacity", "storage"]));
    match seen {
        Some(s) if s >= size => Verdict::Done,
        other => Verdict::pending(format!(
            "the instance sees {} for {claim}, want {size}",
            other.map_or("no capacity".into(), |s| s.to_string())
        )),
    }
}

/// Pause or unpause: the instance's `Paused` condition.
pub fn paused(vmi: Option<&Value>, want: bool) -> Verdict {
    let Some(vmi) = vmi else {
        return Verdict::pending("no instance");
    };
    if condition_true(vmi, "Paused") == want {
        Verdict::Done
    } else {
        Verdict::pending(if want {
            "not paused yet"
        } else {
            "still paused"
        })
    }
}

/// Restart: a new instance (another uid) is Running and the VM's RestartRequired is cleared.
pub fn restarted(vm: Option<&Value>, vmi: Option<&Value>, old_uid: Option<&str>) -> Verdict {
    let Some(vmi) = vmi else {
        return Verdict::pending("no instance yet");
    };
    let uid = str_at(vmi, &["metadata", "uid"]);
    if uid.is_some() && uid == old_uid {
        return Verdict::pending("the old instance is still there");
    }
    if str_at(vmi, &["status", "phase"]) != Some("Running") {
        return Verdict::pending(format!(
            "the new instance is {}",
            str_at(vmi, &["status", "phase"]).unwrap_or("without a phase")
        ));
    }
    if vm.is_some_and(|v| condition_true(v, "RestartRequired")) {
        return Verdict::pending("RestartRequired is still set");
    }
    Verdict::Done
}

/// Start or stop: the VM's printableStatus.
pub fn power(vm: Option<&Value>, running: bool) -> Verdict {
    let status = vm.and_then(|v| str_at(v, &["status", "printableStatus"]));
    match (running, status) {
        (true, Some("Running" | "Paused")) | (false, Some("Stopped")) => Verdict::Done,
        (_, s) => Verdict::pending(format!("printableStatus is {}", s.unwrap_or("unset"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn q(s: &str) -> Quantity {
        s.parse().unwrap()
    }

    #[test]
    fn cpu_waits_for_the_topology_and_reports_restart_required() {
        let vmi = json!({"status": {"currentCPUTopology": {"sockets": 2},
                                    "conditions": [{"type": "HotVCPUChange", "status": "True"}]}});
        assert!(matches!(cpu(None, Some(&vmi), 4), Verdict::Pending(_)));
        let vmi = json!({"status": {"currentCPUTopology": {"sockets": 4},
                                    "conditions": [{"type": "HotVCPUChange", "status": "True"}]}});
        assert_eq!(
            cpu(None, Some(&vmi), 4),
            Verdict::Pending("HotVCPUChange is still True".into())
        );
        let vmi = json!({"status": {"currentCPUTopology": {"sockets": 4}}});
        assert_eq!(cpu(None, Some(&vmi), 4), Verdict::Done);
        let vm = json!({"status": {"conditions": [{"type": "RestartRequired", "status": "True",
            "message": "Reduction of CPU socket count requires a restart"}]}});
        assert_eq!(
            cpu(Some(&vm), Some(&vmi), 1),
            Verdict::Failed(
                "KubeVirt requires a restart: Reduction of CPU socket count requires a restart"
                    .into()
            )
        );
    }

    #[test]
    fn only_this_changes_restart_required_counts_once_kubevirt_saw_the_write() {
        let vmi = json!({"status": {"currentCPUTopology": {"sockets": 2}}});
        let vm = |message: &str, generation: u64, desired: u64| {
            json!({"metadata": {"generation": generation},
                   "status": {"desiredGeneration": desired,
                              "conditions": [{"type": "RestartRequired", "status": "True", "message": message}]}})
        };
        // The memory handler's RestartRequired (re-set on every reconcile since v1.8) does not
        // stop a CPU hot-plug.
        let memory =
            "memory updated in template spec to a value lower than what the VM started with";
        assert!(matches!(
            cpu(Some(&vm(memory, 3, 3)), Some(&vmi), 4),
            Verdict::Pending(_)
        ));
        assert!(matches!(
            memory_verdict(Some(&vm(memory, 3, 3)), Some(&vmi)),
            Verdict::Failed(_)
        ));
        // A non-live difference stops everything, once KubeVirt reconciled the write.
        let non_live = crate::plan::cluster::NON_LIVE_CHANGE;
        assert!(matches!(
            cpu(Some(&vm(non_live, 3, 3)), Some(&vmi), 4),
            Verdict::Failed(_)
        ));
        assert!(matches!(
            cpu(Some(&vm(non_live, 4, 3)), Some(&vmi), 4),
            Verdict::Pending(_)
        ));
    }

    fn memory_verdict(vm: Option<&Value>, vmi: Option<&Value>) -> Verdict {
        memory(vm, vmi, "8Gi".parse().unwrap())
    }

    #[test]
    fn a_nad_swap_is_done_only_after_a_new_migration_completed() {
        let vmi = |nad: &str, migration: Value, conditions: Value| {
            json!({"spec": {"networks": [{"name": "front", "multus": {"networkName": nad}}]},
                   "status": {"migrationState": migration, "conditions": conditions,
                              "interfaces": [{"name": "front", "infoSource": "domain, multus-status"}]}})
        };
        let done = json!({"migrationUid": "m2", "completed": true});
        let check = |v: &Value| nad_swapped(None, Some(v), "front", "new", Some("m1"));
        // The interface is there all along: that proves nothing.
        assert!(matches!(
            check(&vmi("old", done.clone(), json!([]))),
            Verdict::Pending(_)
        ));
        assert!(matches!(
            check(&vmi(
                "new",
                done.clone(),
                json!([{"type": "MigrationRequired", "status": "True"}])
            )),
            Verdict::Pending(_)
        ));
        assert!(matches!(
            check(&vmi(
                "new",
                json!({"migrationUid": "m1", "completed": true}),
                json!([])
            )),
            Verdict::Pending(_)
        ));
        assert!(matches!(
            check(&vmi("new", json!({"migrationUid": "m2"}), json!([]))),
            Verdict::Pending(_)
        ));
        assert!(matches!(
            check(&vmi(
                "new",
                json!({"migrationUid": "m2", "completed": true, "failed": true}),
                json!([])
            )),
            Verdict::Failed(_)
        ));
        assert_eq!(check(&vmi("new", done, json!([]))), Verdict::Done);
    }

    #[test]
    fn memory_failure_is_reported() {
        let vmi = json!({"status": {"memory": {"guestRequested": "4Gi"},
            "conditions": [{"type": "HotMemoryChange", "status": "False", "reason": "Memory Hotplug Failed"}]}});
        assert_eq!(
            memory(None, Some(&vmi), q("8Gi")),
            Verdict::Failed("memory hot-plug failed: Memory Hotplug Failed".into())
        );
        let vmi = json!({"status": {"memory": {"guestRequested": "8192Mi"}}});
        assert_eq!(memory(None, Some(&vmi), q("8Gi")), Verdict::Done);
    }

    #[test]
    fn nics_need_the_domain_and_unplugs_need_both_objects_clean() {
        let vmi =
            json!({"status": {"interfaces": [{"name": "net1", "infoSource": "multus-status"}]}});
        assert!(matches!(
            nic_attached(None, Some(&vmi), "net1"),
            Verdict::Pending(_)
        ));
        let vmi = json!({"status": {"interfaces": [{"name": "net1", "infoSource": "domain, guest-agent, multus-status"}]}});
        assert_eq!(nic_attached(None, Some(&vmi), "net1"), Verdict::Done);
        let vm = json!({"spec": {"template": {"spec": {"domain": {"devices": {"interfaces": [{"name": "net1", "state": "absent"}]}}}}}});
        assert!(matches!(
            nic_detached(Some(&vm), None, "net1"),
            Verdict::Pending(_)
        ));
        assert!(matches!(
            nic_detached(None, Some(&vmi), "net1"),
            Verdict::Pending(_)
        ));
        assert_eq!(nic_detached(None, None, "net1"), Verdict::Done);
    }

    #[test]
    fn disks_need_the_pvc_and_the_instance_to_see_the_size() {
        let pvc = json!({"status": {"capacity": {"storage": "20Gi"}}});
        assert_eq!(disk(Some(&pvc), None, "d", q("20Gi")), Verdict::Done);
        let vmi = json!({"status": {"volumeStatus": [{"name": "data", "persistentVolumeClaimInfo":
            {"claimName": "d", "capacity": {"storage": "10Gi"}}}]}});
        assert!(matches!(
            disk(Some(&pvc), Some(&vmi), "d", q("20Gi")),
            Verdict::Pending(_)
        ));
        assert!(matches!(
            disk(None, None, "d", q("20Gi")),
            Verdict::Failed(_)
        ));
    }

    #[test]
    fn restarts_need_a_new_running_instance() {
        let old = json!({"metadata": {"uid": "a"}, "status": {"phase": "Running"}});
        assert!(matches!(
            restarted(None, Some(&old), Some("a")),
            Verdict::Pending(_)
        ));
        let new = json!({"metadata": {"uid": "b"}, "status": {"phase": "Running"}});
        assert_eq!(restarted(None, Some(&new), Some("a")), Verdict::Done);
        assert_eq!(paused(Some(&new), false), Verdict::Done);
        assert_eq!(
            power(
                Some(&json!({"status": {"printableStatus": "Stopped"}})),
                false
            ),
            Verdict::Done
        );
    }
}

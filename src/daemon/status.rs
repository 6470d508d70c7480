//! The daemon's state as `/status` shows it: the revisions, the last sync, every VM of the fleet
//! and every set with aggregated counts, the last plan and apply report, recent errors.
//!
//! Plain serde data in a [`SharedStatus`] (`Arc<RwLock<Status>>`) that the reconcile loop writes
//! and the HTTP layer reads. [`observe`] derives the VM and set states from the fleet and the live
//! state, purely. Depends on [`crate::fleet`] and [`crate::live`] (data only).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::fleet::Fleet;
use crate::identity::{Kind, LABEL_SET};
use crate::live::{self, LiveState};

/// How many recent errors `/status` keeps: enough to see a pattern, bounded so a flapping remote
/// cannot grow the daemon's memory.
pub const MAX_ERRORS: usize = 20;

/// The status shared between the reconcile loop and the HTTP server.
pub type SharedStatus = Arc<RwLock<Status>>;

/// A fresh, empty shared status (not ready).
pub fn shared() -> SharedStatus {
    Arc::new(RwLock::new(Status::default()))
}

/// Everything `/status` reports.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// The first sync attempt has finished (`/readyz` answers 200 from then on).
    pub ready: bool,
    /// The revision most recently fetched (possibly rejected).
    pub revision: Option<String>,
    /// The revision in force: the last one that validated and rendered.
    pub last_good_revision: Option<String>,
    /// Whether this replica holds the leader-election Lease (and so may write); `None` when
    /// leader election is off.
    pub leader: Option<bool>,
    pub last_sync: Option<SyncRecord>,
    /// The reconcile running now, if one is.
    pub reconciling: Option<Reconciling>,
    /// The steps being carried out now (started, not finished), with what each waits for.
    pub in_progress: Vec<StepInProgress>,
    /// The fleet's VMs (desired or live), by namespace and name.
    pub vms: Vec<VmState>,
    /// The fleet's sets with aggregated counts.
    pub sets: Vec<SetState>,
    /// The last plan, as `wukong plan -o json` prints it.
    pub last_plan: Option<Value>,
    /// The last apply report.
    pub last_apply: Option<Value>,
    /// The most recent errors, oldest first, at most [`MAX_ERRORS`].
    pub errors: Vec<ErrorRecord>,
}

/// One finished reconcile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncRecord {
    pub revision: Option<String>,
    /// End time, RFC 3339.
    pub at: String,
    /// `success`, `failed` or `rejected` (see [`super::metrics::ReconcileResult`]).
    pub result: String,
    pub duration_seconds: f64,
}

/// A reconcile under way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reconciling {
    pub revision: String,
    /// Start time, RFC 3339.
    pub started_at: String,
    /// A newer revision is waiting: this one stops waiting on its steps and ends.
    pub superseded_by: Option<String>,
}

/// A step started and not finished.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepInProgress {
    /// `vms/namespace/name` or `network-attachment-definitions/namespace/name`.
    pub object: String,
    pub change: String,
    pub class: String,
    /// The disk or interface, if the step is about one.
    pub item: Option<String>,
    /// Start time, RFC 3339.
    pub started_at: String,
    /// What the step still waits to see on the VM, as last reported.
    pub waiting_for: Option<String>,
}

/// One error, with the stage that raised it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorRecord {
    /// RFC 3339.
    pub at: String,
    /// `git`, `validate`, `live`, `plan`, `apply`.
    pub stage: String,
    pub revision: Option<String>,
    pub message: String,
}

/// The state of one VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VmState {
    pub namespace: String,
    pub name: String,
    /// The WukongSet it belongs to.
    pub set: Option<String>,
    /// Declared by the fleet in force.
    pub desired: bool,
    /// Present in the cluster.
    pub exists: bool,
    /// KubeVirt's `status.printableStatus` (`Running`, `Stopped`, `Paused`, …).
    pub printable_status: Option<String>,
    /// KubeVirt's `status.ready`.
    pub ready: bool,
    /// The Git revision that last changed it (its revision annotation).
    pub revision: Option<String>,
}

/// The state of one WukongSet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SetState {
    pub namespace: String,
    pub name: String,
    /// Replicas the fleet declares.
    pub replicas: u32,
    /// Members present in the cluster.
    pub current: u32,
    /// Members that are ready.
    pub ready: u32,
}

impl Status {
    /// Record an error, dropping the oldest beyond [`MAX_ERRORS`].
    pub fn push_error(&mut self, error: ErrorRecord) {
        self.errors.push(error);
        if self.errors.len() > MAX_ERRORS {
            let excess = self.errors.len() - MAX_ERRORS;
            self.errors.drain(..excess);
        }
    }
}

/// The VM and set states of `fleet` given `live`: every VM the fleet declares, and every live VM
/// the fleet owns (a VM removed from Git but not pruned shows with `desired: false`).
pub fn observe(fleet: &Fleet, live: &LiveState) -> (Vec<VmState>, Vec<SetState>) {
    let mut vms: BTreeMap<(String, String), VmState> = BTreeMap::new();
    for vm in fleet.vms.values() {
        vms.insert(
            (vm.namespace.clone(), vm.name.clone()),
            VmState {
                namespace: vm.namespace.clone(),
                name: vm.name.clone(),
                set: vm.set.as_ref().map(|m| m.set.clone()),
                desired: true,
                exists: false,
                printable_status: None,
                ready: false,
                revision: None,
            },
        );
    }
    for (id, object) in &live.objects {
        if id.kind != Kind::VirtualMachine {
            continue;
        }
        let key = (id.namespace.clone(), id.name.clone());
        if !vms.contains_key(&key) && !live::owned_by(object, &fleet.settings.name) {
            continue;
        }
        let state = vms.entry(key).or_insert_with(|| VmState {
            namespace: id.namespace.clone(),
            name: id.name.clone(),
            set: live::label(object, LABEL_SET).map(str::to_owned),
            desired: false,
            exists: false,
            printable_status: None,
            ready: false,
            revision: None,
        });
        state.exists = true;
        state.printable_status =
            live::str_at(object, &["status", "printableStatus"]).map(str::to_owned);
        state.ready = live::at(object, &["status", "ready"]).and_then(Value::as_bool) == Some(true);
        state.revision = live::str_at(
            object,
            &[
                "metadata",
                "annotations",
                crate::identity::ANNOTATION_REVISION,
            ],
        )
        .map(str::to_owned);
    }
    let vms: Vec<VmState> = vms.into_values().collect();
    // Existing and ready members, by set: one pass over the VMs, not one per set.
    let mut counts: BTreeMap<(&str, &str), (u32, u32)> = BTreeMap::new();
    for vm in vms.iter().filter(|vm| vm.exists) {
        if let Some(set) = &vm.set {
            let (c, r) = counts
                .entry((vm.namespace.as_str(), set.as_str()))
                .or_default();
            *c += 1;
            *r += u32::from(vm.ready);
        }
    }
    let sets = fleet
        .sets
        .values()
        .map(|set| {
            let (current, ready) = counts
                .get(&(set.namespace.as_str(), set.name.as_str()))
                .copied()
                .unwrap_or_default();
            SetState {
                namespace: set.namespace.clone(),
                name: set.name.clone(),
                replicas: set.replicas,
                current,
                ready,
            }
        })
        .collect();
    (vms, sets)
}

/// The current time in RFC 3339 (UTC, seconds).
pub fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .map_or_else(|_| jiff::Timestamp::now().to_string(), |t| t.to_string())
}

/// The current time as Unix seconds.
pub fn now_unix() -> f64 {
    jiff::Timestamp::now().as_millisecond() as f64 / 1000.0
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
        let (vms, sets) = observe(&fleet, &live);
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
            [SetState {
                namespace: "default".into(),
                name: "web".into(),
                replicas: 3,
                current: 3,
                ready: 2
            }]
        );
    }

    #[test]
    fn errors_are_bounded_and_the_status_serialises_in_camel_case() {
        let mut status = Status::default();
        for i in 0..(MAX_ERRORS + 5) {
            status.push_error(ErrorRecord {
                at: now_rfc3339(),
                stage: "git".into(),
                revision: None,
                message: format!("error {i}"),
            });
        }
        assert_eq!(status.errors.len(), MAX_ERRORS);
        assert_eq!(status.errors[0].message, "error 5");
        let json = serde_json::to_value(&status).unwrap();
        assert!(json.get("lastGoodRevision").is_some(), "{json}");
        assert!(json.get("lastPlan").is_some(), "{json}");
        let at = &status.errors[0].at;
        assert!(at.ends_with('Z') && at.len() == 20, "{at}");
    }
}

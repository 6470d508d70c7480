//! Incremental planning, for a daemon that plans the same fleet again and again against live
//! state that mostly does not change (issue #14).
//!
//! [`super::plan`] is two parts: each VM on its own ([`Context::member`]), then what spans
//! VMs ([`Context::assemble`]). A [`Planner`] keeps every VM's part between calls, with the
//! live objects it read, and recomputes a part only when one of those objects changed — or
//! when anything every VM reads changed (storage classes, the KubeVirt CR, namespaces,
//! network attachments), or the fleet did. The assembly runs every time the live state
//! changed at all (it is cheap, and it is where VMs the fleet does not declare — deletes,
//! network garbage — are found); with no change at all, the last plan is the plan.
//!
//! Why that gives exactly [`super::plan`]'s result: both call the same `assemble` on a map of
//! members; a member is a pure function of the fleet, the rendered manifests, the cluster-wide
//! objects above and the VM's own objects ([`reads`]: its VM and instance, and the PVCs and
//! DataVolumes of every volume its desired or live VM names). Holding the fleet fixed, a member
//! whose objects did not change is recomputed to the same value, so keeping it is the same as
//! recomputing it. The tests check this against the full plan after random changes, and the
//! daemon compares the two now and then at run time.
//!
//! Pure: no I/O, no clock. Depends on [`super`] and [`crate::live`]'s data types.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_json::Value;

use super::{Context, Member, Plan};
use crate::fleet::Fleet;
use crate::identity::{Kind, ObjectRef};
use crate::live::{LiveKind, LiveState, NsName, str_at};
use crate::render::Rendered;

/// A live object, as a watch names it.
pub type LiveKey = (LiveKind, NsName);

/// What a call to [`Planner::plan`] did, for logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// VMs whose part was computed again.
    pub replanned: usize,
    /// VMs in the plan.
    pub vms: usize,
    /// Nothing changed: the last plan was returned as it was.
    pub reused: bool,
}

/// Every VM's part of the last plan, with what it read.
#[derive(Debug, Default)]
pub struct Planner {
    members: BTreeMap<ObjectRef, Member>,
    /// The live objects each member read.
    reads: BTreeMap<ObjectRef, Vec<LiveKey>>,
    /// The members that read each live object.
    readers: BTreeMap<LiveKey, BTreeSet<ObjectRef>>,
    /// The last plan, unless the fleet changed since.
    last: Option<Arc<Plan>>,
}

/// Kinds every VM's part may read: a change of any of them re-plans every VM.
fn cluster_wide(kind: LiveKind) -> bool {
    matches!(
        kind,
        LiveKind::StorageClass
            | LiveKind::KubeVirt
            | LiveKind::Namespace
            | LiveKind::NetworkAttachmentDefinition
    )
}

impl Planner {
    /// Forget everything: the fleet (or the state planned against) is new.
    pub fn forget(&mut self) {
        *self = Planner::default();
    }

    /// The plan of `fleet` against `live`, where only the objects in `changed` differ from the
    /// `live` of the last call with the same fleet (after [`Planner::forget`], or on the first
    /// call, everything is planned). Equal to `super::plan(fleet, desired, live, revision)`.
    pub fn plan(
        &mut self,
        fleet: &Fleet,
        desired: &[Rendered],
        live: &LiveState,
        revision: &str,
        changed: &BTreeSet<LiveKey>,
    ) -> (Arc<Plan>, Stats) {
        let vms = fleet.vms.len();
        if let Some(last) = &self.last
            && changed.is_empty()
            && last.revision == revision
        {
            return (
                Arc::clone(last),
                Stats {
                    replanned: 0,
                    vms,
                    reused: true,
                },
            );
        }
        let ctx = Context::new(fleet, desired, live);
        let everything = self.last.is_none() || changed.iter().any(|(k, _)| cluster_wide(*k));
        let dirty: BTreeSet<ObjectRef> = if everything {
            self.members.clear();
            self.reads.clear();
            self.readers.clear();
            fleet.vms.keys().cloned().collect()
        } else {
            changed
                .iter()
                .filter_map(|key| self.readers.get(key))
                .flatten()
                .cloned()
                .collect()
        };
        for id in &dirty {
            self.unindex(id);
            match ctx.member(id) {
                Some(m) => {
                    let keys = reads(fleet, id, ctx.desired(id), live);
                    for key in &keys {
                        self.readers
                            .entry(key.clone())
                            .or_default()
                            .insert(id.clone());
                    }
                    self.reads.insert(id.clone(), keys);
                    self.members.insert(id.clone(), m);
                }
                None => {
                    self.members.remove(id);
                }
            }
        }
        let plan = Arc::new(ctx.assemble(revision, &self.members));
        self.last = Some(Arc::clone(&plan));
        (
            plan,
            Stats {
                replanned: dirty.len(),
                vms,
                reused: false,
            },
        )
    }

    fn unindex(&mut self, id: &ObjectRef) {
        for key in self.reads.remove(id).unwrap_or_default() {
            if let Some(readers) = self.readers.get_mut(&key) {
                readers.remove(id);
                if readers.is_empty() {
                    self.readers.remove(&key);
                }
            }
        }
    }
}

/// The live objects the part of VM `id` reads besides the cluster-wide ones: its VM and
/// instance, and the PVC and DataVolume of every volume named by its disks in the fleet, its
/// desired manifest or its live VM (a superset of what [`super::vm`] and the volume checks
/// look up).
pub fn reads(
    fleet: &Fleet,
    id: &ObjectRef,
    desired: Option<&Value>,
    live: &LiveState,
) -> Vec<LiveKey> {
    let ns = &id.namespace;
    let own = NsName::new(ns.as_str(), id.name.as_str());
    let mut keys = vec![
        (LiveKind::VirtualMachine, own.clone()),
        (LiveKind::VirtualMachineInstance, own),
    ];
    debug_assert_eq!(id.kind, Kind::VirtualMachine);
    let mut volumes: BTreeSet<&str> = BTreeSet::new();
    if let Some(v) = fleet.vms.get(id) {
        volumes.extend(v.spec.disks.iter().map(|d| d.volume_name.as_str()));
    }
    for manifest in desired.into_iter().chain(live.objects.get(id)) {
        volume_names(manifest, &mut volumes);
    }
    for v in volumes {
        keys.push((LiveKind::PersistentVolumeClaim, NsName::new(ns.as_str(), v)));
        keys.push((LiveKind::DataVolume, NsName::new(ns.as_str(), v)));
    }
    keys
}

/// Every claim or DataVolume a VirtualMachine names: its `dataVolumeTemplates` and its
/// volumes' `dataVolume.name` and `persistentVolumeClaim.claimName`.
fn volume_names<'a>(vm: &'a Value, out: &mut BTreeSet<&'a str>) {
    let list = |pointer: &str| {
        vm.pointer(pointer)
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
    };
    for t in list("/spec/dataVolumeTemplates") {
        out.extend(str_at(t, &["metadata", "name"]));
    }
    for v in list("/spec/template/spec/volumes") {
        out.extend(str_at(v, &["dataVolume", "name"]));
        out.extend(str_at(v, &["persistentVolumeClaim", "claimName"]));
    }
}

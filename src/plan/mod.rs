//! The plan (design §5): a pure, deterministic function from the desired objects, the live
//! state and the fleet's settings to an ordered list of steps. No I/O, no clock: the same inputs
//! give the same plan, byte for byte, so plans are snapshot-tested.
//!
//! [`shape`] reads VMs into comparable parts, [`cluster`] holds the live pre-checks, [`vm`]
//! classifies one VM's changes, [`output`] prints plans. This module pairs desired and live
//! objects by identity, handles sets (rollout batches, scale-down), pruning and NADs, and
//! orders everything. It depends on `fleet`, `render`'s output type and `live`'s data, never
//! on a client.

pub mod cluster;
pub mod converge;
pub mod dry_run;
pub mod incremental;
pub mod output;
pub mod shape;
pub mod view;
pub mod vm;
pub mod volumes;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::fleet::{Fleet, SetStrategy};
use crate::identity::{ANNOTATION_REVISION, Kind, LABEL_INDEX, LABEL_SET, ObjectRef};
use crate::live::{LiveState, label, owned_by, str_at};
use crate::render::Rendered;

/// What a step changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Change {
    Create,
    Cpu,
    Memory,
    Disk,
    NicAttach,
    NicDetach,
    /// An existing interface's binding, MAC or network changes.
    NicChange,
    /// Anything else in the VM: labels and annotations (live), or other template fields
    /// such as cloud-init data (restart).
    Update,
    Suspend,
    Resume,
    Start,
    Stop,
    Restart,
    Delete,
    NadCreate,
    NadUpdate,
    NadDelete,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Create => "create",
            Change::Cpu => "cpu",
            Change::Memory => "memory",
            Change::Disk => "disk",
            Change::NicAttach => "nic-attach",
            Change::NicDetach => "nic-detach",
            Change::NicChange => "nic-change",
            Change::Update => "update",
            Change::Suspend => "suspend",
            Change::Resume => "resume",
            Change::Start => "start",
            Change::Stop => "stop",
            Change::Restart => "restart",
            Change::Delete => "delete",
            Change::NadCreate => "nad-create",
            Change::NadUpdate => "nad-update",
            Change::NadDelete => "nad-delete",
        }
    }
}

/// How a change will happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    Create,
    /// Applied to the running VM without restarting it.
    Live,
    /// Applied by the VM's one restart in this plan.
    Restart,
    /// Never applied: it would lose data or break the VM's primary network.
    Refused,
    /// Cannot happen now: it needs a restart the fleet does not allow, or something the
    /// cluster lacks (a namespace, a storage class, a network attachment, a feature gate).
    /// The reason says which.
    Blocked,
    Delete,
}

impl Class {
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Create => "create",
            Class::Live => "live",
            Class::Restart => "restart",
            Class::Refused => "refused",
            Class::Blocked => "blocked",
            Class::Delete => "delete",
        }
    }
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    /// The VM (or NetworkAttachmentDefinition) the step acts on.
    pub target: ObjectRef,
    pub change: Change,
    pub class: Class,
    /// The disk or interface the step is about.
    pub item: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub reason: String,
    /// Rollout batch within a WukongSet (restarts respect maxUnavailable).
    pub batch: Option<u32>,
}

impl Step {
    fn new(target: &ObjectRef, change: Change, class: Class, reason: impl Into<String>) -> Step {
        Step {
            target: target.clone(),
            change,
            class,
            item: None,
            from: None,
            to: None,
            reason: reason.into(),
            batch: None,
        }
    }

    fn item(mut self, item: impl Into<String>) -> Step {
        self.item = Some(item.into());
        self
    }

    fn values(mut self, from: Option<String>, to: Option<String>) -> Step {
        self.from = from;
        self.to = to;
        self
    }

    /// Whether carrying out this step touches the cluster.
    pub fn acts(&self) -> bool {
        !matches!(self.class, Class::Refused | Class::Blocked)
    }
}

/// Step counts by class. `restart` counts VMs restarted (one restart carries all of a VM's
/// restart-class changes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub create: usize,
    pub live: usize,
    pub restart: usize,
    pub refused: usize,
    pub blocked: usize,
    pub delete: usize,
}

impl Summary {
    pub fn of(steps: &[Step]) -> Summary {
        let mut s = Summary::default();
        for step in steps {
            match step.class {
                Class::Create => s.create += 1,
                Class::Live => s.live += 1,
                Class::Restart if step.change == Change::Restart => s.restart += 1,
                Class::Restart => {}
                Class::Refused => s.refused += 1,
                Class::Blocked => s.blocked += 1,
                Class::Delete => s.delete += 1,
            }
        }
        s
    }
}

/// A computed plan. [`output::saved`] is its file form.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub fleet: String,
    pub revision: String,
    /// The KubeVirt version whose rules the plan follows, as the plan states it (reported by
    /// the cluster, or assumed and why).
    pub kubevirt: String,
    pub steps: Vec<Step>,
    /// The objects to write, exactly (blocked and refused changes already taken out): what
    /// the executor applies.
    pub writes: BTreeMap<ObjectRef, Value>,
    /// The live objects the plan changes, normalised (for diffs).
    pub before: BTreeMap<ObjectRef, Value>,
    /// What the API server said it would store for the objects the plan changes (a
    /// server-side dry run, [`dry_run`]), as Wukong judges it: the other side of the diffs.
    /// Empty for a plan made offline.
    pub after: BTreeMap<ObjectRef, Value>,
    /// `resourceVersion`s of the live objects the plan was computed from, by `kind/ns/name`:
    /// a saved plan is stale once any of them changed.
    pub basis: BTreeMap<String, String>,
    /// Things worth knowing that are not steps (VMs not pruned, assumptions made).
    pub notes: Vec<String>,
    /// The VMs in the plan that the fleet allows to restart: where the executor may fall back
    /// to a restart when KubeVirt turns a live change into `RestartRequired`.
    pub restartable: BTreeSet<ObjectRef>,
    /// The fleet's `maxParallel`: how many VMs the executor changes at once.
    pub max_parallel: u32,
    /// Whether deleting a VM deletes its disks too (the fleet's `pruneDisks`).
    pub prune_disks: bool,
    /// How many members of each set (by `namespace/name`) may be down at once: its
    /// `maxUnavailable`, or all of them for `Recreate`. The executor holds every restart of a
    /// member to it, including a restart it falls back to.
    pub max_unavailable: BTreeMap<String, u32>,
}

impl Plan {
    pub fn summary(&self) -> Summary {
        Summary::of(&self.steps)
    }

    /// Whether applying the plan would change anything.
    pub fn has_changes(&self) -> bool {
        self.steps.iter().any(Step::acts)
    }
}

/// Compute the plan that takes `live` to the fleet's `desired` objects.
///
/// Two parts: each VM of the fleet on its own ([`Context::member`], which reads only that VM's
/// live objects and the cluster-wide ones), then what spans VMs ([`Context::assemble`]: network
/// attachments, rollout batches, order, deletes, network garbage). [`incremental`] keeps the
/// first part between daemon cycles and recomputes it only for VMs whose inputs changed; both
/// share the second, so they give the same plan.
pub fn plan(fleet: &Fleet, desired: &[Rendered], live: &LiveState, revision: &str) -> Plan {
    let ctx = Context::new(fleet, desired, live);
    let members: BTreeMap<ObjectRef, Member> = fleet
        .vms
        .keys()
        .filter_map(|id| Some((id.clone(), ctx.member(id)?)))
        .collect();
    ctx.assemble(revision, &members)
}

/// One VM's part of a plan: its steps (before rollout batches are assigned), what to write,
/// and the live objects' versions it was computed from (`kind/ns/name` → `resourceVersion`).
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub plan: vm::VmPlan,
    pub basis: Vec<(String, String)>,
}

/// What every VM's plan reads besides its own objects: read once per plan.
pub struct Context<'a> {
    fleet: &'a Fleet,
    live: &'a LiveState,
    desired: BTreeMap<&'a ObjectRef, &'a Value>,
    kv: cluster::KubeVirtConfig,
    available: cluster::Availability<'a>,
}

impl<'a> Context<'a> {
    pub fn new(fleet: &'a Fleet, desired: &'a [Rendered], live: &'a LiveState) -> Context<'a> {
        let desired: BTreeMap<&ObjectRef, &Value> =
            desired.iter().map(|r| (&r.id, &r.manifest)).collect();
        let available =
            cluster::Availability::new(live, desired.keys().copied(), &fleet.settings.namespaces);
        Context {
            fleet,
            live,
            desired,
            kv: cluster::KubeVirtConfig::of(live),
            available,
        }
    }

    /// The desired manifest of `id`, if the fleet renders one.
    pub fn desired(&self, id: &ObjectRef) -> Option<&'a Value> {
        self.desired.get(id).copied()
    }

    /// The part of the plan of the fleet's VM `id` (`None` when it is not a VM of the fleet
    /// or has no rendered manifest).
    pub fn member(&self, id: &ObjectRef) -> Option<Member> {
        let (fleet, live) = (self.fleet, self.live);
        let fvm = fleet.vms.get(id)?;
        let manifest = self.desired(id)?;
        let mut basis = Vec::new();
        let live_vm = live.objects.get(id);
        if let Some(l) = live_vm {
            push_basis(&mut basis, "VirtualMachine", l);
            if !owned_by(l, &fleet.settings.name) {
                let plan = vm::VmPlan::refused(Step::new(
                    id,
                    Change::Create,
                    Class::Refused,
                    format!(
                        "{id} exists and is not managed by fleet `{}`; Wukong never touches objects it does not own",
                        fleet.settings.name
                    ),
                ));
                return Some(Member { plan, basis });
            }
        }
        if live_vm.is_none()
            && let Some(step) = creation_held(fleet, id, fvm, live, &self.available)
        {
            return Some(Member {
                plan: vm::VmPlan::refused(step),
                basis,
            });
        }
        let plan = vm::plan_vm(&vm::VmInput {
            id,
            vm: fvm,
            desired: manifest,
            live_vm,
            live,
            kv: &self.kv,
            fleet: &fleet.settings.name,
            available: &self.available,
        });
        for disk in &fvm.spec.disks {
            if let Some(pvc) = live.pvc(&fvm.namespace, &disk.volume_name) {
                push_basis(&mut basis, "PersistentVolumeClaim", pvc);
            }
        }
        Some(Member { plan, basis })
    }

    /// The whole plan from every VM's part (`members`, by VM): network attachments first,
    /// then the VMs (creations first; within a set, restarts in batches of `maxUnavailable`),
    /// deletes and network garbage last.
    pub fn assemble(&self, revision: &str, members: &BTreeMap<ObjectRef, Member>) -> Plan {
        let (fleet, live) = (self.fleet, self.live);
        let mut plan = Plan {
            fleet: fleet.settings.name.clone(),
            revision: revision.to_owned(),
            kubevirt: self.kv.describe(),
            steps: Vec::new(),
            writes: BTreeMap::new(),
            before: BTreeMap::new(),
            after: BTreeMap::new(),
            basis: BTreeMap::new(),
            notes: Vec::new(),
            restartable: BTreeSet::new(),
            max_parallel: fleet.settings.max_parallel,
            prune_disks: fleet.settings.prune_disks,
            max_unavailable: fleet
                .sets
                .iter()
                .map(|(id, set)| (format!("{}/{}", id.namespace, id.name), per_batch(set)))
                .collect(),
        };
        if !self.kv.known {
            plan.notes.push(
                "the KubeVirt CR could not be read: KubeVirt's defaults are assumed (LiveUpdate, no workload update methods), so CPU and memory changes are planned as restarts".into(),
            );
        }

        // NADs first: VMs reference them.
        let nad_steps = plan_nads(fleet, &self.desired, live, &self.available, &mut plan);

        for m in members.values() {
            for (key, version) in &m.basis {
                plan.basis.insert(key.clone(), version.clone());
            }
        }
        let batches = batches(fleet, members);

        // Creations, then changes, VM by VM; within a set, batch by batch.
        let mut ordered: Vec<(&ObjectRef, &Member)> = members.iter().collect();
        ordered.sort_by_key(|(id, m)| {
            let created = m
                .plan
                .steps
                .first()
                .is_some_and(|s| s.change == Change::Create);
            (!created, batches.get(*id).copied(), *id)
        });
        plan.steps.extend(nad_steps.creates);
        for (id, m) in ordered {
            let batch = batches.get(id).copied();
            plan.steps.extend(m.plan.steps.iter().map(|s| {
                let mut s = s.clone();
                if batch.is_some() {
                    s.batch = batch;
                }
                s
            }));
            if let Some(w) = &m.plan.write {
                let mut w = w.clone();
                set_revision(&mut w, revision);
                plan.writes.insert(id.clone(), w);
            }
            if let Some(b) = &m.plan.before {
                plan.before.insert(id.clone(), b.clone());
            }
        }

        // Deletes: scale-downs (highest index first), then pruned VMs; NAD garbage last.
        let deleted = plan_deletes(fleet, &self.desired, live, &mut plan);
        plan_nad_gc(fleet, &self.desired, live, &deleted, &mut plan);
        plan.restartable = plan
            .steps
            .iter()
            .filter(|s| {
                fleet
                    .vms
                    .get(&s.target)
                    .is_some_and(|v| v.spec.allow_restart)
            })
            .map(|s| s.target.clone())
            .collect();
        plan
    }
}

/// Why a new VM cannot be created: a volume its disks would use exists and is not its own
/// (refused: Wukong never adopts a volume it does not own), or the cluster lacks its namespace,
/// a storage class or a network attachment (blocked: it would fail or never start).
fn creation_held(
    fleet: &Fleet,
    id: &ObjectRef,
    vm: &crate::fleet::Vm,
    live: &LiveState,
    available: &cluster::Availability<'_>,
) -> Option<Step> {
    let ns = &vm.namespace;
    let refused: Vec<String> = vm
        .spec
        .disks
        .iter()
        .filter_map(|d| {
            volumes::volume_refusal(live, &fleet.settings.name, ns, &d.volume_name, &vm.name)
                .map(|why| format!("disk `{}`: {why}", d.name))
        })
        .collect();
    if !refused.is_empty() {
        return Some(Step::new(
            id,
            Change::Create,
            Class::Refused,
            format!(
                "{}; Wukong never adopts or changes a volume it does not own",
                refused.join("; ")
            ),
        ));
    }
    let mut missing: Vec<String> = available.namespace(ns).into_iter().collect();
    for d in &vm.spec.disks {
        if let Some(why) = available.storage_class(d.storage_class.as_deref()) {
            missing.push(format!("disk `{}`: {why}", d.name));
        }
    }
    for n in &vm.spec.networks {
        if let crate::fleet::Attachment::Existing(name) = &n.attachment
            && let Some(why) = available.network(ns, name)
        {
            missing.push(format!("network `{}`: {why}", n.name));
        }
    }
    (!missing.is_empty()).then(|| {
        Step::new(
            id,
            Change::Create,
            Class::Blocked,
            format!("cannot be created now: {}", missing.join("; ")),
        )
    })
}

fn push_basis(basis: &mut Vec<(String, String)>, kind: &str, object: &Value) {
    if let (Some(ns), Some(name), Some(rv)) = (
        str_at(object, &["metadata", "namespace"]),
        str_at(object, &["metadata", "name"]),
        str_at(object, &["metadata", "resourceVersion"]),
    ) {
        basis.push((format!("{kind}/{ns}/{name}"), rv.to_owned()));
    }
}

fn record_basis(basis: &mut BTreeMap<String, String>, kind: &str, object: &Value) {
    if let (Some(ns), Some(name), Some(rv)) = (
        str_at(object, &["metadata", "namespace"]),
        str_at(object, &["metadata", "name"]),
        str_at(object, &["metadata", "resourceVersion"]),
    ) {
        basis.insert(format!("{kind}/{ns}/{name}"), rv.to_owned());
    }
}

fn set_revision(object: &mut Value, revision: &str) {
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        let annotations = meta
            .entry("annotations")
            .or_insert_with(|| Value::Object(Default::default()));
        if let Some(a) = annotations.as_object_mut() {
            a.insert(ANNOTATION_REVISION.into(), revision.into());
        }
    }
}

/// How many members of a set restart at once.
fn per_batch(set: &crate::fleet::Set) -> u32 {
    match set.strategy {
        SetStrategy::RollingUpdate {
            max_unavailable, ..
        } => max_unavailable.max(1),
        SetStrategy::Recreate => u32::MAX,
    }
}

/// Restarts within a set go in batches of `maxUnavailable` (all at once for Recreate): the
/// batch of every restarting set member, by VM.
fn batches<'m>(
    fleet: &Fleet,
    members: &'m BTreeMap<ObjectRef, Member>,
) -> BTreeMap<&'m ObjectRef, u32> {
    // Restarting members of each set, by index.
    let mut restarting: BTreeMap<(&str, &str), Vec<(u32, &ObjectRef)>> = BTreeMap::new();
    for (id, m) in members {
        if !m.plan.restarts() {
            continue;
        }
        let Some(v) = fleet.vms.get(id) else {
            continue;
        };
        if let Some(member) = &v.set {
            restarting
                .entry((v.namespace.as_str(), member.set.as_str()))
                .or_default()
                .push((member.index, id));
        }
    }
    let mut out = BTreeMap::new();
    for (set_id, set) in &fleet.sets {
        let Some(members) = restarting.get_mut(&(set_id.namespace.as_str(), set_id.name.as_str()))
        else {
            continue;
        };
        let per_batch = per_batch(set);
        members.sort();
        for (position, (_, id)) in members.iter().enumerate() {
            let batch = u32::try_from(position).unwrap_or(u32::MAX) / per_batch;
            out.insert(*id, batch);
        }
    }
    out
}

struct NadSteps {
    creates: Vec<Step>,
}

fn nad_config(nad: &Value) -> Option<&str> {
    str_at(nad, &["spec", "config"])
}

fn plan_nads(
    fleet: &Fleet,
    desired: &BTreeMap<&ObjectRef, &Value>,
    live: &LiveState,
    available: &cluster::Availability<'_>,
    plan: &mut Plan,
) -> NadSteps {
    let mut creates = Vec::new();
    for (id, manifest) in desired
        .iter()
        .filter(|(id, _)| id.kind == Kind::NetworkAttachmentDefinition)
    {
        match live.objects.get(*id) {
            None if available.namespace(&id.namespace).is_some() => {
                let why = available.namespace(&id.namespace).unwrap_or_default();
                creates.push(Step::new(
                    id,
                    Change::NadCreate,
                    Class::Blocked,
                    format!("cannot be created now: {why}"),
                ));
            }
            None => {
                creates.push(Step::new(
                    id,
                    Change::NadCreate,
                    Class::Create,
                    "generated network attachment; created before the VMs that use it",
                ));
                plan.writes.insert((*id).clone(), (*manifest).clone());
            }
            Some(l) if !owned_by(l, &fleet.settings.name) => {
                record_basis(&mut plan.basis, "NetworkAttachmentDefinition", l);
                if nad_config(l) == nad_config(manifest) {
                    plan.notes.push(format!(
                        "{id} exists unmanaged with the same configuration; it is used as is"
                    ));
                } else {
                    creates.push(Step::new(
                        id,
                        Change::NadCreate,
                        Class::Refused,
                        format!(
                            "{id} exists with a different configuration and is not managed by fleet `{}`",
                            fleet.settings.name
                        ),
                    ));
                }
            }
            Some(l) => {
                record_basis(&mut plan.basis, "NetworkAttachmentDefinition", l);
                // Only what the fleet declares: other writers' labels and annotations are not
                // drift (`view`).
                let same = {
                    let declared = shape::normalize(manifest);
                    declared == shape::normalize(&view::live_view(&declared, l))
                };
                if !same {
                    creates.push(
                        Step::new(
                            id,
                            Change::NadUpdate,
                            Class::Live,
                            "running VMs keep their current attachment until they restart",
                        )
                        .values(
                            nad_config(l).map(str::to_owned),
                            nad_config(manifest).map(str::to_owned),
                        ),
                    );
                    plan.writes.insert((*id).clone(), (*manifest).clone());
                }
            }
        }
    }
    NadSteps { creates }
}

/// Owned VMs that the fleet no longer declares. Returns the VMs deleted by the plan.
fn plan_deletes(
    fleet: &Fleet,
    desired: &BTreeMap<&ObjectRef, &Value>,
    live: &LiveState,
    plan: &mut Plan,
) -> BTreeSet<ObjectRef> {
    let name = &fleet.settings.name;
    let disks_note = |vm: &Value| {
        let volumes: Vec<&str> = vm
            .pointer("/spec/dataVolumeTemplates")
            .and_then(Value::as_array)
            .map(|t| {
                t.iter()
                    .filter_map(|t| str_at(t, &["metadata", "name"]))
                    .collect()
            })
            .unwrap_or_default();
        match (volumes.is_empty(), fleet.settings.prune_disks) {
            (true, _) => String::new(),
            (false, true) => format!(
                "; its disks ({}) are deleted too (pruneDisks)",
                volumes.join(", ")
            ),
            (false, false) => format!(
                "; its disks ({}) are kept (set pruneDisks to delete them)",
                volumes.join(", ")
            ),
        }
    };
    let mut scale_downs: Vec<(String, String, u32, ObjectRef, String)> = Vec::new();
    let mut removed: Vec<(ObjectRef, String)> = Vec::new();
    for (id, object) in &live.objects {
        if id.kind != Kind::VirtualMachine || desired.contains_key(id) || !owned_by(object, name) {
            continue;
        }
        let set = label(object, LABEL_SET).and_then(|s| {
            fleet
                .sets
                .get(&ObjectRef::new(Kind::VirtualMachine, &id.namespace, s))
                .map(|set| (s, set))
        });
        match set {
            Some((set_name, set)) => {
                let index = label(object, LABEL_INDEX)
                    .and_then(|i| i.parse::<u32>().ok())
                    .unwrap_or(u32::MAX);
                scale_downs.push((
                    id.namespace.clone(),
                    set_name.to_owned(),
                    index,
                    id.clone(),
                    format!(
                        "set {set_name} is scaled to {} replicas; the highest indices go first{}",
                        set.replicas,
                        disks_note(object)
                    ),
                ));
            }
            None if fleet.settings.prune => removed.push((
                id.clone(),
                format!(
                    "removed from the fleet and pruning is on{}",
                    disks_note(object)
                ),
            )),
            None => plan.notes.push(format!(
                "{id} is no longer in the fleet; it is kept because pruning is off"
            )),
        }
    }
    // Highest index first within each set.
    scale_downs.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)).then(b.2.cmp(&a.2)));
    // The prune guard. A fleet that declares no VMs deletes nothing unless allowed; pruning
    // more than the allowed share is refused whole (which VMs to keep would be arbitrary). Sets
    // scaled in say how many VMs they want: the share does not limit them.
    let guard = &fleet.settings.prune_guard;
    let scale_downs: Vec<(ObjectRef, String)> = scale_downs
        .into_iter()
        .map(|(_, _, _, id, reason)| (id, reason))
        .collect();
    let (scale_refusal, prune_refusal) = if fleet.vms.is_empty() {
        let all = guard.refuses_emptying(name, scale_downs.len() + removed.len());
        (all.clone(), all)
    } else {
        let size = live
            .objects
            .iter()
            .filter(|(id, o)| {
                id.kind == Kind::VirtualMachine && owned_by(o, name) && !fleet.vms.contains_key(*id)
            })
            .count()
            + fleet.vms.len();
        (None, guard.refuses_pruning(name, size, removed.len()))
    };
    let mut deleted = BTreeSet::new();
    for (deletes, refusal) in [(scale_downs, &scale_refusal), (removed, &prune_refusal)] {
        for (id, reason) in deletes {
            match refusal {
                Some(why) => {
                    plan.steps
                        .push(Step::new(&id, Change::Delete, Class::Refused, why.clone()))
                }
                None => {
                    plan.steps
                        .push(Step::new(&id, Change::Delete, Class::Delete, reason));
                    deleted.insert(id);
                }
            }
        }
    }
    if let Some(why) = prune_refusal {
        plan.notes.push(why);
    }
    for id in &deleted {
        if let Some(object) = live.objects.get(id) {
            record_basis(&mut plan.basis, "VirtualMachine", object);
            plan.before.insert(id.clone(), shape::normalize(object));
        }
    }
    deleted
}

/// Generated NADs no desired VM uses any more are deleted last, and only when no VM left in
/// the cluster still refers to them (a NAD shared with others is never deleted).
fn plan_nad_gc(
    fleet: &Fleet,
    desired: &BTreeMap<&ObjectRef, &Value>,
    live: &LiveState,
    deleted: &BTreeSet<ObjectRef>,
    plan: &mut Plan,
) {
    for (id, object) in &live.objects {
        if id.kind != Kind::NetworkAttachmentDefinition
            || desired.contains_key(id)
            || !owned_by(object, &fleet.settings.name)
        {
            continue;
        }
        // A VM the plan writes uses what its new manifest uses, less the interfaces being
        // unplugged: the executor deletes NADs only after every unplug is verified.
        let users: Vec<String> = live
            .objects
            .iter()
            .filter(|(vid, _)| vid.kind == Kind::VirtualMachine && !deleted.contains(*vid))
            .filter(|(vid, vm)| match plan.writes.get(*vid) {
                Some(w) => {
                    let mut w = w.clone();
                    shape::without_absent_nics(&mut w);
                    references(&w, &vid.namespace, id)
                }
                None => references(vm, &vid.namespace, id),
            })
            .map(|(vid, _)| vid.to_string())
            .collect();
        if users.is_empty() {
            record_basis(&mut plan.basis, "NetworkAttachmentDefinition", object);
            plan.steps.push(Step::new(
                id,
                Change::NadDelete,
                Class::Delete,
                "no VM uses this generated network attachment any more",
            ));
        } else {
            plan.notes.push(format!(
                "{id} is no longer generated but is kept: still used by {}",
                users.join(", ")
            ));
        }
    }
}

/// Whether a VM in `vm_namespace` refers to the NAD `nad` in a network.
pub fn references(vm: &Value, vm_namespace: &str, nad: &ObjectRef) -> bool {
    vm.pointer("/spec/template/spec/networks")
        .and_then(Value::as_array)
        .is_some_and(|nets| {
            nets.iter().any(|n| {
                let Some(name) = n.pointer("/multus/networkName").and_then(Value::as_str) else {
                    return false;
                };
                let (ns, name) = name.split_once('/').unwrap_or((vm_namespace, name));
                ns == nad.namespace && name == nad.name
            })
        })
}

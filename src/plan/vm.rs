//! One VM's changes: compare the desired and the live VirtualMachine part by part, classify each
//! difference the way KubeVirt will treat it (`kubevirt-facts.md`), and work out the exact
//! manifest to write, with blocked and refused changes taken back out.

use std::collections::BTreeMap;

use serde_json::Value;

use super::cluster::{self, Instance, KubeVirtConfig};
use super::shape::{self, Binding, DiskShape, Nic, VmShape, set_pointer};
use super::{Change, Class, Step, volumes};
use crate::fleet;
use crate::identity::ObjectRef;
use crate::live::{LiveState, str_at};
use crate::quantity::Quantity;

/// Inputs of one VM's plan.
pub struct VmInput<'a> {
    pub id: &'a ObjectRef,
    pub vm: &'a fleet::Vm,
    /// The rendered VirtualMachine.
    pub desired: &'a Value,
    /// The live VirtualMachine (owned by the fleet), if it exists.
    pub live_vm: Option<&'a Value>,
    pub live: &'a LiveState,
    pub kv: &'a KubeVirtConfig,
    /// The fleet's name: volumes are used and grown only when they are its own.
    pub fleet: &'a str,
    /// What the cluster lacks (storage classes, network attachments).
    pub available: &'a cluster::Availability<'a>,
}

/// One VM's steps, in order, and what to write.
#[derive(Debug, Clone, Default)]
pub struct VmPlan {
    pub steps: Vec<Step>,
    /// The VirtualMachine manifest to apply, if anything is to be written.
    pub write: Option<Value>,
    /// The live VirtualMachine, normalised, when it changes.
    pub before: Option<Value>,
}

impl VmPlan {
    pub(super) fn refused(step: Step) -> VmPlan {
        VmPlan {
            steps: vec![step],
            ..VmPlan::default()
        }
    }

    /// Whether this VM is restarted by the plan.
    pub fn restarts(&self) -> bool {
        self.steps
            .iter()
            .any(|s| s.change == Change::Restart && s.class == Class::Restart)
    }
}

/// Order of a VM's steps (design §5): resume, disk growth, live CPU/memory up, NIC attach,
/// NIC detach, live memory down, the restart with everything that needs it, start, suspend.
fn rank(step: &Step, growing: bool) -> u8 {
    match (step.change, step.class) {
        (Change::Create, _) => 0,
        (Change::Stop, _) => 1,
        (Change::Resume, _) => 2,
        (Change::Disk, Class::Live) => 3,
        (Change::Cpu, Class::Live) => 4,
        (Change::Memory, Class::Live) if growing => 5,
        (Change::NicAttach, Class::Live) => 6,
        (Change::NicDetach, Class::Live) => 7,
        (Change::NicChange, Class::Live) => 7,
        (Change::Memory, Class::Live) => 8,
        (Change::Update, Class::Live) => 9,
        (Change::Restart, _) => 11,
        (Change::Start, _) => 12,
        (Change::Suspend, _) => 13,
        (_, _) => 10,
    }
}

/// Plan one VM.
pub fn plan_vm(input: &VmInput<'_>) -> VmPlan {
    let id = input.id;
    let desired = shape::normalize_vm(input.desired);
    let d = VmShape::of(&desired);
    let Some(live_vm) = input.live_vm else {
        let mut reason = match &input.vm.set {
            Some(m) => format!("new member {} of set {}", m.index, m.set),
            None => "new VM".to_owned(),
        };
        if d.run_strategy == "Halted" {
            reason.push_str("; created stopped");
        } else if d.start_paused {
            reason.push_str("; starts paused (startStrategy: Paused)");
        }
        return VmPlan {
            steps: vec![Step::new(id, Change::Create, Class::Create, reason)],
            write: Some(desired),
            before: None,
        };
    };

    let live_full = shape::normalize_vm(live_vm);
    let unplugging: Vec<String> = live_full
        .pointer(IFACES)
        .and_then(Value::as_array)
        .map(|ifaces| {
            ifaces
                .iter()
                .filter(|i| i.get("state").and_then(Value::as_str) == Some("absent"))
                .filter_map(|i| i.get("name").and_then(Value::as_str).map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    // Cloned only while an unplug is in flight: the common case compares `live_full` itself.
    let stripped;
    let live_n = if unplugging.is_empty() {
        &live_full
    } else {
        let mut v = live_full.clone();
        shape::without_absent_nics(&mut v);
        stripped = v;
        &stripped
    };
    let l = VmShape::of(live_n);
    let instance = input.live.vmi(&id.namespace, &id.name).map(Instance::of);
    let ctx = Ctx {
        id,
        kv: input.kv,
        instance: instance.as_ref(),
        restart_pending: cluster::restart_required(live_vm),
        stays_running: instance.is_some() && d.run_strategy != "Halted",
    };

    let mut steps = Vec::new();
    power_steps(&ctx, &d, &l, &mut steps);
    cpu_step(&ctx, &d, &l, input.vm.spec.hot_plug, &mut steps);
    memory_step(&ctx, &d, &l, input.vm.spec.hot_plug, &mut steps);
    disk_steps(&ctx, input, &d, &l, &mut steps);
    nic_steps(&ctx, &d, &l, &mut steps);
    hold_missing_networks(input, &mut steps);
    // Equal manifests cannot differ in the parts the typed comparisons leave over.
    if desired != *live_n {
        rest_steps(&ctx, &desired, live_n, &mut steps);
    }
    pause_steps(&ctx, &d, &l, &mut steps);

    if steps.is_empty() {
        return VmPlan::default();
    }
    restart_step(&ctx, input.vm, &d, &mut steps);

    let growing = d.memory.guest > l.memory.guest;
    steps.sort_by_key(|s| rank(s, growing));

    let mut write = write_manifest(&desired, live_n, &live_full, &unplugging, &ctx, &steps);
    keep_kubevirt_fields(&mut write, live_vm);
    VmPlan {
        steps,
        write: Some(write),
        before: Some(live_n.clone()),
    }
}

/// What the live cluster says about this VM.
struct Ctx<'a> {
    id: &'a ObjectRef,
    kv: &'a KubeVirtConfig,
    instance: Option<&'a Instance>,
    /// The VM's RestartRequired message, when it has one.
    restart_pending: Option<String>,
    /// It has an instance now and keeps running: changes must be live or wait for a restart.
    stays_running: bool,
}

const NOT_RUNNING: &str = "the VM is not running: takes effect when it next starts";

impl Ctx<'_> {
    /// Why a migration-based live change cannot happen now (the checks after the field's own).
    fn migration_blocker(&self, gated_by_restart_required: bool) -> Option<String> {
        if gated_by_restart_required && let Some(msg) = &self.restart_pending {
            return Some(format!(
                "the VM already has RestartRequired ({msg}); KubeVirt makes no live CPU or memory change until it restarts"
            ));
        }
        let instance = self.instance?;
        if !instance.running {
            return Some("the VM's instance is not Running yet".into());
        }
        if let Some(b) = self.kv.live_blocker() {
            return Some(b);
        }
        instance
            .migratable
            .as_ref()
            .err()
            .map(|m| format!("the VM is not live-migratable: {m}"))
    }

    /// Class and reason of a change that is live when `check` passes and KubeVirt can migrate.
    fn classify(&self, check: Result<String, String>, gated: bool) -> (Class, String) {
        if !self.stays_running {
            return (Class::Live, NOT_RUNNING.into());
        }
        match check {
            Err(why) => (Class::Restart, why),
            Ok(how) => match self.migration_blocker(gated) {
                Some(why) => (Class::Restart, why),
                None => (Class::Live, how),
            },
        }
    }

    /// A change KubeVirt only applies when the VM (re)starts.
    fn at_restart(&self, why: impl Into<String>) -> (Class, String) {
        if self.stays_running {
            (Class::Restart, why.into())
        } else {
            (Class::Live, NOT_RUNNING.into())
        }
    }
}

fn power_steps(ctx: &Ctx<'_>, d: &VmShape, l: &VmShape, steps: &mut Vec<Step>) {
    let id = ctx.id;
    let (from, to) = (Some(l.run_strategy.clone()), Some(d.run_strategy.clone()));
    if d.run_strategy == "Halted" {
        if l.run_strategy != "Halted" || ctx.instance.is_some() {
            steps.push(
                Step::new(
                    id,
                    Change::Stop,
                    Class::Live,
                    "declared stopped: runStrategy becomes Halted and the instance shuts down",
                )
                .values(from, to),
            );
        }
    } else if l.run_strategy == "Halted" {
        steps.push(
            Step::new(
                id,
                Change::Start,
                Class::Live,
                "declared running: runStrategy is set",
            )
            .values(from, to),
        );
    } else if l.run_strategy != d.run_strategy {
        steps.push(
            Step::new(
                id,
                Change::Update,
                Class::Live,
                "runStrategy changes; the running instance is not restarted",
            )
            .item("runStrategy")
            .values(from, to),
        );
    }
}

/// vCPUs, with the topology and maxSockets only when they are part of the change.
fn cpu_text(c: &shape::Cpu, other: &shape::Cpu) -> String {
    let mut s = c.vcpus().to_string();
    if (c.cores, c.threads) != (other.cores, other.threads) || c.cores != 1 || c.threads != 1 {
        s.push_str(&format!(" ({}×{}×{})", c.sockets, c.cores, c.threads));
    }
    if c.max_sockets != other.max_sockets {
        s.push_str(&format!(" (maxSockets {})", opt(c.max_sockets)));
    }
    s
}

fn cpu_step(ctx: &Ctx<'_>, d: &VmShape, l: &VmShape, hot_plug: bool, steps: &mut Vec<Step>) {
    if d.cpu == l.cpu {
        return;
    }
    let check = || -> Result<String, String> {
        if (d.cpu.cores, d.cpu.threads) != (l.cpu.cores, l.cpu.threads) {
            return Err("only CPU sockets change live; cores or threads change".into());
        }
        if d.cpu.max_sockets != l.cpu.max_sockets {
            return Err(limit_changed(
                ("CPU", "maxSockets", "CPU count"),
                hot_plug,
                opt(l.cpu.max_sockets),
                opt(d.cpu.max_sockets),
            ));
        }
        let Some(instance) = ctx.instance else {
            return Ok(String::new());
        };
        if d.cpu.sockets < instance.sockets {
            return Err(
                "KubeVirt cannot remove CPU sockets from a running VM (Reduction of CPU socket count requires a restart)".into(),
            );
        }
        match instance.max_sockets {
            None => Err(
                "the running instance has no maxSockets, so CPU hot-plug is not available".into(),
            ),
            Some(m) if d.cpu.sockets > m => Err(format!(
                "{} sockets exceed maxSockets {m} of the running instance",
                d.cpu.sockets
            )),
            Some(m) => Ok(format!(
                "hot-plugged through a live migration (maxSockets {m})"
            )),
        }
    };
    let (class, reason) = ctx.classify(check(), true);
    steps.push(Step::new(ctx.id, Change::Cpu, class, reason).values(
        Some(cpu_text(&l.cpu, &d.cpu)),
        Some(cpu_text(&d.cpu, &l.cpu)),
    ));
}

/// Why a change of a hot-plug limit (`maxSockets`, `maxGuest`) needs a restart: KubeVirt fixes
/// the limit when an instance starts. `(resource, limit, size)` name them in the message.
fn limit_changed(
    (resource, limit, size): (&str, &str, &str),
    hot_plug: bool,
    from: String,
    to: String,
) -> String {
    if hot_plug {
        format!("{limit} changes from {from} to {to}; KubeVirt fixes it when the VM starts")
    } else {
        format!(
            "{resource} hot-plug is not enabled for this VM (scalingPolicy.enableHotPlug), so {limit} follows the {size} and KubeVirt needs a restart"
        )
    }
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "unset".into())
}

/// Guest memory, with maxGuest only when it is part of the change.
fn mem_text(m: &shape::Memory, other: &shape::Memory) -> String {
    let mut s = opt(m.guest);
    if m.max_guest != other.max_guest {
        s.push_str(&format!(" (maxGuest {})", opt(m.max_guest)));
    }
    s
}

fn memory_step(ctx: &Ctx<'_>, d: &VmShape, l: &VmShape, hot_plug: bool, steps: &mut Vec<Step>) {
    if d.memory == l.memory {
        return;
    }
    let check = || -> Result<String, String> {
        if d.memory.max_guest != l.memory.max_guest {
            return Err(limit_changed(
                ("memory", "maxGuest", "memory size"),
                hot_plug,
                opt(l.memory.max_guest),
                opt(d.memory.max_guest),
            ));
        }
        let Some(guest) = d.memory.guest else {
            return Err("memory.guest is removed".into());
        };
        let Some(instance) = ctx.instance else {
            return Ok(String::new());
        };
        if instance.memory_hotplug_failed {
            return Err(
                "a memory hot-plug already failed on this instance (HotMemoryChange=False)".into(),
            );
        }
        let Some(max) = instance.max_guest else {
            return Err("memory hot-plug is not available for this VM: the running instance has no maxGuest".into());
        };
        if guest > max {
            return Err(format!(
                "{guest} exceeds maxGuest {max} of the running instance"
            ));
        }
        if let Some(boot) = instance.guest_at_boot
            && guest < boot
        {
            return Err(format!(
                "{guest} is below the {boot} the VM booted with (guestAtBoot); KubeVirt unplugs memory live only down to that"
            ));
        }
        if d.memory.guest < l.memory.guest {
            Ok("hot-unplugged through a live migration, not below guestAtBoot; the guest may keep some of it".into())
        } else {
            Ok(format!(
                "hot-plugged through a live migration (maxGuest {max})"
            ))
        }
    };
    let (class, reason) = ctx.classify(check(), true);
    steps.push(Step::new(ctx.id, Change::Memory, class, reason).values(
        Some(mem_text(&l.memory, &d.memory)),
        Some(mem_text(&d.memory, &l.memory)),
    ));
}

/// A disk's size now: from its PVC's own fields ([`volumes::current_size`]); before the PVC
/// exists, the size the disk is being created with. The size it was created with is its
/// DataVolume's, else (the DataVolume gone: KubeVirt re-creates it) the VM's template's.
fn current_size(input: &VmInput<'_>, ns: &str, disk: &DiskShape) -> Option<Quantity> {
    let live = input.live;
    let created = live
        .data_volume(ns, &disk.volume)
        .and_then(volumes::created_size)
        .or(disk.size);
    match live.pvc(ns, &disk.volume) {
        Some(pvc) => volumes::current_size(pvc, created, live.vmi(ns, &input.vm.name)),
        None => created,
    }
}

fn disk_steps(ctx: &Ctx<'_>, input: &VmInput<'_>, d: &VmShape, l: &VmShape, steps: &mut Vec<Step>) {
    let id = ctx.id;
    let live_disks: BTreeMap<&str, &DiskShape> =
        l.disks.iter().map(|k| (k.name.as_str(), k)).collect();
    let desired_disks: BTreeMap<&str, &DiskShape> =
        d.disks.iter().map(|k| (k.name.as_str(), k)).collect();
    for (name, want) in &desired_disks {
        let Some(have) = live_disks.get(name) else {
            let vm = &input.vm.name;
            let held =
                volumes::volume_refusal(input.live, input.fleet, &id.namespace, &want.volume, vm)
                    .map(|why| {
                        (
                            Class::Refused,
                            format!(
                                "{why}; Wukong never adopts or changes a volume it does not own"
                            ),
                        )
                    })
                    .or_else(|| {
                        let why = input
                            .available
                            .storage_class(want.storage_class.as_deref())?;
                        Some((Class::Blocked, format!("cannot be added now: {why}")))
                    });
            let (class, reason) = held.unwrap_or_else(|| ctx.at_restart(
                "a new disk is attached at restart (it is not a hot-pluggable volume); its DataVolume is created at once",
            ));
            steps.push(
                Step::new(id, Change::Disk, class, reason)
                    .item(*name)
                    .values(None, want.size.map(|s| s.to_string())),
            );
            continue;
        };
        if want.source != have.source
            || want.storage_class != have.storage_class
            || want.volume != have.volume
        {
            steps.push(
                Step::new(
                    id,
                    Change::Disk,
                    Class::Refused,
                    format!(
                        "cannot change the image, storage class or volume of existing disk `{name}`: a DataVolume's spec is immutable; add a new disk instead"
                    ),
                )
                .item(*name),
            );
            continue;
        }
        let (Some(to), Some(from)) = (want.size, current_size(input, &id.namespace, have)) else {
            continue;
        };
        if volumes::same_size(to, from) {
            continue;
        }
        let step = |class, reason: String| {
            Step::new(id, Change::Disk, class, reason)
                .item(*name)
                .values(Some(from.to_string()), Some(to.to_string()))
        };
        if to < from {
            steps.push(step(
                Class::Refused,
                format!("cannot shrink disk `{name}` of {id} from {from} to {to}: Kubernetes volumes only grow"),
            ));
        } else if to > from {
            let fleet_disk = input.vm.spec.disks.iter().find(|k| k.name == **name);
            let pvc = input.live.pvc(&id.namespace, &have.volume);
            let refusal = if fleet_disk.is_some_and(|k| !k.hot_expand) {
                Some(format!(
                    "scalingPolicy.enableHotExpand is false for disk `{name}`"
                ))
            } else if let Some(pvc) = pvc {
                let dv = input.live.data_volume(&id.namespace, &have.volume);
                volumes::claim_refusal(
                    pvc,
                    dv,
                    input.fleet,
                    &id.namespace,
                    &have.volume,
                    &input.vm.name,
                )
                .map(|why| format!("{why}; Wukong never patches a volume it does not own"))
                .or_else(|| cluster::expansion_allowed(input.live, pvc).err())
            } else {
                Some(format!(
                    "the PVC {}/{} does not exist yet",
                    id.namespace, have.volume
                ))
            };
            steps.push(match refusal {
                Some(why) => step(Class::Refused, why),
                None => step(
                    Class::Live,
                    "the PVC grows (never the DataVolume, whose spec is immutable) and KubeVirt passes the new size to the VM; the guest's partition and filesystem grow at its next boot (cloud-init growpart) or by hand (growpart, resize2fs)".into(),
                ),
            });
        }
    }
    for (name, have) in &live_disks {
        if !desired_disks.contains_key(name) {
            let (class, reason) = ctx.at_restart(format!(
                "the disk is detached at restart; its DataVolume and PVC {} are kept",
                have.volume
            ));
            steps.push(
                Step::new(id, Change::Disk, class, reason)
                    .item(*name)
                    .values(have.size.map(|s| s.to_string()), None),
            );
        }
    }
}

fn nic_text(n: &Nic) -> String {
    let mut s = match &n.network {
        Some(net) => format!("{} via {net}", n.binding.describe()),
        None => format!("{} on the pod network", n.binding.describe()),
    };
    if n.primary && n.network.is_some() {
        s.push_str(" (primary)");
    }
    s
}

fn nic_steps(ctx: &Ctx<'_>, d: &VmShape, l: &VmShape, steps: &mut Vec<Step>) {
    let id = ctx.id;
    let live_nics: BTreeMap<&str, &Nic> = l.nics.iter().map(|n| (n.name.as_str(), n)).collect();
    let desired_nics: BTreeMap<&str, &Nic> = d.nics.iter().map(|n| (n.name.as_str(), n)).collect();
    // NIC hot-plug is not gated by RestartRequired or the rollout strategy, but it needs a
    // migration unless the cluster runs Multus' dynamic networks controller.
    let migration = |how: &str| -> Result<String, String> {
        if !ctx.kv.known || !ctx.kv.live_migrate {
            return Err(ctx.kv.live_blocker().unwrap_or_default());
        }
        Ok(how.to_owned())
    };
    for (name, want) in &desired_nics {
        match live_nics.get(name) {
            None => {
                let check = match &want.binding {
                    Binding::Bridge => migration("hot-plugged (bridge binding)"),
                    Binding::Sriov => migration("hot-plugged through a live migration (SR-IOV)"),
                    Binding::Plugin(p) if p == "macvtap" => Err("macvlan networks use KubeVirt's macvtap binding plugin (KubeVirt's bridge binding does not work with macvlan), which cannot be hot-plugged".into()),
                    other => Err(format!(
                        "only bridge and SR-IOV interfaces can be hot-plugged, not {}",
                        other.describe()
                    )),
                };
                let (class, reason) = ctx.classify(check, false);
                steps.push(
                    Step::new(id, Change::NicAttach, class, reason)
                        .item(*name)
                        .values(None, Some(nic_text(want))),
                );
            }
            Some(have) if have != want => {
                let only_nad = Nic {
                    network: want.network.clone(),
                    ..(*have).clone()
                } == **want;
                let check = if only_nad && want.binding == Binding::Bridge {
                    migration(
                        "the network attachment changes through a live migration (LiveUpdateNADRef)",
                    )
                } else {
                    Err("an existing interface's binding, MAC or network changes".into())
                };
                let (class, reason) = ctx.classify(check, false);
                steps.push(
                    Step::new(id, Change::NicChange, class, reason)
                        .item(*name)
                        .values(Some(nic_text(have)), Some(nic_text(want))),
                );
            }
            Some(_) => {}
        }
    }
    for (name, have) in &live_nics {
        if desired_nics.contains_key(name) {
            continue;
        }
        let step = |class, reason: String| {
            Step::new(id, Change::NicDetach, class, reason)
                .item(*name)
                .values(Some(nic_text(have)), None)
        };
        if have.primary {
            steps.push(step(
                Class::Refused,
                format!("`{name}` is the VM's primary network and cannot be removed"),
            ));
            continue;
        }
        let check = match &have.binding {
            Binding::Bridge => {
                migration("unplugged live (state: absent); KubeVirt then drops it from the VM")
            }
            Binding::Sriov => Err("SR-IOV interfaces cannot be hot-unplugged".into()),
            Binding::Plugin(p) if p == "macvtap" => {
                Err("macvtap interfaces (macvlan networks) cannot be hot-unplugged".into())
            }
            other => Err(format!(
                "only bridge interfaces can be hot-unplugged, not {}",
                other.describe()
            )),
        };
        let (class, reason) = ctx.classify(check, false);
        steps.push(step(class, reason));
    }
}

/// A NIC attached to (or moved to) a network attachment the cluster lacks could not come up:
/// blocked, with the reason.
fn hold_missing_networks(input: &VmInput<'_>, steps: &mut [Step]) {
    let plugs = |s: &Step| matches!(s.change, Change::NicAttach | Change::NicChange);
    if !steps.iter().any(plugs) {
        return;
    }
    let desired = VmShape::of(input.desired);
    for s in steps
        .iter_mut()
        .filter(|s| matches!(s.change, Change::NicAttach | Change::NicChange) && s.acts())
    {
        let network = desired
            .nics
            .iter()
            .find(|n| Some(&n.name) == s.item.as_ref())
            .and_then(|n| n.network.as_deref());
        if let Some(why) = network.and_then(|n| input.available.network(&input.id.namespace, n)) {
            s.class = Class::Blocked;
            s.reason = format!("cannot be done now: {why}");
        }
    }
}

/// JSON pointers (at most a few) where two values differ.
fn differing_paths(a: &Value, b: &Value, prefix: &str, out: &mut Vec<String>) {
    const MAX: usize = 3;
    if out.len() >= MAX || a == b {
        return;
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                differing_paths(
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                    &format!("{prefix}.{k}"),
                    out,
                );
            }
        }
        _ => out.push(prefix.trim_start_matches('.').to_owned()),
    }
}

fn rest_steps(ctx: &Ctx<'_>, desired: &Value, live: &Value, steps: &mut Vec<Step>) {
    let (dt, dother) = shape::rest(desired);
    let (lt, lother) = shape::rest(live);
    if dt != lt {
        let mut paths = Vec::new();
        differing_paths(&lt, &dt, "", &mut paths);
        let (class, reason) = ctx
            .at_restart("other template fields change; KubeVirt applies them when the VM starts");
        steps.push(
            Step::new(ctx.id, Change::Update, class, reason)
                .item(format!("spec.template.spec: {}", paths.join(", "))),
        );
    }
    if dother != lother {
        let mut paths = Vec::new();
        differing_paths(&lother, &dother, "", &mut paths);
        steps.push(
            Step::new(
                ctx.id,
                Change::Update,
                Class::Live,
                "metadata changes; no restart",
            )
            .item(paths.join(", ")),
        );
    }
}

fn pause_steps(ctx: &Ctx<'_>, d: &VmShape, l: &VmShape, steps: &mut Vec<Step>) {
    let id = ctx.id;
    let paused_now = ctx.instance.is_some_and(|i| i.running && i.paused);
    let running_now = ctx.instance.is_some_and(|i| i.running);
    let hot = steps.iter().any(|s| {
        s.class == Class::Live
            && matches!(
                s.change,
                Change::Cpu
                    | Change::Memory
                    | Change::NicAttach
                    | Change::NicDetach
                    | Change::NicChange
            )
    });
    let keep = |reason| Step::new(id, Change::Update, Class::Live, reason).item("startStrategy");
    if d.start_paused && ctx.stays_running {
        if paused_now && hot {
            steps.push(
                Step::new(
                    id,
                    Change::Resume,
                    Class::Live,
                    "resumed so the guest takes the live changes; paused again afterwards",
                )
                .values(Some("Paused".into()), Some("Running".into())),
            );
        }
        if running_now && (!paused_now || hot) {
            steps.push(
                Step::new(id, Change::Suspend, Class::Live, "paused through the pause subresource; startStrategy: Paused keeps it paused if it restarts (KubeVirt marks the new startStrategy RestartRequired, but no restart is needed)")
                    .values(Some("Running".into()), Some("Paused".into())),
            );
        } else if !l.start_paused {
            steps.push(keep(
                "startStrategy: Paused is set, so the VM starts paused",
            ));
        }
    } else if !d.start_paused && paused_now && ctx.stays_running {
        steps.push(
            Step::new(
                id,
                Change::Resume,
                Class::Live,
                "unpaused through the unpause subresource",
            )
            .values(Some("Paused".into()), Some("Running".into())),
        );
    } else if d.start_paused != l.start_paused {
        steps.push(keep(if d.start_paused {
            "startStrategy: Paused is set, so the VM starts paused"
        } else {
            "startStrategy: Paused is removed, so the VM starts running"
        }));
    }
}

fn restart_step(ctx: &Ctx<'_>, vm: &fleet::Vm, d: &VmShape, steps: &mut Vec<Step>) {
    if !steps.iter().any(|s| s.class == Class::Restart) {
        return;
    }
    let changes: Vec<String> = steps
        .iter()
        .filter(|s| s.class == Class::Restart)
        .map(|s| match &s.item {
            Some(i) if s.change != Change::Update => format!("{} {i}", s.change.as_str()),
            _ => s.change.as_str().to_owned(),
        })
        .collect();
    if vm.spec.allow_restart {
        let mut reason = format!("one restart applies: {}", changes.join(", "));
        if d.start_paused {
            reason.push_str("; the VM comes back paused (startStrategy: Paused)");
        }
        // A suspend after the restart is redundant: the new instance starts paused.
        steps.retain(|s| s.change != Change::Suspend);
        steps.push(Step::new(ctx.id, Change::Restart, Class::Restart, reason));
    } else {
        for s in steps.iter_mut().filter(|s| s.class == Class::Restart) {
            s.class = Class::Blocked;
            s.reason = format!(
                "needs a restart, which is not allowed for this VM: {}",
                s.reason
            );
        }
        steps.push(Step::new(
            ctx.id,
            Change::Restart,
            Class::Blocked,
            format!(
                "restarts are not allowed for this VM (set allowRestart on it or allowRestarts on the fleet); waiting: {}",
                changes.join(", ")
            ),
        ));
    }
}

fn tspec_mut(v: &mut Value) -> Option<&mut serde_json::Map<String, Value>> {
    v.pointer_mut("/spec/template/spec")
        .and_then(Value::as_object_mut)
}

/// The key of list elements: `name`, or `metadata.name` for DataVolume templates.
const NAME: &[&str] = &["name"];
const META_NAME: &[&str] = &["metadata", "name"];

/// The element of the list at `pointer` whose `key` is `name`.
fn keyed<'a>(v: &'a Value, pointer: &str, key: &[&str], name: &str) -> Option<&'a Value> {
    v.pointer(pointer)?
        .as_array()?
        .iter()
        .find(|e| str_at(e, key) == Some(name))
}

/// Replace (or remove, with `None`) the element whose `key` is `name` in the list at
/// `pointer`, creating the list if needed.
fn put_keyed(v: &mut Value, pointer: &str, key: &[&str], name: &str, element: Option<Value>) {
    let Some(list) = v.pointer_mut(pointer).and_then(Value::as_array_mut) else {
        if let Some(e) = element {
            set_pointer(v, pointer, Value::Array(vec![e]));
        }
        return;
    };
    let pos = list.iter().position(|e| str_at(e, key) == Some(name));
    match (pos, element) {
        (Some(i), Some(e)) => list[i] = e,
        (Some(i), None) => {
            list.remove(i);
        }
        (None, Some(e)) => list.push(e),
        (None, None) => {}
    }
}

const IFACES: &str = "/spec/template/spec/domain/devices/interfaces";
const NETWORKS: &str = "/spec/template/spec/networks";
const DISKS: &str = "/spec/template/spec/domain/devices/disks";
const VOLUMES: &str = "/spec/template/spec/volumes";
const DATA_VOLUME_TEMPLATES: &str = "/spec/dataVolumeTemplates";

/// Copy a disk (device, volume, DataVolume template) from `from` into `to`, or remove it from
/// `to` when `from` lacks it.
fn copy_disk(to: &mut Value, from: &Value, name: &str) {
    let volume = keyed(from, VOLUMES, NAME, name).cloned();
    let old_volume = keyed(to, VOLUMES, NAME, name)
        .and_then(|v| str_at(v, &["dataVolume", "name"]))
        .map(str::to_owned);
    let dv = volume
        .as_ref()
        .and_then(|v| str_at(v, &["dataVolume", "name"]))
        .map(str::to_owned);
    put_keyed(
        to,
        DISKS,
        NAME,
        name,
        keyed(from, DISKS, NAME, name).cloned(),
    );
    put_keyed(to, VOLUMES, NAME, name, volume);
    if let Some(old) = old_volume.filter(|o| Some(o) != dv.as_ref()) {
        put_keyed(to, DATA_VOLUME_TEMPLATES, META_NAME, &old, None);
    }
    if let Some(dv) = dv {
        let template = keyed(from, DATA_VOLUME_TEMPLATES, META_NAME, &dv).cloned();
        put_keyed(to, DATA_VOLUME_TEMPLATES, META_NAME, &dv, template);
    }
}

fn copy_nic(to: &mut Value, from: &Value, name: &str) {
    for list in [IFACES, NETWORKS] {
        put_keyed(to, list, NAME, name, keyed(from, list, NAME, name).cloned());
    }
}

/// The manifest to write: the desired VM with every blocked or refused change taken back to
/// its live value, unplugs written as `state: absent`, and unplugs still in progress kept.
fn write_manifest(
    desired: &Value,
    live: &Value,
    live_full: &Value,
    unplugging: &[String],
    ctx: &Ctx<'_>,
    steps: &[Step],
) -> Value {
    let mut w = desired.clone();
    let held: Vec<&Step> = steps
        .iter()
        .filter(|s| matches!(s.class, Class::Blocked | Class::Refused))
        .collect();
    take_back(&mut w, desired, live, &held);
    if ctx.stays_running {
        for s in steps
            .iter()
            .filter(|s| s.change == Change::NicDetach && s.class == Class::Live)
        {
            if let Some(name) = &s.item {
                copy_nic(&mut w, live, name);
                absent(&mut w, name);
            }
        }
    }
    // An unplug KubeVirt has not finished must stay in the spec: removing the entry instead
    // would make KubeVirt ask for a restart.
    for name in unplugging {
        if keyed(&w, IFACES, NAME, name).is_none() {
            copy_nic(&mut w, live_full, name);
        }
    }
    w
}

/// Take the parts of `w` that `steps` change back to their `live` values (`desired` is what
/// `w` was made from). Blocked and refused changes are taken out of the manifest to write
/// this way, and the executor writes a VM step by step by taking back the steps still to come.
pub fn take_back(w: &mut Value, desired: &Value, live: &Value, steps: &[&Step]) {
    // Other template fields first: that step takes the whole template back to the live one,
    // and the typed parts are then put back on top.
    if steps.iter().any(|s| {
        s.change == Change::Update
            && s.item
                .as_deref()
                .is_some_and(|i| i.starts_with("spec.template.spec"))
    }) {
        let desired_tspec = desired
            .pointer("/spec/template/spec")
            .cloned()
            .unwrap_or(Value::Null);
        if let (Some(t), Some(l)) = (
            tspec_mut(w),
            live.pointer("/spec/template/spec")
                .and_then(Value::as_object),
        ) {
            *t = l.clone();
        }
        for key in ["startStrategy"] {
            if let Some(t) = tspec_mut(w) {
                match desired_tspec.get(key) {
                    Some(v) => {
                        t.insert(key.into(), v.clone());
                    }
                    None => {
                        t.remove(key);
                    }
                }
            }
        }
        for (ptr, value) in [
            (
                "/spec/template/spec/domain/cpu",
                desired.pointer("/spec/template/spec/domain/cpu"),
            ),
            (
                "/spec/template/spec/domain/memory",
                desired.pointer("/spec/template/spec/domain/memory"),
            ),
        ] {
            if let Some(v) = value {
                set_pointer(w, ptr, v.clone());
            }
        }
        let names = |v: &Value, p: &str| -> Vec<String> {
            v.pointer(p)
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|e| e.get("name").and_then(Value::as_str).map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        for n in names(desired, IFACES)
            .into_iter()
            .chain(names(live, IFACES))
        {
            copy_nic(w, desired, &n);
        }
        let dv_names = |v: &Value| -> Vec<String> {
            v.pointer(VOLUMES)
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter(|e| e.get("dataVolume").is_some())
                        .filter_map(|e| e.get("name").and_then(Value::as_str).map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        for n in dv_names(desired).into_iter().chain(dv_names(live)) {
            copy_disk(w, desired, &n);
        }
    }
    for s in steps {
        match s.change {
            Change::Stop | Change::Start => copy_field(w, live, "/spec/runStrategy"),
            Change::Update if s.item.as_deref() == Some("runStrategy") => {
                copy_field(w, live, "/spec/runStrategy");
            }
            Change::Suspend => copy_field(w, live, START_STRATEGY),
            Change::Update if s.item.as_deref() == Some("startStrategy") => {
                copy_field(w, live, START_STRATEGY);
            }
            Change::Cpu => {
                if let Some(v) = live.pointer("/spec/template/spec/domain/cpu") {
                    set_pointer(w, "/spec/template/spec/domain/cpu", v.clone());
                }
            }
            Change::Memory => {
                if let Some(v) = live.pointer("/spec/template/spec/domain/memory") {
                    set_pointer(w, "/spec/template/spec/domain/memory", v.clone());
                }
            }
            Change::Disk => {
                if let Some(name) = &s.item {
                    copy_disk(w, live, name);
                }
            }
            Change::NicAttach | Change::NicDetach | Change::NicChange => {
                if let Some(name) = &s.item {
                    copy_nic(w, live, name);
                }
            }
            _ => {}
        }
    }
}

/// Fields KubeVirt's webhooks set on a VM at creation (`kubevirt-facts.md` §6). The fleet
/// never declares them; server-side apply would remove them from a VM Wukong created (the
/// webhook's additions are the creator's), which KubeVirt would see as a template change.
const KUBEVIRT_FIELDS: &[&str] = &[
    "/spec/template/spec/domain/firmware/uuid",
    "/spec/template/spec/domain/firmware/serial",
    "/spec/template/spec/architecture",
    "/spec/template/spec/domain/machine/type",
];

/// Carry the live VM's KubeVirt-set fields into the manifest to write, where it has none.
fn keep_kubevirt_fields(w: &mut Value, live: &Value) {
    for pointer in KUBEVIRT_FIELDS {
        if w.pointer(pointer).is_none()
            && let Some(v) = live.pointer(pointer)
        {
            set_pointer(w, pointer, v.clone());
        }
    }
}

const START_STRATEGY: &str = "/spec/template/spec/startStrategy";

/// Set the field at `pointer` in `w` to its value in `from`, or remove it when `from` has none.
fn copy_field(w: &mut Value, from: &Value, pointer: &str) {
    match from.pointer(pointer) {
        Some(v) => set_pointer(w, pointer, v.clone()),
        None => {
            if let Some((parent, key)) = pointer.rsplit_once('/')
                && let Some(p) = w.pointer_mut(parent).and_then(Value::as_object_mut)
            {
                p.remove(key);
            }
        }
    }
}

fn absent(w: &mut Value, name: &str) {
    if let Some(list) = w.pointer_mut(IFACES).and_then(Value::as_array_mut)
        && let Some(iface) = list
            .iter_mut()
            .find(|e| e.get("name").and_then(Value::as_str) == Some(name))
        && let Some(m) = iface.as_object_mut()
    {
        m.insert("state".into(), "absent".into());
    }
}

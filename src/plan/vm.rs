//! One VM's changes: compare the desired and the live VirtualMachine part by part, classify each
//! difference the way KubeVirt will treat it (`kubevirt-facts.md`), and work out the exact
//! manifest to write, with blocked and refused changes taken back out.

use std::collections::BTreeMap;

use serde_json::Value;

use super::cluster::{self, Instance, KubeVirtConfig};
use super::shape::{self, Binding, DiskShape, Nic, VmShape, set_pointer};
use super::view;
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
#[derive(Debug, Clone, Default, PartialEq)]
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
    let desired = shape::normalize(input.desired);
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

    // Only what the fleet declares, and what Wukong set before and no longer declares: the
    // fields other writers add are never drift (`view`).
    let live_full = shape::normalize(&view::live_view(&desired, live_vm));
    let unplugging = shape::unplugging(live_vm);
    // Cloned only while an unplug is in flight: the common case compares `live_full` itself.
    let stripped;
    let live_n = if unplugging.is_empty() {
        &live_full
    } else {
        let mut v = live_full.clone();
        shape::without_nics(&mut v, &unplugging);
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
        architecture: str_at(live_vm, &["spec", "template", "spec", "architecture"]),
    };

    let mut steps = Vec::new();
    power_steps(&ctx, &d, &l, &mut steps);
    cpu_step(&ctx, &d, &l, input.vm.spec.hot_plug, &mut steps);
    memory_step(&ctx, &desired, &d, &l, input.vm.spec.hot_plug, &mut steps);
    disk_steps(&ctx, input, &d, &l, &mut steps);
    nic_steps(&ctx, &d, &l, &mut steps);
    hold_missing_networks(input, &mut steps);
    // Equal manifests cannot differ in the parts the typed comparisons leave over.
    if desired != *live_n {
        rest_steps(&ctx, &desired, live_n, &mut steps);
    }
    pause_steps(&ctx, &d, &l, &mut steps);
    pending_restart(&ctx, &d, &mut steps);

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
    /// The template's `architecture`, as KubeVirt's webhook filled it in (facts §6).
    architecture: Option<&'a str>,
}

/// What a live change needs from KubeVirt besides its own checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    /// CPU and memory: the VM controller's LiveUpdate handlers, gated by RestartRequired, then a
    /// migration by the workload updater (facts §1, §2).
    Hotplug,
    /// NICs: the network synchroniser, which neither the rollout strategy nor RestartRequired
    /// gates, then a migration unless Multus' dynamic networks controller plugs in place
    /// (facts §3, §6).
    Nic,
    /// nodeSelector, affinity, tolerations: patched into the running instance by the LiveUpdate
    /// handlers (gated like CPU), applied at its next migration or restart (facts §6).
    Scheduling,
}

const NOT_RUNNING: &str = "the VM is not running: takes effect when it next starts";

impl Ctx<'_> {
    /// Why a live change on `path` cannot happen now (the checks after the field's own).
    fn blocker(&self, path: Path) -> Option<String> {
        if matches!(path, Path::Hotplug | Path::Scheduling)
            && let Some(msg) = &self.restart_pending
            && self.kv.blocks_live_changes(msg)
        {
            return Some(format!(
                "the VM already has RestartRequired ({msg}); KubeVirt makes no live CPU, memory or scheduling change until it restarts"
            ));
        }
        let instance = self.instance?;
        if !instance.running {
            return Some("the VM's instance is not Running yet".into());
        }
        let cluster = match path {
            Path::Hotplug => self.kv.live_blocker(),
            Path::Nic => self.kv.migration_blocker(),
            Path::Scheduling => (!self.kv.live_update).then(|| {
                "the cluster's vmRolloutStrategy is Stage: template changes wait for a restart"
                    .to_owned()
            }),
        };
        if cluster.is_some() || path == Path::Scheduling {
            return cluster;
        }
        instance
            .migratable
            .as_ref()
            .err()
            .map(|m| format!("the VM is not live-migratable: {m}"))
    }

    /// Class and reason of a change that is live when `check` passes and KubeVirt can carry it
    /// out on `path`.
    fn classify(&self, check: Result<String, String>, path: Path) -> (Class, String) {
        if !self.stays_running {
            return (Class::Live, NOT_RUNNING.into());
        }
        match check {
            Err(why) => (Class::Restart, why),
            Ok(how) => match self.blocker(path) {
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
        // `handleCPUChangeRequest` (kv:`pkg/virt-controller/watch/vm/vm.go` L622-673, facts §1).
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
            Some(_) if ctx.architecture == Some("arm64") => Err(
                "KubeVirt has no CPU hot-plug on arm64 (ARM doesn't support CPU hotplug)".into(),
            ),
            Some(m) => Ok(format!(
                "hot-plugged through a live migration (maxSockets {m})"
            )),
        }
    };
    let (class, reason) = ctx.classify(check(), Path::Hotplug);
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

/// KubeVirt's `memory.ValidateLiveUpdateMemory` (kv:`pkg/liveupdate/memory/memory.go` L53-107,
/// facts §2), in its order and with its messages, over the VM template to be written and the
/// running instance's `maxGuest`. The VM controller turns a failure into RestartRequired
/// `memory hotplug not supported, <message>` (kv:`pkg/virt-controller/watch/vm/vm.go`
/// L3501-3503).
fn validate_live_memory(
    desired: &Value,
    guest: Quantity,
    max_guest: Quantity,
    architecture: Option<&str>,
) -> Result<(), &'static str> {
    /// `HotplugBlockAlignmentBytes`, and `Hotplug1GHugePagesBlockAlignmentBytes` with 1Gi pages.
    const ALIGN: u64 = 2 << 20;
    const ALIGN_1G_PAGES: u64 = 1 << 30;
    /// `requiredMinGuestMemory`.
    const MIN_GUEST: u64 = 1 << 30;
    let domain = desired
        .pointer("/spec/template/spec/domain")
        .unwrap_or(&Value::Null);
    if domain.pointer("/cpu/realtime").is_some() {
        return Err("Memory hotplug is not compatible with realtime VMs");
    }
    if domain
        .pointer("/cpu/numa/guestMappingPassthrough")
        .is_some()
    {
        return Err("Memory hotplug is not compatible with guest mapping passthrough");
    }
    if domain.get("launchSecurity").is_some() {
        return Err("Memory hotplug is not compatible with encrypted VMs");
    }
    let one_gi_pages = str_at(domain, &["memory", "hugepages", "pageSize"]) == Some("1Gi");
    let align = if one_gi_pages { ALIGN_1G_PAGES } else { ALIGN };
    if guest > max_guest {
        return Err("Guest memory is greater than the configured maxGuest memory");
    }
    let aligned = |q: Quantity| q.as_u64().is_some_and(|b| b % align == 0);
    if !aligned(guest) {
        return Err(if one_gi_pages {
            "Guest memory must be 1Gi aligned"
        } else {
            "Guest memory must be 2Mi aligned"
        });
    }
    if !aligned(max_guest) {
        return Err(if one_gi_pages {
            "MaxGuest must be 1Gi aligned"
        } else {
            "MaxGuest must be 2Mi aligned"
        });
    }
    // The webhook fills in the architecture (facts §6); a VM without one is not judged here.
    if architecture.is_some_and(|a| a != "amd64") {
        return Err("Memory hotplug is only available for x86_64 VMs");
    }
    if guest.as_u64().is_none_or(|b| b < MIN_GUEST) {
        return Err("Memory hotplug is only available for VMs with at least 1Gi of guest memory");
    }
    Ok(())
}

fn memory_step(
    ctx: &Ctx<'_>,
    desired: &Value,
    d: &VmShape,
    l: &VmShape,
    hot_plug: bool,
    steps: &mut Vec<Step>,
) {
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
        validate_live_memory(desired, guest, max, ctx.architecture)
            .map_err(|e| {
                format!(
                    "memory hotplug not supported, {e} ({guest}; the running instance has maxGuest {max})"
                )
            })?;
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
    let (class, reason) = ctx.classify(check(), Path::Hotplug);
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
            steps.push(match (refusal, ctx.kv.expand_disks()) {
                (Some(why), _) => step(Class::Refused, why),
                // Growing the PVC alone would leave the VM at its old size until the cluster
                // enables the gate: wait for that instead.
                (None, Err(why)) => step(Class::Blocked, why),
                (None, Ok(())) => step(
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
    // NIC hot-plug is not gated by RestartRequired or the rollout strategy (facts §3), but it
    // needs a migration unless the cluster runs Multus' dynamic networks controller.
    let migration = |how: &str| -> Result<String, String> {
        match ctx.kv.migration_blocker() {
            Some(why) => Err(why),
            None => Ok(how.to_owned()),
        }
    };
    // A VM that declares no interface got the default pod network at start (kv:
    // `pkg/network/vmispec/defaults.go` L33-58); adding one drops that default, which KubeVirt
    // sees as a removed interface (`haveCurrentIfacesBeenRemoved`, kv:
    // `pkg/network/vmliveupdate/restart.go` L81-89, facts §3).
    let no_interfaces = l.nics.is_empty();
    for (name, want) in &desired_nics {
        match live_nics.get(name) {
            None => {
                let check = match &want.binding {
                    _ if no_interfaces => Err("the VM declares no interfaces, so its instance runs KubeVirt's default pod network; declaring interfaces replaces it, which needs a restart".into()),
                    Binding::Bridge => migration("hot-plugged (bridge binding)"),
                    Binding::Sriov => migration("hot-plugged through a live migration (SR-IOV)"),
                    Binding::Plugin(p) if p == "macvtap" => Err("macvlan networks use KubeVirt's macvtap binding plugin (KubeVirt's bridge binding does not work with macvlan), which cannot be hot-plugged".into()),
                    other => Err(format!(
                        "only bridge and SR-IOV interfaces can be hot-plugged, not {}",
                        other.describe()
                    )),
                };
                let (class, reason) = ctx.classify(check, Path::Nic);
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
                    if ctx.kv.nad_swap_live() {
                        migration(
                            "the network attachment changes through a live migration (LiveUpdateNADRef)",
                        )
                    } else {
                        Err(format!(
                            "{} marks a change of an interface's network attachment RestartRequired (live NAD swap needs v1.8 with LiveUpdateNADRef)",
                            ctx.kv.describe()
                        ))
                    }
                } else {
                    Err("an existing interface's binding, MAC or network changes".into())
                };
                let (class, reason) = ctx.classify(check, Path::Nic);
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
        let (class, reason) = ctx.classify(check, Path::Nic);
        steps.push(step(class, reason));
    }
}

/// Where a live VM (as [`view::live_view`] shows it against `manifest`) still differs from
/// `manifest` in what update steps change: labels, annotations and the template's metadata,
/// `runStrategy`, and the scheduling fields. Empty once a write of `manifest` was stored; the
/// executor checks it so that a write the API server did not keep (a field another manager
/// owns) is never reported done.
///
/// `before` is the VM as the plan saw it: what it had and `manifest` drops must be gone from
/// the stored VM, not only from Wukong's managed fields (another manager may still own it).
pub fn unstored_updates(manifest: &Value, live: &Value, before: Option<&Value>) -> Vec<String> {
    let declared = shape::normalize(manifest);
    let seen = shape::normalize(&view::live_view(&declared, live));
    let (dt, dother) = shape::rest(&declared);
    let (lt, lother) = shape::rest(&seen);
    let mut paths = Vec::new();
    if let Some(before) = before {
        let (_, bother) = shape::rest(before);
        let (_, raw) = shape::rest(&shape::normalize(live));
        let mut removed = Vec::new();
        removed_keys(&bother, &dother, &mut Vec::new(), &mut removed);
        for path in removed {
            if path
                .iter()
                .try_fold(&raw, |v, k| v.get(k.as_str()))
                .is_some()
            {
                paths.push(format!("{} (still there)", path.join(".")));
            }
        }
    }
    differing_paths(&lother, &dother, "", &mut paths);
    differing_paths(
        &scheduling_split(&lt).0,
        &scheduling_split(&dt).0,
        "spec.template.spec",
        &mut paths,
    );
    differing_paths(
        seen.pointer("/spec/runStrategy").unwrap_or(&Value::Null),
        declared
            .pointer("/spec/runStrategy")
            .unwrap_or(&Value::Null),
        "spec.runStrategy",
        &mut paths,
    );
    paths
}

/// The key paths `before` has and `after` does not.
fn removed_keys(before: &Value, after: &Value, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    let Some(b) = before.as_object() else {
        return;
    };
    for (k, v) in b {
        path.push(k.clone());
        match after.get(k) {
            // A whole map goes: name its keys.
            None if v.as_object().is_some_and(|m| !m.is_empty()) => {
                removed_keys(v, &Value::Object(serde_json::Map::new()), path, out);
            }
            None => out.push(path.clone()),
            Some(a) => removed_keys(v, a, path, out),
        }
        path.pop();
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
        // A map on one side only: name the keys that come or go.
        (Value::Object(x), Value::Null) | (Value::Null, Value::Object(x)) if !x.is_empty() => {
            for k in x.keys() {
                differing_paths(&x[k], &Value::Null, &format!("{prefix}.{k}"), out);
            }
        }
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

/// Like [`differing_paths`], with the values on both sides (`Null`: absent).
fn differing_values(a: &Value, b: &Value, prefix: &str, out: &mut Vec<(String, Value, Value)>) {
    const MAX: usize = 3;
    if out.len() >= MAX || a == b {
        return;
    }
    match (a, b) {
        (Value::Object(x), Value::Null) if !x.is_empty() => {
            for (k, v) in x {
                differing_values(v, &Value::Null, &format!("{prefix}.{k}"), out);
            }
        }
        (Value::Null, Value::Object(y)) if !y.is_empty() => {
            for (k, v) in y {
                differing_values(&Value::Null, v, &format!("{prefix}.{k}"), out);
            }
        }
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                differing_values(
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                    &format!("{prefix}.{k}"),
                    out,
                );
            }
        }
        _ => out.push((
            prefix.trim_start_matches('.').to_owned(),
            a.clone(),
            b.clone(),
        )),
    }
}

/// The old and the new values of changed fields, as a plan shows them (`"blue" → "green"`,
/// `(none)` for a field that comes or goes): the values alone for one field, `path=value`
/// pairs for several.
fn old_and_new(values: &[(String, Value, Value)]) -> (String, String) {
    /// Longest value shown; a long annotation is cut, the diff has it whole.
    const MAX_VALUE: usize = 60;
    let show = |v: &Value| -> String {
        if v.is_null() {
            return "(none)".into();
        }
        let text = v.to_string();
        if text.chars().count() > MAX_VALUE {
            let cut: String = text.chars().take(MAX_VALUE).collect();
            format!("{cut}…")
        } else {
            text
        }
    };
    match values {
        [(_, old, new), ..] if values.iter().all(|(_, o, n)| o == old && n == new) => {
            // One change in several places (a label on the VM and its template).
            (show(old), show(new))
        }
        _ => {
            let side = |pick: fn(&(String, Value, Value)) -> &Value| {
                values
                    .iter()
                    .map(|v| format!("{}={}", v.0, show(pick(v))))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            (side(|v| &v.1), side(|v| &v.2))
        }
    }
}

/// Template fields KubeVirt's LiveUpdate handlers copy into the running instance
/// (`handleAffinityChangeRequest`, `handleTolerationsChangeRequest`, kv:
/// `pkg/virt-controller/watch/vm/vm.go` L749-806; the live-updatable set of
/// `syncRestartRequired`, L3026-3041; facts §6). They take effect at the instance's next
/// migration or restart; nothing moves now.
pub const SCHEDULING_FIELDS: [&str; 3] = ["nodeSelector", "affinity", "tolerations"];

/// The item of the step that changes [`SCHEDULING_FIELDS`]; the step of every other template
/// field has the item `spec.template.spec: <paths>`.
const SCHEDULING_ITEM: &str = "spec.template.spec scheduling";

/// Split a template spec into its scheduling fields and the rest.
fn scheduling_split(tspec: &Value) -> (Value, Value) {
    let mut rest = tspec.clone();
    let mut scheduling = serde_json::Map::new();
    if let Some(m) = rest.as_object_mut() {
        for key in SCHEDULING_FIELDS {
            if let Some(v) = m.remove(key) {
                scheduling.insert(key.into(), v);
            }
        }
    }
    (Value::Object(scheduling), rest)
}

fn rest_steps(ctx: &Ctx<'_>, desired: &Value, live: &Value, steps: &mut Vec<Step>) {
    let (dt, dother) = shape::rest(desired);
    let (lt, lother) = shape::rest(live);
    let (dsched, dt) = scheduling_split(&dt);
    let (lsched, lt) = scheduling_split(&lt);
    if dsched != lsched {
        let mut paths = Vec::new();
        differing_paths(&lsched, &dsched, "", &mut paths);
        let (class, reason) = ctx.classify(
            Ok("KubeVirt copies it into the running instance (LiveUpdate); it takes effect at the instance's next migration or restart".into()),
            Path::Scheduling,
        );
        steps.push(
            Step::new(ctx.id, Change::Update, class, reason)
                .item(format!("{SCHEDULING_ITEM}: {}", paths.join(", "))),
        );
    }
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
        let mut values = Vec::new();
        differing_values(&lother, &dother, "", &mut values);
        let (from, to) = old_and_new(&values);
        steps.push(
            Step::new(
                ctx.id,
                Change::Update,
                Class::Live,
                "metadata changes; no restart",
            )
            .item(paths.join(", "))
            .values(Some(from), Some(to)),
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

/// The VM already carries the fleet's CPU or memory, but its running instance does not and
/// KubeVirt holds the change for a restart (RestartRequired): a restart Wukong planned earlier
/// and never carried out (an apply stopped between the write and the restart), or a hot-plug
/// that failed. Nothing differs between the fleet and the VM, yet the running VM is not what
/// the fleet declares: the restart is still to do.
fn pending_restart(ctx: &Ctx<'_>, d: &VmShape, steps: &mut Vec<Step>) {
    let (Some(instance), Some(message)) = (ctx.instance, &ctx.restart_pending) else {
        return;
    };
    if !ctx.stays_running || steps.iter().any(|s| s.class == Class::Restart) {
        return;
    }
    let mut differs = Vec::new();
    if d.cpu.sockets != instance.sockets {
        differs.push(format!(
            "{} CPU sockets where the fleet declares {}",
            instance.sockets, d.cpu.sockets
        ));
    }
    if let (Some(want), Some(have)) = (d.memory.guest, instance.guest)
        && want != have
    {
        differs.push(format!("{have} of memory where the fleet declares {want}"));
    }
    if differs.is_empty() {
        return;
    }
    steps.push(
        Step::new(
            ctx.id,
            Change::Update,
            Class::Restart,
            format!(
                "the VM already declares it, but its running instance has {}; KubeVirt holds the change for a restart (RestartRequired: {message})",
                differs.join(" and ")
            ),
        )
        .item("running instance"),
    );
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
    let update_of = |prefix: &str| {
        steps.iter().any(|s| {
            s.change == Change::Update && s.item.as_deref().is_some_and(|i| i.starts_with(prefix))
        })
    };
    if update_of("spec.template.spec:") {
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
        // The scheduling fields have their own step, and startStrategy its own handling.
        for key in SCHEDULING_FIELDS.into_iter().chain(["startStrategy"]) {
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
    if update_of(SCHEDULING_ITEM) {
        for key in SCHEDULING_FIELDS {
            copy_field(w, live, &format!("/spec/template/spec/{key}"));
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

//! The executor: carries a plan out against a cluster and proves every change on the running
//! VM before it goes on (design §6, `kubevirt-facts.md` §5–§6).
//!
//! Order: network attachments first, then the VMs — up to `maxParallel` at once, each VM's
//! steps in the plan's order, a set's restart batches one after the other — then deletes
//! and network-attachment garbage last. A VM is written step by step: each write is the
//! plan's manifest with the steps still to come taken back to their live values
//! ([`plan::vm::take_back`]), so KubeVirt sees the changes in the planned order (a restart-
//! class change written early would raise `RestartRequired` and block the live ones).
//!
//! A live change that KubeVirt turns into `RestartRequired` (or a failed hot-plug) falls back
//! to a restart where the plan says the fleet allows it, and fails otherwise; both are
//! reported. A failed step halts the rest of its VM; a failed batch halts its set's rollout;
//! other VMs go on. A stop request (Ctrl-C) lets the steps in flight finish and starts no
//! new one.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::future::{BoxFuture, join_all};
use futures_util::stream::{FuturesUnordered, StreamExt};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use super::calls::{CallError, Cluster};
use super::report::{Report, StepResult, what};
use super::verify::{self, Verdict};
use crate::identity::{Kind, LABEL_SET, ObjectRef};
use crate::live::watch::{Changes, Touched};
use crate::live::{LiveKind, label, owned_by, quantity_at, str_at};
use crate::plan::shape::{normalize, unplugging, without_nics};
use crate::plan::view::live_view;
use crate::plan::vm::{take_back, unstored_updates};
use crate::plan::volumes::{self, ANNOTATION_DISK_SIZE};
use crate::plan::{Change, Class, Plan, Step, references};
use crate::quantity::Quantity;

/// Longest interval between verification reads.
const MAX_POLL: Duration = Duration::from_secs(2);

/// While a wait follows watch events, how long it goes without a change before it reads
/// again anyway: a safety net for a change the watches could not report (one of them being
/// re-established). Far longer than the polling it replaces, as it rarely finds anything.
const EVENT_FALLBACK: Duration = Duration::from_secs(5);

/// How long each kind of step may take to show on the VM.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// A write with nothing to wait for, or a network attachment to appear.
    pub write: Duration,
    /// CPU and memory hot-plug, NIC plug and unplug (a live migration each).
    pub hotplug: Duration,
    /// A PVC to grow and the VM to see it.
    pub disk: Duration,
    /// Start, stop, restart, and a new VM to come up (its disks are imported first).
    pub power: Duration,
    /// Pause and unpause.
    pub pause: Duration,
    /// A VM or network attachment to be gone.
    pub delete: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            write: Duration::from_secs(60),
            hotplug: Duration::from_secs(600),
            disk: Duration::from_secs(600),
            power: Duration::from_secs(900),
            pause: Duration::from_secs(120),
            delete: Duration::from_secs(600),
        }
    }
}

impl Timeouts {
    /// The same timeout for every kind of step.
    pub fn all(d: Duration) -> Timeouts {
        Timeouts {
            write: d,
            hotplug: d,
            disk: d,
            power: d,
            pause: d,
            delete: d,
        }
    }
}

/// Asks a running apply to stop: steps in flight finish, no new one starts ([`request`]).
/// [`supersede`] asks more: a newer revision is to be applied, so the steps in flight also stop
/// waiting for their change to show (their writes, single API calls, are never cut short); the
/// apply returns at once and the next plan, made from the cluster as it is, takes over. A
/// restart that holds one of its set's `maxUnavailable` permits still waits for its instance:
/// the next apply must not take the set below its availability.
///
/// [`request`]: StopSignal::request
/// [`supersede`]: StopSignal::supersede
#[derive(Debug, Clone)]
pub struct StopSignal(Arc<Signals>);

#[derive(Debug)]
struct Signals {
    stop: AtomicBool,
    superseded: tokio::sync::watch::Sender<bool>,
}

impl Default for StopSignal {
    fn default() -> Self {
        StopSignal(Arc::new(Signals {
            stop: AtomicBool::new(false),
            superseded: tokio::sync::watch::channel(false).0,
        }))
    }
}

impl StopSignal {
    pub fn request(&self) {
        self.0.stop.store(true, Ordering::SeqCst);
    }

    pub fn requested(&self) -> bool {
        self.0.stop.load(Ordering::SeqCst)
    }

    /// Stop starting steps and stop waiting on those in flight.
    pub fn supersede(&self) {
        self.request();
        self.0.superseded.send_replace(true);
    }

    pub fn superseded(&self) -> bool {
        *self.0.superseded.borrow()
    }

    /// Resolves once [`StopSignal::supersede`] was called.
    async fn wait_superseded(&self) {
        let mut rx = self.0.superseded.subscribe();
        // The sender lives as long as `self`: `wait_for` only ends by the value.
        let _ = rx.wait_for(|s| *s).await;
    }
}

/// Why a step's verification was abandoned.
const SUPERSEDED: &str = "written; not verified: a newer revision superseded this apply, and its plan starts from the cluster as it is";

/// What the executor reports while it works (for progress displays and logs).
#[derive(Debug)]
pub enum Event<'a> {
    Started(&'a Step),
    /// Still waiting for the change to show; says what is missing.
    Waiting(&'a Step, &'a str),
    Finished(&'a StepResult),
}

pub type Progress = Arc<dyn Fn(&Event<'_>) + Send + Sync>;

/// How to run a plan.
#[derive(Clone)]
pub struct Options {
    /// VMs changed at once; the plan's (the fleet's `maxParallel`) when `None`.
    pub max_parallel: Option<usize>,
    pub timeouts: Timeouts,
    /// First interval between verification reads; it doubles up to two seconds while a
    /// change takes its time.
    pub poll: Duration,
    pub stop: StopSignal,
    pub progress: Option<Progress>,
    /// The changes open watches see (the daemon's): while they are in sync, a verification
    /// wait reads again when an object it looks at changed, instead of polling. `None` (the
    /// CLI): polling.
    pub changes: Option<Changes>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_parallel: None,
            timeouts: Timeouts::default(),
            poll: Duration::from_millis(50),
            stop: StopSignal::default(),
            progress: None,
            changes: None,
        }
    }
}

/// Carry out `plan` against `cluster`. Never panics on cluster errors: every step ends in
/// the report as done, failed (with the reason) or skipped.
pub async fn execute(cluster: &Cluster, plan: &Plan, options: &Options) -> Report {
    let ex = Executor {
        cluster,
        plan,
        options,
        interrupted: AtomicBool::new(false),
        gates: plan
            .max_unavailable
            .iter()
            .map(|(set, n)| {
                let n = usize::try_from(*n)
                    .unwrap_or(usize::MAX)
                    .min(Semaphore::MAX_PERMITS);
                (set.clone(), Semaphore::new(n.max(1)))
            })
            .collect(),
    };
    let mut results = Vec::new();

    let (nads_first, rest): (Vec<usize>, Vec<usize>) = (0..plan.steps.len())
        .partition(|&i| matches!(plan.steps[i].change, Change::NadCreate | Change::NadUpdate));
    let (deletes, changes): (Vec<usize>, Vec<usize>) = rest
        .into_iter()
        .partition(|&i| matches!(plan.steps[i].change, Change::Delete | Change::NadDelete));

    for i in nads_first {
        results.push((i, ex.run_alone(i).await));
    }
    results.extend(ex.run_vms(&changes).await);
    for i in deletes {
        results.push((i, ex.run_alone(i).await));
    }
    Report::new(plan, results, ex.interrupted.load(Ordering::SeqCst))
}

/// One VM's steps (indices into the plan), in order.
struct Unit {
    id: ObjectRef,
    steps: Vec<usize>,
}

struct Executor<'a> {
    cluster: &'a Cluster,
    plan: &'a Plan,
    options: &'a Options,
    interrupted: AtomicBool,
    /// Per set: permits for members down at once.
    gates: BTreeMap<String, Semaphore>,
}

/// What verification reads on each poll.
#[derive(Default)]
struct Observed {
    vm: Option<Value>,
    vmi: Option<Value>,
    pvc: Option<Value>,
}

impl Executor<'_> {
    fn emit(&self, event: Event<'_>) {
        if let Some(p) = &self.options.progress {
            p(&event);
        }
    }

    fn step(&self, i: usize) -> &Step {
        &self.plan.steps[i]
    }

    /// The set a VM belongs to, as `namespace/name`.
    fn set_of(&self, id: &ObjectRef) -> Option<String> {
        let w = self.plan.writes.get(id)?;
        label(w, LABEL_SET).map(|s| format!("{}/{s}", id.namespace))
    }

    /// Whether a step may start: not after a stop request.
    fn may_start(&self) -> bool {
        if self.options.stop.requested() {
            self.interrupted.store(true, Ordering::SeqCst);
            false
        } else {
            true
        }
    }

    /// A step on its own (network attachments, deletes).
    async fn run_alone(&self, i: usize) -> StepResult {
        let step = self.step(i);
        if !step.acts() {
            return StepResult::skipped(step, format!("{}: {}", step.class.as_str(), step.reason));
        }
        if !self.may_start() {
            return StepResult::skipped(step, "not started: the apply was interrupted");
        }
        self.timed(step, async {
            match step.change {
                Change::Delete | Change::NadDelete => self.delete(step).await,
                _ => self.write_nad(step).await,
            }
        })
        .await
    }

    async fn timed(
        &self,
        step: &Step,
        work: impl std::future::Future<Output = StepResult>,
    ) -> StepResult {
        self.emit(Event::Started(step));
        let start = Instant::now();
        let mut result = work.await;
        result.seconds = start.elapsed().as_secs_f64();
        self.emit(Event::Finished(&result));
        result
    }

    /// Every VM's changes: sets' restart batches in order, everything else side by side, at
    /// most `maxParallel` VMs at once.
    async fn run_vms(&self, indices: &[usize]) -> Vec<(usize, StepResult)> {
        let mut units: Vec<Unit> = Vec::new();
        for &i in indices {
            let id = &self.step(i).target;
            match units.iter_mut().find(|u| &u.id == id) {
                Some(u) => u.steps.push(i),
                None => units.push(Unit {
                    id: id.clone(),
                    steps: vec![i],
                }),
            }
        }
        let parallel = self
            .options
            .max_parallel
            .unwrap_or(usize::try_from(self.plan.max_parallel).unwrap_or(1))
            .clamp(1, Semaphore::MAX_PERMITS);
        let slots = Semaphore::new(parallel);

        let mut free = Vec::new();
        let mut rollouts: BTreeMap<String, BTreeMap<u32, Vec<Unit>>> = BTreeMap::new();
        for u in units {
            let batch = u.steps.iter().find_map(|&i| self.step(i).batch);
            match (batch, self.set_of(&u.id)) {
                (Some(b), Some(set)) => rollouts
                    .entry(set)
                    .or_default()
                    .entry(b)
                    .or_default()
                    .push(u),
                _ => free.push(u),
            }
        }

        let slots = &slots;
        let mut work: FuturesUnordered<BoxFuture<'_, Vec<(usize, StepResult)>>> =
            FuturesUnordered::new();
        for u in free {
            work.push(Box::pin(async move {
                let _slot = slots.acquire().await;
                self.run_unit(&u, None).await
            }));
        }
        for (set, batches) in rollouts {
            work.push(Box::pin(self.rollout(set, batches, slots)));
        }
        let mut out = Vec::new();
        while let Some(r) = work.next().await {
            out.extend(r);
        }
        out
    }

    /// A set's restart batches, one after the other; a failed batch halts the rest.
    async fn rollout(
        &self,
        set: String,
        batches: BTreeMap<u32, Vec<Unit>>,
        slots: &Semaphore,
    ) -> Vec<(usize, StepResult)> {
        let mut out = Vec::new();
        let mut halted: Option<String> = None;
        for (batch, units) in batches {
            if let Some(why) = &halted {
                for u in &units {
                    out.extend(self.run_unit(u, Some(why)).await);
                }
                continue;
            }
            let results = join_all(units.iter().map(|u| async move {
                let _slot = slots.acquire().await;
                self.run_unit(u, None).await
            }))
            .await;
            let failed: Vec<String> = units
                .iter()
                .zip(&results)
                .filter(|(_, r)| r.iter().any(|(_, s)| s.outcome == super::Outcome::Failed))
                .map(|(u, _)| u.id.name.clone())
                .collect();
            if !failed.is_empty() {
                halted = Some(format!(
                    "the rollout of set {set} halted: batch {batch} failed ({})",
                    failed.join(", ")
                ));
            }
            out.extend(results.into_iter().flatten());
        }
        out
    }

    /// One VM's steps in order. `halted` skips them all with that reason.
    async fn run_unit(&self, unit: &Unit, halted: Option<&str>) -> Vec<(usize, StepResult)> {
        let steps: Vec<(usize, &Step)> = unit.steps.iter().map(|&i| (i, self.step(i))).collect();
        let mut out = Vec::new();
        let mut stop: Option<String> = halted.map(str::to_owned);
        let mut live: Option<Value> = None;
        let acting = steps.iter().any(|(_, s)| s.acts());
        let creating = steps
            .first()
            .is_some_and(|(_, s)| s.change == Change::Create);
        if acting && !creating && stop.is_none() && self.may_start() {
            match self.current_vm(&unit.id).await {
                Ok(v) => live = Some(v),
                Err(why) => stop = Some(why),
            }
        }
        for (k, &(i, step)) in steps.iter().enumerate() {
            let result = if !step.acts() {
                StepResult::skipped(step, format!("{}: {}", step.class.as_str(), step.reason))
            } else if let Some(why) = &stop {
                StepResult::skipped(step, format!("not attempted: {why}"))
            } else if !self.may_start() {
                StepResult::skipped(step, "not started: the apply was interrupted")
            } else {
                let pending: Vec<&Step> = steps[k + 1..]
                    .iter()
                    .map(|(_, s)| *s)
                    .filter(|s| s.acts())
                    .collect();
                let mut r = self
                    .timed(step, self.run_step(step, live.as_ref(), &pending))
                    .await;
                if pending.is_empty() && r.outcome == super::Outcome::Done {
                    self.finish_vm(step, live.as_ref(), &mut r).await;
                }
                if r.outcome == super::Outcome::Failed {
                    stop = Some(format!("{} failed", what(step)));
                }
                r
            };
            out.push((i, result));
        }
        out
    }

    /// After a VM's last step: write the plan's whole manifest if the staged writes held
    /// anything back (a `startStrategy` change).
    async fn finish_vm(&self, step: &Step, live: Option<&Value>, result: &mut StepResult) {
        let Some(write) = self.plan.writes.get(&step.target) else {
            return;
        };
        if step.target.kind != Kind::VirtualMachine
            || matches!(step.change, Change::Create | Change::Delete)
            || self.staged(step, live, &[]).as_ref() == Some(write)
        {
            return;
        }
        if let Err(e) = self.cluster.apply(&step.target, write).await {
            *result = call_failed(step, &e);
            result.detail = format!("the VM's final write failed: {}", result.detail);
        }
    }

    /// The live VM, normalised as the planner saw it; an error when it is gone or not ours.
    async fn current_vm(&self, id: &ObjectRef) -> Result<Value, String> {
        match self
            .cluster
            .get(LiveKind::VirtualMachine, &id.namespace, &id.name)
            .await
        {
            Ok(Some(vm)) if owned_by(&vm, &self.plan.fleet) => {
                // As the planner judged it: what the plan's manifest declares, not what other
                // writers added.
                let mut n = match self.plan.writes.get(id) {
                    Some(write) => normalize(&live_view(&normalize(write), &vm)),
                    None => normalize(&vm),
                };
                without_nics(&mut n, &unplugging(&vm));
                Ok(n)
            }
            Ok(Some(_)) => Err(format!(
                "{id} is not managed by fleet `{}`; Wukong never touches objects it does not own",
                self.plan.fleet
            )),
            Ok(None) => Err(format!("{id} no longer exists")),
            Err(e) => Err(format!("cannot read {id}: {e}")),
        }
    }

    /// The VM manifest for `step`: the plan's, with the steps still to come taken back.
    ///
    /// A change of `startStrategy` is held back too until the VM's last step is verified
    /// (or the step that is about it: suspend, restart, start, or the plan's own
    /// `startStrategy` update): KubeVirt marks it RestartRequired, which would stop the live
    /// CPU and memory changes before it.
    fn staged(&self, step: &Step, live: Option<&Value>, pending: &[&Step]) -> Option<Value> {
        let write = self.plan.writes.get(&step.target)?;
        let mut m = write.clone();
        if let Some(live) = live {
            let mut back: Vec<&Step> = pending.to_vec();
            let hold_start = Step {
                change: Change::Update,
                item: Some("startStrategy".into()),
                ..step.clone()
            };
            let writes_it = matches!(
                step.change,
                Change::Suspend | Change::Restart | Change::Start
            ) || (step.change == Change::Update
                && step.item.as_deref() == Some("startStrategy"));
            if !writes_it {
                back.push(&hold_start);
            }
            take_back(&mut m, write, live, &back);
        }
        Some(m)
    }

    /// Before an object is created (or a network attachment updated): it is not there without
    /// the fleet's labels (server-side apply would take it over), as read now.
    async fn not_taken(&self, step: &Step) -> Result<(), StepResult> {
        let id = &step.target;
        match self
            .cluster
            .get(LiveKind::from(id.kind), &id.namespace, &id.name)
            .await
        {
            Ok(Some(o)) if !owned_by(&o, &self.plan.fleet) => Err(StepResult::failed(
                step,
                format!(
                    "not created: {id} exists and is not managed by fleet `{}`",
                    self.plan.fleet
                ),
            )),
            Ok(_) => Ok(()),
            Err(e) => Err(call_failed(step, &e)),
        }
    }

    /// Before a VM is created: no volume its disks name exists without being this fleet's and
    /// this VM's (KubeVirt and CDI would adopt it), as read now.
    async fn volumes_free(&self, step: &Step, manifest: &Value) -> Result<(), StepResult> {
        let id = &step.target;
        self.not_taken(step).await?;
        for name in disk_names(manifest) {
            let ns = &id.namespace;
            let read = async {
                let pvc = self
                    .cluster
                    .get(LiveKind::PersistentVolumeClaim, ns, &name)
                    .await?;
                let dv = self.cluster.get(LiveKind::DataVolume, ns, &name).await?;
                Ok::<_, CallError>((pvc, dv))
            };
            let why = match read.await {
                Ok((Some(pvc), dv)) => {
                    volumes::claim_refusal(&pvc, dv.as_ref(), &self.plan.fleet, ns, &name, &id.name)
                }
                Ok((None, Some(dv))) => {
                    volumes::data_volume_refusal(&dv, &self.plan.fleet, ns, &name, &id.name)
                }
                Ok((None, None)) => None,
                Err(e) => return Err(call_failed(step, &e)),
            };
            if let Some(why) = why {
                return Err(StepResult::failed(step, format!("not created: {why}")));
            }
        }
        Ok(())
    }

    async fn write(&self, step: &Step, manifest: Option<Value>) -> Result<(), StepResult> {
        let Some(m) = manifest else {
            return Err(StepResult::failed(
                step,
                "the plan has no manifest to write for this VM",
            ));
        };
        self.cluster
            .apply(&step.target, &m)
            .await
            .map_err(|e| call_failed(step, &e))
    }

    async fn run_step(&self, step: &Step, live: Option<&Value>, pending: &[&Step]) -> StepResult {
        let id = &step.target;
        let staged = || self.staged(step, live, pending);
        let t = self.options.timeouts;
        match step.change {
            Change::Create => {
                let manifest = self.plan.writes.get(id).cloned();
                if let Some(m) = &manifest
                    && let Err(r) = self.volumes_free(step, m).await
                {
                    return r;
                }
                if let Err(r) = self.write(step, manifest).await {
                    return r;
                }
                let Some(w) = self.plan.writes.get(id) else {
                    return StepResult::failed(step, "no manifest");
                };
                let halted = str_at(w, &["spec", "runStrategy"]) == Some("Halted");
                let paused =
                    str_at(w, &["spec", "template", "spec", "startStrategy"]) == Some("Paused");
                let verdict = self
                    .wait(step, t.power, None, |o| {
                        match verify::power(o.vm.as_ref(), !halted) {
                            Verdict::Done if paused && !halted => {
                                verify::paused(o.vmi.as_ref(), true)
                            }
                            v => v,
                        }
                    })
                    .await;
                self.conclude(
                    step,
                    verdict,
                    if halted {
                        "created; Stopped as declared"
                    } else if paused {
                        "created; Running and paused (startStrategy: Paused)"
                    } else {
                        "created; Running"
                    },
                )
            }
            Change::Stop => {
                if let Err(r) = self.write(step, staged()).await {
                    return r;
                }
                let v = self
                    .wait(step, t.power, None, |o| verify::power(o.vm.as_ref(), false))
                    .await;
                self.conclude(step, v, "runStrategy Halted; printableStatus Stopped")
            }
            Change::Start => {
                if let Err(r) = self.write(step, staged()).await {
                    return r;
                }
                let v = self
                    .wait(step, t.power, None, |o| verify::power(o.vm.as_ref(), true))
                    .await;
                self.conclude(step, v, "started; printableStatus Running")
            }
            Change::Resume => {
                // Resuming for good also drops startStrategy: Paused (the staged manifest
                // keeps it while a suspend is still to come).
                if let Err(r) = self.write(step, staged()).await {
                    return r;
                }
                if let Err(r) = self
                    .action(step, "virtualmachineinstances", "unpause")
                    .await
                {
                    return r;
                }
                let v = self
                    .wait(step, t.pause, None, |o| {
                        verify::paused(o.vmi.as_ref(), false)
                    })
                    .await;
                self.conclude(step, v, "unpaused; the Paused condition is gone")
            }
            Change::Suspend => {
                if let Err(r) = self.write(step, staged()).await {
                    return r;
                }
                if !self.running(id).await {
                    return StepResult::done(
                        step,
                        "startStrategy: Paused written; the VM is not running and starts paused",
                    );
                }
                if let Err(r) = self.action(step, "virtualmachineinstances", "pause").await {
                    return r;
                }
                let v = self
                    .wait(step, t.pause, None, |o| {
                        verify::paused(o.vmi.as_ref(), true)
                    })
                    .await;
                self.conclude(step, v, "paused; the instance reports Paused=True")
            }
            Change::Restart => {
                if let Err(r) = self.write(step, staged()).await {
                    return r;
                }
                match self.restart(step).await {
                    Ok(how) => StepResult::done(step, how),
                    Err(r) => r,
                }
            }
            Change::Disk
                if step.class == Class::Live && step.from.is_some() && step.to.is_some() =>
            {
                self.grow_disk(step, staged()).await
            }
            Change::Delete | Change::NadDelete => self.delete(step).await,
            Change::NadCreate | Change::NadUpdate => self.write_nad(step).await,
            Change::Cpu
            | Change::Memory
            | Change::NicAttach
            | Change::NicDetach
            | Change::NicChange
            | Change::Disk
            | Change::Update => {
                let manifest = staged();
                let mut want = manifest.as_ref().and_then(|m| hotplug_target(step, m));
                if let Some(Want::Swapped { before, .. }) = &mut want {
                    // The swap is proven by a migration after this write.
                    *before = match self.observe(id, None).await {
                        Ok(o) => verify::migration_uid(o.vmi.as_ref()),
                        Err(e) => return call_failed(step, &e),
                    };
                }
                let written = manifest.clone();
                if let Err(r) = self.write(step, manifest).await {
                    return r;
                }
                if step.class == Class::Restart {
                    return StepResult::done(step, "written; the VM's restart applies it");
                }
                let Some(want) = want else {
                    return self.stored(step, written.as_ref(), live).await;
                };
                if !self.running(id).await {
                    return StepResult::done(
                        step,
                        "written; the VM is not running, so it takes effect when it starts",
                    );
                }
                self.hotplug(step, &want).await
            }
        }
    }

    /// A live update (labels, annotations, runStrategy, scheduling) is done only once the VM
    /// as stored carries it: server-side apply keeps a field another manager also owns, and
    /// such a write changes nothing.
    /// `before` is the VM as judged before the write (what Wukong owned included).
    async fn stored(
        &self,
        step: &Step,
        written: Option<&Value>,
        before: Option<&Value>,
    ) -> StepResult {
        let Some(written) = written else {
            return StepResult::done(step, "written");
        };
        let live = match self.observe(&step.target, None).await {
            Ok(o) => o.vm,
            Err(e) => return call_failed(step, &e),
        };
        let Some(live) = live else {
            return StepResult::failed(step, format!("{} is gone", step.target));
        };
        match unstored_updates(written, &live, before).as_slice() {
            [] => StepResult::done(step, "written; the VM as stored carries it"),
            paths => StepResult::failed(
                step,
                format!(
                    "written, but the VM as stored still differs at {}: another field manager owns it",
                    paths.join(", ")
                ),
            ),
        }
    }

    /// Wait for a hot-plug to show; fall back to a restart where allowed when KubeVirt asks
    /// for one.
    async fn hotplug(&self, step: &Step, want: &Want) -> StepResult {
        let t = self.options.timeouts.hotplug;
        let check = |o: &Observed| want.check(o);
        match self.wait(step, t, None, check).await {
            Ok(()) => StepResult::done(step, want.proof()),
            Err(Wait::Superseded) => StepResult::skipped(step, SUPERSEDED),
            Err(Wait::Timeout(why)) => StepResult::failed(
                step,
                format!("not seen on the VM within {}s: {why}", t.as_secs()),
            ),
            Err(Wait::Failed(why)) if self.plan.restartable.contains(&step.target) => {
                match self.restart(step).await {
                    Err(r) if r.outcome == super::Outcome::Skipped => r,
                    Err(r) => StepResult::failed(
                        step,
                        format!("{why}; the fallback restart failed: {}", r.detail),
                    ),
                    Ok(_) => match self.wait(step, t, None, check).await {
                        Ok(()) => StepResult::done(
                            step,
                            format!(
                                "{why}; restarted instead (the fleet allows restarting this VM): {}",
                                want.proof()
                            ),
                        ),
                        Err(Wait::Failed(w) | Wait::Timeout(w)) => StepResult::failed(
                            step,
                            format!("{why}; restarted, and still not applied: {w}"),
                        ),
                        Err(Wait::Superseded) => StepResult::skipped(step, SUPERSEDED),
                    },
                }
            }
            Err(Wait::Failed(why)) => StepResult::failed(
                step,
                format!(
                    "{why}; not restarted: the fleet does not allow restarting this VM (the change stays staged until it restarts)"
                ),
            ),
        }
    }

    /// Restart the VM through the `restart` subresource and wait for the new instance,
    /// holding one of its set's unavailability permits meanwhile.
    async fn restart(&self, step: &Step) -> Result<String, StepResult> {
        let id = &step.target;
        let gate = match self.set_of(id).and_then(|s| self.gates.get(&s)) {
            Some(gate) => Some(gate.acquire().await),
            None => None,
        };
        let old = match self
            .cluster
            .get(LiveKind::VirtualMachineInstance, &id.namespace, &id.name)
            .await
        {
            Ok(vmi) => vmi,
            Err(e) => return Err(call_failed(step, &e)),
        };
        let Some(old) = old else {
            // Nothing to restart: the VM starts (if it runs at all) with the spec as written.
            return Ok("the VM was not running; it starts with the new spec".into());
        };
        let old_uid = str_at(&old, &["metadata", "uid"]).map(str::to_owned);
        self.action(step, "virtualmachines", "restart").await?;
        // A set member's restart holds its availability permit until its instance is back,
        // even when the apply is superseded (see `StopSignal`).
        let v = self
            .wait_unless(
                step,
                self.options.timeouts.power,
                None,
                |o| verify::restarted(o.vm.as_ref(), o.vmi.as_ref(), old_uid.as_deref()),
                gate.is_none(),
            )
            .await;
        drop(gate);
        match self.conclude(
            step,
            v,
            "restarted: a new instance is Running and RestartRequired is gone",
        ) {
            r if r.outcome == super::Outcome::Done => Ok(r.detail),
            r => Err(r),
        }
    }

    /// Grow a PVC (never the DataVolume) to the request a disk of the fleet's size needs
    /// (`volumes::padded`: CDI's filesystem-overhead padding for Filesystem volumes), never
    /// lowering it; the fleet's size is recorded in an annotation for people to read. The PVC
    /// and its DataVolume are checked again, as read now, to be this fleet's and this VM's.
    async fn grow_disk(&self, step: &Step, manifest: Option<Value>) -> StepResult {
        let id = &step.target;
        let (Some(item), Some(to)) = (&step.item, &step.to) else {
            return StepResult::failed(step, "the step names no disk or size");
        };
        let Ok(to) = to.parse::<Quantity>() else {
            return StepResult::failed(step, "the step's size is not a quantity");
        };
        let Some(claim) = manifest.as_ref().and_then(|m| claim_of(m, item)) else {
            return StepResult::failed(step, format!("disk {item} has no claim in the manifest"));
        };
        let ns = &id.namespace;
        let read = async {
            let pvc = self
                .cluster
                .get(LiveKind::PersistentVolumeClaim, ns, &claim)
                .await?;
            let dv = self.cluster.get(LiveKind::DataVolume, ns, &claim).await?;
            let vmi = self
                .cluster
                .get(LiveKind::VirtualMachineInstance, ns, &id.name)
                .await?;
            Ok::<_, CallError>((pvc, dv, vmi))
        };
        let (pvc, dv, vmi) = match read.await {
            Ok((Some(pvc), dv, vmi)) => (pvc, dv, vmi),
            Ok((None, ..)) => {
                return StepResult::failed(step, format!("PVC {ns}/{claim} does not exist"));
            }
            Err(e) => return call_failed(step, &e),
        };
        if let Some(why) =
            volumes::claim_refusal(&pvc, dv.as_ref(), &self.plan.fleet, ns, &claim, &id.name)
        {
            return StepResult::failed(step, format!("not patched: {why}"));
        }
        let target = volumes::padded(to, volumes::overhead(&pvc, vmi.as_ref()));
        let requested = pvc
            .get("spec")
            .and_then(|s| quantity_at(s, &["resources", "requests", "storage"]));
        let mut patch =
            json!({"metadata": {"annotations": {ANNOTATION_DISK_SIZE: to.to_string()}}});
        // Never shrink: a PVC already at least this big only gets the annotation.
        if requested.is_none_or(|r| target > r) {
            patch["spec"] = json!({"resources": {"requests": {"storage": target.to_string()}}});
        }
        if let Err(e) = self
            .cluster
            .merge_patch(LiveKind::PersistentVolumeClaim, ns, &claim, &patch)
            .await
        {
            return call_failed(step, &e);
        }
        if let Err(r) = self.write(step, manifest).await {
            return r;
        }
        let v = self
            .wait(step, self.options.timeouts.disk, Some(&claim), |o| {
                verify::disk(o.pvc.as_ref(), o.vmi.as_ref(), &claim, target)
            })
            .await;
        let padding = if target == to {
            String::new()
        } else {
            format!(" (request {target}: CDI's filesystem overhead on top)")
        };
        self.conclude(
            step,
            v,
            &format!("PVC {claim} has {to}{padding}; the VM sees the new capacity (the guest grows its filesystem itself)"),
        )
    }

    async fn write_nad(&self, step: &Step) -> StepResult {
        let id = &step.target;
        if let Err(r) = self.not_taken(step).await {
            return r;
        }
        if let Err(r) = self.write(step, self.plan.writes.get(id).cloned()).await {
            return r;
        }
        match self
            .cluster
            .get(
                LiveKind::NetworkAttachmentDefinition,
                &id.namespace,
                &id.name,
            )
            .await
        {
            Ok(Some(_)) => StepResult::done(step, "written"),
            Ok(None) => StepResult::failed(step, "written, but it cannot be read back"),
            Err(e) => call_failed(step, &e),
        }
    }

    /// Delete an owned VM (releasing the disks it keeps first) or network attachment.
    async fn delete(&self, step: &Step) -> StepResult {
        let id = &step.target;
        let kind = LiveKind::from(id.kind);
        let object = match self.cluster.get(kind, &id.namespace, &id.name).await {
            Ok(Some(o)) => o,
            Ok(None) => return StepResult::done(step, "already gone"),
            Err(e) => return call_failed(step, &e),
        };
        if !owned_by(&object, &self.plan.fleet) {
            return StepResult::failed(
                step,
                format!(
                    "{id} is not managed by fleet `{}`; not deleted",
                    self.plan.fleet
                ),
            );
        }
        if kind == LiveKind::NetworkAttachmentDefinition {
            // Checked again now: a VM whose unplug did not finish still refers to it.
            match self.cluster.list_all(LiveKind::VirtualMachine).await {
                Ok(vms) => {
                    let users: Vec<String> = vms
                        .iter()
                        .filter(|vm| {
                            let ns = str_at(vm, &["metadata", "namespace"]).unwrap_or_default();
                            references(vm, ns, id)
                        })
                        .filter_map(|vm| str_at(vm, &["metadata", "name"]).map(str::to_owned))
                        .collect();
                    if !users.is_empty() {
                        return StepResult::skipped(
                            step,
                            format!("not deleted: still used by {}", users.join(", ")),
                        );
                    }
                }
                Err(e) => return call_failed(step, &e),
            }
        }
        let uid = str_at(&object, &["metadata", "uid"]).map(str::to_owned);
        let mut kept = Vec::new();
        if kind == LiveKind::VirtualMachine {
            // With pruneDisks the VM's DataVolumes go with it, except one another VM uses
            // (a disk shared by name, from before names were checked): it is kept too.
            let keep = if self.plan.prune_disks {
                self.shared_disks(id, &object).await
            } else {
                Ok(disk_names(&object))
            };
            let released = match keep {
                Ok(keep) => self.release_disks(id, &keep, uid.as_deref()).await,
                Err(e) => Err(e),
            };
            match released {
                Ok(k) => kept = k,
                Err(e) => return call_failed(step, &e),
            }
        }
        if let Err(e) = self
            .cluster
            .delete(kind, &id.namespace, &id.name, uid.as_deref())
            .await
        {
            return call_failed(step, &e);
        }
        let v = self
            .wait(step, self.options.timeouts.delete, None, |o| {
                if o.vm.is_some() || o.vmi.is_some() {
                    Verdict::Pending("still there".into())
                } else {
                    Verdict::Done
                }
            })
            .await;
        let detail = if kept.is_empty() {
            "deleted".to_owned()
        } else {
            format!("deleted; disks kept: {}", kept.join(", "))
        };
        self.conclude(step, v, &detail)
    }

    /// The VM's DataVolumes that another VM in its namespace uses as a volume.
    async fn shared_disks(&self, id: &ObjectRef, vm: &Value) -> Result<Vec<String>, CallError> {
        let names = disk_names(vm);
        if names.is_empty() {
            return Ok(names);
        }
        let others = self.cluster.list_all(LiveKind::VirtualMachine).await?;
        let used: std::collections::BTreeSet<&str> = others
            .iter()
            .filter(|o| {
                str_at(o, &["metadata", "namespace"]) == Some(&id.namespace)
                    && str_at(o, &["metadata", "name"]) != Some(&id.name)
            })
            .filter_map(|o| o.pointer("/spec/template/spec/volumes")?.as_array())
            .flatten()
            .filter_map(|v| {
                str_at(v, &["dataVolume", "name"])
                    .or_else(|| str_at(v, &["persistentVolumeClaim", "claimName"]))
            })
            .collect();
        Ok(names
            .into_iter()
            .filter(|n| used.contains(n.as_str()))
            .collect())
    }

    /// Take the VM's ownerReference off the DataVolumes `names` so that deleting the VM keeps
    /// them (and their PVCs), recording the VM they belonged to: a kept disk is given back
    /// only to a VM of that name (`volumes::ANNOTATION_KEPT_FROM`). Returns the DataVolumes
    /// kept.
    async fn release_disks(
        &self,
        id: &ObjectRef,
        names: &[String],
        uid: Option<&str>,
    ) -> Result<Vec<String>, CallError> {
        for name in names {
            let Some(dv) = self
                .cluster
                .get(LiveKind::DataVolume, &id.namespace, name)
                .await?
            else {
                continue;
            };
            let refs: Vec<Value> = dv
                .pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let others: Vec<Value> = refs
                .iter()
                .filter(|r| r.get("uid").and_then(Value::as_str) != uid)
                .cloned()
                .collect();
            if others.len() != refs.len() {
                let value = if others.is_empty() {
                    Value::Null
                } else {
                    Value::Array(others)
                };
                let patch = json!({"metadata": {
                    "ownerReferences": value,
                    "annotations": {volumes::ANNOTATION_KEPT_FROM: id.name},
                }});
                self.cluster
                    .merge_patch(LiveKind::DataVolume, &id.namespace, name, &patch)
                    .await?;
            }
        }
        Ok(names.to_vec())
    }

    async fn action(&self, step: &Step, resource: &str, action: &str) -> Result<(), StepResult> {
        let id = &step.target;
        match self
            .cluster
            .action(resource, &id.namespace, &id.name, action)
            .await
        {
            Ok(()) => Ok(()),
            // Already in the state asked for (a re-run after a crash): verification decides.
            Err(CallError::Conflict(m))
                if m.contains("already paused") || m.contains("not paused") =>
            {
                Ok(())
            }
            Err(e) => Err(call_failed(step, &e)),
        }
    }

    /// Whether the VM has an instance now.
    async fn running(&self, id: &ObjectRef) -> bool {
        matches!(
            self.cluster
                .get(LiveKind::VirtualMachineInstance, &id.namespace, &id.name)
                .await,
            Ok(Some(_))
        )
    }

    async fn observe(&self, id: &ObjectRef, claim: Option<&str>) -> Result<Observed, CallError> {
        let vm = self
            .cluster
            .get(id.kind.into(), &id.namespace, &id.name)
            .await?;
        let vmi = if id.kind == Kind::VirtualMachine {
            self.cluster
                .get(LiveKind::VirtualMachineInstance, &id.namespace, &id.name)
                .await?
        } else {
            None
        };
        let pvc = match claim {
            Some(c) => {
                self.cluster
                    .get(LiveKind::PersistentVolumeClaim, &id.namespace, c)
                    .await?
            }
            None => None,
        };
        Ok(Observed { vm, vmi, pvc })
    }

    /// Poll until `check` says done or failed, or the timeout passes, or the apply is
    /// superseded.
    async fn wait(
        &self,
        step: &Step,
        timeout: Duration,
        claim: Option<&str>,
        check: impl Fn(&Observed) -> Verdict,
    ) -> Result<(), Wait> {
        self.wait_unless(step, timeout, claim, check, true).await
    }

    /// [`Executor::wait`]; `cancellable`: give up when the apply is superseded.
    ///
    /// Between reads it sleeps, doubling the interval from [`Options::poll`] up to
    /// [`MAX_POLL`]; or, where watches are open ([`Options::changes`]), until one of the
    /// objects read changed (at most [`EVENT_FALLBACK`]). Either way every verdict comes from
    /// a fresh read, so the two decide alike.
    async fn wait_unless(
        &self,
        step: &Step,
        timeout: Duration,
        claim: Option<&str>,
        check: impl Fn(&Observed) -> Verdict,
        cancellable: bool,
    ) -> Result<(), Wait> {
        let superseded = || cancellable && self.options.stop.superseded();
        let deadline = Instant::now() + timeout;
        let mut last = String::from("nothing read yet");
        let mut interval = self.options.poll;
        // Subscribed before the first read, so no change after it goes unseen.
        let mut changes = self
            .options
            .changes
            .as_ref()
            .filter(|c| c.open())
            .map(Changes::subscribe);
        loop {
            if superseded() {
                return Err(Wait::Superseded);
            }
            match self.observe(&step.target, claim).await {
                Ok(o) => match check(&o) {
                    Verdict::Done => return Ok(()),
                    Verdict::Failed(why) => return Err(Wait::Failed(why)),
                    Verdict::Pending(why) => {
                        if why != last {
                            self.emit(Event::Waiting(step, &why));
                        }
                        last = why;
                    }
                },
                Err(e) => last = e.to_string(),
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Wait::Timeout(last));
            }
            let pause = async {
                match changes.as_mut() {
                    Some(rx) => {
                        let until = deadline.min(now + EVENT_FALLBACK);
                        if !changed(rx, &step.target, claim, until.into()).await {
                            // The watches are gone: poll from now on.
                            changes = None;
                        }
                    }
                    None => tokio::time::sleep(interval).await,
                }
            };
            if cancellable {
                tokio::select! {
                    () = pause => {}
                    () = self.options.stop.wait_superseded() => return Err(Wait::Superseded),
                }
            } else {
                pause.await;
            }
            interval = (interval * 2).min(MAX_POLL).max(self.options.poll);
        }
    }

    fn conclude(&self, step: &Step, verdict: Result<(), Wait>, proof: &str) -> StepResult {
        match verdict {
            Ok(()) => StepResult::done(step, proof),
            Err(Wait::Failed(why)) => StepResult::failed(step, why),
            Err(Wait::Timeout(why)) => StepResult::failed(step, format!("timed out: {why}")),
            Err(Wait::Superseded) => StepResult::skipped(step, SUPERSEDED),
        }
    }
}

/// Wait until a watch reports a change of `target` (its VM and instance, or the network
/// attachment) or of the claim `claim` in its namespace, or a re-list, or until `until`.
/// `false` when the watches are gone.
async fn changed(
    rx: &mut tokio::sync::broadcast::Receiver<Touched>,
    target: &ObjectRef,
    claim: Option<&str>,
    until: tokio::time::Instant,
) -> bool {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let touched = match tokio::time::timeout_at(until, rx.recv()).await {
            Err(_) => return true,
            Ok(Err(RecvError::Closed)) => return false,
            // Changes were missed: one of them may be ours.
            Ok(Err(RecvError::Lagged(_))) => return true,
            Ok(Ok(t)) => t,
        };
        let ours = match &touched {
            Touched::Listed(_) => true,
            Touched::Object(kind, key) => {
                key.namespace == target.namespace
                    && match kind {
                        LiveKind::VirtualMachine | LiveKind::VirtualMachineInstance => {
                            target.kind == Kind::VirtualMachine && key.name == target.name
                        }
                        LiveKind::NetworkAttachmentDefinition => {
                            target.kind == Kind::NetworkAttachmentDefinition
                                && key.name == target.name
                        }
                        LiveKind::PersistentVolumeClaim => claim == Some(key.name.as_str()),
                        _ => false,
                    }
            }
        };
        if ours {
            return true;
        }
    }
}

enum Wait {
    Failed(String),
    Timeout(String),
    /// The apply was superseded by a newer revision: stopped waiting.
    Superseded,
}

fn call_failed(step: &Step, e: &CallError) -> StepResult {
    let mut r = StepResult::failed(step, e.to_string());
    r.conflict = matches!(e, CallError::Conflict(_));
    r
}

/// What a hot-plug step waits for on the running VM.
enum Want {
    Sockets(u32),
    Guest(Quantity),
    Attached(String),
    Detached(String),
    /// Interface `name` moved to NAD `nad`, by a migration newer than `before`.
    Swapped {
        name: String,
        nad: String,
        before: Option<String>,
    },
}

impl Want {
    fn check(&self, o: &Observed) -> Verdict {
        let (vm, vmi) = (o.vm.as_ref(), o.vmi.as_ref());
        match self {
            Want::Sockets(s) => verify::cpu(vm, vmi, *s),
            Want::Guest(g) => verify::memory(vm, vmi, *g),
            Want::Attached(n) => verify::nic_attached(vm, vmi, n),
            Want::Detached(n) => verify::nic_detached(vm, vmi, n),
            Want::Swapped { name, nad, before } => {
                verify::nad_swapped(vm, vmi, name, nad, before.as_deref())
            }
        }
    }

    fn proof(&self) -> String {
        match self {
            Want::Sockets(s) => format!("the instance's currentCPUTopology has {s} sockets"),
            Want::Guest(g) => format!("the instance's memory.guestRequested is {g}"),
            Want::Attached(n) => format!("interface {n} is in the instance (infoSource domain)"),
            Want::Detached(n) => format!("interface {n} is gone from the instance and the VM"),
            Want::Swapped { name, nad, .. } => format!(
                "interface {name} moved to {nad}: MigrationRequired came and went and KubeVirt's migration completed"
            ),
        }
    }
}

/// What a live CPU, memory or NIC step waits for, read from the manifest written.
fn hotplug_target(step: &Step, manifest: &Value) -> Option<Want> {
    if step.class != Class::Live {
        return None;
    }
    let domain = manifest.pointer("/spec/template/spec/domain")?;
    match step.change {
        Change::Cpu => domain
            .pointer("/cpu/sockets")
            .and_then(Value::as_u64)
            .and_then(|s| u32::try_from(s).ok())
            .map(Want::Sockets),
        Change::Memory => quantity_at(domain, &["memory", "guest"]).map(Want::Guest),
        Change::NicAttach => step.item.clone().map(Want::Attached),
        // The only live interface change is a NAD swap (`plan::vm`).
        Change::NicChange => {
            let name = step.item.clone()?;
            let nad = manifest
                .pointer("/spec/template/spec/networks")?
                .as_array()?
                .iter()
                .find(|n| str_at(n, &["name"]) == Some(name.as_str()))
                .and_then(|n| str_at(n, &["multus", "networkName"]))?
                .to_owned();
            Some(Want::Swapped {
                name,
                nad,
                before: None,
            })
        }
        Change::NicDetach => step.item.clone().map(Want::Detached),
        _ => None,
    }
}

/// The names of a VM's DataVolume templates.
fn disk_names(vm: &Value) -> Vec<String> {
    vm.pointer("/spec/dataVolumeTemplates")
        .and_then(Value::as_array)
        .map(|t| {
            t.iter()
                .filter_map(|t| str_at(t, &["metadata", "name"]).map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The claim behind a disk: its DataVolume's or PVC's name.
fn claim_of(manifest: &Value, disk: &str) -> Option<String> {
    manifest
        .pointer("/spec/template/spec/volumes")?
        .as_array()?
        .iter()
        .find(|v| str_at(v, &["name"]) == Some(disk))
        .and_then(|v| {
            str_at(v, &["dataVolume", "name"])
                .or_else(|| str_at(v, &["persistentVolumeClaim", "claimName"]))
        })
        .map(str::to_owned)
}

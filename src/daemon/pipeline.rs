//! The daemon's [`Reconciler`]: load and render the fleet, read the live state, plan, and —
//! when applying and leading — carry the plan out with the executor, re-reading and re-planning
//! after a conflict (as `wukong apply` does, up to [`apply::MAX_ROUNDS`]). The outcome holds the plan,
//! the apply report, the drift left after the apply, every step's class and result, and the
//! VMs' and sets' state read after the apply.
//!
//! Incremental (issue #14): the rendered fleet is kept per Git revision (loaded and rendered
//! once, when the revision is new — or checked as a newer one during a reconcile); the live
//! state comes from watches ([`crate::live::watch`]) instead of a LIST per cycle; the plan is
//! kept per VM and recomputed only for the VMs whose live objects changed
//! ([`plan::incremental`]), and with nothing changed the last plan, its dry runs and the VMs'
//! state are reused as they are. A quiet cycle makes no API request and costs milliseconds at
//! 10,000 VMs. Verification waits of an apply follow the same watches. Now and then
//! ([`FULL_PLAN_EVERY`]) the incremental plan is compared with a full one.
//!
//! Writes only while allowed: not in plan-only mode, not while another replica holds the
//! leader-election Lease. A shutdown request or the loss of the Lease stops an apply the way
//! Ctrl-C stops `wukong apply`: the steps in flight finish, no new one starts.
//!
//! Depends on the pipeline's modules ([`crate::fleet`] through [`crate::apply`]), on
//! [`crate::cli::load_and_render_in`] (the one function that loads, renders and schema-checks),
//! and on [`super::events`] for the Events it writes on the objects it changes.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{OnceCell, watch};

use crate::apply::report::what;
use crate::apply::{self, Cluster, Event, Report, StopSignal, Timeouts};
use crate::fleet::Fleet;
use crate::identity::Kind;
use crate::live::LiveState;
use crate::live::read::{Connection, Scope};
use crate::live::watch::{Mirror, Watches};
use crate::plan::incremental::{self, Planner};
use crate::plan::{self, Plan, output};
use crate::render::Rendered;
use crate::source;

use super::events::Recorder;
use super::run::{Outcome, ReconcileError, Reconciler, Shared};
use super::status::{self, StepInProgress};

/// How long a reconcile waits for its Events to be written before it reports.
const EVENTS_FLUSH: Duration = Duration::from_secs(10);

/// How long a reconcile waits for the watches to have listed every collection (at a start,
/// after a new fleet scope, after a watch error) before it fails and is retried on the drift
/// timer: a LIST of 10,000 VMs takes seconds; a minute means the API server is struggling.
const SYNC_TIMEOUT: Duration = Duration::from_secs(60);

/// After an apply, the watches are given this long without a change (at most
/// [`SETTLE_MAX`]) before the cluster is planned again: the executor has just seen every
/// change happen through fresh reads, and the watches report them within milliseconds.
const SETTLE_QUIET: Duration = Duration::from_millis(200);
const SETTLE_MAX: Duration = Duration::from_secs(5);

/// Every this many plans that changed, the incremental plan is checked against a full plan
/// of the same state (a mismatch is a bug: logged as an error, and the full plan is used). At
/// 10,000 VMs a full plan costs under a second; a daemon whose cluster changes every 5-minute
/// drift cycle pays it about once a day.
pub const FULL_PLAN_EVERY: u32 = 256;

/// A revision loaded and rendered.
struct Loaded {
    revision: String,
    fleet_root: PathBuf,
    /// Counts loads, so the planner knows the fleet changed (a plain directory is loaded
    /// again on every cycle under the same revision name).
    generation: u64,
    fleet: Fleet,
    objects: Vec<Rendered>,
    /// The identities of `objects`.
    ids: BTreeSet<crate::identity::ObjectRef>,
}

/// What the daemon keeps between cycles.
#[derive(Default)]
struct Memory {
    /// The watches of the fleet's namespaces, and the live state they feed.
    watches: Option<Watches>,
    mirror: Mirror,
    planner: Planner,
    /// The generation of the fleet the planner holds.
    planned: Option<u64>,
    /// The last plan after its dry runs, and its JSON, reused while the planner's is.
    refined: Option<(Arc<Plan>, Value)>,
    /// The VMs' and sets' state, computed again when a VM changed.
    observed: Option<crate::status::FleetStatus>,
    /// Plans computed since the last check against a full plan.
    unchecked: u32,
}

/// What one plan of a cycle did, for logs and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CycleStats {
    /// Live objects that changed since the last plan.
    pub changed: usize,
    pub plan: incremental::Stats,
    /// The incremental plan was compared with a full one.
    pub checked: bool,
}
/// How the executor runs.
#[derive(Debug, Clone, Default)]
pub struct ApplySettings {
    /// VMs changed at once (default: the fleet's `maxParallel`).
    pub max_parallel: Option<usize>,
    /// Per-step timeouts.
    pub timeouts: Timeouts,
    /// Write Kubernetes Events on the objects changed.
    pub events: bool,
    /// `reportingInstance` of the Events (the replica's identity).
    pub instance: String,
    /// The Events written so far, so a repeat is counted rather than written again.
    pub series: super::events::Series,
}

/// Plans against the cluster `connection` points at and, when asked to and allowed, applies.
pub struct Pipeline {
    connection: Connection,
    settings: ApplySettings,
    /// Turns true on shutdown.
    shutdown: watch::Receiver<bool>,
    /// Whether this replica holds the Lease; `None` without leader election (always writes).
    leader: Option<watch::Receiver<bool>>,
    client: OnceCell<kube::Client>,
    /// Server-side dry-run answers kept between cycles, so a quiet cycle sends none.
    dry_runs: tokio::sync::Mutex<plan::dry_run::Cache>,
    /// How the fleet root lies in a Git checkout: the sub-directory (`--path`) it is in, so
    /// the checkout's root is the repository the fleet may not leave. `None`: a plain
    /// directory, whose Git working tree (if any) is found by [`source::Repository::open`].
    checkout_subdir: Option<PathBuf>,
    /// Where steps in progress are shown (`/status`, `/metrics`), if anywhere.
    shared: Option<Shared>,
    /// The reconcile in flight: whether it was superseded, and the stop signal of its apply.
    current: std::sync::Mutex<(bool, Option<StopSignal>)>,
    /// The revisions loaded last (the one in force, and a newer one checked meanwhile).
    loaded: std::sync::Mutex<Vec<Arc<Loaded>>>,
    /// Loads so far.
    loads: std::sync::atomic::AtomicU64,
    memory: tokio::sync::Mutex<Memory>,
    /// Compare every incremental plan with a full one (tests).
    check_every_plan: bool,
    /// Incremental plans that differed from the full one (a bug; see [`FULL_PLAN_EVERY`]).
    mismatches: std::sync::atomic::AtomicU64,
    /// What the last plan of a cycle did.
    last_stats: std::sync::Mutex<CycleStats>,
}

impl Pipeline {
    pub fn new(
        connection: Connection,
        settings: ApplySettings,
        shutdown: watch::Receiver<bool>,
        leader: Option<watch::Receiver<bool>>,
    ) -> Pipeline {
        Pipeline {
            connection,
            settings,
            shutdown,
            leader,
            client: OnceCell::new(),
            dry_runs: tokio::sync::Mutex::new(plan::dry_run::Cache::default()),
            checkout_subdir: None,
            shared: None,
            current: std::sync::Mutex::new((false, None)),
            loaded: std::sync::Mutex::new(Vec::new()),
            loads: std::sync::atomic::AtomicU64::new(0),
            memory: tokio::sync::Mutex::new(Memory::default()),
            check_every_plan: false,
            mismatches: std::sync::atomic::AtomicU64::new(0),
            last_stats: std::sync::Mutex::new(CycleStats::default()),
        }
    }

    /// Compare every incremental plan with a full plan of the same state (for tests; see
    /// [`Pipeline::mismatches`]).
    pub fn checking_every_plan(mut self) -> Pipeline {
        self.check_every_plan = true;
        self
    }

    /// How many incremental plans differed from the full plan of the same state.
    pub fn mismatches(&self) -> u64 {
        self.mismatches.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// What the last plan of a reconcile did.
    pub fn last_stats(&self) -> CycleStats {
        *self
            .last_stats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The live state the last reconcile planned against (the watches' mirror), with its
    /// plan: for tests that compare it with a LIST and a full plan.
    pub async fn last_state(&self) -> Option<(LiveState, Plan)> {
        let memory = self.memory.lock().await;
        let (plan, _) = memory.refined.as_ref()?;
        Some((memory.mirror.live().clone(), Plan::clone(plan)))
    }

    /// The fleet roots given to [`Reconciler::reconcile`] are `subdir` (empty: the root) of a
    /// Git checkout, which is the repository nothing in the fleet may resolve outside of.
    pub fn in_git_checkout(mut self, subdir: Option<PathBuf>) -> Pipeline {
        self.checkout_subdir = Some(subdir.unwrap_or_default());
        self
    }

    /// The repository a fleet root is read from (see [`Pipeline::in_git_checkout`]).
    fn repository(&self, fleet_root: &Path) -> Result<source::Repository, source::Error> {
        match &self.checkout_subdir {
            None => source::Repository::open(fleet_root),
            Some(subdir) => {
                let depth = subdir
                    .components()
                    .filter(|c| matches!(c, std::path::Component::Normal(_)))
                    .count();
                let checkout = fleet_root.ancestors().nth(depth).unwrap_or(fleet_root);
                source::Repository::open_within(fleet_root, checkout)
            }
        }
    }

    /// Show the steps in progress in `shared`'s status and metrics.
    pub fn reporting(mut self, shared: Shared) -> Pipeline {
        self.shared = Some(shared);
        self
    }

    fn current(&self) -> std::sync::MutexGuard<'_, (bool, Option<StopSignal>)> {
        self.current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A pipeline that only plans (no shutdown or leader to watch).
    pub fn plan_only(connection: Connection) -> Pipeline {
        // The sender is dropped at once: the receiver keeps reading `false`.
        let (_, shutdown) = watch::channel(false);
        Pipeline::new(connection, ApplySettings::default(), shutdown, None)
    }

    async fn client(&self) -> Result<kube::Client, ReconcileError> {
        self.client
            .get_or_try_init(|| self.connection.client())
            .await
            .cloned()
            .map_err(|e| ReconcileError::Failed(e.to_string()))
    }

    fn leading(&self) -> bool {
        self.leader.as_ref().is_none_or(|l| *l.borrow())
    }

    /// A stop signal for one apply, requested on shutdown or when the Lease is lost.
    fn stop_signal(&self) -> (StopSignal, tokio::task::JoinHandle<()>) {
        let stop = StopSignal::default();
        let mut shutdown = self.shutdown.clone();
        let mut leader = self.leader.clone();
        let signal = stop.clone();
        let task = tokio::spawn(async move {
            let lost = async {
                match leader.as_mut() {
                    Some(l) => {
                        let _ = l.wait_for(|held| !*held).await;
                    }
                    None => std::future::pending().await,
                }
            };
            let shut = async {
                // A dropped sender (a plan-only pipeline) never asks to stop.
                if shutdown.wait_for(|s| *s).await.is_err() {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                () = shut => tracing::info!("shutdown: the steps in flight finish, no new one starts"),
                () = lost => tracing::warn!("the Lease was lost: the steps in flight finish, no new one starts"),
            }
            signal.request();
        });
        (stop, task)
    }

    /// Check the writes of `plan` with server-side dry runs (cached between cycles).
    async fn refine(
        &self,
        client: &kube::Client,
        plan: &mut Plan,
        live: &LiveState,
        ids: &BTreeSet<crate::identity::ObjectRef>,
    ) {
        let mut cache = self.dry_runs.lock().await;
        let sent =
            apply::dry_run::check(&Cluster::new(client.clone()), plan, live, &mut cache).await;
        if sent > 0 {
            tracing::debug!(requests = sent, "server-side dry runs");
        }
        // Keep answers only for objects the fleet or the cluster still has.
        cache.retain(|id| live.objects.contains_key(id) || ids.contains(id));
    }

    /// Bring the live state up to date from the watches (starting them for the fleet's
    /// namespaces if needed) and plan against it: the VMs whose objects changed again, the
    /// rest as before; with nothing changed, the last plan as it was.
    async fn plan_now(
        &self,
        memory: &mut Memory,
        client: &kube::Client,
        loaded: &Loaded,
    ) -> Result<Arc<Plan>, ReconcileError> {
        let scope = Scope::of(&loaded.fleet);
        if memory.watches.as_ref().is_none_or(|w| *w.scope() != scope) {
            tracing::info!(?scope, "watching the fleet's namespaces");
            *memory = Memory {
                watches: Some(Watches::start(client, &scope)),
                ..Memory::default()
            };
        }
        let Some(watches) = memory.watches.as_ref() else {
            return Err(ReconcileError::Failed("no watches".into()));
        };
        watches
            .synced(SYNC_TIMEOUT)
            .await
            .map_err(|e| ReconcileError::Failed(e.to_string()))?;
        let changed = memory.mirror.absorb(watches.take());
        if memory.planned != Some(loaded.generation) {
            memory.planner.forget();
            memory.planned = Some(loaded.generation);
        }
        let live = memory.mirror.live();
        let (mut planned, stats) = memory.planner.plan(
            &loaded.fleet,
            &loaded.objects,
            live,
            &loaded.revision,
            &changed,
        );
        let mut cycle = CycleStats {
            changed: changed.len(),
            plan: stats,
            checked: false,
        };
        if !stats.reused {
            memory.unchecked += 1;
            if self.check_every_plan || memory.unchecked >= FULL_PLAN_EVERY {
                memory.unchecked = 0;
                cycle.checked = true;
                let full = plan::plan(&loaded.fleet, &loaded.objects, live, &loaded.revision);
                if full != *planned {
                    self.mismatches
                        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    tracing::error!(
                        changed = changed.len(),
                        "the incremental plan differs from the full plan (a bug in Wukong; please report it): using the full plan"
                    );
                    memory.planner.forget();
                    planned = Arc::new(full);
                }
            }
        }
        tracing::debug!(
            changed = cycle.changed,
            replanned = stats.replanned,
            vms = stats.vms,
            reused = stats.reused,
            "planned"
        );
        *self
            .last_stats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = cycle;
        let refined = match &memory.refined {
            Some((plan, _)) if stats.reused => Arc::clone(plan),
            _ => {
                let mut plan = Plan::clone(&planned);
                self.refine(client, &mut plan, live, &loaded.ids).await;
                let plan = Arc::new(plan);
                memory.refined = Some((Arc::clone(&plan), output::json(&plan)));
                plan
            }
        };
        // The fleet's status (`wukong status`'s document): again only when something changed.
        if memory.observed.is_none() || !changed.is_empty() || !stats.reused {
            memory.observed = Some(crate::status::of(&loaded.fleet, live, &refined));
        }
        Ok(refined)
    }

    /// Execute `plan`, writing Events and logging every step.
    async fn execute(
        &self,
        cluster: &Cluster,
        plan: &Plan,
        changes: Option<crate::live::watch::Changes>,
    ) -> Report {
        let events = self.settings.events.then(|| {
            Recorder::start_with(
                cluster.clone(),
                self.settings.instance.clone(),
                self.settings.series.clone(),
            )
        });
        let sender = events.as_ref().map(Recorder::sender);
        let revision = plan.revision.clone();
        let shared = self.shared.clone();
        let progress: apply::Progress = Arc::new(move |event: &Event<'_>| match event {
            Event::Started(step) => {
                tracing::info!(
                    object = %step.target,
                    step = %what(step),
                    class = step.class.as_str(),
                    "step started"
                );
                show_progress(shared.as_ref(), |steps| {
                    steps.push(StepInProgress {
                        object: step.target.to_string(),
                        change: step.change.as_str().to_owned(),
                        class: step.class.as_str().to_owned(),
                        item: step.item.clone(),
                        started_at: status::now_rfc3339(),
                        waiting_for: None,
                    });
                });
            }
            Event::Waiting(step, why) => {
                tracing::debug!(
                    object = %step.target,
                    step = %what(step),
                    waiting_for = %why,
                    "step waiting"
                );
                show_progress(shared.as_ref(), |steps| {
                    if let Some(s) = steps.iter_mut().find(|s| is(s, step)) {
                        s.waiting_for = Some((*why).to_owned());
                    }
                });
            }
            Event::Finished(result) => {
                show_progress(shared.as_ref(), |steps| {
                    steps.retain(|s| !is(s, &result.step));
                });
                macro_rules! finished {
                    ($level:ident) => {
                        tracing::$level!(
                            object = %result.step.target,
                            step = %what(&result.step),
                            class = result.step.class.as_str(),
                            outcome = result.outcome.as_str(),
                            seconds = result.seconds,
                            detail = %result.detail,
                            "step finished"
                        )
                    };
                }
                if result.outcome == apply::Outcome::Failed {
                    finished!(warn);
                } else {
                    finished!(info);
                }
                if let Some(sender) = &sender
                    && let Some(e) = super::events::StepEvent::of(result, &revision)
                {
                    let _ = sender.send(e);
                }
            }
        });
        let (stop, guard) = self.stop_signal();
        {
            let mut current = self.current();
            if current.0 {
                stop.supersede();
            }
            current.1 = Some(stop.clone());
        }
        let options = apply::Options {
            max_parallel: self.settings.max_parallel,
            timeouts: self.settings.timeouts,
            stop,
            progress: Some(progress),
            changes,
            ..apply::Options::default()
        };
        let report = apply::execute(cluster, plan, &options).await;
        self.current().1 = None;
        // The progress closure holds a sender of the Events: drop it so the Event writer ends.
        drop(options);
        guard.abort();
        if let Some(events) = events {
            events.finish(EVENTS_FLUSH).await;
        }
        tracing::info!(
            revision = %report.revision,
            done = report.count(apply::Outcome::Done),
            failed = report.count(apply::Outcome::Failed),
            skipped = report.count(apply::Outcome::Skipped),
            interrupted = report.interrupted,
            succeeded = report.succeeded(),
            "apply finished"
        );
        report
    }
}

impl Pipeline {
    /// The revision at `fleet_root`, loaded and rendered: from memory when it was loaded
    /// before (a Git checkout never changes; a plain directory is loaded every time).
    async fn loaded(
        &self,
        fleet_root: &Path,
        revision: &str,
    ) -> Result<Arc<Loaded>, ReconcileError> {
        let immutable = self.checkout_subdir.is_some();
        let remembered = || {
            self.loaded
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .iter()
                .find(|l| l.revision == revision && l.fleet_root == fleet_root)
                .cloned()
        };
        if immutable && let Some(l) = remembered() {
            return Ok(l);
        }
        let (fleet, objects) = self.load(fleet_root, revision).await?;
        let loaded = Arc::new(Loaded {
            revision: revision.to_owned(),
            fleet_root: fleet_root.to_owned(),
            generation: self.loads.fetch_add(1, std::sync::atomic::Ordering::SeqCst),
            ids: objects.iter().map(|o| o.id.clone()).collect(),
            fleet,
            objects,
        });
        let mut kept = self
            .loaded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // The newest two: the revision in force and one checked while it was reconciled.
        kept.retain(|l| l.revision != revision || l.fleet_root != fleet_root);
        kept.push(Arc::clone(&loaded));
        if kept.len() > 2 {
            kept.remove(0);
        }
        Ok(loaded)
    }

    /// Load, validate and render the revision on a blocking thread. Any failure to load it —
    /// a panic included — rejects the revision: the last good one stays in force (a panic
    /// must never make a revision "good", nor take the daemon down).
    async fn load(
        &self,
        fleet_root: &Path,
        revision: &str,
    ) -> Result<(Fleet, Vec<crate::render::Rendered>), ReconcileError> {
        let repository = self
            .repository(fleet_root)
            .map_err(|e| ReconcileError::Rejected(e.to_string()))?;
        let rev = revision.to_owned();
        let task = tokio::task::spawn_blocking(move || {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                crate::cli::load_and_render_in(&repository, &rev)
            }))
        });
        match task.await {
            Ok(Ok(loaded)) => loaded.map_err(|e| ReconcileError::Rejected(e.to_string())),
            Ok(Err(panic)) => {
                let what = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("(no message)");
                tracing::error!(panic = %what, "loading the revision panicked");
                Err(ReconcileError::Rejected(format!(
                    "loading the revision failed unexpectedly (a bug in Wukong; please report it): {what}"
                )))
            }
            Err(e) => Err(ReconcileError::Rejected(format!(
                "loading the revision failed unexpectedly: {e}"
            ))),
        }
    }
}

/// Change the steps in progress shown in `/status` and `/metrics`.
fn show_progress(shared: Option<&Shared>, change: impl FnOnce(&mut Vec<StepInProgress>)) {
    let Some(shared) = shared else {
        return;
    };
    let mut status = shared
        .status
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    change(&mut status.in_progress);
    shared.metrics.set_in_progress(status.in_progress.len());
}

/// Whether a step in progress is `step`.
fn is(shown: &StepInProgress, step: &plan::Step) -> bool {
    shown.object == step.target.to_string()
        && shown.change == step.change.as_str()
        && shown.item == step.item
}

/// VMs with any step left: live state that differs from the fleet.
fn drift(plan: &Plan) -> usize {
    plan.steps
        .iter()
        .filter(|s| s.target.kind == Kind::VirtualMachine)
        .map(|s| &s.target)
        .collect::<BTreeSet<_>>()
        .len()
}

/// Why an apply did not succeed, in one line.
fn failure(report: &Report) -> Option<String> {
    if report.succeeded() {
        return None;
    }
    let failed: Vec<String> = report
        .targets()
        .into_iter()
        .filter(|(_, t)| t.outcome == apply::Outcome::Failed)
        .take(5)
        .map(|(target, t)| format!("{target}: {}", t.reason.unwrap_or_default()))
        .collect();
    let mut message = report.summary_line();
    if report.interrupted {
        message = format!("{message}; stopped by a shutdown or the loss of the Lease");
    }
    if !failed.is_empty() {
        message = format!("{message}; {}", failed.join("; "));
    }
    Some(message)
}

/// The apply report of `reports` (one per round): the last one, with the earlier rounds.
fn apply_json(reports: &[Report]) -> Option<Value> {
    let (last, earlier) = reports.split_last()?;
    let mut doc = last.json();
    doc["rounds"] = json!(reports.len());
    if !earlier.is_empty() {
        doc["earlierRounds"] = Value::Array(earlier.iter().map(Report::json).collect());
    }
    Some(doc)
}

impl Reconciler for Pipeline {
    async fn check(&self, fleet_root: &Path, revision: &str) -> Result<(), ReconcileError> {
        // Kept: the reconcile of this revision that follows does not load it again.
        self.loaded(fleet_root, revision).await.map(drop)
    }

    fn supersede(&self) {
        let mut current = self.current();
        current.0 = true;
        if let Some(stop) = &current.1 {
            stop.supersede();
        }
    }

    async fn reconcile(
        &self,
        fleet_root: &Path,
        revision: &str,
        apply: bool,
    ) -> Result<Outcome, ReconcileError> {
        *self.current() = (false, None);
        let loaded = self.loaded(fleet_root, revision).await?;
        let client = self.client().await?;
        let mut memory = self.memory.lock().await;
        let mut plan = self.plan_now(&mut memory, &client, &loaded).await?;
        let planned = memory
            .refined
            .as_ref()
            .map_or_else(|| output::json(&plan), |(_, json)| json.clone());
        let writes = apply && self.leading();
        if apply && !writes {
            tracing::info!("not the leader: planning only");
        }
        let mut reports: Vec<Report> = Vec::new();
        let mut error = None;
        if writes {
            let cluster = Cluster::new(client.clone());
            for round in 1..=apply::MAX_ROUNDS {
                if !plan.has_changes() || self.current().0 {
                    break;
                }
                if round > 1 {
                    tracing::info!(round, "re-planning after a conflict");
                }
                let changes = memory.watches.as_ref().map(Watches::changes);
                let report = self.execute(&cluster, &plan, changes).await;
                let again = report.conflicted()
                    && !report.interrupted
                    && round < apply::MAX_ROUNDS
                    && !self.current().0;
                reports.push(report);
                if let Some(w) = &memory.watches {
                    w.settle(SETTLE_QUIET, SETTLE_MAX).await;
                }
                match self.plan_now(&mut memory, &client, &loaded).await {
                    Ok(after) => plan = after,
                    Err(e) => {
                        error = Some(format!("cannot read the cluster after the apply: {e}"));
                        break;
                    }
                }
                if !again {
                    break;
                }
            }
        }
        if error.is_none() {
            error = reports.last().and_then(failure);
        }
        let steps = reports
            .iter()
            .flat_map(|r| &r.steps)
            .filter(|r| r.step.acts())
            .map(|r| {
                (
                    r.step.class.as_str().to_owned(),
                    r.outcome.as_str().to_owned(),
                )
            })
            .collect();
        let crate::status::FleetStatus { vms, sets, .. } =
            memory.observed.clone().unwrap_or_default();
        Ok(Outcome {
            plan: Some(planned),
            apply: apply_json(&reports),
            drift_vms: drift(&plan),
            steps,
            vms,
            sets,
            error,
        })
    }
}

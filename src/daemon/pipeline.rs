//! The daemon's [`Reconciler`]: load and render the fleet, read the live state, plan, and —
//! when applying and leading — carry the plan out with the executor, re-reading and re-planning
//! after a conflict (as `wukong apply` does, up to [`apply::MAX_ROUNDS`]). The outcome holds the plan,
//! the apply report, the drift left after the apply, every step's class and result, and the
//! VMs' and sets' state read after the apply.
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
use crate::plan::{self, Plan, output};
use crate::render::Rendered;
use crate::source;

use super::events::Recorder;
use super::run::{Outcome, ReconcileError, Reconciler, Shared};
use super::status::{self, StepInProgress};

/// How long a reconcile waits for its Events to be written before it reports.
const EVENTS_FLUSH: Duration = Duration::from_secs(10);

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
        }
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

    /// Plan, then check the writes with server-side dry runs (cached between cycles).
    async fn plan(
        &self,
        client: &kube::Client,
        fleet: &Fleet,
        objects: &[Rendered],
        live: &LiveState,
        revision: &str,
    ) -> Plan {
        let mut plan = plan::plan(fleet, objects, live, revision);
        let mut cache = self.dry_runs.lock().await;
        let sent =
            apply::dry_run::check(&Cluster::new(client.clone()), &mut plan, live, &mut cache).await;
        if sent > 0 {
            tracing::debug!(requests = sent, "server-side dry runs");
        }
        // Keep answers only for objects the fleet or the cluster still has.
        cache.retain(|id| live.objects.contains_key(id) || objects.iter().any(|o| &o.id == id));
        plan
    }

    async fn read(&self, client: &kube::Client, fleet: &Fleet) -> Result<LiveState, String> {
        crate::live::read::read(client, &Scope::of(fleet))
            .await
            .map_err(|e| e.to_string())
    }

    /// Execute `plan`, writing Events and logging every step.
    async fn execute(&self, cluster: &Cluster, plan: &Plan) -> Report {
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
        // The same load as a reconcile's: confined to the repository, a panic a rejection.
        self.load(fleet_root, revision).await.map(drop)
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
        let (fleet, objects) = self.load(fleet_root, revision).await?;
        let client = self.client().await?;
        let mut live = self
            .read(&client, &fleet)
            .await
            .map_err(ReconcileError::Failed)?;
        let mut plan = self.plan(&client, &fleet, &objects, &live, revision).await;
        let planned = output::json(&plan);
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
                let report = self.execute(&cluster, &plan).await;
                let again = report.conflicted()
                    && !report.interrupted
                    && round < apply::MAX_ROUNDS
                    && !self.current().0;
                reports.push(report);
                match self.read(&client, &fleet).await {
                    Ok(after) => {
                        live = after;
                        plan = self.plan(&client, &fleet, &objects, &live, revision).await;
                    }
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
        let (vms, sets) = status::observe(&fleet, &live);
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

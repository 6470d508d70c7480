//! The reconcile loop: wait for a trigger (poll interval, webhook, local change, drift timer),
//! fetch, and hand a new revision to the [`Reconciler`]; keep the last good revision when a new
//! one is rejected, back off while Git is unreachable, and record everything in the shared
//! status and metrics.
//!
//! The loop never decides what to change: the [`Reconciler`] (render → read live → plan →
//! apply) does, so the executor plugs in without touching this module. Shutdown is checked
//! between reconciles only: a reconcile in flight finishes, no new one starts.
//!
//! A reconcile can last long (a VM that takes its time to come up, a stuck migration waiting
//! for its timeout), so while one runs the loop keeps polling and taking webhooks. A newer
//! revision that validates supersedes it (issue #13, finding 8): the reconcile in flight starts
//! no new step and stops waiting on those in flight (their writes finish; a set's restart
//! still waits for its instance, to keep the set's availability), and the newer revision is
//! reconciled at once, planned from the cluster as it is. An invalid newer revision supersedes
//! nothing. `/status` shows the reconcile and the steps in progress meanwhile.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tracing::Instrument as _;

use super::Trigger;
use super::git::{self, Checkout};
use super::metrics::{Metrics, ReconcileResult};
use super::schedule::{self, SplitMix64};
use super::status::{self, ErrorRecord, Reconciling, SharedStatus, SyncRecord};
use crate::status::{SetStatus, VmStatus};

/// How long the loop waits for one fetch: far above a fetch of a fleet repository over a slow
/// link, short enough that a hung connection does not stall the daemon for long. The fetch
/// itself cannot be cancelled (see [`git`]); the next one reports it as still running.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(120);

/// The revision reported for a plain directory (no Git).
pub const DIRECTORY_REVISION: &str = "working-tree";

/// What one reconcile did, for `/status` and `/metrics`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    /// The plan, as `wukong plan -o json` prints it.
    pub plan: Option<Value>,
    /// The apply report (`None` when nothing was applied: plan-only mode, not the leader, or
    /// nothing to do; `/status` then keeps the last one).
    pub apply: Option<Value>,
    /// VMs whose live state differs from the fleet (after the apply, if any).
    pub drift_vms: usize,
    /// Every carried-out step's class and result.
    pub steps: Vec<(String, String)>,
    pub vms: Vec<VmStatus>,
    pub sets: Vec<SetStatus>,
    /// Why the reconcile ran but did not succeed (a step failed, the apply was interrupted):
    /// counted and reported as failed, with everything above still recorded.
    pub error: Option<String>,
}

/// Why a reconcile did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReconcileError {
    /// The revision is invalid (validation, rendering): it is not applied, and the last good
    /// revision stays in force.
    #[error("revision rejected: {0}")]
    Rejected(String),
    /// The revision is valid but reconciling it failed (cluster unreachable, a step failed): it
    /// is in force and retried on the drift timer.
    #[error("{0}")]
    Failed(String),
}

/// The reconcile step the loop runs. Implemented by the executor; the tests use fakes.
pub trait Reconciler: Send + Sync + 'static {
    /// Bring the cluster to the fleet at `fleet_root` (revision `revision`); only plan (and
    /// report drift) when `apply` is false.
    fn reconcile(
        &self,
        fleet_root: &Path,
        revision: &str,
        apply: bool,
    ) -> impl Future<Output = Result<Outcome, ReconcileError>> + Send;

    /// Check a revision without touching the cluster (load, validate, render): `Rejected` when
    /// it is invalid. The loop checks a newer revision that arrives during a reconcile before
    /// it lets it supersede the one in flight.
    fn check(
        &self,
        fleet_root: &Path,
        revision: &str,
    ) -> impl Future<Output = Result<(), ReconcileError>> + Send {
        let _ = (fleet_root, revision);
        async { Ok(()) }
    }

    /// A newer valid revision is waiting: the reconcile in flight should end soon, starting
    /// no new step and no longer waiting on those in flight (their writes finish).
    fn supersede(&self) {}
}

/// Where the fleet comes from.
#[derive(Debug, Clone)]
pub enum Origin {
    /// A Git repository, fetched on triggers.
    Git(Arc<git::Source>),
    /// A plain directory (a working tree being edited), reconciled as it is on every trigger.
    Directory(PathBuf),
}

/// The loop's settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// Git poll interval (jittered).
    pub interval: Duration,
    /// Reconcile the revision in force this often to undo changes made by hand.
    pub drift_interval: Duration,
    /// Only plan and report drift; never apply.
    pub plan_only: bool,
    pub fetch_timeout: Duration,
    /// Seed of the jitter; `None`: from the clock.
    pub seed: Option<u64>,
}

/// The loop's handles on the shared state.
#[derive(Debug, Clone)]
pub struct Shared {
    pub status: SharedStatus,
    pub metrics: Arc<Metrics>,
}

impl Shared {
    /// Record an error of `stage` (and the revision it concerns) in `/status`.
    fn record_error(&self, stage: &str, revision: Option<&str>, message: String) {
        let mut status = self.status.write().unwrap_or_else(PoisonError::into_inner);
        status.push_error(ErrorRecord {
            at: status::now_rfc3339(),
            stage: stage.to_owned(),
            revision: revision.map(str::to_owned),
            message,
        });
    }
}

struct Loop<R> {
    origin: Origin,
    reconciler: R,
    options: Options,
    shared: Shared,
    /// The revision in force (last one accepted).
    in_force: Option<Checkout>,
    /// Whether the revision in force was reconciled since the start (it may be restored from
    /// the cache only).
    in_force_reconciled: bool,
    /// The last revision rejected, not retried until it changes.
    rejected: Option<String>,
    fetch_failures: u32,
    /// Reconciles run since the start.
    reconciles: u64,
    rng: SplitMix64,
    triggers: mpsc::Receiver<Trigger>,
    /// A trigger that came during a reconcile and is acted on after it (drift, election).
    deferred: Option<Trigger>,
}

/// Run until `shutdown` turns true. Reconciles at once on start (the first fetch), then on
/// every trigger.
pub async fn run<R: Reconciler>(
    origin: Origin,
    reconciler: R,
    options: Options,
    shared: Shared,
    triggers: mpsc::Receiver<Trigger>,
    mut shutdown: watch::Receiver<bool>,
) {
    let in_force = match &origin {
        Origin::Git(source) => source.last_good(),
        Origin::Directory(_) => None,
    };
    if let Some(c) = &in_force {
        tracing::info!(revision = %c.revision, "last good revision restored from the cache");
        let mut status = shared
            .status
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        status.last_good_revision = Some(c.revision.clone());
        shared.metrics.set_revision(&c.revision);
    }
    let rng = options
        .seed
        .map_or_else(SplitMix64::from_entropy, SplitMix64::new);
    let mut state = Loop {
        origin,
        reconciler,
        shared,
        in_force,
        in_force_reconciled: false,
        rejected: None,
        fetch_failures: 0,
        reconciles: 0,
        rng,
        options,
        triggers,
        deferred: None,
    };
    let now = tokio::time::Instant::now();
    let mut next_fetch = now;
    let mut next_drift = now + state.options.drift_interval;
    loop {
        let deferred = state.deferred.take();
        let trigger = tokio::select! {
            biased;
            _ = shutdown.wait_for(|s| *s) => break,
            Some(t) = std::future::ready(deferred), if deferred.is_some() => t,
            Some(t) = state.triggers.recv() => t,
            () = tokio::time::sleep_until(next_fetch) => Trigger::Interval,
            () = tokio::time::sleep_until(next_drift) => Trigger::Drift,
        };
        tracing::debug!(?trigger, "woken");
        match trigger {
            Trigger::Drift | Trigger::Elected => {
                next_drift = tokio::time::Instant::now() + state.options.drift_interval;
                if let Some(c) = state.in_force.clone() {
                    state.reconcile(&c).await;
                }
            }
            Trigger::Interval | Trigger::Webhook | Trigger::LocalChange => {
                let (delay, reconciled) = state.sync(trigger).await;
                next_fetch = tokio::time::Instant::now() + delay;
                if reconciled {
                    // The cluster was just reconciled: the drift timer starts over.
                    next_drift = tokio::time::Instant::now() + state.options.drift_interval;
                }
            }
        }
        state.set_ready();
    }
    tracing::info!("reconcile loop stopped");
}

impl<R: Reconciler> Loop<R> {
    fn set_ready(&self) {
        let mut status = self
            .shared
            .status
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        status.ready = true;
    }

    fn record_error(&self, stage: &str, revision: Option<&str>, message: String) {
        self.shared.record_error(stage, revision, message);
    }

    /// Fetch; reconcile if the revision is new (or the tree is a plain directory). Returns the
    /// delay until the next poll and whether a reconcile ran.
    ///
    /// When the first fetch after a start fails, the revision in force (restored from the
    /// cache) is reconciled: the remote being down does not leave the cluster unreconciled.
    async fn sync(&mut self, trigger: Trigger) -> (Duration, bool) {
        let fetched = match &self.origin {
            Origin::Directory(dir) => Ok(Checkout {
                revision: DIRECTORY_REVISION.to_owned(),
                tree: dir.clone(),
                fleet_root: dir.clone(),
            }),
            Origin::Git(source) => fetch(Arc::clone(source), self.options.fetch_timeout).await,
        };
        let checkout = match fetched {
            Ok(c) => {
                self.fetch_failures = 0;
                c
            }
            Err(message) => {
                self.fetch_failures = self.fetch_failures.saturating_add(1);
                self.shared.metrics.fetch_failed();
                tracing::warn!(error = %message, failures = self.fetch_failures, "fetch failed; keeping the revision in force");
                self.record_error("git", None, message);
                let delay =
                    schedule::next_poll(self.options.interval, self.fetch_failures, &mut self.rng);
                let restored = if self.reconciles == 0 {
                    self.in_force.clone()
                } else {
                    None
                };
                if let Some(checkout) = &restored {
                    self.reconcile(checkout).await;
                }
                return (delay, restored.is_some());
            }
        };
        {
            let mut status = self
                .shared
                .status
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            status.revision = Some(checkout.revision.clone());
        }
        let directory = matches!(self.origin, Origin::Directory(_));
        let unchanged = self
            .in_force
            .as_ref()
            .is_some_and(|c| c.revision == checkout.revision);
        let rejected_before = self.rejected.as_deref() == Some(checkout.revision.as_str());
        // The first sync after a start reconciles even a revision already in force (restored
        // from the cache): a daemon killed mid-apply finishes the job when it comes back.
        let new = directory || self.reconciles == 0 || !(unchanged || rejected_before);
        if new {
            tracing::info!(revision = %checkout.revision, ?trigger, "new revision");
            self.reconcile(&checkout).await;
            // A daemon (re)started while the head is invalid puts the last good revision back
            // in force now, not only when the drift timer fires.
            let rejected = self.rejected.as_deref() == Some(checkout.revision.as_str());
            if rejected && !self.in_force_reconciled {
                self.in_force_reconciled = true;
                match self.in_force.clone() {
                    Some(last_good) => {
                        tracing::info!(revision = %last_good.revision, "reconciling the last good revision");
                        self.reconcile(&last_good).await;
                        // The head stays the rejected revision, not retried until it changes.
                        self.rejected = Some(checkout.revision.clone());
                    }
                    None => tracing::warn!(
                        "no good revision is known (none in the cache): nothing is applied until a valid revision arrives"
                    ),
                }
            }
        }
        (
            schedule::next_poll(self.options.interval, 0, &mut self.rng),
            new,
        )
    }

    /// Run the reconciler on `checkout`, then on every newer valid revision that superseded
    /// it, and record each result.
    async fn reconcile(&mut self, checkout: &Checkout) {
        let mut next = self.reconcile_once(checkout).await;
        while let Some(newer) = next {
            tracing::info!(revision = %newer.revision, "new revision");
            next = self.reconcile_once(&newer).await;
        }
    }

    /// Run the reconciler on `checkout` while watching for a newer revision; record the result.
    /// Returns the newer revision that superseded it, if one did.
    async fn reconcile_once(&mut self, checkout: &Checkout) -> Option<Checkout> {
        let span = tracing::info_span!("reconcile", revision = %checkout.revision);
        self.reconciles += 1;
        let started = Instant::now();
        {
            let mut status = self
                .shared
                .status
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            status.reconciling = Some(Reconciling {
                revision: checkout.revision.clone(),
                started_at: status::now_rfc3339(),
                superseded_by: None,
            });
        }
        self.shared.metrics.set_reconciling(true);
        let work = self
            .reconciler
            .reconcile(
                &checkout.fleet_root,
                &checkout.revision,
                !self.options.plan_only,
            )
            .instrument(span);
        let watch = Watch {
            origin: &self.origin,
            reconciler: &self.reconciler,
            triggers: &mut self.triggers,
            deferred: &mut self.deferred,
            options: &self.options,
            rng: &mut self.rng,
            shared: &self.shared,
            current: &checkout.revision,
            rejected: self.rejected.as_deref(),
        };
        let (result, newer, rejected) = watch.run(work).await;
        if rejected.is_some() {
            self.rejected = rejected;
        }
        let duration = started.elapsed();
        let superseded = newer.is_some() && !matches!(result, Err(ReconcileError::Rejected(_)));
        let kind = match &result {
            _ if superseded => ReconcileResult::Superseded,
            Ok(o) if o.error.is_some() => ReconcileResult::Failed,
            Ok(_) => ReconcileResult::Success,
            Err(ReconcileError::Rejected(_)) => ReconcileResult::Rejected,
            Err(ReconcileError::Failed(_)) => ReconcileResult::Failed,
        };
        self.shared.metrics.reconcile_finished(kind, duration);
        self.shared.metrics.set_reconciling(false);
        self.shared.metrics.set_in_progress(0);
        match &result {
            // A superseded revision is not accepted: the newer one is about to be (and
            // accepting would prune its checkout).
            _ if superseded => {
                if let Some(n) = &newer {
                    tracing::info!(revision = %checkout.revision, newer = %n.revision, "superseded by a newer revision");
                }
            }
            Ok(_) | Err(ReconcileError::Failed(_)) => self.accept(checkout),
            Err(ReconcileError::Rejected(message)) => {
                tracing::warn!(revision = %checkout.revision, error = %message, "revision rejected; the last good revision stays in force");
                self.rejected = Some(checkout.revision.clone());
                self.record_error("validate", Some(&checkout.revision), message.clone());
            }
        }
        if let Err(ReconcileError::Failed(message)) = &result {
            tracing::warn!(revision = %checkout.revision, error = %message, "reconcile failed");
            self.record_error("reconcile", Some(&checkout.revision), message.clone());
        }
        if let Ok(Outcome {
            error: Some(message),
            ..
        }) = &result
            && !superseded
        {
            tracing::warn!(revision = %checkout.revision, error = %message, "apply incomplete");
            self.record_error("apply", Some(&checkout.revision), message.clone());
        }
        let mut status = self
            .shared
            .status
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        status.reconciling = None;
        status.in_progress.clear();
        if let Some(n) = &newer {
            status.revision = Some(n.revision.clone());
        }
        status.last_sync = Some(SyncRecord {
            revision: Some(checkout.revision.clone()),
            at: status::now_rfc3339(),
            result: kind.as_str().to_owned(),
            duration_seconds: duration.as_secs_f64(),
        });
        if let Ok(outcome) = result {
            for (class, step_result) in &outcome.steps {
                self.shared.metrics.step(class, step_result);
            }
            self.shared.metrics.set_drift(outcome.drift_vms);
            if outcome.error.is_none() {
                self.shared.metrics.sync_succeeded(status::now_unix());
            }
            super::observe::plan(
                &self.shared.metrics,
                status.last_plan.as_ref(),
                outcome.plan.as_ref(),
                self.options.plan_only,
            );
            status.last_plan = outcome.plan;
            if let Some(report) = &outcome.apply {
                status.remember_apply(status::ApplyRecord::of(report, status::now_rfc3339()));
            }
            if outcome.apply.is_some() {
                status.last_apply = outcome.apply;
            }
            status.vms = outcome.vms;
            status.sets = outcome.sets;
        }
        newer
    }

    /// `checkout` is now the revision in force. The last rejected revision stays remembered:
    /// a drift reconcile of the revision in force must not make the next poll validate (and
    /// reject, and report) the same bad commit again.
    fn accept(&mut self, checkout: &Checkout) {
        self.shared.metrics.set_revision(&checkout.revision);
        {
            let mut status = self
                .shared
                .status
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            status.last_good_revision = Some(checkout.revision.clone());
        }
        if let Origin::Git(source) = &self.origin {
            let kept = source
                .mark_good(checkout)
                .and_then(|()| source.prune(&[checkout.revision.as_str()]));
            if let Err(e) = kept {
                tracing::warn!(error = %e, "cannot update the checkout cache");
            }
        }
        self.in_force = Some(checkout.clone());
        self.in_force_reconciled = true;
    }
}

/// What a look for a newer revision found while a reconcile runs.
enum Probe {
    /// Nothing new (the same revision, or one already rejected).
    Nothing,
    Newer(Checkout),
    FetchFailed(String),
    Rejected {
        revision: String,
        message: String,
    },
}

/// Watching for a newer revision while a reconcile runs: polls on the interval and on
/// webhooks and local changes; a newer revision that validates supersedes the reconcile.
struct Watch<'a, R> {
    origin: &'a Origin,
    reconciler: &'a R,
    triggers: &'a mut mpsc::Receiver<Trigger>,
    deferred: &'a mut Option<Trigger>,
    options: &'a Options,
    rng: &'a mut SplitMix64,
    shared: &'a Shared,
    /// The revision being reconciled.
    current: &'a str,
    rejected: Option<&'a str>,
}

impl<R: Reconciler> Watch<'_, R> {
    /// Drive `work` (the reconcile) to its end; meanwhile look for a newer revision, recording
    /// fetch errors and rejected revisions as they come. Returns the reconcile's result, the
    /// newer revision that superseded it, and the last revision rejected meanwhile.
    async fn run(
        self,
        work: impl Future<Output = Result<Outcome, ReconcileError>>,
    ) -> (
        Result<Outcome, ReconcileError>,
        Option<Checkout>,
        Option<String>,
    ) {
        let Watch {
            origin,
            reconciler,
            triggers,
            deferred,
            options,
            rng,
            shared,
            current,
            rejected,
        } = self;
        tokio::pin!(work);
        let git = matches!(origin, Origin::Git(_));
        let mut rejected: Option<String> = rejected.map(str::to_owned);
        let mut rejected_now = None;
        let mut newer: Option<Checkout> = None;
        let record = |stage: &str, revision: Option<&str>, message: String| {
            shared.record_error(stage, revision, message);
        };
        let mut probing: Option<std::pin::Pin<Box<dyn Future<Output = Probe> + Send + '_>>> = None;
        let mut next_poll =
            tokio::time::Instant::now() + schedule::next_poll(options.interval, 0, rng);
        let result = loop {
            let idle = probing.is_none() && newer.is_none();
            tokio::select! {
                biased;
                r = &mut work => break r,
                p = async {
                    match probing.as_mut() {
                        Some(f) => f.await,
                        None => std::future::pending().await,
                    }
                }, if probing.is_some() => {
                    probing = None;
                    match p {
                        Probe::Nothing => {}
                        Probe::FetchFailed(message) => {
                            shared.metrics.fetch_failed();
                            tracing::warn!(error = %message, "fetch failed");
                            record("git", None, message);
                        }
                        Probe::Rejected { revision, message } => {
                            tracing::warn!(%revision, error = %message, "newer revision rejected; it supersedes nothing");
                            record("validate", Some(&revision), message);
                            shared.status.write().unwrap_or_else(PoisonError::into_inner).revision =
                                Some(revision.clone());
                            rejected = Some(revision.clone());
                            rejected_now = Some(revision);
                        }
                        Probe::Newer(c) => {
                            tracing::info!(revision = %c.revision, superseded = %current, "a newer revision supersedes the reconcile in flight");
                            if let Some(r) = shared
                                .status
                                .write()
                                .unwrap_or_else(PoisonError::into_inner)
                                .reconciling
                                .as_mut()
                            {
                                r.superseded_by = Some(c.revision.clone());
                            }
                            reconciler.supersede();
                            newer = Some(c);
                        }
                    }
                }
                Some(t) = triggers.recv(), if idle => match t {
                    Trigger::Interval | Trigger::Webhook if git => {
                        probing = Some(Box::pin(probe(origin, reconciler, options.fetch_timeout, current, rejected.clone())));
                    }
                    Trigger::LocalChange if !git => {
                        probing = Some(Box::pin(probe(origin, reconciler, options.fetch_timeout, current, rejected.clone())));
                    }
                    Trigger::Elected => *deferred = Some(Trigger::Elected),
                    Trigger::Drift if deferred.is_none() => *deferred = Some(Trigger::Drift),
                    _ => {}
                },
                () = tokio::time::sleep_until(next_poll), if idle && git => {
                    next_poll = tokio::time::Instant::now() + schedule::next_poll(options.interval, 0, rng);
                    probing = Some(Box::pin(probe(origin, reconciler, options.fetch_timeout, current, rejected.clone())));
                }
            }
        };
        (result, newer, rejected_now)
    }
}

/// Fetch (or, for a directory, take the tree as it is) and check what came: a newer valid
/// revision, a rejected one, or nothing new.
async fn probe<R: Reconciler>(
    origin: &Origin,
    reconciler: &R,
    fetch_timeout: Duration,
    current: &str,
    rejected: Option<String>,
) -> Probe {
    let checkout = match origin {
        Origin::Directory(dir) => Checkout {
            revision: DIRECTORY_REVISION.to_owned(),
            tree: dir.clone(),
            fleet_root: dir.clone(),
        },
        Origin::Git(source) => match fetch(Arc::clone(source), fetch_timeout).await {
            Ok(c) if c.revision == current || Some(&c.revision) == rejected.as_ref() => {
                return Probe::Nothing;
            }
            Ok(c) => c,
            Err(message) => return Probe::FetchFailed(message),
        },
    };
    match reconciler
        .check(&checkout.fleet_root, &checkout.revision)
        .await
    {
        Ok(()) => Probe::Newer(checkout),
        Err(ReconcileError::Rejected(message) | ReconcileError::Failed(message)) => {
            Probe::Rejected {
                revision: checkout.revision,
                message,
            }
        }
    }
}

/// Run a blocking sync on its own thread, giving up waiting after `timeout`.
async fn fetch(source: Arc<git::Source>, timeout: Duration) -> Result<Checkout, String> {
    let task = tokio::task::spawn_blocking(move || source.sync());
    match tokio::time::timeout(timeout, task).await {
        Ok(Ok(result)) => result.map_err(|e| e.to_string()),
        Ok(Err(e)) => Err(format!("the fetch task failed: {e}")),
        Err(_) => Err(format!(
            "the fetch did not finish within {} s",
            timeout.as_secs()
        )),
    }
}

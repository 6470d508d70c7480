//! The daemon's Prometheus metrics, encoded in the OpenMetrics text format for `/metrics`:
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `wukong_reconciles_total` | counter | `result`: success, failed, rejected |
//! | `wukong_reconcile_duration_seconds` | histogram | `result` |
//! | `wukong_steps_total` | counter | `class` (the plan's step class), `result`: done, failed, skipped (interrupted or halted) |
//! | `wukong_drift_vms` | gauge | VMs whose live state differs from the fleet |
//! | `wukong_last_successful_sync_timestamp_seconds` | gauge | Unix time of the last good reconcile |
//! | `wukong_git_fetch_errors_total` | counter | |
//! | `wukong_revision_info` | gauge (always 1) | `revision` in force |
//! | `wukong_reconcile_in_progress` | gauge | 1 while a reconcile runs |
//! | `wukong_steps_in_progress` | gauge | steps started and not finished |
//! | `wukong_plan_steps` | gauge | `class`: steps of the last plan by class (create, live, restart, delete, refused, blocked), counted as the plan's summary; in `--plan-only` mode the drift not applied |
//! | `wukong_held_steps_total` | counter | `class` (refused, blocked): steps the plan held back, counted when first seen |
//!
//! Owns the registry; depends on nothing else in the crate.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// The content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Reconcile duration buckets: 0.1 s doubling to about 14 minutes (a plan alone takes
/// milliseconds; an apply that restarts many VMs takes minutes).
const DURATION_BUCKETS: (f64, f64, u16) = (0.1, 2.0, 14);

/// How a reconcile ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReconcileResult {
    /// The cluster was brought to (or found at) the revision.
    Success,
    /// An error: Git, the cluster, a failed step.
    Failed,
    /// The revision is invalid (validation or rendering) and was not applied.
    Rejected,
    /// A newer revision arrived: this reconcile stopped waiting on its steps and gave way.
    Superseded,
}

impl ReconcileResult {
    pub fn as_str(self) -> &'static str {
        match self {
            ReconcileResult::Success => "success",
            ReconcileResult::Failed => "failed",
            ReconcileResult::Rejected => "rejected",
            ReconcileResult::Superseded => "superseded",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StepLabels {
    class: String,
    result: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ClassLabels {
    class: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RevisionLabels {
    revision: String,
}

fn duration_histogram() -> Histogram {
    let (start, factor, length) = DURATION_BUCKETS;
    Histogram::new(exponential_buckets(start, factor, length))
}

/// The metrics and their registry. Cheap to update from any task (`&self`).
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    reconciles: Family<ResultLabels, Counter>,
    durations: Family<ResultLabels, Histogram, fn() -> Histogram>,
    steps: Family<StepLabels, Counter>,
    drift: Gauge,
    last_success: Gauge<f64, AtomicU64>,
    fetch_errors: Counter,
    revision: Family<RevisionLabels, Gauge>,
    reconciling: Gauge,
    in_progress: Gauge,
    plan_steps: Family<ClassLabels, Gauge>,
    held: Family<ClassLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("wukong");
        let reconciles = Family::<ResultLabels, Counter>::default();
        let durations: Family<ResultLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(duration_histogram);
        let steps = Family::<StepLabels, Counter>::default();
        let drift = Gauge::default();
        let last_success = Gauge::<f64, AtomicU64>::default();
        let fetch_errors = Counter::default();
        let revision = Family::<RevisionLabels, Gauge>::default();
        let reconciling = Gauge::default();
        let in_progress = Gauge::default();
        let plan_steps = Family::<ClassLabels, Gauge>::default();
        let held = Family::<ClassLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciles, by how they ended",
            reconciles.clone(),
        );
        registry.register_with_unit(
            "reconcile_duration",
            "Time from the start of a reconcile to its end",
            Unit::Seconds,
            durations.clone(),
        );
        registry.register(
            "steps",
            "Plan steps carried out, by class and result",
            steps.clone(),
        );
        registry.register(
            "drift_vms",
            "VMs whose live state differs from the fleet at the last plan",
            drift.clone(),
        );
        registry.register_with_unit(
            "last_successful_sync_timestamp",
            "Unix time of the end of the last successful reconcile",
            Unit::Seconds,
            last_success.clone(),
        );
        registry.register(
            "git_fetch_errors",
            "Failed fetches of the Git repository",
            fetch_errors.clone(),
        );
        registry.register(
            "revision_info",
            "The Git revision in force (value always 1)",
            revision.clone(),
        );
        registry.register(
            "reconcile_in_progress",
            "1 while a reconcile runs",
            reconciling.clone(),
        );
        registry.register(
            "steps_in_progress",
            "Plan steps started and not finished (a long-waiting one shows here)",
            in_progress.clone(),
        );
        registry.register(
            "plan_steps",
            "Steps of the last plan, by class (as the plan's summary counts them)",
            plan_steps.clone(),
        );
        registry.register(
            "held_steps",
            "Steps the plan refused or blocked, counted when first seen",
            held.clone(),
        );
        Metrics {
            plan_steps,
            held,
            reconciling,
            in_progress,
            registry,
            reconciles,
            durations,
            steps,
            drift,
            last_success,
            fetch_errors,
            revision,
        }
    }

    /// Count a finished reconcile and its duration.
    pub fn reconcile_finished(&self, result: ReconcileResult, duration: Duration) {
        let labels = ResultLabels {
            result: result.as_str().to_owned(),
        };
        self.reconciles.get_or_create(&labels).inc();
        self.durations
            .get_or_create(&labels)
            .observe(duration.as_secs_f64());
    }

    /// Count a carried-out step of class `class` (`create`, `live`, `restart`, …) that ended
    /// with `result` (`done`, `failed`, `skipped`).
    pub fn step(&self, class: &str, result: &str) {
        self.steps
            .get_or_create(&StepLabels {
                class: class.to_owned(),
                result: result.to_owned(),
            })
            .inc();
    }

    /// The number of VMs out of sync at the last plan.
    pub fn set_drift(&self, vms: usize) {
        self.drift.set(i64::try_from(vms).unwrap_or(i64::MAX));
    }

    /// A reconcile succeeded at `unix_seconds`.
    pub fn sync_succeeded(&self, unix_seconds: f64) {
        self.last_success.set(unix_seconds);
    }

    /// A Git fetch failed.
    pub fn fetch_failed(&self) {
        self.fetch_errors.inc();
    }

    /// The revision now in force (replaces the previous one).
    pub fn set_revision(&self, revision: &str) {
        self.revision.clear();
        self.revision
            .get_or_create(&RevisionLabels {
                revision: revision.to_owned(),
            })
            .set(1);
    }

    /// Whether a reconcile runs now.
    pub fn set_reconciling(&self, running: bool) {
        self.reconciling.set(i64::from(running));
    }

    /// How many steps are started and not finished.
    pub fn set_in_progress(&self, steps: usize) {
        self.in_progress
            .set(i64::try_from(steps).unwrap_or(i64::MAX));
    }

    /// The last plan has `steps` steps of class `class`.
    pub fn set_plan_steps(&self, class: &str, steps: usize) {
        self.plan_steps
            .get_or_create(&ClassLabels {
                class: class.to_owned(),
            })
            .set(i64::try_from(steps).unwrap_or(i64::MAX));
    }

    /// A step of class `class` (refused, blocked) was held back for the first time.
    pub fn step_held(&self, class: &str) {
        self.held
            .get_or_create(&ClassLabels {
                class: class.to_owned(),
            })
            .inc();
    }

    /// The OpenMetrics text exposition of every metric ([`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_exposed_with_its_labels() {
        let m = Metrics::new();
        m.reconcile_finished(ReconcileResult::Success, Duration::from_millis(250));
        m.reconcile_finished(ReconcileResult::Rejected, Duration::from_millis(5));
        m.step("live", "ok");
        m.set_drift(3);
        m.sync_succeeded(1_700_000_000.0);
        m.fetch_failed();
        m.set_revision("aaa");
        m.set_revision("bbb");
        m.set_reconciling(true);
        m.set_in_progress(2);
        m.set_plan_steps("blocked", 2);
        m.step_held("refused");
        let text = m.encode();
        for line in [
            "wukong_reconciles_total{result=\"success\"} 1",
            "wukong_reconciles_total{result=\"rejected\"} 1",
            "wukong_reconcile_duration_seconds_count{result=\"success\"} 1",
            "wukong_steps_total{class=\"live\",result=\"ok\"} 1",
            "wukong_drift_vms 3",
            "wukong_last_successful_sync_timestamp_seconds 1700000000.0",
            "wukong_git_fetch_errors_total 1",
            "wukong_revision_info{revision=\"bbb\"} 1",
            "wukong_reconcile_in_progress 1",
            "wukong_steps_in_progress 2",
            "wukong_plan_steps{class=\"blocked\"} 2",
            "wukong_held_steps_total{class=\"refused\"} 1",
            "# EOF",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
        assert!(!text.contains("revision=\"aaa\""), "{text}");
    }
}

//! The daemon's state as `/status` shows it: the revisions, the last sync, every VM of the fleet
//! and every set with aggregated counts, the last plan and apply report, recent errors.
//!
//! Plain serde data in a [`SharedStatus`] (`Arc<RwLock<Status>>`) that the reconcile loop writes
//! and the HTTP layer reads. [`observe`] derives the VM and set states from the fleet and the live
//! state, purely. Depends on [`crate::fleet`] and [`crate::live`] (data only).

use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use crate::status::{SetStatus, VmStatus};

/// How many recent errors `/status` keeps: enough to see a pattern, bounded so a flapping remote
/// cannot grow the daemon's memory.
pub const MAX_ERRORS: usize = 20;

/// How many applies `/status` remembers: the recent story of the fleet, bounded.
pub const MAX_HISTORY: usize = 20;

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
    /// The fleet's VMs (desired or live), by namespace and name, as `wukong status` shows them.
    pub vms: Vec<VmStatus>,
    /// The fleet's sets with aggregated counts, as `wukong status` shows them.
    pub sets: Vec<SetStatus>,
    /// The last applies, oldest first, at most [`MAX_HISTORY`].
    pub history: Vec<ApplyRecord>,
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

/// One apply the daemon carried out: when, at which revision, and what it changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplyRecord {
    /// End time, RFC 3339.
    pub at: String,
    pub revision: Option<String>,
    pub succeeded: bool,
    /// The report's summary (`3 done, 0 failed, 0 skipped`).
    pub summary: Value,
    /// Every step that acted, as `vms/ns/name: change item: outcome`.
    pub changed: Vec<String>,
}

impl ApplyRecord {
    /// The record of an apply report (`Report::json`, as the pipeline hands it over).
    pub fn of(report: &Value, at: String) -> ApplyRecord {
        let changed = report["steps"]
            .as_array()
            .map(|steps| {
                steps
                    .iter()
                    .filter(|s| !matches!(s["class"].as_str(), Some("refused" | "blocked")))
                    .map(|s| {
                        let object = s["vm"]
                            .as_str()
                            .map(|v| format!("vms/{v}"))
                            .or_else(|| {
                                s["nad"]
                                    .as_str()
                                    .map(|n| format!("network-attachment-definitions/{n}"))
                            })
                            .unwrap_or_default();
                        let item = s["item"]
                            .as_str()
                            .map(|i| format!(" {i}"))
                            .unwrap_or_default();
                        format!(
                            "{object}: {}{item}: {}",
                            s["change"].as_str().unwrap_or_default(),
                            s["outcome"].as_str().unwrap_or_default()
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        ApplyRecord {
            at,
            revision: report["revision"].as_str().map(str::to_owned),
            succeeded: report["succeeded"].as_bool() == Some(true),
            summary: report["summary"].clone(),
            changed,
        }
    }
}

impl Status {
    /// Remember an apply, dropping the oldest beyond [`MAX_HISTORY`].
    pub fn remember_apply(&mut self, record: ApplyRecord) {
        self.history.push(record);
        if self.history.len() > MAX_HISTORY {
            let excess = self.history.len() - MAX_HISTORY;
            self.history.drain(..excess);
        }
    }

    /// Record an error, dropping the oldest beyond [`MAX_ERRORS`].
    pub fn push_error(&mut self, error: ErrorRecord) {
        self.errors.push(error);
        if self.errors.len() > MAX_ERRORS {
            let excess = self.errors.len() - MAX_ERRORS;
            self.errors.drain(..excess);
        }
    }
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

    #[test]
    fn applies_are_remembered_bounded_with_what_they_changed() {
        let report = serde_json::json!({
            "revision": "abc", "succeeded": true, "summary": {"done": 1},
            "steps": [
                {"vm": "db/pg", "change": "cpu", "class": "live", "item": null, "outcome": "done"},
                {"vm": "db/pg", "change": "memory", "class": "blocked", "item": null, "outcome": "skipped"},
                {"nad": "db/br", "change": "nad-create", "class": "create", "item": null, "outcome": "done"}
            ]
        });
        let mut status = Status::default();
        for _ in 0..(MAX_HISTORY + 3) {
            status.remember_apply(ApplyRecord::of(&report, now_rfc3339()));
        }
        assert_eq!(status.history.len(), MAX_HISTORY);
        assert_eq!(
            status.history[0].changed,
            [
                "vms/db/pg: cpu: done",
                "network-attachment-definitions/db/br: nad-create: done"
            ]
        );
        assert!(status.history[0].succeeded);
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

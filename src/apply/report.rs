//! What an apply did: every step's outcome, and per VM done / failed with the reason /
//! skipped. Printed as text for people and as JSON (`--output json`) for scripts. Pure.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;
use serde_json::{Value, json};

use crate::plan::output::step_json;
use crate::plan::{Class, Plan, Step};

/// How one step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Carried out and verified on the cluster.
    Done,
    /// Attempted and not achieved: the detail says what KubeVirt or the API reported.
    Failed,
    /// Not attempted: refused or blocked by the plan, interrupted, or halted by an earlier
    /// failure.
    Skipped,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Done => "done",
            Outcome::Failed => "failed",
            Outcome::Skipped => "skipped",
        }
    }
}

/// The result of one step.
#[derive(Debug, Clone, PartialEq)]
pub struct StepResult {
    pub step: Step,
    pub outcome: Outcome,
    /// What happened: what proved the change, or why it failed or was skipped.
    pub detail: String,
    /// The failure was a 409 conflict: re-reading the cluster and re-planning may succeed.
    pub conflict: bool,
    pub seconds: f64,
}

impl StepResult {
    pub fn done(step: &Step, detail: impl Into<String>) -> StepResult {
        StepResult::new(step, Outcome::Done, detail)
    }

    pub fn failed(step: &Step, detail: impl Into<String>) -> StepResult {
        StepResult::new(step, Outcome::Failed, detail)
    }

    pub fn skipped(step: &Step, detail: impl Into<String>) -> StepResult {
        StepResult::new(step, Outcome::Skipped, detail)
    }

    fn new(step: &Step, outcome: Outcome, detail: impl Into<String>) -> StepResult {
        StepResult {
            step: step.clone(),
            outcome,
            detail: detail.into(),
            conflict: false,
            seconds: 0.0,
        }
    }
}

/// One VM's (or network attachment's) result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetResult {
    pub outcome: Outcome,
    /// Why it failed or was skipped (the first failing or skipped step).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Changes the plan refused or blocked: they were never meant to happen.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub held: Vec<String>,
}

/// The whole apply.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub fleet: String,
    pub revision: String,
    /// Results in the plan's step order.
    pub steps: Vec<StepResult>,
    /// A stop request (Ctrl-C, a shutdown) came before every step was started.
    pub interrupted: bool,
}

impl Report {
    /// The report of `plan` from its results, each with the index of its step in the plan.
    pub fn new(plan: &Plan, mut results: Vec<(usize, StepResult)>, interrupted: bool) -> Report {
        results.sort_by_key(|(i, _)| *i);
        Report {
            fleet: plan.fleet.clone(),
            revision: plan.revision.clone(),
            steps: results.into_iter().map(|(_, r)| r).collect(),
            interrupted,
        }
    }

    /// Whether every step that was meant to act did.
    pub fn succeeded(&self) -> bool {
        !self.interrupted
            && self
                .steps
                .iter()
                .filter(|r| r.step.acts())
                .all(|r| r.outcome == Outcome::Done)
    }

    /// Whether a failure was a conflict, so that re-planning may get further.
    pub fn conflicted(&self) -> bool {
        self.steps.iter().any(|r| r.conflict)
    }

    pub fn count(&self, outcome: Outcome) -> usize {
        self.steps
            .iter()
            .filter(|r| r.step.acts() && r.outcome == outcome)
            .count()
    }

    /// Per VM and network attachment: failed if a step failed, skipped if a step that was
    /// meant to act did not, else done.
    pub fn targets(&self) -> BTreeMap<String, TargetResult> {
        let mut out: BTreeMap<String, TargetResult> = BTreeMap::new();
        for r in &self.steps {
            let t = out
                .entry(r.step.target.to_string())
                .or_insert(TargetResult {
                    outcome: Outcome::Done,
                    reason: None,
                    held: Vec::new(),
                });
            if !r.step.acts() {
                t.held.push(format!(
                    "{} {}: {}",
                    r.step.class.as_str(),
                    what(&r.step),
                    r.step.reason
                ));
                continue;
            }
            if r.outcome > t.outcome {
                t.outcome = r.outcome;
                t.reason = Some(format!("{}: {}", what(&r.step), r.detail));
            }
        }
        out
    }

    /// The report for people: one line per target, then the failures and a summary line.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for (target, t) in self.targets() {
            let mark = match t.outcome {
                Outcome::Done => "✓",
                Outcome::Failed => "✗",
                Outcome::Skipped => "·",
            };
            let _ = write!(out, "{mark} {target}: {}", t.outcome.as_str());
            if let Some(r) = &t.reason {
                let _ = write!(out, " ({r})");
            }
            out.push('\n');
            for h in &t.held {
                let _ = writeln!(out, "    not applied, {h}");
            }
        }
        let _ = writeln!(out, "\n{}", self.summary_line());
        out
    }

    pub fn summary_line(&self) -> String {
        let mut line = format!(
            "Apply: {} done, {} failed, {} skipped",
            self.count(Outcome::Done),
            self.count(Outcome::Failed),
            self.count(Outcome::Skipped)
        );
        if self.interrupted {
            line.push_str(" (interrupted: no step was started after the stop request)");
        }
        line
    }

    pub fn json(&self) -> Value {
        json!({
            "fleet": self.fleet,
            "revision": self.revision,
            "succeeded": self.succeeded(),
            "interrupted": self.interrupted,
            "summary": {
                "done": self.count(Outcome::Done),
                "failed": self.count(Outcome::Failed),
                "skipped": self.count(Outcome::Skipped),
            },
            "targets": self.targets(),
            "steps": self.steps.iter().map(|r| {
                let mut s = step_json(&r.step);
                s["outcome"] = r.outcome.as_str().into();
                s["detail"] = r.detail.clone().into();
                s["seconds"] = json!((r.seconds * 1000.0).round() / 1000.0);
                s
            }).collect::<Vec<_>>(),
        })
    }
}

/// A step in a few words: `cpu`, `disk data`, `nic-attach net1`.
pub fn what(step: &Step) -> String {
    match &step.item {
        Some(item) if !matches!(step.class, Class::Create | Class::Delete) => {
            format!("{} {item}", step.change.as_str())
        }
        _ => step.change.as_str().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::ObjectRef;
    use crate::plan::Change;

    fn step(vm: &str, change: Change, class: Class) -> Step {
        Step {
            target: ObjectRef::vm("default", vm),
            change,
            class,
            item: None,
            from: None,
            to: None,
            reason: "because".into(),
            batch: None,
        }
    }

    #[test]
    fn a_vm_fails_when_any_step_fails_and_held_changes_are_listed() {
        let a = step("a", Change::Cpu, Class::Live);
        let b = step("a", Change::Memory, Class::Live);
        let c = step("a", Change::Disk, Class::Refused);
        let d = step("b", Change::Cpu, Class::Live);
        let report = Report {
            fleet: "f".into(),
            revision: "r".into(),
            steps: vec![
                StepResult::done(&a, "ok"),
                StepResult::failed(&b, "HotMemoryChange=False"),
                StepResult::skipped(&c, "refused"),
                StepResult::skipped(&d, "interrupted"),
            ],
            interrupted: true,
        };
        let t = report.targets();
        let a = &t["vms/default/a"];
        assert_eq!(a.outcome, Outcome::Failed);
        assert_eq!(a.reason.as_deref(), Some("memory: HotMemoryChange=False"));
        assert_eq!(a.held, vec!["refused disk: because"]);
        assert_eq!(t["vms/default/b"].outcome, Outcome::Skipped);
        assert!(!report.succeeded());
        assert_eq!(
            report.summary_line(),
            "Apply: 1 done, 1 failed, 1 skipped (interrupted: no step was started after the stop request)"
        );
        assert_eq!(report.json()["summary"]["failed"], 1);
    }
}

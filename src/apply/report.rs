//! What an apply did: every step's outcome, and per VM done / failed with the reason /
//! skipped. Printed as text for people and as JSON (`--output json`) for scripts. Pure.

use std::collections::{BTreeMap, BTreeSet};
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
        self.text_except(&BTreeSet::new())
    }

    /// [`Report::text`] without the result lines of the targets in `shown` (a terminal showed
    /// each of them as it finished, and shows a VM's result once); their held changes are
    /// still listed.
    pub fn text_except(&self, shown: &BTreeSet<String>) -> String {
        let mut out = String::new();
        for (target, t) in self.targets() {
            if shown.contains(&target) {
                if !t.held.is_empty() {
                    let _ = writeln!(out, "  {target}:");
                }
            } else {
                let _ = write!(out, "{} {target}: {}", mark(t.outcome), t.outcome.as_str());
                if let Some(r) = &t.reason {
                    let _ = write!(out, " ({r})");
                }
                out.push('\n');
            }
            for h in &t.held {
                let _ = writeln!(out, "    not applied, {h}");
            }
        }
        if !out.is_empty() {
            out.push('\n');
        }
        let _ = writeln!(out, "{}", self.summary_line());
        out
    }

    /// The changes of the plan's summary line ([`crate::plan::Summary`]) with their outcome:
    /// one per create, live change and delete, and one per restart, which carries the
    /// restart-class changes of its VM and fails if any of them failed. So the plan's
    /// `Plan: 2 to create, 9 live changes, 3 restarts, …` and the report count the same things.
    pub fn changes(&self) -> Vec<(Class, Outcome)> {
        let mut restarts: BTreeMap<String, Outcome> = BTreeMap::new();
        let mut out = Vec::new();
        for r in self.steps.iter().filter(|r| r.step.acts()) {
            if r.step.class == Class::Restart {
                let worst = restarts
                    .entry(r.step.target.to_string())
                    .or_insert(Outcome::Done);
                // A failure anywhere fails the restart; else a skipped part skips it.
                let rank = |o: Outcome| match o {
                    Outcome::Done => 0,
                    Outcome::Skipped => 1,
                    Outcome::Failed => 2,
                };
                if rank(r.outcome) > rank(*worst) {
                    *worst = r.outcome;
                }
            } else {
                out.push((r.step.class, r.outcome));
            }
        }
        out.extend(restarts.into_values().map(|o| (Class::Restart, o)));
        out
    }

    /// `Apply: 14 done (2 created, 9 live changes, 3 restarts), 0 failed, 0 skipped`, counted
    /// as [`Report::changes`].
    pub fn summary_line(&self) -> String {
        let changes = self.changes();
        let count = |o: Outcome| changes.iter().filter(|(_, x)| *x == o).count();
        let done = |c: Class| {
            changes
                .iter()
                .filter(|(k, o)| *k == c && *o == Outcome::Done)
                .count()
        };
        let plural =
            |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        let kinds: Vec<String> = [
            (done(Class::Create), "created", "created"),
            (done(Class::Live), "live change", "live changes"),
            (done(Class::Restart), "restart", "restarts"),
            (done(Class::Delete), "deleted", "deleted"),
        ]
        .into_iter()
        .filter(|(n, ..)| *n > 0)
        .map(|(n, one, many)| plural(n, one, many))
        .collect();
        let mut line = format!("Apply: {} done", count(Outcome::Done));
        if !kinds.is_empty() {
            let _ = write!(line, " ({})", kinds.join(", "));
        }
        let _ = write!(
            line,
            ", {} failed, {} skipped",
            count(Outcome::Failed),
            count(Outcome::Skipped)
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
                // The same, counted as the plan's summary counts (`Report::changes`).
                "changes": {
                    "done": self.changes().iter().filter(|(_, o)| *o == Outcome::Done).count(),
                    "failed": self.changes().iter().filter(|(_, o)| *o == Outcome::Failed).count(),
                    "skipped": self.changes().iter().filter(|(_, o)| *o == Outcome::Skipped).count(),
                },
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

/// The mark of an outcome: ✓, ✗ or ·.
pub fn mark(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Done => "✓",
        Outcome::Failed => "✗",
        Outcome::Skipped => "·",
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
            "Apply: 1 done (1 live change), 1 failed, 1 skipped (interrupted: no step was started after the stop request)"
        );
        let shown: BTreeSet<String> = ["vms/default/a".to_owned()].into();
        let text = report.text_except(&shown);
        assert!(!text.contains("✗ vms/default/a"), "{text}");
        assert!(
            text.contains("  vms/default/a:\n    not applied, refused disk: because"),
            "{text}"
        );
        assert!(text.contains("· vms/default/b: skipped"), "{text}");
        assert_eq!(report.json()["summary"]["failed"], 1);
    }

    #[test]
    fn the_report_counts_what_the_plan_counts() {
        // A restart carries the VM's restart-class changes: one unit, as in the plan's summary.
        let cpu = step("a", Change::Cpu, Class::Restart);
        let memory = step("a", Change::Memory, Class::Restart);
        let restart = step("a", Change::Restart, Class::Restart);
        let create = step("b", Change::Create, Class::Create);
        let steps = [cpu.clone(), memory.clone(), restart.clone(), create.clone()];
        let summary = crate::plan::Summary::of(&steps);
        assert_eq!((summary.restart, summary.create), (1, 1));
        let report = Report {
            fleet: "f".into(),
            revision: "r".into(),
            steps: vec![
                StepResult::done(&cpu, "ok"),
                StepResult::done(&memory, "ok"),
                StepResult::done(&restart, "ok"),
                StepResult::done(&create, "ok"),
            ],
            interrupted: false,
        };
        assert_eq!(
            report.summary_line(),
            "Apply: 2 done (1 created, 1 restart), 0 failed, 0 skipped"
        );
        let failed = Report {
            steps: vec![
                StepResult::done(&cpu, "ok"),
                StepResult::failed(&memory, "no"),
                StepResult::skipped(&restart, "not attempted"),
                StepResult::done(&create, "ok"),
            ],
            ..report.clone()
        };
        assert_eq!(
            failed.summary_line(),
            "Apply: 1 done (1 created), 1 failed, 0 skipped"
        );
        assert_eq!(failed.json()["summary"]["changes"]["failed"], 1);
        assert_eq!(failed.json()["summary"]["failed"], 1, "steps");
    }
}

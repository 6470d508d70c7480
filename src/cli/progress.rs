//! What `wukong apply` shows while it works, on stderr.
//!
//! On a terminal: a bar over the plan's steps with an elapsed clock that ticks every second, a
//! spinner per VM being changed saying what it waits for, and one line per VM when it is done
//! or has failed (the report then lists only the VMs not shown, so a terminal shows each VM's
//! result once). Lines printed while the bars are drawn ([`Screen::note`], the Ctrl-C
//! messages) go above them, never under a redraw. Elsewhere: one log line per step started and
//! finished.
//!
//! The screen also keeps what finished so far, so that a second Ctrl-C, which does not wait
//! for the steps in flight, can still print a report ([`Screen::report_so_far`]).

use std::collections::{BTreeSet, HashMap};
use std::io::IsTerminal;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::term;
use crate::apply::report::{mark, what};
use crate::apply::{self, Event, Outcome, Report, StepResult};
use crate::plan::{Plan, Step};

/// How often the bar's elapsed clock and the spinners are redrawn.
const TICK: Duration = Duration::from_millis(250);

/// The progress display of one `wukong apply` (all its rounds).
#[derive(Clone)]
pub struct Screen {
    tty: bool,
    /// Whether `wukong apply` takes Ctrl-C over once the apply starts.
    interrupts: bool,
    multi: MultiProgress,
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    /// The plan of the round running now.
    plan: Option<Plan>,
    total: Option<ProgressBar>,
    /// A spinner per target with a step in flight.
    spinners: HashMap<String, ProgressBar>,
    /// Steps started and not finished.
    in_flight: Vec<Step>,
    /// What finished this round.
    results: Vec<StepResult>,
    /// Acting steps not finished yet, per target.
    remaining: HashMap<String, usize>,
    /// Targets whose result a line already showed (this round).
    shown: BTreeSet<String>,
    /// Seconds spent per target.
    seconds: HashMap<String, f64>,
}

impl Default for Screen {
    fn default() -> Self {
        Self::new()
    }
}

impl Screen {
    /// A screen on stderr: drawn when stderr is a terminal, log lines otherwise.
    pub fn new() -> Screen {
        let tty = std::io::stderr().is_terminal();
        Screen {
            tty,
            interrupts: false,
            multi: MultiProgress::with_draw_target(if tty {
                ProgressDrawTarget::stderr()
            } else {
                ProgressDrawTarget::hidden()
            }),
            state: Arc::new(Mutex::new(State::default())),
        }
    }

    /// The apply run on this screen takes Ctrl-C over once it starts changing the cluster.
    pub fn handling_interrupts(mut self) -> Screen {
        self.interrupts = true;
        self
    }

    pub fn handles_interrupts(&self) -> bool {
        self.interrupts
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Start showing a round that carries out `plan`; the executor's progress callback.
    pub fn begin(&self, plan: &Plan) -> apply::Progress {
        let mut state = self.state();
        let acting: Vec<&Step> = plan.steps.iter().filter(|s| s.acts()).collect();
        let total = self.multi.add(ProgressBar::new(
            u64::try_from(acting.len()).unwrap_or(u64::MAX),
        ));
        if let Ok(style) =
            ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {elapsed_precise}")
        {
            total.set_style(style);
        }
        if self.tty {
            // The clock ticks while every step in flight waits (after a Ctrl-C too).
            total.enable_steady_tick(TICK);
        }
        let mut remaining = HashMap::new();
        for step in &acting {
            *remaining.entry(step.target.to_string()).or_insert(0) += 1;
        }
        *state = State {
            plan: Some(plan.clone()),
            total: Some(total),
            remaining,
            ..State::default()
        };
        let screen = self.clone();
        Arc::new(move |event: &Event<'_>| screen.show(event))
    }

    /// Print a line above the bars (on a terminal) or on stderr.
    pub fn note(&self, line: &str) {
        if self.tty {
            // `println` draws the line above the bars and redraws them under it.
            if self.multi.println(line).is_err() {
                term::errln!("{line}");
            }
        } else {
            term::errln!("{line}");
        }
    }

    fn show(&self, event: &Event<'_>) {
        let mut state = self.state();
        match event {
            Event::Started(step) => {
                state.in_flight.push((*step).clone());
                let message = format!("{}: {} …", step.target, what(step));
                if !self.tty {
                    term::errln!("{message}");
                    return;
                }
                let key = step.target.to_string();
                let spinner = state.spinners.entry(key).or_insert_with(|| {
                    let s = self.multi.add(ProgressBar::new_spinner());
                    s.enable_steady_tick(TICK);
                    s
                });
                spinner.set_message(message);
            }
            Event::Waiting(step, why) => {
                if let Some(s) = state.spinners.get(&step.target.to_string()) {
                    s.set_message(format!("{}: {}: {why}", step.target, what(step)));
                }
            }
            Event::Finished(result) => self.finished(&mut state, result),
        }
    }

    fn finished(&self, state: &mut State, result: &StepResult) {
        let step = &result.step;
        if let Some(i) = state.in_flight.iter().position(|s| s == step) {
            state.in_flight.remove(i);
        }
        state.results.push(result.clone());
        if let Some(total) = &state.total {
            total.inc(1);
        }
        if !self.tty {
            term::errln!(
                "{} {}: {} {} ({:.1}s): {}",
                mark(result.outcome),
                step.target,
                what(step),
                result.outcome.as_str(),
                result.seconds,
                result.detail
            );
            return;
        }
        let key = step.target.to_string();
        *state.seconds.entry(key.clone()).or_default() += result.seconds;
        let left = state.remaining.get_mut(&key).map(|n| {
            *n = n.saturating_sub(1);
            *n
        });
        // A VM's line once it is done, or at its first failure (a failed step stops the rest
        // of its VM).
        let line = match result.outcome {
            Outcome::Failed => Some(format!(
                "{} {key}: failed ({}: {})",
                mark(Outcome::Failed),
                what(step),
                result.detail
            )),
            _ if left == Some(0) => {
                let failed = state
                    .results
                    .iter()
                    .any(|r| r.step.target == step.target && r.outcome != Outcome::Done);
                (!failed).then(|| {
                    format!(
                        "{} {key}: done ({:.1}s)",
                        mark(Outcome::Done),
                        state.seconds.get(&key).copied().unwrap_or_default()
                    )
                })
            }
            _ => None,
        };
        let more_in_flight = state.in_flight.iter().any(|s| s.target == step.target);
        if (line.is_some() || left == Some(0))
            && !more_in_flight
            && let Some(spinner) = state.spinners.remove(&key)
        {
            spinner.finish_and_clear();
            self.multi.remove(&spinner);
        }
        if let Some(line) = line
            && state.shown.insert(key)
        {
            let _ = self.multi.println(line);
        }
    }

    /// The targets whose result a line showed this round.
    pub fn shown(&self) -> BTreeSet<String> {
        if self.tty {
            self.state().shown.clone()
        } else {
            BTreeSet::new()
        }
    }

    /// Clear the bars at the end of a round.
    pub fn end_round(&self) {
        let mut state = self.state();
        for (_, s) in state.spinners.drain() {
            s.finish_and_clear();
            self.multi.remove(&s);
        }
        if let Some(total) = state.total.take() {
            total.finish_and_clear();
            self.multi.remove(&total);
        }
    }

    /// The report of the round running now, as far as it got: finished steps as they ended,
    /// steps in flight failed (their outcome is unknown: the write may have happened), the
    /// rest not started. `None` before any round.
    pub fn report_so_far(&self) -> Option<Report> {
        let state = self.state();
        let plan = state.plan.as_ref()?;
        let results = plan
            .steps
            .iter()
            .enumerate()
            .map(|(i, step)| {
                let result = if let Some(r) = state.results.iter().find(|r| &r.step == step) {
                    r.clone()
                } else if !step.acts() {
                    StepResult::skipped(step, format!("{}: {}", step.class.as_str(), step.reason))
                } else if state.in_flight.contains(step) {
                    StepResult::failed(
                        step,
                        "in flight when the apply was quit: it may or may not have happened; `wukong apply` again finishes the job",
                    )
                } else {
                    StepResult::skipped(step, "not started: the apply was quit")
                };
                (i, result)
            })
            .collect();
        Some(Report::new(plan, results, true))
    }
}

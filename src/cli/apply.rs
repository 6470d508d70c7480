//! `wukong apply`: plan (or load a saved plan), show it, ask, carry it out with progress on
//! the terminal, report per VM.

use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use super::progress::Screen;
use super::term::{self, errp, outln, outp};
use super::{ClusterArgs, EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, Error, load_and_render};
use crate::apply::{self, Cluster, Options, Report, StopSignal, Timeouts};
use crate::live;
use crate::plan::{self, Plan, output};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ReportFormat {
    Text,
    Json,
}

/// The arguments of `wukong apply`.
#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    /// Fleet directory (or YAML file) to plan and apply, or a plan saved by `wukong plan --out`.
    pub path: PathBuf,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Apply without asking (required when stdin is not a terminal).
    #[arg(long)]
    pub auto_approve: bool,
    /// Report format: the text report, or one JSON document with the plan and the report.
    #[arg(long, short, value_enum, default_value_t = ReportFormat::Text)]
    pub output: ReportFormat,
    /// Revision recorded on the objects written. With a saved plan: the revision expected,
    /// refused when the plan was made from another.
    #[arg(long)]
    pub revision: Option<String>,
    /// VMs changed at once (default: the fleet's maxParallel).
    #[arg(long)]
    pub max_parallel: Option<usize>,
    /// Longest wait for any one step to show on the VM, e.g. `90s`, `10m` (default: per step
    /// kind, up to 15 minutes).
    #[arg(long, value_parser = crate::daemon::command::parse_duration)]
    pub timeout: Option<Duration>,
}

/// What is being applied.
pub(super) enum Source {
    Fleet {
        fleet: Box<crate::fleet::Fleet>,
        objects: Vec<crate::render::Rendered>,
        revision: String,
    },
    /// A plan saved by `wukong plan --out`, with the fleet it was made from (read again):
    /// the plan is applied only if it is what that fleet gives for the cluster now.
    Saved {
        plan: Box<Plan>,
        fleet: Box<crate::fleet::Fleet>,
        objects: Vec<crate::render::Rendered>,
    },
}

fn is_saved_plan(path: &Path) -> bool {
    path.is_file() && path.extension().is_some_and(|e| e == "json")
}

pub fn run(a: ApplyArgs) -> Result<u8, Error> {
    let source = if is_saved_plan(&a.path) {
        let text = std::fs::read_to_string(&a.path).map_err(|source| Error::Read {
            path: a.path.clone(),
            source,
        })?;
        let plan = output::load(&a.path.display().to_string(), &text)?;
        if let Some(r) = &a.revision
            && *r != plan.revision
        {
            return Err(Error::Stale(vec![format!(
                "the plan was made from revision {}, not {r}",
                plan.revision
            )]));
        }
        let raw: Value = serde_json::from_str(&text).unwrap_or_default();
        let fleet_path = check_source(&raw)?;
        let (fleet, objects) = load_and_render(&fleet_path, &plan.revision)?;
        Source::Saved {
            plan: Box::new(plan),
            fleet: Box::new(fleet),
            objects,
        }
    } else {
        let revision = a.revision.clone().unwrap_or_else(|| "local".into());
        let (fleet, objects) = load_and_render(&a.path, &revision)?;
        Source::Fleet {
            fleet: Box::new(fleet),
            objects,
            revision,
        }
    };

    let interactive = std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
    if !a.auto_approve && !interactive {
        return Err(Error::NotApproved);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    let cluster_args = a.cluster.clone();
    runtime
        .block_on(async move {
            let client = a.cluster.connection().client().await?;
            let cluster = Cluster::new(client);
            let stop = StopSignal::default();
            let screen = Screen::new().handling_interrupts();
            let options = Options {
                max_parallel: a.max_parallel,
                timeouts: a.timeout.map(Timeouts::all).unwrap_or_default(),
                stop,
                ..Options::default()
            };
            let reports = apply_source(
                &cluster,
                &source,
                &options,
                a.output,
                a.auto_approve,
                &screen,
            )
            .await?;
            Ok(if reports.last().is_none_or(Report::succeeded) {
                EXIT_OK
            } else {
                EXIT_ERROR
            })
        })
        .map_err(|e| cluster_args.explain(e))
}

/// Plan (or check a saved plan), show it, ask unless `auto_approve`, execute with progress,
/// re-plan after conflicts, and print the report. Returns every round's report.
pub(super) async fn apply_source(
    cluster: &Cluster,
    source: &Source,
    options: &Options,
    format: ReportFormat,
    auto_approve: bool,
    screen: &Screen,
) -> Result<Vec<Report>, Error> {
    let mut reports = Vec::new();
    let mut first_plan = None;
    for round in 1..=apply::MAX_ROUNDS {
        let plan = match source {
            Source::Fleet {
                fleet,
                objects,
                revision,
            } => {
                let live =
                    live::read::read(cluster.client(), &live::read::Scope::of(fleet)).await?;
                let mut plan = plan::plan(fleet, objects, &live, revision);
                apply::dry_run::check(cluster, &mut plan, &live, &mut Default::default()).await;
                plan
            }
            Source::Saved {
                plan,
                fleet,
                objects,
            } => {
                let live =
                    live::read::read(cluster.client(), &live::read::Scope::of(fleet)).await?;
                let why = apply::stale(plan, &live);
                if !why.is_empty() {
                    return Err(Error::Stale(why));
                }
                // Permissions (classes, restartable VMs, limits) come from the fleet, not
                // from the file: the plan is carried out only if it is the fleet's.
                let derived = plan::plan(fleet, objects, &live, &plan.revision);
                let why = apply::overreach(plan, &derived);
                if !why.is_empty() {
                    return Err(Error::Overreach(why));
                }
                derived
            }
        };
        if round == 1 {
            if matches!(format, ReportFormat::Text) {
                outp!("{}", output::text(&plan, term::colour_stdout()));
            }
            // Whoever reads the output went away (`wukong apply … | head`): change nothing
            // that nobody sees.
            if term::stdout_closed() {
                return Err(Error::OutputClosed);
            }
            // Nothing to do: no question. The plan still runs, so that the report lists
            // what was held back (refused, blocked) without touching the cluster.
            if plan.has_changes() && !auto_approve && !confirm()? {
                return Err(Error::Cancelled);
            }
            // From here on Ctrl-C stops the apply gracefully (before, it just quits).
            if screen.handles_interrupts() {
                tokio::spawn(interrupt_handler(
                    options.stop.clone(),
                    screen.clone(),
                    format,
                ));
            }
        } else {
            screen.note(&format!(
                "Re-planning after a conflict (round {round} of {})",
                apply::MAX_ROUNDS
            ));
        }
        let options = Options {
            progress: Some(screen.begin(&plan)),
            ..options.clone()
        };
        let report = apply::execute(cluster, &plan, &options).await;
        screen.end_round();
        let again =
            report.conflicted() && !report.interrupted && matches!(source, Source::Fleet { .. });
        reports.push(report);
        first_plan.get_or_insert(plan);
        if !again {
            break;
        }
    }
    if let Some(plan) = &first_plan {
        match format {
            ReportFormat::Text => {
                // The last round's VMs shown as they finished are not repeated; earlier
                // rounds (re-planned after a conflict) are reported whole.
                let last = reports.len().saturating_sub(1);
                let shown = screen.shown();
                for (i, r) in reports.iter().enumerate() {
                    if r.steps.is_empty() {
                        continue;
                    }
                    let text = if i == last && term::one_terminal() {
                        r.text_except(&shown)
                    } else {
                        r.text()
                    };
                    outp!("\n{text}");
                }
            }
            ReportFormat::Json => print_json(plan, &reports),
        }
    }
    Ok(reports)
}

fn print_json(plan: &Plan, reports: &[Report]) {
    let doc = json!({
        "plan": output::json(plan),
        "report": reports.last().map(Report::json),
        "rounds": reports.iter().map(Report::json).collect::<Vec<_>>(),
    });
    outln!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
}

/// A saved plan records the fleet it was made from and a digest of its files. That fleet is
/// read again to decide what the plan may do, so a plan without it, or whose fleet is gone or
/// changed since, is refused. Returns the fleet's path.
fn check_source(raw: &Value) -> Result<PathBuf, Error> {
    let (Some(path), Some(digest)) = (
        raw.pointer("/source/path").and_then(Value::as_str),
        raw.pointer("/source/digest").and_then(Value::as_str),
    ) else {
        return Err(Error::Stale(vec![
            "the plan does not name the fleet it was made from (`source`), so what it may change cannot be checked".into(),
        ]));
    };
    let path = PathBuf::from(path);
    if !path.exists() {
        return Err(Error::Stale(vec![format!(
            "the fleet the plan was made from, {}, is not there, so what the plan may change cannot be checked",
            path.display()
        )]));
    }
    let now = super::fleet_digest(&path)?;
    if now != digest {
        return Err(Error::Stale(vec![format!(
            "the fleet at {} changed since the plan was made",
            path.display()
        )]));
    }
    Ok(path)
}

fn confirm() -> Result<bool, Error> {
    errp!("\nApply these changes? Only 'yes' is accepted: ");
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|source| Error::Read {
            path: PathBuf::from("<stdin>"),
            source,
        })?;
    Ok(answer.trim() == "yes")
}

/// First Ctrl-C: finish the steps in flight, start no new one; the clock keeps ticking and
/// the report follows. Second: stop waiting, print the report as far as it got (the steps in
/// flight are unknown), and leave with [`EXIT_INTERRUPTED`].
async fn interrupt_handler(stop: StopSignal, screen: Screen, format: ReportFormat) {
    if tokio::signal::ctrl_c().await.is_err() {
        return;
    }
    screen.note(
        "Interrupted: finishing the steps in flight, starting no new one (Ctrl-C again to quit at once)",
    );
    stop.request();
    if tokio::signal::ctrl_c().await.is_err() {
        return;
    }
    screen.note("Quitting without waiting for the steps in flight.");
    screen.end_round();
    if let Some(report) = screen.report_so_far() {
        match format {
            ReportFormat::Text => outp!("\n{}", report.text()),
            ReportFormat::Json => outln!(
                "{}",
                serde_json::to_string_pretty(&json!({ "report": report.json() }))
                    .unwrap_or_default()
            ),
        }
    }
    std::process::exit(i32::from(EXIT_INTERRUPTED));
}

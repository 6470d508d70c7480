//! The command line: clap definitions and the commands they run. Only a thin shell over the
//! library; user-facing output goes to stdout, diagnostics and logs to stderr.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

mod apply;
mod completion;
mod demo;
pub mod progress;
pub mod term;

use term::{errln, outln, outp};

use crate::live::{self, LiveState};
use crate::plan::{self, output};
use crate::{fleet, render, schema, sim, source};

/// Exit code: success (and, for `plan --detailed-exitcode`, no changes).
pub const EXIT_OK: u8 = 0;
/// Exit code: invalid input or an operation failed.
pub const EXIT_ERROR: u8 = 1;
/// Exit code of `plan --detailed-exitcode` when the plan has steps.
pub const EXIT_CHANGES: u8 = 2;
/// Exit code of `apply` quit by a second Ctrl-C (128 + SIGINT, as a shell reports it).
pub const EXIT_INTERRUPTED: u8 = 130;

#[derive(Debug, Parser)]
#[command(
    name = "wukong",
    version,
    about = "GitOps reconciler for KubeVirt virtual-machine fleets"
)]
pub struct Cli {
    /// Colour the output: `auto` on a terminal unless NO_COLOR is set, `always`, `never`.
    #[arg(long, global = true, value_enum, value_name = "WHEN", default_value_t = term::ColorChoice::Auto)]
    pub color: term::ColorChoice,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a fleet: every file, document and rule. Exit 0 when valid, 1 with every problem.
    Validate {
        /// Fleet directory (or a single YAML file).
        path: PathBuf,
    },
    /// Print every object the fleet renders to, in a stable order.
    Render {
        /// Fleet directory (or a single YAML file).
        path: PathBuf,
        #[arg(long, short, value_enum, default_value_t = Format::Yaml)]
        output: Format,
        /// Revision recorded in the wukong.novasphere.dev/revision annotation.
        #[arg(long, default_value = "local")]
        revision: String,
    },
    /// Show what it takes to bring the cluster to the fleet: every step, its class and why.
    Plan(PlanArgs),
    /// Plan, ask, then carry the plan out and verify every change on the running VMs. Also
    /// applies a plan saved by `plan --out`, exactly, unless the cluster or fleet changed.
    Apply(apply::ApplyArgs),
    /// The whole pipeline on the embedded simulated cluster, no set-up: apply one revision of
    /// a fleet, then the next, showing each plan, the progress and the report.
    Demo(demo::DemoArgs),
    /// How the fleet runs: per set ready/updated/current and the revisions written, per VM its
    /// power state and what its running instance reports beside what the fleet declares, and
    /// what is still to do.
    Status(StatusArgs),
    /// Save the live state the fleet's plan depends on, for `plan --live` without a cluster.
    Snapshot {
        /// Fleet directory (its namespaces scope what is read).
        path: PathBuf,
        #[command(flatten)]
        cluster: ClusterArgs,
        /// File to write.
        #[arg(long, short = 'f', value_name = "FILE")]
        out: PathBuf,
    },
    /// Run the simulated KubeVirt cluster until Ctrl-C; prints its URL.
    Sim {
        /// Loopback address to serve on (port 0: any free port).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: std::net::SocketAddr,
        /// Write a kubeconfig for the server to this file.
        #[arg(long)]
        kubeconfig_out: Option<PathBuf>,
        /// Run the simulated controllers this many times faster than real time.
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
        /// Keep the cluster's objects in this file: loaded on start, saved every few seconds
        /// and on exit, so the cluster survives a restart.
        #[arg(long)]
        state: Option<PathBuf>,
        /// The KubeVirt release to behave as (1.7, 1.8 or 1.9): its webhooks, controller rules
        /// and feature gates; the KubeVirt CR reports it in `status.observedKubeVirtVersion`.
        #[arg(long, value_name = "VERSION", default_value = "1.9", value_parser = sim::KubeVirtVersion::parse)]
        kubevirt_version: sim::KubeVirtVersion,
    },
    /// Pull the fleet from Git and reconcile on every new revision, webhook and drift timer;
    /// serve /healthz, /readyz, /metrics, /status and POST /hooks/git.
    Daemon(Box<crate::daemon::command::DaemonArgs>),
    /// Print a shell completion script: `source <(wukong completion bash)`, or write it to
    /// the shell's completion directory.
    Completion {
        #[arg(value_enum)]
        shell: completion::Shell,
    },
    /// Print the manual page (roff), or with --out-dir write one page per command.
    Man {
        /// Write wukong.1 and wukong-COMMAND.1 for every command to this directory.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    Yaml,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PlanFormat {
    Text,
    Markdown,
    Json,
}

/// Where the cluster is: kubeconfig and context, else `KUBECONFIG`, `~/.kube/config` or the
/// in-cluster service account.
#[derive(Debug, Clone, clap::Args)]
pub struct ClusterArgs {
    /// Kubeconfig file (default: KUBECONFIG, ~/.kube/config, then in-cluster credentials).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context to use.
    #[arg(long)]
    pub context: Option<String>,
}

impl ClusterArgs {
    fn connection(&self) -> live::read::Connection {
        live::read::Connection {
            kubeconfig: self.kubeconfig.clone(),
            context: self.context.clone(),
        }
    }

    /// A failure to reach or read the cluster as one line naming the server and why
    /// (`crate::reach`); other errors as they are.
    fn explain(&self, error: Error) -> Error {
        let server = || crate::reach::server(self.kubeconfig.as_deref(), self.context.as_deref());
        match error {
            Error::Cluster(live::read::Error::List { what, source }) => Error::Reach(
                crate::reach::describe(&server(), &format!("list {what}"), &source),
            ),
            Error::Cluster(live::read::Error::Client(source)) => Error::Reach(format!(
                "cannot set up the connection to the cluster at {}: {source}",
                server()
            )),
            other => other,
        }
    }
}

/// Errors at the command-line edge.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Source(#[from] source::Error),
    #[error(transparent)]
    Fleet(#[from] fleet::Error),
    #[error(transparent)]
    Render(#[from] render::Error),
    #[error(transparent)]
    Sim(#[from] sim::Error),
    #[error("cannot load the API schemas: {0}")]
    SchemaLoad(#[from] schema::SchemaLoadError),
    #[error(transparent)]
    Live(#[from] live::Error),
    #[error(transparent)]
    Cluster(#[from] live::read::Error),
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error(transparent)]
    SavedPlan(#[from] output::LoadError),
    #[error("the saved plan is out of date; make a new one with `wukong plan --out`:\n{}", .0.iter().take(20).map(|e| format!("  {e}")).collect::<Vec<_>>().join("\n"))]
    Stale(Vec<String>),
    #[error("the saved plan is not what its fleet allows now; nothing was applied (make a new one with `wukong plan --out`):\n{}", .0.iter().take(20).map(|e| format!("  {e}")).collect::<Vec<_>>().join("\n"))]
    Overreach(Vec<String>),
    #[error(
        "stdin is not a terminal, so the plan cannot be confirmed; pass --auto-approve to apply without asking"
    )]
    NotApproved,
    #[error("demo: {0}")]
    Demo(String),
    #[error("apply cancelled: the answer was not 'yes'")]
    Cancelled,
    #[error("the output was closed before the plan was shown whole; nothing was applied")]
    OutputClosed,
    #[error("{0}")]
    Reach(String),
    #[error(
        "{}: no fleet documents (kind Wukong, WukongSet or Fleet of apiVersion {}) in {files} YAML file{}{}; only *.yaml and *.yml files outside hidden directories are read",
        path.display(),
        fleet::model::API_VERSION,
        if *files == 1 { "" } else { "s" },
        if *skipped == 0 { String::new() } else { format!(" ({skipped} documents of other APIs)") }
    )]
    NoFleet {
        path: PathBuf,
        files: usize,
        skipped: usize,
    },
    #[error("rendered objects do not match the official schemas:\n{}", .0.iter().map(|e| format!("  {e}")).collect::<Vec<_>>().join("\n"))]
    Schema(Vec<schema::SchemaError>),
}

/// Read, validate and render a fleet directory; schema-check every rendered object. The fleet
/// may not read anything outside its Git working tree (or itself, when it is in none).
pub fn load_and_render(
    path: &Path,
    revision: &str,
) -> Result<(fleet::Fleet, Vec<render::Rendered>), Error> {
    load_and_render_in(&source::Repository::open(path)?, revision)
}

/// [`load_and_render`] for a fleet already located (the daemon names its checkout as the
/// repository).
pub fn load_and_render_in(
    repo: &source::Repository,
    revision: &str,
) -> Result<(fleet::Fleet, Vec<render::Rendered>), Error> {
    let loaded = load(repo)?;
    let templates =
        render::Templates::with_overrides_in(&loaded.fleet.settings.templates, &loaded.templates)?;
    let objects = render::render(&loaded.fleet, &templates, revision)?;
    let mut problems = render::check_limits(&loaded.fleet, &objects);
    if !problems.is_empty() {
        problems.sort();
        return Err(fleet::Error::Invalid(problems).into());
    }
    check_schemas(&objects)?;
    Ok((loaded.fleet, objects))
}

/// A fleet read and validated, with what it was made from.
struct Loaded {
    fleet: fleet::Fleet,
    files: Vec<fleet::SourceFile>,
    /// Template overrides, (file name, text).
    templates: Vec<(String, String)>,
}

/// Read and validate a fleet and read its template overrides: every problem of the files,
/// the documents and the templates' links is reported at once.
fn load(repo: &source::Repository) -> Result<Loaded, Error> {
    let read = repo.fleet_files()?;
    let fleet = fleet::load_with(&read.files, read.problems)?;
    // An empty or wrong directory is not an empty fleet: applied with pruning on, it would
    // delete every VM.
    if fleet.documents == 0 {
        return Err(Error::NoFleet {
            path: repo.root().to_owned(),
            files: read.files.len(),
            skipped: fleet.skipped.len(),
        });
    }
    let templates = repo.templates(&fleet.settings.templates)?;
    if !templates.problems.is_empty() {
        let mut problems = templates.problems;
        problems.sort();
        return Err(fleet::Error::Invalid(problems).into());
    }
    Ok(Loaded {
        fleet,
        files: read.files,
        templates: templates.files,
    })
}

/// A digest of everything a fleet is made from (its YAML files and templates), so that a saved
/// plan can tell when the fleet changed since.
pub fn fleet_digest(path: &Path) -> Result<String, Error> {
    use sha2::{Digest, Sha256};
    let loaded = load(&source::Repository::open(path)?)?;
    let mut hash = Sha256::new();
    for (name, text) in loaded
        .files
        .iter()
        .map(|f| (&f.path, &f.text))
        .chain(loaded.templates.iter().map(|(n, t)| (n, t)))
    {
        hash.update(name.as_bytes());
        hash.update([0]);
        hash.update(text.as_bytes());
        hash.update([0]);
    }
    Ok(format!("sha256:{:x}", hash.finalize()))
}

fn check_schemas(objects: &[render::Rendered]) -> Result<(), Error> {
    let schemas = schema::SchemaSet::new()?;
    let errors: Vec<_> = objects
        .iter()
        .filter_map(|o| schemas.validate(&o.manifest).err())
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Error::Schema(errors))
    }
}

/// A runtime for one command's cluster calls.
fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)
}

/// Read live state from the cluster `args` point at.
pub fn read_cluster(args: &ClusterArgs, fleet: &fleet::Fleet) -> Result<LiveState, Error> {
    runtime()?
        .block_on(async {
            let client = args.connection().client().await?;
            Ok(live::read::read(&client, &live::read::Scope::of(fleet)).await?)
        })
        .map_err(|e| args.explain(e))
}

/// Read the cluster `args` point at, plan, and check the plan's writes with server-side dry
/// runs (what the API server would store, and any admission rejection).
fn plan_against_cluster(
    args: &ClusterArgs,
    fleet: &fleet::Fleet,
    objects: &[render::Rendered],
    revision: &str,
) -> Result<plan::Plan, Error> {
    read_and_plan(args, fleet, objects, revision).map(|(_, plan)| plan)
}

/// The live state the cluster `args` point at, and the plan against it, checked with
/// server-side dry runs.
fn read_and_plan(
    args: &ClusterArgs,
    fleet: &fleet::Fleet,
    objects: &[render::Rendered],
    revision: &str,
) -> Result<(LiveState, plan::Plan), Error> {
    runtime()?
        .block_on(async {
            let client = args.connection().client().await?;
            let live = live::read::read(&client, &live::read::Scope::of(fleet)).await?;
            let mut plan = plan::plan(fleet, objects, &live, revision);
            let cluster = crate::apply::Cluster::new(client);
            crate::apply::dry_run::check(&cluster, &mut plan, &live, &mut Default::default()).await;
            Ok((live, plan))
        })
        .map_err(|e| args.explain(e))
}

/// The arguments of `wukong status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Fleet directory (or a single YAML file).
    pub path: PathBuf,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Read a snapshot saved by `wukong snapshot` instead of a cluster.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["kubeconfig", "context"])]
    pub live: Option<PathBuf>,
    #[arg(long, short, value_enum, default_value_t = StatusFormat::Text)]
    pub output: StatusFormat,
    /// The fleet's revision to compare against.
    #[arg(long, default_value = "local")]
    pub revision: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatusFormat {
    Text,
    Json,
}

fn run_status(a: StatusArgs) -> Result<u8, Error> {
    let (fleet, objects) = load_and_render(&a.path, &a.revision)?;
    let (live, plan) = match &a.live {
        Some(file) => {
            let text = std::fs::read_to_string(file).map_err(|source| Error::Read {
                path: file.clone(),
                source,
            })?;
            let live = LiveState::from_snapshot(&file.display().to_string(), &text)?;
            let plan = plan::plan(&fleet, &objects, &live, &a.revision);
            (live, plan)
        }
        None => read_and_plan(&a.cluster, &fleet, &objects, &a.revision)?,
    };
    let status = crate::status::of(&fleet, &live, &plan);
    let text = match a.output {
        StatusFormat::Text => crate::status::text(&status),
        StatusFormat::Json => format!(
            "{}\n",
            serde_json::to_string_pretty(&status).unwrap_or_default()
        ),
    };
    print!("{text}");
    Ok(EXIT_OK)
}

fn write_file(path: &Path, text: &str) -> Result<(), Error> {
    std::fs::write(path, text).map_err(|source| Error::Write {
        path: path.to_owned(),
        source,
    })
}

/// The arguments of `wukong plan`.
#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// Fleet directory (or a single YAML file).
    pub path: PathBuf,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Plan against a snapshot saved by `wukong snapshot` instead of a cluster.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["kubeconfig", "context"])]
    pub live: Option<PathBuf>,
    #[arg(long, short, value_enum, default_value_t = PlanFormat::Text)]
    pub output: PlanFormat,
    /// Revision recorded on the objects the plan writes.
    #[arg(long, default_value = "local")]
    pub revision: String,
    /// Exit 0 when there is nothing to do, 2 when the plan has steps, 1 on errors.
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// Also save the whole plan (steps, manifests to write, the live versions it was
    /// computed from) as JSON.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

fn run_plan(a: PlanArgs) -> Result<u8, Error> {
    let (fleet, objects) = load_and_render(&a.path, &a.revision)?;
    let plan = match &a.live {
        Some(file) => {
            let text = std::fs::read_to_string(file).map_err(|source| Error::Read {
                path: file.clone(),
                source,
            })?;
            let live = LiveState::from_snapshot(&file.display().to_string(), &text)?;
            let mut plan = plan::plan(&fleet, &objects, &live, &a.revision);
            plan.notes.push(plan::dry_run::OFFLINE_NOTE.into());
            plan
        }
        None => plan_against_cluster(&a.cluster, &fleet, &objects, &a.revision)?,
    };
    if let Some(out) = &a.out {
        let mut saved = output::saved(&plan);
        let path = std::fs::canonicalize(&a.path).unwrap_or_else(|_| a.path.clone());
        saved["source"] = serde_json::json!({
            "path": path.display().to_string(),
            "digest": fleet_digest(&a.path)?,
        });
        let text = serde_json::to_string_pretty(&saved).unwrap_or_default();
        write_file(out, &text)?;
    }
    match a.output {
        PlanFormat::Text => outp!("{}", output::text(&plan, term::colour_stdout())),
        PlanFormat::Markdown => outp!("{}", output::markdown(&plan)),
        PlanFormat::Json => outln!(
            "{}",
            serde_json::to_string_pretty(&output::json(&plan)).unwrap_or_default()
        ),
    }
    Ok(if a.detailed_exitcode && !plan.steps.is_empty() {
        EXIT_CHANGES
    } else {
        EXIT_OK
    })
}

fn exit(result: Result<u8, Error>) -> ExitCode {
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            errln!("error: {e}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// Run a parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Plan(args) => return exit(run_plan(args)),
        Command::Status(args) => return exit(run_status(args)),
        Command::Apply(args) => return exit(apply::run(args)),
        Command::Demo(args) => return exit(demo::run(args)),
        Command::Completion { shell } => {
            completion::completion(shell);
            Ok(())
        }
        Command::Man { out_dir } => completion::man(out_dir.as_deref()),
        Command::Snapshot { path, cluster, out } => load_and_render(&path, "local")
            .and_then(|(fleet, _)| read_cluster(&cluster, &fleet))
            .and_then(|live| {
                let text = serde_json::to_string_pretty(&live.to_snapshot()).unwrap_or_default();
                write_file(&out, &text)?;
                errln!(
                    "{}: {} VMs and network attachments, {} instances, {} PVCs",
                    out.display(),
                    live.objects.len(),
                    live.vmis.len(),
                    live.pvcs.len()
                );
                Ok(())
            }),
        Command::Validate { path } => load_and_render(&path, "local").map(|(f, objects)| {
            if f.vms.is_empty() {
                errln!(
                    "warning: the fleet declares no VMs{}",
                    if f.settings.prune {
                        "; with prune: true, applying it would delete every VM it manages (the prune guard refuses that unless spec.pruneGuard.allowEmpty is true)"
                    } else {
                        ""
                    }
                );
            }
            errln!(
                "{}: valid ({} VMs, {} sets, {} objects rendered{})",
                path.display(),
                f.vms.len(),
                f.sets.len(),
                objects.len(),
                if f.skipped.is_empty() {
                    String::new()
                } else {
                    format!(", {} documents of other APIs skipped", f.skipped.len())
                }
            );
        }),
        Command::Render {
            path,
            output,
            revision,
        } => load_and_render(&path, &revision).map(|(_, objects)| match output {
            Format::Yaml => outp!("{}", render::to_yaml(&objects)),
            Format::Json => {
                let list = serde_json::json!({
                    "apiVersion": "v1",
                    "kind": "List",
                    "items": objects.iter().map(|o| &o.manifest).collect::<Vec<_>>(),
                });
                outln!(
                    "{}",
                    serde_json::to_string_pretty(&list).unwrap_or_default()
                );
            }
        }),
        Command::Sim {
            listen,
            kubeconfig_out,
            speed,
            state,
            kubevirt_version,
        } => sim::run_until_interrupted(
            listen,
            kubeconfig_out.as_deref(),
            sim::Config {
                speed,
                state,
                kubevirt_version,
                ..sim::Config::default()
            },
            |url| outln!("{url}"),
        )
        .map_err(Error::from),
        Command::Daemon(args) => return crate::daemon::command::run(*args),
    };
    match result {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(e) => {
            errln!("error: {e}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

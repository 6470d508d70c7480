//! The command line: clap definitions and the commands they run. Only a thin shell over the
//! library; user-facing output goes to stdout, diagnostics and logs to stderr.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::{fleet, render, schema, sim, source};

/// Exit code: success (and, for `plan --detailed-exitcode`, no changes).
pub const EXIT_OK: u8 = 0;
/// Exit code: invalid input or an operation failed.
pub const EXIT_ERROR: u8 = 1;

#[derive(Debug, Parser)]
#[command(
    name = "wukong",
    version,
    about = "GitOps reconciler for KubeVirt virtual-machine fleets"
)]
pub struct Cli {
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
    /// Run the simulated KubeVirt cluster until Ctrl-C; prints its URL.
    Sim {
        /// Loopback address to serve on (port 0: any free port).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: std::net::SocketAddr,
        /// Write a kubeconfig for the server to this file.
        #[arg(long)]
        kubeconfig_out: Option<PathBuf>,
        /// Keep the cluster's objects in this file: loaded on start, saved every few seconds
        /// and on exit, so the cluster survives a restart.
        #[arg(long)]
        state: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    Yaml,
    Json,
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
    #[error("rendered objects do not match the official schemas:\n{}", .0.iter().map(|e| format!("  {e}")).collect::<Vec<_>>().join("\n"))]
    Schema(Vec<schema::SchemaError>),
}

/// Read, validate and render a fleet directory; schema-check every rendered object.
pub fn load_and_render(
    path: &Path,
    revision: &str,
) -> Result<(fleet::Fleet, Vec<render::Rendered>), Error> {
    let files = source::read_fleet(path)?;
    let fleet = fleet::load(&files)?;
    let root = if path.is_dir() {
        path
    } else {
        path.parent().unwrap_or(Path::new("."))
    };
    let overrides = source::read_templates(&root.join(&fleet.settings.templates))?;
    let templates = render::Templates::with_overrides(&overrides)?;
    let objects = render::render(&fleet, &templates, revision)?;
    check_schemas(&objects)?;
    Ok((fleet, objects))
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

/// Run a parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Validate { path } => load_and_render(&path, "local").map(|(f, objects)| {
            eprintln!(
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
            Format::Yaml => print!("{}", render::to_yaml(&objects)),
            Format::Json => {
                let list = serde_json::json!({
                    "apiVersion": "v1",
                    "kind": "List",
                    "items": objects.iter().map(|o| &o.manifest).collect::<Vec<_>>(),
                });
                println!(
                    "{}",
                    serde_json::to_string_pretty(&list).unwrap_or_default()
                );
            }
        }),
        Command::Sim {
            listen,
            kubeconfig_out,
            state,
        } => sim::run_until_interrupted(
            listen,
            kubeconfig_out.as_deref(),
            sim::Options { state },
            |url| {
                println!("{url}");
            },
        )
        .map_err(Error::from),
    };
    match result {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

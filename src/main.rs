use std::process::ExitCode;

use clap::Parser;
use wukong::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Command::Daemon(args) => wukong::daemon::command::init_logging(args.log_format),
        _ => tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init(),
    }
    wukong::cli::run(cli)
}

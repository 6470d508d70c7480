use std::process::ExitCode;

use clap::Parser;
use wukong::cli::term::{self, LogFormat};
use wukong::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    term::set_color(cli.color);
    match &cli.command {
        Command::Daemon(args) => term::init_logging(args.log_format, "info"),
        _ => term::init_logging(LogFormat::Text, "error"),
    }
    wukong::cli::run(cli)
}

//! The terminal edge of the command line: whether to colour (`--color`, `NO_COLOR`, a
//! terminal or not), writing to stdout and stderr without panicking when the reader went away
//! (`wukong plan -o json | head`), and the log subscriber every command shares.
//!
//! A closed stdout is not an error to report: the reader took what it wanted. The first write
//! that finds the pipe closed marks stdout closed and later output is dropped; the command goes
//! on and exits with its own status. `wukong apply` checks [`stdout_closed`] before it changes
//! anything. Writes to a closed stderr are dropped.
//!
//! Depends on nothing else in the crate.

use std::io::{IsTerminal, Write};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

/// When to colour output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ColorChoice {
    /// On a terminal, unless `NO_COLOR` is set or `TERM` is `dumb`.
    #[default]
    Auto,
    /// Always, even into a pipe or file (and despite `NO_COLOR`).
    Always,
    /// Never.
    Never,
}

static CHOICE: OnceLock<ColorChoice> = OnceLock::new();
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// Set the colour choice for the process (the first call wins).
pub fn set_color(choice: ColorChoice) {
    let _ = CHOICE.set(choice);
}

fn choice() -> ColorChoice {
    CHOICE.get().copied().unwrap_or_default()
}

/// Whether to colour, given the choice, whether the stream is a terminal, and the
/// environment's `NO_COLOR` and `TERM`. `NO_COLOR` counts when set and not empty
/// (<https://no-color.org>).
pub fn decide(
    choice: ColorChoice,
    terminal: bool,
    no_color: Option<&str>,
    term: Option<&str>,
) -> bool {
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => terminal && no_color.is_none_or(str::is_empty) && term != Some("dumb"),
    }
}

fn decide_for(terminal: bool) -> bool {
    decide(
        choice(),
        terminal,
        std::env::var("NO_COLOR").ok().as_deref(),
        std::env::var("TERM").ok().as_deref(),
    )
}

/// Whether what goes to stdout may be coloured.
pub fn colour_stdout() -> bool {
    decide_for(std::io::stdout().is_terminal())
}

/// Whether what goes to stderr (logs, progress) may be coloured.
pub fn colour_stderr() -> bool {
    decide_for(std::io::stderr().is_terminal())
}

/// Whether stdout and stderr are both terminals: the user reads them on one screen.
pub fn one_terminal() -> bool {
    std::io::stdout().is_terminal() && std::io::stderr().is_terminal()
}

/// Write `text` to stdout. A closed pipe marks stdout closed ([`stdout_closed`]) and drops this
/// and every later write; other errors are dropped too (there is nowhere to report them).
pub fn out(text: &str) {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        && e.kind() == std::io::ErrorKind::BrokenPipe
    {
        STDOUT_CLOSED.store(true, Ordering::Relaxed);
    }
}

/// Whether a write to stdout found it closed.
pub fn stdout_closed() -> bool {
    STDOUT_CLOSED.load(Ordering::Relaxed)
}

/// Write `text` to stderr, dropping it if stderr is closed.
pub fn err(text: &str) {
    let mut stderr = std::io::stderr().lock();
    let _ = stderr
        .write_all(text.as_bytes())
        .and_then(|()| stderr.flush());
}

/// `println!` to stdout through [`out`].
macro_rules! outln {
    () => { $crate::cli::term::out("\n") };
    ($($arg:tt)*) => { $crate::cli::term::out(&format!("{}\n", format_args!($($arg)*))) };
}

/// `print!` to stdout through [`out`].
macro_rules! outp {
    ($($arg:tt)*) => { $crate::cli::term::out(&format!($($arg)*)) };
}

/// `eprintln!` through [`err`].
macro_rules! errln {
    () => { $crate::cli::term::err("\n") };
    ($($arg:tt)*) => { $crate::cli::term::err(&format!("{}\n", format_args!($($arg)*))) };
}

/// `eprint!` through [`err`].
macro_rules! errp {
    ($($arg:tt)*) => { $crate::cli::term::err(&format!($($arg)*)) };
}

pub(crate) use {errln, errp, outln, outp};

/// The log format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// kube-rs logs every failed request at `error` before it returns the error, which Wukong
/// reports itself, once and in words (`crate::reach`); those lines are off unless RUST_LOG
/// asks for them.
const QUIET_KUBE: &str = "kube_client::client::builder=off";

/// Install the log subscriber on stderr: `format`; the level `default_level` unless RUST_LOG
/// sets filters. Text is coloured only where [`colour_stderr`] says so: never into a file or a
/// pipe.
pub fn init_logging(format: LogFormat, default_level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{default_level},{QUIET_KUBE}")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second subscriber (a test calling this twice) is refused; the first stays.
    let _ = match format {
        LogFormat::Text => builder.with_ansi(colour_stderr()).try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_follows_the_flag_the_terminal_and_no_color() {
        use ColorChoice::*;
        assert!(decide(Auto, true, None, Some("xterm-256color")));
        assert!(!decide(Auto, false, None, None), "a pipe or file");
        assert!(!decide(Auto, true, Some("1"), None), "NO_COLOR");
        assert!(
            decide(Auto, true, Some(""), None),
            "an empty NO_COLOR counts as unset"
        );
        assert!(!decide(Auto, true, None, Some("dumb")));
        assert!(decide(Always, false, Some("1"), Some("dumb")));
        assert!(!decide(Never, true, None, None));
    }
}

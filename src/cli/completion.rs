//! `wukong completion SHELL` and `wukong man`: shell completion scripts and manual pages,
//! generated from the clap definitions, so they never drift from the flags.

use std::path::Path;

use clap::CommandFactory;

use super::term::out;
use super::{Cli, Error};

/// The shells a completion script is made for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
    Elvish,
    Powershell,
}

/// Print the completion script of `shell` to stdout.
pub fn completion(shell: Shell) {
    use clap_complete::Shell as S;
    let shell = match shell {
        Shell::Bash => S::Bash,
        Shell::Zsh => S::Zsh,
        Shell::Fish => S::Fish,
        Shell::Elvish => S::Elvish,
        Shell::Powershell => S::PowerShell,
    };
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "wukong", &mut script);
    out(&String::from_utf8_lossy(&script));
}

/// Print the manual page of `wukong` (roff) to stdout, or write one page per command into
/// `out_dir` (`wukong.1`, `wukong-plan.1`, …).
pub fn man(out_dir: Option<&Path>) -> Result<(), Error> {
    let command = Cli::command();
    let Some(dir) = out_dir else {
        out(&String::from_utf8_lossy(&page(&command)));
        return Ok(());
    };
    std::fs::create_dir_all(dir).map_err(|source| Error::Write {
        path: dir.to_owned(),
        source,
    })?;
    let mut pages = vec![("wukong.1".to_owned(), page(&command))];
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("wukong-{}", sub.get_name());
        let sub = sub.clone().name(name.clone()).display_name(name.clone());
        pages.push((format!("{name}.1"), page(&sub)));
    }
    for (file, text) in pages {
        let path = dir.join(file);
        std::fs::write(&path, text).map_err(|source| Error::Write { path, source })?;
    }
    Ok(())
}

fn page(command: &clap::Command) -> Vec<u8> {
    let mut text = Vec::new();
    // Rendering into a Vec cannot fail.
    let _ = clap_mangen::Man::new(command.clone()).render(&mut text);
    text
}

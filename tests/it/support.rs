//! Helpers shared by the integration tests.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use wukong::fleet::{self, SourceFile};

/// The crate root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Build source files from (path, text) pairs.
pub fn files(pairs: &[(&str, &str)]) -> Vec<SourceFile> {
    pairs
        .iter()
        .map(|(p, t)| SourceFile {
            path: (*p).to_owned(),
            text: (*t).to_owned(),
        })
        .collect()
}

/// Load a fleet from in-memory files and return every diagnostic as displayed.
pub fn diagnostics(pairs: &[(&str, &str)]) -> Result<fleet::Fleet, Vec<String>> {
    fleet::load(&files(pairs))
        .map_err(|e| e.diagnostics().iter().map(ToString::to_string).collect())
}

/// Run the `wukong` binary built for this test run.
pub fn wukong(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wukong"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run wukong")
}

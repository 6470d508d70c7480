//! Reading a fleet from disk: every `*.yaml`/`*.yml` file under a root directory (hidden
//! directories such as `.git` skipped), in a stable order, and template overrides.
//!
//! Nothing the repository names may be read from outside it. The *repository* is the Git
//! working tree that holds the fleet (the nearest ancestor with a `.git`), or the fleet root
//! itself when there is none; the daemon names its checkout explicitly
//! ([`Repository::open_within`]). A symbolic link — to a fleet file, a directory of them, the
//! template directory or a template — is followed when its target stays inside the
//! repository, and is a problem of the revision (located at the link) when it points outside
//! it or to nothing. Without this rule a template override linked to `/etc/passwd`, or to the
//! daemon's kubeconfig, would be rendered into the cluster.
//!
//! Problems of single files (a link leaving the repository, a file that is not UTF-8 or is too
//! large) are returned as [`Diagnostic`]s beside the files read, so that they are reported with
//! the fleet's own problems; only I/O failures abort the read.
//!
//! This is the only module of the desired-state half that touches the filesystem.

use std::collections::BTreeSet;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use crate::fleet::{Diagnostic, Origin, SourceFile};

/// Largest fleet file or template read: a hand-written fleet file is kilobytes; a file of this
/// size is a mistake or an attack, and reading it whole would cost the daemon its memory.
pub const MAX_FILE_BYTES: u64 = 8 << 20;

/// Errors reading a fleet directory (problems of single files are [`Diagnostic`]s instead).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} resolves to {resolved}, outside the repository {boundary}: a fleet must lie inside its repository"
    )]
    Outside {
        path: PathBuf,
        resolved: PathBuf,
        boundary: PathBuf,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + use<> {
    let path = path.to_owned();
    move |source| Error::Io { path, source }
}

/// What was read: the files, and the problems found reading them.
#[derive(Debug)]
pub struct Read<T> {
    pub files: Vec<T>,
    pub problems: Vec<Diagnostic>,
}

impl<T> Default for Read<T> {
    fn default() -> Self {
        Read {
            files: Vec::new(),
            problems: Vec::new(),
        }
    }
}

/// A fleet on disk: where it is and which directory it may not leave.
#[derive(Debug, Clone)]
pub struct Repository {
    /// The fleet root, resolved: a directory (or the directory of the single file given).
    root: PathBuf,
    /// The single file given instead of a directory, resolved.
    file: Option<PathBuf>,
    /// Nothing may resolve outside this directory (resolved).
    boundary: PathBuf,
}

impl Repository {
    /// The fleet at `path` (a directory or a single YAML file), confined to its Git working
    /// tree, or to `path` itself when it is in none.
    pub fn open(path: &Path) -> Result<Repository, Error> {
        let (root, file) = resolve_root(path)?;
        let boundary = git_work_tree(&root).unwrap_or_else(|| root.clone());
        Ok(Repository {
            root,
            file,
            boundary,
        })
    }

    /// The fleet at `path`, confined to `boundary` (the daemon's checkout of the repository).
    pub fn open_within(path: &Path, boundary: &Path) -> Result<Repository, Error> {
        let (root, file) = resolve_root(path)?;
        let boundary = std::fs::canonicalize(boundary).map_err(io(boundary))?;
        if !root.starts_with(&boundary) {
            return Err(Error::Outside {
                path: path.to_owned(),
                resolved: root,
                boundary,
            });
        }
        Ok(Repository {
            root,
            file,
            boundary,
        })
    }

    /// The fleet root (resolved): the directory given, or the directory of the file given.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory nothing may resolve outside of.
    pub fn boundary(&self) -> &Path {
        &self.boundary
    }

    /// Every YAML file of the fleet (or the single file given), sorted by path; paths are
    /// shown relative to the fleet root.
    pub fn fleet_files(&self) -> Result<Read<SourceFile>, Error> {
        let mut found = Vec::new();
        let mut read = Read::default();
        match &self.file {
            Some(file) => found.push((file.clone(), shown(&self.root, file))),
            None => {
                let mut visited = BTreeSet::from([self.root.clone()]);
                self.walk(&self.root, "", &mut visited, &mut found, &mut read.problems)?;
            }
        }
        found.sort_by(|a, b| a.1.cmp(&b.1));
        for (real, shown) in found {
            if let Some(text) = read_text(&real, &shown, &mut read.problems)? {
                read.files.push(SourceFile { path: shown, text });
            }
        }
        Ok(read)
    }

    /// Template overrides: every `*.hbs` file in `dir` (relative to the fleet root; none if
    /// it does not exist), as (file name, text), sorted.
    pub fn templates(&self, dir: &str) -> Result<Read<(String, String)>, Error> {
        let mut read = Read::default();
        let given = self.root.join(dir);
        let shown_dir = dir.trim_end_matches('/');
        let meta = match std::fs::symlink_metadata(&given) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(read),
            Err(source) => {
                return Err(Error::Io {
                    path: given,
                    source,
                });
            }
        };
        let real = if meta.file_type().is_symlink() {
            match self.confine(&given, shown_dir, &mut read.problems) {
                Some(real) => real,
                None => return Ok(read),
            }
        } else {
            given.clone()
        };
        if !real.is_dir() {
            return Ok(read);
        }
        let mut entries = Vec::new();
        for entry in std::fs::read_dir(&real).map_err(io(&real))? {
            let entry = entry.map_err(io(&real))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.ends_with(".hbs") || name.starts_with('.') {
                continue;
            }
            entries.push((entry.path(), name));
        }
        entries.sort_by(|a, b| a.1.cmp(&b.1));
        for (path, name) in entries {
            let shown = format!("{shown_dir}/{name}");
            let ft = std::fs::symlink_metadata(&path)
                .map_err(io(&path))?
                .file_type();
            let target = if ft.is_symlink() {
                match self.confine(&path, &shown, &mut read.problems) {
                    Some(t) => t,
                    None => continue,
                }
            } else {
                path
            };
            if !target.is_file() {
                continue;
            }
            if let Some(text) = read_text(&target, &shown, &mut read.problems)? {
                read.files.push((name, text));
            }
        }
        Ok(read)
    }

    /// Collect the YAML files under `dir` (resolved), shown under `prefix`.
    fn walk(
        &self,
        dir: &Path,
        prefix: &str,
        visited: &mut BTreeSet<PathBuf>,
        out: &mut Vec<(PathBuf, String)>,
        problems: &mut Vec<Diagnostic>,
    ) -> Result<(), Error> {
        for entry in std::fs::read_dir(dir).map_err(io(dir))? {
            let entry = entry.map_err(io(dir))?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let shown = format!("{prefix}{name}");
            let ft = entry.file_type().map_err(io(&path))?;
            let real = if ft.is_symlink() {
                // Only what the repository would read anyway is checked: a link named like a
                // fleet file, or one to a directory (which may hold fleet files).
                let target_is_dir = std::fs::metadata(&path).is_ok_and(|m| m.is_dir());
                if !is_yaml(&name) && !target_is_dir {
                    continue;
                }
                match self.confine(&path, &shown, problems) {
                    Some(real) => real,
                    None => continue,
                }
            } else {
                path
            };
            if real.is_dir() {
                // A directory reached twice (through links) is read once: no loops.
                if visited.insert(real.clone()) {
                    self.walk(&real, &format!("{shown}/"), visited, out, problems)?;
                }
            } else if real.is_file() && is_yaml(&name) {
                out.push((real, shown));
            }
        }
        Ok(())
    }

    /// The target of the link at `link` if it stays inside the repository; otherwise a problem
    /// located at the link, and None.
    fn confine(&self, link: &Path, shown: &str, problems: &mut Vec<Diagnostic>) -> Option<PathBuf> {
        let written = std::fs::read_link(link)
            .map(|t| t.display().to_string())
            .unwrap_or_default();
        let message = match std::fs::canonicalize(link) {
            Ok(real) if real.starts_with(&self.boundary) => return Some(real),
            Ok(_) => format!(
                "symbolic link to `{written}` resolves outside the repository; links must stay inside it"
            ),
            Err(_) => format!("symbolic link to `{written}` points to nothing"),
        };
        problems.push(Diagnostic {
            origin: Origin {
                file: shown.to_owned(),
                line: 1,
                column: 1,
            },
            object: None,
            message,
        });
        None
    }
}

fn is_yaml(name: &str) -> bool {
    Path::new(name)
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e, "yaml" | "yml"))
}

fn shown(base: &Path, path: &Path) -> String {
    path.strip_prefix(base)
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned()
}

/// The fleet root (a directory) and the single file given, both resolved.
fn resolve_root(path: &Path) -> Result<(PathBuf, Option<PathBuf>), Error> {
    let real = std::fs::canonicalize(path).map_err(io(path))?;
    if real.is_dir() {
        Ok((real, None))
    } else {
        let dir = real.parent().unwrap_or(Path::new("/")).to_owned();
        Ok((dir, Some(real)))
    }
}

/// The nearest directory at or above `dir` holding `.git` (a Git working tree), if any.
pub fn git_work_tree(dir: &Path) -> Option<PathBuf> {
    dir.ancestors()
        .find(|d| d.join(".git").exists())
        .map(Path::to_owned)
}

/// Read a file as UTF-8 text, at most [`MAX_FILE_BYTES`]; None (and a problem) when it is too
/// large or not UTF-8.
fn read_text(
    path: &Path,
    shown: &str,
    problems: &mut Vec<Diagnostic>,
) -> Result<Option<String>, Error> {
    let file = std::fs::File::open(path).map_err(io(path))?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io(path))?;
    let problem = |line: usize, column: usize, message: String| Diagnostic {
        origin: Origin {
            file: shown.to_owned(),
            line,
            column,
        },
        object: None,
        message,
    };
    if bytes.len() as u64 > MAX_FILE_BYTES {
        problems.push(problem(
            1,
            1,
            format!(
                "the file is larger than {} MiB, the limit for one fleet file",
                MAX_FILE_BYTES >> 20
            ),
        ));
        return Ok(None);
    }
    match String::from_utf8(bytes) {
        Ok(text) => Ok(Some(text)),
        Err(e) => {
            let bytes = e.as_bytes();
            let offset = e.utf8_error().valid_up_to();
            let (line, column) = line_column(&bytes[..offset]);
            problems.push(problem(
                line,
                column,
                format!(
                    "not valid UTF-8: byte 0x{:02x} at offset {offset}; fleet files must be UTF-8",
                    bytes[offset]
                ),
            ));
            Ok(None)
        }
    }
}

/// 1-based line and column (in characters) just after `valid`, a valid UTF-8 prefix.
fn line_column(valid: &[u8]) -> (usize, usize) {
    let line_start = valid.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let line = valid.iter().filter(|b| **b == b'\n').count() + 1;
    let column = std::str::from_utf8(&valid[line_start..]).map_or(1, |s| s.chars().count() + 1);
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_of_an_offset() {
        assert_eq!(line_column(b""), (1, 1));
        assert_eq!(line_column(b"ab"), (1, 3));
        assert_eq!(line_column(b"ab\ncd\n"), (3, 1));
        assert_eq!(line_column("a\nzé".as_bytes()), (2, 3));
    }
}

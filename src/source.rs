//! Reading a fleet from disk: every `*.yaml`/`*.yml` file under a root directory (hidden
//! directories such as `.git` skipped), in a stable order, and template overrides.
//!
//! This is the only module of the desired-state half that touches the filesystem.

use std::path::{Path, PathBuf};

use crate::fleet::SourceFile;

/// Errors reading a fleet directory.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} is not valid UTF-8")]
    Utf8(PathBuf),
}

/// Read every YAML file under `root` (or `root` itself if it is a file).
pub fn read_fleet(root: &Path) -> Result<Vec<SourceFile>, Error> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| Error::Io { path, source }
    };
    let meta = std::fs::metadata(root).map_err(io(root))?;
    let mut paths = Vec::new();
    if meta.is_file() {
        paths.push(root.to_owned());
    } else {
        walk(root, &mut paths)?;
    }
    paths.sort();
    let base = if meta.is_file() {
        root.parent().unwrap_or(Path::new(""))
    } else {
        root
    };
    paths
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).map_err(io(&p))?;
            let text = String::from_utf8(bytes).map_err(|_| Error::Utf8(p.clone()))?;
            let shown = p.strip_prefix(base).unwrap_or(&p);
            Ok(SourceFile {
                path: shown.to_string_lossy().into_owned(),
                text,
            })
        })
        .collect()
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), Error> {
    let entries = std::fs::read_dir(dir).map_err(|source| Error::Io {
        path: dir.to_owned(),
        source,
    })?;
    for entry in entries {
        let entry = entry.map_err(|source| Error::Io {
            path: dir.to_owned(),
            source,
        })?;
        let path = entry.path();
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let ft = entry.file_type().map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        if ft.is_dir() {
            walk(&path, out)?;
        } else if ft.is_file()
            && matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            )
        {
            out.push(path);
        }
    }
    Ok(())
}

/// Read template overrides: every `*.hbs` file in `dir` (none if it does not exist), as
/// (file name, text).
pub fn read_templates(dir: &Path) -> Result<Vec<(String, String)>, Error> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(Error::Io {
                path: dir.to_owned(),
                source,
            });
        }
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| Error::Io {
            path: dir.to_owned(),
            source,
        })?;
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) == Some("hbs") {
            let text = std::fs::read_to_string(&path).map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
            out.push((entry.file_name().to_string_lossy().into_owned(), text));
        }
    }
    out.sort();
    Ok(out)
}

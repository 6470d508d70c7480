//! The simulator's state on disk (`wukong sim --state FILE`): every object with the store's
//! counters (revision, uids, generated names), as one JSON document written atomically (a
//! temporary file renamed over the old one), so a demo cluster survives a restart with its
//! resourceVersions and uids intact. The change log is not kept: a watch resumed across a
//! restart from an older resourceVersion gets `410 Gone` and relists, as after an API server
//! restart that lost its watch cache.
//!
//! A child module of the store, whose fields it reads and rebuilds.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::Store;
use crate::sim::resources;

/// Format version of the state file; bump when its shape changes.
const FORMAT: u64 = 1;

/// Errors of saving and loading the state.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read the simulator state {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write the simulator state {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the simulator state {} is not valid: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
}

impl Store {
    /// The whole state as a JSON document.
    pub fn snapshot(&self) -> Value {
        let mut objects = Vec::new();
        for ((group, version, plural), items) in &self.objects {
            for obj in items.values() {
                objects.push(
                    json!({"group": group, "version": version, "resource": plural,
                                    "object": obj}),
                );
            }
        }
        json!({
            "format": FORMAT,
            "revision": self.revision,
            "uids": self.uids,
            "generatedNames": self.generated_names,
            "objects": objects,
        })
    }

    /// A store rebuilt from [`Store::snapshot`]; objects of resources no longer served are
    /// dropped with a warning.
    pub fn from_snapshot(doc: &Value) -> Result<Store, String> {
        let number = |k: &str| {
            doc.get(k)
                .and_then(Value::as_u64)
                .ok_or_else(|| format!("`{k}` is missing or not a number"))
        };
        if number("format")? != FORMAT {
            return Err(format!("unknown format (this build reads format {FORMAT})"));
        }
        let mut store = Store::new();
        store.objects.clear();
        store.log.clear();
        store.revision = number("revision")?;
        store.uids = number("uids")?;
        store.generated_names = number("generatedNames")?;
        // Every change before the restart is gone from the log.
        store.compacted = store.revision;
        let items = doc
            .get("objects")
            .and_then(Value::as_array)
            .ok_or("`objects` is missing")?;
        for item in items {
            let text = |k: &str| item.get(k).and_then(Value::as_str).unwrap_or_default();
            let Some(r) = resources::find(text("group"), text("version"), text("resource")) else {
                tracing::warn!(
                    resource = text("resource"),
                    "dropping an object of a resource no longer served"
                );
                continue;
            };
            let obj = item.get("object").cloned().unwrap_or(Value::Null);
            let meta = |k: &str| {
                obj.pointer(&format!("/metadata/{k}"))
                    .and_then(Value::as_str)
                    .map(String::from)
            };
            let name = meta("name").ok_or("an object has no name")?;
            let namespace = if r.namespaced {
                meta("namespace").ok_or_else(|| format!("{name} has no namespace"))?
            } else {
                String::new()
            };
            store
                .objects
                .entry(super::id(r))
                .or_default()
                .insert((namespace, name), obj);
        }
        Ok(store)
    }
}

/// Write the store to `path` atomically.
pub fn save(store: &Store, path: &Path) -> Result<(), Error> {
    let write = |source| Error::Write {
        path: path.to_path_buf(),
        source,
    };
    let text = serde_json::to_vec(&store.snapshot()).map_err(|e| write(e.into()))?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, text).map_err(write)?;
    std::fs::rename(&tmp, path).map_err(write)
}

/// The store saved at `path`; `None` if there is no such file yet.
pub fn load(path: &Path) -> Result<Option<Store>, Error> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(Error::Read {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let invalid = |reason: String| Error::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    let doc: Value = serde_json::from_slice(&text).map_err(|e| invalid(e.to_string()))?;
    Store::from_snapshot(&doc).map(Some).map_err(invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_store_loads_with_its_objects_and_counters() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        assert!(load(&path).unwrap().is_none());
        let mut store = Store::new();
        let vm = resources::find("kubevirt.io", "v1", "virtualmachines").unwrap();
        store
            .create(
                vm,
                "default",
                json!({"metadata": {"generateName": "vm-"}}),
                false,
            )
            .unwrap();
        save(&store, &path).unwrap();
        let loaded = load(&path).unwrap().unwrap();
        assert_eq!(loaded.snapshot(), store.snapshot());
        assert_eq!(loaded.revision(), store.revision());
        // Old watches relist; new objects get fresh uids and names.
        assert!(loaded.changes_since(vm, None, 0).is_err());
        std::fs::write(&path, "{\"format\": 9}").unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(err.contains("unknown format"), "{err}");
    }
}

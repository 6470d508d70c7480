//! Watching a local working tree (`wukong daemon --repo ./fleet --watch`) for the
//! edit-and-see loop: file-system events from `notify`, debounced into one trigger once the tree
//! has been quiet for [`DEBOUNCE`], sent on a tokio channel.
//!
//! Events under hidden directories (`.git/`, editors' `.swp` files) and read-only accesses are
//! ignored: the fleet loader skips hidden directories, and reading the tree to reconcile it must
//! not trigger another reconcile. Depends on nothing else in the crate.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::Trigger;

/// The quiet period before a change triggers: an editor's save (write, rename, chmod) or a
/// `git checkout` produces bursts of events within a few tens of milliseconds.
pub const DEBOUNCE: Duration = Duration::from_millis(300);

/// Errors of setting up a watch.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot watch {}: {source}", path.display())]
    Watch {
        path: PathBuf,
        #[source]
        source: notify::Error,
    },
}

/// A running watch; dropping it stops watching.
#[derive(Debug)]
pub struct Watch {
    _watcher: notify::RecommendedWatcher,
    task: JoinHandle<()>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Watch `dir` recursively; send [`Trigger::LocalChange`] on `triggers` once changes have been
/// quiet for `quiet`. Must be called inside a tokio runtime.
pub fn watch(dir: &Path, quiet: Duration, triggers: mpsc::Sender<Trigger>) -> Result<Watch, Error> {
    // Events name paths below the watched path as given; a canonical root keeps hidden
    // components of its own (a `.tmp…` directory, a symlink) out of the hidden-path filter.
    let root = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let (events, mut received) = mpsc::unbounded_channel::<()>();
    let filter_root = root.clone();
    let mut watcher =
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
            Ok(event) if relevant(&filter_root, &event) => {
                let _ = events.send(());
            }
            Ok(_) => {}
            // A lost event (queue overflow) may hide a change: treat it as one.
            Err(_) => {
                let _ = events.send(());
            }
        })
        .map_err(|source| Error::Watch {
            path: root.clone(),
            source,
        })?;
    watcher
        .watch(&root, RecursiveMode::Recursive)
        .map_err(|source| Error::Watch {
            path: root.clone(),
            source,
        })?;
    let task = tokio::spawn(async move {
        while received.recv().await.is_some() {
            // Wait until no event arrived for `quiet`.
            loop {
                match tokio::time::timeout(quiet, received.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            tracing::debug!(dir = %root.display(), "local tree changed");
            // A full channel already holds a pending trigger: this change is covered by it.
            if let Err(mpsc::error::TrySendError::Closed(_)) =
                triggers.try_send(Trigger::LocalChange)
            {
                return;
            }
        }
    });
    Ok(Watch {
        _watcher: watcher,
        task,
    })
}

/// A change (not a read) to a path that is not hidden below `root`.
fn relevant(root: &Path, event: &notify::Event) -> bool {
    if matches!(event.kind, EventKind::Access(_)) {
        return false;
    }
    event.paths.iter().any(|path| {
        let relative = path.strip_prefix(root).unwrap_or(path);
        !relative.components().any(|c| match c {
            Component::Normal(name) => name.to_string_lossy().starts_with('.'),
            _ => false,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_hidden_paths_are_not_changes() {
        let root = Path::new("/fleet");
        let event = |kind, path: &str| notify::Event {
            kind,
            paths: vec![PathBuf::from(path)],
            attrs: Default::default(),
        };
        let modify = EventKind::Modify(notify::event::ModifyKind::Any);
        assert!(relevant(root, &event(modify, "/fleet/web.yaml")));
        assert!(relevant(
            root,
            &event(
                EventKind::Remove(notify::event::RemoveKind::File),
                "/fleet/a/b.yaml"
            )
        ));
        assert!(!relevant(root, &event(modify, "/fleet/.git/index")));
        assert!(!relevant(root, &event(modify, "/fleet/.web.yaml.swp")));
        assert!(!relevant(
            root,
            &event(
                EventKind::Access(notify::event::AccessKind::Read),
                "/fleet/web.yaml"
            )
        ));
    }
}

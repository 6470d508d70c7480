//! Live state kept up to date by watches, for the daemon (issue #14): instead of a LIST of
//! every kind on every cycle, one kube-runtime watcher per kind and namespace (the same
//! collections [`super::read`] lists) streams the changes, and a quiet cycle reads nothing
//! from the API server.
//!
//! Two halves, so that the daemon plans against state nobody else mutates meanwhile:
//! - [`Watches`]: the background tasks. Each runs [`kube::runtime::watcher`] (which lists,
//!   then watches from the list's `resourceVersion`, asks for bookmarks, resumes a dropped
//!   watch from the last version seen and lists again on `410 Gone`) and posts what it sees to
//!   a coalescing [`Inbox`]: per object its latest state, per collection the result of its last
//!   (re)list. Changes are also broadcast as [`Touched`] keys, which the executor's
//!   verification waits follow instead of polling.
//! - [`Mirror`]: the [`LiveState`] the daemon plans against, owned by the daemon and updated
//!   from the inbox at the start of a cycle ([`Mirror::absorb`]), which returns the objects
//!   that changed: what the incremental planner re-plans.
//!
//! A collection is listed again from scratch after any watch error (besides the watcher's own
//! re-list on `410 Gone`) and every [`RELIST_INTERVAL`]. Its state counts as in sync once a
//! list completed and until the next error; the daemon plans only when every collection is.
//!
//! Depends on [`super`] (the kinds, [`LiveState`]) and [`super::read`] (scopes, resources);
//! nothing here plans or decides.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::StreamExt as _;
use kube::api::{Api, DynamicObject};
use kube::runtime::utils::Backoff as _;
use kube::runtime::watcher::{self, DefaultBackoff, Event};
use serde_json::Value;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use super::read::{LIST_PAGE_SIZE, Scope, resource};
use super::{LiveKind, LiveState, NsName, str_at};

/// How often every collection is listed again from scratch although its watch is healthy.
/// A watch that resumes from its last `resourceVersion` misses nothing the API server still
/// has, so this only bounds how long a cache that diverged silently (a proxy that dropped an
/// event, a bug) can mislead drift detection. At 10,000 VMs a re-list reads some 40,000
/// objects in about 80 pages, seconds of one core: every 30 minutes is well under 1 % of it.
pub const RELIST_INTERVAL: Duration = Duration::from_secs(30 * 60);

/// How many changes the broadcast to verification waits holds. A waiter that falls further
/// behind (a burst of changes while it reads) is told so and simply checks again.
const TOUCHED_CAPACITY: usize = 4096;

/// How long a collection the cluster does not serve (404: no CDI or Multus installed) or does
/// not let Wukong read (403 on the KubeVirt CR or the namespaces) counts as empty before it is
/// tried again, as [`super::read::read`] reads it as empty.
const ABSENT_RETRY: Duration = Duration::from_secs(5 * 60);

/// One watched collection: a kind, in one namespace or in all.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Collection {
    pub kind: LiveKind,
    /// `None`: cluster-scoped, or every namespace.
    pub namespace: Option<String>,
}

impl Collection {
    /// The collections [`super::read::read`] lists for `scope`.
    pub fn of(scope: &Scope) -> Vec<Collection> {
        let mut out = Vec::new();
        for kind in LiveKind::ALL {
            let (_, _, _, _, namespaced) = kind.gvk();
            match (namespaced, scope, kind) {
                (false, ..) | (true, Scope::All, _) | (true, _, LiveKind::KubeVirt) => {
                    out.push(Collection {
                        kind,
                        namespace: None,
                    });
                }
                (true, Scope::Namespaces(namespaces), _) => {
                    out.extend(namespaces.iter().map(|ns| Collection {
                        kind,
                        namespace: Some(ns.clone()),
                    }));
                }
            }
        }
        out
    }

    fn holds(&self, kind: LiveKind, key: &NsName) -> bool {
        self.kind == kind
            && self
                .namespace
                .as_ref()
                .is_none_or(|ns| *ns == key.namespace)
    }

    fn describe(&self) -> String {
        let (_, _, _, plural, _) = self.kind.gvk();
        match &self.namespace {
            Some(ns) => format!("{plural} in {ns}"),
            None => plural.to_owned(),
        }
    }
}

/// A change a watch saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Touched {
    /// This object was added, changed or deleted.
    Object(LiveKind, NsName),
    /// The collection of this kind was (re)listed: anything in it may have changed.
    Listed(LiveKind),
}

/// What the watches saw since the daemon last looked, coalesced: per collection the objects
/// of its last (re)list, then per object its latest state (`None`: deleted) after that.
#[derive(Debug, Default)]
pub struct Inbox {
    pub listed: BTreeMap<Collection, Vec<Value>>,
    pub objects: BTreeMap<(LiveKind, NsName), Option<Value>>,
}

impl Inbox {
    pub fn is_empty(&self) -> bool {
        self.listed.is_empty() && self.objects.is_empty()
    }
}

struct Shared {
    inbox: Mutex<Inbox>,
    touched: broadcast::Sender<Touched>,
    /// Collections whose state is in sync: listed since their watcher (re)started, no error
    /// since.
    synced: watch::Sender<BTreeSet<Collection>>,
    /// Every collection watched.
    all: usize,
}

impl Shared {
    fn inbox(&self) -> std::sync::MutexGuard<'_, Inbox> {
        self.inbox.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn listed(&self, collection: &Collection, objects: Vec<Value>) {
        {
            let mut inbox = self.inbox();
            // Changes seen before this list are in it (or superseded by it).
            inbox
                .objects
                .retain(|(kind, key), _| !collection.holds(*kind, key));
            inbox.listed.insert(collection.clone(), objects);
        }
        let _ = self.touched.send(Touched::Listed(collection.kind));
    }

    fn changed(&self, kind: LiveKind, key: NsName, object: Option<Value>) {
        self.inbox().objects.insert((kind, key.clone()), object);
        let _ = self.touched.send(Touched::Object(kind, key));
    }

    fn set_synced(&self, collection: &Collection, synced: bool) {
        self.synced.send_if_modified(|set| {
            if synced {
                set.insert(collection.clone())
            } else {
                set.remove(collection)
            }
        });
    }
}

/// The watches of one scope; dropping it stops them.
pub struct Watches {
    shared: Arc<Shared>,
    scope: Scope,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Watches {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Why the watches are not in sync.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the watches of {0} have not listed them (yet) or failed since")]
pub struct NotSynced(String);

impl Watches {
    /// Start watching every collection of `scope`. Must be called inside a tokio runtime.
    pub fn start(client: &kube::Client, scope: &Scope) -> Watches {
        let collections = Collection::of(scope);
        let shared = Arc::new(Shared {
            inbox: Mutex::new(Inbox::default()),
            touched: broadcast::channel(TOUCHED_CAPACITY).0,
            synced: watch::channel(BTreeSet::new()).0,
            all: collections.len(),
        });
        let tasks = collections
            .into_iter()
            .map(|c| tokio::spawn(run(client.clone(), c, Arc::clone(&shared))))
            .collect();
        Watches {
            shared,
            scope: scope.clone(),
            tasks,
        }
    }

    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    /// Whether every collection is in sync now.
    pub fn in_sync(&self) -> bool {
        self.shared.synced.borrow().len() == self.shared.all
    }

    /// Wait until every collection is in sync, at most `timeout`.
    pub async fn synced(&self, timeout: Duration) -> Result<(), NotSynced> {
        let mut rx = self.shared.synced.subscribe();
        let all = self.shared.all;
        match tokio::time::timeout(timeout, rx.wait_for(|s| s.len() == all)).await {
            Ok(Ok(_)) => Ok(()),
            _ => {
                let synced = self.shared.synced.borrow().clone();
                let missing: Vec<String> = Collection::of(&self.scope)
                    .into_iter()
                    .filter(|c| !synced.contains(c))
                    .map(|c| c.describe())
                    .collect();
                Err(NotSynced(missing.join(", ")))
            }
        }
    }

    /// Everything seen since the last call.
    pub fn take(&self) -> Inbox {
        std::mem::take(&mut *self.shared.inbox())
    }

    /// A handle on the changes, for waits that follow them.
    pub fn changes(&self) -> Changes {
        Changes {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Wait until no change came for `quiet`, at most `max`: after an apply, so that the state
    /// planned against next has caught up with what the executor just saw happen.
    pub async fn settle(&self, quiet: Duration, max: Duration) {
        let mut rx = self.shared.touched.subscribe();
        let deadline = tokio::time::Instant::now() + max;
        loop {
            let until = (tokio::time::Instant::now() + quiet).min(deadline);
            match tokio::time::timeout_at(until, rx.recv()).await {
                Err(_) => return,
                Ok(Err(broadcast::error::RecvError::Closed)) => return,
                Ok(_) if tokio::time::Instant::now() >= deadline => return,
                Ok(_) => {}
            }
        }
    }
}

/// The changes the watches see, for the executor's verification waits: where they are in
/// sync, a wait wakes on a change of the objects it looks at instead of polling.
#[derive(Clone)]
pub struct Changes {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Changes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Changes")
            .field(
                "in_sync",
                &(self.shared.synced.borrow().len() == self.shared.all),
            )
            .finish()
    }
}

impl Changes {
    /// Whether every watch is open and in sync (otherwise changes may go unseen).
    pub fn open(&self) -> bool {
        self.shared.synced.borrow().len() == self.shared.all
    }

    /// Changes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Touched> {
        self.shared.touched.subscribe()
    }
}

/// Watch one collection for as long as the task lives: list and watch with kube-runtime's
/// watcher; list again from scratch after an error (with client-go's backoff) and every
/// [`RELIST_INTERVAL`].
async fn run(client: kube::Client, collection: Collection, shared: Arc<Shared>) {
    let what = collection.describe();
    let api: Api<DynamicObject> = match &collection.namespace {
        Some(ns) => Api::namespaced_with(client, ns, &resource(collection.kind)),
        None => Api::all_with(client, &resource(collection.kind)),
    };
    let mut backoff = DefaultBackoff::default();
    loop {
        let config = watcher::Config::default().page_size(LIST_PAGE_SIZE);
        let mut events = watcher::watcher(api.clone(), config).boxed();
        let relist = tokio::time::sleep(RELIST_INTERVAL);
        tokio::pin!(relist);
        let mut buffer: Option<Vec<Value>> = None;
        let error = loop {
            let event = tokio::select! {
                () = &mut relist => break None,
                e = events.next() => e,
            };
            match event {
                None => break None,
                Some(Ok(Event::Init)) => buffer = Some(Vec::new()),
                Some(Ok(Event::InitApply(o))) => {
                    if let (Some(b), Some(v)) = (buffer.as_mut(), value(o)) {
                        b.push(v);
                    }
                }
                Some(Ok(Event::InitDone)) => {
                    let objects = buffer.take().unwrap_or_default();
                    tracing::debug!(collection = %what, objects = objects.len(), "listed");
                    shared.listed(&collection, objects);
                    shared.set_synced(&collection, true);
                    backoff.reset();
                }
                Some(Ok(Event::Apply(o))) => {
                    if let Some((key, v)) = keyed(o) {
                        shared.changed(collection.kind, key, Some(v));
                    }
                }
                Some(Ok(Event::Delete(o))) => {
                    if let Some((key, _)) = keyed(o) {
                        shared.changed(collection.kind, key, None);
                    }
                }
                Some(Err(e)) => break Some(e),
            }
        };
        let Some(error) = error else {
            tracing::debug!(collection = %what, "listing again (periodic re-list)");
            continue;
        };
        if let Some(code) = absent(collection.kind, &error) {
            tracing::warn!(collection = %what, code, "cannot list; reading it as empty");
            shared.listed(&collection, Vec::new());
            shared.set_synced(&collection, true);
            tokio::time::sleep(ABSENT_RETRY).await;
            continue;
        }
        shared.set_synced(&collection, false);
        let delay = backoff.next().unwrap_or(Duration::from_secs(30));
        tracing::warn!(collection = %what, error = %error, retry_in = ?delay, "watch failed; listing again");
        tokio::time::sleep(delay).await;
    }
}

/// The HTTP status of a failed list that [`super::read::read`] reads as an empty collection:
/// 404 for the kinds of optional add-ons, 403 for the KubeVirt CR and the namespaces.
fn absent(kind: LiveKind, error: &watcher::Error) -> Option<u16> {
    let watcher::Error::InitialListFailed(kube::Error::Api(status)) = error else {
        return None;
    };
    let optional = matches!(
        kind,
        LiveKind::DataVolume
            | LiveKind::NetworkAttachmentDefinition
            | LiveKind::KubeVirt
            | LiveKind::Namespace
    );
    let forbidden_is_empty = matches!(kind, LiveKind::KubeVirt | LiveKind::Namespace);
    ((status.code == 404 && optional) || (status.code == 403 && forbidden_is_empty))
        .then_some(status.code)
}

fn value(object: DynamicObject) -> Option<Value> {
    serde_json::to_value(object).ok()
}

fn keyed(object: DynamicObject) -> Option<(NsName, Value)> {
    let key = NsName::new(
        object.metadata.namespace.clone().unwrap_or_default(),
        object.metadata.name.clone()?,
    );
    Some((key, value(object)?))
}

/// The key of an object as [`Mirror`] holds it (namespace empty for cluster-scoped kinds).
fn key_of(object: &Value) -> Option<NsName> {
    Some(NsName::new(
        str_at(object, &["metadata", "namespace"]).unwrap_or_default(),
        str_at(object, &["metadata", "name"])?,
    ))
}

/// The live state the daemon plans against, fed from [`Watches::take`], with the
/// `resourceVersion` of every object it holds to tell what changed.
#[derive(Debug, Default)]
pub struct Mirror {
    live: LiveState,
    versions: BTreeMap<LiveKind, BTreeMap<NsName, String>>,
    /// Every KubeVirt CR: [`LiveState`] holds the first by namespace and name, as a list
    /// returns them first (a cluster has one).
    kubevirts: BTreeMap<NsName, Value>,
    /// The one of them held in `live`.
    held_kubevirt: Option<NsName>,
}

impl Mirror {
    pub fn live(&self) -> &LiveState {
        &self.live
    }

    /// Take in what the watches saw; returns every object added, changed or removed.
    pub fn absorb(&mut self, inbox: Inbox) -> BTreeSet<(LiveKind, NsName)> {
        let mut changed = BTreeSet::new();
        for (collection, objects) in inbox.listed {
            let listed: BTreeMap<NsName, Value> = objects
                .into_iter()
                .filter_map(|o| Some((key_of(&o)?, o)))
                .collect();
            let gone: Vec<NsName> = self
                .versions
                .get(&collection.kind)
                .map(|held| {
                    held.keys()
                        .filter(|k| {
                            collection.holds(collection.kind, k) && !listed.contains_key(*k)
                        })
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            for key in gone {
                self.remove(collection.kind, &key, &mut changed);
            }
            for (key, object) in listed {
                self.put(collection.kind, key, object, &mut changed);
            }
        }
        for ((kind, key), object) in inbox.objects {
            match object {
                Some(o) => self.put(kind, key, o, &mut changed),
                None => self.remove(kind, &key, &mut changed),
            }
        }
        changed
    }

    fn put(
        &mut self,
        kind: LiveKind,
        key: NsName,
        object: Value,
        changed: &mut BTreeSet<(LiveKind, NsName)>,
    ) {
        let version = str_at(&object, &["metadata", "resourceVersion"])
            .unwrap_or_default()
            .to_owned();
        let same = self
            .versions
            .get(&kind)
            .and_then(|held| held.get(&key))
            .is_some_and(|v| !version.is_empty() && *v == version);
        if same {
            return;
        }
        if kind == LiveKind::KubeVirt {
            self.kubevirts.insert(key.clone(), object);
            self.first_kubevirt();
        } else if self.live.insert(kind, object).is_err() {
            return;
        }
        self.versions
            .entry(kind)
            .or_default()
            .insert(key.clone(), version);
        changed.insert((kind, key));
    }

    fn remove(&mut self, kind: LiveKind, key: &NsName, changed: &mut BTreeSet<(LiveKind, NsName)>) {
        let held = self
            .versions
            .get_mut(&kind)
            .is_some_and(|h| h.remove(key).is_some());
        if !held {
            return;
        }
        if kind == LiveKind::KubeVirt {
            self.kubevirts.remove(key);
            self.first_kubevirt();
        } else {
            self.live.remove(kind, &key.namespace, &key.name);
        }
        changed.insert((kind, key.clone()));
    }

    /// Hold the first KubeVirt CR by namespace and name (it may have changed).
    fn first_kubevirt(&mut self) {
        if let Some(held) = self.held_kubevirt.take() {
            self.live
                .remove(LiveKind::KubeVirt, &held.namespace, &held.name);
        }
        if let Some((key, kv)) = self.kubevirts.iter().next()
            && self.live.insert(LiveKind::KubeVirt, kv.clone()).is_ok()
        {
            self.held_kubevirt = Some(key.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vm(ns: &str, name: &str, rv: &str) -> Value {
        json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
               "metadata": {"namespace": ns, "name": name, "resourceVersion": rv}})
    }

    fn key(kind: LiveKind, ns: &str, name: &str) -> (LiveKind, NsName) {
        (kind, NsName::new(ns, name))
    }

    #[test]
    fn a_list_replaces_its_collection_and_says_what_changed() {
        let mut m = Mirror::default();
        let apps = Collection {
            kind: LiveKind::VirtualMachine,
            namespace: Some("apps".into()),
        };
        let mut inbox = Inbox::default();
        inbox.listed.insert(
            apps.clone(),
            vec![vm("apps", "a", "1"), vm("apps", "b", "2")],
        );
        inbox.listed.insert(
            Collection {
                kind: LiveKind::VirtualMachine,
                namespace: Some("db".into()),
            },
            vec![vm("db", "c", "3")],
        );
        assert_eq!(m.absorb(inbox).len(), 3);
        // A re-list of one namespace: b changed, a went, c (another namespace) stays.
        let mut inbox = Inbox::default();
        inbox.listed.insert(apps, vec![vm("apps", "b", "4")]);
        let changed = m.absorb(inbox);
        assert_eq!(
            changed,
            [
                key(LiveKind::VirtualMachine, "apps", "a"),
                key(LiveKind::VirtualMachine, "apps", "b")
            ]
            .into()
        );
        assert!(m.live().vm("apps", "a").is_none());
        assert!(m.live().vm("db", "c").is_some());
        // The same version again is no change; a deletion is.
        let mut inbox = Inbox::default();
        inbox.objects.insert(
            key(LiveKind::VirtualMachine, "apps", "b"),
            Some(vm("apps", "b", "4")),
        );
        inbox
            .objects
            .insert(key(LiveKind::VirtualMachine, "db", "c"), None);
        assert_eq!(
            m.absorb(inbox),
            [key(LiveKind::VirtualMachine, "db", "c")].into()
        );
        assert_eq!(m.live().objects.len(), 1);
    }

    #[test]
    fn the_first_kubevirt_cr_by_name_is_the_one_held() {
        let mut m = Mirror::default();
        let cr = |name: &str, rv: &str| json!({"metadata": {"namespace": "kubevirt", "name": name, "resourceVersion": rv}});
        let mut inbox = Inbox::default();
        inbox
            .objects
            .insert(key(LiveKind::KubeVirt, "kubevirt", "b"), Some(cr("b", "1")));
        m.absorb(inbox);
        let mut inbox = Inbox::default();
        inbox
            .objects
            .insert(key(LiveKind::KubeVirt, "kubevirt", "a"), Some(cr("a", "2")));
        m.absorb(inbox);
        let name = |m: &Mirror| {
            m.live()
                .kubevirt
                .as_ref()
                .and_then(|k| str_at(k, &["metadata", "name"]).map(str::to_owned))
        };
        assert_eq!(name(&m).as_deref(), Some("a"));
        // A change of the one held replaces it.
        let mut inbox = Inbox::default();
        inbox
            .objects
            .insert(key(LiveKind::KubeVirt, "kubevirt", "a"), Some(cr("a", "3")));
        m.absorb(inbox);
        assert_eq!(
            m.live().kubevirt.as_ref().unwrap()["metadata"]["resourceVersion"],
            "3"
        );
        let mut inbox = Inbox::default();
        inbox
            .objects
            .insert(key(LiveKind::KubeVirt, "kubevirt", "a"), None);
        m.absorb(inbox);
        assert_eq!(name(&m).as_deref(), Some("b"));
    }
}

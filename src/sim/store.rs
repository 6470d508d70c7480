//! The simulated cluster's object store: every object as JSON, keyed by resource, namespace and
//! name, with the API server's bookkeeping (resourceVersion, uid, creationTimestamp, generation),
//! optimistic concurrency, the status subresource split, merge and JSON patches, validation of
//! metadata, and a bounded change log that watches read from.
//!
//! Pure and synchronous: no tokio, no HTTP, no clock (the caller sets the time with
//! [`Store::set_now`]). Depends only on [`super::resources`], [`super::selector`] and
//! [`super::validation`]; the HTTP
//! layer ([`super::api`]) turns its errors into Kubernetes `Status` objects.

use std::collections::{BTreeMap, VecDeque};

use serde_json::{Map, Value, json};

use super::apply::{self, Managers};
use super::fieldpath::Schema;
use super::resources::{self, ResourceDef};
use super::selector::{FieldSelector, LabelSelector};
#[path = "deletion.rs"]
mod deletion;
#[path = "persist.rs"]
pub mod persist;
pub use deletion::{DeleteOptions, Deleted, Propagation};

use super::validation::{
    validate_dns_label, validate_dns_subdomain, validate_label_key, validate_label_value,
};

/// How many changes the log keeps for watches. A watcher further behind than this gets
/// `410 Gone` and relists, as with the real API server's watch cache; 10,000 covers one change
/// to every VM of the largest fleet Wukong targets (design §9) at a few KiB each.
pub const CHANGE_LOG_CAPACITY: usize = 10_000;

/// Namespaces every cluster starts with.
pub const INITIAL_NAMESPACES: &[&str] =
    &["default", "kube-node-lease", "kube-public", "kube-system"];

/// Namespaces the API server refuses to delete.
const UNDELETABLE_NAMESPACES: &[&str] = &["default", "kube-public", "kube-system"];

/// Characters of generated name suffixes (Kubernetes' alphabet: no vowels, no confusable
/// digits), and their length.
const NAME_SUFFIX_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
const NAME_SUFFIX_LEN: u32 = 5;

/// One field-level validation failure, as in a Kubernetes `Status`'s `details.causes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    /// `FieldValueInvalid`, `FieldValueRequired`, …
    pub reason: &'static str,
    pub field: String,
    /// The message without the field (`Invalid value: "x": …`).
    pub message: String,
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

fn join_causes(causes: &[Cause]) -> String {
    match causes {
        [one] => one.to_string(),
        many => format!(
            "[{}]",
            many.iter()
                .map(Cause::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Store errors; each is one Kubernetes `Status` reason, worded as the API server words it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    #[error("{} \"{name}\" not found", resource.qualified_plural())]
    NotFound {
        resource: &'static ResourceDef,
        name: String,
    },
    #[error("{} \"{name}\" already exists", resource.qualified_plural())]
    AlreadyExists {
        resource: &'static ResourceDef,
        name: String,
    },
    #[error(
        "Operation cannot be fulfilled on {} \"{name}\": {reason}",
        resource.qualified_plural()
    )]
    Conflict {
        resource: &'static ResourceDef,
        name: String,
        reason: String,
    },
    #[error("{} \"{name}\" is invalid: {}", resource.qualified_kind(), join_causes(causes))]
    Invalid {
        resource: &'static ResourceDef,
        name: String,
        causes: Vec<Cause>,
    },
    /// A patch that cannot be applied (a failed `test`, a missing path).
    #[error("{0}")]
    UnprocessablePatch(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{} \"{name}\" is forbidden: {reason}", resource.qualified_plural())]
    Forbidden {
        resource: &'static ResourceDef,
        name: String,
        reason: String,
    },
    /// A server-side apply that would change fields other managers own.
    #[error("{message}")]
    ApplyConflict { message: String, causes: Vec<Cause> },
    /// A watch or continue token older than the change log.
    #[error("too old resource version: {requested} ({oldest})")]
    Gone { requested: u64, oldest: u64 },
}

const CONFLICT_MODIFIED: &str =
    "the object has been modified; please apply your changes to the latest version and try again";

/// Which part of an object a write addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The main resource: for kinds with a status subresource, `status` changes are ignored.
    Main,
    /// The `status` subresource: only `status` changes.
    Status,
}

/// How a write is made: dry-run or not, and the field manager it is recorded under.
#[derive(Debug, Clone, Copy, Default)]
pub struct Write<'a> {
    pub dry_run: bool,
    /// The manager that owns what the write changes (`metadata.managedFields`, operation
    /// `Update`); `None` for an internal write nobody owns.
    pub manager: Option<&'a str>,
}

impl Write<'_> {
    /// A write by nobody in particular.
    pub fn dry(dry_run: bool) -> Self {
        Write {
            dry_run,
            manager: None,
        }
    }
}

/// A server-side apply request.
#[derive(Debug, Clone, Copy)]
pub struct ApplyOptions<'a> {
    pub manager: &'a str,
    pub force: bool,
    pub dry_run: bool,
}

/// A patch body, by content type.
#[derive(Debug, Clone)]
pub enum Patch {
    /// `application/merge-patch+json` (RFC 7386).
    Merge(Value),
    /// `application/json-patch+json` (RFC 6902).
    Json(json_patch::Patch),
    /// `application/strategic-merge-patch+json` (built-in kinds only; see [`super::strategic`]).
    Strategic(Value),
}

/// Kind of a change, as named in watch events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One entry of the change log.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub revision: u64,
    pub event: EventType,
    pub resource: &'static ResourceDef,
    pub namespace: String,
    /// The object after the change (for `Deleted`, its last state).
    pub object: Value,
    /// For `Modified`, the labels before the change, so a label-selected watch can report an
    /// object entering (ADDED) or leaving (DELETED) its selection.
    pub previous_labels: Option<Value>,
}

impl Change {
    /// The event a watch with this label selector sees, if any, as the API server's watch cache
    /// computes it: a modification that moves the object into the selection is ADDED, out of it
    /// DELETED.
    pub fn seen_through(&self, labels: &LabelSelector) -> Option<EventType> {
        let now = labels.matches(self.object.pointer("/metadata/labels"));
        match self.event {
            EventType::Modified => {
                let before = labels.matches(self.previous_labels.as_ref());
                match (before, now) {
                    (true, true) => Some(EventType::Modified),
                    (false, true) => Some(EventType::Added),
                    (true, false) => Some(EventType::Deleted),
                    (false, false) => None,
                }
            }
            event => now.then_some(event),
        }
    }
}

/// What to list.
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    /// At most this many items; `None` or 0 is unlimited.
    pub limit: Option<usize>,
    /// The `continue` token of the previous page.
    pub continue_token: Option<String>,
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq)]
pub struct ListPage {
    pub items: Vec<Value>,
    /// The list's resourceVersion (the store's revision when the first page was read).
    pub resource_version: u64,
    /// Set when more items follow.
    pub continue_token: Option<String>,
    pub remaining: Option<u64>,
}

type ResourceId = (&'static str, &'static str, &'static str);

fn id(r: &ResourceDef) -> ResourceId {
    (r.group, r.version, r.plural)
}

/// The object store. See the module docs.
#[derive(Debug, Clone)]
pub struct Store {
    objects: BTreeMap<ResourceId, BTreeMap<(String, String), Value>>,
    revision: u64,
    uids: u64,
    generated_names: u64,
    now: String,
    log: VecDeque<Change>,
    /// The newest revision no longer in the log (0: nothing dropped yet).
    compacted: u64,
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

impl Store {
    /// A store holding only the namespaces every cluster has, created at time 0.
    pub fn new() -> Self {
        Self::starting_at(0)
    }

    /// A store holding only the namespaces every cluster has, created at `unix_seconds`.
    pub fn starting_at(unix_seconds: i64) -> Self {
        let mut store = Self {
            objects: BTreeMap::new(),
            revision: 0,
            uids: 0,
            generated_names: 0,
            now: rfc3339(unix_seconds),
            log: VecDeque::new(),
            compacted: 0,
        };
        for ns in INITIAL_NAMESPACES {
            let object = json!({"metadata": {"name": ns}});
            // Cannot fail: the names are valid and the store is empty.
            let _ = store.create(resources::namespaces(), "", object, false);
        }
        store
    }

    /// Set the time stamped on objects written from now on, in seconds since the Unix epoch.
    pub fn set_now(&mut self, unix_seconds: i64) {
        self.now = rfc3339(unix_seconds);
    }

    /// The revision of the last write (the resourceVersion a list returns).
    pub fn revision(&self) -> u64 {
        self.revision
    }

    fn map(&self, r: &ResourceDef) -> Option<&BTreeMap<(String, String), Value>> {
        self.objects.get(&id(r))
    }

    /// One object.
    pub fn get(
        &self,
        r: &'static ResourceDef,
        namespace: &str,
        name: &str,
    ) -> Result<Value, Error> {
        self.map(r)
            .and_then(|m| m.get(&(scope(r, namespace), name.to_string())))
            .cloned()
            .ok_or_else(|| Error::NotFound {
                resource: r,
                name: name.to_string(),
            })
    }

    /// Objects of one resource, in one namespace (`Some`) or all (`None`), ordered by namespace
    /// and name. Later pages are read from the current state (not a snapshot), keeping the first
    /// page's resourceVersion.
    pub fn list(
        &self,
        r: &'static ResourceDef,
        namespace: Option<&str>,
        opts: &ListOptions,
    ) -> Result<ListPage, Error> {
        let (resource_version, after) = match &opts.continue_token {
            Some(token) => {
                let (rv, ns, name) = decode_continue(token)?;
                (rv, Some((ns, name)))
            }
            None => (self.revision, None),
        };
        let matching: Vec<(&(String, String), &Value)> = self
            .map(r)
            .into_iter()
            .flatten()
            .filter(|((ns, name), _)| {
                namespace.is_none_or(|want| want == ns.as_str())
                    && after
                        .as_ref()
                        .is_none_or(|(ans, aname)| (ns, name) > (ans, aname))
            })
            .filter(|(_, obj)| {
                opts.fields.matches(obj) && opts.labels.matches(obj.pointer("/metadata/labels"))
            })
            .collect();
        let limit = opts.limit.filter(|&l| l > 0).unwrap_or(usize::MAX);
        let page = &matching[..matching.len().min(limit)];
        let rest = (matching.len() - page.len()) as u64;
        let continue_token = match page.last() {
            Some(((ns, name), _)) if rest > 0 => Some(encode_continue(resource_version, ns, name)),
            _ => None,
        };
        let items = page.iter().map(|(_, obj)| (*obj).clone()).collect();
        Ok(ListPage {
            items,
            resource_version,
            remaining: continue_token.as_ref().map(|_| rest),
            continue_token,
        })
    }

    /// Create an object. With `dry_run`, validate and return it without storing.
    pub fn create(
        &mut self,
        r: &'static ResourceDef,
        namespace: &str,
        object: Value,
        dry_run: bool,
    ) -> Result<Value, Error> {
        self.create_with(r, namespace, object, Write::dry(dry_run))
    }

    /// Create an object, recording its fields as owned by the write's manager.
    pub fn create_with(
        &mut self,
        r: &'static ResourceDef,
        namespace: &str,
        object: Value,
        write: Write<'_>,
    ) -> Result<Value, Error> {
        self.create_inner(r, namespace, object, write, None)
    }

    fn create_inner(
        &mut self,
        r: &'static ResourceDef,
        namespace: &str,
        object: Value,
        write: Write<'_>,
        managers: Option<Managers>,
    ) -> Result<Value, Error> {
        let dry_run = write.dry_run;
        let mut obj = into_object(object, r)?;
        let meta = metadata_mut(&mut obj)?;
        check_namespace(r, namespace, meta)?;
        if meta
            .get("resourceVersion")
            .and_then(Value::as_str)
            .is_some_and(|v| !v.is_empty())
        {
            return Err(Error::BadRequest(
                "resourceVersion should not be set on objects to be created".into(),
            ));
        }
        let name = match meta.get("name").and_then(Value::as_str) {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => match meta.get("generateName").and_then(Value::as_str) {
                Some(prefix) if !prefix.is_empty() => {
                    let n = format!("{prefix}{}", name_suffix(self.generated_names));
                    if !dry_run {
                        self.generated_names += 1;
                    }
                    n
                }
                _ => {
                    return Err(Error::Invalid {
                        resource: r,
                        name: String::new(),
                        causes: vec![Cause {
                            reason: "FieldValueRequired",
                            field: "metadata.name".into(),
                            message: "Required value: name or generateName is required".into(),
                        }],
                    });
                }
            },
        };
        meta.insert("name".into(), Value::String(name.clone()));
        validate_metadata(r, &name, meta)?;
        self.check_namespace_exists(r, namespace, &name)?;
        let key = (scope(r, namespace), name.clone());
        if self.map(r).is_some_and(|m| m.contains_key(&key)) {
            return Err(Error::AlreadyExists { resource: r, name });
        }
        let uid = uid(self.uids + 1);
        meta.insert("uid".into(), Value::String(uid));
        meta.insert("creationTimestamp".into(), Value::String(self.now.clone()));
        for server_owned in [
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
        ] {
            meta.remove(server_owned);
        }
        if r.custom {
            meta.insert("generation".into(), json!(1));
        } else {
            meta.remove("generation");
        }
        initial_status(r, &mut obj);
        apply::drop_empty_metadata_maps(&mut obj);
        let mut obj = Value::Object(obj);
        let managers = match managers {
            Some(m) => m,
            None => {
                let mut m = Managers::default();
                // An object the field manager cannot walk (a list item without its key) is
                // stored untracked, as the API server does.
                let scope = self.scope(r, Target::Main);
                if apply::record_update(&mut m, None, &obj, &scope, write.manager, &self.now)
                    .is_err()
                {
                    m = Managers::default();
                }
                m
            }
        };
        managers.store_in(&mut obj);
        if dry_run {
            return Ok(obj);
        }
        self.uids += 1;
        let object = self.commit(r, key, obj, EventType::Added, None);
        Ok(object)
    }

    /// Store an object that mutating admission changed after a dry [`Store::create_with`] or
    /// [`Store::apply`] (`request` the body as sent, `admitted` the dry result as mutated): its
    /// managed fields stay those the plain write recorded, because the API server runs the
    /// field manager before mutating admission (k8s `handlers/create.go`).
    pub fn create_admitted(
        &mut self,
        r: &'static ResourceDef,
        namespace: &str,
        request: &Value,
        admitted: Value,
        dry_run: bool,
    ) -> Result<Value, Error> {
        let generated = request
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty);
        let managers = Managers::of(&admitted);
        let created =
            self.create_inner(r, namespace, admitted, Write::dry(dry_run), Some(managers))?;
        if generated && !dry_run {
            // The dry write generated this name without counting it.
            self.generated_names += 1;
        }
        Ok(created)
    }

    /// Store an object that mutating admission changed after a dry update, patch or apply,
    /// keeping the managed fields that write recorded (k8s `handlers/update.go`: the field
    /// manager's transformer runs before the admission transformer).
    pub fn update_admitted(
        &mut self,
        r: &'static ResourceDef,
        namespace: &str,
        name: &str,
        admitted: Value,
        dry_run: bool,
    ) -> Result<Value, Error> {
        let managers = Managers::of(&admitted);
        let updated = self.update_inner(
            r,
            namespace,
            name,
            admitted,
            Target::Main,
            Write::dry(dry_run),
            Some(managers),
        )?;
        if !dry_run {
            self.collect_garbage();
        }
        Ok(updated)
    }

    /// Replace an object (PUT), or its status with [`Target::Status`].
    pub fn update(
        &mut self,
        r: &'static ResourceDef,
        namespace: &str,
        name: &str,
        object: Value,
        target: Target,
        dry_run: bool,
    ) -> Result<Value, Error> {
        self.update_with(r, namespace, name, object, target, Write::dry(dry_run))
    }

    /// Replace an object or its status, recording what changed as owned by the write's manager.
    pub fn update_with(
        &mut self,
        r: &'static ResourceDef,
        namespace: &str,
        name: &str,
        object: Value,
        target: Target,
        write: Write<'_>,
    ) -> Result<Value, Error> {
        let updated = self.update_inner(r, namespace, name, object, target, write, None)?;
        if !write.dry_run {
            self.collect_garbage();
        }
        Ok(updated)
    }

    #[allow(clippy::too_many_arguments)] // the public forms take fewer
    fn update_inner(
        &mut self,
        r: &'static ResourceDef,
        namespace: &str,
        name: &str,
        object: Value,
        target: Target,
        write: Write<'_>,
        managers: Option<Managers>,
    ) -> Result<Value, Error> {
        let dry_run = write.dry_run;
        let mut new = into_object(object, r)?;
        let meta = metadata_mut(&mut new)?;
        check_namespace(r, namespace, meta)?;
        match meta.get("name").and_then(Value::as_str) {
            Some(n) if n == name => {}
            Some(n) if !n.is_empty() => {
                return Err(Error::BadRequest(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )));
            }
            _ => {
                meta.insert("name".into(), Value::String(name.to_string()));
            }
        }
        let old = self.get(r, namespace, name)?;
        let old_uid = old
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or_default();
        match meta.get("uid").and_then(Value::as_str) {
            Some(uid) if !uid.is_empty() && uid != old_uid => {
                return Err(Error::Conflict {
                    resource: r,
                    name: name.to_string(),
                    reason: format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {old_uid}"
                    ),
                });
            }
            _ => {}
        }
        let old_rv = old
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        match meta.get("resourceVersion").and_then(Value::as_str) {
            Some(rv) if !rv.is_empty() && rv != old_rv => {
                return Err(Error::Conflict {
                    resource: r,
                    name: name.to_string(),
                    reason: CONFLICT_MODIFIED.into(),
                });
            }
            Some(rv) if !rv.is_empty() => {}
            _ if r.custom => {
                return Err(Error::Invalid {
                    resource: r,
                    name: name.to_string(),
                    causes: vec![Cause {
                        reason: "FieldValueInvalid",
                        field: "metadata.resourceVersion".into(),
                        message: "Invalid value: 0x0: must be specified for an update".into(),
                    }],
                });
            }
            _ => {}
        }
        let new = match target {
            Target::Main => {
                validate_metadata(r, name, meta)?;
                let old_meta = old.get("metadata").and_then(Value::as_object);
                for preserved in [
                    "uid",
                    "creationTimestamp",
                    "generation",
                    "deletionTimestamp",
                    "deletionGracePeriodSeconds",
                ] {
                    match old_meta.and_then(|m| m.get(preserved)) {
                        Some(v) => meta.insert(preserved.into(), v.clone()),
                        None => meta.remove(preserved),
                    };
                }
                meta.insert("resourceVersion".into(), Value::String(old_rv.clone()));
                if r.status {
                    match old.get("status") {
                        Some(s) => new.insert("status".into(), s.clone()),
                        None => new.remove("status"),
                    };
                }
                if r.custom
                    && spec_of(r, &new) != spec_of(r, old.as_object().unwrap_or(&Map::new()))
                {
                    let generation = old
                        .pointer("/metadata/generation")
                        .and_then(Value::as_i64)
                        .unwrap_or(0);
                    if let Some(m) = new.get_mut("metadata").and_then(Value::as_object_mut) {
                        m.insert("generation".into(), json!(generation + 1));
                    }
                }
                new
            }
            Target::Status => {
                if !r.status {
                    return Err(Error::NotFound {
                        resource: r,
                        name: name.to_string(),
                    });
                }
                let mut merged = old.as_object().cloned().unwrap_or_default();
                match new.remove("status") {
                    Some(s) => merged.insert("status".into(), s),
                    None => merged.remove("status"),
                };
                merged
            }
        };
        let mut new = new;
        apply::drop_empty_metadata_maps(&mut new);
        let mut new = Value::Object(new);
        let managers = match managers {
            Some(m) => m,
            None => {
                // Managed fields the client sent (changed ones) replace the stored ones, as the
                // API server allows for the main resource: kubectl's migration from client-side
                // to server-side apply rewrites them so.
                let sent = new
                    .pointer("/metadata/managedFields")
                    .and_then(Value::as_array)
                    .is_some_and(|a| !a.is_empty());
                let before = if target == Target::Main && sent {
                    Managers::of(&new)
                } else {
                    Managers::of(&old)
                };
                let mut m = before.clone();
                let scope = self.scope(r, target);
                match apply::record_update(
                    &mut m,
                    Some(&old),
                    &new,
                    &scope,
                    write.manager,
                    &self.now,
                ) {
                    Ok(()) => m,
                    Err(_) => before,
                }
            }
        };
        managers.store_in(&mut new);
        if new == old || dry_run {
            // A no-op write changes nothing, not even the resourceVersion.
            return Ok(new);
        }
        let key = (scope(r, namespace), name.to_string());
        let previous_labels = old.pointer("/metadata/labels").cloned();
        Ok(self.commit(r, key, new, EventType::Modified, previous_labels))
    }

    /// Patch an object (or its status) and write it as [`Store::update`] would. A merge patch
    /// that carries `metadata.resourceVersion` is checked against the stored one.
    pub fn patch(
        &mut self,
        r: &'static ResourceDef,
        namespace: &str,
        name: &str,
        patch: &Patch,
        target: Target,
        dry_run: bool,
    ) -> Result<Value, Error> {
        self.patch_with(r, namespace, name, patch, target, Write::dry(dry_run))
    }

    /// Patch an object or its status as the write's manager.
    pub fn patch_with(
        &mut self,
        r: &'static ResourceDef,
        namespace: &str,
        name: &str,
        patch: &Patch,
        target: Target,
        write: Write<'_>,
    ) -> Result<Value, Error> {
        if target == Target::Status && !r.status {
            return Err(Error::NotFound {
                resource: r,
                name: name.to_string(),
            });
        }
        let mut obj = self.get(r, namespace, name)?;
        match patch {
            Patch::Merge(p) => {
                if !p.is_object() {
                    return Err(Error::BadRequest(
                        "json: cannot unmarshal a merge patch that is not an object".into(),
                    ));
                }
                json_patch::merge(&mut obj, p);
            }
            Patch::Json(p) => json_patch::patch(&mut obj, p)
                .map_err(|e| Error::UnprocessablePatch(e.to_string()))?,
            Patch::Strategic(p) => {
                obj = super::strategic::patch(&obj, p)
                    .map_err(|e| Error::BadRequest(e.to_string()))?;
            }
        }
        self.update_with(r, namespace, name, obj, target, write)
    }

    /// The field-tracking scope of a write to `r` through `target`.
    fn scope(&self, r: &'static ResourceDef, target: Target) -> apply::Scope {
        apply::Scope {
            schema: Schema::Root(r),
            status_subresource: r.status,
            status_write: target == Target::Status,
            api_version: r.api_version(),
        }
    }

    /// Server-side apply (`application/apply-patch+yaml`): merge `config` into the object (or
    /// create it), owned by `opts.manager`; a change to a field another manager owns is a
    /// conflict unless `opts.force`. Returns the object and whether it was created.
    #[allow(clippy::too_many_arguments)] // mirrors the request: where, what, how
    pub fn apply(
        &mut self,
        r: &'static ResourceDef,
        namespace: &str,
        name: &str,
        config: Value,
        target: Target,
        opts: ApplyOptions<'_>,
    ) -> Result<(Value, bool), Error> {
        if target == Target::Status && !r.status {
            return Err(Error::NotFound {
                resource: r,
                name: name.to_string(),
            });
        }
        for field in ["apiVersion", "kind"] {
            if config
                .get(field)
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                return Err(Error::BadRequest(format!(
                    "error decoding the apply configuration: Object '{}' is missing",
                    if field == "kind" {
                        "Kind"
                    } else {
                        "apiVersion"
                    }
                )));
            }
        }
        let mut cfg = into_object(config, r)?;
        let meta = metadata_mut(&mut cfg)?;
        check_namespace(r, namespace, meta)?;
        match meta.get("name").and_then(Value::as_str) {
            Some(n) if n != name && !n.is_empty() => {
                return Err(Error::BadRequest(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )));
            }
            _ => {
                meta.insert("name".into(), Value::String(name.to_string()));
            }
        }
        if meta.get("managedFields").is_some_and(|m| !m.is_null()) {
            return Err(Error::BadRequest(
                "metadata.managedFields must be nil".into(),
            ));
        }
        let wanted_rv = meta
            .remove("resourceVersion")
            .and_then(|v| v.as_str().map(String::from))
            .filter(|v| !v.is_empty());
        for server_owned in [
            "uid",
            "creationTimestamp",
            "generation",
            "selfLink",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "managedFields",
        ] {
            meta.remove(server_owned);
        }
        match target {
            Target::Main if r.status => {
                cfg.remove("status");
            }
            Target::Main => {}
            Target::Status => {
                cfg.retain(|k, _| {
                    matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "status")
                });
                if let Some(m) = cfg.get_mut("metadata").and_then(Value::as_object_mut) {
                    m.retain(|k, _| k == "name" || k == "namespace");
                }
            }
        }
        let cfg = Value::Object(cfg);
        let scope = self.scope(r, target);
        let req = apply::Apply {
            manager: opts.manager,
            force: opts.force,
            now: &self.now,
        };
        let write = Write {
            dry_run: opts.dry_run,
            manager: Some(opts.manager),
        };
        let live = match self.get(r, namespace, name) {
            Ok(live) => live,
            Err(Error::NotFound { .. }) if target == Target::Main => {
                let mut managers = Managers::default();
                let obj = apply::apply(None, &cfg, &mut managers, &scope, req)
                    .map_err(|e| apply_error(r, name, e))?;
                let created = self.create_inner(r, namespace, obj, write, Some(managers))?;
                return Ok((created, true));
            }
            Err(e) => return Err(e),
        };
        let live_rv = live
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if wanted_rv.as_deref().is_some_and(|want| want != live_rv) {
            return Err(Error::Conflict {
                resource: r,
                name: name.to_string(),
                reason: CONFLICT_MODIFIED.into(),
            });
        }
        let mut managers = Managers::of(&live);
        let mut bare = live.clone();
        if let Some(m) = bare.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("managedFields");
        }
        let merged = apply::apply(Some(&bare), &cfg, &mut managers, &scope, req)
            .map_err(|e| apply_error(r, name, e))?;
        let updated =
            self.update_inner(r, namespace, name, merged, target, write, Some(managers))?;
        if !opts.dry_run {
            self.collect_garbage();
        }
        Ok((updated, false))
    }

    /// Delete an object (background propagation), checking the optional uid and
    /// resourceVersion preconditions; see [`Store::delete_with`].
    pub fn delete(
        &mut self,
        r: &'static ResourceDef,
        namespace: &str,
        name: &str,
        preconditions: &Preconditions,
        dry_run: bool,
    ) -> Result<Value, Error> {
        let opts = DeleteOptions {
            preconditions: preconditions.clone(),
            propagation: None,
            dry_run,
        };
        self.delete_with(r, namespace, name, &opts)
            .map(|d| d.object)
    }

    pub(crate) fn remove(
        &mut self,
        r: &'static ResourceDef,
        namespace: &str,
        name: &str,
    ) -> Option<Value> {
        let key = (scope(r, namespace), name.to_string());
        let mut obj = self.objects.get_mut(&id(r))?.remove(&key)?;
        self.revision += 1;
        set_resource_version(&mut obj, self.revision);
        self.record(Change {
            revision: self.revision,
            event: EventType::Deleted,
            resource: r,
            namespace: key.0,
            object: obj.clone(),
            previous_labels: None,
        });
        Some(obj)
    }

    /// Changes to one resource (in one namespace, or all) after revision `since`, oldest first;
    /// `Gone` when some of them are no longer in the log.
    pub fn changes_since(
        &self,
        r: &'static ResourceDef,
        namespace: Option<&str>,
        since: u64,
    ) -> Result<Vec<Change>, Error> {
        if since < self.compacted {
            return Err(Error::Gone {
                requested: since,
                oldest: self.compacted + 1,
            });
        }
        Ok(self
            .log
            .iter()
            .filter(|c| c.revision > since && c.resource == r)
            .filter(|c| namespace.is_none_or(|ns| ns == c.namespace))
            .cloned()
            .collect())
    }

    fn check_namespace_exists(
        &self,
        r: &'static ResourceDef,
        namespace: &str,
        name: &str,
    ) -> Result<(), Error> {
        if !r.namespaced {
            return Ok(());
        }
        let ns = resources::namespaces();
        match self
            .map(ns)
            .and_then(|m| m.get(&(String::new(), namespace.to_string())))
        {
            Some(n) if n.pointer("/metadata/deletionTimestamp").is_some() => {
                Err(Error::Forbidden {
                    resource: r,
                    name: name.to_string(),
                    reason: format!(
                        "unable to create new content in namespace {namespace} because it is being terminated"
                    ),
                })
            }
            Some(_) => Ok(()),
            None => Err(Error::NotFound {
                resource: ns,
                name: namespace.to_string(),
            }),
        }
    }

    /// Store `obj` under a new revision and log the change.
    fn commit(
        &mut self,
        r: &'static ResourceDef,
        key: (String, String),
        mut obj: Value,
        event: EventType,
        previous_labels: Option<Value>,
    ) -> Value {
        self.revision += 1;
        set_resource_version(&mut obj, self.revision);
        self.record(Change {
            revision: self.revision,
            event,
            resource: r,
            namespace: key.0.clone(),
            object: obj.clone(),
            previous_labels,
        });
        self.objects
            .entry(id(r))
            .or_default()
            .insert(key, obj.clone());
        obj
    }

    fn record(&mut self, change: Change) {
        if self.log.len() == CHANGE_LOG_CAPACITY
            && let Some(dropped) = self.log.pop_front()
        {
            self.compacted = dropped.revision;
        }
        self.log.push_back(change);
    }
}

fn apply_error(r: &'static ResourceDef, name: &str, e: apply::Error) -> Error {
    match e {
        apply::Error::Conflicts { message, causes } => Error::ApplyConflict {
            message,
            causes: causes
                .into_iter()
                .map(|(field, message)| Cause {
                    reason: "FieldManagerConflict",
                    field,
                    message,
                })
                .collect(),
        },
        apply::Error::Schema(e) => Error::Invalid {
            resource: r,
            name: name.to_string(),
            causes: vec![Cause {
                reason: "FieldValueInvalid",
                field: String::new(),
                message: e.to_string(),
            }],
        },
    }
}

/// Preconditions of a delete (`DeleteOptions.preconditions`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Preconditions {
    pub uid: Option<String>,
    pub resource_version: Option<String>,
}

/// The namespace part of a key: empty for cluster-scoped resources.
fn scope(r: &ResourceDef, namespace: &str) -> String {
    if r.namespaced {
        namespace.to_string()
    } else {
        String::new()
    }
}

fn set_resource_version(obj: &mut Value, revision: u64) {
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        m.insert(
            "resourceVersion".into(),
            Value::String(revision.to_string()),
        );
    }
}

/// The part of an object whose change bumps `metadata.generation`: everything but metadata (and
/// status, when it is a subresource).
fn spec_of<'a>(r: &ResourceDef, obj: &'a Map<String, Value>) -> Vec<(&'a String, &'a Value)> {
    obj.iter()
        .filter(|(k, _)| *k != "metadata" && !(r.status && *k == "status"))
        .collect()
}

/// The body as an object, with `apiVersion` and `kind` checked against (or set from) the
/// endpoint.
fn into_object(value: Value, r: &ResourceDef) -> Result<Map<String, Value>, Error> {
    let Value::Object(mut obj) = value else {
        return Err(Error::BadRequest(format!(
            "the body of a {} must be a JSON object",
            r.kind
        )));
    };
    let api_version = r.api_version();
    match obj.get("apiVersion").and_then(Value::as_str) {
        Some(v) if !v.is_empty() && v != api_version => {
            return Err(Error::BadRequest(format!(
                "the API version in the data ({v}) does not match the expected API version ({api_version})"
            )));
        }
        _ => {}
    }
    match obj.get("kind").and_then(Value::as_str) {
        Some(k) if !k.is_empty() && k != r.kind => {
            return Err(Error::BadRequest(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                r.kind
            )));
        }
        _ => {}
    }
    // Kubernetes serializes apiVersion and kind first.
    let mut out = Map::new();
    out.insert("apiVersion".into(), Value::String(api_version));
    out.insert("kind".into(), Value::String(r.kind.to_string()));
    obj.remove("apiVersion");
    obj.remove("kind");
    out.extend(obj);
    Ok(out)
}

fn metadata_mut(obj: &mut Map<String, Value>) -> Result<&mut Map<String, Value>, Error> {
    let meta = obj
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if meta.is_null() {
        *meta = Value::Object(Map::new());
    }
    meta.as_object_mut()
        .ok_or_else(|| Error::BadRequest("metadata must be an object".into()))
}

/// The request's namespace against the body's; fills it in for namespaced kinds.
fn check_namespace(
    r: &ResourceDef,
    namespace: &str,
    meta: &mut Map<String, Value>,
) -> Result<(), Error> {
    if !r.namespaced {
        meta.remove("namespace");
        return Ok(());
    }
    match meta.get("namespace").and_then(Value::as_str) {
        Some(ns) if !ns.is_empty() && ns != namespace => Err(Error::BadRequest(
            "the namespace of the provided object does not match the namespace sent on the request"
                .into(),
        )),
        _ => {
            meta.insert("namespace".into(), Value::String(namespace.to_string()));
            Ok(())
        }
    }
}

/// Status a newly created object starts with.
fn initial_status(r: &ResourceDef, obj: &mut Map<String, Value>) {
    if !r.status {
        return;
    }
    match (r.group, r.plural) {
        ("", "namespaces") => {
            obj.insert("spec".into(), json!({"finalizers": ["kubernetes"]}));
            obj.insert("status".into(), json!({"phase": "Active"}));
        }
        ("", "persistentvolumeclaims") => {
            obj.insert("status".into(), json!({"phase": "Pending"}));
        }
        _ => {
            obj.remove("status");
        }
    }
}

fn validate_metadata(
    r: &'static ResourceDef,
    name: &str,
    meta: &Map<String, Value>,
) -> Result<(), Error> {
    let mut causes = Vec::new();
    let name_check = if r == resources::namespaces() {
        validate_dns_label(name)
    } else {
        validate_dns_subdomain(name)
    };
    if let Err(m) = name_check {
        causes.push(Cause {
            reason: "FieldValueInvalid",
            field: "metadata.name".into(),
            message: format!("Invalid value: \"{name}\": {m}"),
        });
    }
    for field in ["labels", "annotations"] {
        match meta.get(field) {
            None | Some(Value::Null) => {}
            Some(Value::Object(map)) => {
                for (k, v) in map {
                    let Some(v) = v.as_str() else {
                        return Err(Error::BadRequest(format!(
                            "json: cannot unmarshal {} into Go struct field ObjectMeta.metadata.{field} of type string",
                            json_type(v)
                        )));
                    };
                    if let Err(m) = validate_label_key(k) {
                        causes.push(Cause {
                            reason: "FieldValueInvalid",
                            field: format!("metadata.{field}"),
                            message: format!("Invalid value: \"{k}\": {m}"),
                        });
                    }
                    if field == "labels"
                        && let Err(m) = validate_label_value(v)
                    {
                        causes.push(Cause {
                            reason: "FieldValueInvalid",
                            field: "metadata.labels".into(),
                            message: format!("Invalid value: \"{v}\": {m}"),
                        });
                    }
                }
            }
            Some(other) => {
                return Err(Error::BadRequest(format!(
                    "json: cannot unmarshal {} into Go struct field ObjectMeta.metadata.{field} of type map[string]string",
                    json_type(other)
                )));
            }
        }
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(Error::Invalid {
            resource: r,
            name: name.to_string(),
            causes,
        })
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The n-th uid: UUID-shaped, deterministic.
fn uid(n: u64) -> String {
    format!("00000000-0000-4000-8000-{n:012x}")
}

/// The n-th generated name suffix: five characters of Kubernetes' alphabet, spread out by a
/// multiplier coprime with 27^5 so consecutive names differ in more than the last character.
fn name_suffix(n: u64) -> String {
    let base = NAME_SUFFIX_ALPHABET.len() as u64;
    let space = base.pow(NAME_SUFFIX_LEN);
    let mut x = (n.wrapping_mul(4_000_037).wrapping_add(1_234_567)) % space;
    let mut out = String::new();
    for _ in 0..NAME_SUFFIX_LEN {
        out.push(char::from(NAME_SUFFIX_ALPHABET[(x % base) as usize]));
        x /= base;
    }
    out
}

fn encode_continue(rv: u64, namespace: &str, name: &str) -> String {
    let raw = format!("{rv}\n{namespace}\n{name}");
    raw.bytes().map(|b| format!("{b:02x}")).collect()
}

fn decode_continue(token: &str) -> Result<(u64, String, String), Error> {
    let bad = || Error::BadRequest(format!("continue key is not valid: {token}"));
    if !token.len().is_multiple_of(2) {
        return Err(bad());
    }
    let bytes: Vec<u8> = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(token.get(i..i + 2).unwrap_or("zz"), 16))
        .collect::<Result<_, _>>()
        .map_err(|_| bad())?;
    let raw = String::from_utf8(bytes).map_err(|_| bad())?;
    let mut parts = raw.splitn(3, '\n');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(rv), Some(ns), Some(name)) => Ok((
            rv.parse().map_err(|_| bad())?,
            ns.to_string(),
            name.to_string(),
        )),
        _ => Err(bad()),
    }
}

/// RFC 3339 UTC time stamp (`2026-01-02T03:04:05Z`) of a Unix time, as Kubernetes writes it.
pub fn rfc3339(unix_seconds: i64) -> String {
    let days = unix_seconds.div_euclid(86_400);
    let secs = unix_seconds.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create_namespace(store: &mut Store, name: &str) {
        store
            .create(
                resources::namespaces(),
                "",
                json!({"metadata": {"name": name}}),
                false,
            )
            .unwrap();
    }

    fn vm_def() -> &'static ResourceDef {
        resources::find("kubevirt.io", "v1", "virtualmachines").unwrap()
    }

    fn cm_def() -> &'static ResourceDef {
        resources::find("", "v1", "configmaps").unwrap()
    }

    fn vm(name: &str, labels: Value) -> Value {
        json!({
            "apiVersion": "kubevirt.io/v1",
            "kind": "VirtualMachine",
            "metadata": {"name": name, "labels": labels},
            "spec": {"runStrategy": "Always"},
            "status": {"ready": true},
        })
    }

    fn rv(obj: &Value) -> u64 {
        obj["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    }

    #[test]
    fn starts_with_the_standard_namespaces() {
        let store = Store::new();
        let page = store
            .list(resources::namespaces(), None, &ListOptions::default())
            .unwrap();
        let names: Vec<_> = page
            .items
            .iter()
            .map(|n| n["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, INITIAL_NAMESPACES);
        assert_eq!(page.items[0]["status"]["phase"], "Active");
        assert_eq!(page.resource_version, 4);
    }

    #[test]
    fn create_sets_server_fields_and_drops_subresource_status() {
        let mut store = Store::new();
        store.set_now(1_767_225_600);
        let created = store
            .create(vm_def(), "default", vm("vm1", json!({"app": "web"})), false)
            .unwrap();
        let meta = &created["metadata"];
        assert_eq!(meta["namespace"], "default");
        assert_eq!(meta["creationTimestamp"], "2026-01-01T00:00:00Z");
        assert_eq!(meta["generation"], 1);
        assert_eq!(meta["uid"], "00000000-0000-4000-8000-000000000005");
        assert_eq!(rv(&created), store.revision());
        assert!(created.get("status").is_none());
        assert_eq!(store.get(vm_def(), "default", "vm1").unwrap(), created);
    }

    #[test]
    fn create_errors() {
        let mut store = Store::new();
        store
            .create(vm_def(), "default", vm("vm1", json!({})), false)
            .unwrap();
        let err = store
            .create(vm_def(), "default", vm("vm1", json!({})), false)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "virtualmachines.kubevirt.io \"vm1\" already exists"
        );
        let err = store
            .create(vm_def(), "nowhere", vm("vm1", json!({})), false)
            .unwrap_err();
        assert_eq!(err.to_string(), "namespaces \"nowhere\" not found");
        let err = store
            .create(
                vm_def(),
                "default",
                vm("Bad_Name", json!({"ok": "x", "bad key": "y"})),
                false,
            )
            .unwrap_err();
        let Error::Invalid { causes, .. } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(causes.len(), 2);
        assert!(err.to_string().starts_with(
            "VirtualMachine.kubevirt.io \"Bad_Name\" is invalid: [metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain"
        ));
        let err = store
            .create(vm_def(), "default", json!({"metadata": {}}), false)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "VirtualMachine.kubevirt.io \"\" is invalid: metadata.name: Required value: name or generateName is required"
        );
        let err = store
            .create(
                vm_def(),
                "default",
                json!({"metadata": {"name": "x", "namespace": "other"}}),
                false,
            )
            .unwrap_err();
        assert!(matches!(err, Error::BadRequest(_)));
        let err = store
            .create(
                vm_def(),
                "default",
                json!({"apiVersion": "kubevirt.io/v1alpha3", "metadata": {"name": "x"}}),
                false,
            )
            .unwrap_err();
        assert!(matches!(err, Error::BadRequest(_)));
    }

    #[test]
    fn generate_name_is_deterministic_and_unique() {
        let mut a = Store::new();
        let mut b = Store::new();
        let obj = json!({"metadata": {"generateName": "vm-"}});
        let names: Vec<String> = (0..3)
            .map(|_| {
                let o = a.create(vm_def(), "default", obj.clone(), false).unwrap();
                o["metadata"]["name"].as_str().unwrap().to_string()
            })
            .collect();
        assert!(names.iter().all(|n| n.starts_with("vm-") && n.len() == 8));
        assert_ne!(names[0], names[1]);
        let again = b.create(vm_def(), "default", obj, false).unwrap();
        assert_eq!(again["metadata"]["name"], names[0].as_str());
    }

    #[test]
    fn list_with_selectors_and_pages() {
        let mut store = Store::new();
        create_namespace(&mut store, "web");
        for (ns, name, app) in [
            ("default", "a", "web"),
            ("web", "b", "web"),
            ("web", "c", "db"),
        ] {
            store
                .create(vm_def(), ns, vm(name, json!({"app": app})), false)
                .unwrap();
        }
        let names = |page: &ListPage| -> Vec<String> {
            page.items
                .iter()
                .map(|o| o["metadata"]["name"].as_str().unwrap().to_string())
                .collect()
        };
        let all = store.list(vm_def(), None, &ListOptions::default()).unwrap();
        assert_eq!(names(&all), ["a", "b", "c"]);
        assert_eq!(all.resource_version, store.revision());
        let web = ListOptions {
            labels: LabelSelector::parse("app in (web)").unwrap(),
            ..ListOptions::default()
        };
        assert_eq!(
            names(&store.list(vm_def(), None, &web).unwrap()),
            ["a", "b"]
        );
        assert_eq!(
            names(&store.list(vm_def(), Some("web"), &web).unwrap()),
            ["b"]
        );
        let fields = ListOptions {
            fields: FieldSelector::parse("metadata.name!=b", &[]).unwrap(),
            ..ListOptions::default()
        };
        assert_eq!(
            names(&store.list(vm_def(), None, &fields).unwrap()),
            ["a", "c"]
        );

        let mut opts = ListOptions {
            limit: Some(2),
            ..ListOptions::default()
        };
        let first = store.list(vm_def(), None, &opts).unwrap();
        assert_eq!(names(&first), ["a", "b"]);
        assert_eq!(first.remaining, Some(1));
        opts.continue_token = first.continue_token.clone();
        let second = store.list(vm_def(), None, &opts).unwrap();
        assert_eq!(names(&second), ["c"]);
        assert_eq!(second.continue_token, None);
        assert_eq!(second.resource_version, first.resource_version);
        opts.continue_token = Some("zz".into());
        assert!(matches!(
            store.list(vm_def(), None, &opts),
            Err(Error::BadRequest(_))
        ));
    }

    #[test]
    fn update_checks_resource_version_and_keeps_status() {
        let mut store = Store::new();
        let created = store
            .create(vm_def(), "default", vm("vm1", json!({})), false)
            .unwrap();
        let mut changed = created.clone();
        changed["spec"]["runStrategy"] = json!("Halted");
        changed["status"] = json!({"ignored": true});
        let updated = store
            .update(
                vm_def(),
                "default",
                "vm1",
                changed.clone(),
                Target::Main,
                false,
            )
            .unwrap();
        assert_eq!(updated["spec"]["runStrategy"], "Halted");
        assert!(updated.get("status").is_none());
        assert_eq!(updated["metadata"]["generation"], 2);
        assert!(rv(&updated) > rv(&created));

        // The stale copy conflicts.
        let err = store
            .update(vm_def(), "default", "vm1", changed, Target::Main, false)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Operation cannot be fulfilled on virtualmachines.kubevirt.io \"vm1\": the object has been modified; please apply your changes to the latest version and try again"
        );
        // Custom resources need a resourceVersion; built-in kinds update unconditionally.
        let mut no_rv = updated.clone();
        no_rv["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("resourceVersion");
        let err = store
            .update(vm_def(), "default", "vm1", no_rv, Target::Main, false)
            .unwrap_err();
        assert!(matches!(err, Error::Invalid { .. }), "{err:?}");
        store
            .create(
                cm_def(),
                "default",
                json!({"metadata": {"name": "c"}, "data": {"a": "1"}}),
                false,
            )
            .unwrap();
        let cm = store
            .update(
                cm_def(),
                "default",
                "c",
                json!({"metadata": {"name": "c"}, "data": {"a": "2"}}),
                Target::Main,
                false,
            )
            .unwrap();
        assert_eq!(cm["data"]["a"], "2");
        assert!(cm["metadata"].get("generation").is_none());
    }

    #[test]
    fn update_of_a_recreated_object_conflicts_on_the_uid() {
        let mut store = Store::new();
        let first = store
            .create(vm_def(), "default", vm("vm1", json!({})), false)
            .unwrap();
        store
            .delete(vm_def(), "default", "vm1", &Preconditions::default(), false)
            .unwrap();
        let second = store
            .create(vm_def(), "default", vm("vm1", json!({})), false)
            .unwrap();
        let mut stale = first.clone();
        stale["metadata"]["resourceVersion"] = second["metadata"]["resourceVersion"].clone();
        let err = store
            .update(vm_def(), "default", "vm1", stale, Target::Main, false)
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("Precondition failed: UID in precondition"),
            "{err}"
        );
    }

    #[test]
    fn no_op_update_keeps_the_resource_version() {
        let mut store = Store::new();
        let created = store
            .create(vm_def(), "default", vm("vm1", json!({})), false)
            .unwrap();
        let before = store.revision();
        let same = store
            .update(
                vm_def(),
                "default",
                "vm1",
                created.clone(),
                Target::Main,
                false,
            )
            .unwrap();
        assert_eq!(same, created);
        assert_eq!(store.revision(), before);
    }

    #[test]
    fn status_subresource_changes_only_status() {
        let mut store = Store::new();
        let created = store
            .create(vm_def(), "default", vm("vm1", json!({})), false)
            .unwrap();
        let mut body = created.clone();
        body["spec"]["runStrategy"] = json!("Halted");
        body["status"] = json!({"printableStatus": "Running"});
        let updated = store
            .update(vm_def(), "default", "vm1", body, Target::Status, false)
            .unwrap();
        assert_eq!(updated["status"]["printableStatus"], "Running");
        assert_eq!(updated["spec"]["runStrategy"], "Always");
        assert_eq!(updated["metadata"]["generation"], 1);
        let patched = store
            .patch(
                vm_def(),
                "default",
                "vm1",
                &Patch::Merge(json!({"status": {"ready": true}})),
                Target::Status,
                false,
            )
            .unwrap();
        assert_eq!(
            patched["status"],
            json!({"printableStatus": "Running", "ready": true})
        );
        // A kind without a status subresource has no /status.
        let cm = resources::find("", "v1", "configmaps").unwrap();
        store
            .create(cm, "default", json!({"metadata": {"name": "c"}}), false)
            .unwrap();
        let err = store
            .patch(
                cm,
                "default",
                "c",
                &Patch::Merge(json!({})),
                Target::Status,
                false,
            )
            .unwrap_err();
        assert!(matches!(err, Error::NotFound { .. }));
    }

    #[test]
    fn merge_and_json_patches() {
        let mut store = Store::new();
        store
            .create(
                vm_def(),
                "default",
                vm("vm1", json!({"a": "1", "b": "2"})),
                false,
            )
            .unwrap();
        let merged = store
            .patch(
                vm_def(),
                "default",
                "vm1",
                &Patch::Merge(json!({"metadata": {"labels": {"a": null, "c": "3"}}, "spec": {"template": {}}})),
                Target::Main,
                false,
            )
            .unwrap();
        assert_eq!(merged["metadata"]["labels"], json!({"b": "2", "c": "3"}));
        assert_eq!(
            merged["spec"],
            json!({"runStrategy": "Always", "template": {}})
        );
        // A merge patch carrying a stale resourceVersion conflicts.
        let err = store
            .patch(
                vm_def(),
                "default",
                "vm1",
                &Patch::Merge(json!({"metadata": {"resourceVersion": "1"}})),
                Target::Main,
                false,
            )
            .unwrap_err();
        assert!(matches!(err, Error::Conflict { .. }));

        let ops: json_patch::Patch = serde_json::from_value(json!([
            {"op": "test", "path": "/spec/runStrategy", "value": "Always"},
            {"op": "replace", "path": "/spec/runStrategy", "value": "Halted"},
        ]))
        .unwrap();
        let patched = store
            .patch(
                vm_def(),
                "default",
                "vm1",
                &Patch::Json(ops),
                Target::Main,
                false,
            )
            .unwrap();
        assert_eq!(patched["spec"]["runStrategy"], "Halted");
        let failing: json_patch::Patch = serde_json::from_value(json!([
            {"op": "test", "path": "/spec/runStrategy", "value": "Always"},
        ]))
        .unwrap();
        let err = store
            .patch(
                vm_def(),
                "default",
                "vm1",
                &Patch::Json(failing),
                Target::Main,
                false,
            )
            .unwrap_err();
        assert!(matches!(err, Error::UnprocessablePatch(_)), "{err:?}");
    }

    #[test]
    fn dry_run_stores_nothing() {
        let mut store = Store::new();
        let before = store.revision();
        let obj = store
            .create(vm_def(), "default", vm("vm1", json!({})), true)
            .unwrap();
        assert_eq!(obj["metadata"]["name"], "vm1");
        assert!(store.get(vm_def(), "default", "vm1").is_err());
        let created = store
            .create(vm_def(), "default", vm("vm1", json!({})), false)
            .unwrap();
        let after_create = store.revision();
        let mut changed = created.clone();
        changed["spec"]["runStrategy"] = json!("Halted");
        let dry = store
            .update(vm_def(), "default", "vm1", changed, Target::Main, true)
            .unwrap();
        assert_eq!(dry["spec"]["runStrategy"], "Halted");
        store
            .delete(vm_def(), "default", "vm1", &Preconditions::default(), true)
            .unwrap();
        assert_eq!(store.get(vm_def(), "default", "vm1").unwrap(), created);
        assert_eq!(store.revision(), after_create);
        assert_eq!(before + 1, after_create);
    }

    #[test]
    fn delete_with_preconditions_and_namespace_cascade() {
        let mut store = Store::new();
        create_namespace(&mut store, "web");
        let created = store
            .create(vm_def(), "web", vm("vm1", json!({})), false)
            .unwrap();
        let wrong = Preconditions {
            uid: Some("nope".into()),
            resource_version: None,
        };
        let err = store
            .delete(vm_def(), "web", "vm1", &wrong, false)
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("Precondition failed: UID in precondition: nope")
        );
        let right = Preconditions {
            uid: created["metadata"]["uid"].as_str().map(String::from),
            resource_version: None,
        };
        let deleted = store.delete(vm_def(), "web", "vm1", &right, false).unwrap();
        assert_eq!(deleted["metadata"]["name"], "vm1");
        let err = store
            .delete(vm_def(), "web", "vm1", &Preconditions::default(), false)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "virtualmachines.kubevirt.io \"vm1\" not found"
        );

        store
            .create(vm_def(), "web", vm("vm2", json!({})), false)
            .unwrap();
        store
            .delete(
                resources::namespaces(),
                "",
                "web",
                &Preconditions::default(),
                false,
            )
            .unwrap();
        assert!(
            store
                .list(vm_def(), None, &ListOptions::default())
                .unwrap()
                .items
                .is_empty()
        );
        let err = store
            .delete(
                resources::namespaces(),
                "",
                "default",
                &Preconditions::default(),
                false,
            )
            .unwrap_err();
        assert!(matches!(err, Error::Forbidden { .. }));
    }

    #[test]
    fn change_log_records_and_compacts() {
        let mut store = Store::new();
        let start = store.revision();
        let created = store
            .create(vm_def(), "default", vm("vm1", json!({})), false)
            .unwrap();
        store
            .patch(
                vm_def(),
                "default",
                "vm1",
                &Patch::Merge(json!({"spec": {"x": 1}})),
                Target::Main,
                false,
            )
            .unwrap();
        store
            .delete(vm_def(), "default", "vm1", &Preconditions::default(), false)
            .unwrap();
        let changes = store
            .changes_since(vm_def(), Some("default"), start)
            .unwrap();
        let kinds: Vec<_> = changes.iter().map(|c| c.event.as_str()).collect();
        assert_eq!(kinds, ["ADDED", "MODIFIED", "DELETED"]);
        assert_eq!(changes[0].object, created);
        assert_eq!(changes[2].revision, store.revision());
        assert!(
            store
                .changes_since(vm_def(), Some("other"), start)
                .unwrap()
                .is_empty()
        );

        let cm = cm_def();
        for i in 0..CHANGE_LOG_CAPACITY {
            store
                .create(
                    cm,
                    "default",
                    json!({"metadata": {"name": format!("c{i}")}}),
                    false,
                )
                .unwrap();
        }
        let err = store.changes_since(vm_def(), None, start).unwrap_err();
        assert!(matches!(err, Error::Gone { .. }), "{err:?}");
        assert!(
            store
                .changes_since(cm, None, store.revision() - 5)
                .unwrap()
                .len()
                == 5
        );
    }

    #[test]
    fn label_selected_watches_see_objects_enter_and_leave() {
        let mut store = Store::new();
        let start = store.revision();
        store
            .create(vm_def(), "default", vm("vm1", json!({"app": "db"})), false)
            .unwrap();
        for app in ["web", "web2", "db"] {
            let patch = Patch::Merge(json!({"metadata": {"labels": {"app": app}}}));
            store
                .patch(vm_def(), "default", "vm1", &patch, Target::Main, false)
                .unwrap();
        }
        let web = LabelSelector::parse("app in (web, web2)").unwrap();
        let seen: Vec<_> = store
            .changes_since(vm_def(), None, start)
            .unwrap()
            .iter()
            .map(|c| c.seen_through(&web).map(EventType::as_str))
            .collect();
        assert_eq!(
            seen,
            [None, Some("ADDED"), Some("MODIFIED"), Some("DELETED")]
        );
    }

    #[test]
    fn timestamps_and_names() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_316_645), "2026-11-22T03:04:05Z");
    }
}

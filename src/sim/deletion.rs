//! Deletion as the API server and Kubernetes' garbage and namespace controllers do it, run
//! synchronously after every delete and every write to a terminating object:
//!
//! * an object with `metadata.finalizers` is not removed: it gets a `deletionTimestamp` and
//!   stays until a write removes its last finalizer;
//! * `propagationPolicy`: `Background` (the default) removes the object and then its dependents
//!   (objects whose every `ownerReference` points at an object that is gone); `Foreground`
//!   keeps the owner, terminating with the `foregroundDeletion` finalizer, until its dependents
//!   are gone; `Orphan` removes the owner's `ownerReference` from its dependents and keeps them;
//! * a namespace turns `Terminating`, its contents are deleted (refusing new content), and it
//!   goes once it is empty;
//! * `deletecollection` deletes every object a label and field selector match.
//!
//! A child module of [`super`] (the store), whose bookkeeping it uses.

use serde_json::{Value, json};

use super::{Error, EventType, ListOptions, Preconditions, Store, scope};
use crate::sim::resources::{self, ResourceDef};

/// The finalizer that holds an owner deleted in the foreground until its dependents are gone.
pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";

/// Upper bound on garbage-collection passes after one request: each pass removes at least one
/// level of an ownership chain, and no chain Wukong's kinds form (VM → VMI/DataVolume → PVC,
/// namespace → content) is anywhere near this deep.
const MAX_GC_PASSES: usize = 64;

/// `DeleteOptions.propagationPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    Orphan,
    Background,
    Foreground,
}

impl Propagation {
    /// The policy named `name`, as in `DeleteOptions`.
    pub fn parse(name: &str) -> Option<Propagation> {
        match name {
            "Orphan" => Some(Propagation::Orphan),
            "Background" => Some(Propagation::Background),
            "Foreground" => Some(Propagation::Foreground),
            _ => None,
        }
    }
}

/// A delete request's options.
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    pub preconditions: Preconditions,
    /// `None`: the default, `Background`.
    pub propagation: Option<Propagation>,
    pub dry_run: bool,
}

/// The outcome of a delete.
#[derive(Debug, Clone, PartialEq)]
pub struct Deleted {
    /// The object as removed, or (when `finished` is false) as it now is, terminating.
    pub object: Value,
    /// The object is gone (the API server answers 200; 202 while it waits for finalizers).
    pub finished: bool,
}

/// What garbage collection needs to know of one object.
struct Info {
    resource: &'static ResourceDef,
    namespace: String,
    name: String,
    uid: String,
    owners: Vec<String>,
    terminating: bool,
    finalizers: Vec<String>,
}

fn text<'a>(obj: &'a Value, pointer: &str) -> &'a str {
    obj.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn finalizers(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

impl Store {
    /// Delete an object with the given options; see the module docs.
    pub fn delete_with(
        &mut self,
        r: &'static ResourceDef,
        namespace: &str,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<Deleted, Error> {
        let object = self.delete_one(r, namespace, name, opts)?;
        if opts.dry_run {
            return Ok(Deleted {
                object,
                finished: true,
            });
        }
        self.collect_garbage();
        let uid = text(&object, "/metadata/uid");
        match self.get(r, namespace, name) {
            Ok(now) if text(&now, "/metadata/uid") == uid => Ok(Deleted {
                object: now,
                finished: false,
            }),
            _ => Ok(Deleted {
                object,
                finished: true,
            }),
        }
    }

    /// Delete every object of `r` in `namespace` (or everywhere) that `selection` matches;
    /// returns them as deleted or terminating.
    pub fn delete_collection(
        &mut self,
        r: &'static ResourceDef,
        namespace: Option<&str>,
        selection: &ListOptions,
        opts: &DeleteOptions,
    ) -> Result<Vec<Value>, Error> {
        let all = ListOptions {
            labels: selection.labels.clone(),
            fields: selection.fields.clone(),
            ..ListOptions::default()
        };
        let items = self.list(r, namespace, &all)?.items;
        let each = DeleteOptions {
            preconditions: Preconditions::default(),
            ..opts.clone()
        };
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let ns = text(&item, "/metadata/namespace").to_string();
            let name = text(&item, "/metadata/name").to_string();
            match self.delete_one(r, &ns, &name, &each) {
                Ok(v) => out.push(v),
                // Undeletable namespaces are skipped, as are objects already gone.
                Err(Error::NotFound { .. } | Error::Forbidden { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        if !opts.dry_run {
            self.collect_garbage();
        }
        Ok(out)
    }

    /// Delete one object without collecting garbage: remove it, or mark it terminating.
    fn delete_one(
        &mut self,
        r: &'static ResourceDef,
        namespace: &str,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<Value, Error> {
        let old = self.get(r, namespace, name)?;
        let pre = &opts.preconditions;
        for (field, want) in [
            ("uid", &pre.uid),
            ("resourceVersion", &pre.resource_version),
        ] {
            let Some(want) = want else { continue };
            let have = text(&old, &format!("/metadata/{field}"));
            if want != have {
                let label = if field == "uid" {
                    "UID"
                } else {
                    "ResourceVersion"
                };
                return Err(Error::Conflict {
                    resource: r,
                    name: name.to_string(),
                    reason: format!(
                        "Precondition failed: {label} in precondition: {want}, {label} in object meta: {have}"
                    ),
                });
            }
        }
        let is_namespace = r == resources::namespaces();
        if is_namespace && super::UNDELETABLE_NAMESPACES.contains(&name) {
            return Err(Error::Forbidden {
                resource: r,
                name: name.to_string(),
                reason: "this namespace may not be deleted".into(),
            });
        }
        if opts.dry_run || old.pointer("/metadata/deletionTimestamp").is_some() {
            return Ok(old);
        }
        let uid = text(&old, "/metadata/uid").to_string();
        let mut pending = finalizers(&old);
        match opts.propagation.unwrap_or(Propagation::Background) {
            Propagation::Orphan => self.orphan_dependents(&uid),
            Propagation::Foreground => {
                if self.infos().iter().any(|i| i.owners.contains(&uid)) {
                    pending.push(FOREGROUND_FINALIZER.to_string());
                }
            }
            Propagation::Background => {}
        }
        if pending.is_empty() && !is_namespace {
            return Ok(self.remove(r, namespace, name).unwrap_or(old));
        }
        let mut obj = old.clone();
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("deletionTimestamp".into(), json!(self.now));
            meta.insert("deletionGracePeriodSeconds".into(), json!(0));
            if !pending.is_empty() {
                meta.insert("finalizers".into(), json!(pending));
            }
        }
        if is_namespace {
            obj["status"]["phase"] = json!("Terminating");
        }
        let key = (scope(r, namespace), name.to_string());
        let labels = old.pointer("/metadata/labels").cloned();
        Ok(self.commit(r, key, obj, EventType::Modified, labels))
    }

    /// Every stored object's ownership and deletion state.
    fn infos(&self) -> Vec<Info> {
        let mut out = Vec::new();
        for ((group, version, plural), objects) in &self.objects {
            let Some(r) = resources::find(group, version, plural) else {
                continue;
            };
            for ((ns, name), obj) in objects {
                let owners = obj
                    .pointer("/metadata/ownerReferences")
                    .and_then(Value::as_array)
                    .map(|refs| {
                        refs.iter()
                            .filter_map(|o| o.get("uid").and_then(Value::as_str))
                            .map(String::from)
                            .collect()
                    })
                    .unwrap_or_default();
                out.push(Info {
                    resource: r,
                    namespace: ns.clone(),
                    name: name.clone(),
                    uid: text(obj, "/metadata/uid").to_string(),
                    owners,
                    terminating: obj.pointer("/metadata/deletionTimestamp").is_some(),
                    finalizers: finalizers(obj),
                });
            }
        }
        out
    }

    /// Remove the ownerReference to `owner_uid` from every object that has one.
    fn orphan_dependents(&mut self, owner_uid: &str) {
        for info in self.infos() {
            if !info.owners.iter().any(|o| o == owner_uid) {
                continue;
            }
            let Ok(mut obj) = self.get(info.resource, &info.namespace, &info.name) else {
                continue;
            };
            let labels = obj.pointer("/metadata/labels").cloned();
            if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
                let empty = match meta
                    .get_mut("ownerReferences")
                    .and_then(Value::as_array_mut)
                {
                    Some(refs) => {
                        refs.retain(|o| o.get("uid").and_then(Value::as_str) != Some(owner_uid));
                        refs.is_empty()
                    }
                    None => false,
                };
                if empty {
                    meta.remove("ownerReferences");
                }
            }
            let key = (info.namespace.clone(), info.name.clone());
            self.commit(info.resource, key, obj, EventType::Modified, labels);
        }
    }

    /// Run the garbage and namespace controllers until nothing changes.
    pub(super) fn collect_garbage(&mut self) {
        for _ in 0..MAX_GC_PASSES {
            if !self.gc_pass() {
                return;
            }
        }
        tracing::warn!(passes = MAX_GC_PASSES, "garbage collection did not settle");
    }

    /// One pass; true if it changed something.
    fn gc_pass(&mut self) -> bool {
        let infos = self.infos();
        let live: std::collections::BTreeMap<&str, &Info> =
            infos.iter().map(|i| (i.uid.as_str(), i)).collect();
        let background = DeleteOptions::default();
        let foreground = DeleteOptions {
            propagation: Some(Propagation::Foreground),
            ..DeleteOptions::default()
        };
        let mut changed = false;
        // Namespaces: delete the content of terminating ones, remove them once empty.
        let ns_def = resources::namespaces();
        for ns in infos
            .iter()
            .filter(|i| i.resource == ns_def && i.terminating)
        {
            let content: Vec<&Info> = infos
                .iter()
                .filter(|i| i.resource.namespaced && i.namespace == ns.name)
                .collect();
            if content.is_empty() {
                changed |= self.remove(ns_def, "", &ns.name).is_some();
            }
            for i in content.into_iter().filter(|i| !i.terminating) {
                changed |= self
                    .delete_one(i.resource, &i.namespace, &i.name, &background)
                    .is_ok();
            }
        }
        for i in &infos {
            if i.resource == ns_def {
                continue;
            }
            if i.terminating {
                let held = i.finalizers.iter().any(|f| f == FOREGROUND_FINALIZER);
                let has_dependents = infos.iter().any(|d| d.owners.contains(&i.uid));
                if held && !has_dependents {
                    self.drop_finalizer(i, FOREGROUND_FINALIZER);
                    changed = true;
                } else if i.finalizers.is_empty() {
                    changed |= self.remove(i.resource, &i.namespace, &i.name).is_some();
                }
                continue;
            }
            if i.owners.is_empty() {
                continue;
            }
            // Collected when no owner is left that is not itself being deleted in the
            // foreground; in the foreground too when an owner waits for it.
            let waiting = |owner: &&Info| {
                owner.terminating && owner.finalizers.iter().any(|f| f == FOREGROUND_FINALIZER)
            };
            let owners: Vec<&Info> = i
                .owners
                .iter()
                .filter_map(|o| live.get(o.as_str()).copied())
                .collect();
            if owners.iter().all(waiting) {
                let opts = if owners.is_empty() {
                    &background
                } else {
                    &foreground
                };
                changed |= self
                    .delete_one(i.resource, &i.namespace, &i.name, opts)
                    .is_ok();
            }
        }
        changed
    }

    fn drop_finalizer(&mut self, i: &Info, finalizer: &str) {
        let Ok(mut obj) = self.get(i.resource, &i.namespace, &i.name) else {
            return;
        };
        let labels = obj.pointer("/metadata/labels").cloned();
        let rest: Vec<&String> = i.finalizers.iter().filter(|f| *f != finalizer).collect();
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            if rest.is_empty() {
                meta.remove("finalizers");
            } else {
                meta.insert("finalizers".into(), json!(rest));
            }
        }
        let key = (i.namespace.clone(), i.name.clone());
        self.commit(i.resource, key, obj, EventType::Modified, labels);
    }
}

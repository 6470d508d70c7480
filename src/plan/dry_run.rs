//! What the API server says it would store: a plan refined by server-side dry runs (the approach
//! of Flux and of Argo CD's server-side diff, design §4).
//!
//! Where a cluster is reachable, every object the plan writes is sent once with `dryRun=All`
//! (by [`crate::apply::dry_run`]), and the answers refine the plan here, purely:
//! - an admission rejection (a KubeVirt or CDI webhook message, a quota, RBAC) turns the object's
//!   steps into `refused` with the server's message, and nothing of it is written;
//! - an existing object the server would store unchanged has no real change: its steps that
//!   only rewrite its spec are dropped (they came from a value the offline comparison misread);
//! - what the server would store is kept for the plan's diffs.
//!
//! Answers are cached by (manifest digest, live `resourceVersion`), so a daemon cycle that
//! plans the same thing against the same objects sends nothing.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{Change, Class, Plan, shape, view};
use crate::identity::{ANNOTATION_REVISION, ObjectRef};
use crate::live::{LiveState, str_at};

/// The API server's answer to a dry-run write.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// It would store this object.
    Stored(Value),
    /// It refused the write: the server's message.
    Refused(String),
}

/// What identifies a dry run: the manifest (less Wukong's revision annotation, which every new
/// Git revision changes) and the live object's `resourceVersion` (empty for a creation).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    digest: String,
    resource_version: String,
}

impl Key {
    pub fn of(manifest: &Value, live: Option<&Value>) -> Key {
        use sha2::{Digest, Sha256};
        let mut m = manifest.clone();
        if let Some(a) = m
            .pointer_mut("/metadata/annotations")
            .and_then(Value::as_object_mut)
        {
            a.remove(ANNOTATION_REVISION);
        }
        let digest = Sha256::digest(m.to_string().as_bytes());
        Key {
            digest: digest.iter().map(|b| format!("{b:02x}")).collect(),
            resource_version: live
                .and_then(|l| str_at(l, &["metadata", "resourceVersion"]))
                .unwrap_or_default()
                .to_owned(),
        }
    }
}

/// Answers kept between plans (the daemon keeps one for its life).
#[derive(Debug, Clone, Default)]
pub struct Cache {
    answers: BTreeMap<ObjectRef, (Key, Answer)>,
}

impl Cache {
    /// The cached answer for `id` written as `manifest` over `live`, if still valid.
    pub fn get(&self, id: &ObjectRef, key: &Key) -> Option<&Answer> {
        self.answers
            .get(id)
            .filter(|(k, _)| k == key)
            .map(|(_, a)| a)
    }

    pub fn put(&mut self, id: ObjectRef, key: Key, answer: Answer) {
        self.answers.insert(id, (key, answer));
    }

    /// Forget the objects no longer in `keep` (a bounded cache for a long-running daemon).
    pub fn retain(&mut self, keep: impl Fn(&ObjectRef) -> bool) {
        self.answers.retain(|id, _| keep(id));
    }
}

/// Acting steps that only rewrite the object's spec: nothing happens for them when the API server
/// would store the object unchanged. Disk growth (a PVC patch), pause and unpause (actions)
/// and deletes act elsewhere.
fn rewrites_only_the_spec(change: Change, class: Class) -> bool {
    match change {
        Change::Cpu
        | Change::Memory
        | Change::NicAttach
        | Change::NicDetach
        | Change::NicChange
        | Change::Update
        | Change::Start
        | Change::Stop
        | Change::NadUpdate
        | Change::Restart => true,
        Change::Disk => class != Class::Live,
        _ => false,
    }
}

/// Whether storing `stored` over `live` changes nothing Wukong or anyone would see: the spec,
/// labels and annotations (less Wukong's revision annotation) are equal.
fn unchanged(stored: &Value, live: &Value) -> bool {
    let part = |v: &Value| {
        let n = shape::normalize(v);
        let mut out = serde_json::Map::new();
        for key in ["spec"] {
            if let Some(x) = v.get(key) {
                out.insert(key.into(), x.clone());
            }
        }
        for key in ["labels", "annotations"] {
            if let Some(x) = n.pointer(&format!("/metadata/{key}")) {
                out.insert(key.into(), x.clone());
            }
        }
        Value::Object(out)
    };
    part(stored) == part(live)
}

/// Refine `plan` with the server's `answers` (by object): see the module documentation.
pub fn refine(plan: &mut Plan, live: &LiveState, answers: &BTreeMap<ObjectRef, Answer>) {
    for (id, answer) in answers {
        match answer {
            Answer::Refused(message) => {
                for s in plan
                    .steps
                    .iter_mut()
                    .filter(|s| &s.target == id && s.acts())
                {
                    s.class = Class::Refused;
                    s.reason = format!(
                        "the API server refuses the write (server-side dry run): {message}"
                    );
                }
                plan.writes.remove(id);
                plan.restartable.remove(id);
            }
            Answer::Stored(stored) => {
                let Some(current) = live.objects.get(id) else {
                    continue;
                };
                if unchanged(stored, current) {
                    let before = plan.steps.len();
                    plan.steps
                        // Held steps (blocked, refused) stay: the write leaves them out already.
                        .retain(|s| {
                            &s.target != id
                                || !s.acts()
                                || !rewrites_only_the_spec(s.change, s.class)
                        });
                    if plan.steps.len() != before {
                        plan.notes.push(format!(
                            "{id}: the API server would store it unchanged (server-side dry run), so {} step(s) found offline are not changes",
                            before - plan.steps.len()
                        ));
                    }
                    if !plan.steps.iter().any(|s| &s.target == id) {
                        plan.writes.remove(id);
                        plan.before.remove(id);
                    }
                } else if let Some(write) = plan.writes.get(id) {
                    // What the server would store, as Wukong judges it, for the plan's diffs.
                    let declared = shape::normalize(write);
                    plan.after.insert(
                        id.clone(),
                        shape::normalize(&view::live_view(&declared, stored)),
                    );
                }
            }
        }
    }
}

/// The note of a plan made without a server-side dry run.
pub const OFFLINE_NOTE: &str = "planned offline from a live snapshot: no server-side dry run checked the writes, so an admission webhook may still refuse one";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::LiveKind;
    use crate::plan::Step;
    use serde_json::json;

    fn vm(rv: &str, cpu: u32, extra: Value) -> Value {
        json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
               "metadata": {"name": "a", "namespace": "ns", "resourceVersion": rv,
                            "annotations": {ANNOTATION_REVISION: "r1"}},
               "spec": {"template": {"spec": {"domain": {"cpu": {"sockets": cpu}, "resources": extra}}}}})
    }

    fn plan_of(steps: Vec<Step>, write: Value) -> Plan {
        let id = ObjectRef::vm("ns", "a");
        let mut p = Plan {
            fleet: "f".into(),
            revision: "r2".into(),
            kubevirt: "KubeVirt v1.9.0".into(),
            steps,
            writes: BTreeMap::new(),
            before: BTreeMap::new(),
            after: BTreeMap::new(),
            basis: BTreeMap::new(),
            notes: vec![],
            restartable: [id.clone()].into(),
            max_parallel: 1,
            prune_disks: false,
            max_unavailable: BTreeMap::new(),
        };
        p.writes.insert(id, write);
        p
    }

    fn step(change: Change, class: Class) -> Step {
        Step {
            target: ObjectRef::vm("ns", "a"),
            change,
            class,
            item: None,
            from: None,
            to: None,
            reason: "r".into(),
            batch: None,
        }
    }

    fn live_with(vm: Value) -> LiveState {
        let mut live = LiveState::default();
        live.insert(LiveKind::VirtualMachine, vm).unwrap();
        live
    }

    #[test]
    fn a_refused_write_refuses_every_step_and_writes_nothing() {
        let id = ObjectRef::vm("ns", "a");
        let mut p = plan_of(
            vec![
                step(Change::Cpu, Class::Live),
                step(Change::Suspend, Class::Live),
            ],
            vm("", 4, json!({})),
        );
        let answers = [(
            id.clone(),
            Answer::Refused("Number of sockets … is greater".into()),
        )]
        .into();
        refine(&mut p, &live_with(vm("7", 2, json!({}))), &answers);
        assert!(p.steps.iter().all(|s| s.class == Class::Refused));
        assert!(
            p.steps[0]
                .reason
                .ends_with("Number of sockets … is greater")
        );
        assert!(p.writes.is_empty() && p.restartable.is_empty());
    }

    #[test]
    fn a_write_the_server_stores_unchanged_has_no_spec_steps() {
        let id = ObjectRef::vm("ns", "a");
        let mut p = plan_of(
            vec![
                step(Change::Cpu, Class::Blocked),
                step(Change::Update, Class::Restart),
                step(Change::Restart, Class::Restart),
                step(Change::Suspend, Class::Live),
            ],
            vm("", 2, json!({})),
        );
        let current = vm("7", 2, json!({}));
        let mut stored = current.clone();
        stored["metadata"]["annotations"][ANNOTATION_REVISION] = json!("r2");
        stored["metadata"]["resourceVersion"] = json!("8");
        refine(
            &mut p,
            &live_with(current),
            &[(id, Answer::Stored(stored))].into(),
        );
        let left: Vec<Change> = p.steps.iter().map(|s| s.change).collect();
        assert_eq!(left, vec![Change::Cpu, Change::Suspend], "held steps stay");
        assert_eq!(p.notes.len(), 1);
    }

    #[test]
    fn a_real_change_keeps_its_steps_and_the_stored_object_for_the_diff() {
        let id = ObjectRef::vm("ns", "a");
        let mut write = vm("", 4, json!({}));
        write["spec"]["template"]["spec"]["domain"]
            .as_object_mut()
            .unwrap()
            .remove("resources");
        let mut p = plan_of(vec![step(Change::Cpu, Class::Live)], write);
        let stored = vm("8", 4, json!({}));
        refine(
            &mut p,
            &live_with(vm("7", 2, json!({}))),
            &[(id.clone(), Answer::Stored(stored))].into(),
        );
        assert_eq!(p.steps.len(), 1);
        assert_eq!(
            p.after[&id].pointer("/spec/template/spec/domain/cpu/sockets"),
            Some(&json!(4))
        );
        // The webhook's additions are not in what the diff shows.
        assert!(
            p.after[&id]
                .pointer("/spec/template/spec/domain/resources")
                .is_none()
        );
    }

    #[test]
    fn the_cache_key_ignores_the_revision_but_not_the_live_version() {
        let a = Key::of(&vm("", 2, json!({})), Some(&vm("7", 2, json!({}))));
        let mut m = vm("", 2, json!({}));
        m["metadata"]["annotations"][ANNOTATION_REVISION] = json!("r9");
        assert_eq!(a, Key::of(&m, Some(&vm("7", 2, json!({})))));
        assert_ne!(a, Key::of(&m, Some(&vm("8", 2, json!({})))));
        assert_ne!(
            a,
            Key::of(&vm("", 3, json!({})), Some(&vm("7", 2, json!({}))))
        );
    }
}

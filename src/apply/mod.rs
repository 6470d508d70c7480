//! Carrying out a plan (design §6): [`execute`] runs the steps against a cluster through
//! [`calls`] (every call retried as [`retry`] says) and proves each change with the wait
//! conditions of [`verify`]; [`report`] says what happened. [`stale`] tells whether a saved
//! plan still describes the cluster.

pub mod calls;
pub mod dry_run;
pub mod execute;
pub mod report;
pub mod retry;
pub mod verify;

pub use calls::Cluster;
pub use execute::{Event, Options, Progress, StopSignal, Timeouts, execute};
pub use report::{Outcome, Report, StepResult};

use crate::identity::{Kind, ObjectRef};

/// How many times an apply re-reads the cluster and re-plans after a 409 conflict (the CLI and
/// the daemon alike).
pub const MAX_ROUNDS: usize = 3;
use crate::live::{LiveState, NsName, str_at};
use crate::plan::{Change, Plan};

/// Why a saved plan no longer describes the cluster: every live object it was computed from
/// that changed or went away since, and every object it would create that exists now. Empty
/// when the plan can be applied as it is.
pub fn stale(plan: &Plan, live: &LiveState) -> Vec<String> {
    let mut why = Vec::new();
    for (key, version) in &plan.basis {
        let mut parts = key.splitn(3, '/');
        let (Some(kind), Some(ns), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
            why.push(format!("{key}: not a kind/namespace/name"));
            continue;
        };
        let object = match kind {
            "VirtualMachine" => live.objects.get(&ObjectRef::vm(ns, name)),
            "NetworkAttachmentDefinition" => {
                live.objects
                    .get(&ObjectRef::new(Kind::NetworkAttachmentDefinition, ns, name))
            }
            "PersistentVolumeClaim" => live.pvcs.get(&NsName::new(ns, name)),
            _ => None,
        };
        match object.and_then(|o| str_at(o, &["metadata", "resourceVersion"])) {
            Some(v) if v == version => {}
            Some(v) => why.push(format!(
                "{kind} {ns}/{name} changed (resourceVersion {version} → {v})"
            )),
            None => why.push(format!("{kind} {ns}/{name} is gone")),
        }
    }
    for step in &plan.steps {
        if matches!(step.change, Change::Create | Change::NadCreate)
            && step.acts()
            && live.objects.contains_key(&step.target)
        {
            why.push(format!("{} exists now", step.target));
        }
    }
    why
}

/// What a saved plan claims beyond `derived`, the plan its fleet gives for the cluster now:
/// every difference in the steps (with their classes), the manifests to write, the VMs the
/// executor may restart, `maxParallel`, `pruneDisks`, the sets' `maxUnavailable` and the
/// fleet's name. A plan file is data anyone may edit (turn a blocked step into a restart, add
/// a VM to `restartable`): it is applied only when it is exactly what the fleet gives. Empty
/// when it is.
pub fn overreach(saved: &Plan, derived: &Plan) -> Vec<String> {
    let mut why = Vec::new();
    if saved.fleet != derived.fleet {
        why.push(format!(
            "the plan is for fleet `{}`, its fleet is `{}`",
            saved.fleet, derived.fleet
        ));
    }
    let describe = |s: &crate::plan::Step| {
        let mut d = format!("{} {}", s.change.as_str(), s.target);
        if let Some(item) = &s.item {
            d.push_str(&format!(" ({item})"));
        }
        d
    };
    for (i, s) in saved.steps.iter().enumerate() {
        let same_step = |d: &&crate::plan::Step| {
            d.target == s.target && d.change == s.change && d.item == s.item
        };
        match derived.steps.iter().find(same_step) {
            None => why.push(format!(
                "step {}: not a step the fleet gives now",
                describe(s)
            )),
            Some(d) if d.class != s.class => why.push(format!(
                "step {}: the plan says `{}`, the fleet says `{}` ({})",
                describe(s),
                s.class.as_str(),
                d.class.as_str(),
                d.reason
            )),
            Some(d) if d != s => why.push(format!(
                "step {}: its sizes, values or batch differ from the fleet's",
                describe(s)
            )),
            Some(d) if derived.steps.get(i) != Some(d) => {
                why.push(format!("step {}: out of the fleet's order", describe(s)));
            }
            Some(_) => {}
        }
    }
    for d in &derived.steps {
        if !saved
            .steps
            .iter()
            .any(|s| s.target == d.target && s.change == d.change && s.item == d.item)
        {
            why.push(format!(
                "step {}: the fleet gives it now and the plan lacks it",
                describe(d)
            ));
        }
    }
    let ids: std::collections::BTreeSet<&ObjectRef> =
        saved.writes.keys().chain(derived.writes.keys()).collect();
    for id in ids {
        if saved.writes.get(id) != derived.writes.get(id) {
            why.push(format!(
                "the manifest to write for {id} is not the one the fleet gives"
            ));
        }
    }
    for id in saved.restartable.difference(&derived.restartable) {
        why.push(format!(
            "restartable: the fleet does not allow restarting {id}"
        ));
    }
    if saved.max_parallel != derived.max_parallel {
        why.push(format!(
            "maxParallel is {} in the plan, {} in the fleet",
            saved.max_parallel, derived.max_parallel
        ));
    }
    if saved.prune_disks != derived.prune_disks {
        why.push(format!(
            "pruneDisks is {} in the plan, {} in the fleet",
            saved.prune_disks, derived.prune_disks
        ));
    }
    if saved.max_unavailable != derived.max_unavailable {
        why.push(format!(
            "maxUnavailable is {:?} in the plan, {:?} in the fleet",
            saved.max_unavailable, derived.max_unavailable
        ));
    }
    why
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::LiveKind;
    use crate::plan::{Class, Step};
    use serde_json::json;
    use std::collections::BTreeMap;

    fn vm(name: &str, rv: &str) -> serde_json::Value {
        json!({"metadata": {"name": name, "namespace": "default", "resourceVersion": rv}})
    }

    #[test]
    fn a_plan_is_stale_once_an_object_it_read_changes_or_one_it_creates_appears() {
        let mut live = LiveState::default();
        live.insert(LiveKind::VirtualMachine, vm("a", "5")).unwrap();
        live.insert(LiveKind::VirtualMachine, vm("new", "1"))
            .unwrap();
        let mut plan = Plan {
            fleet: "f".into(),
            revision: "r".into(),
            kubevirt: "KubeVirt v1.9.0".into(),
            steps: vec![Step {
                target: ObjectRef::vm("default", "new"),
                change: Change::Create,
                class: Class::Create,
                item: None,
                from: None,
                to: None,
                reason: String::new(),
                batch: None,
            }],
            writes: BTreeMap::new(),
            before: BTreeMap::new(),
            after: BTreeMap::new(),
            basis: BTreeMap::from([
                ("VirtualMachine/default/a".into(), "5".into()),
                ("VirtualMachine/default/gone".into(), "2".into()),
            ]),
            notes: vec![],
            restartable: Default::default(),
            max_parallel: 1,
            prune_disks: false,
            max_unavailable: BTreeMap::new(),
        };
        assert_eq!(
            stale(&plan, &live),
            vec![
                "VirtualMachine default/gone is gone",
                "vms/default/new exists now"
            ]
        );
        plan.basis
            .insert("VirtualMachine/default/a".into(), "4".into());
        assert!(stale(&plan, &live)[0].contains("changed (resourceVersion 4 → 5)"));

        // A plan edited by hand claims more than the one its fleet gives.
        let derived = plan.clone();
        assert!(overreach(&plan, &derived).is_empty());
        let mut edited = plan.clone();
        edited.steps[0].class = Class::Restart;
        edited.restartable.insert(ObjectRef::vm("default", "new"));
        edited.max_parallel = 50;
        let why = overreach(&edited, &derived);
        assert_eq!(
            why,
            [
                "step create vms/default/new: the plan says `restart`, the fleet says `create` ()",
                "restartable: the fleet does not allow restarting vms/default/new",
                "maxParallel is 50 in the plan, 1 in the fleet",
            ]
        );
    }
}
